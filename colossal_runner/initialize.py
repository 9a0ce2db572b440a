"""From a config to ready-to-run objects: ``initialize(cfg) -> (engine, trainer, dataloaders, ...)``.

The one place that reads the config schema (documented field by field in
``docs/config_reference.md``), so that tools, notebooks and tests build runs the same way.
"""
from __future__ import annotations

import difflib
import inspect
import logging
import os
import os.path as osp
import tempfile
import warnings
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import Config, ConfigError
from .config.config import import_custom
from .config.pretty import plain_numbers
from .data import UnpaddedDistributedSampler, build_dataloader, build_dataset
from .data.char_text import VocabularyError, vocabulary_text
from .data.dataloader import fixed_order, unsplittable_batch, warn_fixed_samples_left_out
from .distributed import (ParallelContext, broadcast_parameters, get_context, get_device, set_seed,
                          setup_parallel, wrap_data_parallel)
from . import models as _models  # noqa: F401  (registers MLP, SimpleCNN, TinyGPT, losses)
from .engine import Engine
from .engine.amp import check_amp
from .engine.engine import NONFINITE_CHOICES
from .engine.schedule.runtime import PipelineRuntime
from .nn import lr_scheduler as _lr_scheduler  # noqa: F401  (registers the LR schedulers)
from .pipeline.seeding import seed_pipeline_stage
from .registry import DATASETS, HOOKS, LOSSES, LR_SCHEDULERS, MODELS, OPTIMIZERS, SCHEDULES
from .trainer import Trainer
from .trainer.hooks import LRSchedulerHook, SaveCheckpointHook
from .utils.logging import detach_log_file, get_logger, log_to_file, run_log_path
from .utils.work_dir_lock import lock_work_dir

# Every top-level key initialize() and the tools read; anything else is probably a typo.
KNOWN_KEYS = ('model', 'loss', 'optimizer', 'lr_scheduler', 'data', 'schedule', 'parallel', 'amp',
              'gradient_accumulation', 'clip_grad_norm', 'hooks', 'max_epochs', 'max_steps', 'test_interval',
              'seed', 'work_dir', 'custom_imports', 'logging', 'dist_timeout', 'dist_host', 'dist_port',
              'fault_watch', 'nonfinite_loss', 'deterministic')
DEFAULT_SEED = 1024
# mmcv's and mmengine's keys for what is done another way here: ignored, the run would silently differ
# from what they ask. Each maps to (what would happen, how to say it here).
_MMCV_KEYS = {
    'resume_from': ('the run would start from scratch', lambda v: (
        f'colossal_runner resumes from the command line: drop the key and run '
        f'tools/train.py CONFIG --resume {v} (a checkpoint file or directory; '
        f'--resume alone continues from the newest checkpoint in the work dir)')),
    'load_from': ('the run would start from scratch', lambda v: (
        f"colossal_runner loads pretrained weights with a hook: drop the key and add "
        f"dict(type='LoadCheckpointHook', checkpoint_dir={str(v)!r}, finetune=True) to "
        f"hooks (finetune=True loads the weights only, as load_from does; a file a plain "
        f"torch loop saved loads too)")),
    'lr_config': ('the run would train with another learning-rate schedule (lr_scheduler, or a constant '
                  'LR)', lambda v: _lr_config_fix(v)),
    'optimizer_config': ('the run would train without what it asks (gradient clipping, accumulation or '
                         'loss scaling)', lambda v: _optimizer_config_fix(v)),
    'resume': ("the run would start from scratch and overwrite the earlier run's checkpoints",
               lambda v: _resume_fix(v)),
    'auto_resume': ("the run would start from scratch and overwrite the earlier run's checkpoints",
                    lambda v: _resume_fix(v)),
    'runner': ('the run would train for max_epochs = {max_epochs} instead',
               lambda v: _sub_key_fix('runner', v, _RUN_LENGTH)),
    'total_epochs': ('the run would train for max_epochs = {max_epochs} instead',
                     lambda v: f'{_DROP.format(key="total_epochs")} max_epochs = {v}'),
    'train_cfg': ('the run would train for max_epochs = {max_epochs} and evaluate with test_interval = '
                  '{test_interval} instead',
                  lambda v: _sub_key_fix('train_cfg', v, _TRAIN_LOOP)),
    'evaluation': ('the run would evaluate with test_interval = {test_interval} and the metric hooks in '
                   'hooks instead', lambda v: _sub_key_fix('evaluation', v, _EVALUATION)),
    'checkpoint_config': ('the run would save only the checkpoints a SaveCheckpointHook in hooks asks (none '
                          'without one)', lambda v: (f'{_DROP.format(key="checkpoint_config")} hooks = [..., '
                                                     f'{_checkpoint_hook(v)}]')),
    'default_hooks': ('the run would have only the hooks in hooks (no checkpoints, no log lines without '
                      'them)', lambda v: _sub_key_fix('default_hooks', v, _DEFAULT_HOOKS)),
    'custom_hooks': ('the run would have only the hooks in hooks', lambda v: (
        f'{_DROP.format(key="custom_hooks")} its dicts into hooks, in the same dict(type=..., priority=...) '
        f'form (each type must be in the HOOKS registry; your own through custom_imports)')),
    'log_config': ('the run would log only what the hooks in hooks log', lambda v: _log_config_fix(v)),
    'log_level': ("the run would log at the level logging sets ('INFO' without it)",
                  lambda v: f'{_DROP.format(key="log_level")} logging = dict(level={v!r})'),
    'fp16': ('the run would train in full precision', lambda v: (
        f"{_DROP.format(key='fp16')} amp = 'fp16' (the loss is scaled by torch's GradScaler, dynamically; "
        f"a fixed loss_scale has no counterpart)")),
    'optim_wrapper': ("the run would train with the optimizer key's optimizer (an error without one) and "
                      'without the clipping, accumulation or mixed precision it asks',
                      lambda v: _optim_wrapper_fix(v)),
    'randomness': ('the run would use seed = {seed} and deterministic = {deterministic} instead',
                   lambda v: _sub_key_fix('randomness', v, _RANDOMNESS)),
    'param_scheduler': ('the run would train with lr_scheduler (a constant LR without one)',
                        lambda v: _param_scheduler_fix(v)),
}
# In what the run would do instead (_MMCV_KEYS' first items), {name} is the config's value (or default).
_RUN_DEFAULTS = {'max_epochs': 1, 'test_interval': 1, 'seed': DEFAULT_SEED, 'deterministic': False}
# mmengine's keys; the rest of _MMCV_KEYS are mmcv 1.x's (auto_resume: its downstream projects').
_MMENGINE_KEYS = ('resume', 'train_cfg', 'default_hooks', 'optim_wrapper', 'randomness', 'param_scheduler')
_DROP = 'colossal_runner does this another way: drop {key} (= None where a _base_ file sets it) and write'
# The parts of these dicts that ask for something; the others (runner.type, default_hooks.timer, ...) are
# built in here or change nothing. Each maps to how to write it here.
_RUN_LENGTH = {'max_epochs': lambda v: f'max_epochs = {v}',
               'max_iters': lambda v: (f'max_steps = {v} (it counts optimizer steps: divide by '
                                       f'gradient_accumulation when that is above 1)')}
_TRAIN_LOOP = dict(_RUN_LENGTH, val_interval=lambda v: f'test_interval = {v} (epochs between evaluations)')
_EVALUATION = {'interval': lambda v: f'test_interval = {v}',
               'metric': lambda v: ("metric hooks in hooks: dict(type='AccuracyHook') for accuracy, "
                                    "dict(type='MetricHook', metric=...) for others (docs/hooks.md)"),
               'save_best': lambda v: "save_best='<metric, e.g. Accuracy>' on a SaveCheckpointHook in hooks"}
_DEFAULT_HOOKS = {'checkpoint': lambda v: f'hooks = [..., {_checkpoint_hook(v)}]',
                  'logger': lambda v: (f"hooks = [..., dict(type='LogMetricByStepHook', interval="
                                       f"{v.get('interval', 10) if isinstance(v, Mapping) else 10}), "
                                       f"dict(type='LogMetricByEpochHook')]")}
_RANDOMNESS = {'seed': lambda v: f'seed = {v}', 'deterministic': lambda v: f'deterministic = {v}',
               'diff_rank_seed': lambda v: 'no counterpart (every rank is seeded with seed here)'}
_ASKING_PARTS = {'runner': _RUN_LENGTH, 'train_cfg': _TRAIN_LOOP, 'evaluation': _EVALUATION,
                 'default_hooks': _DEFAULT_HOOKS, 'randomness': _RANDOMNESS}
# Warned about, not refused: nothing here says the same, and the run trains the same (or, for
# find_unused_parameters, fails loudly where it would differ).
_MMCV_NOTES = {
    'workflow': ("mmcv's workflow: here each epoch trains, and data.test is evaluated every test_interval "
                 'epochs (a LossHook in hooks reports its loss)'),
    'dist_params': ("mmcv's dist_params: the backend follows the device here (nccl on a GPU, gloo on the "
                    'CPU); the port is dist_port (or torchrun\'s MASTER_PORT), the timeout dist_timeout'),
    'find_unused_parameters': ('DistributedDataParallel is built without it: a model with parameters a step '
                               "does not use stops at its first data-parallel steps with torch's error"),
}
# mmcv's lr_config policies and the lr_scheduler types that do the same (a ...WarmupLR one warms up too).
_MMCV_POLICIES = {'step': 'MultiStepLR', 'cosineannealing': 'CosineAnnealingLR',
                  'flatcosineannealing': 'FlatAnnealingLR', 'poly': 'PolynomialLR', 'exp': 'ExponentialLR',
                  'onecycle': 'OneCycleLR'}


