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
from .data import build_dataloader, build_dataset
from .distributed import (ParallelContext, get_context, get_device, set_seed, setup_parallel,
                          wrap_data_parallel)
from . import models as _models  # noqa: F401  (registers MLP, SimpleCNN, TinyGPT, losses)
from .engine import Engine
from .engine.amp import check_amp
from .engine.engine import NONFINITE_CHOICES
from .nn import lr_scheduler as _lr_scheduler  # noqa: F401  (registers the LR schedulers)
from .registry import HOOKS, LOSSES, LR_SCHEDULERS, MODELS, OPTIMIZERS, SCHEDULES
from .trainer import Trainer
from .trainer.hooks import LRSchedulerHook, SaveCheckpointHook
from .utils.logging import detach_log_file, get_logger, run_log_path
from .utils.work_dir_lock import lock_work_dir

# Every top-level key initialize() and the tools read; anything else is probably a typo.
KNOWN_KEYS = ('model', 'loss', 'optimizer', 'lr_scheduler', 'data', 'schedule', 'parallel', 'amp',
              'gradient_accumulation', 'clip_grad_norm', 'hooks', 'max_epochs', 'max_steps', 'test_interval',
              'seed', 'work_dir', 'custom_imports', 'logging', 'dist_timeout', 'dist_host', 'dist_port',
              'fault_watch', 'nonfinite_loss', 'deterministic')
DEFAULT_SEED = 1024
# mmcv's keys for what is done another way here: ignored, the run would silently differ from what
# they ask. Each maps to (what would happen, how to say it here).
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


