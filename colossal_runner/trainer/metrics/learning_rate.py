"""LearningRate: the optimizer's learning rate (param group 0), the same on every replica."""
from __future__ import annotations

from typing import Any, Callable, Optional

from ...registry import METRICS
from .base import Metric


@METRICS.register_module()
class LearningRate(Metric):
    """The latest learning rate: the value given to ``update(lr)``, or, after
    ``follow(read)``, whatever ``read()`` returns when the metric is read (LRSchedulerHook
    follows ``engine.step_lr``, so nothing runs per step). NaN before the first value. Not
    reduced: every replica has the same value, so reading it is not collective."""

    name = 'LearningRate'

    def reset(self) -> None:
        # Kept across resets: the LR does not restart with an epoch.
        if not hasattr(self, '_lr'):
            self._lr = float('nan')
            self._read: Optional[Callable[[], Any]] = None

    def update(self, lr: float) -> None:
        self._lr = float(lr)
        self._read = None

    def follow(self, read: Callable[[], Any]) -> None:
        """Take the value from ``read()`` (a number, or None for none yet) whenever it is read."""
        self._read = read

    def get_last_step_value(self) -> float:
        if self._read is None:
            return self._lr
        lr = self._read()
        return float('nan') if lr is None else float(lr)

    def get_accumulated_value(self) -> float:
        return self.get_last_step_value()
