"""Run a script as several real processes (one per rank) and collect exit codes and output.

The fault tests need processes that exit on their own; ``run_distributed`` kills the
other ranks itself as soon as one fails, which would hide what the framework does.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence


@dataclass
class RankResult:
    returncode: Optional[int]  # None: still running at the deadline, then killed
    stdout: str
    stderr: str
    seconds: float


def start_ranks(script: str, args: Sequence[Sequence[str]], envs: Sequence[dict],
                cwd: Optional[str] = None) -> List[subprocess.Popen]:
    """Start ``python script *args[i]`` with ``os.environ | envs[i]`` per rank; do not wait."""
    procs = []
    for rank_args, env in zip(args, envs):
        full_env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **env)
        procs.append(subprocess.Popen([sys.executable, script, *rank_args], env=full_env, cwd=cwd,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def collect(procs: Sequence[subprocess.Popen], timeout: float,
            start: Optional[float] = None) -> List[RankResult]:
    """Wait for ``procs`` until ``timeout`` seconds after ``start``; kill what is still running."""
    start = time.monotonic() if start is None else start
    results: List[RankResult] = []
    for proc in procs:
        remaining = max(0.1, timeout - (time.monotonic() - start))
        try:
            out, err = proc.communicate(timeout=remaining)
            results.append(RankResult(proc.returncode, out, err, time.monotonic() - start))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            results.append(RankResult(None, out, err, time.monotonic() - start))
    return results


def run_ranks(script: str, args: Sequence[Sequence[str]], envs: Sequence[dict], timeout: float,
              cwd: Optional[str] = None) -> List[RankResult]:
    """``start_ranks`` then ``collect``: every rank's exit code and output."""
    start = time.monotonic()
    return collect(start_ranks(script, args, envs, cwd), timeout, start)


def describe(results: Sequence[RankResult]) -> str:
    return ''.join(f'\n--- rank {r}: rc={res.returncode} after {res.seconds:.1f}s ---\n'
                   f'{res.stdout[-2000:]}\n{res.stderr[-3000:]}' for r, res in enumerate(results))


def _fork_target(fn, rank, env, queue):
    os.environ.update(env)
    try:
        queue.put((rank, True, fn(rank)))
    except BaseException as err:  # report to the parent; the test shows it
        queue.put((rank, False, f'{type(err).__name__}: {err}'))


def fork_ranks(fn, envs: Sequence[dict], timeout: float) -> list:
    """Run ``fn(rank)`` in forked processes with ``envs[rank]`` set and NO process group yet.

    Cheaper than fresh interpreters (torch is already imported), for tests of code that
    initializes the process group itself from launcher variables.
    """
    import multiprocessing as mp
    import queue as queue_module
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fork_target, args=(fn, r, env, queue), daemon=True)
             for r, env in enumerate(envs)]
    for proc in procs:
        proc.start()
    results: dict = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(procs):
            try:
                rank, ok, payload = queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue_module.Empty:
                raise AssertionError(f'ranks {sorted(set(range(len(procs))) - set(results))} did not '
                                     f'report within {timeout}s; got {results}') from None
            results[rank] = payload if ok else AssertionError(f'rank {rank}: {payload}')
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    errors = [v for v in results.values() if isinstance(v, AssertionError)]
    if errors:
        raise errors[0]
    return [results[r] for r in range(len(procs))]


def _as_script(script: str, args: Sequence[str], out_path: str, err_path: str) -> None:
    """Run ``script`` in this forked process the way ``python script args`` would."""
    import runpy
    import traceback
    with open(out_path, 'w') as out, open(err_path, 'w') as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        sys.argv = [script, *args]
        code = 0
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter does with an uncaught exception
            try:
                sys.excepthook(*sys.exc_info())
            except BaseException:
                traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ForkedRank:
    """One rank run as a forked copy of this process (no interpreter start-up, torch already imported)."""

    def __init__(self, script: str, args: Sequence[str], out_dir: str, rank_id: str):
        import multiprocessing as mp
        self.out = os.path.join(out_dir, f'{rank_id}.out')
        self.err = os.path.join(out_dir, f'{rank_id}.err')
        self.proc = mp.get_context('fork').Process(target=_as_script, args=(script, list(args), self.out,
                                                                            self.err))
        self.proc.start()

    def result(self, deadline: float, start: float) -> RankResult:
        self.proc.join(timeout=max(0.1, deadline - time.monotonic()))
        code = self.proc.exitcode
        if code is None:
            self.proc.kill()
            self.proc.join(timeout=5)
        with open(self.out) as out, open(self.err) as err:
            return RankResult(code, out.read(), err.read(), time.monotonic() - start)
