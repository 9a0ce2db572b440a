"""LearningRate: the optimizer's learning rate (param group 0), the same on every replica."""
from __future__ import annotations

from ...registry import METRICS
from .base import Metric


@METRICS.register_module()
class LearningRate(Metric):
    """The latest learning rate; fed by LRSchedulerHook with ``update(lr)``. Not reduced: every
    replica has the same value, so reading it is not collective."""

    name = 'LearningRate'

    def reset(self) -> None:
        # Kept across resets: the LR does not restart with an epoch.
        if not hasattr(self, '_lr'):
            self._lr = float('nan')

    def update(self, lr: float) -> None:
        self._lr = float(lr)

    def get_last_step_value(self) -> float:
        return self._lr

    def get_accumulated_value(self) -> float:
        return self._lr
