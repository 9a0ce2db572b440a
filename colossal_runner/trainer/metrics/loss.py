"""Loss: the mean of the per-step losses (each already a batch mean)."""
from __future__ import annotations

import math

import torch

from ...registry import METRICS
from .base import Metric, reduce_over_data_group


@METRICS.register_module()
class Loss(Metric):
    """Mean loss over the steps of an epoch and over data-parallel replicas; lower is better."""

    name = 'Loss'

    def reset(self) -> None:
        self._sums = self.zeros(2)   # [sum of step losses, number of steps]
        self._last = self.zeros(2)   # [latest loss, 1 once a step was seen]

    def update(self, output, label, loss: torch.Tensor) -> None:
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f'Loss.update expects the loss as a tensor, got {type(loss).__name__}')
        value = loss.detach().reshape(()).to(self._sums)
        self._sums[0] += value
        self._sums[1] += 1
        self._last[0] = value
        self._last[1] = 1

    def get_last_step_value(self) -> float:
        total = reduce_over_data_group(self._last)
        return self.ratio(total[0], total[1])

    def get_accumulated_value(self) -> float:
        total = reduce_over_data_group(self._sums)
        return self.ratio(total[0], total[1])

    @staticmethod
    def is_better(a: float, b: float) -> bool:
        if math.isnan(a):
            return False
        return math.isnan(b) or a < b
