"""Evaluate a checkpoint on a config's test data: ``python -m colossal_runner.test CONFIG CHECKPOINT``
(also ``colossal-test``, ``tools/test.py``).

    python tools/test.py configs/digits/cnn.py work_dirs/cnn/latest.pt
    python tools/test.py configs/digits/cnn.py work_dirs/cnn --json      # newest checkpoint there

Only the config's metric hooks run (no logs, checkpoints or TensorBoard files are written).
Logs which checkpoint file it evaluates (a directory stands for its newest) and prints the test
metrics (``--json``: one JSON object on stdout, with that file, its epoch and iteration under
``checkpoint``).
"""
from __future__ import annotations

import argparse
import json
import math
import os.path as osp
from typing import Any, Dict, List, Optional

from .config import DictAction
from .train import (EXIT_CONFIG, EXIT_RUNTIME, UsageError, add_local_rank_argument, load_user_config,
                    locate_checkpoint, report_errors)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='test.py', description='Evaluate a checkpoint on the test data.')
    parser.add_argument('config', help='config file (.py, .json, .yaml or .yml)')
    parser.add_argument('checkpoint', help='checkpoint file, or a directory (its newest checkpoint)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={}, metavar='KEY=VALUE',
                        help='override config values, e.g. data.test.dataloader.batch_size=64')
    parser.add_argument('--json', action='store_true', help='print the metrics as one JSON object')
    parser.add_argument('--launcher', choices=['none', 'torch', 'pytorch', 'slurm', 'openmpi'],
                        default='none', help='how processes of a distributed run are started '
                                             "(torch = torchrun; pytorch, mmcv's name, is the same)")
    add_local_rank_argument(parser)
    parser.add_argument('--debug', action='store_true', help='show full tracebacks on errors')
    return parser.parse_args(argv)


def metric_hooks_only(cfg: Any) -> List[Dict[str, Any]]:
    """The config's hooks that produce metrics (MetricHook subclasses); Loss and Accuracy if none."""
    from .registry import HOOKS
    from .trainer.hooks.metric_hook import MetricHook
    kept = []
    for hook_cfg in cfg.get('hooks', None) or []:
        hook_type = hook_cfg.get('type') if hasattr(hook_cfg, 'get') else type(hook_cfg)
        cls = HOOKS.get(hook_type) if isinstance(hook_type, str) else hook_type
        if isinstance(cls, type) and issubclass(cls, MetricHook):
            kept.append(hook_cfg)
    return kept or [dict(type='LossHook'), dict(type='AccuracyHook')]


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    prog = 'test.py'
    with report_errors(prog, args.debug, EXIT_CONFIG):
        cfg = load_user_config(args.config, args.cfg_options)
        args.checkpoint = locate_checkpoint(args.checkpoint)
        missing = _missing_checkpoint(args.checkpoint)
        if missing:
            raise UsageError(f'checkpoint not found: {missing} (give a .pt file written by train.py, or its '
                             f'work directory)')
        from .checkpoint import load_checkpoint
        from .data.char_text import VocabularyError, vocabulary_text
        from .distributed import get_context
        from .initialize import initialize
        cfg.hooks = metric_hooks_only(cfg)
        if not (cfg.get('data', None) or {}).get('test'):
            raise UsageError(f'config {args.config} has no data.test to evaluate on; add '
                             f"data.test = dict(dataset=..., dataloader=...)")
        state = _read_first_stage(cfg, args.checkpoint)
        vocabulary = _give_saved_vocabulary(cfg, state)
        try:  # read_only writes nothing into a work_dir: the start-up line names the evaluated run's
            run = initialize(cfg, launcher=args.launcher, work_dir=_run_dir(args.checkpoint), read_only=True)
        except VocabularyError as exc:
            if vocabulary is None:
                raise
            raise UsageError(f'the test text has {len(exc.missing)} distinct characters that the '
                             f"checkpoint's model was never trained on: {vocabulary_text(exc.missing, 40)}. "
                             f'Its vocabulary is the {len(vocabulary)} characters of its training text '
                             f'({vocabulary_text(vocabulary)}); evaluate it on text made of those') from None
        if get_context().pipeline_size > 1:  # each stage reads its own file
            state = None  # (the first stage's, freed before its own is read)
            state = load_checkpoint(args.checkpoint)
        run.trainer.load_state_dict(state, finetune=True)
        evaluated = _evaluated(state, args.checkpoint)
        where = ('bare model weights, no epoch or iteration' if evaluated['epoch'] is None else
                 f"epoch {evaluated['epoch']}, iteration {evaluated['iteration']}")
        run.trainer.logger.info(f"evaluating {evaluated['path']} ({where})")
    with report_errors(prog, args.debug, EXIT_RUNTIME):
        metrics = run.trainer.evaluate(run.test_dataloader)
        metrics = {name: float(value) for name, value in metrics.items()}
        if run.context.is_logging_rank:
            if args.json:  # JSON has no NaN (a diverged model's loss): null
                values: Dict[str, Any] = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
                values['checkpoint'] = evaluated
                print(json.dumps(values, allow_nan=False))
            else:
                print(format_test_metrics(metrics), flush=True)
    from .distributed import teardown
    teardown()


