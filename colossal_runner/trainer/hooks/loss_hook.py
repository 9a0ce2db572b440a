"""LossHook: the mean loss per epoch (train and test) as the ``Loss`` metric."""
from __future__ import annotations

from typing import Sequence, Union

from ...registry import HOOKS
from ..metrics import Loss, Metric
from ..priority import Priority
from .metric_hook import MODES, MetricHook


@HOOKS.register_module()
class LossHook(MetricHook):
    """Adds the ``Loss`` metric for each mode in ``modes``.

    Args:
        defer_steps: steps added up together (see :class:`Loss`); 1 adds each step at once.
    """

    def __init__(self, modes: Sequence[str] = MODES, priority: Union[int, str, Priority] = 'VERY_HIGH',
                 defer_steps: int = 16):
        self.defer_steps = defer_steps
        super().__init__(modes=modes, priority=priority)

    def build_metric(self) -> Metric:
        return Loss(defer_steps=self.defer_steps)
