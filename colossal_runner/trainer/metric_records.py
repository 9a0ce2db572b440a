"""``metrics.jsonl`` across runs into one work directory: a resumed run drops what the run it
replaces wrote after the checkpoint; a fresh run sets an earlier run's file aside."""
from __future__ import annotations

import json
import os
from typing import Any, Optional

from ..utils.logging import end_last_line


def _written_after(line: str, iteration: int, epochs_done: int) -> bool:
    """Whether a record was written after the point ``(iteration, epochs_done)`` of a run.

    A record at the point's own iteration is after it when it ends an epoch (``by`` other than
    ``'step'``) that the point has not finished (a checkpoint taken at an epoch's last step,
    before the epoch's end), or when it is the ``memory_start`` record of a run that started
    there: a run resumed from the same checkpoint before, which this one replaces. Lines that
    are not such records (a record of one's own, a damaged line before the last) are kept.
    """
    try:
        record: Any = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict):
        return False
    it, epoch = record.get('iteration'), record.get('epoch')
    if not isinstance(it, int) or isinstance(it, bool):
        return False
    if it != iteration:
        return it > iteration
    if record.get('by') == 'memory_start':
        return True
    return record.get('by') != 'step' and isinstance(epoch, int) and epoch > epochs_done


def drop_records_after(path: str, iteration: int, epochs_done: int) -> int:
    """Rewrite ``path`` without the records written after ``(iteration, epochs_done)``; returns how
    many were dropped. The new file replaces the old one in one rename, so a crash leaves either."""
    if not os.path.isfile(path):
        return 0
    end_last_line(path)  # a line cut short by a crash: removed (and logged), not counted here
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    kept = [line for line in lines if not _written_after(line, iteration, epochs_done)]
    dropped = len(lines) - len(kept)
    if dropped:
        temporary = f'{path}.tmp'
        with open(temporary, 'w', encoding='utf-8') as f:
            f.writelines(line + '\n' for line in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    return dropped


def set_aside(path: str) -> Optional[str]:
    """Rename a non-empty ``path`` (``metrics.jsonl``) to the first free ``metrics.<n>.jsonl``;
    returns the new name, or None when there was nothing to keep."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f'{stem}.{n}{ext}'):
        n += 1
    os.replace(path, f'{stem}.{n}{ext}')
    return f'{stem}.{n}{ext}'
