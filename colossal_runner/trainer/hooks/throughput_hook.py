"""ThroughputHook: samples per second as the ``Throughput`` metric (train and test)."""
from __future__ import annotations

import time
from typing import Any, Sequence, Union

from ...engine.batch import batch_size_of
from ...registry import HOOKS
from ..metrics import Metric, Throughput
from ..priority import Priority
from .metric_hook import MODES, MetricHook


@HOOKS.register_module()
class ThroughputHook(MetricHook):
    """Times each iteration (wall clock, from ``before_*_iter`` to ``after_*_iter``) and counts
    the samples of its labels; ``Throughput`` is samples per second over all replicas.

    On a GPU the clock reads before queued kernels finish, so single steps are approximate;
    epoch values are accurate because each step waits for the previous one's results.
    """

    def __init__(self, modes: Sequence[str] = MODES, priority: Union[int, str, Priority] = 'VERY_HIGH'):
        super().__init__(modes=modes, priority=priority)
        self._start = None

    def build_metric(self) -> Metric:
        return Throughput()

    def update(self, metric: Metric, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if self._start is None or label is None:
            return
        metric.update(batch_size_of(label), time.perf_counter() - self._start)

    def before_train_iter(self, runner: Any) -> None:
        self._start = time.perf_counter()

    def before_test_iter(self, runner: Any) -> None:
        self._start = time.perf_counter()
