"""TensorboardHook: metric scalars to TensorBoard event files."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

from ...distributed import get_context
from ...registry import HOOKS
from ..priority import Priority
from .base_hook import BaseHook, dir_in_work_dir
from .metric_hook import read_metrics, step_was_dropped
from ...utils.checks import check_positive_int


@HOOKS.register_module()
class TensorboardHook(BaseHook):
    """Writes ``train/<Metric>`` every ``interval`` steps (step = iteration) into ``log_dir``,
    and ``train_epoch/<Metric>`` after each train epoch and ``test/<Metric>`` after each test
    (step = epoch) into ``log_dir/epoch``, with ``torch.utils.tensorboard.SummaryWriter``, on
    the logging rank. A step dropped for a NaN/Inf loss (``nonfinite_loss='skip'``) gets no
    per-step scalars.

    A resumed run (``iteration > 0`` at ``before_train``) hides what an earlier run wrote after
    the checkpoint (the abandoned continuation of a crashed or stopped run) with the writers'
    ``purge_step``: per-step scalars after the resumed iteration, per-epoch scalars after the
    last epoch whose end the checkpoint holds; the resumed run writes them again. The two kinds
    have their own directories because TensorBoard purges by step over a whole directory, and
    their steps count different things.

    Args:
        log_dir: where the event files go; ``<work_dir>/tensorboard`` when None.
        interval: steps between per-step scalars (each read forces a device sync).
    """

    def __init__(self, log_dir: Optional[str] = None, interval: int = 1,
                 priority: Union[int, str, Priority] = 'BELOW_NORMAL'):
        super().__init__(priority)
        interval = check_positive_int('interval', interval)
        self.log_dir = log_dir
        self.interval = interval
        self.writer = None        # per-step scalars, in log_dir
        self.epoch_writer = None  # per-epoch scalars, in log_dir/epoch
        self._purge = {}          # writer attribute -> purge_step for the writer opened next

    def after_hook_is_attached(self, runner: Any) -> None:
        self.log_dir = dir_in_work_dir(runner, self.log_dir, 'TensorboardHook', 'log_dir', 'tensorboard')

    def _writer(self, which: str = 'writer'):
        writer = getattr(self, which)
        if writer is None and get_context().is_logging_rank:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import
            log_dir = self.log_dir if which == 'writer' else os.path.join(self.log_dir, 'epoch')
            writer = SummaryWriter(log_dir=log_dir, purge_step=self._purge.pop(which, None))
            setattr(self, which, writer)
        return writer

    def _write(self, prefix: str, values: dict, step: int, which: str = 'writer') -> None:
        writer = self._writer(which)
        if writer is None:
            return
        for name, value in values.items():
            writer.add_scalar(f'{prefix}/{name}', value, step)

    def _flush(self) -> None:
        for writer in (self.writer, self.epoch_writer):
            if writer is not None:
                writer.flush()

    def before_train(self, runner: Any) -> None:
        iteration, epochs_done = runner.resume_point()
        if iteration == 0:
            return
        self._purge = dict(writer=iteration + 1, epoch_writer=epochs_done + 1)
        for which in ('writer', 'epoch_writer'):  # opened before (an evaluate): reopened with the purge
            writer = getattr(self, which)
            if writer is not None:
                writer.close()
                setattr(self, which, None)

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if runner.states['iteration'] % self.interval == 0 and not step_was_dropped(loss):
            values = read_metrics(runner, 'train', accumulated=False, per_step=True)
            self._write('train', values, runner.states['iteration'])

    def after_train_epoch(self, runner: Any) -> None:
        self._write('train_epoch', read_metrics(runner, 'train'), runner.states['epoch'], 'epoch_writer')
        self._flush()

    def after_test_epoch(self, runner: Any) -> None:
        self._write('test', read_metrics(runner, 'test'), runner.states['epoch'], 'epoch_writer')
        self._flush()

    def after_train(self, runner: Any) -> None:
        # Flushed, not closed: a later evaluate() keeps writing to the same event files.
        self._flush()

    after_test = after_train

    def on_exception(self, runner: Any, exc: BaseException) -> None:
        # fit failed, so after_train does not flush: close the writers, every event is then on disk
        # (an evaluate() afterwards opens new ones).
        for which in ('writer', 'epoch_writer'):
            writer = getattr(self, which)
            if writer is not None:
                writer.close()
                setattr(self, which, None)
