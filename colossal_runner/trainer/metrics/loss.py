"""Loss: the mean of the per-step losses (each already a batch mean)."""
from __future__ import annotations

import math
from typing import Optional

import torch

from ...registry import METRICS
from .base import Metric, reduce_over_data_group


@METRICS.register_module()
class Loss(Metric):
    """Mean loss over the steps of an epoch and over data-parallel replicas; lower is better."""

    name = 'Loss'

    def reset(self) -> None:
        # The running sum stays on the device (no sync per step); the step count is a host int.
        self._sum = self.zeros(0).new_zeros(())
        self._count = 0
        self._last: Optional[torch.Tensor] = None

    def update(self, output, label, loss: torch.Tensor) -> None:
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f'Loss.update expects the loss as a tensor, got {type(loss).__name__}')
        value = loss.detach() if loss.requires_grad else loss  # the Engine's loss is already detached
        if value.dim():
            value = value.reshape(())
        self._sum += value
        self._count += 1
        self._last = value

    def _value(self, total: torch.Tensor, count: int) -> float:
        pair = torch.stack([total.to(self._sum.dtype), self._sum.new_tensor(float(count))])
        pair = reduce_over_data_group(pair)
        return self.ratio(pair[0], pair[1])

    def get_last_step_value(self) -> float:
        if self._last is None:
            return self._value(self._sum, 0)
        return self._value(self._last, 1)

    def get_accumulated_value(self) -> float:
        return self._value(self._sum, self._count)

    @staticmethod
    def is_better(a: float, b: float) -> bool:
        if math.isnan(a):
            return False
        return math.isnan(b) or a < b
