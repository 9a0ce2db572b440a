"""Datasets and dataloaders from config dicts, seeded and ready for data parallelism."""
from __future__ import annotations

import functools
import inspect
import logging
import random
import warnings
from typing import Any, Callable, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, SequentialSampler

from ..registry import DATA_SAMPLERS, DATASETS, TRANSFORMS
from ..utils.checks import check_positive_int

# DataLoader keywords a config may set directly; anything else is a typo worth reporting.
_LOADER_KEYS = ('batch_size', 'shuffle', 'num_workers', 'drop_last', 'pin_memory', 'persistent_workers',
                'prefetch_factor', 'timeout', 'sampler', 'collate_fn')


# first arguments of torch's samplers that are not the dataset (they come from the config)
_NOT_A_DATASET = ('weights', 'indices')

def _build_transform(cfg: Any) -> Any:
    """A transform from ``dict(type=...)``, a list of them (composed), or an object as is."""
    if isinstance(cfg, Mapping):
        return TRANSFORMS.build(cfg)
    if isinstance(cfg, (list, tuple)):
        compose = TRANSFORMS.get('Compose')
        if compose is None:
            raise KeyError('a list of transforms needs a Compose transform (torchvision.transforms); '
                           'install torchvision or pass a single transform')
        return compose([_build_transform(c) for c in cfg])
    return cfg


def dataset_transform(owner: str, key: str, value: Any) -> Optional[Callable]:
    """A bundled dataset's ``transform`` / ``target_transform``: None, a callable, or a config (or a
    list of configs, composed) from TRANSFORMS, built as :func:`build_dataset` builds them."""
    if value is None:
        return None
    transform = _build_transform(value)
    if not callable(transform):
        raise TypeError(f'{owner} {key} must be a callable, a dict(type=...) from TRANSFORMS or a list of '
                        f'them; got {type(value).__name__} {value!r}')
    return transform


class ItemTransforms:
    """For the bundled datasets: ``transform`` / ``target_transform`` (see :func:`dataset_transform`),
    applied to each item's input and target."""

    transform: Optional[Callable] = None
    target_transform: Optional[Callable] = None

    def set_transforms(self, transform: Any, target_transform: Any) -> None:
        name = type(self).__name__
        self.transform = dataset_transform(name, 'transform', transform)
        self.target_transform = dataset_transform(name, 'target_transform', target_transform)

    def transformed(self, data: Any, target: Any) -> Tuple[Any, Any]:
        if self.transform is not None:
            data = self.transform(data)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return data, target


def build_dataset(cfg: Mapping, default_args: Optional[Mapping] = None) -> Dataset:
    """``DATASETS.build`` plus transforms given as configs (torchvision datasets take objects)."""
    cfg = dict(cfg)
    for key in ('transform', 'target_transform'):
        if key in cfg and cfg[key] is not None:
            cfg[key] = _build_transform(cfg[key])
    return DATASETS.build(cfg, default_args=default_args)


# An odd 64-bit constant: replicas' worker seeds land far apart, clear of the worker_id offsets.
_REPLICA_SEED_STRIDE = 0x9E3779B97F4A7C15


def seed_worker(worker_id: int, dp_rank: int = 0) -> None:
    """Seed a DataLoader worker's torch, Python and numpy RNGs for data-parallel replica ``dp_rank``.

    torch gives worker ``i`` the seed ``base + i``, ``base`` drawn from the loader's generator. That
    generator is seeded alike on every replica (resuming restores replica 0's checkpointed state on
    all of them), so the replica is mixed in here: each replica's workers draw their own random
    augmentation, and the pipeline stages of one replica (one ``dp_rank``) draw the same.
    """
    seed = (torch.initial_seed() + dp_rank * _REPLICA_SEED_STRIDE) % 2 ** 64
    if dp_rank:
        torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed % 2 ** 32)


