"""LRSchedulerHook: records the learning rate, and optionally steps the scheduler per epoch."""
from __future__ import annotations

from typing import Any, Dict, Union

from ...engine.engine import kind_name, load_scheduler_state, step_scheduler
from ...registry import HOOKS
from ..metrics import LearningRate, Metric
from ..priority import Priority
from .base_hook import BaseHook
from .metric_hook import MetricHook


@HOOKS.register_module()
class LRSchedulerHook(MetricHook):
    """Keeps the ``LearningRate`` train metric (the rate each step used), and with
    ``by_epoch=True`` steps the LR scheduler per epoch.

    The Engine steps its ``lr_scheduler`` after every optimizer step. For a scheduler whose
    unit is the epoch (``StepLR(step_size=30)`` meaning epochs), ``by_epoch=True`` takes the
    scheduler over from the engine and steps it after each training epoch instead; its state
    is then saved in checkpoints as this hook's state. The end of an epoch that ``max_steps``
    stopped in its middle (``runner.epoch_cut_short``) is not a step: nothing trains after it in
    that run, and a run that goes on from there (a later fit, a resume) trains the rest of the
    epoch at its rate and steps at its real end, as an uninterrupted run does. The step is kept
    pending (also in checkpoints): a run that goes on with the next epoch instead (a resume with
    a loader without a length, which cannot go on in the middle of an epoch) takes it first.

    Args:
        by_epoch: step the engine's scheduler once per epoch rather than once per step.
        store_lr_in_state: add the ``LearningRate`` metric to ``runner.states['metrics']['train']``.
        priority: runs after metric writers' updates but before loggers and checkpoints, so a
            checkpoint holds the scheduler state after this epoch's step.
    """

    def __init__(self, by_epoch: bool = False, store_lr_in_state: bool = True,
                 priority: Union[int, str, Priority] = 'HIGH'):
        self.by_epoch = by_epoch
        self.store_lr_in_state = store_lr_in_state
        self.lr_scheduler = None
        self._pending_epoch: Any = None  # the epoch whose step a max_steps end held back
        super().__init__(modes=('train',), priority=priority)

    def build_metric(self) -> Metric:
        return LearningRate()

    def after_hook_is_attached(self, runner: Any) -> None:
        if self.store_lr_in_state:
            super().after_hook_is_attached(runner)
            # Read when someone reads the metric: the engine keeps the rate each step used
            # (before it steps the scheduler), so this hook does nothing per iteration.
            engine = runner.engine
            self.metrics['train'].follow(lambda: engine.step_lr)
        if self.by_epoch:
            engine = runner.engine
            scheduler = engine.lr_scheduler
            if scheduler is None:
                # An earlier Trainer on this engine (perhaps one whose construction failed at a later
                # hook) had such a hook take it over already: this one takes it from there.
                scheduler = engine.epoch_lr_scheduler
            if scheduler is None:
                raise ValueError('LRSchedulerHook(by_epoch=True) needs a scheduler to step, but the engine '
                                 'has lr_scheduler=None; pass lr_scheduler=... to the Engine.')
            # Take it over so that the engine does not also step it every iteration.
            self.lr_scheduler, engine.lr_scheduler = scheduler, None
            # the engine still records its type in checkpoints, and warns when a resume changes it
            engine.epoch_lr_scheduler = scheduler

    def before_train_epoch(self, runner: Any) -> None:
        # (the learning rate is not an epoch average: nothing to reset)
        if self._pending_epoch is not None and runner.states['epoch'] > self._pending_epoch:
            self._pending_epoch = None  # the held-back epoch was not gone on with: its step is due
            if self.lr_scheduler is not None:
                self._step()

    # The metric follows engine.step_lr (see after_hook_is_attached), which is known on every
    # pipeline stage, loss or not; nothing to do after the step: BaseHook's no-op, which the
    # Trainer does not even call (MetricHook's would feed the metric).
    after_train_iter = BaseHook.after_train_iter

    def after_train_epoch(self, runner: Any) -> None:
        # Not at the end of an epoch that max_steps stopped in its middle: a fit that trains further
        # goes on with that epoch's steps, at its rate, and steps at the epoch's real end.
        if self.lr_scheduler is None:
            return
        if getattr(runner, 'epoch_cut_short', False):
            self._pending_epoch = runner.states['epoch']
        else:
            self._pending_epoch = None
            self._step()

    def _step(self) -> None:
        # (a resumed process can owe a step before its optimizer has stepped: the held-back step, the
        # end of the checkpoint's epoch)
        step_scheduler(self.lr_scheduler)

    def state_dict(self) -> Dict[str, Any]:
        if self.lr_scheduler is None:
            return {}
        state = {'lr_scheduler': self.lr_scheduler.state_dict(),
                 'lr_scheduler_type': kind_name(self.lr_scheduler)}
        if self._pending_epoch is not None:
            state['pending_epoch'] = int(self._pending_epoch)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._pending_epoch = state.get('pending_epoch')
        if self.lr_scheduler is None or 'lr_scheduler' not in state:
            return
        mine = kind_name(self.lr_scheduler)
        if state.get('lr_scheduler_type', mine) != mine:
            return  # another class's state does not fit: it starts from its first step (the engine warned)
        # the progress from the checkpoint, the settings (the run's length) from the config
        load_scheduler_state(self.lr_scheduler, state['lr_scheduler'])
