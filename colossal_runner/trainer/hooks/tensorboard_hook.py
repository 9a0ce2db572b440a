"""TensorboardHook: metric scalars to TensorBoard event files."""
from __future__ import annotations

from typing import Any, Optional, Union

from ...distributed import get_context
from ...registry import HOOKS
from ..priority import Priority
from .base_hook import BaseHook, dir_in_work_dir
from .metric_hook import read_metrics
from ...utils.checks import check_positive_int


@HOOKS.register_module()
class TensorboardHook(BaseHook):
    """Writes ``train/<Metric>`` every ``interval`` steps (step = iteration),
    ``train_epoch/<Metric>`` after each train epoch and ``test/<Metric>`` after each test
    (step = epoch), with ``torch.utils.tensorboard.SummaryWriter``, on the logging rank.

    Args:
        log_dir: where the event files go; ``<work_dir>/tensorboard`` when None.
        interval: steps between per-step scalars (each read forces a device sync).
    """

    def __init__(self, log_dir: Optional[str] = None, interval: int = 1,
                 priority: Union[int, str, Priority] = 'BELOW_NORMAL'):
        super().__init__(priority)
        check_positive_int('interval', interval)
        self.log_dir = log_dir
        self.interval = interval
        self.writer = None

    def after_hook_is_attached(self, runner: Any) -> None:
        self.log_dir = dir_in_work_dir(runner, self.log_dir, 'TensorboardHook', 'log_dir', 'tensorboard')

    def _writer(self):
        if self.writer is None and get_context().is_logging_rank:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import
            self.writer = SummaryWriter(log_dir=self.log_dir)
        return self.writer

    def _write(self, prefix: str, values: dict, step: int) -> None:
        writer = self._writer()
        if writer is None:
            return
        for name, value in values.items():
            writer.add_scalar(f'{prefix}/{name}', value, step)

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if runner.states['iteration'] % self.interval == 0:
            values = read_metrics(runner, 'train', accumulated=False, per_step=True)
            self._write('train', values, runner.states['iteration'])

    def after_train_epoch(self, runner: Any) -> None:
        self._write('train_epoch', read_metrics(runner, 'train'), runner.states['epoch'])
        if self.writer is not None:
            self.writer.flush()

    def after_test_epoch(self, runner: Any) -> None:
        self._write('test', read_metrics(runner, 'test'), runner.states['epoch'])
        if self.writer is not None:
            self.writer.flush()

    def after_train(self, runner: Any) -> None:
        # Flushed, not closed: a later evaluate() keeps writing to the same event file.
        if self.writer is not None:
            self.writer.flush()

    after_test = after_train
