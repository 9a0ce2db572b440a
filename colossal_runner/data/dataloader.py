"""Datasets and dataloaders from config dicts, seeded and ready for data parallelism."""
from __future__ import annotations

import inspect
import random
import warnings
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from ..registry import DATA_SAMPLERS, DATASETS, TRANSFORMS
from ..utils.checks import check_positive_int

# DataLoader keywords a config may set directly; anything else is a typo worth reporting.
_LOADER_KEYS = ('batch_size', 'shuffle', 'num_workers', 'drop_last', 'pin_memory', 'persistent_workers',
                'prefetch_factor', 'timeout', 'sampler', 'collate_fn')


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


def build_dataset(cfg: Mapping, default_args: Optional[Mapping] = None) -> Dataset:
    """``DATASETS.build`` plus transforms given as configs (torchvision datasets take objects)."""
    cfg = dict(cfg)
    for key in ('transform', 'target_transform'):
        if key in cfg and cfg[key] is not None:
            cfg[key] = _build_transform(cfg[key])
    return DATASETS.build(cfg, default_args=default_args)


def seed_worker(worker_id: int) -> None:
    """Seed Python and numpy in a DataLoader worker from the seed torch gave the worker."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(cfg_dataloader: Optional[Mapping], dataset: Dataset, context=None, seed: int = 0,
                     shuffle: Optional[bool] = None) -> DataLoader:
    """A DataLoader for ``dataset`` from DataLoader keywords in ``cfg_dataloader``.

    ``shuffle`` overrides the config's ``shuffle`` (default False). When shuffling, or when
    ``context.data_size > 1``, the sampler is torch's ``DistributedSampler`` (with one replica in
    the single-process case): its order depends only on ``(seed, epoch)`` through
    ``set_epoch``, which the Trainer calls, so a resumed run sees the same batches as an
    uninterrupted one, and data-parallel replicas (``rank = context.dp_rank``) see disjoint
    parts. ``sampler=dict(type=...)`` (DATA_SAMPLERS, given the dataset first) replaces it.
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
    config_shuffle = bool(cfg.pop('shuffle', False))
    shuffle = config_shuffle if shuffle is None else bool(shuffle)
    batch_size = cfg.pop('batch_size', 1)
    check_positive_int('dataloader batch_size', batch_size)
    drop_last = bool(cfg.pop('drop_last', False))
    sampler_cfg = cfg.pop('sampler', None)
    data_size = getattr(context, 'data_size', 1) if context is not None else 1
    dp_rank = getattr(context, 'dp_rank', 0) if context is not None else 0
    if isinstance(dataset, IterableDataset) and (shuffle or data_size > 1 or sampler_cfg is not None):
        what = ('a sampler' if sampler_cfg is not None else 'shuffle=True' if shuffle
                else f'{data_size} data-parallel replicas')
        raise ValueError(f'{type(dataset).__name__} is an IterableDataset: it has no indices for {what} to '
                         f'order or split. Shuffle inside the dataset (a shuffle buffer), and with several '
                         f'replicas let each rank read its own part; or use a map-style Dataset.')
    if sampler_cfg is not None:
        sampler_cfg = dict(sampler_cfg)
        sampler_type = sampler_cfg.pop('type', None)
        sampler_cls = DATA_SAMPLERS.get(sampler_type) if isinstance(sampler_type, str) else sampler_type
        if sampler_cls is None:
            raise KeyError(DATA_SAMPLERS._unknown_message(str(sampler_type)))
        try:
            params = set(inspect.signature(sampler_cls).parameters)
        except (TypeError, ValueError):
            params = set()
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
        if shuffle and 'shuffle' not in params:
            warnings.warn(f'dataloader shuffle=True is not passed to sampler {name}, which takes no shuffle '
                          f'argument: the order is the sampler\'s own.', UserWarning, stacklevel=2)
        sampler = sampler_cls(dataset, **sampler_cfg)
    elif shuffle or data_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=data_size, rank=dp_rank, shuffle=shuffle,
                                     seed=seed, drop_last=drop_last)
    else:
        sampler = None
    generator = torch.Generator()
    generator.manual_seed(seed)
    num_workers = cfg.get('num_workers', 0)
    if num_workers == 0:
        cfg.pop('persistent_workers', None)
        cfg.pop('prefetch_factor', None)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
                      worker_init_fn=seed_worker, generator=generator, **cfg)
