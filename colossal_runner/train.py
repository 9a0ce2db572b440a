"""Train from a config file: ``python -m colossal_runner.train CONFIG`` (also ``colossal-train``,
``tools/train.py``).

    python tools/train.py configs/digits/cnn.py
    python tools/train.py configs/digits/mlp.py --cfg-options optimizer.lr=0.05 max_epochs=3
    python tools/train.py configs/digits/mlp.py --resume            # newest checkpoint in the work dir
    torchrun --nproc_per_node=2 tools/train.py configs/digits/mlp_pipeline.py --launcher torch

The work directory (default ``work_dirs/<config name>``) receives the merged config, the log,
``metrics.jsonl``, the checkpoints and the TensorBoard event files. A bad config, option or
file ends the run with a non-zero exit and one line on stderr (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import os.path as osp
import signal
import sys
import threading
from typing import Any, Callable, Collection, Dict, Iterator, List, Optional

from .config import ConfigError, DictAction, format_config_error

EXIT_CONFIG = 2   # the config, the options or a file given by the user is wrong
EXIT_RUNTIME = 1  # the run itself failed


class UsageError(ConfigError):
    """A problem with the command line or the files it names."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='train.py', description='Train a model from a config file.')
    parser.add_argument('config', help='config file (.py, .json, .yaml or .yml)')
    parser.add_argument('--work-dir', help='where logs, checkpoints and the merged config go '
                                           '(default: cfg.work_dir or work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, metavar='KEY=VALUE',
                        help='override config values, e.g. optimizer.lr=0.05 max_epochs=3; may be repeated')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT (a file or a directory), or with no value from the newest '
                             'checkpoint in the work directory, starting from scratch while it has none')
    parser.add_argument('--seed', type=int, default=None, help='random seed (default: cfg.seed or 1024)')
    parser.add_argument('--deterministic', action='store_true',
                        help='use deterministic algorithms only (cfg.deterministic = True): slower, but a '
                             'rerun on the same machine gives the same numbers, on a GPU too')
    parser.add_argument('--launcher', choices=['none', 'torch', 'pytorch', 'slurm', 'openmpi'],
                        default='none', help='how processes of a distributed run are started '
                                             "(torch = torchrun; pytorch, mmcv's name, is the same)")
    add_local_rank_argument(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--debug', action='store_true', help='show full tracebacks on errors')
    return parser.parse_args(argv)


def add_local_rank_argument(parser: argparse.ArgumentParser) -> None:
    """``--local-rank`` / ``--local_rank``, which ``python -m torch.distributed.launch`` passes to
    every process it starts; accepted and ignored, since LOCAL_RANK in the environment says the same."""
    parser.add_argument('--local-rank', '--local_rank', type=int, default=None, metavar='N',
                        help='ignored: python -m torch.distributed.launch passes it; the local rank is '
                             'read from the LOCAL_RANK environment variable, which it sets too')


@contextlib.contextmanager
def report_errors(prog: str, debug: bool, status: int,
                  logs_before: Optional[Collection[logging.Handler]] = None) -> Iterator[None]:
    """One line on stderr and ``SystemExit(status)`` for any exception, unless ``debug``; a
    ``ConfigError`` exits with ``EXIT_CONFIG`` wherever it was raised.

    None for a communication error that another rank's failure caused: the fault watcher has
    already said, on stderr and in the log file, which rank failed and why.

    With ``logs_before`` (what :func:`log_files` returned when the run started), the line also
    goes into the log file the run has opened since, so that a batch job's log says why it stopped.
    """
    try:
        yield
    except KeyboardInterrupt:
        _log_error(f'{prog}: interrupted', logs_before)
        print(f'{prog}: interrupted', file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - the user gets one clear line, --debug the traceback
        from .distributed import report_failure
        from .distributed.faults import is_communication_error, peer_failure
        comm = is_communication_error(exc)
        if not comm:
            # Said before the others are told: once they stop, torchrun may SIGTERM this rank while
            # report_failure waits for them, and the reason would be lost.
            _say_error(prog, exc, debug, logs_before)
        report_failure(exc)  # other ranks of a distributed run stop now instead of at the timeout
        # Another rank failed first and this one's error is only gloo's "Connection closed by peer":
        # the watcher has written "rank N is stopping because rank M failed: ..." (stderr, log file).
        follow_on = comm and peer_failure() is not None
        if comm and not follow_on:
            _say_error(prog, exc, debug, logs_before)
        if debug:
            raise
        if isinstance(exc, ConfigError):
            # a config error found once training starts (a save_best naming no metric) is still one
            status = EXIT_CONFIG
        raise SystemExit(status) from None


def _say_error(prog: str, exc: BaseException, debug: bool,
               logs_before: Optional[Collection[logging.Handler]]) -> None:
    """The error line into the run's log file (unless it is there already) and on stderr (the
    traceback instead, with ``debug``)."""
    if not getattr(exc, 'logged', False):  # a logged error is in the log already
        _log_error(f'{prog}: error: {format_config_error(exc)}', logs_before)
    if not debug:
        print(f'{prog}: error: {format_config_error(exc)} (rerun with --debug for the traceback)',
              file=sys.stderr, flush=True)


def log_files() -> List[logging.Handler]:
    """The log files (handlers) that colossal_runner's logger writes to now."""
    handlers = logging.getLogger('colossal_runner').handlers
    return [h for h in handlers if getattr(h, '_colossal_log_file', False)]


def _log_error(line: str, logs_before: Optional[Collection[logging.Handler]]) -> None:
    """Write ``line`` into the log files opened since ``logs_before``; the console has it already."""
    if logs_before is None:
        return
    for handler in log_files():
        if handler not in logs_before:
            handler.handle(logging.LogRecord('colossal_runner', logging.ERROR, __file__, 0, line, None, None))


def load_user_config(path: str, cfg_options: Dict[str, Any]) -> Any:
    """The config file with the command line's overrides merged in, and then its ``custom_imports``
    imported (so that ``--cfg-options custom_imports.imports=[]`` or ``allow_failed_imports=True``
    take effect, and tools/test.py sees the hooks they register)."""
    from .config import Config
    from .config.config import import_custom
    if not osp.isfile(path):
        raise UsageError(f'config file not found: {path}')
    cfg = Config.fromfile(path, import_custom_modules=False)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports', None):
        import_custom(cfg.custom_imports, cfg.filename)
    return cfg


def locate_checkpoint(path: str) -> str:
    """``path``, or its ``checkpoints/`` counterpart when ``path`` names a work directory
    (``work_dirs/mlp``) or a file in one (``work_dirs/mlp/latest.pt``) that holds no checkpoint
    itself: checkpoints live in ``<work_dir>/checkpoints`` but people name the work dir."""
    path = osp.expanduser(path)  # `--resume=~/x` reaches us unexpanded by the shell
    directory, name = (path, None) if osp.isdir(path) else osp.split(path)
    nested = osp.join(directory or '.', 'checkpoints')
    if osp.isdir(nested) and not osp.exists(osp.join(directory or '.', name or 'latest.pt')):
        return osp.join(nested, name) if name else nested
    return path


def checkpoint_dir_of(trainer: Any, default: str) -> str:
    """The directory the trainer's SaveCheckpointHook writes to (``default`` without one).

    Only a SaveCheckpointHook counts: a fine-tune run's LoadCheckpointHook names the pretrained
    run's directory, which ``--resume`` must not continue from."""
    from .trainer.hooks import SaveCheckpointHook
    for hook in getattr(trainer, 'hooks', []):
        directory = getattr(hook, 'checkpoint_dir', None) if isinstance(hook, SaveCheckpointHook) else None
        if directory:
            return directory
    return default


def final_metrics(trainer: Any, test_moment: Optional[Dict[str, Any]] = None) -> Dict[str, Dict[str, float]]:
    """``{'train': {...}, 'test': {...}}``: the metric values last measured, as floats.

    A metric without a value is NaN: one that saw no data this time (nothing left to train
    after a resume), or a diverged loss. With ``test_moment`` (what :func:`watch_test_moment`
    returned) the test values are those of the last evaluation, of this run or of the run whose
    checkpoint it resumed; without any evaluation (no test data) there is no ``'test'`` entry.
    """
    from .trainer.hooks.metric_hook import read_metrics
    out = {}
    for mode in ('train', 'test') if test_moment is None else ('train',):
        try:
            values = read_metrics(trainer, mode)
        except Exception:  # noqa: BLE001 - a metric that never saw data has no value to print
            values = {}
        out[mode] = _as_floats(values)
    if test_moment:
        out['test'] = dict(test_moment.get('values') or {})
    return out


def _as_floats(values: Dict[str, Any]) -> Dict[str, float]:
    """Metric values as floats, NaN for a metric that saw no data (None)."""
    return {k: math.nan if v is None else float(v) for k, v in values.items()}


def watch_test_moment(trainer: Any) -> Dict[str, Any]:
    """Add a hook that records the epoch, iteration and test metric values of each evaluation during
    ``fit``; returns the dict it fills (``{}`` until one runs). Evaluations run every
    ``test_interval`` epochs only, so the test metrics may be older than the train metrics.

    The hook's state goes into checkpoints: register it before a resume, so that a resumed run
    that evaluates no more (``test_interval=2`` from ``epoch_2.pt`` to 3 epochs) reports the
    evaluation its checkpoint's run made, as the run without the stop does.
    """
    from .trainer.hooks import BaseHook
    from .trainer.hooks.metric_hook import read_metrics
    moment: Dict[str, Any] = {}

    class EvaluationMoment(BaseHook):
        def after_test_epoch(self, runner: Any) -> None:
            values = read_metrics(runner, 'test')  # collective: hooks run on every rank
            moment.update(epoch=runner.states['epoch'], iteration=runner.states['iteration'],
                          values=_as_floats(values))

        def state_dict(self) -> Dict[str, Any]:
            return dict(moment)

        def load_state_dict(self, state: Dict[str, Any]) -> None:
            moment.clear()
            moment.update(state)

    trainer.register_hook(EvaluationMoment(priority='LOWEST'))
    return moment


def write_final_metrics(metrics: Dict[str, Dict[str, float]], measured_at: Dict[str, Any], path: str) -> None:
    """``final_metrics.json``: the metrics (NaN as null) and when each mode's were measured."""
    data: Dict[str, Any] = {mode: {k: v if math.isfinite(v) else None for k, v in values.items()}
                            for mode, values in metrics.items()}
    data['measured_at'] = measured_at
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=2, allow_nan=False)


def format_final_metrics(metrics: Dict[str, Dict[str, float]], measured_at: Dict[str, Any]) -> str:
    """``train Loss=0.0213, ..., test Loss=0.031 (epoch 2)``: six significant digits; the epoch of
    a mode's values when it is not the last one."""
    last = (measured_at.get('train') or {}).get('epoch')
    parts = []
    for mode, values in metrics.items():
        text = ', '.join(f'{mode} {name}={value:.6g}' for name, value in values.items())
        epoch = (measured_at.get(mode) or {}).get('epoch')
        if text and epoch is not None and last is not None and epoch != last:
            text += f' (epoch {epoch})'
        if text:
            parts.append(text)
    return ', '.join(parts) or '(none)'


def dump_config(cfg: Any, work_dir: str, logger: Optional[logging.Logger] = None) -> str:
    """Write the merged config as ``<work_dir>/<config file name>`` and return the path.

    When that is the config file itself or one of its ``_base_`` files (``work_dir =
    '{{ fileDirname }}'``), or a file the run writes (a config named ``final_metrics.json``), it
    goes to ``<name>.merged<ext>`` instead, and the log says so.

    A config holding values that have no config text (``loss = dict(type=nn.CrossEntropyLoss)``,
    a ``collate_fn`` defined in the config) is written anyway, as ``.py``, with those values as
    strings naming them, a header saying so and the config files' own text at the end; a warning
    names the keys. The run goes on: the dump is a record of the run, not an input of it.
    """
    from .config.pretty import describe, pretty_text
    name = osp.basename(cfg.filename) if cfg.filename else 'config.py'
    path = _not_a_config_file(cfg, osp.join(work_dir, name), logger)
    os.makedirs(work_dir, exist_ok=True)
    try:
        cfg.dump(path)
        return path
    except ConfigError:
        pass
    unwritable: List[Any] = []
    text = pretty_text(cfg, unwritable=unwritable)
    if not unwritable:  # only the format could not hold it (JSON: keys that are not strings)
        py_path = _not_a_config_file(cfg, osp.splitext(path)[0] + '.py', logger)
        cfg.dump(py_path)
        (logger or logging.getLogger('colossal_runner')).info(
            f'the merged config cannot be written as {osp.splitext(path)[1] or "its format"} (JSON keys must '
            f'be strings): wrote it as {py_path}')
        return py_path
    found = [f'{key} = {describe(value)}' for key, value in unwritable]
    lines = ['# The merged config of this run. These values have no config text, so they are written as',
             '# strings naming them, and this file does not rerun as it is:']
    lines += [f'#   {item}' for item in found] + ['', text.rstrip('\n')]
    if cfg.text.strip():
        lines += ['', '# ---- the config files as they were read ----']
        lines += [f'# {line}'.rstrip() for line in cfg.text.rstrip('\n').split('\n')]
    path = _not_a_config_file(cfg, osp.splitext(path)[0] + '.py', logger)
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    (logger or logging.getLogger('colossal_runner')).warning(
        f'the merged config holds values that have no config text ({"; ".join(found)}); wrote {path} with '
        f'them as strings, so it does not rerun as it is (the config files as read are at its end). Name '
        f'classes and functions by their registered names for a config that can be written.')
    return path


# The files a run writes into its work directory under fixed names: a config named like one of
# them (final_metrics.json) must not have its dump overwritten by it, nor be overwritten by it
# (in its own work directory the final metrics go elsewhere: final_metrics_path).
RUN_FILE_NAMES = ('final_metrics.json', 'metrics.jsonl')


def _read_config_file(cfg: Any, path: str) -> bool:
    """Whether ``path`` is the config file or one of its ``_base_`` files."""
    # cfg.text heads each file it holds with '# <absolute path>' (a stray comment that looks
    # like one only moves the file written to the other name)
    read = {cfg.filename} if cfg.filename else set()
    read.update(line[2:] for line in cfg.text.splitlines() if line.startswith('# ') and osp.isabs(line[2:]))
    return osp.realpath(path) in {osp.realpath(f) for f in read}


def final_metrics_path(cfg: Any, logger: Optional[logging.Logger] = None) -> str:
    """``<work_dir>/final_metrics.json``, or ``final_metrics.run.json`` beside it when that is a
    config file the run read (a config named ``final_metrics.json`` in its own work directory):
    the run's final metrics never overwrite it. The log says where they go."""
    path = osp.join(cfg.work_dir, 'final_metrics.json')
    if not _read_config_file(cfg, path):
        return path
    moved = osp.join(cfg.work_dir, 'final_metrics.run.json')
    (logger or logging.getLogger('colossal_runner')).info(
        f'{path} is a config file this run read, so the final metrics go to {moved} instead')
    return moved


def _not_a_config_file(cfg: Any, path: str, logger: Optional[logging.Logger]) -> str:
    """``path``, or ``<stem>.merged<ext>`` beside it when ``path`` is a file the config was read
    from (the dump must not overwrite the user's own config) or one the run writes itself."""
    if _read_config_file(cfg, path):
        why = 'a config file this run read'
    elif osp.basename(path) in RUN_FILE_NAMES:
        why = 'a file the run writes itself'
    else:
        return path
    stem, ext = osp.splitext(path)
    moved = f'{stem}.merged{ext}'
    (logger or logging.getLogger('colossal_runner')).info(
        f'{path} is {why}, so the merged config goes to {moved} instead')
    return moved


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, preemption, ``kill``, torchrun stopping its workers),
    raised in the main thread so that it stops the run as Ctrl-C does."""


@contextlib.contextmanager
def report_interruption(prog: str, trainer_of: Callable[[], Any],
                        logs_before: Optional[Collection[logging.Handler]] = None) -> Iterator[None]:
    """Ctrl-C (exit 130) or SIGTERM (exit 143) during the block: one line on stderr and in the run's
    log file saying where the run stopped and how to continue it, instead of a silent death; and,
    for a SIGTERM that stops a rank because another rank failed (torchrun), which rank and why.

    SIGTERM raises :class:`Terminated` while the block runs (main thread only; the previous
    handler is restored after). Checkpoints are written atomically, so stopping mid-save is safe.
    """
    handle = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if handle else None
    state = dict(caught=False, done=False, raised=False, again=0)
    previous_unraisable = sys.unraisablehook

    def dropped(info: Any) -> None:
        # The handler's Terminated landed where Python prints and drops exceptions: a __del__ (a
        # DataLoader iterator's joins its workers at every epoch's end), a fork callback. Send the
        # signal again, so that the run stops rather than going on to its end. Only then: a
        # Terminated on its way out must not be interrupted by another (on_exception cleanups).
        if isinstance(info.exc_value, Terminated) and not (state['caught'] or state['done']):
            state['again'] += 1
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
            return
        previous_unraisable(info)

    def terminate(signum: int, frame: Any) -> None:
        if state['caught']:  # the line is being written; the process exits with 143 right after
            return
        if state['again']:  # ours, after a dropped one
            state['again'] -= 1
        elif state['raised']:  # a second SIGTERM from outside, during the stop: end at once
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        state['raised'] = True
        raise Terminated()

    if handle:
        _SIGTERM_HANDLED[0] = True
        sys.unraisablehook = dropped
        signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt as exc:
        state['caught'] = True
        terminated = isinstance(exc, Terminated)
        what = f'{"terminated (SIGTERM)" if terminated else "interrupted"} {stopped_at(trainer_of())}'
        faults = sys.modules.get(f'{__package__}.distributed.faults')  # not imported: no watcher runs
        # torchrun stops every worker once one failed, maybe before this rank's watcher saw why
        reason = faults.stopping_reason() if terminated and faults is not None else None
        line = f'{prog}: {reason}; {what}' if reason else f'{prog}: {what}'
        _log_error(line, logs_before)
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(143 if terminated else 130) from None
    finally:
        state['done'] = True
        if handle:
            _SIGTERM_HANDLED[0] = False
            sys.unraisablehook = previous_unraisable
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# Whether report_interruption's handler is installed. A forked child (a DataLoader worker) gets
# the default back: torch's worker does not set one, and a SIGTERM to the whole process group
# (torchrun, Slurm) would raise Terminated in every worker, each printing a traceback.
_SIGTERM_HANDLED = [False]


def _default_sigterm_in_child() -> None:
    if _SIGTERM_HANDLED[0]:
        _SIGTERM_HANDLED[0] = False
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:  # forked from a thread other than the main one: it cannot set handlers
            pass


os.register_at_fork(after_in_child=_default_sigterm_in_child)


def stopped_at(trainer: Any) -> str:
    """Where an interrupted run was and what ``--resume`` would continue from."""
    if trainer is None:
        return 'before training started'
    from .checkpoint import find_latest
    at = f"at epoch {trainer.states['epoch']}, iteration {trainer.states['iteration']}"
    directory = checkpoint_dir_of(trainer, '')
    if not directory:
        return f'{at}; the run saves no checkpoints (no SaveCheckpointHook), so a rerun starts over'
    try:  # a pipeline run's files are per stage: name stage 0's
        latest = find_latest(directory) or find_latest(directory, 0)
    except OSError:
        latest = None
    if latest is None:
        return (f'{at}; no checkpoint was saved yet in {directory}: a rerun starts over, with or without '
                f'--resume')
    return f'{at}; rerun with --resume to continue from the last checkpoint, {latest}'


def _any_checkpoint(directory: str) -> bool:
    """Whether ``directory`` holds a checkpoint to resume from (``epoch_N.pt``, ``iter_N.pt``,
    ``latest.pt``, of any pipeline stage; not save_best's ``best.pt``, nor the temporary file of a
    save that was cut short), on any process of a distributed run. Only a directory without one
    starts a run from scratch: the processes resume or start over together, and a file that is
    there but cannot be resumed from (another stage's only, damaged) fails the load with its reason."""
    import torch.distributed as dist

    from .checkpoint import resumable_name
    found = osp.isdir(directory) and any(resumable_name(name) for name in os.listdir(directory))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        everyone: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, found)
        found = any(everyone)
    return bool(found)


