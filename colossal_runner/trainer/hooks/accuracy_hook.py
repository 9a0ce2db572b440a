"""AccuracyHook: top-k accuracy per epoch (train and test)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from ...registry import HOOKS
from ..metrics import Accuracy, Metric
from ..priority import Priority
from .metric_hook import MODES, MetricHook


@HOOKS.register_module()
class AccuracyHook(MetricHook):
    """Adds ``Accuracy`` (``Top{k}Accuracy`` for ``topk > 1``) for each mode in ``modes``.

    Args:
        topk: a sample is correct when its label is among the ``topk`` highest scores.
        name: the metric's key; use it to run several AccuracyHooks side by side.
        defer_steps: steps counted together (see :class:`Accuracy`); 1 counts each step at once.
    """

    def __init__(self, topk: int = 1, name: Optional[str] = None, modes: Sequence[str] = MODES,
                 priority: Union[int, str, Priority] = 'VERY_HIGH', defer_steps: int = 16):
        self.topk = topk
        self.defer_steps = defer_steps
        super().__init__(name=name or ('Accuracy' if topk == 1 else f'Top{topk}Accuracy'),
                         modes=modes, priority=priority)

    def build_metric(self) -> Metric:
        return Accuracy(topk=self.topk, defer_steps=self.defer_steps)
