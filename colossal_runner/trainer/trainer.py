"""Trainer: runs epochs of ``engine.step`` and calls hooks at the twelve lifecycle points."""
from __future__ import annotations

import contextlib
import datetime
import inspect
import itertools
import logging
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoint import FORMAT, get_rng_state, resume, set_rng_state
from ..data import order_depends_on_global_rng, unsplittable_batch, vocabulary_text
from ..distributed import get_context
from ..engine.batch import call_model, to_device
from ..engine.engine import NonFiniteLossError
from ..registry import HOOKS
from ..utils.checks import check_positive_int
from ..utils.logging import MetricWriter, get_logger, log_to_file, run_log_path
from .data_position import DataPosition, set_sampler_epoch
from .hooks.base_hook import BaseHook, check_hook_methods, note_hook_failure
from .hooks.metric_hook import read_metrics
from .metric_records import drop_records_after, set_aside
from .priority import get_priority
from .states import RESUMABLE_KEYS, new_states


class Trainer:
    """The runner: ``fit`` trains for epochs, ``evaluate`` tests, ``predict`` runs the model.

    Args:
        engine: the :class:`~colossal_runner.engine.Engine` doing each optimizer step.
        hooks: BaseHook objects or config dicts (``dict(type='LossHook', priority='HIGH')``).
        work_dir: where ``<timestamp>.log`` and ``metrics.jsonl`` go (and hooks' default
            directories); nothing is written when None.
        logger: a ``logging.Logger``; ``colossal_runner``'s, with a file handler in ``work_dir``,
            when None.
        config: the run's Config (or its text), stored in checkpoints.
        vocabulary: what the model's token ids mean, id ``i`` being ``vocabulary[i]`` (a
            character dataset's ``chars``; ``initialize`` gives the training dataset's). Stored in
            checkpoints; loading one whose vocabulary gives some id another meaning is an error.

    ``runner.states`` is documented in :mod:`colossal_runner.trainer.states`.
    """

    def __init__(self, engine: Any, hooks: Optional[Iterable[Union[BaseHook, Mapping]]] = None,
                 work_dir: Optional[str] = None, logger: Any = None, config: Any = None,
                 vocabulary: Optional[Sequence[str]] = None):
        self.engine = engine
        self.work_dir = work_dir
        self.config = config
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self.states: Dict[str, Any] = new_states()
        self.hooks: List[BaseHook] = []
        self._dispatch: Dict[str, List[Callable]] = {}  # stage -> bound methods overriding it, in order
        self.data_position = DataPosition()  # where in the epoch's data order training is
        # How far this Trainer's fits got in states['epoch']: 'start' (in before_train_epoch), 'steps',
        # 'end' (its test, after_train_epoch) or 'done'; None when memory cannot say (a fresh Trainer,
        # a checkpoint loaded since): then the states and the checkpoint's data entry do. A fit that
        # raised leaves it where it was, for the next fit to go on from there.
        self._epoch_phase: Optional[str] = None
        self._epoch_first_iteration = 0  # states['iteration'] before the epoch's first step
        self._end_rng: Any = None  # the RNG state as the epoch's end began, for a fit that raised there
        self._end_hooks_done: List[BaseHook] = []  # hooks whose after_train_epoch returned, this epoch
        self._end_tested: Any = None  # the RNG state after the epoch's end's test pass, once it finished
        # True in (and after) the end of an epoch that max_steps stopped before its last step: hooks that
        # act once per epoch (LRSchedulerHook(by_epoch=True)) leave such an end out, and a later fit
        # that trains further goes on with that epoch's steps (see fit and resume_point).
        self.epoch_cut_short = False
        # True during the test pass fit runs at an epoch's end, False in a standalone evaluate(): log
        # hooks tell the two apart in metrics.jsonl ('by': 'epoch' / 'evaluate')
        self.testing_in_fit = False
        self._postfix_time = float('-inf')  # when the progress bar last read the loss (see _show)
        self._check_metric_file = False  # metrics.jsonl is still to be made ready for this fit
        self._wrote_records = False  # this Trainer has added to metrics.jsonl (it is not only an old run's)
        self._max_steps_from_epochs = False  # fit got no max_steps: states['max_steps'] is the epochs' end
        self._noted_resize: Any = None  # the checkpoint data entry whose other epoch length was logged
        # the iteration a full load_state_dict (a resume) restored; LoadCheckpointHook leaves the
        # state alone while the run is still there (not once it has trained on from it)
        self.resumed_at: Optional[int] = None
        # the file it was read from (a loaded checkpoint's meta['path']; None when not known): the
        # SaveCheckpointHook points latest.pt at it when the run goes on from an older checkpoint
        self.resumed_from: Optional[str] = None
        log_file = metric_file = None
        if work_dir is not None and get_context().is_logging_rank:
            os.makedirs(work_dir, exist_ok=True)
            log_file = run_log_path(work_dir) if logger is None else None
            metric_file = os.path.join(work_dir, 'metrics.jsonl')
        self.logger = logger if logger is not None else get_logger('colossal_runner', log_file)
        self.metric_writer = MetricWriter(metric_file) if metric_file else None
        for hook in hooks or []:
            self.register_hook(hook)
        self._place_lr_scheduler()

    # ------------------------------------------------------------------ hooks
    def register_hook(self, hook: Union[BaseHook, Mapping]) -> BaseHook:
        """Add a hook (or build one from a HOOKS config dict); it runs in priority order."""
        if isinstance(hook, Mapping):
            hook = _build_hook(dict(hook))
        if not isinstance(hook, BaseHook):
            raise TypeError(f'a hook must be a BaseHook instance or a config dict like '
                            f"dict(type='LossHook'); got {type(hook).__name__}: {hook!r}. "
                            f'Subclass colossal_runner.trainer.hooks.BaseHook.')
        if not hasattr(hook, 'priority'):
            raise TypeError(f'{type(hook).__name__} has no priority: call super().__init__(priority) '
                            f'in its __init__')
        hook.priority = get_priority(hook.priority)
        problems = check_hook_methods(hook)  # (a method whose signature does not fit raises, on every rank)
        for problem in problems if get_context().is_logging_rank else ():  # said once per run
            warnings.warn(problem, UserWarning, stacklevel=2)
            log_to_file(self.logger, problem)  # (the console has the warning once)
        # After every hook of lower or equal priority: ties keep registration order.
        position = sum(1 for h in self.hooks if h.priority <= hook.priority)
        self.hooks.insert(position, hook)
        self._dispatch.clear()
        try:
            hook.after_hook_is_attached(self)
        except Exception as exc:
            self.hooks.remove(hook)
            self._dispatch.clear()
            if hasattr(exc, 'add_note'):
                exc.add_note(f'(raised in {type(hook).__name__}.after_hook_is_attached)')
            raise
        return hook

    def _place_lr_scheduler(self) -> None:
        """Who steps a scheduler that an ``LRSchedulerHook(by_epoch=True)`` took over: that hook, once
        per epoch, when it is one of this Trainer's hooks; else the engine again, once per step.

        Decided for each Trainer as it is built and as each of its fits starts: several Trainers
        may share an engine (one to train with a per-epoch schedule, another to evaluate), a
        Trainer whose construction failed may have moved it, and a hook may have been removed.
        """
        engine = self.engine
        moved = getattr(engine, 'epoch_lr_scheduler', None)
        if moved is None:
            return  # never taken over: the engine steps it (or there is none)
        per_epoch = any(getattr(h, 'by_epoch', False) and getattr(h, 'lr_scheduler', None) is moved
                        for h in self.hooks)
        engine.lr_scheduler = None if per_epoch else moved

    def _hook_calls(self, stage: str) -> List[Callable]:
        """The bound ``stage`` methods of the hooks that override it, in priority order (cached).

        Which hooks override a point changes when a hook is registered, or removed from self.hooks:
        the lists are built again after each register_hook and at the start of each fit / evaluate.
        """
        calls = self._dispatch[stage] = [getattr(h, stage) for h in self.hooks if h.overrides(stage)]
        return calls

    def call_hook(self, stage: str, *args: Any) -> None:
        """Run ``stage`` on every hook that implements it, in priority order."""
        calls = self._dispatch.get(stage)
        if calls is None:
            calls = self._hook_calls(stage)
        # The bound methods are called here, not through invoke_hook: this runs several times
        # per iteration, and a try block costs nothing until something raises.
        for call in calls:
            try:
                call(self, *args)
            except Exception as exc:
                note_hook_failure(exc, call.__self__, stage)
                raise

    # ------------------------------------------------------------------ training
    def fit(self, train_dataloader: Iterable, epochs: int, max_steps: Optional[int] = None,
            test_dataloader: Optional[Iterable] = None, test_interval: int = 1,
            display_progress: bool = False, *, hooks: Any = None) -> bool:
        """Train until ``epochs`` epochs (or ``max_steps`` optimizer steps) are done.

        Continues from ``states['epoch']`` / ``states['iteration']``, which a checkpoint may
        have restored, so ``epochs`` is the total, not the number still to run; after a fit of
        this Trainer raised, from where it stopped (the epoch's start, its steps, or its end). Every
        ``test_interval`` epochs the test data is evaluated at the end of the epoch, before
        ``after_train_epoch``, so that checkpoints and loggers see that epoch's test metrics.

        Returns whether it ran anything: a step or an epoch's end (a resume whose only work left
        was the end of the checkpoint's epoch counts); False when all was done already.

        ``hooks`` (legacy Colossal-AI's ``fit(hooks=...)``) is refused: see :func:`_refuse_hooks`.
        """
        _refuse_hooks('fit', hooks)
        epochs, max_steps, test_interval = self._start_fit(train_dataloader, epochs, max_steps, test_interval)
        _check_same_order_on_stages(train=train_dataloader, test=test_dataloader)
        self._check_microbatches(train=train_dataloader, test=test_dataloader)
        try:
            self.call_hook('before_train')
            self._prepare_metric_file()  # unless a record written in before_train did already
            epoch, skip = self._resume_position()
            # An iteration checkpoint taken before its epoch's end (at the epoch's last step, or at
            # max_steps in its middle): that end (test, after_train_epoch hooks) still runs, even
            # when the run's last step is done. Asked before the replay below takes the entry.
            due = skip > 0 and (skip == self.states['steps_per_epoch']
                                or self.data_position.end_still_due(epoch) is True)
            self.data_position.replay_finished_epoch(train_dataloader, epoch)
            begun = self._begun_epoch(epoch)  # a fit that raised in its steps or end: they go on
            ending = begun is not None or due
            first = epoch
            while epoch <= epochs and (ending or not self._reached_max_steps()):
                ending = False
                self.states['epoch'] = epoch
                if begun is None:
                    self._epoch_phase, self._epoch_first_iteration = 'start', self.states['iteration'] - skip
                    self.call_hook('before_train_epoch')
                if begun != 'end':
                    self._epoch_phase = 'steps'
                    self._train_epoch(train_dataloader, skip, display_progress)
                    self._begin_end(epoch)
                elif self._end_tested is not None:  # its test pass had finished: not run (nor written) again
                    set_rng_state(self._end_tested)
                else:  # the RNG as the end first found it (a test loader draws its seed from it)
                    set_rng_state(self._end_rng)
                if (test_dataloader is not None and epoch % test_interval == 0
                        and (begun != 'end' or self._end_tested is None)):
                    self._test_at_end(test_dataloader, display_progress)
                if self.epoch_cut_short:
                    # The longer run has no test pass here: a continuation (and a checkpoint of this
                    # end) goes on with the RNG as the steps left it (dropout after the test's draws).
                    set_rng_state(self._end_rng)
                begun = None
                self._end_epoch_hooks()
                self._epoch_phase = 'done'
                epoch, skip = epoch + 1, 0
            if epoch == first:
                self._note_nothing_to_train(epoch, epochs)
            self.call_hook('after_train')
        except BaseException as exc:  # Ctrl-C too: TensorBoard's events are flushed either way
            if self._epoch_phase == 'steps':  # the next fit replays the epoch's data order, as a resume does
                self.data_position.hold(self.states['epoch'])
            self._on_exception(exc)
            raise
        return epoch != first

    def _begin_end(self, epoch: int) -> None:
        """The epoch's steps are over: its end (test pass, after_train_epoch) begins. When max_steps
        stopped them (``epoch_cut_short``), the data position is held, so that a later fit that
        trains further in the epoch replays its order, as a resume from a checkpoint of it does."""
        self.data_position.begin_end()  # a checkpoint taken from now on holds the end
        self._epoch_phase, self._end_rng = 'end', get_rng_state()
        self._end_hooks_done, self._end_tested = [], None
        self.epoch_cut_short = not self.data_position.finished
        if self.epoch_cut_short:
            self.data_position.hold(epoch)

    def _test_at_end(self, test_dataloader: Iterable, display_progress: bool) -> None:
        """The end's test pass (``testing_in_fit`` while it runs); the RNG after it is kept, for a
        fit that raised later in the end."""
        self.testing_in_fit = True
        try:
            self.evaluate(test_dataloader, display_progress)
        finally:
            self.testing_in_fit = False
        self._end_tested = get_rng_state()

    def _end_epoch_hooks(self) -> None:
        """``after_train_epoch`` on every hook, except those that already returned for this epoch
        in a fit that raised in a later one: a per-epoch LR step or a checkpoint is not done twice."""
        done = self._end_hooks_done
        calls = self._dispatch.get('after_train_epoch')
        if calls is None:
            calls = self._hook_calls('after_train_epoch')
        for call in calls:
            hook = call.__self__
            if any(hook is h for h in done):
                continue
            try:
                call(self)
            except Exception as exc:
                note_hook_failure(exc, hook, 'after_train_epoch')
                raise
            done.append(hook)

    def _begun_epoch(self, epoch: int) -> Optional[str]:
        """'steps' or 'end' when a fit that raised left ``epoch`` there, after its before_train_epoch:
        the next fit goes on from there without calling that hook again (its metrics keep their
        sums); None otherwise. 'steps' too when an earlier fit's max_steps stopped ``epoch`` in its
        middle and this fit trains further: the end that ran then is superseded by the real one."""
        if epoch != self.states['epoch']:
            return None
        if self._goes_on_in_cut_epoch():
            return 'steps'
        phase = self._epoch_phase
        return phase if phase in ('steps', 'end') else None

    def _goes_on_in_cut_epoch(self) -> bool:
        """Whether this fit trains further in the epoch whose end this Trainer ran (or began) when
        max_steps stopped it in its middle: a larger max_steps (or max_epochs) than the earlier fit's."""
        return self._epoch_phase in ('end', 'done') and self.epoch_cut_short and self._trains_on()

    def _trains_on(self) -> bool:
        """Whether this fit (its max_epochs, max_steps) trains further in ``states['epoch']``."""
        max_epochs = self.states['max_epochs']
        return max_epochs is not None and self.states['epoch'] <= max_epochs and not self._reached_max_steps()

    def _note_nothing_to_train(self, epoch: int, epochs: int) -> None:
        """A fit whose epochs (or max_steps) were all done already: say so rather than return silently."""
        if epoch > epochs:
            self.logger.info(f'nothing left to train: {epoch - 1} epoch(s) done, and fit(epochs={epochs}) '
                             f'runs {epochs} in all; epochs is the total number of epochs (max_epochs in '
                             f'a config), not the number to add: pass a larger value to train more')
        else:
            self.logger.info(f"nothing left to train: iteration {self.states['iteration']} has reached "
                             f"max_steps={self.states['max_steps']}, the total number of optimizer steps: "
                             f'pass a larger value to train more')

    def _on_exception(self, exc: BaseException) -> None:
        """``fit`` raised: each hook with an ``on_exception(runner, exc)`` method releases what it
        holds open (writers, files). ``after_train`` does not run, since it would save a checkpoint
        of the failed state. A failing ``on_exception`` is logged, not raised, so that ``exc``
        propagates unchanged."""
        for hook in self.hooks:
            method = getattr(hook, 'on_exception', None)
            if not callable(method):
                continue
            try:
                method(self, exc)
            except Exception as failure:
                self.logger.warning(f'{type(hook).__name__}.on_exception raised {type(failure).__name__}: '
                                    f'{failure} (ignored, after fit raised {type(exc).__name__})')

    def _start_fit(self, dataloader: Iterable, epochs: int, max_steps: Optional[int],
                   test_interval: int) -> Tuple[int, Optional[int], int]:
        """Checks fit's arguments and sets up the states; the counts as plain ints (a NumPy integer is
        taken, and kept as an int so that it saves and prints as one)."""
        epochs = check_positive_int('fit: epochs', epochs)
        test_interval = check_positive_int('fit: test_interval', test_interval)
        if max_steps is not None:
            max_steps = check_positive_int('fit: max_steps', max_steps)
        steps = batches = _length(dataloader)
        if batches is not None:
            steps = batches // self.engine.gradient_accumulation
            if steps == 0:
                raise ValueError(f'the training data has {batches} batches, fewer than '
                                 f'gradient_accumulation={self.engine.gradient_accumulation} batches per '
                                 f'optimizer step; use more data, a smaller batch size or less accumulation.')
        self.states.update(max_epochs=epochs, steps_per_epoch=steps, max_steps=max_steps)
        self._max_steps_from_epochs = max_steps is None
        self._dispatch.clear()  # a hook removed from self.hooks since is called no more
        self._place_lr_scheduler()  # another Trainer on this engine, or a removed hook, may have moved it
        self._plan_run_end()  # again when LoadCheckpointHook loads a checkpoint in before_train
        # A checkpoint loaded before fit that this run cannot go on from (another epoch length in
        # the middle of an epoch) is an error now, before any hook acts on it: no metrics.jsonl
        # record is dropped, no latest.pt moved, for a run that does not start.
        self._resume_position()
        # Before this fit's first record, once a checkpoint is loaded (LoadCheckpointHook loads in
        # before_train, ahead of the hooks that write then): see _prepare_metric_file.
        self._check_metric_file = True
        return epochs, max_steps, test_interval

    def _plan_run_end(self) -> None:
        """Without a ``max_steps`` of the fit's own, ``states['max_steps']`` is the iteration at which
        the last epoch ends, counted on from the point the fit resumes at: ``max_epochs *
        steps_per_epoch`` for a fresh run or a resume with the same epoch length.

        A checkpoint of a run with another number of steps per epoch (another batch size,
        gradient_accumulation or number of replicas, resumed from epoch_N.pt) counts its epochs in
        its own steps: the remaining epochs are all trained, and the LR schedule, sized from this
        run's epoch length, is checked against the run's real end.
        """
        steps, epochs = self.states['steps_per_epoch'], self.states['max_epochs']
        if not steps or epochs is None:
            return
        epoch, skip = self._resume_position(check=False)
        epochs_end = self.states['iteration'] - skip + max(epochs - epoch + 1, 0) * steps
        if self._max_steps_from_epochs:
            self.states['max_steps'] = epochs_end
        saved = self.data_position.pending
        if (saved is not None and saved is not self._noted_resize and saved.get('finished') is True
                and saved.get('epoch') == self.states['epoch'] and saved.get('steps_done') != steps):
            self._noted_resize = saved
            self._note_other_epoch_length(saved.get('steps_done'), min(epochs_end, self.states['max_steps']))

    def _note_other_epoch_length(self, saved_steps: Any, end: int) -> None:
        """Log that the checkpoint's epochs had another length, and warn when the LR schedule's
        length (computed before the checkpoint was read) no longer matches the run's end."""
        steps, iteration = self.states['steps_per_epoch'], self.states['iteration']
        self.logger.info(f"the checkpoint's run had {saved_steps} optimizer steps per epoch, this run has "
                         f'{steps} (the batch size, gradient_accumulation or the number of data-parallel '
                         f'replicas changed): it trains its remaining epochs from iteration {iteration} '
                         f'and ends at iteration {end}')
        # None: no scheduler, one without a length, or one LRSchedulerHook(by_epoch=True) steps per epoch
        total = getattr(self.engine.lr_scheduler, 'total_steps', None)
        if isinstance(total, int) and not isinstance(total, bool) and total != end:
            effect = ('ends before the run does: the last steps train at its final learning rate'
                      if total < end else 'does not reach its end')
            self.logger.warning(
                f'the LR scheduler spans total_steps={total} optimizer steps but this run ends at iteration '
                f'{end}: a length computed as max_epochs x steps per epoch counts the {iteration} steps '
                f'done as if they were taken at this run\'s epoch length, so the schedule {effect}. Set '
                f'lr_scheduler.total_steps={end} (in the config, or --cfg-options) to end it with the run.')

    def resume_point(self) -> Tuple[int, int]:
        """``(iteration, epochs_done)`` this fit continues from: the optimizer steps done and the
        epochs whose end (test, ``after_train_epoch``) is done; ``(0, 0)`` for a fresh run.

        For writers that keep per-run files (``metrics.jsonl``, TensorBoard, latest.pt): from
        ``before_train`` on, what a file holds after this point was written by a run that went
        on from the same checkpoint and is now replaced. An iteration checkpoint taken mid-epoch
        or at an epoch's last step has that epoch's end still to come (not one that max_steps
        stopped in its middle and that was written in or after the end, unless this fit trains
        further in that epoch: then its real end replaces the early one, as on the same Trainer
        after a fit that max_steps stopped). A position this run cannot resume from raises here
        (as fit would), before a writer drops anything for it.
        """
        if self._epoch_phase in ('end', 'done'):
            # A fit that raised in an epoch's end: what that end wrote stays, since its test pass
            # (once finished) and the hooks that returned are not run again (see fit). Or the
            # epoch's end is over; when max_steps stopped the epoch in its middle, only while this
            # fit trains no further in it (else the epoch's steps go on and its real end replaces it).
            superseded = 1 if self._goes_on_in_cut_epoch() else 0
            return self.states['iteration'], self.states['epoch'] - superseded
        epoch, _ = self._resume_position()
        if self.data_position.end_still_due(epoch) is False and not self._trains_on():
            return self.states['iteration'], epoch  # stopped by max_steps, saved after its end: over
        return self.states['iteration'], epoch - 1

    def _resume_position(self, check: bool = True) -> Tuple[int, int]:
        """(epoch to run next, optimizer steps of it already done), from restored states.

        All of the epoch's steps done (``done == steps_per_epoch``) means that the checkpoint was
        saved after the epoch's last step but before its end, when its data entry says the
        epoch's iterator was not finished; then the epoch's end is still to come.

        After a fit of this Trainer raised before the epoch's end had run, memory says where: no
        step done (from the epoch's start) or in its end; in the middle of its steps, the data entry
        the failed fit kept (``DataPosition.hold``) says it as a checkpoint's would.
        """
        epoch, iteration = self.states['epoch'], self.states['iteration']
        steps = self.states['steps_per_epoch']
        # (after an end that max_steps brought early, the epoch's steps may go on: see _begun_epoch)
        cut = self._epoch_phase == 'done' and self.epoch_cut_short
        if epoch > 0 and (self._epoch_phase in ('start', 'steps', 'end') or cut):
            done = iteration - self._epoch_first_iteration
            if done == 0 or self._epoch_phase == 'end' or not steps:  # (not steps: a loader without a length)
                return epoch, done
        if epoch > 0 and steps:
            saved = self.data_position.pending
            if saved is not None and saved.get('epoch') == epoch and saved.get('finished') is True:
                return epoch + 1, 0  # an epoch checkpoint, whatever its run's steps per epoch were
            done = iteration - (epoch - 1) * steps
            mid = saved is not None and saved.get('epoch') == epoch and saved.get('finished') is False
            saved_done = saved.get('steps_done') if mid else None
            if isinstance(saved_done, int):
                # The saved entry says where in the epoch the checkpoint was: the iteration count cannot,
                # once an earlier epoch of the run had another length (resumed from an epoch_N.pt).
                saved_steps = saved.get('steps_per_epoch')
                changed = (saved_steps != steps if isinstance(saved_steps, int)
                           else saved_done > steps or saved_done != done)  # written before it was kept
                if check and changed:
                    # Replaying the saved part of the epoch would run past the end of this run's epoch,
                    # or skip other samples than it trained on.
                    where = (f'of a run with {saved_steps} steps per epoch; this run has {steps}'
                             if isinstance(saved_steps, int) else
                             f'but an epoch of this run has only {steps} steps' if saved_done > steps else
                             f'but at {steps} steps per epoch this run would be {done} steps into it '
                             f'(iteration {iteration})' if 0 <= done <= steps else
                             f'but at {steps} steps per epoch iteration {iteration} is not in epoch {epoch} '
                             f'of this run')
                    raise ValueError(
                        f'the checkpoint was taken {saved_done} optimizer steps into epoch {epoch} {where}: '
                        f'the batch size, the gradient accumulation or the number of data-parallel replicas '
                        f'changed since. Resume from a checkpoint taken at the end of an epoch (epoch_N.pt) '
                        f'to change them, or keep the saved run\'s settings to resume in the middle of epoch '
                        f'{epoch}.')
                if not changed and 0 < saved_done <= steps:
                    return epoch, saved_done
            if 0 < done < steps:  # a checkpoint taken in the middle of an epoch
                return epoch, done
        return epoch + 1, 0

    def _reached_max_steps(self) -> bool:
        max_steps = self.states['max_steps']
        return max_steps is not None and self.states['iteration'] >= max_steps

    def _train_epoch(self, dataloader: Iterable, skip: int, display_progress: bool) -> None:
        set_sampler_epoch(dataloader, self.states['epoch'])
        engine = self.engine
        engine.train()
        position = self.data_position
        data_iter = position.open_epoch(dataloader, self.states['epoch'], skip, engine.gradient_accumulation,
                                        self.states['steps_per_epoch'])
        steps = self.states['steps_per_epoch']
        total = None if steps is None else steps - skip
        states, call_hook, dispatch = self.states, self.call_hook, self._dispatch
        # The loop below runs once per optimizer step, so it is written out rather than split into
        # helpers: for a small model each Python call in it is a measurable share of the step
        # (benchmarks/overhead.py). It does not call before_train_iter when no hook implements it,
        # and reads the engine's skip counter once per step.
        skips = getattr(engine, 'nonfinite_skips', 0)
        result = None
        # One item per optimizer step, the iterator the step draws its batches from: the epoch's
        # own, or for a loader without a length the step's batches, drawn before the step's
        # before_train_iter (see _whole_steps).
        def note(exc: BaseException) -> None:
            self._note_step_failure(exc, 'train', states['iteration'] + 1)
        feeds = (itertools.repeat(data_iter, total) if total is not None
                 else _whole_steps(data_iter, engine.gradient_accumulation, self._reached_max_steps, note))
        # The bar counts the whole epoch: after a mid-epoch resume it starts at the steps done.
        with self._progress(steps, f"Epoch {states['epoch']}", display_progress, initial=skip) as bar:
            show = not bar.disable
            for feed in feeds:
                # Every step: a hook may lower max_steps to stop early.
                max_steps = states['max_steps']
                if max_steps is not None and states['iteration'] >= max_steps:
                    break
                # The cached list of hooks implementing the stage: empty, skip the call; not
                # built yet (a hook was just registered), call_hook builds it.
                if dispatch.get('before_train_iter', True):
                    call_hook('before_train_iter')
                try:
                    result = engine.step(feed)
                except NonFiniteLossError as exc:
                    raise self._nonfinite_error(exc) from None
                except Exception as exc:  # the model's, the criterion's or the data's
                    self._note_step_failure(exc, 'train', states['iteration'] + 1)
                    raise
                states['iteration'] += 1
                position.steps_done += 1
                counted = getattr(engine, 'nonfinite_skips', 0)
                if counted != skips:
                    if counted > skips:
                        self._note_skipped(counted - skips)
                    skips = counted
                call_hook('after_train_iter', *result)
                if show:
                    self._show(bar, result[2], training=True)
            else:
                # Finish the iterator as a plain `for` loop would: torch's RandomSampler draws
                # from its generator only once it is exhausted, so stopping one batch short would
                # give the next epoch a different order than a hand-written loop gets. (A loader
                # without a length is exhausted already.)
                for _ in data_iter:
                    pass
                position.end_epoch(exhausted=True)
            if show and result is not None and result[2] is not None:
                self._set_postfix(bar, result[2], training=True)  # ends on the last step's loss, read once

    def _nonfinite_error(self, exc: NonFiniteLossError) -> NonFiniteLossError:
        """The engine's error for a NaN/Inf loss, saying where in the run it happened (and logged)."""
        epoch, iteration = self.states['epoch'], self.states['iteration'] + 1
        what = f'({exc.loss})' if exc.local else '(on another rank)'
        message = (f'non-finite loss {what} at epoch {epoch}, iteration {iteration} '
                   f'(step {iteration - (epoch - 1) * (self.states["steps_per_epoch"] or 0)} of the '
                   f'epoch), learning rate {exc.lr:.6g}. The weights keep their values from iteration '
                   f'{iteration - 1}. Lower the learning rate, set clip_grad_norm, check the data for '
                   f"NaN/Inf, or set nonfinite_loss = 'skip' to drop such steps and count them.")
        self.logger.error(message)
        error = NonFiniteLossError(message, loss=exc.loss, lr=exc.lr, local=exc.local)
        error.logged = True  # tools/train.py then does not write it into the log a second time
        return error

    def _note_skipped(self, dropped: int) -> None:
        """Count and log steps the engine dropped for a NaN/Inf loss (``nonfinite_loss='skip'``)."""
        self.states['nonfinite_skips'] += dropped
        self.logger.warning(f"skipped iteration {self.states['iteration']} (epoch "
                            f"{self.states['epoch']}): the loss was NaN/Inf; "
                            f"{self.states['nonfinite_skips']} step(s) skipped so far")

    def _note_step_failure(self, exc: BaseException, phase: str, step: int) -> None:
        """Say where in the run a step raised (the model, the criterion, the data): an error such as
        ``KeyError: 'mask'`` from a criterion tells nothing of it."""
        if hasattr(exc, 'add_note'):
            where = 'iteration' if phase == 'train' else 'test step'
            exc.add_note(f"(raised in the {phase} step: epoch {self.states['epoch']}, {where} {step})")
            message = str(exc)
            # torch's own message names no cause; SIGKILL of a worker is mostly the kernel's OOM killer
            if 'DataLoader worker (pid' in message and ('killed by signal: Killed' in message
                                                        or 'exited unexpectedly' in message):
                exc.add_note(f'(a DataLoader worker process died, often killed by the out-of-memory killer: '
                             f'try fewer num_workers or a smaller batch, data.{phase}.dataloader.num_workers '
                             f'/ .batch_size in a config)')

    @contextlib.contextmanager
    def _progress(self, total: Optional[int], desc: str, display_progress: bool,
                  initial: int = 0) -> Iterator[tqdm]:
        enabled = display_progress and get_context().is_logging_rank
        self._postfix_time = float('-inf')  # a new bar shows its first step's loss at once
        with tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True) as bar:
            if not enabled:
                yield bar
                return
            # While the bar is shown, console log lines go through tqdm.write, above the bar rather
            # than over its line; set up once per bar, so the steps pay nothing for it.
            with _log_above_bars(self.logger):
                yield bar

    def _show(self, bar: tqdm, loss: Any, training: bool = False) -> None:
        if bar.disable:
            return
        # The loss is read for the bar at most every bar.mininterval seconds, tqdm's own redraw
        # rate: on a GPU each read waits for the step to finish, and with nonfinite_loss='off'
        # nothing else in the loop does.
        now = time.monotonic()
        if now - self._postfix_time >= bar.mininterval:
            self._postfix_time = now
            self._set_postfix(bar, loss, training)
        bar.update(1)

    def _set_postfix(self, bar: tqdm, loss: Any, training: bool) -> None:
        """The step's loss, and while training the learning rate."""
        postfix = {}
        if loss is not None:
            postfix['loss'] = f'{float(loss):.4g}'
        if training and getattr(self.engine, 'optimizer', None) is not None:
            # the rate the shown step used: get_lr() is already the next step's once the scheduler stepped
            lr = getattr(self.engine, 'step_lr', None)
            postfix['lr'] = f'{float(self.engine.get_lr() if lr is None else lr):.3g}'
        bar.set_postfix(postfix, refresh=False)

    # ------------------------------------------------------------------ testing / inference
    def evaluate(self, test_dataloader: Iterable, display_progress: bool = False, *,
                 hooks: Any = None) -> Dict[str, float]:
        """One pass over ``test_dataloader``; returns ``{name: accumulated value}`` of the test metrics.

        Collective in data-parallel runs (the metrics reduce over replicas): call it on every rank.
        ``hooks`` is refused, as in :meth:`fit`.
        """
        _refuse_hooks('evaluate', hooks)
        self._check_microbatches(test=test_dataloader)
        was_training = self.engine.training
        self.engine.eval()
        self._dispatch.clear()  # a hook removed from self.hooks since is called no more
        try:
            self.engine.sync_buffers()  # the replicas evaluate with the same running statistics
            self.call_hook('before_test')
            self.call_hook('before_test_epoch')
            data_iter = iter(test_dataloader)
            total = _length(test_dataloader)
            last = None
            drawn = [0]  # steps drawn so far, for a data error's note

            def note(exc: BaseException) -> None:
                self._note_step_failure(exc, 'test', drawn[0] + 1)
            feeds = itertools.repeat(data_iter, total) if total is not None else _whole_steps(data_iter, 1,
                                                                                              on_error=note)
            with self._progress(total, 'Test', display_progress) as bar:
                for step, feed in enumerate(feeds, 1):
                    drawn[0] = step
                    self.call_hook('before_test_iter')
                    try:
                        result = self.engine.evaluate_step(feed)
                    except Exception as exc:  # the model's, the criterion's or the data's
                        self._note_step_failure(exc, 'test', step)
                        raise
                    self.call_hook('after_test_iter', *result)
                    self._show(bar, result[2])
                    last = result[2]
                if not bar.disable and last is not None:
                    self._set_postfix(bar, last, training=False)  # ends on the last step's loss
            self.call_hook('after_test_epoch')
            values = read_metrics(self, 'test')
            self.call_hook('after_test')
        finally:  # also when a hook or the data raises: a caller that goes on trains in train mode
            if was_training:
                self.engine.train()
        return values

    def predict(self, data: Any) -> Any:
        """The model's output for ``data`` (an input batch, without labels), without gradients.

        An interleaved schedule's model chunks in one process run in turn, through the schedule as
        in ``evaluate``; the batch then splits into its ``num_microbatches``.
        """
        if get_context().pipeline_size > 1:
            raise ValueError('predict runs the whole model in this process, but this run is split into '
                             f'{get_context().pipeline_size} pipeline stages; use evaluate(), or build the '
                             'model without parallel.pipeline for inference.')
        was_training = self.engine.training
        self.engine.eval()
        try:
            if getattr(self.engine.schedule, 'num_model_chunks', 1) > 1:
                # the chunks are an nn.ModuleList, which has no forward: only the schedule composes them
                with torch.no_grad():
                    return self.engine.schedule.forward_backward_step(
                        self.engine, iter([(data, None)]), forward_only=True, return_loss=False)[0]
            with torch.no_grad(), self.engine.autocast():
                # unwrapped: DDP's forward could start a buffer broadcast the other ranks never join
                try:
                    return call_model(self.engine.module, to_device(data, self.engine.device))
                except TypeError as exc:
                    if not isinstance(data, (tuple, list)):
                        raise
                    raise TypeError(
                        f'predict: calling the model on a {type(data).__name__} of {len(data)} items, '
                        f'passed as {len(data)} positional arguments, failed: {exc}. predict takes the '
                        f"model's input (a tensor, or the tuple / dict of the model's arguments), not a "
                        f'(input, label) batch from a loader: pass the batch\'s input alone, e.g. '
                        f'trainer.predict(batch[0]).') from exc
        finally:
            if was_training:
                self.engine.train()

    # ------------------------------------------------------------------ logs and checkpoints
    def write_record(self, record: Mapping[str, Any]) -> None:
        """Append one record to ``<work_dir>/metrics.jsonl`` (logging rank, with a work_dir)."""
        if self.metric_writer is not None:
            if self._check_metric_file:
                self._prepare_metric_file()
            self.metric_writer.write(record)
            self._wrote_records = True

    def _prepare_metric_file(self) -> None:
        """Before a fit's first record: a resumed run drops the records written after its
        checkpoint (by the run it continues in place of), so no step or epoch is there twice; a
        fresh run moves an earlier run's file to ``metrics.<n>.jsonl`` rather than add to it."""
        if not self._check_metric_file:
            return
        self._check_metric_file = False
        if self.metric_writer is None:
            return
        path = self.metric_writer.path
        iteration, epochs_done = self.resume_point()  # (raises for a position fit cannot resume from)
        if iteration > 0:
            dropped = drop_records_after(path, iteration, epochs_done)
            if dropped:
                self.logger.info(f'{path}: dropped {dropped} record(s) that an earlier run wrote after '
                                 f'iteration {iteration} (epochs done: {epochs_done}), the point this run '
                                 f'resumes from; it writes them again')
        elif not self._wrote_records:
            moved = set_aside(path)
            if moved:
                self.logger.info(f'{path} held the records of an earlier run: moved to {moved}; this run '
                                 f'starts a new {os.path.basename(path)}')

    def _hook_keys(self) -> List[Tuple[str, BaseHook]]:
        """A stable key per hook: its class name, ``Name#2`` for a second one of the same class."""
        counts: Dict[str, int] = {}
        keys = []
        for hook in self.hooks:
            name = type(hook).__name__
            counts[name] = counts.get(name, 0) + 1
            keys.append((name if counts[name] == 1 else f'{name}#{counts[name]}', hook))
        return keys

    def _config_text(self) -> Optional[str]:
        if self.config is None or isinstance(self.config, str):
            return self.config
        for attr in ('pretty_text', 'text'):
            try:
                return str(getattr(self.config, attr))
            except Exception:  # e.g. pretty_text of a config yapf cannot format
                continue
        return str(self.config)

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed run needs; the layout is documented in :mod:`colossal_runner.checkpoint`."""
        context = get_context()
        self._place_lr_scheduler()  # the engine records whether its scheduler is stepped per epoch
        hooks = {}
        for key, hook in self._hook_keys():
            try:
                state = hook.state_dict()
            except Exception as exc:
                note_hook_failure(exc, hook, 'state_dict')
                raise
            if not isinstance(state, Mapping):  # (a tensor's truth value would raise, a 0.0 be dropped)
                what = ('None (is a return missing?)' if state is None
                        else f'a Tensor of shape {tuple(state.shape)}' if isinstance(state, torch.Tensor)
                        else f'a {type(state).__name__} ({_short_repr(state)})')
                raise TypeError(f'{type(hook).__name__}.state_dict() returned {what}; a hook\'s state_dict() '
                                f'must return a dict ({{}} when there is nothing to save), which the '
                                f'checkpoint keeps under hooks[{key!r}] and load_state_dict(state) gets '
                                f"back: return e.g. {{'value': ...}}.")
            if state:  # an empty dict: nothing to save
                hooks[key] = state
        return dict(format=FORMAT, engine=self.engine.state_dict(),
                    states={k: self.states[k] for k in RESUMABLE_KEYS}, hooks=hooks, rng=get_rng_state(),
                    data=self.data_position.state_dict(),
                    config=self._config_text(),
                    meta=dict(torch=str(torch.__version__), time=datetime.datetime.now().isoformat(),
                              stage=context.stage, pipeline_size=context.pipeline_size,
                              model_chunks=getattr(self.engine.schedule, 'num_model_chunks', 1),
                              **({} if self.vocabulary is None else dict(vocabulary=list(self.vocabulary)))))

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, finetune: bool = False) -> None:
        """Restore a :meth:`state_dict`; the next ``fit`` continues after the saved epoch/iteration.

        ``finetune=True`` loads the model weights only; then ``state`` may also be bare weights, as
        ``torch.save(model.state_dict())`` writes them, or a dict holding them under ``'model'`` or
        ``'state_dict'`` (a hand-written loop's checkpoint). ``strict=False`` loads the weights whose
        names match; then the optimizer state is not loaded either.
        """
        # The engine compares how the checkpoint's scheduler was stepped with this Trainer's hooks, not
        # with those of another Trainer built on the same engine since.
        self._place_lr_scheduler()
        if not isinstance(state, Mapping) or 'engine' not in state or 'states' not in state:
            got = _few(sorted(map(str, state))) if isinstance(state, Mapping) else type(state).__name__
            weights, where = _bare_weights(state)
            if weights is not None and finetune:
                self._load_engine(dict(model=weights), strict, finetune=True)
                self.logger.info(f'loaded only model weights ({where}): the file is not a colossal_runner '
                                 f'training checkpoint, so nothing else (optimizer, progress) is restored')
                return
            if weights is None:
                fix = 'Give a checkpoint written by colossal_runner (SaveCheckpointHook).'
            else:
                fix = (f'It holds bare model weights ({where}), without an optimizer state or a position to '
                       f'resume from: load them as weights only, in a config (tools/train.py without '
                       f"--resume) with hooks=[..., dict(type='LoadCheckpointHook', checkpoint_dir=PATH, "
                       f'finetune=True)], or in Python with trainer.resume(PATH, finetune=True) before fit; '
                       f'tools/test.py evaluates such a file as it is.')
            raise KeyError(f"not a colossal_runner training checkpoint: expected the keys 'engine', "
                           f"'states', 'hooks', 'rng'; got {got}. {fix}")
        # Weights only too (tools/test.py): another layout's keys would not match, and the error would
        # blame the model config. A partial load (weights by name) may come from any layout.
        if strict:
            self._check_layout(state.get('meta'), finetune)
        self._check_vocabulary(state.get('meta'))
        matched = self._load_engine(state['engine'], strict, finetune)
        if finetune:
            return
        if not matched:
            self.logger.warning('model keys did not match the checkpoint: loaded the matching weights only, '
                                'not the optimizer / scheduler / training progress')
            return
        for key in RESUMABLE_KEYS:
            self.states[key] = int(state['states'].get(key, 0))
        # where a fit of this Trainer stopped no longer applies
        self._epoch_phase, self.epoch_cut_short = None, False
        data = state.get('data')
        self.data_position.load_state_dict(dict(data, rng=state.get('rng')) if data else None)
        saved_hooks = state.get('hooks') or {}
        for key, hook in self._hook_keys():
            if key in saved_hooks:
                try:
                    hook.load_state_dict(saved_hooks[key])
                except Exception as exc:
                    note_hook_failure(exc, hook, 'load_state_dict',
                                      f"restoring a checkpoint's hooks[{key!r}]")
                    raise
        if state.get('rng'):
            set_rng_state(state['rng'])
        self.resumed_at = self.states['iteration']
        meta = state.get('meta')
        path = meta.get('path') if isinstance(meta, Mapping) else None
        self.resumed_from = path if isinstance(path, str) else None
        if self.states['max_epochs'] is not None:  # loaded during a fit (LoadCheckpointHook): size it anew
            self._plan_run_end()

    def _check_layout(self, meta: Any, finetune: bool = False) -> None:
        """Refuse a checkpoint of another pipeline layout: its files hold other layers per stage, so
        the model keys would not match, and the message would blame the model config. Weights only
        of a one-process run's checkpoint (the whole model) load into any layout, each stage taking
        its layers' weights by name."""
        if not isinstance(meta, Mapping):
            return
        saved_stages, saved_chunks = meta.get('pipeline_size'), meta.get('model_chunks')
        if finetune and saved_stages == 1 and saved_chunks in (None, 1):
            return
        stages, chunks = get_context().pipeline_size, getattr(self.engine.schedule, 'num_model_chunks', 1)
        if saved_chunks is None:  # written before model_chunks was recorded
            saved_chunks = chunks
        if isinstance(saved_stages, int) and (saved_stages, saved_chunks) != (stages, chunks):
            raise ValueError(f'the checkpoint was written by a run with '
                             f'{_layout(saved_stages, saved_chunks)}; this run has '
                             f'{_layout(stages, chunks)}, so its stages hold other layers. Resume or '
                             f'test with the layout it was trained with (parallel.pipeline={saved_stages} '
                             f'and the same schedule).')

    def _check_microbatches(self, **loaders: Optional[Iterable]) -> None:
        """A pipeline schedule splits each batch into equal microbatches: a batch size or a last batch
        it cannot split is an error now, not at the epoch's last step (``initialize`` checks a
        config's loaders the same way, as config errors)."""
        m = getattr(self.engine.schedule, 'num_microbatches', None)
        for name, loader in loaders.items():
            problem, setting = unsplittable_batch(loader, m)
            if problem:
                fix = ('pass drop_last=True to the DataLoader (the last, smaller batch is left out), or '
                       'use a batch size that divides the number of samples' if setting == 'drop_last' else
                       f'use a batch size that is a multiple of {m}, or another num_microbatches')
                raise ValueError(f'the {name} dataloader: {problem}; the pipeline schedule splits every '
                                 f'batch into {m} equal microbatches: {fix}')

    def _check_vocabulary(self, meta: Any) -> None:
        """Refuse a checkpoint whose token ids mean other characters than this run's data gives them:
        the weights would load, and the model would read every text wrongly without a word.
        This run's vocabulary may add tokens after the saved ones (their ids keep their meaning)."""
        saved = meta.get('vocabulary') if isinstance(meta, Mapping) else None
        own = self.vocabulary
        if not isinstance(saved, (list, tuple)) or own is None or list(own[:len(saved)]) == list(saved):
            return
        index = next((i for i, (a, b) in enumerate(zip(saved, own)) if a != b), min(len(saved), len(own)))
        here = repr(own[index]) if index < len(own) else 'nothing'
        shown = vocabulary_text(saved, 200)
        if len(saved) > 200:
            shown += " (all of it: torch.load(path)['meta']['vocabulary'])"
        raise ValueError(f"the checkpoint's model was trained on a vocabulary of {len(saved)} tokens that "
                         f"this run's data does not share: id {index} is {saved[index]!r} there and {here} "
                         f'here, so the model would read every text wrongly. Use the text (and max_chars) '
                         f'it was trained on, or give the datasets its vocabulary, new characters after '
                         f'it (data.train.dataset.chars and data.test.dataset.chars = {shown})')

    def _load_engine(self, engine_state: Mapping[str, Any], strict: bool, finetune: bool) -> bool:
        """Load the engine's state; returns whether the model keys matched exactly."""
        if not isinstance(engine_state, Mapping) or 'model' not in engine_state:
            raise KeyError("the checkpoint's 'engine' entry has no 'model' weights")
        model = self.engine.model
        model = model.module if isinstance(model, DistributedDataParallel) else model
        own_state, weights = model.state_dict(), engine_state['model']
        if finetune and (get_context().pipeline_size > 1 or isinstance(model, torch.nn.ModuleList)):
            weights = _stage_weights(model, own_state, weights)  # (interleaved chunks on one process too)
        own, saved = set(own_state), set(weights)
        missing, unexpected = sorted(own - saved), sorted(saved - own)
        # Same name, another shape: a new classifier head when fine-tuning, typically.
        reshaped = sorted(k for k in own & saved  # (a module's extra state need not be a tensor)
                          if getattr(weights[k], 'shape', None) != getattr(own_state[k], 'shape', None))
        matching = (own & saved) - set(reshaped)  # what a partial load takes
        if (missing or unexpected or reshaped) and strict:
            shapes = ', '.join(f"{k}: {tuple(getattr(weights[k], 'shape', ()))} saved, "
                               f"{tuple(getattr(own_state[k], 'shape', ()))} here" for k in reshaped[:5])
            raise KeyError(f'the checkpoint does not fit the model: missing keys {_few(missing)}, unexpected '
                           f'keys {_few(unexpected)}, other shapes {_few(reshaped)}'
                           f'{f" ({shapes})" if shapes else ""}{_prefix_hint(own, saved)}. Check that the '
                           f'model config matches the one that was trained'
                           + ('.' if not matching else ', or load with strict=False to take the weights that '
                                                       'match.'))
        if not matching and own:
            # strict=False with nothing to take would leave the whole model at its initial values
            raise KeyError(f'none of the checkpoint\'s {len(saved)} weights fits the model: saved keys such '
                           f'as {_few(sorted(saved))}, model keys such as {_few(sorted(own))}'
                           f'{_prefix_hint(own, saved)}. Check that the checkpoint is of this model.')
        if reshaped:
            self.logger.warning(f'not loaded, the shapes differ: {_few(reshaped)}; these keep their initial '
                                f'values')
            left_out = set(reshaped)
            weights = {k: v for k, v in weights.items() if k not in left_out}
        if missing or unexpected:
            self.logger.warning(f'loaded {len(matching)} of the model\'s {len(own)} weights (strict=False): '
                                f'missing {_few(missing)} (these keep their initial values), unexpected '
                                f'{_few(unexpected)} (ignored)')
        if finetune or missing or unexpected or reshaped:
            model.load_state_dict(weights, strict=False)
        else:
            self.engine.load_state_dict(engine_state)
        return not (missing or unexpected or reshaped)

    def resume(self, path: str, strict: bool = True, finetune: bool = False) -> Dict[str, Any]:
        """Load the checkpoint at ``path`` (a file, a directory, or ``latest.pt``); see
        :func:`colossal_runner.checkpoint.resume`."""
        return resume(self, path, strict=strict, finetune=finetune)

    def __repr__(self) -> str:
        return f'Trainer(engine={self.engine!r}, hooks={self.hooks!r}, work_dir={self.work_dir!r})'


def _stage_weights(model: Any, own_state: Mapping[str, Any], weights: Mapping[str, Any]) -> Mapping[str, Any]:
    """This pipeline stage's weights out of a whole model's (a one-process run's checkpoint, bare
    weights), when they hold every one of them: a stage's layers keep their index in the whole
    model, so its keys are the whole model's (behind the chunk's index for interleaved chunks).
    Other weights (another stage's file) are returned as they are, for the usual key checks."""
    chunked = isinstance(model, torch.nn.ModuleList)
    whole = {key: key.split('.', 1)[1] if chunked else key for key in own_state}
    if set(whole) == set(weights) or not all(name in weights for name in whole.values()):
        return weights
    return {key: weights[name] for key, name in whole.items()}


def _prefix_hint(own: set, saved: set) -> str:
    """'; the saved keys carry the prefix ...' when stripping a common first name part of the saved
    keys (DDP's 'module.', a wrapper's 'model.') or adding one makes them the model's."""
    for keys, other, verb in ((saved, own, 'carry'), (own, saved, 'lack')):
        prefixes = {k.split('.', 1)[0] + '.' for k in keys if '.' in k}
        if len(prefixes) == 1:
            prefix = prefixes.pop()
            if {k[len(prefix):] for k in keys if k.startswith(prefix)} & other:
                return (f'; the saved keys {verb} the prefix {prefix!r}: '
                        + ('strip it from the keys' if verb == 'carry' else 'add it to the keys')
                        + ' before loading (a DDP or wrapper module saved them)')
    return ''


def _refuse_hooks(method: str, hooks: Any) -> None:
    """Legacy Colossal-AI took hooks per call (``trainer.fit(..., hooks=[...])``); here they belong to
    the Trainer, so that they keep their state from one fit to the next and in checkpoints."""
    if hooks is not None:
        raise TypeError(f'Trainer.{method}() takes no hooks (got hooks={_short_repr(hooks)}): a Trainer\'s '
                        f'hooks are given once, Trainer(engine, hooks=[...]), or added with '
                        f'trainer.register_hook(hook), so that they keep their state across fits and in '
                        f'checkpoints (legacy Colossal-AI passed them to each fit).')


def _build_hook(cfg: Dict[str, Any]) -> Any:
    """Build a hook from a HOOKS config dict. ``priority`` is passed to the constructor only when it
    names that argument; otherwise it is set on the built hook, so a hook whose ``__init__`` takes
    only its own arguments can still be given a priority in its config, as in mmcv."""
    if 'priority' not in cfg:
        return HOOKS.build(cfg)
    cls = cfg.get('type')
    if isinstance(cls, str):
        cls = HOOKS.get(cls)
    try:
        takes_priority = cls is None or 'priority' in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to read: pass it as given
        takes_priority = True
    if takes_priority:  # (an unknown type too: the registry's error says so)
        return HOOKS.build(cfg)
    priority = cfg.pop('priority')
    hook = HOOKS.build(cfg)
    if isinstance(hook, BaseHook):  # anything else: register_hook says what a hook must be
        hook.priority = priority  # checked with the others' in register_hook
    return hook


class _AboveBars:
    """A console stream whose writes go through ``tqdm.write``: above an open progress bar, not
    over its line."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> None:
        tqdm.write(text, file=self.stream, end='')

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def _log_above_bars(logger: Any) -> Iterator[None]:
    """While open, the console handlers of ``logger`` (and of the root logger it propagates to)
    write above progress bars.

    Written here rather than using tqdm's ``logging_redirect_tqdm``: that replaces the handlers
    with one of its own, which drops their levels and filters (a console set to WARNING would
    print every INFO line while a bar is shown). Only the handlers' streams are swapped here.
    """
    loggers = [logger] if isinstance(logger, logging.Logger) else []
    if not loggers or logger.propagate:
        loggers.append(logging.getLogger())
    swapped = []
    for each in loggers:
        for handler in each.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr):
                swapped.append((handler, handler.setStream(_AboveBars(handler.stream))))
    try:
        yield
    finally:
        for handler, stream in reversed(swapped):
            handler.setStream(stream)


def _length(loader: Iterable) -> Optional[int]:
    """``len(loader)``, or None for loaders without one (a DataLoader over an IterableDataset)."""
    try:
        return len(loader)
    except TypeError:
        return None


def _whole_steps(data_iter: Iterator, batches_per_step: int, stop: Callable[[], bool] = lambda: False,
                 on_error: Optional[Callable[[BaseException], None]] = None) -> Iterator[Iterator]:
    """The steps of a loader without a length: for each, an iterator over its batches, yielded
    once all ``batches_per_step`` of them are drawn. The data's end is then seen before a step's
    before_*_iter, not inside the step, so every before_*_iter gets its after_*_iter and a step
    the left-over batches cannot fill is not started. When ``stop()`` (max_steps reached) it yields
    without drawing, for the loop to stop there: a checkpoint of the run then holds no batch
    drawn past its last step. ``on_error`` notes where the data raised (the loop's own note is
    around the step, which these batches are drawn before)."""
    while True:
        if stop():
            yield iter(())
            return
        try:
            batches = list(itertools.islice(data_iter, batches_per_step))
        except Exception as exc:
            if on_error is not None:
                on_error(exc)
            raise
        if len(batches) < batches_per_step:
            return
        yield iter(batches)


def _bare_weights(state: Any) -> Tuple[Optional[Mapping], str]:
    """``(weights, where they are)`` when ``state`` is a model's bare state dict (every value a
    tensor) or holds one under ``'model'`` or ``'state_dict'``; ``(None, '')`` otherwise."""
    def is_weights(obj: Any) -> bool:
        return (isinstance(obj, Mapping) and bool(obj)
                and all(isinstance(v, torch.Tensor) for v in obj.values()))

    if is_weights(state):
        return state, 'a state_dict'
    for key in ('model', 'state_dict'):
        if isinstance(state, Mapping) and is_weights(state.get(key)):
            return state[key], f'its {key!r} entry'
    return None, ''


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _few(keys: List[str], n: int = 10) -> str:
    shown = keys[:n]
    return str(shown) + (f' and {len(keys) - n} more' if len(keys) > n else '')


def _check_same_order_on_stages(**loaders: Optional[Iterable]) -> None:
    """Every pipeline stage must read the same batches: the first stage's inputs and the last
    stage's labels come from separate loaders. A sampler that draws its order from the global RNG
    breaks that silently, since each stage consumes that RNG differently (its own layers' dropout)."""
    stages = get_context().pipeline_size
    if stages <= 1:
        return
    for name, loader in loaders.items():
        if loader is not None and order_depends_on_global_rng(loader):
            raise ValueError(
                f'the {name} dataloader draws its sample order from the global torch RNG (its '
                f'{type(getattr(loader, "sampler", None)).__name__} has no generator, as in '
                f'DataLoader(shuffle=True) without generator=). The {stages} pipeline stages consume that '
                f'RNG differently (their own layers, dropout), so the first stage would read other inputs '
                f'than the last stage reads labels. Pass generator=torch.Generator().manual_seed(seed) to '
                f'the DataLoader (or to its sampler), or build it with build_dataloader from '
                f'colossal_runner.data.')


def _layout(stages: int, chunks: int) -> str:
    chunked = f' x {chunks} model chunks' if chunks > 1 else ''
    return f'{stages} pipeline stage{"s" if stages > 1 else ""}{chunked}'
