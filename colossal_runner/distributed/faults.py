"""Failing loudly and together: a rank that raises takes the job down and is named.

Without help, when one rank raises, the others sit in their next collective until the
process-group timeout (30 minutes by default) and then report a timeout that does not
say who was missing. torchrun's agent kills the rest of the job, but SLURM, OpenMPI and
hand-made ``launch`` calls do not. The :class:`FaultWatcher` closes that gap through the
c10d TCPStore the ranks already rendezvoused on (no extra transport):

- an uncaught exception on a rank (``sys.excepthook``) or :func:`report_failure` writes
  ``"<rank>: <error>"`` under one store key; the first report wins, so the root cause is
  named rather than the timeouts it causes on the other ranks;
- every rank runs a daemon thread polling that key; when it appears the thread prints
  which rank failed and ends its own process with exit code 1 (``os._exit``: the main
  thread may be blocked inside a C++ collective where no Python exception can reach it).

The process-group timeout stays the backstop for a rank that hangs or dies without
reporting; the rank that times out then reports, which stops the rest.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sys
import threading
import time
import traceback
from typing import Any, Optional, Tuple

import torch.distributed as dist

EXIT_CODE = 1
_WATCHER: Optional['FaultWatcher'] = None


class FaultWatcher:
    """Watches the rendezvous store for another rank's failure; reports this rank's own.

    Args:
        host, port: the TCPStore every rank rendezvoused on (MASTER_ADDR / MASTER_PORT).
        rank, world_size: this process's place in the job.
        timeout: seconds to wait when connecting to the store.
        poll_interval: seconds between checks of the failure key.
        grace: seconds a failing rank waits for the others to notice before it exits (the
            store may live in its process, e.g. rank 0 with a ``tcp://`` rendezvous).
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout: float = 60.0,
                 poll_interval: float = 0.5, grace: float = 5.0):
        self.host, self.port = host, int(port)
        self.rank, self.world_size = rank, world_size
        self.timeout, self.poll_interval, self.grace = timeout, poll_interval, grace
        self.store: Optional[dist.Store] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._prev_hook = None
        self.reported = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> 'FaultWatcher':
        """Connect a private store client, start the polling thread and hook uncaught exceptions."""
        # A private client: the default group's store connection may be busy in a blocking wait.
        client = dist.TCPStore(self.host, self.port, is_master=False, wait_for_workers=False,
                               timeout=datetime.timedelta(seconds=min(self.timeout, 60.0)))
        # Keys of an earlier torchrun restart must not stop this attempt.
        attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
        self.store = dist.PrefixStore(f'colossal_runner/faults/{attempt}', client)
        self._thread = threading.Thread(target=self._watch, name='colossal-fault-watcher', daemon=True)
        self._thread.start()
        self._prev_hook = sys.excepthook
        sys.excepthook = self._excepthook
        return self

    def stop(self) -> None:
        """Stop watching (normal shutdown) and restore ``sys.excepthook``."""
        self._stop.set()
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_hook or sys.__excepthook__
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.poll_interval + 1.0)

    # ------------------------------------------------------------------ reporting
    def report(self, error: Any) -> bool:
        """Publish this rank's failure; False when another failure was published first."""
        if self.reported or self.store is None:
            return False
        self.reported = True
        text = error if isinstance(error, str) else ''.join(
            traceback.format_exception_only(type(error), error)).strip()
        try:
            with self._lock:
                first = self.store.add('count', 1) == 1  # atomic: the first failure is the root cause
                if first:
                    self.store.set('failed', f'{self.rank}: {text[:2000]}')
            return first
        except Exception:  # the store is gone: the others will hit the process-group timeout
            return False

    def wait_for_others(self) -> None:
        """Give the other ranks up to ``grace`` seconds to read the report before this process exits."""
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            try:
                with self._lock:
                    if self.store.add('acks', 0) >= self.world_size - 1:
                        return
            except Exception:
                return
            time.sleep(0.05)

    def _excepthook(self, exc_type, exc, tb) -> None:
        first = False
        if not issubclass(exc_type, KeyboardInterrupt):
            first = self.report(exc)
        (self._prev_hook or sys.__excepthook__)(exc_type, exc, tb)
        if self.reported and not first:
            # Usually a consequence (a peer vanished mid-collective): name the root cause last.
            root = self.first_failure()
            if root is not None and root[0] != self.rank:
                self._say_stopping(*root)
        if self.reported:
            self.wait_for_others()

    def first_failure(self) -> Optional[Tuple[int, str]]:
        """``(rank, error)`` of the first reported failure, or None."""
        try:
            with self._lock:
                if not self.store.check(['failed']):
                    return None
                message = self.store.get('failed').decode('utf-8', 'replace')
        except Exception:
            return None
        rank, _, error = message.partition(': ')
        return int(rank), error

    def _say_stopping(self, failed_rank: int, error: str) -> None:
        sys.stdout.flush()
        sys.stderr.write(f'colossal_runner: rank {self.rank} is stopping because rank {failed_rank} '
                         f'failed: {error}\n')
        sys.stderr.flush()

    # ------------------------------------------------------------------ watching
    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                with self._lock:
                    if not self.store.check(['failed']):
                        continue
            except Exception:  # store gone (its host exited normally): nothing more to watch
                return
            root = self.first_failure()
            if root is None or self.reported or root[0] == self.rank or self._stop.is_set():
                return  # our own failure: the main thread is already handling it
            try:
                with self._lock:
                    self.store.add('acks', 1)
            except Exception:
                pass
            self._say_stopping(*root)
            time.sleep(0.2)  # the reporter may host the store: let it see the ack before we vanish
            os._exit(EXIT_CODE)


def get_watcher() -> Optional[FaultWatcher]:
    """This process's running FaultWatcher, if any."""
    return _WATCHER


def set_watcher(watcher: Optional[FaultWatcher]) -> None:
    global _WATCHER
    _WATCHER = watcher


def report_failure(error: Any) -> bool:
    """Tell the other ranks this one failed (for code that catches an exception and exits itself).

    Uncaught exceptions are reported automatically; call this before ``sys.exit(1)`` in an
    ``except`` block. Returns False when no watcher runs or another rank reported first.
    """
    watcher = get_watcher()
    if watcher is None:
        return False
    first = watcher.report(error)
    watcher.wait_for_others()
    return first


_ADDRESS = re.compile(r' at 0x[0-9a-fA-F]+')


def _canonical(value: Any) -> Any:
    """JSON-able form of a config value that is the same in every process."""
    if isinstance(value, dict) or (hasattr(value, 'keys') and hasattr(value, '__getitem__')):
        return {str(k): _canonical(value[k]) for k in sorted(value.keys(), key=str)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value) and hasattr(value, '__qualname__'):
        return f'{getattr(value, "__module__", "")}.{value.__qualname__}'
    return _ADDRESS.sub('', repr(value))  # object addresses differ between processes


def config_hash(cfg: Any) -> str:
    """sha256 of the merged config's content (key order and object addresses ignored)."""
    data = getattr(cfg, '_cfg_dict', cfg)
    text = json.dumps(_canonical(data), sort_keys=True)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()