def _lr_config_fix(value: Any) -> str:
    """How to write mmcv's ``lr_config`` as an ``lr_scheduler``."""
    value = value if isinstance(value, Mapping) else {}
    policy = str(value.get('policy', ''))
    kind = _MMCV_POLICIES.get(policy.lower())
    if kind == 'MultiStepLR' and isinstance(value.get('step'), int):
        kind = 'StepLR'
    if kind and value.get('warmup') and kind.replace('LR', 'WarmupLR') in LR_SCHEDULERS:
        kind = kind.replace('LR', 'WarmupLR')
    example = (f"lr_scheduler = dict(type={kind!r}, ...) for policy={policy!r}" if kind else
               "lr_scheduler = dict(type='MultiStepLR', milestones=[...]) (or CosineAnnealingLR, "
               "PolynomialLR, ...; a ...WarmupLR type warms up first)")
    return (f'colossal_runner reads the schedule from lr_scheduler: drop lr_config and write {example}. '
            f'Its lengths count optimizer steps, not epochs (mmcv\'s by_epoch default): milestones in steps, '
            f'warmup_epochs=E or warmup_steps=N for the warm-up, total_steps computed from max_epochs; '
            f"or keep epochs with hooks=[..., dict(type='LRSchedulerHook', by_epoch=True)]. "
            f'See docs/lr_scheduler.md')


def _optimizer_config_fix(value: Any) -> str:
    """How to write mmcv's ``optimizer_config`` (an OptimizerHook's arguments) here."""
    value = value if isinstance(value, Mapping) else {}
    clip = value.get('grad_clip')
    norm = clip.get('max_norm') if isinstance(clip, Mapping) else None
    iters = value.get('cumulative_iters') or '<cumulative_iters>'
    fixes = {'grad_clip': f'grad_clip -> clip_grad_norm = {norm if norm is not None else "<max_norm>"} (the '
                          f'L2 norm of all gradients, clipped before each optimizer step)',
             'cumulative_iters': f'cumulative_iters -> gradient_accumulation = {iters}',
             'loss_scale': "loss_scale (Fp16OptimizerHook) -> amp = 'fp16'"}
    asked = [fix for key, fix in fixes.items() if value.get(key) is not None] or list(fixes.values())
    return f'colossal_runner sets these as top-level keys: drop optimizer_config and write {"; ".join(asked)}'


def _asks(value: Any) -> bool:
    return value is not None and value is not False


def _resume_fix(value: Any) -> str:
    checkpoint = f' {value}' if isinstance(value, str) else ''
    return (f'colossal_runner resumes from the command line: drop the key and run tools/train.py CONFIG '
            f'--resume{checkpoint} (--resume alone continues from the newest checkpoint in the work dir; '
            f'--resume CKPT from a checkpoint file or directory)')


def _sub_key_fix(key: str, value: Any, fixes: Mapping[str, Any]) -> str:
    """How to write the parts of the mmcv/mmengine dict ``key`` that ask for something here."""
    value = value if isinstance(value, Mapping) else {}
    asked = [(sub, fix(value[sub])) for sub, fix in fixes.items() if _asks(value.get(sub))]
    asked = asked or [(sub, fix(f'<{sub}>')) for sub, fix in fixes.items()]
    # the part's name only where the key here has another one (checkpoint -> hooks = [...])
    return f'{_DROP.format(key=key)} ' + '; '.join(
        fix if fix.startswith(f'{sub} =') else f'{sub} -> {fix}' for sub, fix in asked)


def _checkpoint_hook(value: Any) -> str:
    """mmcv's / mmengine's CheckpointHook arguments as a SaveCheckpointHook dict."""
    value = value if isinstance(value, Mapping) else {}
    args = ''
    for theirs, ours in (('interval', 'interval'), ('by_epoch', 'by_epoch'), ('max_keep_ckpts', 'max_keep'),
                         ('save_last', 'save_last')):
        arg = value.get(theirs)
        if arg is not None and not (isinstance(arg, int) and arg < 1 and ours != 'by_epoch'):  # -1: off
            args += f', {ours}={arg!r}'
    if value.get('save_best') is not None:
        args += ", save_best='<metric, e.g. Accuracy>'"
    return f"dict(type='SaveCheckpointHook'{args})"


def _log_config_fix(value: Any) -> str:
    """mmcv's logger hooks as the logging hooks here."""
    value = value if isinstance(value, Mapping) else {}
    ours = {'TextLoggerHook': (f"dict(type='LogMetricByStepHook', interval={value.get('interval', 10)}), "
                               f"dict(type='LogMetricByEpochHook')"),
            'TensorboardLoggerHook': "dict(type='TensorboardHook')"}
    kinds = [h.get('type') if isinstance(h, Mapping) else h for h in value.get('hooks') or []]
    written = [ours[k] for k in kinds if k in ours] or ["dict(type='LogMetricByEpochHook')"]
    others = [str(k) for k in kinds if k not in ours]
    text = f'{_DROP.format(key="log_config")} hooks = [..., {", ".join(written)}]'
    if others:
        text += f' ({", ".join(others)}: no counterpart; a hook of your own can log there, docs/hooks.md)'
    return text


def _dict_text(value: Mapping) -> str:
    return 'dict(' + ', '.join(f'{k}={v!r}' for k, v in value.items()) + ')'


def _optim_wrapper_fix(value: Any) -> str:
    """mmengine's OptimWrapper as the optimizer, clip_grad_norm, gradient_accumulation and amp keys."""
    value = value if isinstance(value, Mapping) else {}
    optimizer, clip = value.get('optimizer'), value.get('clip_grad')
    parts = [f'optimizer = {_dict_text(optimizer)}' if isinstance(optimizer, Mapping) else
             'optimizer = dict(type=..., lr=...)']
    if isinstance(clip, Mapping) and 'max_norm' in clip:
        parts.append(f"clip_grad_norm = {clip['max_norm']} (the L2 norm of all gradients)")
    elif isinstance(clip, Mapping):
        parts.append(f'nothing for clip_grad={clip!r}: clip_grad_norm clips the norm of the gradients only')
    if _asks(value.get('accumulative_counts')):
        parts.append(f"gradient_accumulation = {value['accumulative_counts']}")
    if value.get('type') == 'AmpOptimWrapper' or _asks(value.get('loss_scale')):
        parts.append("amp = 'bf16'" if 'bfloat16' in str(value.get('dtype')) else "amp = 'fp16'")
    if _asks(value.get('paramwise_cfg')):
        parts.append('paramwise_cfg -> a registered optimizer function that builds parameter groups '
                     '(docs/config_reference.md, "optimizer")')
    return f'{_DROP.format(key="optim_wrapper")} {"; ".join(parts)}'


def _param_scheduler_fix(value: Any) -> str:
    """mmengine's list of parameter schedulers as one lr_scheduler."""
    entries = [e for e in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(e, Mapping)]
    warmup = next((e for e in entries if e.get('type') == 'LinearLR'), None) if len(entries) > 1 else None
    main = next((e for e in reversed(entries) if e is not warmup), {})
    kind = {'PolyLR': 'PolynomialLR'}.get(str(main.get('type')), main.get('type'))
    kind = kind if isinstance(kind, str) and kind in LR_SCHEDULERS else None
    extra = ''
    if warmup is not None:
        length = warmup.get('end', '<end>')
        # mmengine's by_epoch defaults to True: begin/end count epochs
        extra = f', warmup_steps={length}' if warmup.get('by_epoch') is False else f', warmup_epochs={length}'
        with_warmup = kind.replace('LR', 'WarmupLR') if kind else ''
        kind = with_warmup if with_warmup and with_warmup in LR_SCHEDULERS else None
    example = f'lr_scheduler = dict(type={repr(kind) if kind else "..."}, ...{extra})'
    return (f'colossal_runner takes one scheduler dict, not a list: drop param_scheduler and write '
            f'{example}. Its lengths count optimizer steps, not epochs (mmengine\'s by_epoch default) nor '
            f'begin/end: milestones in steps, total_steps computed from max_epochs; a LinearLR warm-up '
            f'entry becomes warmup_steps=N (or warmup_epochs=E) of a ...WarmupLR type; or keep epochs with '
            f"hooks=[..., dict(type='LRSchedulerHook', by_epoch=True)]. See docs/lr_scheduler.md")


