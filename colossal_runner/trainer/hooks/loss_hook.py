"""LossHook: the mean loss per epoch (train and test) as the ``Loss`` metric."""
from __future__ import annotations

from typing import Sequence, Union

from ...registry import HOOKS
from ..metrics import Loss
from ..priority import Priority
from .metric_hook import MODES, MetricHook


@HOOKS.register_module()
class LossHook(MetricHook):
    """Adds the ``Loss`` metric for each mode in ``modes``."""

    def __init__(self, modes: Sequence[str] = MODES, priority: Union[int, str, Priority] = 'VERY_HIGH'):
        super().__init__(metric=Loss, modes=modes, priority=priority)
