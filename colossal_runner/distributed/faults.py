"""Failing loudly and together: a rank that fails or dies takes the job down and is named.

Without help, when one rank raises, the others sit in their next collective until the
process-group timeout (30 minutes by default) and then report a timeout that does not
say who was missing. torchrun's agent kills the rest of the job, but SLURM, OpenMPI and
hand-made ``launch`` calls do not. The :class:`FaultWatcher` closes that gap through the
c10d TCPStore the ranks already rendezvoused on (no extra transport):

- an uncaught exception on a rank (``sys.excepthook``) or :func:`report_failure` writes
  the rank and its error under one store key; the first report wins, so the root cause
  is named rather than the errors it causes on the other ranks;
- every rank runs a daemon thread that bumps its own heartbeat counter in the store each
  ``interval`` and watches one peer's (the next rank's; every peer's once something went
  wrong). A rank that is SIGKILLed writes no error, and gloo only tells its neighbours
  "Connection closed by peer"; a counter that stops moving for ``heartbeat_timeout``
  seconds is how the watcher tells which rank died. It then reports
  ``rank N stopped responding (no heartbeat for X s); it was probably killed``;
- a rank whose own collective fails with a communication error first waits (up to
  ``heartbeat_timeout``) for such a verdict before blaming itself, so the dead rank is
  named, not the first survivor to notice;
- when a report appears the thread prints which rank failed (on stderr and into the run's
  log file) and ends its own process with exit code 1 (``os._exit``: the main thread may be
  blocked inside a C++ collective where no Python exception can reach it).

The store lives in rank 0's process (unless torchrun's agent hosts it): when it vanishes
in the middle of a run, rank 0 is the one that died. The process-group timeout stays the
backstop for a rank that hangs with its watcher alive; the rank that times out reports,
which stops the rest, and they say it timed out waiting for a peer (the rank, when a
pipeline transfer names it) rather than that it failed.
"""
from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from typing import Any, Mapping, NamedTuple, Optional

import torch.distributed as dist

from ..config.errors import ConfigError

EXIT_CODE = 1
DEFAULT_INTERVAL = 0.5  # seconds between heartbeats / checks
DEFAULT_HEARTBEAT_TIMEOUT = 10.0  # seconds without a heartbeat before a rank is declared lost
_WATCHER: Optional['FaultWatcher'] = None
# What gloo / nccl / the store say when a peer vanished or a collective timed out.
_COMM_ERROR = re.compile(r'connection (closed|reset|refused)|broken pipe|timed out|gloo|nccl', re.IGNORECASE)
_TIMED_OUT = re.compile(r'timed out|timing out', re.IGNORECASE)
_PEER = re.compile(r'\b(?:to|from) rank (\d+)\b')  # as p2p names the rank a transfer waited for


class Failure(NamedTuple):
    """The first failure of the job: which rank, its error, and whether it died without a word."""

    rank: int
    error: str
    lost: bool = False