def _asks_nothing(key: str, value: Any, cfg: Optional[Mapping] = None) -> bool:
    """mmcv's defaults ``load_from = None``, ``optimizer_config = dict(grad_clip=None)``: nothing lost.

    ``None``, ``False``, ``''`` and an empty list ask for nothing, as mmcv's ``if cfg.load_from:``
    reads them; ``resume`` and ``auto_resume`` only when true. mmcv builds an Fp16OptimizerHook or a
    CheckpointHook from an empty dict too, so ``fp16`` and ``checkpoint_config`` ask for something
    unless ``None``. For ``optimizer_config`` only clipping, accumulation and loss scaling count
    (mmcv's OptimizerHook takes other arguments, such as ``detect_anomalous_params``, and a
    ``type``); ``lr_config`` with ``policy='fixed'`` and no warm-up keeps the learning rate
    constant, as a run without a scheduler does. ``log_level`` asks for nothing when it is the
    level ``logging`` sets (``cfg``; INFO without it) and a ``workflow`` of train phases only.
    """
    if value is None or value is False or (key in ('resume', 'auto_resume') and not value):
        return True
    if key in ('fp16', 'checkpoint_config'):
        return False
    if isinstance(value, (str, list, tuple)) and not value:
        return True
    if key == 'log_level':
        logging_cfg = (cfg or {}).get('logging') or {}
        level = logging_cfg.get('level', 'INFO') if isinstance(logging_cfg, Mapping) else 'INFO'
        return str(value).upper() == str(level).upper()
    if key == 'workflow' and isinstance(value, (list, tuple)):
        return all(isinstance(phase, (list, tuple)) and list(phase[:1]) == ['train'] for phase in value)
    if not isinstance(value, Mapping):
        return False
    if key in _ASKING_PARTS:
        return not any(_asks(value.get(sub)) for sub in _ASKING_PARTS[key])
    if key == 'optim_wrapper':
        return value.get('type') != 'AmpOptimWrapper' and not any(
            _asks(value.get(sub)) for sub in ('optimizer', 'clip_grad', 'accumulative_counts', 'loss_scale',
                                              'paramwise_cfg'))
    if key == 'log_config':
        return not value.get('hooks')
    if key == 'optimizer_config':
        return all(value.get(k) is None for k in ('grad_clip', 'cumulative_iters', 'loss_scale'))
    if key == 'lr_config' and value.get('policy') == 'fixed':
        return value.get('warmup') is None
    return all(v is None for v in value.values())


class Initialized(NamedTuple):
    """What :func:`initialize` returns; unpack it or use the names."""

    engine: Engine
    trainer: Trainer
    train_dataloader: Optional[DataLoader]
    test_dataloader: Optional[DataLoader]
    config: Config
    context: ParallelContext


def load_config(cfg_or_path: Union[str, os.PathLike, Mapping, Config],
                cfg_options: Optional[Mapping[str, Any]] = None) -> Config:
    """A Config from a path, a dict or a Config (copied), with ``cfg_options`` merged in.

    ``custom_imports`` is imported after the merge, whatever the config came from, so that
    modules named by ``cfg_options`` (``--cfg-options custom_imports.imports=[my_hooks]``) or
    by a dict config register their classes too. A module imported before is not imported again.
    """
    if isinstance(cfg_or_path, Config):
        cfg = Config(cfg_or_path.to_dict(), cfg_text=cfg_or_path.text, filename=cfg_or_path.filename)
    elif isinstance(cfg_or_path, (str, os.PathLike)):
        cfg = Config.fromfile(str(cfg_or_path), import_custom_modules=False)  # imported after the merge
    elif isinstance(cfg_or_path, Mapping):
        cfg = Config(dict(cfg_or_path))
    else:
        raise TypeError(f'initialize() takes a config path, a dict or a Config, got '
                        f'{type(cfg_or_path).__name__}; e.g. initialize("configs/digits/mlp.py").')
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    if cfg.get('custom_imports', None):
        import_custom(cfg.custom_imports, cfg.filename)
    return cfg


def check_top_level_keys(cfg: Config) -> List[str]:
    """Check the top-level keys against the ones colossal_runner reads; return the unknown keys.

    A key that looks like a known one (``optimzer``) is a typo that would silently drop the
    setting, so it is a ConfigError naming the known key; so is an mmcv or mmengine key done another
    way here (``load_from``, ``runner``, ``optim_wrapper``, ...) unless it asks for nothing
    (docs/config.md lists them). Other unknown keys warn: a config may keep its own variables.
    Keys starting with ``_`` are private helpers and are ignored.
    """
    unknown = [k for k in cfg.keys() if not str(k).startswith('_') and k not in KNOWN_KEYS]
    refused = [k for k in unknown if k in _MMCV_KEYS and not _asks_nothing(k, cfg[k], cfg)]
    for key in unknown:
        if key in refused:
            happens, fix = _MMCV_KEYS[key]
            happens = happens.format(**{k: d if cfg.get(k, None) is None else cfg[k]
                                        for k, d in _RUN_DEFAULTS.items()})
            origin = 'mmengine' if key in _MMENGINE_KEYS else 'mmcv'
            # named all at once: a converted mmcv config has several, and one error per try is slow
            others = ', '.join(k for k in refused if k != key)
            also = f' The same for {others} (docs/config.md, "mmcv and mmengine keys").' if others else ''
            advice = fix(cfg[key])
            if {'resume', 'load_from'} <= set(refused) and isinstance(cfg['load_from'], str):
                # mmengine's resume = True with load_from = PATH resumes from PATH (weights, optimizer,
                # position): not a fine-tuning start from its weights
                origin = 'mmengine'
                advice = (f'With resume = True, load_from = {cfg["load_from"]!r} asks to resume from that '
                          f'file: drop both keys and run tools/train.py CONFIG --resume {cfg["load_from"]}')
            raise ConfigError(f'{key} = {cfg[key]!r} is an {origin} key that colossal_runner does not read; '
                              f'{happens}. {advice}.{also}', cfg.filename, str(key))
        close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1, cutoff=0.75)
        if close and key not in _MMCV_KEYS and key not in _MMCV_NOTES:  # param_scheduler is no typo
            raise ConfigError(f'unknown top-level key {key!r}; did you mean {close[0]!r}? Rename it '
                              f'(or, for a variable of your own, start its name with _)',
                              cfg.filename, str(key))
        warnings.warn(_unknown_key_warning(cfg, key), UserWarning, stacklevel=3)
    return unknown


def _unknown_key_warning(cfg: Config, key: str) -> str:
    """What :func:`check_top_level_keys` warns about the unknown top-level ``key``: short, as it is
    repeated in the run's log file; the known keys are listed in docs/config_reference.md."""
    where = f'config {cfg.filename or "(dict)"}: unknown top-level key {key!r} is ignored'
    if key in _MMCV_NOTES and not _asks_nothing(key, cfg[key]):
        return f'{where}: {_MMCV_NOTES[key]}'
    if key in _MMCV_KEYS or key in _MMCV_NOTES:
        return f'{where}: this value asks for nothing (docs/config.md lists the mmcv and mmengine keys)'
    close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1)  # a closer one is an error above
    hint = f' (the closest known key is {close[0]!r})' if close else ''
    return f'{where}{hint}. Keys read: docs/config_reference.md; start a variable of your own with _'


def _where(cfg: Config, exc: BaseException, key_path: str) -> BaseException:
    """Note on ``exc`` which config file and key it came from; keeps its type and traceback."""
    if hasattr(exc, 'add_note'):
        exc.add_note(f'config {cfg.filename or "(dict)"}, key {key_path}')
    return exc


def _build(cfg: Config, key_path: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise  # names its file and key already
    except Exception as exc:  # e.g. a missing data file, or torchvision's failed download (RuntimeError)
        raise _where(cfg, exc, key_path)


def _require_dict(cfg: Config, value: Any, key_path: str, example: str) -> Dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f'expected a dict like {example}, got {type(value).__name__}: {value!r}',
                          cfg.filename, key_path)
    return dict(value)


def _positive_int(cfg: Config, key: str, default: Optional[int], allow_none: bool = False) -> Optional[int]:
    value = cfg.get(key, default)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f'expected a positive int{" or None" if allow_none else ""}, got {value!r}',
                          cfg.filename, key)
    return value


def check_seed(cfg: Config, seed: Optional[int]) -> int:
    """The run's seed: ``seed`` (``--seed``) if given, else ``cfg.seed``, else 1024; an int."""
    given_by = 'the seed argument (--seed)' if seed is not None else 'seed'
    value = cfg.get('seed', None) if seed is None else seed
    if value is None:
        return DEFAULT_SEED
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f'{given_by} must be an int, e.g. seed = {DEFAULT_SEED}, got '
                          f'{type(value).__name__} {value!r}; or leave it out for the default {DEFAULT_SEED}',
                          cfg.filename, 'seed')
    return value


def check_deterministic(cfg: Config, deterministic: Optional[bool]) -> bool:
    """Whether the run uses deterministic algorithms only: ``deterministic`` (``--deterministic``)
    if given, else ``cfg.deterministic``, else False."""
    value = cfg.get('deterministic', False) if deterministic is None else deterministic
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f'expected True or False, got {type(value).__name__} {value!r}; e.g. '
                          f'deterministic = True (or --deterministic)', cfg.filename, 'deterministic')
    return value


