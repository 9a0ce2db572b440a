"""LogTimingByEpochHook: how long train/test epochs and their steps take."""
from __future__ import annotations

import time
from typing import Any, Dict, Union

from ...registry import HOOKS
from ..priority import Priority
from .base_hook import BaseHook
from .log_metric_hook import log_values


@HOOKS.register_module()
class LogTimingByEpochHook(BaseHook):
    """Logs each epoch's wall-clock time and mean step time, for training and for testing.

    A train epoch is timed from ``before_train_epoch`` to its last iteration, so the test that
    ends the epoch is not counted. Times are this process's (the logging rank's). Each record
    holds ``steps``, the steps timed: fewer than the epoch has after a resume in its middle. An
    epoch in which this process ran no step (resumed at its last step) gets no record.
    """

    def __init__(self, priority: Union[int, str, Priority] = 'BELOW_NORMAL'):
        super().__init__(priority)
        self._epoch_start: Dict[str, float] = {}
        self._epoch_end: Dict[str, float] = {}
        self._step_start = 0.0
        self._step_total: Dict[str, float] = {}
        self._steps: Dict[str, int] = {}

    def _begin_epoch(self, mode: str) -> None:
        now = time.perf_counter()
        self._epoch_start[mode] = self._epoch_end[mode] = now
        self._step_total[mode] = 0.0
        self._steps[mode] = 0

    def _end_step(self, mode: str) -> None:
        now = time.perf_counter()
        self._step_total[mode] += now - self._step_start
        self._steps[mode] += 1
        self._epoch_end[mode] = now

    def _log(self, runner: Any, mode: str) -> None:
        steps = self._steps.get(mode, 0)
        if not steps:  # nothing timed: a record of 0 s would replace the epoch's real one
            return
        values = dict(epoch_time=self._epoch_end[mode] - self._epoch_start[mode],
                      step_time=self._step_total[mode] / steps, steps=steps)
        log_values(runner, mode, 'epoch_timing', values)

    def before_train_epoch(self, runner: Any) -> None:
        self._begin_epoch('train')

    def before_train_iter(self, runner: Any) -> None:
        self._step_start = time.perf_counter()

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        self._end_step('train')

    def after_train_epoch(self, runner: Any) -> None:
        self._log(runner, 'train')

    def before_test_epoch(self, runner: Any) -> None:
        self._begin_epoch('test')

    def before_test_iter(self, runner: Any) -> None:
        self._step_start = time.perf_counter()

    def after_test_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        self._end_step('test')

    def after_test_epoch(self, runner: Any) -> None:
        self._log(runner, 'test')