def is_communication_error(error: BaseException) -> bool:
    """Whether ``error`` is a collective or store failure (so possibly another rank's fault)."""
    dist_error = getattr(dist, 'DistError', None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    return isinstance(error, (RuntimeError, OSError)) and bool(_COMM_ERROR.search(str(error)))


def watcher_settings(value: Any, dist_timeout: Optional[float]) -> Optional[dict]:
    """FaultWatcher keyword arguments from the config's ``fault_watch`` (None: watcher off).

    ``fault_watch`` is True (default), False, or ``dict(heartbeat_timeout=S, interval=S)``.
    The default heartbeat timeout is 10 s, or half of ``dist_timeout`` when that is shorter
    (2 s at least), so that a dead rank is named before the collectives time out.
    """
    if value is None or value is False:
        return None
    settings = {} if value is True else value
    if not isinstance(settings, Mapping):
        raise ConfigError(f'fault_watch must be True, False or a dict like dict(heartbeat_timeout=10, '
                          f'interval=0.5), got {type(value).__name__}: {value!r}', key_path='fault_watch')
    unknown = sorted(set(map(str, settings)) - {'heartbeat_timeout', 'interval'})
    if unknown:
        close = difflib.get_close_matches(unknown[0], ['heartbeat_timeout', 'interval'], n=1, cutoff=0.4)
        hint = f"did you mean '{close[0]}'? " if close else ''
        raise ConfigError(f'unknown keys {unknown} in fault_watch; {hint}expected heartbeat_timeout and '
                          f'interval, e.g. fault_watch = dict(heartbeat_timeout=10, interval=0.5).',
                          key_path=['fault_watch', unknown[0]])
    default = DEFAULT_HEARTBEAT_TIMEOUT if dist_timeout is None else min(
        DEFAULT_HEARTBEAT_TIMEOUT, max(2.0, dist_timeout / 2))
    out = dict(heartbeat_timeout=settings.get('heartbeat_timeout', default),
               poll_interval=settings.get('interval', DEFAULT_INTERVAL))
    for key, number in (('heartbeat_timeout', out['heartbeat_timeout']), ('interval', out['poll_interval'])):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
            raise ConfigError(f'fault_watch.{key} must be a positive number of seconds, got {number!r}; '
                              f'e.g. fault_watch = dict(heartbeat_timeout=10, interval=0.5).',
                              key_path=['fault_watch', key])
    if out['heartbeat_timeout'] < 2 * out['poll_interval']:
        raise ConfigError(f'fault_watch.heartbeat_timeout ({out["heartbeat_timeout"]}) must be at least '
                          f'twice the interval ({out["poll_interval"]}), or live ranks would be declared '
                          f'lost; raise heartbeat_timeout or lower interval.',
                          key_path='fault_watch.heartbeat_timeout')
    return out


class FaultWatcher:
    """Watches the rendezvous store for another rank's failure or death; reports this rank's own.

    Args:
        host, port: the TCPStore every rank rendezvoused on (MASTER_ADDR / MASTER_PORT).
        rank, world_size: this process's place in the job.
        timeout: seconds to wait when connecting to the store.
        poll_interval: seconds between heartbeats and checks of the failure key.
        grace: seconds a failing rank (or the store's host) waits for the others to notice
            before it exits: the store may live in its process.
        heartbeat_timeout: seconds without a heartbeat after which a peer counts as dead.
        store_rank: the rank whose process hosts the store (0 with our ``tcp://`` rendezvous;
            None when torchrun's agent hosts it).
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout: float = 60.0,
                 poll_interval: float = DEFAULT_INTERVAL, grace: float = 5.0,
                 heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT, store_rank: Optional[int] = 0):
        self.host, self.port = host, int(port)
        self.rank, self.world_size = rank, world_size
        self.timeout, self.poll_interval, self.grace = timeout, poll_interval, grace
        self.heartbeat_timeout = heartbeat_timeout
        if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True':
            store_rank = None  # torchrun's agent hosts the store, not a worker
        self.store_rank = store_rank
        self.store: Optional[dist.Store] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._prev_hook = None
        self.reported = False  # this rank published a failure (its own or a lost peer's)
        self.store_lost = False
        self._handling = False  # the main thread is dealing with an error: the thread must not exit
        self._suspect = False  # something went wrong: watch every peer's heartbeat, not one
        self._acked = False
        self._said = False  # the "is stopping because" line was written
        self.stopped_for: Optional[Failure] = None  # another rank's failure that stops this one

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> 'FaultWatcher':
        """Connect a private store client, start the watching thread and hook uncaught exceptions."""
        # A private client: the default group's store connection may be busy in a blocking wait.
        client = dist.TCPStore(self.host, self.port, is_master=False, wait_for_workers=False,
                               timeout=datetime.timedelta(seconds=min(self.timeout, 60.0)))
        # Keys of an earlier torchrun restart must not stop this attempt.
        attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
        self.store = dist.PrefixStore(f'colossal_runner/faults/{attempt}', client)
        self.store.add(f'hb/{self.rank}', 1)
        self._thread = threading.Thread(target=self._watch, name='colossal-fault-watcher', daemon=True)
        self._thread.start()
        self._prev_hook = sys.excepthook
        sys.excepthook = self._excepthook
        return self

    def stop(self) -> None:
        """Stop watching (normal shutdown), tell the peers this rank finished, restore the hook."""
        self._stop.set()
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_hook or sys.__excepthook__
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.poll_interval + 1.0)
        if self.store is None or self.store_lost:
            return
        try:  # a finished rank's heartbeat stops too: it must not be taken for a dead one
            with self._lock:
                self.store.set(f'done/{self.rank}', '1')
        except Exception:
            pass

    # ------------------------------------------------------------------ reporting
    def _publish(self, failure: Failure) -> bool:
        """Write ``failure`` unless another one was written first; True when this one is first."""
        try:
            with self._lock:
                first = self.store.add('count', 1) == 1  # atomic: the first failure is the root cause
                if first:
                    self.store.set('failed', json.dumps(failure._asdict()))
            return first
        except Exception:  # the store is gone: the others will hit the process-group timeout
            self.store_lost = True
            return False

    def report(self, error: Any) -> bool:
        """Publish this rank's failure; False when another failure was published first."""
        if self.reported or self.store is None:
            return False
        self.reported = True
        text = error if isinstance(error, str) else ''.join(
            traceback.format_exception_only(type(error), error)).strip()
        return self._publish(Failure(self.rank, text[:2000]))

    def first_failure(self) -> Optional[Failure]:
        """The first reported failure, or None."""
        try:
            with self._lock:
                if not self.store.check(['failed']):
                    return None
                message = self.store.get('failed').decode('utf-8', 'replace')
        except Exception:
            self.store_lost = True
            return None
        return Failure(**json.loads(message))

    def handle_failure(self, error: BaseException) -> Optional[Failure]:
        """Find the root cause of this rank's ``error`` (reporting it when it is this rank's own).

        A communication error is usually a peer's fault: before blaming itself this rank
        waits up to ``heartbeat_timeout`` for a report, or a peer's heartbeat to go stale.
        """
        self._handling = True
        root = self.first_failure()
        if root is None and is_communication_error(error):
            root = self._wait_for_culprit()
        if root is None:
            root = Failure(self.rank, '') if self.report(error) else self.first_failure()
        return root

    def _wait_for_culprit(self) -> Optional[Failure]:
        self._suspect = True  # the thread now checks every peer's heartbeat
        deadline = time.monotonic() + self.heartbeat_timeout + 3 * self.poll_interval
        while time.monotonic() < deadline:
            root = self.first_failure()
            if root is not None:
                return root
            if self.store_lost and self.store_rank is not None and self.store_rank != self.rank:
                return Failure(self.store_rank, f'rank {self.store_rank} stopped responding (the rendezvous '
                                                f'store it hosted is gone); it was probably killed', True)
            time.sleep(min(0.1, self.poll_interval))
        return None

    def finish(self, root: Optional[Failure]) -> None:
        """Acknowledge a peer's failure; wait for the others when they may need this process's store."""
        if root is None:
            return
        if root.rank != self.rank:
            self.stopped_for = root
            self._ack()
            self._say_stopping(root)
        if root.rank == self.rank or self.rank == self.store_rank:
            self.wait_for_others()

    def _ack(self) -> None:
        if self._acked or self.store_lost:
            return
        self._acked = True
        try:
            with self._lock:
                self.store.add('acks', 1)
        except Exception:
            pass

    def wait_for_others(self) -> None:
        """Give the other ranks up to ``grace`` seconds to read the report before this process exits."""
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and not self.store_lost:
            try:
                with self._lock:
                    if self.store.add('acks', 0) >= self.world_size - 1:
                        return
            except Exception:
                return
            time.sleep(0.05)

    def _excepthook(self, exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            (self._prev_hook or sys.__excepthook__)(exc_type, exc, tb)
            return
        self._handling = True
        comm = is_communication_error(exc)
        root = None if comm else self.handle_failure(exc)  # others stop while the traceback prints
        (self._prev_hook or sys.__excepthook__)(exc_type, exc, tb)
        if comm:  # usually a consequence (a peer vanished mid-collective): name the root cause last
            root = self.handle_failure(exc)
        self.finish(root)

    def reason(self, root: Failure) -> str:
        """Why ``root`` stops this rank: ``rank 1 failed: RuntimeError: ...``."""
        if root.lost:
            return root.error
        if _TIMED_OUT.search(root.error):
            # A timeout is the waiting rank's report, not its fault: the rank it waited for is the
            # one to look at (hung, or much slower).
            peer = _PEER.search(root.error)
            waited = 'a peer' if peer is None else f'rank {peer.group(1)}'
            if peer is not None and int(peer.group(1)) == self.rank:
                waited += ' (this rank)'
            return f'rank {root.rank} timed out waiting for {waited}: {root.error}'
        return f'rank {root.rank} failed: {root.error}'

    def _say_stopping(self, root: Failure) -> None:
        with self._lock:  # the main thread and the watcher thread may both get here
            if self._said:
                return
            self._said = True
        sys.stdout.flush()
        line = f'rank {self.rank} is stopping because {self.reason(root)}'
        sys.stderr.write(f'colossal_runner: {line}\n')
        sys.stderr.flush()
        _write_log_files(line)

    # ------------------------------------------------------------------ watching
    def _watch(self) -> None:
        seen: dict = {}  # peer -> (heartbeat count, local time it last changed)
        last_tick = time.monotonic()
        while not self._stop.wait(self.poll_interval):
            now = time.monotonic()
            if now - last_tick > self.heartbeat_timeout / 2:
                seen.clear()  # this process was frozen (suspended, starved): judge nobody on old data
            last_tick = now
            try:
                with self._lock:
                    self.store.add(f'hb/{self.rank}', 1)
                    failed = self.store.check(['failed'])
                    lost = None if failed else self._stale_peer(seen, now)
            except Exception:  # store gone: its host exited (normally, or not: the main thread decides)
                self.store_lost = True
                return
            if lost is not None:
                self.reported = True
                self._publish(Failure(lost[0], f'rank {lost[0]} stopped responding (no heartbeat for '
                                               f'{lost[1]:.1f} s); it was probably killed', True))
            if failed or lost is not None:
                root = self.first_failure()
                if root is None or root.rank == self.rank or self._handling or self._stop.is_set():
                    return  # our own failure, or the main thread is explaining one: it exits itself
                self.finish(root)
                time.sleep(0.2)  # the store's host may be waiting for our ack: let it see it
                os._exit(EXIT_CODE)

    def _stale_peer(self, seen: dict, now: float) -> Optional[tuple]:
        """``(peer, seconds)`` of a watched peer whose heartbeat stopped; call with the lock held."""
        if self._suspect:
            peers = [p for p in range(self.world_size) if p != self.rank]
        else:  # one peer each, in a ring, keeps the store's load linear in the world size
            peers = [(self.rank + 1) % self.world_size]
        for peer in peers:
            count = self.store.add(f'hb/{peer}', 0)
            if peer not in seen or seen[peer][0] != count:
                seen[peer] = (count, now)
                continue
            age = now - seen[peer][1]
            if age > self.heartbeat_timeout and not self.store.check([f'done/{peer}']):
                return peer, age
        return None


def _write_log_files(line: str) -> None:
    """Write ``line`` into the file handlers of colossal_runner's logger (the run's log file), at
    ERROR: a batch job's log must say why this rank stopped, and ``os._exit`` may follow at once."""
    record = logging.LogRecord('colossal_runner', logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger('colossal_runner').handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        # Never wait long: the main thread may hold the handler's lock while it is stuck.
        if handler.lock is not None and not handler.lock.acquire(timeout=1.0):
            continue
        try:
            handler.emit(record)
            handler.flush()
        except Exception:  # noqa: BLE001 - a log that cannot be written must not hide the stderr line
            pass
        finally:
            if handler.lock is not None:
                handler.lock.release()


def get_watcher() -> Optional[FaultWatcher]:
    """This process's running FaultWatcher, if any."""
    return _WATCHER


def set_watcher(watcher: Optional[FaultWatcher]) -> None:
    global _WATCHER
    _WATCHER = watcher


def peer_failure() -> Optional[Failure]:
    """The other rank's failure that is stopping this process, or None (no watcher, none yet, or
    this rank's own failure): this rank's own error is then usually only a consequence of it."""
    watcher = get_watcher()
    return None if watcher is None else watcher.stopped_for


def stopping_reason() -> Optional[str]:
    """``rank 0 is stopping because rank 1 failed: ...`` when another rank's failure is in the
    store and the watcher has not said so yet, else None: a launcher's SIGTERM (torchrun stopping
    the job) can reach this rank before its watcher has read the failure."""
    watcher = get_watcher()
    if watcher is None or watcher.store is None or watcher._said:
        return None
    root = watcher.stopped_for or watcher.first_failure()
    if root is None or root.rank == watcher.rank:
        return None
    return f'rank {watcher.rank} is stopping because {watcher.reason(root)}'


def report_failure(error: Any) -> bool:
    """Tell the other ranks this one failed (for code that catches an exception and exits itself).

    Uncaught exceptions are reported automatically; call this before ``sys.exit(1)`` in an
    ``except`` block. A communication error is first checked against the peers' heartbeats,
    and the rank found dead is named instead. Returns False when no watcher runs or the
    root cause is another rank's failure.
    """
    watcher = get_watcher()
    if watcher is None:
        return False
    if not isinstance(error, BaseException):
        error = RuntimeError(str(error))
    root = watcher.handle_failure(error)
    watcher.finish(root)
    return root is not None and root.rank == watcher.rank


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