def resume_position(state: Dict[str, Any]) -> str:
    """Where in training a checkpoint was taken: ``at epoch 2, iteration 25 (step 8 of 17 of the
    epoch)``, or ``(after epoch 2 ended)`` for one taken at an epoch's end. The iteration counts
    the optimizer steps of the whole run, so it alone does not say how far into the epoch it is."""
    states = state.get('states') if isinstance(state.get('states'), dict) else {}
    epoch, iteration = states.get('epoch'), states.get('iteration')
    text = f'at epoch {epoch}, iteration {iteration}'
    data = state.get('data') if isinstance(state.get('data'), dict) else {}
    if data.get('epoch') != epoch:  # no record of the data position (an older checkpoint)
        return text
    if data.get('finished'):
        return f'{text} (after epoch {epoch} ended)'
    done, steps = data.get('steps_done'), data.get('steps_per_epoch')
    if isinstance(done, int) and isinstance(steps, int):
        ended = ', after the epoch ended there (max_steps)' if data.get('end_begun') is True else ''
        return f'{text} (step {done} of {steps} of the epoch{ended})'
    return text


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    prog = 'train.py'
    logs_before = log_files()  # the log file this run opens gets its error too
    trainer = None  # read by report_interruption: None until initialize() has built it
    with report_errors(prog, args.debug, EXIT_CONFIG, logs_before), \
            report_interruption(prog, lambda: trainer, logs_before):
        cfg = load_user_config(args.config, args.cfg_options)
        from .initialize import initialize  # after the config: a bad config fails fast, without torch
        run = initialize(cfg, launcher=args.launcher, work_dir=args.work_dir, seed=args.seed,
                         deterministic=args.deterministic or None)
        cfg, trainer, context = run.config, run.trainer, run.context
        test_moment = watch_test_moment(trainer)  # before the resume, which restores the last evaluation
        if args.resume is not None:
            from .checkpoint import resume
            where = checkpoint_dir_of(trainer, cfg.work_dir) if args.resume == 'auto' \
                else locate_checkpoint(args.resume)
            if args.resume == 'auto' and not _any_checkpoint(where):
                # A requeued job's fixed command line, preempted before its first save: it starts over.
                trainer.logger.info(f'--resume: no checkpoint in {where} yet, starting from scratch')
            else:
                state = resume(trainer, where)
                read = (state.get('meta') or {}).get('path', where)  # the file a directory stood for
                trainer.logger.info(f'resumed from {read} {resume_position(state)}')
        if context.is_main_process:  # only once the run has started well: a bad resume keeps the old one
            dump_config(cfg, cfg.work_dir, trainer.logger)
        final = final_metrics_path(cfg, trainer.logger)
    with report_errors(prog, args.debug, EXIT_RUNTIME, logs_before), \
            report_interruption(prog, lambda: trainer, logs_before):
        log_cfg = dict(cfg.get('logging', None) or {})
        progress = bool(log_cfg.get('progress', True)) and not args.no_progress
        start = trainer.states['epoch'], trainer.states['iteration']
        # whether it ran a step or an epoch's end: a resume whose only work left was the end of the
        # checkpoint's epoch (its test pass) measured the final metrics too
        trained = trainer.fit(run.train_dataloader, epochs=cfg.get('max_epochs', 1),
                              max_steps=cfg.get('max_steps', None),
                              test_dataloader=run.test_dataloader, test_interval=cfg.get('test_interval', 1),
                              display_progress=progress)
        metrics = final_metrics(trainer, test_moment)
        if not trained:
            # A resumed run that had already reached max_epochs / max_steps: say so, and keep
            # the finished run's final_metrics.json rather than overwrite it with nothing.
            max_steps = cfg.get('max_steps', None)
            limits = f"max_epochs={cfg.get('max_epochs', 1)}, max_steps={max_steps}"
            limit = 'max_steps' if max_steps is not None and start[1] >= max_steps else 'max_epochs'
            name = osp.basename(final)
            kept = (f'{name} is kept' if osp.exists(final) else
                    f'no {name} is written in {cfg.work_dir} (the run that reached the '
                    f'checkpoint writes its own in its work directory as it ends)')
            trainer.logger.warning(
                f'nothing to train: the checkpoint is at epoch {start[0]}, iteration {start[1]}, and this '
                f'run stops at {limits}. Raise {limit} (--cfg-options {limit}=N) to train longer. {kept}.')
        elif context.is_logging_rank:
            at = dict(epoch=trainer.states['epoch'], iteration=trainer.states['iteration'])
            measured_at = {'train': at}
            if test_moment:  # no test part without an evaluation (no test data): nothing was measured
                measured_at['test'] = dict(epoch=test_moment['epoch'], iteration=test_moment['iteration'])
            print(f'Final metrics: {format_final_metrics(metrics, measured_at)}', flush=True)
            write_final_metrics(metrics, measured_at, final)
    from .distributed import teardown
    teardown()


if __name__ == '__main__':
    main()
