"""Checkpoints: atomic save, safe load, the newest complete file, and the full training state.

A checkpoint is one file per save (one per pipeline stage with ``pipeline_size > 1``) holding a
plain dict of tensors, lists, numbers and strings, so that ``torch.load(weights_only=True)``
reads it without executing pickled code. The layout written by ``Trainer.state_dict``::

    dict(format='colossal_runner/1',
         engine=engine.state_dict(),           # model, optimizer, lr_scheduler, scaler
         states=dict(epoch=E, iteration=N),     # runner.states that resume needs
         hooks={'SaveCheckpointHook': {...}},   # each stateful hook's state_dict()
         rng=get_rng_state(),                   # python, numpy, torch, cuda
         config='...config text...' or None,
         meta=dict(torch='2.x', time='...', stage=s, pipeline_size=P, model_chunks=C,
                   vocabulary=[...]))          # a character model's tokens (Trainer.vocabulary)

File names are ``epoch_{E}.pt`` / ``iter_{N}.pt`` (``epoch_{E}_stage{s}.pt`` with several
stages). ``latest.pt`` (``latest_stage{s}.pt``) is a symbolic link, replaced atomically after a
file is complete, so it always names the newest complete checkpoint.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import secrets
import tempfile
import warnings
import zipfile
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

FORMAT = 'colossal_runner/1'
_NAME = re.compile(r'^(epoch|iter)_(\d+)(?:_stage(\d+))?\.pt$')


def checkpoint_name(kind: str, number: int, stage: Optional[int] = None) -> str:
    """``epoch_3.pt``, ``iter_100.pt``, or with a stage ``epoch_3_stage1.pt``."""
    if kind not in ('epoch', 'iter'):
        raise ValueError(f"checkpoint kind must be 'epoch' or 'iter', got {kind!r}")
    suffix = f'_stage{stage}' if stage is not None else ''
    return f'{kind}_{number}{suffix}.pt'


def latest_name(stage: Optional[int] = None) -> str:
    return f'latest_stage{stage}.pt' if stage is not None else 'latest.pt'


def resumable_name(name: str) -> bool:
    """Whether a file name is one a resume reads: ``epoch_N.pt``, ``iter_N.pt`` (of any stage) or
    ``latest.pt``; not ``best.pt`` (save_best's, which holds no place to go on from)."""
    return bool(_NAME.match(name)) or re.fullmatch(r'latest(?:_stage[0-9]+)?\.pt', name) is not None


def _stage_of(name: str) -> Optional[int]:
    match = _NAME.match(name)
    return int(match.group(3)) if match and match.group(3) is not None else None


def list_checkpoints(checkpoint_dir: str, stage: Optional[int] = None) -> List[str]:
    """Complete checkpoint files of ``stage`` in ``checkpoint_dir``, oldest first (by mtime)."""
    if not os.path.isdir(checkpoint_dir):
        return []
    names = [n for n in os.listdir(checkpoint_dir) if _NAME.match(n) and _stage_of(n) == stage]
    return sorted(names, key=lambda n: (os.stat(os.path.join(checkpoint_dir, n)).st_mtime_ns, n))


def find_latest(checkpoint_dir: str, stage: Optional[int] = None) -> Optional[str]:
    """Path of the newest complete checkpoint of ``stage`` in ``checkpoint_dir``, or None.

    Follows ``latest.pt``; without a valid link, the most recently written file.
    """
    link = os.path.join(checkpoint_dir, latest_name(stage))
    if os.path.islink(link) and os.path.isfile(link):
        return os.path.join(checkpoint_dir, os.readlink(link))
    names = list_checkpoints(checkpoint_dir, stage)
    return os.path.join(checkpoint_dir, names[-1]) if names else None


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# O_EXCL: never open a file (or follow a link) that is already there; O_NOFOLLOW where it exists.
_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
           | getattr(os, 'O_BINARY', 0))


def _create_temporary(directory: str, name: str) -> Tuple[int, str]:
    """Create ``.{name}.{random}.tmp`` in ``directory``; returns ``(fd, path)``.

    Unlike ``tempfile.mkstemp`` (always 0600), the file is created with mode 0666 and the
    process's umask applies, as for ``open(path, 'wb')``: the checkpoint ends up with the mode
    (and default ACL) any other file the user writes there would get, e.g. 0644 under umask 022.
    """
    for _ in range(100):
        tmp = os.path.join(directory, f'.{name}.{secrets.token_hex(6)}.tmp')
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f'could not create a temporary file for {name!r} in {directory!r}: '
                                        f'100 random names were all taken; remove the leftover .*.tmp files '
                                        f'there (or anything else creating them) and save again')


def atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(file)`` so that it is either complete or absent.

    The data goes to a temporary file in the same directory, is flushed and fsync'ed, then
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows). The file gets the
    mode ``open()`` would give it (0666 less the umask), not a temporary file's 0600.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _point_latest(path: str) -> None:
    """Atomically make ``latest[_stage{s}].pt`` next to ``path`` link to it."""
    directory, name = os.path.split(os.path.abspath(path))
    point_latest(directory, path, _stage_of(name))


def point_latest(checkpoint_dir: str, path: str, stage: Optional[int] = None) -> None:
    """Atomically make ``latest[_stage{s}].pt`` in ``checkpoint_dir`` link to ``path``: by its name
    when it is in that directory, else by a path relative to it (a checkpoint of another work
    directory that a run resumed from)."""
    directory = os.path.abspath(checkpoint_dir)
    link = os.path.join(directory, latest_name(stage))
    target = os.path.relpath(os.path.abspath(path), directory)
    tmp = os.path.join(directory, f'.{os.path.basename(link)}.{os.getpid()}.tmp')
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def checkpoints_after(checkpoint_dir: str, iteration: int, epochs_done: int,
                      stage: Optional[int] = None) -> List[str]:
    """Names of the checkpoints of ``stage`` in ``checkpoint_dir`` taken after the moment
    ``(iteration, epochs_done)``, by their names: ``iter_N.pt`` with ``N > iteration``,
    ``epoch_E.pt`` with ``E > epochs_done``; oldest first (by mtime)."""
    later = []
    for name in list_checkpoints(checkpoint_dir, stage):
        match = _NAME.match(name)
        if int(match[2]) > (iteration if match[1] == 'iter' else epochs_done):
            later.append(name)
    return later


# Types the weights-only unpickler rebuilds; subclasses (an IntEnum, torch's TorchVersion) are not.
_PLAIN = (str, int, float, bool, bytes, type(None), torch.Size, torch.dtype, torch.device)
# Types the weights-only unpickler of newer torch rebuilds and that of torch 2.5 and earlier refuses
# (setup.py allows torch>=2.1); and how to store them instead.
_NEWER_TORCH_ONLY = {
    set: 'store sorted(value), a list, and make it a set again in load_state_dict',
    complex: 'store [value.real, value.imag], or torch.tensor(value)',
}


def check_weights_only(obj: Any, where: str = 'state') -> None:
    """Raise TypeError naming the first value ``torch.load(weights_only=True)`` would refuse.

    Checked before writing, so a bad value fails the save rather than the resume days later.
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return
    # Counter: torch's MultiStepLR keeps its milestones in one (a dict subclass the loader rebuilds)
    if type(obj) in (dict, OrderedDict, Counter):
        for key, value in obj.items():
            check_weights_only(key, f'{where} key {key!r}')
            check_weights_only(value, f'{where}[{key!r}]')
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_weights_only(value, f'{where}[{i}]')
        return
    if type(obj) in _NEWER_TORCH_ONLY:
        raise TypeError(f'{where} is a {type(obj).__name__}, which torch.load(weights_only=True) refuses in '
                        f'older torch versions (2.5 and earlier; this project supports torch>=2.1, and a '
                        f'checkpoint must load with any of them); {_NEWER_TORCH_ONLY[type(obj)]}.')
    raise TypeError(f'{where} is a {type(obj).__module__}.{type(obj).__qualname__}, which '
                    f'torch.load(weights_only=True) refuses; store it as a tensor, a number, a string, '
                    f'or a list / dict of those (e.g. str(value) or value.tolist()).')


def _write_error(exc: OSError, path: str, action: str) -> OSError:
    """An OSError (same errno) saying what failed, that older checkpoints are intact, and what to do."""
    directory = os.path.dirname(os.path.abspath(path))
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        fix = f'free disk space on the device of {directory!r} or write checkpoints elsewhere'
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f'make {directory!r} writable or choose another directory'
    else:
        fix = 'check the directory, or choose another one'
    return OSError(exc.errno, f'cannot {action} checkpoint {path!r}: {reason}. Earlier checkpoints in '
                              f'{directory!r} are untouched. To fix: {fix} (--work-dir, or '
                              f'SaveCheckpointHook(checkpoint_dir=...)).')


def _os_error_in_chain(exc: BaseException) -> Optional[OSError]:
    """The first OSError among ``exc``'s causes and contexts, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def save_checkpoint(state: Dict[str, Any], path: str, update_latest: bool = True) -> str:
    """Write ``state`` to ``path`` atomically and point ``latest`` at it; returns ``path``.

    Raises TypeError before writing when ``state`` holds something a weights-only load refuses,
    and an OSError naming the file and the fix when the disk is full or the directory is not
    writable; the previous checkpoint and ``latest`` then still point at complete data.
    """
    check_weights_only(state)
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except OSError as exc:
        raise _write_error(exc, path, 'write') from exc
    except RuntimeError as exc:
        # torch's zip writer turns a failed write (a full disk) into "[enforce fail at
        # inline_container.cc] unexpected pos ..." with the OSError as its context
        cause = _os_error_in_chain(exc)
        if cause is None:
            raise
        raise _write_error(cause, path, 'write') from exc
    if update_latest and _NAME.match(os.path.basename(path)):
        try:
            _point_latest(path)
        except OSError as exc:
            raise _write_error(exc, path, 'point latest at') from exc
    return path


