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
import math
import os
import os.path as osp
import sys
from typing import Any, Dict, Iterator, List, Optional

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
                             'checkpoint in the work directory')
    parser.add_argument('--seed', type=int, default=None, help='random seed (default: cfg.seed or 1024)')
    parser.add_argument('--launcher', choices=['none', 'torch', 'slurm', 'openmpi'], default='none',
                        help='how processes of a distributed run are started (torch = torchrun)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--debug', action='store_true', help='show full tracebacks on errors')
    return parser.parse_args(argv)


@contextlib.contextmanager
def report_errors(prog: str, debug: bool, status: int) -> Iterator[None]:
    """One line on stderr and ``SystemExit(status)`` for any exception, unless ``debug``."""
    try:
        yield
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - the user gets one clear line, --debug the traceback
        from .distributed import report_failure
        report_failure(exc)  # other ranks of a distributed run stop now instead of at the timeout
        if debug:
            raise
        print(f'{prog}: error: {format_config_error(exc)} (rerun with --debug for the traceback)',
              file=sys.stderr)
        raise SystemExit(status) from None


def load_user_config(path: str, cfg_options: Dict[str, Any]) -> Any:
    """The config file with the command line's overrides merged in."""
    from .config import Config
    if not osp.isfile(path):
        raise UsageError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def locate_checkpoint(path: str) -> str:
    """``path``, or its ``checkpoints/`` counterpart when ``path`` names a work directory
    (``work_dirs/mlp``) or a file in one (``work_dirs/mlp/latest.pt``) that holds no checkpoint
    itself: checkpoints live in ``<work_dir>/checkpoints`` but people name the work dir."""
    directory, name = (path, None) if osp.isdir(path) else osp.split(path)
    nested = osp.join(directory or '.', 'checkpoints')
    if osp.isdir(nested) and not osp.exists(osp.join(directory or '.', name or 'latest.pt')):
        return osp.join(nested, name) if name else nested
    return path


def checkpoint_dir_of(trainer: Any, default: str) -> str:
    """The directory the trainer's SaveCheckpointHook writes to (``default`` without one)."""
    for hook in getattr(trainer, 'hooks', []):
        directory = getattr(hook, 'checkpoint_dir', None)
        if directory:
            return directory
    return default


def final_metrics(trainer: Any) -> Dict[str, Dict[str, float]]:
    """``{'train': {...}, 'test': {...}}``: the metric values of the last epoch, as floats."""
    from .trainer.hooks.metric_hook import read_metrics
    out = {}
    for mode in ('train', 'test'):
        try:
            values = read_metrics(trainer, mode)
        except Exception:  # noqa: BLE001 - a metric that never saw data has no value to print
            values = {}
        # NaN: a metric that saw no data this time (nothing left to train after a resume)
        out[mode] = {k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))}
    return out


def dump_config(cfg: Any, work_dir: str) -> str:
    """Write the merged config as ``<work_dir>/<config file name>`` and return the path."""
    name = osp.basename(cfg.filename) if cfg.filename else 'config.py'
    path = osp.join(work_dir, name)
    os.makedirs(work_dir, exist_ok=True)
    cfg.dump(path)
    return path


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    prog = 'train.py'
    with report_errors(prog, args.debug, EXIT_CONFIG):
        cfg = load_user_config(args.config, args.cfg_options)
        from .initialize import initialize  # after the config: a bad config fails fast, without torch
        run = initialize(cfg, launcher=args.launcher, work_dir=args.work_dir, seed=args.seed)
        cfg, trainer, context = run.config, run.trainer, run.context
        if args.resume is not None:
            from .checkpoint import resume
            where = checkpoint_dir_of(trainer, cfg.work_dir) if args.resume == 'auto' \
                else locate_checkpoint(args.resume)
            if args.resume == 'auto' and not osp.isdir(where):
                raise UsageError(f'--resume: no checkpoint to resume from, the work directory {where!r} '
                                 f'does not exist; train first or pass --resume PATH')
            state = resume(trainer, where)
            trainer.logger.info(f"resumed from {where} at epoch {state.get('states', {}).get('epoch')}")
        if context.is_main_process:  # only once the run has started well: a bad resume keeps the old one
            dump_config(cfg, cfg.work_dir)
    with report_errors(prog, args.debug, EXIT_RUNTIME):
        log_cfg = dict(cfg.get('logging', None) or {})
        progress = bool(log_cfg.get('progress', True)) and not args.no_progress
        start = trainer.states['epoch'], trainer.states['iteration']
        trainer.fit(run.train_dataloader, epochs=cfg.get('max_epochs', 1),
                    max_steps=cfg.get('max_steps', None),
                    test_dataloader=run.test_dataloader, test_interval=cfg.get('test_interval', 1),
                    display_progress=progress)
        metrics = final_metrics(trainer)
        if (trainer.states['epoch'], trainer.states['iteration']) == start and not any(metrics.values()):
            # A resumed run that had already reached max_epochs / max_steps: say so, and keep
            # the finished run's final_metrics.json rather than overwrite it with nothing.
            limits = f"max_epochs={cfg.get('max_epochs', 1)}, max_steps={cfg.get('max_steps', None)}"
            trainer.logger.warning(
                f'nothing to train: the checkpoint is at epoch {start[0]}, iteration {start[1]}, and this '
                f'run stops at {limits}. Raise max_epochs (--cfg-options max_epochs=N) to train longer. '
                f'final_metrics.json is kept.')
        elif context.is_logging_rank:
            text = ', '.join(f'{mode} {name}={value:.4f}' for mode, values in metrics.items()
                             for name, value in values.items())
            print(f'Final metrics: {text or "(none)"}', flush=True)
            with open(osp.join(cfg.work_dir, 'final_metrics.json'), 'w', encoding='utf-8') as f:
                json.dump(metrics, f, indent=2)
    from .distributed import teardown
    teardown()


if __name__ == '__main__':
    main()