def format_test_metrics(metrics: Dict[str, float]) -> str:
    """``Test metrics: Loss=2.6e-05, Accuracy=0.988889``: six significant digits, as train.py prints
    its final metrics (a fixed number of decimals shows a small loss as 0)."""
    return 'Test metrics: ' + ', '.join(f'{k}={v:.6g}' for k, v in metrics.items())


def _read_first_stage(cfg: Any, path: str) -> Dict[str, Any]:
    """The checkpoint, read before the run starts: the whole model's file, or for a pipeline config
    the first stage's (every stage's file carries the same ``meta``)."""
    from .checkpoint import load_checkpoint
    stages = (cfg.get('parallel', None) or {}).get('pipeline', 1)
    return load_checkpoint(path, stage=0 if isinstance(stages, int) and stages > 1 else None)


def _give_saved_vocabulary(cfg: Any, state: Dict[str, Any]) -> Optional[List[str]]:
    """Give ``data.test.dataset`` the vocabulary the checkpoint's model was trained on (its
    ``meta['vocabulary']``) when the dataset takes ``chars`` and the config does not set them: a
    held-out text's own vocabulary would give the ids other meanings. The training split, then
    needed for nothing (it would only have sized the model by its own vocabulary), is not built.
    Returns the vocabulary given, or None."""
    from .initialize import _takes_argument
    from .registry import DATASETS
    meta = state.get('meta') if isinstance(state, dict) else None
    saved = meta.get('vocabulary') if isinstance(meta, dict) else None
    dataset_cfg = cfg.data.test.get('dataset') if hasattr(cfg.data.test, 'get') else None
    if (isinstance(saved, (list, tuple)) and hasattr(dataset_cfg, 'get') and 'chars' not in dataset_cfg
            and _takes_argument(DATASETS, dataset_cfg.get('type'), 'chars')):
        dataset_cfg['chars'] = list(saved)
        train = cfg.data.get('train') or {}
        if 'chars' not in (train.get('dataset') or {}):
            cfg.data.train = None
        return dataset_cfg['chars']
    return None


def _evaluated(state: Dict[str, Any], given: str) -> Dict[str, Any]:
    """``{'path', 'epoch', 'iteration'}`` of the checkpoint read: the file a directory stood for,
    and None for the epoch and iteration of bare model weights, which have none."""
    meta = state.get('meta') if isinstance(state.get('meta'), dict) else {}
    states = state.get('states') if isinstance(state.get('states'), dict) else {}
    return dict(path=meta.get('path', given), epoch=states.get('epoch'), iteration=states.get('iteration'))


def _run_dir(checkpoint: str) -> str:
    """The work directory of the run that wrote ``checkpoint`` (a file or a directory): the folder
    above ``checkpoints/`` when it is there."""
    folder = checkpoint if osp.isdir(checkpoint) else osp.dirname(checkpoint) or '.'
    folder = osp.normpath(folder)
    return osp.dirname(folder) or '.' if osp.basename(folder) == 'checkpoints' else folder


def _missing_checkpoint(path: str) -> str:
    """'' when ``path`` exists, or names a checkpoint a pipeline run saved per stage (``epoch_3.pt``
    for ``epoch_3_stage0.pt`` ..., ``latest.pt`` in a directory of stage files: the first stage's
    file of it, as the stages will resolve it); else what is missing and which checkpoints exist
    there, as ``train.py --resume`` says it."""
    if osp.exists(path):
        return ''
    from .checkpoint import list_checkpoints, resolve_checkpoint_path  # torch: only for a missing path
    messages = []
    for stage in (0, None):
        try:
            resolve_checkpoint_path(path, stage=stage)
            return ''
        except FileNotFoundError as exc:
            messages.append(str(exc))
    directory = osp.dirname(path) or '.'
    only_stages = not list_checkpoints(directory) and list_checkpoints(directory, 0)
    return messages[0] if only_stages else messages[1]  # the names that are there


if __name__ == '__main__':
    main()
