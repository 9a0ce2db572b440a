"""Metric: a value accumulated over an epoch on the model's device, reduced over data-parallel
replicas only when someone reads it."""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch
import torch.distributed as dist

from ...distributed import get_context


def reduce_over_data_group(values: torch.Tensor, op: str = 'sum') -> torch.Tensor:
    """Sum (or average with ``op='mean'``) ``values`` over the data-parallel group.

    Collective: every rank of the group must call it, in the same order. A no-op without a
    process group or with a single replica.
    """
    context = get_context()
    if context.data_group is None or context.data_size <= 1 or not dist.is_initialized():
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM, group=context.data_group)
    if op == 'mean':
        values = values / context.data_size
    return values


def _accum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == 'mps' else torch.float64


class Metric:
    """Base class of metrics: ``reset()``, ``update(...)``, ``get_last_step_value()``,
    ``get_accumulated_value()``, ``is_better(a, b)``.

    State lives in tensors on ``device`` so that ``update`` never waits for the device; the
    getters return Python floats and therefore synchronize, and they reduce over the
    data-parallel group, so every rank of that group must call them together (hooks read on
    every rank and only the logging rank writes). A value with nothing accumulated is NaN.

    Args:
        epoch_only: the value is only meaningful over a whole epoch; per-step loggers skip it.
        device: where the state lives; MetricHook moves it to the engine's device.
    """

    #: the key in ``runner.states['metrics'][mode]``; the class name by default.
    name: Optional[str] = None

    def __init__(self, epoch_only: bool = False, device: Union[str, torch.device, None] = None):
        self.epoch_only = epoch_only
        self.device = torch.device(device if device is not None else 'cpu')
        self.reset()

    def to(self, device: Union[str, torch.device]) -> 'Metric':
        """Move the state to ``device`` (resets it: call before accumulating)."""
        self.device = torch.device(device)
        self.reset()
        return self

    def zeros(self, n: int) -> torch.Tensor:
        """``n`` zero accumulators on this metric's device."""
        return torch.zeros(n, dtype=_accum_dtype(self.device), device=self.device)

    def reset(self) -> None:
        """Forget everything accumulated (called before each epoch)."""
        raise NotImplementedError

    def update(self, *args: Any) -> None:
        """Accumulate one step; MetricHook passes ``(output, label, loss)`` by default."""
        raise NotImplementedError

    def get_last_step_value(self) -> float:
        """The value of the latest step, reduced over the data-parallel group."""
        raise NotImplementedError

    def get_accumulated_value(self) -> float:
        """The value over every step since the last reset, reduced over the data-parallel group."""
        raise NotImplementedError

    @staticmethod
    def is_better(a: float, b: float) -> bool:
        """Whether value ``a`` is better than ``b`` (higher is better by default); NaN never is."""
        if math.isnan(a):
            return False
        return math.isnan(b) or a > b

    @staticmethod
    def ratio(num: torch.Tensor, den: torch.Tensor) -> float:
        """``num / den`` as a float, NaN when ``den`` is zero."""
        den_value = float(den)
        return float(num) / den_value if den_value else float('nan')

    def __repr__(self) -> str:
        return f'{type(self).__name__}(epoch_only={self.epoch_only}, device={self.device})'
