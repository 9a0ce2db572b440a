"""LossHook: the mean loss per epoch (train and test) as the ``Loss`` metric."""
from __future__ import annotations

from typing import Any, Sequence, Union

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
        self._host_loss = _no_host_loss
        super().__init__(modes=modes, priority=priority)
        self._direct = type(self).update is LossHook.update  # see MetricHook and after_train_iter

    def build_metric(self) -> Metric:
        return Loss(defer_steps=self.defer_steps)

    def after_hook_is_attached(self, runner: Any) -> None:
        super().after_hook_is_attached(runner)
        # Looked up once: an engine without host_loss (a stand-in in tests) always gives tensors.
        self._host_loss = getattr(runner.engine, 'host_loss', _no_host_loss)

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if loss is not None and 'train' in self.metrics:
            if self._direct:  # update() below, written out: one Python call less per step
                value = self._host_loss(loss)
                self.metrics['train'].update(output, label, loss if value is None else value)
            else:
                self.update(self.metrics['train'], runner, output, label, loss)

    def update(self, metric: Metric, runner: Any, output: Any, label: Any, loss: Any) -> None:
        # The float the Engine read for its finite check when it has one (see Engine.host_loss),
        # so that the training loss costs no tensor operation; the tensor otherwise.
        value = self._host_loss(loss)
        metric.update(output, label, loss if value is None else value)


def _no_host_loss(loss: Any) -> None:
    return None