def use_deterministic_algorithms() -> None:
    """Make torch pick deterministic kernels, and fail on an operation that has none.

    What torch's reproducibility notes ask for: ``torch.use_deterministic_algorithms(True)``,
    cuDNN's deterministic convolutions without benchmarking (which may pick another algorithm
    each run), and a fixed cuBLAS workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS
    starts: set here unless the user set it, before anything has run on the GPU).
    """
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def check_steps_per_epoch(cfg: Config, loader: Optional[DataLoader], grad_acc: int,
                          empty_allowed: bool = False) -> Optional[int]:
    """Optimizer steps per epoch, ``len(train dataloader) // gradient_accumulation`` (``None``
    when the dataloader has no length); more accumulation than an epoch has batches is a ConfigError,
    and so is a loader without a batch (unless ``empty_allowed``: nothing is trained)."""
    if loader is None:
        return None
    try:
        batches = len(loader)
    except TypeError:  # an iterable dataset: epochs have no known length
        return None
    samples = len(loader.sampler) if hasattr(loader.sampler, '__len__') else '?'
    what = f'{samples} samples per rank, batch_size={loader.batch_size}, drop_last={loader.drop_last}'
    if batches == 0 and not empty_allowed:
        # (the LR scheduler's length would be asked for first, as though the epoch had none)
        key = 'drop_last' if loader.drop_last and samples != 0 else 'batch_size'
        raise ConfigError(f'the training dataloader has no batch ({what}): an epoch would train nothing; '
                          f'use more data or a smaller data.train.dataloader.batch_size'
                          + (', or drop_last=False (the last, smaller batch is then trained on)'
                             if key == 'drop_last' else ''), cfg.filename, f'data.train.dataloader.{key}')
    if 0 < batches < grad_acc:
        raise ConfigError(f'gradient_accumulation={grad_acc} is more than the {batches} batches of one '
                          f'training epoch ({what}), so an epoch would never complete an optimizer '
                          f'step; use gradient_accumulation <= {batches} or a smaller '
                          f'data.train.dataloader.batch_size', cfg.filename, 'gradient_accumulation')
    return batches // grad_acc


def check_equal_training_shards(cfg: Config, loader: Optional[DataLoader], context: ParallelContext) -> None:
    """Every data-parallel replica must run as many training batches per epoch: each optimizer step
    all-reduces the gradients over all of them, and the others would wait in vain for a replica that
    has run out (gloo aborts, NCCL hangs until dist_timeout). A ConfigError naming the sampler's key
    otherwise, raised alike on every rank. Checked once, at start-up, with one ``all_gather_object``
    over every rank (the pipeline stages of a replica read the same batches), before any rank can
    fail alone on its own length (:func:`check_steps_per_epoch`)."""
    import torch.distributed as dist
    if loader is None or context.data_size <= 1:
        return
    key = 'data.train.dataloader.sampler'
    sampler = loader.sampler
    if isinstance(sampler, UnpaddedDistributedSampler):
        n, total = sampler.num_replicas, sampler.total_size
        shares = sorted(set(UnpaddedDistributedSampler.shares(total, n)), reverse=True)
        raise ConfigError(f'UnpaddedDistributedSampler is for test loaders: it splits the {total} '
                          f'training samples over the {n} data-parallel replicas without repeating any, so '
                          f"their shares differ ({' or '.join(map(str, shares))} samples) and so may their "
                          f'numbers of batches, while training needs every replica to run the same steps. '
                          f"Leave out {key}: torch's DistributedSampler, the default, pads the shards to "
                          f'equal length with repeated samples (with drop_last=True in data.train.dataloader '
                          f'it cuts them to equal length instead)', cfg.filename, key)
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        mine = (context.dp_rank, len(loader), len(sampler))
    except TypeError:  # no length (a sampler without one): every rank reports so, none skips the gather
        mine = (context.dp_rank, None, None)
    everyone: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    # the stages of a replica build the same loader: one entry per replica
    lengths = {dp_rank: (batches, samples) for dp_rank, batches, samples in everyone}
    if len({batches for batches, _ in lengths.values()}) <= 1:
        return
    replicas: Dict[Any, List[int]] = {}
    for dp_rank in sorted(lengths):
        replicas.setdefault(lengths[dp_rank], []).append(dp_rank)
    found = '; '.join(f'replica{"s" if len(ranks) > 1 else ""} {", ".join(map(str, ranks))}: {batches} '
                      f'batches from {samples} samples' for (batches, samples), ranks in replicas.items())
    raise ConfigError(f'the training dataloader gives the {context.data_size} data-parallel replicas '
                      f'different numbers of batches per epoch ({found}, batch_size={loader.batch_size}): '
                      f'every optimizer step all-reduces the gradients over all replicas, so each must run '
                      f"the same steps. Use a sampler that gives every replica as many samples: torch's "
                      f'DistributedSampler, the default when {key} is left out, pads the shards to equal '
                      f'length', cfg.filename, key)