@DATA_SAMPLERS.register_module()
class UnpaddedDistributedSampler(DistributedSampler):
    """torch's DistributedSampler without its padding: replica ``r`` of ``n`` reads every ``n``-th
    index from ``r``, so the shards differ by at most one sample and no sample is read twice.

    torch's sampler repeats the first indices to give every replica as many samples, which
    training needs (each DDP step all-reduces gradients over every replica) and evaluation must
    not have: a repeated sample counts twice in the accuracy and the loss. torch has no option to
    leave the padding out, hence this subclass (set_epoch and the shuffle are torch's).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = False,
                 seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.total_size = len(dataset)
        self.num_samples = self.shares(self.total_size, num_replicas)[rank]

    @staticmethod
    def shares(total: int, num_replicas: int) -> List[int]:
        """How many of ``total`` samples each replica reads (they differ by at most one)."""
        return [len(range(rank, total, num_replicas)) for rank in range(num_replicas)]

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.total_size, generator=generator).tolist()
        else:
            order = range(self.total_size)
        return iter(order[self.rank::self.num_replicas])


def build_dataloader(cfg_dataloader: Optional[Mapping], dataset: Dataset, context=None, seed: int = 0,
                     shuffle: Optional[bool] = None, pad_shards: bool = True) -> DataLoader:
    """A DataLoader for ``dataset`` from DataLoader keywords in ``cfg_dataloader``.

    ``shuffle`` overrides the config's ``shuffle`` (default False). When shuffling, or when
    ``context.data_size > 1``, the sampler is torch's ``DistributedSampler`` (with one replica in
    the single-process case): its order depends only on ``(seed, epoch)`` through
    ``set_epoch``, which the Trainer calls, so a resumed run sees the same batches as an
    uninterrupted one, and data-parallel replicas (``rank = context.dp_rank``) see disjoint
    parts. ``sampler=dict(type=...)`` (DATA_SAMPLERS) replaces it: it is given the dataset as its
    first argument unless the config sets that argument or it is torch's ``weights`` / ``indices``
    (WeightedRandomSampler, SubsetRandomSampler: everything comes from the config then); one that
    takes a ``generator`` (RandomSampler) is given a ``torch.Generator`` seeded with ``seed`` unless
    the config sets one, so its order does not depend on the global RNG either. ``drop_last=True``
    on an unshuffled order warns (on the logging rank) when it leaves samples out, the sampler's cut
    to a multiple of the replicas and the batches' tails apart. Workers (``num_workers > 0``) are
    seeded per replica by :func:`seed_worker`: each data-parallel replica's random augmentation
    differs, while the sample order is shared. With ``persistent_workers=True`` they are seeded only
    once, so a resumed run's workers draw other random numbers than the uninterrupted run's: that
    warns.

    ``pad_shards=False`` (the test split, see :func:`colossal_runner.initialize.build_data`) splits
    the data over the replicas without repeating samples (:class:`UnpaddedDistributedSampler`); the
    replicas may then run one batch more or fewer, which evaluation allows and training does not.
    A configured torch ``DistributedSampler`` (without ``drop_last``) is built as that sampler there,
    and a DistributedSampler subclass that pads the shards warns: repeated samples count twice.
    """
    cfg = dict(cfg_dataloader or {})
    unknown = sorted(set(cfg) - set(_LOADER_KEYS))
    if unknown:
        import difflib
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, _LOADER_KEYS, n=1)
            hints.append(f'{key!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
        raise KeyError(f'unknown dataloader option(s) {", ".join(hints)}; '
                       f'expected some of {list(_LOADER_KEYS)}')
    for key in ('shuffle', 'drop_last', 'pin_memory', 'persistent_workers'):
        # bool('no') is True: a string or a number here is a mistake, not a setting
        if key in cfg and not isinstance(cfg[key], bool):
            raise TypeError(f'dataloader {key} must be True or False, got {type(cfg[key]).__name__} '
                            f'{cfg[key]!r}; e.g. {key}=False in the dataloader config.')
    config_shuffle = cfg.pop('shuffle', False)
    shuffle = config_shuffle if shuffle is None else bool(shuffle)
    batch_size = cfg.pop('batch_size', 1)
    batch_size = check_positive_int('dataloader batch_size', batch_size)  # a NumPy int as a plain int
    drop_last = cfg.pop('drop_last', False)
    sampler_cfg = cfg.pop('sampler', None)
    data_size = getattr(context, 'data_size', 1) if context is not None else 1
    dp_rank = getattr(context, 'dp_rank', 0) if context is not None else 0
    if isinstance(dataset, IterableDataset) and (shuffle or data_size > 1 or sampler_cfg is not None):
        name = type(dataset).__name__
        if data_size > 1:
            # A stream split by the user could give one replica a batch more than another; each training
            # step all-reduces over every replica, so the others would wait for it in vain.
            raise ValueError(f'{name} is an IterableDataset: it has no indices for {data_size} data-parallel '
                             f'replicas to split. Data parallelism needs a map-style Dataset (__getitem__ '
                             f'and __len__): the loader splits its indices so that every replica runs the '
                             f'same number of batches.')
        what, fix = (('a sampler', 'leave out dataloader.sampler') if sampler_cfg is not None else
                     ('shuffle=True', 'shuffle inside the dataset (a shuffle buffer) and set shuffle=False'))
        raise ValueError(f'{name} is an IterableDataset: it has no indices for {what} to order. '
                         f'{fix[0].upper()}{fix[1:]}, or use a map-style Dataset.')
    logging_rank = context is None or getattr(context, 'is_logging_rank', True)
    trim_fix = ('drop_last=False (then no sample is cut: a test loader splits them unevenly, a train loader '
                'pads the shards with repeated samples)')
    if sampler_cfg is not None:
        sampler_cfg = dict(sampler_cfg)
        sampler_type = sampler_cfg.pop('type', None)
        sampler_cls = DATA_SAMPLERS.get(sampler_type) if isinstance(sampler_type, str) else sampler_type
        if sampler_cls is None:
            raise KeyError(DATA_SAMPLERS._unknown_message(str(sampler_type)))
        if sampler_cfg.get('drop_last'):
            trim_fix = 'drop_last=False in dataloader.sampler'
        if (sampler_cls is DistributedSampler and not pad_shards and data_size > 1
                and not sampler_cfg.get('drop_last', False)):
            # torch's pads the shards with repeated samples, which would count twice in the test metrics
            sampler_cls = UnpaddedDistributedSampler
            sampler_cfg.pop('drop_last', None)
            if logging_rank:
                logging.getLogger('colossal_runner').info(
                    f'test dataloader sampler DistributedSampler over {data_size} data-parallel replicas: '
                    f'built as UnpaddedDistributedSampler, which reads each sample once (torch\'s repeats '
                    f'samples to even out the shards, and a repeated sample counts twice in the test '
                    f'metrics)')
        try:
            signature = list(inspect.signature(sampler_cls).parameters.values())
        except (TypeError, ValueError):
            signature = None
        params = {p.name for p in signature or ()}
        name = getattr(sampler_cls, '__name__', str(sampler_cls))
        if {'num_replicas', 'rank'} <= params:
            # This run's replicas, also with one: left to torch, a DistributedSampler would split
            # over every process, pipeline stages included, which must all read the same batches.
            sampler_cfg.setdefault('num_replicas', data_size)
            sampler_cfg.setdefault('rank', dp_rank)
        elif data_size > 1:  # replaced, the DistributedSampler no longer splits the data
            raise ValueError(f'sampler {name} takes no num_replicas and rank, so each of the '
                             f'{data_size} data-parallel replicas would train on the whole dataset. '
                             f"Use a sampler that splits it (torch's DistributedSampler or a subclass: "
                             f'it is given num_replicas={data_size} and each rank), or leave out '
                             f'dataloader.sampler.')
        for key, value in (('shuffle', shuffle), ('seed', seed)):
            if key in params:
                sampler_cfg.setdefault(key, value)
        if 'generator' in params and sampler_cfg.get('generator') is None:
            # Without one, RandomSampler draws from the global RNG, which dropout consumes differently
            # on each pipeline stage: the stages would read different batches from epoch 2 on.
            sampler_cfg['generator'] = torch.Generator().manual_seed(seed)
        if shuffle and 'shuffle' not in params:
            warnings.warn(f'dataloader shuffle=True is not passed to sampler {name}, which takes no shuffle '
                          f'argument: the order is the sampler\'s own.', UserWarning, stacklevel=2)
        # The dataset goes first to a sampler (RandomSampler's data_source, DistributedSampler's
        # dataset, a registered sampler's own name for it), not where the config gives that argument
        # or torch's samplers take something else there (WeightedRandomSampler's weights,
        # SubsetRandomSampler's indices): those come from the config.
        first = signature[0] if signature else None
        takes_dataset = signature is None or first is not None and first.name not in sampler_cfg and (
            first.name not in _NOT_A_DATASET and first.kind is not first.KEYWORD_ONLY)
        sampler = sampler_cls(dataset, **sampler_cfg) if takes_dataset else sampler_cls(**sampler_cfg)
        if not pad_shards and data_size > 1 and logging_rank:
            _warn_repeated_test_samples(dataset, sampler, name, data_size)
    elif data_size > 1 and not pad_shards and not drop_last:
        sampler = UnpaddedDistributedSampler(dataset, num_replicas=data_size, rank=dp_rank, shuffle=shuffle,
                                             seed=seed)
    elif shuffle or data_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=data_size, rank=dp_rank, shuffle=shuffle,
                                     seed=seed, drop_last=drop_last)
    else:
        sampler = None
    if logging_rank:  # the replicas' shards are alike: one warning, from the rank that logs
        _warn_fixed_samples_left_out(dataset, sampler, shuffle, batch_size, drop_last, data_size, trim_fix)
    generator = torch.Generator()  # the workers' base seeds: alike on every rank, see seed_worker
    generator.manual_seed(seed)
    num_workers = cfg.get('num_workers', 0)
    if num_workers == 0:
        cfg.pop('persistent_workers', None)
        cfg.pop('prefetch_factor', None)
    elif cfg.get('persistent_workers') and pad_shards:  # training (the test split has pad_shards=False)
        # Workers are seeded when they start: every epoch without persistent_workers (from the loader's
        # generator, which checkpoints restore), once with it, and then at the resume point with new seeds.
        warnings.warn(f'training dataloader persistent_workers=True with num_workers={num_workers}: the '
                      f'workers are seeded once, when they start, so a resumed run (which starts them anew) '
                      f'draws other random numbers in them than the uninterrupted run did; random '
                      f'augmentation in the workers then differs and the resume is not exact. For an exact '
                      f'resume, set persistent_workers=False (workers are re-seeded each epoch) or augment '
                      f'in the main process.', UserWarning, stacklevel=2)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
                      worker_init_fn=functools.partial(seed_worker, dp_rank=dp_rank), generator=generator,
                      **cfg)


def fixed_order(dataset: Any, sampler: Any, shuffle: bool = False) -> bool:
    """Whether ``sampler`` reads ``dataset`` in the same order on every pass: no sampler (or a
    SequentialSampler), or a DistributedSampler that does not shuffle. An IterableDataset's order
    is its own, and counts as not known to be fixed."""
    if shuffle or isinstance(dataset, IterableDataset):
        return False
    return sampler is None or isinstance(sampler, SequentialSampler) or (
        isinstance(sampler, DistributedSampler) and not sampler.shuffle)


def warn_fixed_samples_left_out(cause: str, left_out: int, total: int, which: str, consequence: str,
                                fix: str, stacklevel: int = 2) -> str:
    """Warn (UserWarning) that ``cause`` leaves out the same samples on every pass of an unshuffled
    order, and return the message: drop_last here, gradient_accumulation in
    :func:`colossal_runner.initialize.check_accumulation_left_out`."""
    message = (f'{cause} leaves out the same {left_out} of {total} samples on every pass ({which}; the order '
               f'is not shuffled): {consequence}. To use every sample, {fix}.')
    warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
    return message


def _warn_repeated_test_samples(dataset: Dataset, sampler: Any, name: str, data_size: int) -> None:
    """Warn when a configured sampler of the test split pads the replicas' shards as torch's
    DistributedSampler does (``total_size`` above the dataset's length): the repeated samples count
    twice in the test metrics. Other samplers say nothing of how they split the data."""
    padded = getattr(sampler, 'total_size', None)
    if not isinstance(sampler, DistributedSampler) or getattr(sampler, 'drop_last', False) \
            or not isinstance(padded, int):
        return
    try:
        total = len(dataset)
    except TypeError:
        return
    extra = padded - total
    if extra > 0:
        warnings.warn(f'test dataloader sampler {name} pads the shards of the {data_size} data-parallel '
                      f'replicas to {padded} samples: {extra} of the {total} test samples '
                      f'{"is" if extra == 1 else "are"} read twice and count twice in the test metrics, '
                      f"which then differ from a single process's. Leave out dataloader.sampler (the test "
                      f'split is then split without repeats) or use UnpaddedDistributedSampler.',
                      UserWarning, stacklevel=3)


def _warn_fixed_samples_left_out(dataset: Dataset, sampler: Any, shuffle: bool, batch_size: int,
                                 drop_last: bool, data_size: int, trim_fix: str) -> None:
    """Warn when the same samples are left out of every pass (an unshuffled order): a test loader
    then never evaluates them, and a train loader never trains on them. Two causes, each with its
    own fix: a DistributedSampler with ``drop_last=True`` cuts the data to a multiple of the
    replicas, and the loader's ``drop_last=True`` drops each replica's last, incomplete batch."""
    if not fixed_order(dataset, sampler, shuffle):
        return
    try:
        total = len(dataset)
        per_replica = len(sampler) if sampler is not None else total
    except TypeError:  # no length: nothing to count
        return
    consequence = 'a test loader never evaluates them, a train loader never trains on them'
    replicas = getattr(sampler, 'num_replicas', data_size)
    padded = getattr(sampler, 'total_size', None)
    if isinstance(sampler, DistributedSampler) and sampler.drop_last and isinstance(padded, int) \
            and total > padded:
        warn_fixed_samples_left_out(f'{type(sampler).__name__}(drop_last=True) over {replicas} data-parallel '
                                    f'replicas', total - padded, total,
                                    f'cut so that each replica gets {per_replica} samples', consequence,
                                    f'use a dataset whose size is a multiple of {replicas}, or {trim_fix}',
                                    stacklevel=3)
    if not drop_last:
        return
    if isinstance(sampler, UnpaddedDistributedSampler):  # shards differ by one sample
        shares = UnpaddedDistributedSampler.shares(total, replicas)
    else:
        shares = [per_replica] * data_size
    left_out = sum(share % batch_size for share in shares)
    if left_out <= 0:
        return
    where = f' of each of the {data_size} data-parallel replicas' if data_size > 1 else ''
    sizes = sorted(set(shares), reverse=True)
    divide = (f'divides {sizes[0]}' if len(sizes) == 1 else
              f"divides each replica's share ({' and '.join(map(str, sizes))} samples)")
    warn_fixed_samples_left_out(f'dataloader drop_last=True with batch_size={batch_size}', left_out, total,
                                f'the last, incomplete batch{where}', consequence,
                                f'choose a batch_size that {divide}, or drop_last=False where the batch '
                                f'size allows it', stacklevel=3)


def order_depends_on_global_rng(loader: Any) -> bool:
    """Whether ``loader``'s sample order is drawn from the global torch RNG: its sampler (or its batch
    sampler's sampler) has a ``generator`` attribute that is None, as torch's RandomSampler has in
    ``DataLoader(shuffle=True)`` without ``generator=``. Processes that consume the global RNG
    differently (pipeline stages running different layers, dropout) then read different orders."""
    batch_sampler = getattr(loader, 'batch_sampler', None)
    samplers = (getattr(loader, 'sampler', None), getattr(batch_sampler, 'sampler', None))
    return any(s is not None and hasattr(s, 'generator') and s.generator is None for s in samplers)


def unsplittable_batch(loader: Any, num_microbatches: Optional[int]) -> Tuple[str, str]:
    """Why not every batch of ``loader`` splits into ``num_microbatches`` equal parts, as a pipeline
    schedule splits each batch, and what setting fixes it (``batch_size`` or ``drop_last``); ``('', '')``
    when they all do, or when that cannot be known before the data is read (no batch size, no length)."""
    m, bs = num_microbatches, getattr(loader, 'batch_size', None)
    if not isinstance(m, int) or m <= 1 or not isinstance(bs, int):
        return '', ''
    if bs % m:
        return f'batch_size={bs} is not divisible by num_microbatches={m}', 'batch_size'
    sampler = getattr(loader, 'sampler', None)
    samples = len(sampler) if hasattr(sampler, '__len__') else None
    if samples is not None and not getattr(loader, 'drop_last', False) and (samples % bs) % m:
        return (f'the last batch has {samples % bs} samples ({samples} per rank, batch_size={bs}), which '
                f'num_microbatches={m} does not divide', 'drop_last')
    return '', ''
