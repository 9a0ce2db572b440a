"""A Metric subclass may set what its reset() reads after super().__init__(): reset() runs once the
whole __init__ is done, for a metric built by MetricHook and for one used on its own."""
import abc

import pytest
import torch

from colossal_runner.registry import METRICS
from colossal_runner.trainer.hooks import MetricHook
from colossal_runner.trainer.metrics import Accuracy, Loss, Metric


class PerClassHits(Metric):
    def __init__(self, num_classes=2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes  # after super().__init__(): reset() reads it

    def reset(self):
        self.resets = getattr(self, 'resets', 0) + 1
        self._hits = self.zeros(self.num_classes)
        self._seen = self.zeros(self.num_classes)

    def update(self, output, label, loss=None):
        pred = output.argmax(-1)
        self._seen += torch.bincount(label, minlength=self.num_classes).to(self._seen)
        self._hits += torch.bincount(label[pred == label], minlength=self.num_classes).to(self._hits)

    def get_accumulated_value(self):
        return self.ratio(self._hits.sum(), self._seen.sum())

    get_last_step_value = get_accumulated_value


def test_a_standalone_metric_with_arguments_set_after_super_init_updates():
    metric = PerClassHits(num_classes=3, epoch_only=True)
    assert metric.epoch_only and metric.resets == 1  # reset once, after the subclass's __init__
    metric.update(torch.tensor([[3., 0, 0], [0, 3, 0], [0, 3, 0]]), torch.tensor([0, 1, 2]))
    assert metric._seen.tolist() == [1, 1, 1] and metric._hits.tolist() == [1, 1, 0]
    assert metric.get_accumulated_value() == pytest.approx(2 / 3)


def test_metric_hook_builds_it_from_a_config():
    METRICS.register_module(module=PerClassHits)
    try:
        hook = MetricHook(metric=dict(type='PerClassHits', num_classes=3))
        assert hook.build_metric()._hits.shape == (3,)
    finally:
        METRICS.module_dict.pop('PerClassHits')


def test_the_built_in_metrics_are_ready_to_update_on_their_own():
    accuracy, loss = Accuracy(defer_steps=1), Loss(defer_steps=1)
    accuracy.update(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    loss.update(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]), torch.tensor(0.5))
    assert accuracy.get_accumulated_value() == pytest.approx(0.5)
    assert loss.get_accumulated_value() == pytest.approx(0.5)


def test_a_metric_may_also_derive_from_abc():
    class Named(Metric, abc.ABC):  # no metaclass conflict
        def __init__(self):
            super().__init__()
            self.scale = 2.0

        def reset(self):
            self.total = self.scale * 0

    assert Named().total == 0
