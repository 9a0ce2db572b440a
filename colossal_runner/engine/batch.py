"""Batches as nested structures: move them to a device, split them, feed them to a model.

A batch is ``(data, label)``; each part may be a tensor, a tuple/list or a dict, nested.
"""
from __future__ import annotations

from typing import Any, List, Tuple

import torch


def unpack_batch(batch: Any) -> Tuple[Any, Any]:
    """Split a batch into ``(data, label)``, or say clearly what was received."""
    if isinstance(batch, dict) and set(batch) >= {'data', 'label'} and len(batch) == 2:
        return batch['data'], batch['label']
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    desc = type(batch).__name__
    if isinstance(batch, (tuple, list)):
        desc += f' of length {len(batch)}'
    elif isinstance(batch, dict):
        desc += f' with the keys {sorted(map(str, batch))}'
    raise TypeError(f'a batch must be (data, label): a tuple or list of two items, or '
                    f"dict(data=..., label=...); received a {desc}. Make the dataset's "
                    f'__getitem__ return (input, target), or wrap it so that it does, or give the '
                    f'DataLoader a collate_fn (dataloader.collate_fn in a config) that turns a list '
                    f'of samples into (data, label) or dict(data=..., label=...).')


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor inside ``obj`` (tensors, tuples, lists, dicts, nested) to ``device``."""
    if isinstance(obj, torch.Tensor):
        # One already there is returned as it is, without the cost of .to() parsing its
        # arguments and dispatching only to return it unchanged (this runs every step).
        return obj if obj.device == device else obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device, non_blocking)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, '_fields'):  # namedtuple
        return type(obj)(*(to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj


def call_model(model: torch.nn.Module, data: Any) -> Any:
    """``model(x)`` for a tensor, ``model(*x)`` for a tuple/list, ``model(**x)`` for a dict."""
    if isinstance(data, dict):
        return model(**data)
    if isinstance(data, (tuple, list)):
        return model(*data)
    return model(data)


def batch_size_of(obj: Any) -> int:
    """Length along dim 0 of the first tensor found in ``obj``."""
    if isinstance(obj, torch.Tensor):
        return obj.shape[0] if obj.dim() > 0 else 1
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            try:
                return batch_size_of(item)
            except TypeError:
                continue
    raise TypeError(f'no tensor found in a batch of type {type(obj).__name__}')


def split_batch(obj: Any, num_chunks: int) -> List[Any]:
    """Split every tensor in ``obj`` into ``num_chunks`` equal parts along dim 0.

    Returns a list of ``num_chunks`` structures shaped like ``obj``. Non-tensor leaves are
    repeated in each part.
    """
    if num_chunks < 1:
        raise ValueError(f'num_chunks must be >= 1, got {num_chunks}')
    if isinstance(obj, torch.Tensor):
        if obj.dim() == 0:
            raise ValueError(f'cannot split a scalar into {num_chunks} microbatches: every tensor of a '
                             f'batch needs the batch dimension first (dim 0)')
        if obj.shape[0] % num_chunks:
            m = num_chunks
            raise ValueError(f'cannot split a batch of size {obj.shape[0]} into {m} equal microbatches '
                             f'(num_microbatches={m}): every batch must be a multiple of {m}. If the '
                             f"DataLoader's batch_size already is, this is the smaller last batch of an "
                             f'epoch: set drop_last=True on the DataLoader. Otherwise use a batch_size that '
                             f'{m} divides (and drop_last=True if the last batch still does not split)')
        return list(obj.chunk(num_chunks, dim=0))
    if isinstance(obj, dict):
        parts = {k: split_batch(v, num_chunks) for k, v in obj.items()}
        return [type(obj)((k, parts[k][i]) for k in obj) for i in range(num_chunks)]
    if isinstance(obj, (list, tuple)):
        parts = [split_batch(v, num_chunks) for v in obj]
        build = (lambda items: type(obj)(*items)) if hasattr(obj, '_fields') else type(obj)
        return [build([p[i] for p in parts]) for i in range(num_chunks)]
    return [obj] * num_chunks


def concat_batches(parts: List[Any]) -> Any:
    """Join structures produced by :func:`split_batch` (or per-micro-step outputs) along dim 0.

    Tensors are concatenated; containers are joined element-wise; other leaves keep the
    last value. A single part is returned as it is.
    """
    if not parts:
        raise ValueError('concat_batches needs at least one part')
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, torch.Tensor):
        if first.dim() == 0:
            return torch.stack(parts)
        return torch.cat(parts, dim=0)
    if isinstance(first, dict):
        return type(first)((k, concat_batches([p[k] for p in parts])) for k in first)
    if isinstance(first, (list, tuple)):
        items = [concat_batches([p[i] for p in parts]) for i in range(len(first))]
        return type(first)(*items) if hasattr(first, '_fields') else type(first)(items)
    return parts[-1]
