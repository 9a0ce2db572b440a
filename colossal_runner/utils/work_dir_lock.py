"""One training per work directory: an advisory lock on ``<work_dir>/.lock``.

Two trainings writing into one work directory (a requeued job while the old one still runs)
would remove each other's checkpoint temporaries, move each other's ``metrics.jsonl`` aside and
overwrite each other's checkpoints. The main process of a run holds ``fcntl.flock`` on
``<work_dir>/.lock`` for the rest of its life; the kernel drops the lock when the process ends,
however it ends (even SIGKILL), so a crashed run leaves no stale lock to delete by hand.
"""
from __future__ import annotations

import os
import socket
import time
import warnings
from typing import Dict

from ..config import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock, runs are not guarded there
    fcntl = None

LOCK_NAME = '.lock'
# lock file (real path) -> the descriptor holding its lock, open until the process ends: a second
# initialize() on the same work_dir in this process reuses it (a second flock would fail on it)
_held: Dict[str, int] = {}


class WorkDirBusyError(ConfigError):
    """Another live process holds the lock of the work directory."""


def lock_work_dir(work_dir: str) -> None:
    """Hold the lock on ``<work_dir>/.lock`` until this process ends, and write this process's pid
    and host into it. Nothing happens when this process holds it already, or without ``fcntl``.

    Raises:
        WorkDirBusyError: another process holds it; nothing in ``work_dir`` is changed.
    """
    if fcntl is None:
        return
    _forget_replaced()
    path = os.path.realpath(os.path.join(work_dir, LOCK_NAME))
    if path in _held:
        return
    fd = None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's pid stays readable
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise WorkDirBusyError(
            f'another training ({holder}) is writing into work_dir {work_dir!r}, or that process ran one '
            f'there and is still alive (a notebook, a script that went on); wait for it to finish, or '
            f'choose another --work-dir. Its lock {path} is released when that process ends, however it '
            f'ends, or when it starts a run into another work_dir: there is nothing to delete.') from None
    except OSError as exc:  # no locks on this file system (ENOLCK), another user's .lock: run unguarded
        if fd is not None:
            os.close(fd)
        warnings.warn(f'cannot lock {path} ({exc.strerror or exc}); a second training started into '
                      f'work_dir {work_dir!r} while this one runs would not be detected', RuntimeWarning,
                      stacklevel=2)
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on host {socket.gethostname()}\n'.encode(), 0)
    # A run into another work_dir (the next experiment in a notebook) lets the earlier directories
    # go, once this one is held, so a later tools/train.py there is not refused.
    for other in list(_held):
        os.close(_held.pop(other))
    _held[path] = fd


def _holder(fd: int) -> str:
    """``pid N on host H`` as the holder wrote it; it may not have written it yet, just after its flock."""
    for _ in range(5):
        text = os.pread(fd, 200, 0).decode(errors='replace').strip()
        if text:
            return text
        time.sleep(0.05)
    return 'pid and host not known yet'


def _drop_in_child() -> None:
    """A forked child (a DataLoader worker) closes its copies of the lock descriptors: a flock lives
    while any copy is open, and a worker outliving a killed run would keep the run's lock."""
    for fd in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if fcntl is not None:
    os.register_at_fork(after_in_child=_drop_in_child)


def _forget_replaced() -> None:
    """Close the locks of work directories deleted (or replaced) since: a test's temporary work
    directory is gone, and a new directory of the same name must be locked anew."""
    for path, fd in list(_held.items()):
        try:
            now, held = os.stat(path), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                continue
        except OSError:
            pass
        os.close(fd)
        del _held[path]


__all__ = ['lock_work_dir', 'WorkDirBusyError', 'LOCK_NAME']
