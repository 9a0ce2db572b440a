"""Logging: a configured ``logging.Logger`` (console + optional file) and a JSON-lines writer.

Only the logging rank prints at INFO; other ranks keep errors only, so an N-process job
does not print everything N times.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import time
from typing import Any, Mapping, Optional

_FORMAT = '%(asctime)s - %(name)s - %(levelname)s - %(message)s'


def _is_logging_rank() -> bool:
    from ..distributed import get_context
    return get_context().is_logging_rank


def run_log_path(work_dir: str) -> str:
    """``<work_dir>/<YYYYmmdd_HHMMSS>.log`` for a new run, named by its start; ``_2``, ``_3``, ...
    is added when a run that started in the same second already has that name (two Trainers
    in one script), so that each run's file holds only its own lines."""
    stamp = time.strftime('%Y%m%d_%H%M%S')
    path, n = os.path.join(work_dir, f'{stamp}.log'), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(work_dir, f'{stamp}_{n}.log')
    return path


def get_logger(name: str = 'colossal_runner', log_file: Optional[str] = None,
               level: int = logging.INFO) -> logging.Logger:
    """The logger ``name`` with one console handler and, with ``log_file``, one log file.

    Calling it again is cheap and adds no duplicate handlers. One run, one log file: a call
    with another ``log_file`` (a second Trainer in the same process, a notebook) closes and
    detaches the file handler an earlier call added to this logger, so each run's file holds
    only its own lines. ``log_file=None`` leaves the current file as it is (it asks for the
    logger, not for a new run); file handlers added by the user are never touched. Ranks other
    than the logging rank only report errors.
    """
    logger = logging.getLogger(name)
    logger.propagate = False
    main = _is_logging_rank()
    if not any(getattr(h, '_colossal_console', False) for h in logger.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(_FORMAT))
        console._colossal_console = True
        logger.addHandler(console)
    if log_file is not None and main:
        path = os.path.abspath(log_file)
        detach_log_file(logger, keep=path)  # an earlier run's file
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in logger.handlers):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handler = logging.FileHandler(path, mode='a', encoding='utf-8')
            handler.setFormatter(logging.Formatter(_FORMAT))
            handler._colossal_log_file = True
            logger.addHandler(handler)
    logger.setLevel(level if main else logging.ERROR)
    return logger


def log_to_file(logger: logging.Logger, message: str) -> None:
    """Write a warning into ``logger``'s log files only: one the console has already shown (a
    ``warnings.warn``), or given before the log file existed."""
    if not logger.isEnabledFor(logging.WARNING):
        return
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def detach_log_file(logger: logging.Logger, keep: Optional[str] = None) -> None:
    """Close and detach the log file :func:`get_logger` added to ``logger``, unless it writes the
    absolute path ``keep``; handlers the user added stay."""
    for handler in [h for h in logger.handlers if getattr(h, '_colossal_log_file', False)]:
        if handler.baseFilename != keep:
            logger.removeHandler(handler)
            handler.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf
    if hasattr(value, 'item') and callable(value.item):
        return _jsonable(value.item())
    return value


def end_last_line(path: str) -> Optional[bytes]:
    """Make the JSON-lines file ``path`` end with a whole line before anything is appended.

    A last line without its newline was cut short (a crash or a full disk mid-write): when it is
    not valid JSON it is removed (and logged) and returned, else its newline is added. Without
    this, the next record would be appended to it and both lines would be lost to a reader.
    """
    if not os.path.isfile(path):
        return None
    with open(path, 'r+b') as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        f.seek(end - 1)
        if f.read(1) == b'\n':
            return None
        start = end - 1
        while start > 0:  # back to the previous newline, a block at a time
            block = min(start, 1 << 16)
            f.seek(start - block)
            newline = f.read(block).rfind(b'\n')
            if newline >= 0:
                start = start - block + newline + 1
                break
            start -= block
        f.seek(start)
        tail = f.read()
        try:
            json.loads(tail)
        except ValueError:  # UnicodeDecodeError included: a character cut in two
            f.truncate(start)
            logging.getLogger('colossal_runner').warning(
                f'{path}: removed its last line, which was cut short (no newline, not valid JSON: '
                f'{tail[:80]!r}), most likely by a crash or a full disk while it was written')
            return tail
        f.write(b'\n')
    return None


class MetricWriter:
    """Appends one JSON object per line to ``path``: one record per logged step or epoch.

    JSON lines survive a crash (every line is flushed) and are read back with
    ``[json.loads(line) for line in open(path)]``. NaN becomes null. A last line that an
    earlier process left cut short is removed before the first append (:func:`end_last_line`).
    """

    def __init__(self, path: str):
        self.path = path
        self._checked_end = False
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps({str(k): _jsonable(v) for k, v in record.items()})
        try:
            if not self._checked_end:
                end_last_line(self.path)
                self._checked_end = True
            with open(self.path, 'a', encoding='utf-8') as f:
                f.write(line + '\n')
        except OSError as exc:
            self._checked_end = False  # the failed write may have left part of the line
            # the bare error ("[Errno 28] No space left on device") names no file
            fix = 'free space on its device' if exc.errno == errno.ENOSPC else 'make it writable'
            raise OSError(exc.errno, f'cannot write the metrics file {self.path!r}: {exc.strerror or exc}. '
                                     f'To fix: {fix}, or choose another work directory (--work-dir, or '
                                     f'work_dir in the config).') from exc
