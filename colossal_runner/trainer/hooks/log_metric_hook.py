"""LogMetricByEpochHook / LogMetricByStepHook: metric values to the log and the JSON-lines file."""
from __future__ import annotations

from typing import Any, Dict, Union

from ...distributed import get_context
from ...registry import HOOKS
from ..priority import Priority
from .base_hook import BaseHook
from .metric_hook import read_metrics, step_was_dropped
from ...utils.checks import check_positive_int


def _check_interval(interval: int) -> int:
    return check_positive_int('interval', interval)


def format_values(values: Dict[str, float]) -> str:
    return ', '.join(f'{name}={value:.6g}' for name, value in values.items()) or '(no metrics)'


def log_values(runner: Any, mode: str, by: str, values: Dict[str, float]) -> None:
    """Log ``values`` and append them as one JSON-lines record, on the logging rank only."""
    if not get_context().is_logging_rank:
        return
    states = runner.states
    where = f"Epoch {states['epoch']}/{states['max_epochs'] or '?'}"
    what = mode  # in the log line, 'train epoch_timing'; in the record, mode and by apart
    if by == 'step':
        where += f" step {states['iteration']}"
    elif by != 'epoch':
        what = f'{mode} {by}'
    runner.logger.info(f'{where} {what}: {format_values(values)}')
    runner.write_record(dict(mode=mode, by=by, epoch=states['epoch'], iteration=states['iteration'],
                             **values))


@HOOKS.register_module()
class LogMetricByEpochHook(BaseHook):
    """Logs every metric's epoch value after every ``interval``-th train epoch and after each test.

    Runs after the metric writers (BELOW_NORMAL), so the values are the current epoch's. The test
    pass of a fit's epoch end is recorded with ``by='epoch'``, a standalone ``evaluate()`` (after
    ``fit``, or without one) with ``by='evaluate'``, so that the two are told apart.
    """

    def __init__(self, interval: int = 1, priority: Union[int, str, Priority] = 'BELOW_NORMAL'):
        super().__init__(priority)
        self.interval = _check_interval(interval)

    def after_train_epoch(self, runner: Any) -> None:
        if runner.states['epoch'] % self.interval == 0:
            log_values(runner, 'train', 'epoch', read_metrics(runner, 'train'))

    def after_test_epoch(self, runner: Any) -> None:
        by = 'epoch' if getattr(runner, 'testing_in_fit', True) else 'evaluate'
        log_values(runner, 'test', by, read_metrics(runner, 'test'))


@HOOKS.register_module()
class LogMetricByStepHook(BaseHook):
    """Logs the latest step's value of every per-step train metric every ``interval`` iterations.

    Reading forces a device sync, which is why ``interval`` exists. A step dropped for a NaN/Inf
    loss (``nonfinite_loss='skip'``) gets no record: it has no values of its own.
    """

    def __init__(self, interval: int = 10, priority: Union[int, str, Priority] = 'BELOW_NORMAL'):
        super().__init__(priority)
        self.interval = _check_interval(interval)

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if runner.states['iteration'] % self.interval == 0 and not step_was_dropped(loss):
            log_values(runner, 'train', 'step',
                       read_metrics(runner, 'train', accumulated=False, per_step=True))
