"""Run a function on several real ``torch.distributed`` processes (gloo, one thread each).

torch's own ``torch.multiprocessing.spawn`` waits without a deadline, so a hung rank would
block the caller forever; this helper adds the deadline, a free port per call, and per-rank
return values and error messages.
"""
from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import pickle
import socket
import traceback
from typing import Any, Callable, List, Optional


class DistributedTestError(RuntimeError):
    """A rank raised, died or did not finish in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(fn, rank, world_size, port, backend, pg_timeout, args, queue, env):
    import torch
    import torch.distributed as dist
    os.environ.update(env)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=pg_timeout))
        result = fn(rank, world_size, *args)
        # Plain pickle: torch's multiprocessing reductions would pass tensors through shared
        # memory served by this process, which exits right after, leaving the parent waiting.
        queue.put((rank, True, pickle.dumps(result)))
    except BaseException:  # report every failure to the parent, then exit non-zero
        queue.put((rank, False, traceback.format_exc()))
        raise SystemExit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(fn: Callable, world_size: int, *args: Any, timeout: float = 60.0,
                    backend: str = 'gloo', start_method: str = 'fork',
                    env: Optional[dict] = None) -> List[Any]:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` processes in one process group.

    Returns the per-rank return values (which must be picklable; move tensors to the CPU).
    Raises DistributedTestError naming the rank when one raises, exits without a result, or
    the whole run takes longer than ``timeout`` seconds; every process is then killed.
    """
    ctx = mp.get_context(start_method)
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(fn, rank, world_size, port, backend, max(5.0, timeout), args, queue,
                               dict(env or {})))
             for rank in range(world_size)]
    for proc in procs:
        proc.start()
    results: dict = {}
    errors: dict = {}
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
    try:
        while len(results) + len(errors) < world_size:
            remaining = (deadline - datetime.datetime.now()).total_seconds()
            if remaining <= 0:
                missing = sorted(set(range(world_size)) - set(results) - set(errors))
                raise DistributedTestError(f'ranks {missing} did not finish within {timeout}s'
                                           + _format_errors(errors))
            try:
                rank, ok, payload = queue.get(timeout=min(remaining, 0.5))
            except Exception:  # queue.Empty: check for ranks that died without reporting
                dead = [r for r, p in enumerate(procs)
                        if not p.is_alive() and p.exitcode not in (0, None)
                        and r not in results and r not in errors]
                for r in dead:
                    errors[r] = f'process exited with code {procs[r].exitcode} without a result'
                continue
            (results if ok else errors)[rank] = pickle.loads(payload) if ok else payload
            if errors and not ok:
                # One rank failed: give the others a moment to report, then stop.
                for proc in procs:
                    proc.join(timeout=2)
                while not queue.empty():
                    rank, ok, payload = queue.get()
                    (results if ok else errors)[rank] = pickle.loads(payload) if ok else payload
                break
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
    if errors:
        raise DistributedTestError(f'ranks {sorted(errors)} failed' + _format_errors(errors))
    return [results[r] for r in range(world_size)]


def _format_errors(errors: dict) -> str:
    return ''.join(f'\n--- rank {r} ---\n{msg}' for r, msg in sorted(errors.items()))