def check_accumulation_left_out(loader: DataLoader, grad_acc: int, data_size: int,
                                logger: logging.Logger) -> None:
    """Say so when an epoch's last ``len(loader) % gradient_accumulation`` batches are left out: they
    make up no whole optimizer step, and the Trainer does not step on a short group (every step
    averages exactly N batches). With a fixed order (not shuffled) the same samples are left out of
    every epoch, so the run never trains on them: a UserWarning, also written into the log file, as
    drop_last's; with a shuffled order other samples each epoch: an INFO line."""
    if not get_context().is_logging_rank:  # one warning per run, not per process
        return
    try:
        batches, per_replica = len(loader), len(loader.sampler)
    except TypeError:  # no length (an iterable dataset, a sampler without one): nothing to count
        return
    rest = batches % grad_acc if batches >= grad_acc else 0
    batch_size = loader.batch_size
    if not rest or not isinstance(batch_size, int):
        return
    cause = f'gradient_accumulation={grad_acc} with {batches} training batches per epoch'
    last = f'the last {rest} batch' + ('es' if rest > 1 else '')
    if not fixed_order(loader.dataset, loader.sampler):
        logger.info(f'{cause}: {last} of each epoch, too few for an optimizer step, '
                    f'{"are" if rest > 1 else "is"} not trained on (the order is shuffled: other samples '
                    f'each epoch)')
        return
    used = (batches - rest) * batch_size
    total = len(loader.dataset)
    left_out = min(total, (min(per_replica, batches * batch_size) - used) * data_size)
    where = f' of each of the {data_size} data-parallel replicas' if data_size > 1 else ''
    fixes = []
    divisors = [n for n in range(2, batches) if batches % n == 0]
    if divisors:
        fixes.append(f'gradient_accumulation={min(divisors, key=lambda n: (abs(n - grad_acc), n))} '
                     f'(it divides {batches})')
    # the batch size nearest to this one that makes the number of batches a multiple of N
    sizes = sorted(range(max(1, batch_size // 2), 2 * batch_size + 1), key=lambda b: (abs(b - batch_size), b))
    for size in sizes:
        count = per_replica // size if loader.drop_last else -(-per_replica // size)
        if size != batch_size and count >= grad_acc and count % grad_acc == 0:
            fixes.append(f'data.train.dataloader.batch_size={size} ({count} batches, a multiple of '
                         f'{grad_acc})')
            break
    fixes.append('data.train.dataloader.shuffle=True (other samples are then left out each epoch)')
    message = warn_fixed_samples_left_out(
        cause, left_out, total, f'{last}{where}, too few for an optimizer step of {grad_acc} batches',
        'the run never trains on them (every optimizer step averages exactly gradient_accumulation '
        'batches; Lightning and mmengine would step on the short group)',
        'set ' + ', or '.join(fixes), stacklevel=3)
    log_to_file(logger, message)


def check_writable(cfg: Config, given: Optional[str] = None) -> None:
    """Fail before training, with the fix, when the work directory cannot be written.

    ``given`` is initialize()'s ``work_dir`` (``--work-dir``): an error then names it, not the
    config's key ``work_dir``.
    """
    path = cfg.work_dir
    if given:
        origin, filename, key = ' (from --work-dir)', None, None
    elif path == osp.expanduser(default_work_dir(cfg)):
        origin, filename, key = ' (the default, work_dirs/<config name>)', None, None
    else:
        origin, filename, key = '', cfg.filename, 'work_dir'
    if osp.exists(path) and not osp.isdir(path):
        problem = 'is a file, not a directory'
    else:
        try:
            os.makedirs(path, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix='.write_test'):
                return
        except OSError as exc:
            problem = f'is not writable ({exc.strerror or exc})'
    raise ConfigError(f'the work directory {path!r}{origin} {problem}; choose another with --work-dir DIR '
                      f'or work_dir=... in the config', filename, key)


def check_microbatches(cfg: Config, schedule: Any, *loaders: Optional[DataLoader]) -> None:
    """A pipeline splits each batch into ``num_microbatches``: check every batch size now, not
    at the first (or the last) batch of training."""
    m = getattr(schedule, 'num_microbatches', None)
    check_sizes = getattr(schedule, 'check_sizes', None)
    if callable(check_sizes):  # e.g. interleaving M not a multiple of P: a config error, before training
        try:
            check_sizes(get_context().pipeline_size)
        except ValueError as exc:
            raise ConfigError(str(exc), cfg.filename, 'schedule.num_microbatches') from None
    if not m or m == 1:
        return
    for split, loader in zip(('train', 'test'), loaders):
        problem, setting = unsplittable_batch(loader, m)
        if problem:
            fix = (f'make the batch size a multiple of {m} or change num_microbatches'
                   if setting == 'batch_size' else
                   f'set drop_last=True in data.{split}.dataloader or change the batch size')
            problem = problem.replace('num_microbatches=', 'schedule.num_microbatches=')
            raise ConfigError(f'{problem}; {fix}',
                              cfg.filename, f'data.{split}.dataloader.{setting}')


def build_data(cfg: Config, context: ParallelContext, seed: int):
    """Train and test datasets and dataloaders from ``cfg.data`` (either split may be absent)."""
    data = _require_dict(cfg, cfg.get('data', None), 'data',
                         "dict(train=dict(dataset=dict(type='Digits'), dataloader=dict(batch_size=32)))")
    unknown = sorted(set(data) - {'train', 'test'})
    if unknown:
        raise ConfigError(f'unknown keys {unknown}; expected train and test', cfg.filename, 'data')
    loaders = {}
    for split in ('train', 'test'):
        if data.get(split) is None:
            loaders[split] = None
            continue
        part = _require_dict(cfg, data[split], f'data.{split}',
                             "dict(dataset=dict(type=...), dataloader=...)")
        extra = sorted(set(part) - {'dataset', 'dataloader'})
        if extra or 'dataset' not in part:
            raise ConfigError(f'expected the keys dataset (required) and dataloader, got {sorted(part)}',
                              cfg.filename, f'data.{split}')
        dataset_cfg = _require_dict(cfg, part['dataset'], f'data.{split}.dataset', "dict(type='Digits')")
        vocabulary = getattr(getattr(loaders.get('train'), 'dataset', None), 'chars', None)
        shared = (split == 'test' and vocabulary is not None and 'chars' not in dataset_cfg
                  and _takes_argument(DATASETS, dataset_cfg.get('type'), 'chars'))
        if shared:  # the model's ids are the training text's: a vocabulary of its own would remap them
            dataset_cfg['chars'] = vocabulary
        try:
            dataset = _build(cfg, f'data.{split}.dataset', build_dataset, dataset_cfg)
        except VocabularyError as exc:
            if not shared:
                raise
            raise ConfigError(f'the test text has {len(exc.missing)} distinct characters that the training '
                              f'text has not: {vocabulary_text(exc.missing, 20)}. The test dataset is given '
                              f"the training dataset's vocabulary ({len(vocabulary)} characters), so that "
                              f'each id means the same character as in training. Use the same text and '
                              f'max_chars in data.train.dataset and data.test.dataset (the test split is the '
                              f'end of that text), or set data.test.dataset.chars to a vocabulary holding '
                              f'them: the training characters first, in their order, then the new ones, with '
                              f'model.vocab_size covering them all',
                              cfg.filename, 'data.test.dataset') from None
        loaders[split] = _build(cfg, f'data.{split}.dataloader', build_dataloader, part.get('dataloader'),
                                dataset, context=context, seed=seed, shuffle=None,
                                pad_shards=split == 'train')
    return loaders['train'], loaders['test']


def build_model(cfg: Config, context: ParallelContext, train_loader: Optional[DataLoader],
                seed: int, test_loader: Optional[DataLoader] = None) -> nn.Module:
    """The model (this rank's pipeline stage when ``parallel.pipeline > 1``), on the device; DDP-wrapped
    over several data-parallel replicas unless the Engine averages the gradients
    (:func:`engine_averages_gradients`).

    Settings taken from the data (``vocab_size=None``) and the checks of the model against it use
    the training dataset, or the test dataset when there is none (``tools/test.py``)."""
    model_cfg = _require_dict(cfg, cfg.get('model', None), 'model', "dict(type='MLP', in_features=64)")
    test_set = getattr(test_loader, 'dataset', None)
    dataset = getattr(train_loader, 'dataset', None) if train_loader is not None else test_set
    source = 'training' if train_loader is not None else 'test'
    filled = 'vocab_size' in model_cfg and model_cfg['vocab_size'] is None and hasattr(dataset, 'vocab_size')
    if filled:
        model_cfg['vocab_size'] = dataset.vocab_size  # a text model sized by its corpus
        cfg.model.vocab_size = dataset.vocab_size
    given = model_cfg.get('vocab_size')
    for split, data in (('training', dataset if train_loader is not None else None), ('test', test_set)):
        needed = getattr(data, 'vocab_size', None)
        if isinstance(given, int) and isinstance(needed, int) and given < needed:
            # torch would only say "index out of range in self" at the first step
            if filled:
                raise ConfigError(f'model.vocab_size=None took vocab_size={given} from the {source} dataset, '
                                  f'but the {split} dataset has a vocabulary of {needed} tokens: set '
                                  f'model.vocab_size to at least {needed}, or give the {split} dataset the '
                                  f"{source} dataset's vocabulary (leave its chars unset)", cfg.filename,
                                  'model.vocab_size')
            raise ConfigError(f'the model has vocab_size={given}, but the {split} dataset has a vocabulary '
                              f'of {needed} tokens: set model.vocab_size to at least {needed}, or to None '
                              f'to take it from the {source} dataset', cfg.filename, 'model.vocab_size')
    _check_input_shape(cfg, model_cfg, dataset, source)
    if train_loader is not None and test_set is not None:
        _check_input_shape(cfg, model_cfg, test_set, 'test')  # a test split of other samples fails late
    set_seed(seed)  # the weights depend on the seed only, not on what was built before
    chunks = model_chunks(cfg)
    if context.pipeline_size > 1 or chunks > 1:  # one process runs an interleaved plan's chunks in turn
        from .pipeline import PartitionError, build_pipeline_model
        try:
            model = _build(cfg, 'model', build_pipeline_model, model_cfg, context, num_model_chunks=chunks)
        except PartitionError as exc:
            raise ConfigError(str(exc), cfg.filename, 'model.partition') from None
    else:
        model_cfg.pop('partition', None)
        model = _build(cfg, 'model', MODELS.build, model_cfg)
    model = model.to(get_device())
    if engine_averages_gradients(cfg, context):
        broadcast_parameters(model, context)  # every replica starts from replica 0's weights, as DDP's would
        return model
    return wrap_data_parallel(model, context)


def engine_averages_gradients(cfg: Config, context: ParallelContext) -> bool:
    """Whether the Engine, not DDP, averages the gradients over ``context.data_group``.

    With several pipeline stages, and with a pipeline schedule on one stage: DDP's reducer
    expects each forward's backward before the next forward, and GPipe runs all of a batch's
    microbatch forwards first, which DDP averages wrongly (interleaving needs the model's chunks
    unwrapped too). The Engine averages once per optimizer step instead.
    """
    if context.pipeline_size > 1:
        return True
    if context.data_size == 1:
        return False
    schedule_cfg = cfg.get('schedule', None) or {}
    kind = schedule_cfg.get('type') if isinstance(schedule_cfg, Mapping) else None
    cls = SCHEDULES.get(kind) if isinstance(kind, str) else kind
    return inspect.isclass(cls) and issubclass(cls, PipelineRuntime)


def _takes_argument(registry: Any, kind: Any, name: str) -> bool:
    """Whether the class (or function) ``kind`` names in ``registry`` takes the argument ``name``."""
    try:
        cls = registry.get(kind) if isinstance(kind, str) else kind
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError, KeyError, ImportError):  # unknown: the build reports it
        return False


def _check_input_shape(cfg: Config, model_cfg: Mapping, dataset: Any, split: str = 'training') -> None:
    """For the shipped models, the first sample of ``dataset`` against the model's input sizes:
    torch would only say "mat1 and mat2 shapes cannot be multiplied (32x1024 and 256x128)",
    "expected input to have 1 channels" or "sequence length 64 exceeds block_size 32" at the
    first step, naming no config key."""
    kind = model_cfg.get('type')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', None)
    keys = {'SimpleCNN': ('in_channels', 'image_size'), 'MLP': ('in_features',),
            'TinyGPT': ('block_size',)}.get(name)
    if keys is None or dataset is None or isinstance(dataset, torch.utils.data.IterableDataset):
        return
    try:
        if len(dataset) == 0:
            return
        sample = dataset[0]
    except Exception:  # the step will raise the dataset's own error where it belongs
        return
    data = sample[0] if isinstance(sample, (tuple, list)) and sample else sample
    if not isinstance(data, torch.Tensor):
        return
    shape = tuple(data.shape)
    problems = []
    if 'in_features' in keys:
        given = model_cfg.get('in_features', 64)
        if _positive(given) and data.numel() != given:
            problems.append(('in_features', f'in_features={given}, but each {split} sample has shape '
                                            f'{shape}, {data.numel()} values once flattened: set '
                                            f'model.in_features={data.numel()}'))
    if 'in_channels' in keys and data.dim() != 3:
        problems.append(('type', f'takes images shaped (channels, height, width), but each {split} sample '
                                 f'has shape {shape}: give it unflattened images (for Digits, '
                                 f'flatten=False in the dataset config), or use an MLP'))
    if 'in_channels' in keys and data.dim() == 3:
        given = model_cfg.get('in_channels', 1)
        if _positive(given) and shape[0] != given:
            problems.append(('in_channels', f'in_channels={given}, but each {split} sample has shape '
                                            f'{shape} (channels, height, width): set model.in_channels='
                                            f'{shape[0]}'))
    if 'image_size' in keys and data.dim() == 3:
        given = model_cfg.get('image_size', 8)
        if _positive(given) and shape[1:] != (given, given):
            fix = (f'set model.image_size={shape[1]}' if shape[1] == shape[2] else
                   'SimpleCNN takes square images: resize them in the dataset transform')
            problems.append(('image_size', f'image_size={given}, but each {split} sample has shape {shape} '
                                           f'(channels, height, width): {fix}'))
    if 'block_size' in keys and data.dim() == 1:
        given = model_cfg.get('block_size', 64)
        if _positive(given) and shape[0] > given:
            problems.append(('block_size', f'block_size={given}, but each {split} sample is a sequence of '
                                           f'{shape[0]} tokens: set model.block_size={shape[0]}, or give the '
                                           f'dataset a block_size of at most {given}'))
    if problems:
        key, message = problems[0]
        raise ConfigError(f'the model ({kind}) {"" if key == "type" else "has "}{message}', cfg.filename,
                          f'model.{key}')


def _positive(value: Any) -> bool:
    """A setting to check against the data (the model reports any other value itself)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def build_lr_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: Optional[int],
                       logger: logging.Logger):
    """The LR scheduler with ``total_steps`` / ``warmup_steps`` filled in from the run's length.

    Schedulers step once per optimizer step, so epochs are converted to optimizer steps:
    ``total_steps = max_epochs * steps_per_epoch`` (or ``max_steps`` when smaller) and
    ``warmup_steps = round(warmup_epochs * steps_per_epoch)``.
    """
    sched_cfg = cfg.get('lr_scheduler', None)
    if sched_cfg is None:
        return None
    sched_cfg = _require_dict(cfg, sched_cfg, 'lr_scheduler', "dict(type='CosineAnnealingLR')")
    cls = LR_SCHEDULERS.get(sched_cfg.get('type')) if isinstance(sched_cfg.get('type'), str) \
        else sched_cfg.get('type')
    if cls is None:
        message = LR_SCHEDULERS._unknown_message(str(sched_cfg.get('type')))
        if 'plateau' in str(sched_cfg.get('type')).lower():  # torch's, which steps with a metric
            message += (' ReduceLROnPlateau needs a metric at each step, which the Engine (it steps the '
                        'scheduler once per optimizer step, without arguments) does not have: leave '
                        'lr_scheduler out (None) and step it from a hook after each test epoch, as in '
                        'docs/lr_scheduler.md, "Schedulers driven by a metric (ReduceLROnPlateau)".')
        raise _where(cfg, KeyError(message), 'lr_scheduler.type')
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    max_epochs, max_steps = cfg.get('max_epochs', 1), cfg.get('max_steps', None)  # the run's defaults
    # LRSchedulerHook(by_epoch=True) steps the scheduler once per epoch: its lengths count epochs
    # (as mmcv's by_epoch schedules do), and max_steps is rounded up to whole epochs.
    by_epoch = _scheduler_steps_by_epoch(cfg)
    unit = 1 if by_epoch else steps_per_epoch
    units = ('epochs (LRSchedulerHook(by_epoch=True) steps it once per epoch)' if by_epoch
             else 'optimizer steps')
    given_max_steps = max_steps  # the config's, in optimizer steps, for the messages
    if by_epoch and max_steps:
        max_steps = -(-max_steps // steps_per_epoch) if steps_per_epoch else None
    if 'total_steps' in params and sched_cfg.get('total_steps') is None:
        candidates = [max_steps] if max_steps else []
        if max_epochs and unit:
            candidates.append(max_epochs * unit)
        if not candidates:
            per_epoch = 'unknown, it has no length' if steps_per_epoch is None else steps_per_epoch
            raise ConfigError(f'total_steps cannot be computed from max_epochs={max_epochs!r}, '
                              f'max_steps={given_max_steps!r} and the training dataloader (steps per epoch: '
                              f'{per_epoch}); set lr_scheduler.total_steps or max_steps',
                              cfg.filename, 'lr_scheduler.total_steps')
        sched_cfg['total_steps'] = min(candidates)
        in_epochs = (f' optimizer steps, {max_steps} epochs of {steps_per_epoch} steps rounded up'
                     if by_epoch and max_steps else '')
        logger.info(f'lr_scheduler.total_steps = {sched_cfg["total_steps"]} {units} (computed: '
                    f'max_epochs={max_epochs} x {unit} per epoch, max_steps={given_max_steps}{in_epochs})')
    # None means "not set", so a command line can drop a base's key: lr_scheduler.warmup_epochs=None.
    for key in ('warmup_epochs', 'warmup_steps'):
        if key in sched_cfg and sched_cfg[key] is None:
            del sched_cfg[key]
    _check_takes_warmup(cfg, cls, params, sched_cfg)
    if 'warmup_epochs' in sched_cfg:
        epochs = sched_cfg.pop('warmup_epochs')
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs >= 0:
            raise ConfigError(f'expected a number of epochs >= 0 (e.g. 1 or 0.5), got '
                              f'{type(epochs).__name__} {epochs!r}; set it to None, or leave it out, for no '
                              f'warm-up in epochs',
                              cfg.filename, 'lr_scheduler.warmup_epochs')
        if 'warmup_steps' in sched_cfg:
            steps = sched_cfg['warmup_steps']
            raise ConfigError(f'got warmup_epochs={epochs!r} and warmup_steps={steps!r}; give one of them. '
                              f'None drops the other, e.g. when it comes from a _base_ file: --cfg-options '
                              f'lr_scheduler.warmup_epochs=None lr_scheduler.warmup_steps={steps!r}, or in a '
                              f'config lr_scheduler = dict(warmup_epochs=None, warmup_steps={steps!r})',
                              cfg.filename, 'lr_scheduler')
        if not unit:
            raise ConfigError('warmup_epochs needs a training dataloader with a length; give warmup_steps',
                              cfg.filename, 'lr_scheduler.warmup_epochs')
        sched_cfg['warmup_steps'] = int(round(epochs * unit))
        if by_epoch and epochs != sched_cfg['warmup_steps']:
            _warn_fractional_warmup(cfg, epochs, sched_cfg['warmup_steps'], logger)
        total = sched_cfg.get('total_steps')
        if isinstance(total, int) and sched_cfg['warmup_steps'] > total:
            # A short run (max_steps) of a config written for full epochs: shorten the warm-up
            # rather than refuse; an explicit warmup_steps > total_steps is still an error.
            logger.warning(f'lr_scheduler: warmup_epochs={epochs} is {sched_cfg["warmup_steps"]} steps, '
                           f'more than total_steps={total}; warming up for {total} steps instead')
            sched_cfg['warmup_steps'] = total
        elif isinstance(total, int) and sched_cfg['warmup_steps'] == total:
            logger.warning(f'lr_scheduler: warmup_epochs={epochs} is the whole run ({total} steps): the '
                           f'learning rate rises until the last step and never decays. Train more epochs '
                           f'(max_epochs) or shorten the warm-up (lr_scheduler.warmup_epochs).')
        logger.info(f'lr_scheduler warm-up: warmup_epochs={epochs} -> '
                    f'warmup_steps={sched_cfg["warmup_steps"]} {units} ({unit} per epoch)')
    elif 'warmup_steps' in sched_cfg:
        logger.info(f'lr_scheduler warm-up: warmup_steps={sched_cfg["warmup_steps"]} {units}')
    if 'milestones' in params:
        _check_milestones(sched_cfg, None if by_epoch else steps_per_epoch, units.split(' (')[0], logger)
    sched_cfg = plain_numbers(sched_cfg)  # as the optimizer's: the scheduler's state is saved too
    sched_cfg['type'] = cls
    return _build(cfg, 'lr_scheduler', LR_SCHEDULERS.build, sched_cfg, default_args=dict(optimizer=optimizer))


def _warn_fractional_warmup(cfg: Config, epochs: float, rounded: int, logger: logging.Logger) -> None:
    """A warm-up of part of an epoch with a scheduler stepped once per epoch: rounded to whole epochs
    (0.5 to none at all). A UserWarning, also written into the log file."""
    plural = 's' if rounded > 1 else ''
    what = 'no warm-up at all' if rounded == 0 else f'a warm-up of {rounded} epoch{plural}'
    if not get_context().is_logging_rank:  # one warning per run, not per process
        return
    message = (f'config {cfg.filename or "(dict)"}: lr_scheduler.warmup_epochs={epochs} is not a whole '
               f'number of epochs, but LRSchedulerHook(by_epoch=True) steps the scheduler once per epoch, '
               f'so it was rounded to {rounded}: {what}. For a warm-up of part of an epoch, step the '
               f'scheduler per optimizer step (LRSchedulerHook without by_epoch=True: total_steps and '
               f'warmup_epochs are then counted in optimizer steps); else set lr_scheduler.warmup_epochs '
               f'to a whole number.')
    warnings.warn(message, UserWarning, stacklevel=4)
    log_to_file(logger, message)


def _check_takes_warmup(cfg: Config, cls: Any, params: Mapping[str, inspect.Parameter],
                        sched_cfg: Mapping[str, Any]) -> None:
    """A warm-up given to a scheduler without one is a ConfigError naming the key the user wrote:
    warmup_epochs is converted to warmup_steps, which the class would then refuse under a name
    the config never had (typically a base's warm-up kept when --cfg-options changes the type)."""
    given = [key for key in ('warmup_epochs', 'warmup_steps') if key in sched_cfg]
    if not given or not params or 'warmup_steps' in params or \
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    name = getattr(cls, '__name__', str(cls))
    key, value = given[0], sched_cfg[given[0]]
    variant = name[:-2] + 'WarmupLR' if name.endswith('LR') else ''
    warmups = [variant] if variant in LR_SCHEDULERS.module_dict else \
        sorted(n for n in LR_SCHEDULERS.module_dict if 'Warmup' in n)
    where = ' (set in this config or one of its _base_ files: a type changed over a base keeps the ' \
        "base's other keys)" if cfg.filename else ''
    raise ConfigError(f'{name} has no warm-up, but {key}={value!r} asks for one{where}. Drop it: '
                      f'--cfg-options lr_scheduler.{key}=None, or in a config lr_scheduler = '
                      f"dict(type={name!r}, {key}=None) (or dict(_delete_=True, type={name!r}, ...) to drop "
                      f"all of a base's keys); or use a scheduler that warms up first: "
                      f'{", ".join(warmups)}', cfg.filename, f'lr_scheduler.{key}')


def _check_milestones(sched_cfg: Mapping[str, Any], steps_per_epoch: Optional[int], units: str,
                      logger: logging.Logger) -> None:
    """Warn about milestones that look like mmcv's, which count epochs: here they count optimizer
    steps, so they fall after the run's end or all within its first epoch."""
    milestones, total = sched_cfg.get('milestones'), sched_cfg.get('total_steps')
    if not (isinstance(milestones, (list, tuple)) and milestones and isinstance(total, int)
            and all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)):
        return  # the scheduler reports a malformed value itself
    in_steps = ''
    if steps_per_epoch:
        fits = [m for m in milestones if m * steps_per_epoch < total]
        example = f', e.g. milestones={[m * steps_per_epoch for m in fits]} for epochs {fits}' if fits else ''
        in_steps = (f', not epochs as in mmcv: epoch k starts at step k x {steps_per_epoch} '
                    f'({steps_per_epoch} steps per epoch){example}')
    late = [m for m in milestones if m >= total]
    if late:
        logger.warning(f'lr_scheduler: milestones {late} are at or after the end of the run (total_steps='
                       f'{total} {units}), so the learning rate never decays there. Milestones count '
                       f'{units}{in_steps}.')
    elif steps_per_epoch and total > steps_per_epoch and max(milestones) < steps_per_epoch:
        logger.warning(f'lr_scheduler: every milestone {list(milestones)} falls in the first epoch of a run '
                       f'of {total} {units}, so the learning rate decays early and then stays constant. '
                       f'Milestones count {units}{in_steps}.')


def model_chunks(cfg: Config) -> int:
    """How many chunks per stage the config's schedule runs: ``schedule.num_model_chunks``, or the
    schedule class's own default when it takes one (the interleaved schedule: 2), else 1. The
    model is built in as many chunks, so that the two always agree."""
    schedule_cfg = cfg.get('schedule', None) or {}
    if not isinstance(schedule_cfg, Mapping):
        return 1
    if schedule_cfg.get('num_model_chunks') is not None:
        chunks = schedule_cfg['num_model_chunks']
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            # checked here, where the key is known: the model builder would blame the key 'model'
            raise ConfigError(f'expected a positive int (model chunks per pipeline stage, e.g. 2), got '
                              f'{type(chunks).__name__} {chunks!r}', cfg.filename,
                              'schedule.num_model_chunks')
        return chunks
    kind = schedule_cfg.get('type')
    cls = SCHEDULES.get(kind) if isinstance(kind, str) else kind
    try:
        default = inspect.signature(cls).parameters['num_model_chunks'].default
    except (TypeError, ValueError, KeyError):
        return 1
    return default if isinstance(default, int) else 1


def _scheduler_steps_by_epoch(cfg: Config) -> bool:
    """Whether ``cfg.hooks`` has an ``LRSchedulerHook(by_epoch=True)``, which steps the scheduler
    once per epoch instead of the Engine once per optimizer step."""
    for hook in cfg.get('hooks', None) or []:
        if isinstance(hook, Mapping) and hook.get('by_epoch'):
            kind = hook.get('type')
            cls = HOOKS.get(kind) if isinstance(kind, str) else kind  # subclasses and scoped names too
            if inspect.isclass(cls) and issubclass(cls, LRSchedulerHook):
                return True
    return False


def default_work_dir(cfg: Config) -> str:
    """``work_dirs/<config file name without extension>`` (``work_dirs/default`` for a dict config)."""
    name = osp.splitext(osp.basename(cfg.filename))[0] if cfg.filename else 'default'
    return osp.join('work_dirs', name)


def build_hooks(cfg: Config, trainer: Trainer) -> None:
    """Register every hook of ``cfg.hooks`` on ``trainer``; errors name ``hooks[i]``."""
    hooks = cfg.get('hooks', None) or []
    if not isinstance(hooks, (list, tuple)):
        raise ConfigError(f"expected a list like [dict(type='LossHook')], got {type(hooks).__name__}",
                          cfg.filename, 'hooks')
    built = []
    for i, hook_cfg in enumerate(hooks):
        if isinstance(hook_cfg, Mapping):
            hook_cfg = dict(hook_cfg)
            if 'type' not in hook_cfg:
                raise ConfigError(f'a hook config needs a type, got keys {sorted(hook_cfg)}', cfg.filename,
                                  f'hooks[{i}]')
            if isinstance(hook_cfg['type'], str) and HOOKS.get(hook_cfg['type']) is None:
                raise ConfigError(HOOKS._unknown_message(hook_cfg['type']), cfg.filename, f'hooks[{i}].type')
        hook = _build(cfg, f'hooks[{i}]', trainer.register_hook, hook_cfg)
        built.append((i, hook))
    # A save_best naming no metric is a config error naming its key. It is checked when training
    # starts (before_train), not here: hooks registered in code, or set up in a before_train of their
    # own, may still add the metric.
    for i, hook in built:
        if isinstance(hook, SaveCheckpointHook):
            hook.config_source = (cfg.filename, f'hooks[{i}].save_best')


def initialize(cfg_or_path: Union[str, os.PathLike, Mapping, Config], launcher: str = 'none',
               work_dir: Optional[str] = None, cfg_options: Optional[Mapping[str, Any]] = None,
               seed: Optional[int] = None, logger: Optional[logging.Logger] = None,
               log_file: Union[bool, str] = True, read_only: bool = False,
               deterministic: Optional[bool] = None) -> Initialized:
    """Build the engine, trainer and dataloaders a config describes.

    Args:
        cfg_or_path: a config file, a dict or a :class:`Config`.
        launcher: ``'none'`` (one process, or a process group already set up), ``'torch'``,
            ``'slurm'`` or ``'openmpi'``: how the processes of a distributed run find each other.
        work_dir: overrides ``cfg.work_dir``; default ``work_dirs/<config name>``.
        cfg_options: ``{'optimizer.lr': 0.1, ...}`` merged into the config (``--cfg-options``).
        seed: overrides ``cfg.seed`` (default 1024); python, numpy and torch are seeded with it.
            Once everything is built, pipeline stage ``s > 0`` reseeds torch with ``seed + 100 * s``
            (:func:`~colossal_runner.pipeline.seed_pipeline_stage`): its own dropout masks.
        logger: the logger to use; by default ``colossal_runner`` logging to the console and,
            unless ``log_file=False``, to ``<work_dir>/<time>.log`` (or the path ``log_file``).
        read_only: build for evaluation: no log file and a Trainer without a work directory,
            so nothing is written (``tools/test.py``).
        deterministic: overrides ``cfg.deterministic`` (default False): True makes torch use
            deterministic algorithms only (see :func:`use_deterministic_algorithms`).

    Returns:
        ``Initialized(engine, trainer, train_dataloader, test_dataloader, config, context)``;
        ``config`` is the final config (overrides, computed ``work_dir``, ``seed``, ``vocab_size``).
    """
    cfg = load_config(cfg_or_path, cfg_options)
    unknown_keys = check_top_level_keys(cfg)
    cfg.seed = check_seed(cfg, seed)
    if check_deterministic(cfg, deterministic):
        cfg.deterministic = True  # written into the dumped config, as the seed is
        use_deterministic_algorithms()
    cfg.work_dir = osp.expanduser(work_dir or cfg.get('work_dir', None) or default_work_dir(cfg))
    context = setup_parallel(cfg, launcher, seed=cfg.seed)
    if not read_only:
        check_writable(cfg, work_dir)
        if context.is_main_process:  # the ranks of a run share its work_dir: one lock for the run
            lock_work_dir(cfg.work_dir)  # before anything is written there: no second run into it
    # checked even when a logger is given: a misspelt key or level would otherwise be ignored
    log_cfg = cfg.get('logging', None) or {}
    if not isinstance(log_cfg, Mapping):
        raise ConfigError(f"expected a dict like dict(level='INFO', progress=True), got {log_cfg!r}",
                          cfg.filename, 'logging')
    for key in log_cfg:
        if key not in ('level', 'progress'):
            close = difflib.get_close_matches(str(key), ['level', 'progress'], n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            raise ConfigError(f'unknown key {key!r}{hint}; logging takes only level and progress: rename or '
                              f'remove it', cfg.filename, ['logging', key])
    level, levels = log_cfg.get('level', 'INFO'), ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')
    if not (isinstance(level, str) and level.upper() in levels):
        raise ConfigError(f"unknown log level {level!r}; expected one of {', '.join(levels)} (any case)",
                          cfg.filename, 'logging.level')
    if not isinstance(log_cfg.get('progress', True), bool):  # bool('no') is True
        raise ConfigError(f"expected True or False, got {log_cfg['progress']!r}", cfg.filename,
                          'logging.progress')
    if logger is None:
        path = log_file if isinstance(log_file, str) else \
            (run_log_path(cfg.work_dir) if log_file else None)
        path = None if read_only else path
        if path is None:  # one run, one log file: not the previous run's (a file given replaces it)
            detach_log_file(logging.getLogger('colossal_runner'))
        logger = get_logger('colossal_runner', log_file=path, level=getattr(logging, level.upper()))
    for key in unknown_keys:  # warned before the log file was opened: the run's log keeps them too
        log_to_file(logger, _unknown_key_warning(cfg, key))
    grad_acc = _positive_int(cfg, 'gradient_accumulation', 1)
    _positive_int(cfg, 'max_epochs', 1)
    _positive_int(cfg, 'max_steps', None, allow_none=True)
    _positive_int(cfg, 'test_interval', 1)
    _check_engine_settings(cfg)  # before data and model are built: a typo fails at once

    train_loader, test_loader = build_data(cfg, context, cfg.seed)
    if not read_only:  # evaluation (tools/test.py) trains nothing
        check_equal_training_shards(cfg, train_loader, context)
    model = build_model(cfg, context, train_loader, cfg.seed, test_loader)
    loss_cfg = cfg.get('loss', None) or dict(type='CrossEntropyLoss')
    loss_cfg = _require_dict(cfg, loss_cfg, 'loss', "dict(type='MSELoss')")
    criterion = _build(cfg, 'loss', LOSSES.build, loss_cfg)
    if isinstance(criterion, nn.Module):
        criterion = criterion.to(get_device())
    opt_cfg = _require_dict(cfg, cfg.get('optimizer', None), 'optimizer', "dict(type='SGD', lr=0.1)")
    _check_no_paramwise_cfg(cfg, opt_cfg)
    # numpy numbers set from code (a .py config's are plain already) would reach the optimizer's state,
    # which a weights-only checkpoint load refuses: the first save would fail after a whole epoch
    opt_cfg = plain_numbers(opt_cfg)
    optimizer = _build(cfg, 'optimizer', OPTIMIZERS.build, opt_cfg,
                       default_args=dict(params=model.parameters()))
    steps_per_epoch = check_steps_per_epoch(cfg, train_loader, grad_acc, empty_allowed=read_only)
    if train_loader is not None and not read_only:
        check_accumulation_left_out(train_loader, grad_acc, context.data_size, logger)
    # Evaluation without training data (tools/test.py --cfg-options data.train=None) steps no
    # scheduler, whose length would come from the training data.
    lr_scheduler = None if read_only and (train_loader is None or steps_per_epoch == 0) else \
        build_lr_scheduler(cfg, optimizer, steps_per_epoch, logger)
    schedule_cfg = dict(cfg.get('schedule', None) or dict(type='NoPipelineSchedule'))
    schedule = _build(cfg, 'schedule', SCHEDULES.build, schedule_cfg)
    check_microbatches(cfg, schedule, train_loader, test_loader)
    data_group = context.data_group if engine_averages_gradients(cfg, context) else None  # else DDP's own
    engine = _build(cfg, 'engine settings (amp, gradient_accumulation, clip_grad_norm, nonfinite_loss)',
                    Engine, model, criterion, optimizer, lr_scheduler=lr_scheduler, step_schedule=schedule,
                    gradient_accumulation=grad_acc, clip_grad_norm=cfg.get('clip_grad_norm', 0.0),
                    amp=cfg.get('amp', None), nonfinite_loss=cfg.get('nonfinite_loss', 'raise'),
                    data_parallel_group=data_group)
    # what the model's token ids mean (the data that sized it, as build_model): saved with checkpoints
    sizing = train_loader if train_loader is not None else test_loader
    vocabulary = getattr(getattr(sizing, 'dataset', None), 'chars', None)
    trainer = Trainer(engine, work_dir=None if read_only else cfg.work_dir, logger=logger, config=cfg,
                      vocabulary=vocabulary if isinstance(vocabulary, (list, tuple, str)) else None)
    try:
        build_hooks(cfg, trainer)
    except Exception as exc:
        if read_only and 'work_dir' in str(exc):
            exc.add_note('initialize(read_only=True) builds a Trainer without a work_dir, so that nothing is '
                         'written: leave file-writing hooks (TensorboardHook, SaveCheckpointHook) out of '
                         'cfg.hooks, as tools/test.py does (colossal_runner.test.metric_hooks_only)')
        raise
    # Built alike on every stage from one seed (a stage's weights equal the whole model's); from here
    # on each pipeline stage draws its own dropout masks (the loaders draw from their own generators).
    seed_pipeline_stage(cfg.seed, context)
    batch = getattr(train_loader, 'batch_size', None)
    per_step = ''  # batch_size is per replica: say what one optimizer step then sees
    if context.data_size > 1 and isinstance(batch, int):
        accumulation = f' x gradient_accumulation {grad_acc}' if grad_acc > 1 else ''
        per_step = (f'; batch_size {batch} per replica x {context.data_size} replicas{accumulation} = '
                    f'{batch * context.data_size * grad_acc} samples per optimizer step')
    logger.info(f'initialized {_model_name(cfg, model)} on {get_device()} ({context}){per_step}; '
                f'seed {cfg.seed}; work_dir {cfg.work_dir}')
    return Initialized(engine, trainer, train_loader, test_loader, cfg, context)


def _check_engine_settings(cfg: Config) -> None:
    """``amp``, ``clip_grad_norm`` and ``nonfinite_loss`` checked each by its own key (the Engine
    checks them too, but knows no config keys). ``gradient_accumulation`` is checked earlier."""
    try:
        check_amp(cfg.get('amp', None))
    except ValueError as err:
        raise ConfigError(str(err), cfg.filename, 'amp') from None
    clip = cfg.get('clip_grad_norm', 0.0)
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0:
        raise ConfigError(f'clip_grad_norm must be a number >= 0 (the largest global gradient norm; 0 '
                          f'disables clipping), got {type(clip).__name__} {clip!r}; e.g. '
                          f'clip_grad_norm = 1.0',
                          cfg.filename, 'clip_grad_norm')
    nonfinite = cfg.get('nonfinite_loss', 'raise')
    if not isinstance(nonfinite, str) or nonfinite not in NONFINITE_CHOICES:
        raise ConfigError(f'nonfinite_loss must be one of {list(NONFINITE_CHOICES)} (what to do when a '
                          f'training loss is NaN or Inf: stop the run, skip that step, or do not check), got '
                          f"{nonfinite!r}; e.g. nonfinite_loss = 'skip'", cfg.filename, 'nonfinite_loss')


def _check_no_paramwise_cfg(cfg: Config, opt_cfg: Dict[str, Any]) -> None:
    """mmcv's per-parameter options: the optimizer class would refuse the key, suggesting ``params``,
    which the framework fills in. ``None`` asks for nothing and is dropped."""
    if opt_cfg.get('paramwise_cfg', 0) is None:
        del opt_cfg['paramwise_cfg']
    elif 'paramwise_cfg' in opt_cfg:
        raise ConfigError(f"paramwise_cfg={opt_cfg['paramwise_cfg']!r} is mmcv's per-parameter options; "
                          f'they are not config keys here: the optimizer is built with every parameter '
                          f'of the model (params=model.parameters()). For parameter groups (another lr or '
                          f'weight_decay for some parameters), register a function in OPTIMIZERS that takes '
                          f"params and the config's other keys, splits params into groups and returns the "
                          f'optimizer; name it in optimizer.type, with its module in custom_imports. '
                          f'docs/config_reference.md, "optimizer", has an example',
                          cfg.filename, 'optimizer.paramwise_cfg')


def _model_name(cfg: Config, model: nn.Module) -> str:
    """The config's model type (``MLP``; a pipeline stage is an ``nn.Sequential`` of its layers)."""
    kind = cfg.model.get('type')
    if isinstance(kind, str):
        return kind
    return getattr(kind, '__name__', None) or type(getattr(model, 'module', model)).__name__


__all__ = ['initialize', 'Initialized', 'load_config', 'check_top_level_keys', 'KNOWN_KEYS', 'build_data',
           'build_model', 'build_lr_scheduler', 'build_hooks', 'default_work_dir', 'check_deterministic',
           'check_equal_training_shards', 'use_deterministic_algorithms']