def check_writable(directory: str) -> None:
    """Create ``directory`` and a probe file in it now, so an unwritable place fails at start."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.write_probe.', suffix='.tmp', dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or exc
        raise OSError(exc.errno, f'checkpoint directory {directory!r} is not writable ({reason}); '
                                 f'choose a writable directory with --work-dir or '
                                 f'SaveCheckpointHook(checkpoint_dir=...), or fix its permissions.') from exc


def remove_stale_temporaries(directory: str, stage: Optional[int] = None) -> List[str]:
    """Delete temporary files a killed save left behind (this stage's only); returns their names."""
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in os.listdir(directory):
        if not (name.startswith('.') and name.endswith('.tmp')):
            continue
        target = name[1:].split('.pt.', 1)[0] + '.pt'
        if (_NAME.match(target) and _stage_of(target) == stage) or target == latest_name(stage):
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def resolve_checkpoint_path(path: str, stage: Optional[int] = None) -> str:
    """Turn a directory, ``latest.pt`` or a stage-less name into the file to read.

    ``stage`` (the current pipeline stage when several exist) selects ``*_stage{s}.pt``.
    """
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        found = find_latest(path, stage)
        if found is None:
            names = sorted(n for n in os.listdir(path) if _NAME.match(n))
            stages = [_stage_of(n) for n in names]
            if stage is None and stages and None not in stages and max(stages) >= 1:
                # one process given a pipeline run's directory: no file holds the whole model
                raise FileNotFoundError(f'no checkpoint in directory {path!r} holds the whole model: a run '
                                        f'with {max(stages) + 1} pipeline stages wrote them per stage '
                                        f'({_few_names(names)}). Load them with the config it was trained '
                                        f'with (parallel.pipeline={max(stages) + 1}), where each stage reads '
                                        f'its own.')
            wrote = _pipeline_that_wrote(stages, stage) if stage is not None else 0
            if wrote:
                raise FileNotFoundError(f'no checkpoint of stage {stage} in directory {path!r}: its '
                                        f'checkpoints ({_few_names(names)}) were written by a run with '
                                        f'{wrote} pipeline stages. {_use_layout(wrote)}')
            raise FileNotFoundError(f'no checkpoint in directory {path!r} (expected files like '
                                    f'{checkpoint_name("epoch", 1, stage)}); it holds '
                                    f'{sorted(os.listdir(path))}')
        return found
    directory, name = os.path.split(path)
    if stage is not None and name.endswith('.pt'):
        # epoch_3.pt, or one stage's epoch_3_stage0.pt, names a moment: each stage reads its own file;
        # a file of that name without a stage file beside it holds the whole model (a one-process run's
        # checkpoint, bare weights), whose stage's weights a fine-tune takes by name
        staged = os.path.join(directory, f"{re.sub(r'_stage[0-9]+$', '', name[:-3])}_stage{stage}.pt")
        if os.path.isfile(staged) or not os.path.isfile(path) or _stage_of(name) is not None:
            path, name = staged, os.path.basename(staged)
    if name.startswith('latest') and not os.path.isfile(path):
        found = find_latest(directory or '.', stage)
        if found is not None:
            return found
    if not os.path.isfile(path):
        where = directory or '.'
        existing = list_checkpoints(where, stage) if os.path.isdir(where) else []
        staged = []
        if name.endswith('.pt') and os.path.isdir(where):  # the same moment's files of other stages?
            moment = name[:-3] if stage is None else re.sub(r'_stage[0-9]+$', '', name[:-3])
            pattern = re.compile(re.escape(moment) + r'_stage([0-9]+)\.pt')
            staged = sorted((n for n in os.listdir(where) if pattern.fullmatch(n)),
                            key=lambda n: int(pattern.fullmatch(n)[1]))
        if staged and stage is None:
            raise FileNotFoundError(f'checkpoint {path!r} does not exist as one file: a pipeline run wrote '
                                    f'it per stage ({", ".join(staged)}). Load it with the config it was '
                                    f'trained with (parallel.pipeline={len(staged)}), where each stage reads '
                                    f'its own.')
        # blamed on the layout only when this stage has no checkpoint at all there: with files of its
        # own, this stage's run wrote them, and this moment's save was cut short
        wrote = (_pipeline_that_wrote([int(pattern.fullmatch(n)[1]) for n in staged], stage)
                 if staged and not existing else 0)
        if wrote:
            raise FileNotFoundError(f'checkpoint {path!r} does not exist: a run with {wrote} pipeline stages '
                                    f'wrote that moment ({", ".join(staged)}), and this process is stage '
                                    f'{stage}. {_use_layout(wrote)}')
        if staged:
            raise FileNotFoundError(f'checkpoint {path!r} does not exist, though other stages have their '
                                    f'file of that moment ({", ".join(staged)}): a save was interrupted '
                                    f'between stages, or the file was removed; checkpoints of stage {stage} '
                                    f'in {where!r}: {existing or "none"}')
        raise FileNotFoundError(f'checkpoint {path!r} does not exist; checkpoints in {where!r}: '
                                f'{existing or "none"}')
    return path


def _pipeline_that_wrote(stages: List[Optional[int]], stage: int) -> int:
    """The number of pipeline stages of the run that wrote files of ``stages`` when this run's
    ``stage`` has none because that run had fewer stages (all of 0..n-1 there, and ``stage >= n``);
    0 otherwise (a save interrupted between stages, a file removed)."""
    if not stages or None in stages:
        return 0
    wrote = max(stages) + 1
    # a one-stage run writes no _stage files: stage 0's file alone is a cut-short save
    return wrote if wrote >= 2 and set(stages) == set(range(wrote)) and stage >= wrote else 0


def _use_layout(stages: int) -> str:
    return (f'Resume or test with the layout it was trained with (parallel.pipeline={stages} and the same '
            f'schedule), where each stage reads its own file. (If this run has the layout that trained, its '
            f'first save was cut short after stage {stages - 1}: start the run afresh.)')


def _few_names(names: List[str], n: int = 4) -> str:
    return ', '.join(names[:n]) + (f' and {len(names) - n} more' if len(names) > n else '')


def _newest_first(path: str, stage: Optional[int]) -> Optional[List[str]]:
    """For a directory or a ``latest`` name: every candidate file, newest first; else None."""
    if os.path.isdir(path):
        directory = path
    elif os.path.basename(path).startswith('latest'):
        directory = os.path.dirname(path) or '.'
    else:
        return None
    first = find_latest(directory, stage)
    if first is None:
        return None
    rest = [os.path.join(directory, n) for n in reversed(list_checkpoints(directory, stage))]
    return [first] + [p for p in rest if os.path.abspath(p) != os.path.abspath(first)]


def load_checkpoint(path: str, map_location: Any = 'cpu', stage: Optional[int] = None) -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: never executes pickled code.

    ``path`` may be a file, a directory (its newest checkpoint) or ``.../latest.pt``; with
    several pipeline stages the current stage's file is read unless ``stage`` is given. For a
    directory or ``latest``, a newest file that cannot be read (torn by a crash of the disk,
    corrupt) is skipped for the one before it, with a warning naming it. The returned dict's
    ``meta['path']`` is the file that was read.
    """
    path = os.path.expanduser(path)
    if stage is None:
        from .distributed import get_context
        context = get_context()
        stage = context.stage if context.pipeline_size > 1 else None
    candidates = _newest_first(path, stage)
    if candidates:
        for candidate in candidates[:-1]:
            try:
                return _read(candidate, map_location)
            except ValueError as exc:
                message = f'skipping unreadable checkpoint {candidate!r}, trying the previous one: {exc}'
                warnings.warn(message, UserWarning, stacklevel=2)
                # and into the run's log file, which keeps which file a resume passed over, and why
                logging.getLogger('colossal_runner').warning(message)
        return _read(candidates[-1], map_location)
    return _read(resolve_checkpoint_path(path, stage), map_location)


def _read(path: str, map_location: Any) -> Dict[str, Any]:
    try:
        empty = os.path.getsize(path) == 0
    except OSError:  # torch.load says why
        empty = False
    if empty:
        raise ValueError(f'cannot read checkpoint {path!r}: the file is empty (0 bytes); its data were '
                         f'lost after it was written (colossal_runner writes checkpoints atomically: a '
                         f'failed copy, a damaged disk). Load an earlier checkpoint from '
                         f'{os.path.dirname(path) or "."!r}.')
    with contextlib.ExitStack() as stack:
        state, damage = _load_and_check(stack, path, map_location)
    if damage:
        raise ValueError(f'cannot read checkpoint {path!r} ({damage}). It is truncated or corrupt: its bytes '
                         f'changed on disk or in a copy since torch.save wrote them; load an earlier '
                         f'checkpoint from {os.path.dirname(path) or "."!r}.')
    if not isinstance(state, dict):
        raise ValueError(f'checkpoint {path!r} holds a {type(state).__name__}, expected a dict')
    if isinstance(state.get('meta'), dict) or ('engine' in state and 'states' in state):
        # which file a directory or latest.pt stood for (training checkpoints only: bare weights
        # must load into their module as they were saved)
        state['meta'] = dict(state.get('meta') or {}, path=path)
    return state


def _load_and_check(stack: contextlib.ExitStack, path: str, map_location: Any) -> Tuple[Any, str]:
    """``torch.load`` of ``path`` and what :func:`_zip_damage` finds, from one open file: the CRC
    check must read the bytes that were loaded, not a file that replaced or removed them since
    (a training's max_keep cleanup beside tools/test.py)."""
    try:
        f = stack.enter_context(open(path, 'rb'))
        state = torch.load(f, map_location=map_location, weights_only=True)
    except Exception as exc:
        not_one = _not_a_checkpoint(path)
        if not_one:
            raise ValueError(f'cannot read checkpoint {path!r}: it is not a checkpoint file ({not_one}); '
                             f'torch.save writes a zip archive. Give a .pt file written by colossal_runner '
                             f'(e.g. work_dirs/<name>/checkpoints/latest.pt) or its directory.') from exc
        refused = re.search(r'[Uu]nsupported GLOBAL (\S+)|Unsupported global: GLOBAL (\S+)', str(exc))
        if refused or 'Weights only load failed' in str(exc):
            what = next((g for g in (refused.groups() if refused else ()) if g), 'an object other than '
                        'tensors and plain containers')
            raise ValueError(f'cannot read checkpoint {path!r}: refused, its pickle would import or call '
                             f'{what}, and checkpoints are read with torch.load(weights_only=True), which '
                             f'never runs such code. Load only checkpoints written by colossal_runner '
                             f'(tensors and plain containers); if you trust the file, convert it in a '
                             f'separate script.') from exc
        raise ValueError(f'cannot read checkpoint {path!r} ({type(exc).__name__}: {exc}). It is truncated, '
                         f'corrupt, or holds objects other than tensors and plain containers; load an '
                         f'earlier checkpoint from {os.path.dirname(path) or "."!r}.') from exc
    # torch.load does not check the zip entries' CRC-32s: a bit flipped on disk would load as a
    # wrong weight and show up, if at all, as a NaN loss long after the resume
    return state, _zip_damage(f)


def _zip_damage(f: Any) -> str:
    """Which entry of the zip archive in the open file ``f`` fails its CRC-32 check (reads it once
    more), or '' when all pass or it is not a zip archive (the legacy pickle format has no CRCs)."""
    try:
        f.seek(0)
        if f.read(2) != b'PK':
            return ''
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f'{type(exc).__name__}: {exc}'
    return f'its entry {bad!r} fails its CRC-32 check' if bad else ''


def _not_a_checkpoint(path: str) -> str:
    """Why ``path`` is not a file ``torch.save`` wrote (a zip archive, or a pickle in the legacy
    format), or '' when it may be one (an empty file is a damaged checkpoint, most likely)."""
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
    except OSError:
        return ''
    if not head or head.startswith(b'PK') or head.startswith(b'\x80'):  # zip; pickle protocol 2+
        return ''
    return f'it starts with {head!r}, neither a zip archive nor a pickle'


# ------------------------------------------------------------------ random number generators
def get_rng_state() -> Dict[str, Any]:
    """Python, NumPy, torch (and CUDA when initialized) RNG states as weights-only-safe values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = dict(python=[version, list(internal), gauss],
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                            has_gauss=int(has_gauss), cached_gaussian=float(cached)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    np_state = state['numpy']
    np.random.set_state((np_state['kind'], np_state['keys'].numpy().astype(np.uint32), np_state['pos'],
                         np_state['has_gauss'], np_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def resume(runner: Any, path: str, strict: bool = True, finetune: bool = False) -> Dict[str, Any]:
    """Load ``path`` into ``runner`` (a Trainer): engine, states, hook states and RNG.

    The next ``fit`` continues at the next epoch / iteration. ``finetune=True`` loads the model
    weights only. Returns the checkpoint dict. Used by ``tools/train.py --resume``.
    """
    state = load_agreed(path, check=not finetune)
    runner.load_state_dict(state, strict=strict, finetune=finetune)
    return state


def load_agreed(path: str, check: bool = True, stage: Optional[int] = None) -> Dict[str, Any]:
    """:func:`load_checkpoint`, and in a multi-process run (``check``) every rank raises unless all
    of them read a checkpoint of the same epoch and iteration. Collective: call it on every rank.

    Each pipeline stage reads its own file (``*_stage{s}.pt``). A run killed between two stages'
    saves leaves the newest iteration on one stage only, and "the newest checkpoint" then means
    different iterations on different stages: they would train on silently out of step, or hang
    in mismatched messages. A rank that cannot read its file at all makes every rank raise too,
    instead of leaving the others waiting for it.
    """
    import torch.distributed as dist
    if not check or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return load_checkpoint(path, stage=stage)
    from .distributed import get_context
    rank_stage = get_context().stage
    try:
        state, failure = load_checkpoint(path, stage=stage), None
        states = state.get('states', {}) if isinstance(state, dict) else {}
        mine = (rank_stage, int(states.get('epoch', 0)), int(states.get('iteration', 0)), None)
    except Exception as exc:  # noqa: BLE001 - re-raised below, once every rank knows
        state, failure = None, exc
        mine = (rank_stage, -1, -1, f'{type(exc).__name__}: {exc}')
    everyone: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if failure is not None:
        raise failure
    failed = sorted({(s, error) for s, _, _, error in everyone if error is not None})
    if failed:
        raise RuntimeError(f'stage {failed[0][0]} could not read its checkpoint for {path!r} '
                           f'({failed[0][1]}); every stage stops so that none resumes alone')
    found = sorted({(s, e, i) for s, e, i, _ in everyone})
    if len({(e, i) for _, e, i in found}) > 1:
        where = ', '.join(f'stage {s}: epoch {e}, iteration {i}' for s, e, i in found)
        raise ValueError(f'the processes found checkpoints of different moments in {path!r} ({where}): a '
                         f"save was interrupted between stages, or a stage's file is missing or damaged. "
                         f'{_common_names(path, len({s for s, _, _ in found}))}')
    return state


def _common_names(path: str, stages: int) -> str:
    """What to resume from instead: the newest checkpoints of which every stage has its file."""
    directory = path if os.path.isdir(path) else os.path.dirname(path) or '.'
    have: Dict[Tuple[str, int], set] = {}
    for name in (os.listdir(directory) if os.path.isdir(directory) else []):
        match = _NAME.match(name)
        if match and match[3] is not None:
            have.setdefault((match[1], int(match[2])), set()).add(int(match[3]))
    # the newest of each kind (iteration and epoch numbers do not compare)
    common = [max((key for key, found in have.items() if key[0] == kind and len(found) >= stages),
                  key=lambda k: k[1], default=None) for kind in ('iter', 'epoch')]
    common = [key for key in common if key is not None]
    if not common:
        return f'No checkpoint in {directory!r} has a file for every stage; train from the start.'
    names = ' or '.join(f'--resume {os.path.join(directory, checkpoint_name(kind, n))}' for kind, n in common)
    return f'Resume from one that every stage has, by its name ({names}); each stage then loads its own file.'