def _asks_nothing(key: str, value: Any) -> bool:
    """mmcv's defaults ``load_from = None``, ``optimizer_config = dict(grad_clip=None)``: nothing lost.

    For ``optimizer_config`` only clipping, accumulation and loss scaling count (mmcv's OptimizerHook
    takes other arguments, such as ``detect_anomalous_params``, and a ``type``); ``lr_config`` with
    ``policy='fixed'`` and no warm-up keeps the learning rate constant, as a run without a scheduler
    does.
    """
    if value is None:
        return True
    if not isinstance(value, Mapping):
        return False
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
    setting, so it is a ConfigError naming the known key; so is an mmcv key done another way here
    (``load_from``, ``lr_config``, ...) unless it asks for nothing. Other unknown keys warn: a config
    may keep its own variables. Keys starting with ``_`` are private helpers and are ignored.
    """
    unknown = [k for k in cfg.keys() if not str(k).startswith('_') and k not in KNOWN_KEYS]
    for key in unknown:
        if key in _MMCV_KEYS and not _asks_nothing(key, cfg[key]):
            happens, fix = _MMCV_KEYS[key]
            raise ConfigError(f'{key} = {cfg[key]!r} is an mmcv key that colossal_runner does not read; '
                              f'{happens}. {fix(cfg[key])}.', cfg.filename, str(key))
        close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1, cutoff=0.75)
        if close:
            raise ConfigError(f'unknown top-level key {key!r}; did you mean {close[0]!r}? Rename it '
                              f'(or, for a variable of your own, start its name with _)',
                              cfg.filename, str(key))
        warnings.warn(f'config {cfg.filename or "(dict)"}: unknown top-level key {key!r} is ignored. '
                      f'Known keys: {", ".join(KNOWN_KEYS)}; start a private variable\'s name with _ '
                      f'to silence this.', UserWarning, stacklevel=3)
    return unknown


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


def check_steps_per_epoch(cfg: Config, loader: Optional[DataLoader], grad_acc: int) -> Optional[int]:
    """Optimizer steps per epoch, ``len(train dataloader) // gradient_accumulation`` (``None``
    when the dataloader has no length); more accumulation than an epoch has batches is a ConfigError."""
    if loader is None:
        return None
    try:
        batches = len(loader)
    except TypeError:  # an iterable dataset: epochs have no known length
        return None
    if 0 < batches < grad_acc:
        samples = len(loader.sampler) if hasattr(loader.sampler, '__len__') else '?'
        what = f'{samples} samples per rank, batch_size={loader.batch_size}, drop_last={loader.drop_last}'
        raise ConfigError(f'gradient_accumulation={grad_acc} is more than the {batches} batches of one '
                          f'training epoch ({what}), so an epoch would never complete an optimizer '
                          f'step; use gradient_accumulation <= {batches} or a smaller '
                          f'data.train.dataloader.batch_size', cfg.filename, 'gradient_accumulation')
    return batches // grad_acc


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
    if callable(check_sizes):  # e.g. fewer microbatches than stages: a config error, before training
        try:
            check_sizes(get_context().pipeline_size)
        except ValueError as exc:
            raise ConfigError(str(exc), cfg.filename, 'schedule.num_microbatches') from None
    if not m or m == 1:
        return
    for split, loader in zip(('train', 'test'), loaders):
        if loader is None or loader.batch_size is None:
            continue
        bs = loader.batch_size
        if bs % m:
            raise ConfigError(f'batch_size={bs} is not divisible by schedule.num_microbatches={m}; make '
                              f'the batch size a multiple of {m} or change num_microbatches',
                              cfg.filename, f'data.{split}.dataloader.batch_size')
        samples = len(loader.sampler) if hasattr(loader.sampler, '__len__') else None
        if samples is not None and not loader.drop_last and (samples % bs) % m:
            raise ConfigError(f'the last batch of {split} has {samples % bs} samples ({samples} per rank, '
                              f'batch_size={bs}), which schedule.num_microbatches={m} does not divide; set '
                              f'drop_last=True in data.{split}.dataloader or change the batch size',
                              cfg.filename, f'data.{split}.dataloader.drop_last')


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
        dataset = _build(cfg, f'data.{split}.dataset', build_dataset, dataset_cfg)
        loaders[split] = _build(cfg, f'data.{split}.dataloader', build_dataloader, part.get('dataloader'),
                                dataset, context=context, seed=seed, shuffle=None,
                                pad_shards=split == 'train')
    return loaders['train'], loaders['test']


def build_model(cfg: Config, context: ParallelContext, train_loader: Optional[DataLoader],
                seed: int) -> nn.Module:
    """The model (this rank's pipeline stage when ``parallel.pipeline > 1``), on the device, DDP-wrapped."""
    model_cfg = _require_dict(cfg, cfg.get('model', None), 'model', "dict(type='MLP', in_features=64)")
    dataset = getattr(train_loader, 'dataset', None)
    if 'vocab_size' in model_cfg and model_cfg['vocab_size'] is None and hasattr(dataset, 'vocab_size'):
        model_cfg['vocab_size'] = dataset.vocab_size  # a text model sized by its corpus
        cfg.model.vocab_size = dataset.vocab_size
    needed = getattr(dataset, 'vocab_size', None)
    given = model_cfg.get('vocab_size')
    if isinstance(given, int) and isinstance(needed, int) and given < needed:
        # torch would only say "index out of range in self" at the first step
        raise ConfigError(f'the model has vocab_size={given}, but the training text has {needed} distinct '
                          f'tokens: set model.vocab_size to at least {needed}, or to None to take it from '
                          f'the dataset', cfg.filename, 'model.vocab_size')
    _check_input_shape(cfg, model_cfg, dataset)
    set_seed(seed)  # the weights depend on the seed only, not on what was built before
    chunks = model_chunks(cfg)
    if context.pipeline_size > 1 or chunks > 1:  # one process runs an interleaved plan's chunks in turn
        from .pipeline import build_pipeline_model
        model = _build(cfg, 'model', build_pipeline_model, model_cfg, context, num_model_chunks=chunks)
    else:
        model_cfg.pop('partition', None)
        model = _build(cfg, 'model', MODELS.build, model_cfg)
    model = model.to(get_device())
    return wrap_data_parallel(model, context)


def _check_input_shape(cfg: Config, model_cfg: Mapping, dataset: Any) -> None:
    """For the shipped image models, the first training sample against the model's input sizes:
    torch would only say "mat1 and mat2 shapes cannot be multiplied (32x1024 and 256x128)" or
    "expected input to have 1 channels" at the first step, naming no config key."""
    kind = model_cfg.get('type')
    keys = {'SimpleCNN': ('in_channels', 'image_size'), 'MLP': ('in_features',)}.get(
        kind if isinstance(kind, str) else getattr(kind, '__name__', None))
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
            problems.append(('in_features', f'in_features={given}, but each training sample has shape '
                                            f'{shape}, {data.numel()} values once flattened: set '
                                            f'model.in_features={data.numel()}'))
    if 'in_channels' in keys and data.dim() != 3:
        problems.append(('type', f'takes images shaped (channels, height, width), but each training sample '
                                 f'has shape {shape}: give it unflattened images (for Digits, '
                                 f'flatten=False in the dataset config), or use an MLP'))
    if 'in_channels' in keys and data.dim() == 3:
        given = model_cfg.get('in_channels', 1)
        if _positive(given) and shape[0] != given:
            problems.append(('in_channels', f'in_channels={given}, but each training sample has shape '
                                            f'{shape} (channels, height, width): set model.in_channels='
                                            f'{shape[0]}'))
    if 'image_size' in keys and data.dim() == 3:
        given = model_cfg.get('image_size', 8)
        if _positive(given) and shape[1:] != (given, given):
            fix = (f'set model.image_size={shape[1]}' if shape[1] == shape[2] else
                   'SimpleCNN takes square images: resize them in the dataset transform')
            problems.append(('image_size', f'image_size={given}, but each training sample has shape {shape} '
                                           f'(channels, height, width): {fix}'))
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
    if by_epoch and max_steps:
        max_steps = -(-max_steps // steps_per_epoch) if steps_per_epoch else None
    if 'total_steps' in params and sched_cfg.get('total_steps') is None:
        candidates = [max_steps] if max_steps else []
        if max_epochs and unit:
            candidates.append(max_epochs * unit)
        if not candidates:
            per_epoch = 'unknown, it has no length' if steps_per_epoch is None else steps_per_epoch
            raise ConfigError(f'total_steps cannot be computed from max_epochs={max_epochs!r}, '
                              f'max_steps={max_steps!r} and the training dataloader (steps per epoch: '
                              f'{per_epoch}); set lr_scheduler.total_steps or max_steps',
                              cfg.filename, 'lr_scheduler.total_steps')
        sched_cfg['total_steps'] = min(candidates)
        logger.info(f'lr_scheduler.total_steps = {sched_cfg["total_steps"]} {units} (computed: '
                    f'max_epochs={max_epochs} x {unit} per epoch, max_steps={max_steps})')
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
    check_top_level_keys(cfg)
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
    grad_acc = _positive_int(cfg, 'gradient_accumulation', 1)
    _positive_int(cfg, 'max_epochs', 1)
    _positive_int(cfg, 'max_steps', None, allow_none=True)
    _positive_int(cfg, 'test_interval', 1)
    _check_engine_settings(cfg)  # before data and model are built: a typo fails at once

    train_loader, test_loader = build_data(cfg, context, cfg.seed)
    model = build_model(cfg, context, train_loader, cfg.seed)
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
    steps_per_epoch = check_steps_per_epoch(cfg, train_loader, grad_acc)
    lr_scheduler = build_lr_scheduler(cfg, optimizer, steps_per_epoch, logger)
    schedule_cfg = dict(cfg.get('schedule', None) or dict(type='NoPipelineSchedule'))
    schedule = _build(cfg, 'schedule', SCHEDULES.build, schedule_cfg)
    check_microbatches(cfg, schedule, train_loader, test_loader)
    engine = _build(cfg, 'engine settings (amp, gradient_accumulation, clip_grad_norm, nonfinite_loss)',
                    Engine, model, criterion, optimizer, lr_scheduler=lr_scheduler, step_schedule=schedule,
                    gradient_accumulation=grad_acc, clip_grad_norm=cfg.get('clip_grad_norm', 0.0),
                    amp=cfg.get('amp', None), nonfinite_loss=cfg.get('nonfinite_loss', 'raise'),
                    data_parallel_group=context.data_group if context.pipeline_size > 1 else None)
    trainer = Trainer(engine, work_dir=None if read_only else cfg.work_dir, logger=logger, config=cfg)
    try:
        build_hooks(cfg, trainer)
    except Exception as exc:
        if read_only and 'work_dir' in str(exc):
            exc.add_note('initialize(read_only=True) builds a Trainer without a work_dir, so that nothing is '
                         'written: leave file-writing hooks (TensorboardHook, SaveCheckpointHook) out of '
                         'cfg.hooks, as tools/test.py does (colossal_runner.test.metric_hooks_only)')
        raise
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
           'use_deterministic_algorithms']
