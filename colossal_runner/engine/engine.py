"""Engine: one optimizer step, whatever the schedule.

The engine owns:
  * the model, the criterion, the optimizer and the LR scheduler (stepped once per
    optimizer step, never per batch);
  * mixed precision (``amp``: autocast and, for fp16, the grad scaler);
  * gradient accumulation (``gradient_accumulation`` batches per optimizer step, the loss
    scaled by 1/N, DDP gradient sync only on the last micro-step);
  * data-parallel gradient averaging when the model is not DDP-wrapped (pipeline stages);
  * gradient clipping by global norm (over the whole pipeline when there is one);
  * what to do with a NaN / Inf loss (``nonfinite_loss``: stop the run, skip the step, or
    not check, so that nothing waits for the device);
  * the state that a checkpoint needs (``state_dict`` / ``load_state_dict``).

The schedule (``engine.schedule``) owns how one batch becomes forward/backward work.
"""
from __future__ import annotations

import inspect
import logging
import math
import warnings
from contextlib import nullcontext
from typing import Any, ContextManager, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..distributed.context import get_context
from ..distributed.launch import broadcast_tensors
from ..registry import SCHEDULES
from .amp import autocast, check_amp, make_grad_scaler, sync_found_inf
from .batch import call_model, concat_batches
from .schedule import BaseSchedule, NoPipelineSchedule
from .schedule.base import check_loss, detach, loss_for_logging

Step = Tuple[Any, Any, Optional[torch.Tensor]]
BUCKET_BYTES = 25 * 1024 * 1024  # same default bucket size as DDP
NONFINITE_CHOICES = ('raise', 'skip', 'off')
_NO_AUTOCAST = nullcontext()  # reusable: nullcontext keeps no state between uses


class NonFiniteLossError(FloatingPointError):
    """The loss of a training step was NaN or Inf (``nonfinite_loss='raise'``).

    ``loss`` is the value as a float, ``lr`` the learning rate of param group 0 at that step;
    the Trainer re-raises it with the epoch and iteration added.
    """

    def __init__(self, message: str, loss: float = float('nan'), lr: Optional[float] = None,
                 local: bool = True):
        super().__init__(message)
        self.loss, self.lr, self.local = loss, lr, local  # local: this rank's loss was the bad one


class Engine:
    """Run training and evaluation steps for ``model`` through ``step_schedule``.

    Args:
        model: the module (a pipeline stage's module, or a DDP-wrapped model).
        criterion: ``criterion(output, label) -> 0-dim loss``; may be None for inference.
        optimizer: a ``torch.optim.Optimizer``; may be None for evaluation only.
        lr_scheduler: a torch LR scheduler on ``optimizer``, stepped once per optimizer step.
        step_schedule: a :class:`BaseSchedule` (or a config dict for one);
            ``NoPipelineSchedule()`` when None.
        gradient_accumulation: batches per optimizer step (>= 1).
        clip_grad_norm: max global gradient norm; 0 disables clipping.
        amp: None, ``'bf16'`` or ``'fp16'`` (the latter with a GradScaler).
        data_parallel_group: process group over which gradients are averaged with a
            bucketed all-reduce when the model is not DDP (DDP syncs its own gradients).
        nonfinite_loss: ``'raise'`` (default): a NaN/Inf loss raises
            :class:`NonFiniteLossError` before the optimizer step, so the weights keep their
            last finite values; ``'skip'``: the step is dropped (no optimizer update, the LR
            schedule still advances, ``loss`` is returned as None so metrics leave it out) and
            counted in ``engine.nonfinite_skips``. Data-parallel replicas and pipeline stages
            take the same decision (the flag is all-reduced), so they never diverge.
            ``'off'``: no check. The loss is never read on the host and no flag is all-reduced,
            so on a GPU the host can queue the next step while this one runs; a NaN loss then
            trains on (and turns the weights NaN). With ``amp='fp16'`` the grad scaler skips
            steps with inf/NaN gradients itself; the loss is read only in a step it skipped, and
            when that loss is itself NaN/Inf, ``'raise'`` / ``'skip'`` apply as above.
    """

    def __init__(self, model: nn.Module, criterion: Optional[Any], optimizer: Optional[torch.optim.Optimizer],
                 lr_scheduler: Optional[Any] = None,
                 step_schedule: Union[BaseSchedule, Mapping, None] = None, gradient_accumulation: int = 1,
                 clip_grad_norm: float = 0.0, amp: Optional[str] = None,
                 data_parallel_group: Optional[Any] = None, nonfinite_loss: str = 'raise'):
        if not isinstance(model, nn.Module):
            raise TypeError(f'model must be a torch.nn.Module, got {type(model).__name__}')
        if criterion is not None and not callable(criterion):
            raise TypeError(f'criterion must be callable as criterion(output, label), got '
                            f'{type(criterion).__name__}')
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f'optimizer must be a torch.optim.Optimizer or None, got '
                            f'{type(optimizer).__name__}')
        # The class's step, bound: an LR scheduler replaces the instance's with a (*args) wrapper.
        needs = _required_arguments(type(optimizer).step.__get__(optimizer)) if optimizer is not None else []
        if needs:  # LBFGS's step(closure)
            kind = type(optimizer).__name__
            raise ValueError(
                f"optimizer {kind}.step() needs the argument(s) {', '.join(needs)} "
                f'(a closure that re-evaluates the model, called several times per step), but the engine '
                f'calls optimizer.step() once per step, without arguments. Use an optimizer whose closure is '
                f"optional (SGD, Adam, AdamW, ...: optimizer.type in the config), or drive {kind} from a "
                f'loop of your own.')
        if lr_scheduler is not None:
            if not callable(getattr(lr_scheduler, 'step', None)):
                raise TypeError(f'lr_scheduler must have a step() method (a torch LR scheduler), got '
                                f'{type(lr_scheduler).__name__}')
            needs = _required_arguments(lr_scheduler.step)
            if needs:
                raise ValueError(
                    f'lr_scheduler {type(lr_scheduler).__name__}.step() needs the argument(s) '
                    f"{', '.join(needs)}, but the engine steps its scheduler once per optimizer step, "
                    f'without arguments. Drive a metric-based scheduler such as ReduceLROnPlateau from a '
                    f'hook instead: give the engine lr_scheduler=None (no lr_scheduler in the config) and '
                    f"call scheduler.step(metric) in the hook's after_test_epoch; docs/lr_scheduler.md has "
                    f'such a hook.')
            if getattr(lr_scheduler, 'optimizer', optimizer) is not optimizer:
                raise ValueError('lr_scheduler was built on a different optimizer than the one given to '
                                 'Engine; build it with the same optimizer object.')
        if step_schedule is None:
            step_schedule = NoPipelineSchedule()
        elif isinstance(step_schedule, Mapping):
            step_schedule = SCHEDULES.build(step_schedule)
        if not isinstance(step_schedule, BaseSchedule):
            raise TypeError(f'step_schedule must be a BaseSchedule (e.g. NoPipelineSchedule()) or a config '
                            f'dict for one, got {type(step_schedule).__name__}')
        if (not isinstance(gradient_accumulation, int) or isinstance(gradient_accumulation, bool)
                or gradient_accumulation < 1):
            raise ValueError(f'gradient_accumulation must be an int >= 1 (batches per optimizer step), '
                             f'got {gradient_accumulation!r}')
        if (not isinstance(clip_grad_norm, (int, float)) or isinstance(clip_grad_norm, bool)
                or not clip_grad_norm >= 0):
            raise ValueError(f'clip_grad_norm must be a number >= 0 (0 disables clipping), '
                             f'got {clip_grad_norm!r}')
        if nonfinite_loss not in NONFINITE_CHOICES:
            raise ValueError(f"nonfinite_loss must be one of {list(NONFINITE_CHOICES)} (what to do when a "
                             f"training loss is NaN or Inf: stop the run, skip that step, or do not "
                             f"check), got {nonfinite_loss!r}; e.g. nonfinite_loss = 'skip' in the config.")
        # The config's learning rates (a scheduler built on the optimizer already keeps them as
        # initial_lr, and may have moved 'lr'), saved in checkpoints as each group's initial_lr: a
        # resume compares them with its config, whatever a hook (ReduceLROnPlateau) or a scheduler
        # did to 'lr' since. Not written into the optimizer: a torch scheduler built later would take
        # its base rate from it.
        self._config_lrs = [] if optimizer is None else [
            _copy_number(group.get('initial_lr', group['lr'])) for group in optimizer.param_groups]
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        # A scheduler LRSchedulerHook(by_epoch=True) took over from lr_scheduler and steps per epoch;
        # the hook saves its state, the engine its type, so that a resume can tell what changed.
        self.epoch_lr_scheduler: Optional[Any] = None
        self.schedule = step_schedule
        self.gradient_accumulation = gradient_accumulation
        self.clip_grad_norm = float(clip_grad_norm)
        self.amp = check_amp(amp)
        self.data_parallel_group = data_parallel_group
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device('cpu')
        self.scaler = make_grad_scaler(self.amp, self.device)
        self.grad_norm: Optional[torch.Tensor] = None  # global norm before clipping, last step
        self.step_lr: Any = None  # learning rate (param group 0) the latest step used; see step()
        self.training = True
        self.nonfinite_loss = nonfinite_loss
        self.nonfinite_skips = 0  # steps dropped because the loss was NaN/Inf ('skip')
        self._early_agreement: Optional[Tuple[Any, torch.Tensor]] = None  # see begin_loss_agreement
        self._host_loss: Optional[Tuple[torch.Tensor, float]] = None  # see host_loss
        self._last_graph: Optional[torch.Tensor] = None  # see backward

    @property
    def model(self) -> nn.Module:
        """The module being trained; may be replaced (e.g. by its DDP wrapper)."""
        return self._model

    @model.setter
    def model(self, module: nn.Module) -> None:
        self._model = module
        # DDP's isinstance goes through ABCMeta (it is also a Joinable) and costs microseconds;
        # the engine asks every step, so the answer is kept with the module.
        self._is_ddp = isinstance(module, DistributedDataParallel)

    @property
    def module(self) -> nn.Module:
        """The model without its DDP wrapper: what evaluation and inference run (see
        :meth:`sync_buffers`), since DDP's forward may start a collective every rank must join."""
        return self._model.module if self._is_ddp else self._model

    def sync_buffers(self) -> None:
        """Give every data-parallel replica the first replica's buffers (BatchNorm's running
        statistics, which each replica updates from its own batches), as DDP's next forward would.

        Collective over the DDP group, or over ``data_parallel_group`` (the replicas of a pipeline
        stage, which DDP does not wrap); a no-op without either or when DDP does not sync buffers.
        Evaluation calls it once, then runs the unwrapped :attr:`module`: DDP's own forward would
        broadcast the buffers at the first evaluation step, which hangs when a replica has no test
        batch at all, and by itself (``Trainer.predict`` on one rank) right after training.
        """
        if not dist.is_initialized():
            return
        if self._is_ddp:
            ddp = self._model
            if not getattr(ddp, 'forward_sync_buffers', getattr(ddp, 'broadcast_buffers', True)):
                return
            module, group = ddp.module, ddp.process_group
        else:
            module, group = self._model, self.data_parallel_group
            # Replica 0's buffers are what its checkpoint holds: evaluate every replica with them.
            if group is None or dist.get_world_size(group) < 2:
                return
        buffers = list(module.buffers())
        if buffers:
            broadcast_tensors(buffers, dist.get_global_rank(group, 0), group)

    # ------------------------------------------------------------------ modes
    def train(self) -> None:
        """Put the model (and the criterion, if it is a module) in training mode."""
        self._set_mode(True)

    def eval(self) -> None:
        """Put the model (and the criterion, if it is a module) in evaluation mode."""
        self._set_mode(False)

    def _set_mode(self, training: bool) -> None:
        self.training = training
        self.model.train(training)
        if isinstance(self.criterion, nn.Module):
            self.criterion.train(training)

    # ------------------------------------------------------------------ steps
    def step(self, data_iter: Iterator) -> Step:
        """One optimizer step over ``gradient_accumulation`` batches from ``data_iter``.

        Returns ``(output, label, loss)`` for the whole step: outputs and labels of the
        micro-steps concatenated (detached), the mean loss as a detached 0-dim tensor;
        all None on a pipeline stage that does not compute the loss. The learning rate the
        step uses (param group 0, before the scheduler moves it) is kept in ``step_lr``.
        """
        if self.optimizer is None:
            raise ValueError('engine.step() needs an optimizer; this Engine was built with optimizer=None '
                             '(evaluation only).')
        # Kept here, where it costs one lookup, so that LRSchedulerHook needs no call per step.
        self.step_lr = self.optimizer.param_groups[0]['lr']
        # No zero_grad here: every step (a dropped one, and one that raises, too) ends with the
        # gradients set to None, and a second zero_grad per step costs about 10 us, a measurable
        # share of a small model's step (benchmarks/overhead.py).
        try:  # costs nothing until something raises (Python 3.11's zero-cost exceptions)
            if (type(self.schedule) is NoPipelineSchedule and self.gradient_accumulation == 1
                    and self.amp is None and self.clip_grad_norm == 0 and self.data_parallel_group is None
                    and not self._is_ddp and self.criterion is not None):
                return self._plain_step(data_iter)
            if self.gradient_accumulation == 1:
                results = [self.schedule.forward_backward_step(self, data_iter, False, True)]
            else:
                results = []
                for micro in range(self.gradient_accumulation):
                    with self._no_sync(micro < self.gradient_accumulation - 1):
                        results.append(self.schedule.forward_backward_step(self, data_iter, False, True))
            # With fp16 the grad scaler skips steps with inf/NaN gradients and lowers its scale
            # (overflow is expected there), so the loss is checked before the optimizer step only in
            # fp32 / bf16 runs; with fp16, only in a step the scaler skipped (below).
            pipeline_group = _pipeline_group()
            if (self.scaler is None and self.nonfinite_loss != 'off'
                    and not self._loss_is_finite(results, pipeline_group)):
                return self._drop_step(results)
            self._average_gradients()
            skipped = self._optimizer_step(pipeline_group)
            if not skipped:
                if self.lr_scheduler is not None:
                    self.lr_scheduler.step()
            elif self.nonfinite_loss != 'off' and not self._loss_is_finite(results, pipeline_group):
                # fp16: the scaler skipped the update, and the loss itself is NaN/Inf (not an overflow of
                # the scaled gradients): 'raise' or 'skip' as without fp16. Read only in such a step,
                # whose skip the scaler's scale, read on the host, already told; every rank skipped it.
                return self._drop_step(results)
            elif self.lr_scheduler is not None:  # the schedule follows the step count even when fp16 skips
                step_scheduler(self.lr_scheduler)
            self.optimizer.zero_grad(set_to_none=True)
            return self._gather(results)
        except BaseException:
            # The model, the criterion or the data raised (or the data ended inside the step, or
            # Ctrl-C): the backward passes already run leave gradients that the next step, in this
            # fit or the next, must not add to.
            self.optimizer.zero_grad(set_to_none=True)
            raise

    def _plain_step(self, data_iter: Iterator) -> Step:
        """:meth:`step` for the common case, written out as a hand-written loop would be.

        One process, one micro-step, no autocast, no clipping, no gradient averaging: what is
        left is batch, forward, loss, backward, finite check, optimizer and scheduler step.
        The general path does the same through the schedule's and the engine's helpers; for a
        small model those calls are a measurable share of the step (one to two percent for the
        model in benchmarks/overhead.py), so this path calls no helper but ``load_batch`` and
        ``backward`` (which keeps the graph). The two paths are checked against each other bit
        for bit in tests/engine.
        """
        data, label = self.schedule.load_batch(self, data_iter)
        model = self._model
        output = model(data) if type(data) is torch.Tensor else call_model(model, data)
        loss = self.criterion(output, label)
        if type(loss) is not torch.Tensor or loss.ndim:
            check_loss(loss)  # raises, saying what the criterion must return
        self.backward(loss)  # one micro-step, no scaler: loss.backward(), and the graph kept
        loss = loss.detach() if loss.dtype is torch.float32 else loss_for_logging(loss)
        output = output.detach() if type(output) is torch.Tensor else detach(output)
        if self.nonfinite_loss != 'off':
            # item() + math.isfinite: see _loss_is_finite; one process, so nobody to agree with.
            value = loss.item()
            if not math.isfinite(value):
                return self._drop_step([(output, label, loss)])
            self._host_loss = (loss, value)
        self.optimizer.step()
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return output, label, loss

    @torch.no_grad()
    def evaluate_step(self, data_iter: Iterator) -> Step:
        """A forward-only step on one batch (no gradients, no optimizer step); it computes the loss,
        so it needs a criterion (``Trainer.predict`` gives outputs without one)."""
        return self.schedule.forward_backward_step(self, data_iter, forward_only=True, return_loss=True)

    def autocast(self) -> ContextManager:
        """The autocast context for forward passes (a no-op when ``amp`` is None)."""
        return _NO_AUTOCAST if self.amp is None else autocast(self.amp, self.device)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss / gradient_accumulation``, scaled by the grad scaler for fp16."""
        if self.gradient_accumulation > 1:
            loss = loss / self.gradient_accumulation
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()
        # The loss, graph attached, stays referenced until the next backward, as `loss` does in
        # a hand-written loop. Each parameter's gradient accumulator lives only as long as some
        # graph holds it, and the next forward would make a new one for every parameter
        # otherwise: with the step's results detached, that was about 15,000 instructions per
        # step for benchmarks/overhead.py's model (0.8%, benchmarks/instructions.py). backward()
        # has already freed what the graph saved for it, so the nodes are all that stays (and
        # what a custom autograd Function keeps on ctx by itself, as in a hand-written loop).
        self._last_graph = loss

    def backward_by_grad(self, tensors: Any, grads: Any) -> None:
        """Back-propagate received gradients through ``tensors`` (pipeline stages).

        The gradients come from the next stage, which already applied the loss scaling.
        """
        if self.scaler is not None and getattr(self.scaler, '_scale', None) is None:
            # A GradScaler makes its scale tensor on its first scale() call, and a stage without
            # the loss never scales one: unscale_ would then fail ("_scale is None"). Scaling a
            # throwaway value starts it (once; again after a load_state_dict, which resets it).
            # Every stage starts from the same scale and updates it on the same found-inf decision
            # (sync_found_inf), so it is the scale the gradients carry.
            self.scaler.scale(torch.ones((), device=self.device))
        torch.autograd.backward(tensors, grad_tensors=grads)

    def host_loss(self, loss: Any) -> Optional[float]:
        """``loss`` as a Python float if this engine already read that very tensor to the host,
        else None.

        The plain step reads its loss with ``item()`` for the finite check, which on a GPU waits
        for the step anyway; the Loss metric adds this number up instead of the tensor, so the
        loss costs no tensor operation of its own. Other paths (pipelines, accumulation, fp16,
        ``nonfinite_loss='off'``, evaluation) give None, and the metric adds the tensor as before.
        """
        read = self._host_loss
        return read[1] if read is not None and read[0] is loss else None

    def get_lr(self) -> float:
        """The learning rate of the optimizer's first param group."""
        if self.optimizer is None:
            raise ValueError('this Engine has no optimizer, so it has no learning rate')
        return float(self.optimizer.param_groups[0]['lr'])

    # ------------------------------------------------------------------ internals
    def _no_sync(self, skip_sync: bool) -> ContextManager:
        if skip_sync and self._is_ddp:
            return self.model.no_sync()
        return nullcontext()

    def _params(self) -> List[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _average_gradients(self) -> None:
        """Average gradients over ``data_parallel_group`` unless DDP already did."""
        group = self.data_parallel_group
        if group is None or self._is_ddp or not dist.is_initialized():
            return
        size = dist.get_world_size(group)
        if size == 1:
            return
        params = self._params()
        for p in params:  # every rank must reduce the same layout, so missing grads count as zeros
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        all_reduce_mean([p.grad for p in params], group, size)

    def _optimizer_step(self, pipeline_group: Optional[Any]) -> bool:
        """Unscale, clip, step; return True when the grad scaler skipped the update."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
            if pipeline_group is not None:
                sync_found_inf(self.scaler, self.optimizer, pipeline_group)
        if self.clip_grad_norm > 0:
            self.grad_norm = clip_global_norm(self._params(), self.clip_grad_norm, pipeline_group)
        if self.scaler is None:
            self.optimizer.step()
            return False
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return self.scaler.get_scale() < scale  # the scale backs off exactly when inf/nan was found

    def wants_loss_agreement(self) -> bool:
        """Whether a pipeline schedule may start the finite-loss agreement itself
        (:meth:`begin_loss_agreement`): training without fp16, with one micro-step, and with
        the check on."""
        return self.scaler is None and self.gradient_accumulation == 1 and self.nonfinite_loss != 'off'

    def begin_loss_agreement(self, bad: torch.Tensor) -> None:
        """Start the all-reduce of "some loss was NaN/Inf" over the pipeline group, without waiting.

        A pipeline schedule calls it on every stage during :meth:`step`: stages without a loss
        at the start, the last stage once its last microbatch's loss exists. The step waits for
        it only before the optimizer step, so its latency hides behind the remaining backward
        passes instead of following the last of them. ``bad`` is a 0-dim tensor, nonzero when
        a loss of this stage is not finite (no host read is needed to make it).
        """
        flag = bad.detach().to(device=self.device, dtype=torch.float32).reshape(())
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_pipeline_group(), async_op=True)
        self._early_agreement = (work, flag)

    def _loss_is_finite(self, results: List[Step], pipeline_group: Optional[Any]) -> bool:
        """Whether every micro-step's loss is finite, agreed by every rank.

        One scalar read per step (the same cost as the fp16 GradScaler's inf check). The flag
        is all-reduced over the groups this engine already communicates in: data-parallel
        replicas (DDP's group or ``data_parallel_group``) must skip or stop together, and
        pipeline stages other than the last have no loss of their own. When the pipeline
        schedule already started the pipeline part (:meth:`begin_loss_agreement`), only its
        result is waited for here.
        """
        if self._early_agreement is not None:
            work, bad = self._early_agreement
            self._early_agreement = None
            work.wait()
            for group in self._agreement_groups(None):  # then across data-parallel replicas
                dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=group)
            return not bool(bad)
        # item() + math.isfinite: under a microsecond on the CPU, where bool(torch.isfinite(x))
        # costs about 15; on a GPU either one waits for the step to finish.
        if len(results) == 1:
            loss = results[0][2]
            finite = loss is None or math.isfinite(loss.item())
        else:
            finite = all(math.isfinite(loss.item()) for _, _, loss in results if loss is not None)
        groups = self._agreement_groups(pipeline_group)
        if not groups:
            return finite
        bad = torch.tensor(0.0 if finite else 1.0, device=self.device)
        for group in groups:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=group)
        return not bool(bad)

    def _agreement_groups(self, pipeline_group: Optional[Any]) -> List[Any]:
        """Data-parallel group, then pipeline group: after both, every rank of the job agrees.

        Ordered so that the common single-process case costs a few attribute checks per step.
        """
        groups = []
        if self._is_ddp:
            groups.append(self.model.process_group)
        elif (self.data_parallel_group is not None and dist.is_initialized()
              and dist.get_world_size(self.data_parallel_group) > 1):
            groups.append(self.data_parallel_group)
        if pipeline_group is not None:  # only ever set while torch.distributed is initialized
            groups.append(pipeline_group)
        return groups

    def _drop_step(self, results: List[Step]) -> Step:
        """A step whose loss was NaN/Inf: raise, or drop the update and count it."""
        self.optimizer.zero_grad(set_to_none=True)
        losses = [loss for _, _, loss in results if loss is not None]
        bad = [float(v) for v in losses if not torch.isfinite(v)]
        value = bad[0] if bad else float('nan')
        lr = self.get_lr()
        if self.nonfinite_loss == 'raise':
            where = f'loss {value}' if bad else 'the loss on another rank'
            raise NonFiniteLossError(
                f'{where} is not finite, learning rate {lr:.6g}; the optimizer step was not taken. '
                f'Lower the learning rate, set clip_grad_norm, check the data for NaN/Inf, or set '
                f"nonfinite_loss = 'skip' to drop such steps.", loss=value, lr=lr, local=bool(bad))
        self.nonfinite_skips += 1
        if self.lr_scheduler is not None:  # the schedule follows the iteration count, as with fp16 skips
            step_scheduler(self.lr_scheduler)
        output, label, _ = self._gather(results)
        return output, label, None

    def _gather(self, results: List[Step]) -> Step:
        if len(results) == 1:  # a schedule returns all three or none of them
            return results[0]
        if any(loss is None for _, _, loss in results):
            return None, None, None
        outputs, labels, losses = zip(*results)
        loss = losses[0] if len(losses) == 1 else torch.stack(list(losses)).mean()
        return concat_batches(list(outputs)), concat_batches(list(labels)), loss

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """Model (unwrapped from DDP), optimizer, LR scheduler and grad scaler state, ``step_lr``, and
        the optimizer's and the scheduler's class names (a resume compares them with its own)."""
        model = self.model.module if self._is_ddp else self.model
        by_epoch = self.lr_scheduler is None and self.epoch_lr_scheduler is not None
        scheduler = self.epoch_lr_scheduler if by_epoch else self.lr_scheduler
        return {'model': model.state_dict(),
                'optimizer': self._optimizer_state(),
                'lr_scheduler': self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
                'scaler': self.scaler.state_dict() if self.scaler is not None else None,
                # the LearningRate metric reads it; a run resumed before its next step reports it too
                'step_lr': self.step_lr,
                'optimizer_type': kind_name(self.optimizer),
                # a per-epoch scheduler's state is LRSchedulerHook's; its type is recorded here
                'lr_scheduler_type': kind_name(scheduler), 'lr_scheduler_by_epoch': by_epoch}

    def _optimizer_state(self) -> Optional[Dict[str, Any]]:
        """The optimizer's state_dict, each param group with the config's rate as ``initial_lr``
        (when no scheduler set one)."""
        if self.optimizer is None:
            return None
        state = self.optimizer.state_dict()
        for group, lr in zip(state['param_groups'], self._config_lrs):
            group.setdefault('initial_lr', lr)
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore what :meth:`state_dict` saved; parts this engine does not have are skipped.

        An optimizer of another class than the checkpoint's is refused before anything is loaded.
        An LR scheduler the checkpoint has no state for (none, another class, or stepped per epoch
        where this run steps per optimizer step, or the reverse) starts from its first step, with a
        warning; a checkpoint's scheduler that this run does not have leaves the checkpoint's
        learning rate in place for the rest of the run, with a warning naming it.
        """
        if not isinstance(state, Mapping) or 'model' not in state:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise KeyError(f"an engine state needs the key 'model' (and optionally 'optimizer', "
                           f"'lr_scheduler', 'scaler', 'step_lr'); got {got}")
        saved_kind = state.get('optimizer_type')  # None in checkpoints from before it was saved
        if (self.optimizer is not None and state.get('optimizer') is not None and saved_kind is not None
                and saved_kind != kind_name(self.optimizer)):
            kind = kind_name(self.optimizer)
            raise ValueError(
                f"the checkpoint's optimizer is {saved_kind}, this run builds {kind}: the state of one does "
                f'not fit the other (torch would load it, then fail at the first step or train on with '
                f"{saved_kind}'s settings under {kind}'s update rule). Resume with optimizer.type="
                f"'{saved_kind}' in the config, or load the weights only (finetune=True, e.g. "
                f'LoadCheckpointHook(checkpoint_dir, finetune=True)) to start {kind} afresh.')
        model = self.model.module if self._is_ddp else self.model
        model.load_state_dict(state['model'], strict=strict)
        by_epoch = self.lr_scheduler is None and self.epoch_lr_scheduler is not None
        scheduler = self.epoch_lr_scheduler if by_epoch else self.lr_scheduler
        fresh = scheduler is not None and _scheduler_is_fresh(scheduler, by_epoch, state)
        if self.optimizer is not None and state.get('optimizer') is not None:
            # settings a scheduler moves itself (OneCycleLR's momentum) differ from the config's anyway
            driven = ('momentum', 'betas') if getattr(scheduler, 'cycle_momentum', False) else ()
            if fresh:  # the new schedule sets the LR from its first step, not the checkpoint
                driven += ('lr', 'initial_lr')
                own = [dict(group) for group in self.optimizer.param_groups]
            load_optimizer_state(self.optimizer, state['optimizer'], driven)
            if fresh:
                for group, mine in zip(self.optimizer.param_groups, own):
                    # and the keys the scheduler added (OneCycleLR's max_lr), which the checkpoint lacks
                    group.update({k: v for k, v in mine.items() if k in driven or k not in group})
        if self.lr_scheduler is not None and state.get('lr_scheduler') is not None and not fresh:
            load_scheduler_state(self.lr_scheduler, state['lr_scheduler'])
        if fresh:
            _warn_fresh_scheduler(scheduler, by_epoch, state)
        elif (scheduler is None and self.optimizer is not None  # (an evaluation engine has neither)
              and (state.get('lr_scheduler') is not None or state.get('lr_scheduler_type'))):
            _warn_no_scheduler(self.optimizer, state)
        if self.scaler is not None and state.get('scaler') is not None:
            self.scaler.load_state_dict(state['scaler'])
        if state.get('step_lr') is not None:  # older checkpoints have none
            self.step_lr = state['step_lr']

    def __repr__(self) -> str:
        return (f'Engine(schedule={self.schedule!r}, gradient_accumulation={self.gradient_accumulation}, '
                f'clip_grad_norm={self.clip_grad_norm}, amp={self.amp!r}, nonfinite_loss='
                f'{self.nonfinite_loss!r}, device={self.device})')


# What an LR scheduler's state holds about how far the run has gone; every other entry is a setting
# (total_steps, warmup_steps, T_max, eta_min, ...), which the run's config decides.
_SCHEDULER_PROGRESS = frozenset(('last_epoch', '_step_count', '_last_lr', 'base_lrs', '_is_initial',
                                 '_get_lr_called_within_step', 'verbose'))


def load_scheduler_state(scheduler: Any, saved: Mapping[str, Any]) -> None:
    """Load a scheduler's progress from ``saved``, keeping the settings it was built with.

    torch's ``load_state_dict`` takes back every attribute, settings included: a run resumed with a
    larger ``max_epochs`` (so a larger ``total_steps``) would run its new epochs on the old, finished
    schedule, at its final LR. mmcv's LR hooks read the run's length from the config at run time;
    the same here: where the settings differ, the config's are kept and logged, and the current LR
    is recomputed on the new schedule when the scheduler has a closed form.
    """
    if not isinstance(saved, Mapping):
        scheduler.load_state_dict(saved)  # torch's own error
        return
    own = scheduler.state_dict()
    # A setting is a plain attribute (a number, a string, lists or dicts of them); the entries of
    # composite schedulers (SequentialLR's _schedulers: scheduler objects, saved as their states)
    # are progress, and load as torch loads them.
    changed = {key: (saved[key], value) for key, value in own.items()
               if key in saved and key not in _SCHEDULER_PROGRESS
               and _is_setting(getattr(scheduler, key, None)) and _is_setting(value) and saved[key] != value}
    scheduler.load_state_dict(saved)
    if not changed:
        return
    for key, (_, value) in changed.items():
        setattr(scheduler, key, value)
    closed_form = getattr(scheduler, '_get_closed_form_lr', None)
    if callable(closed_form):
        lrs = closed_form()
        for group, lr in zip(scheduler.optimizer.param_groups, lrs):
            group['lr'] = lr
        scheduler._last_lr = list(lrs)
    step = saved.get('last_epoch')
    text = ', '.join(f'{key}={value!r} (the checkpoint: {old!r})' for key, (old, value) in changed.items())
    logging.getLogger('colossal_runner').warning(
        f'lr_scheduler: the checkpoint was saved with other settings; this run continues at step {step} '
        f"with the config's {text}" + (f'; learning rate now {scheduler.get_last_lr()[0]:.6g}'
                                       if callable(closed_form) else ''))


_KIND_BASES = ('Optimizer', 'LRScheduler', '_LRScheduler', 'object')


def kind_name(obj: Any) -> Optional[str]:
    """The name of the optimizer or LR scheduler class ``obj`` follows, which a checkpoint records and
    a resume compares: the first class in its MRO that torch or colossal_runner defines, so that a
    user's subclass (``class MySGD(torch.optim.SGD)`` adding logging) resumes an ``SGD``
    checkpoint; the class's own name when none is (an optimizer written from scratch)."""
    if obj is None:
        return None
    for cls in type(obj).__mro__:
        if cls.__name__ in _KIND_BASES:
            break
        if cls.__module__.split('.')[0] in ('torch', 'colossal_runner'):
            return cls.__name__
    return type(obj).__name__


def _saved_scheduler(state: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """What the checkpoint's run had: ``(how, type)``, ``how`` being 'step' (stepped per optimizer
    step), 'epoch' (by LRSchedulerHook(by_epoch=True)), 'none', or None where a checkpoint from
    before the type was saved cannot tell a per-epoch scheduler from none."""
    kind = state.get('lr_scheduler_type')
    if state.get('lr_scheduler') is not None:
        return 'step', kind
    if 'lr_scheduler_type' not in state:
        return None, None
    return ('epoch' if state.get('lr_scheduler_by_epoch') else 'step') if kind else 'none', kind


def _scheduler_is_fresh(scheduler: Any, by_epoch: bool, state: Mapping[str, Any]) -> bool:
    """Whether the checkpoint has no state for ``scheduler``, which then starts from its first step."""
    how, kind = _saved_scheduler(state)
    if how is None:  # an older checkpoint: only a per-step scheduler's absence is known
        return not by_epoch
    return how != ('epoch' if by_epoch else 'step') or (kind is not None and kind != kind_name(scheduler))


def _how(by_epoch: bool, kind: Optional[str]) -> str:
    """'a StepLR stepped per epoch (...)', 'an lr_scheduler stepped per optimizer step'."""
    return (f'a {kind}' if kind else 'an lr_scheduler') + (
        ' stepped per epoch (LRSchedulerHook(by_epoch=True))' if by_epoch else ' stepped per optimizer step')


def _warn_fresh_scheduler(scheduler: Any, by_epoch: bool, state: Mapping[str, Any]) -> None:
    how, kind = _saved_scheduler(state)
    if how is None:
        had = ('no lr_scheduler stepped per optimizer step (it had none, or LRSchedulerHook(by_epoch=True) '
               'stepped it per epoch)')
    elif how == 'none':
        had = 'no lr_scheduler'
    else:
        had = _how(how == 'epoch', kind)
    mine = type(scheduler).__name__
    lr = scheduler.optimizer.param_groups[0]['lr']
    logging.getLogger('colossal_runner').warning(
        f"lr_scheduler: the checkpoint's run had {had}; this run has {_how(by_epoch, mine)}, with no state "
        f'in it, so its schedule starts from its first step now, mid-run, at learning rate {lr:.6g} '
        f"(the optimizer's other state is the checkpoint's). To continue the checkpoint's schedule, "
        f'resume with the lr_scheduler it was trained with (same type; LRSchedulerHook with the same '
        f'by_epoch); to restart the schedule on purpose, nothing to do.')


def _warn_no_scheduler(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    how, kind = _saved_scheduler(state)
    lr = f'{optimizer.param_groups[0]["lr"]:.6g}'
    logging.getLogger('colossal_runner').warning(
        f"lr_scheduler: the checkpoint's run had {_how(how == 'epoch', kind)}, this run has none: it "
        f"trains on at the checkpoint's learning rate, {lr}, the old schedule's last value, for the rest "
        f'of the run. To continue the schedule, put the lr_scheduler back in the config (the same type); '
        f'for a constant learning rate of your choice, load the weights only (finetune=True) with that '
        f'optimizer.lr.')


def _required_arguments(method: Any) -> List[str]:
    """Names of the parameters ``method`` cannot be called without (``metrics`` for ReduceLROnPlateau)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): assume it takes none
        return []
    return [p.name for p in parameters if p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _is_setting(value: Any) -> bool:
    """A plain value (number, string, list of them): not a nested scheduler's state."""
    if isinstance(value, (list, tuple)):
        return all(_is_setting(v) for v in value)
    if isinstance(value, Mapping):
        return all(_is_setting(v) for v in value.values())
    return value is None or isinstance(value, (bool, int, float, str))


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, driven: Sequence[str] = ()) -> None:
    """``optimizer.load_state_dict(saved)``, refusing a state saved by another kind of optimizer.

    torch loads an Adam state into SGD without a word and fails at the first step
    (``KeyError: 'momentum'``). The settings the checkpoint saved (lr, momentum, ...) are the ones
    training continues with, as in mmcv; those that differ from the config are logged.
    """
    before = optimizer.state_dict()
    differ = {key: values for key, values in _optimizer_settings_differ(before, saved).items()
              if key in optimizer.defaults and key not in driven}
    try:
        optimizer.load_state_dict(saved)
    except Exception as error:
        # torch may fail half-way, e.g. SGD's state into Adam: KeyError('step') from Adam's
        # __setstate__, after SGD's settings and buffers were put in place (and the first group
        # given the defaults of the flags Adam's __setstate__ fills in: what it still lacks is
        # what the checkpoint cannot give).
        missing = _missing_settings(optimizer, optimizer.param_groups[:1])
        optimizer.load_state_dict(before)
        if not missing and isinstance(saved, Mapping):  # failed before taking the checkpoint's groups
            missing = _missing_settings(optimizer, saved.get('param_groups') or ())
        if missing:
            raise _other_kind(optimizer, missing) from error
        raise
    # Checked after loading: an optimizer's __setstate__ fills in settings that older torch
    # versions did not save (foreach, fused, ...), so only what is still missing counts.
    missing = _missing_settings(optimizer, optimizer.param_groups)
    if missing:
        optimizer.load_state_dict(before)  # nothing half-loaded
        raise _other_kind(optimizer, missing)
    for group, mine in zip(optimizer.param_groups, before['param_groups']):
        if 'initial_lr' not in group and 'initial_lr' in mine:  # a checkpoint from before it was recorded
            group['initial_lr'] = mine['initial_lr']
    if differ:
        logging.getLogger('colossal_runner').warning(
            "optimizer: the checkpoint's settings are kept, and differ from this run's config: "
            + ', '.join(f'{key}={theirs!r} (config: {mine!r})' for key, (theirs, mine) in differ.items())
            + '. To train on with new optimizer settings, load the weights only (finetune=True).')


def _missing_settings(optimizer: torch.optim.Optimizer, groups: Sequence[Any]) -> List[str]:
    """The optimizer's settings (its ``defaults``) that some param group in ``groups`` lacks."""
    return sorted({key for group in groups if isinstance(group, Mapping)
                   for key in optimizer.defaults if key not in group})


def _other_kind(optimizer: torch.optim.Optimizer, missing: List[str]) -> ValueError:
    kind = type(optimizer).__name__
    return ValueError(f"the checkpoint's optimizer state does not fit this run's {kind}: "
                      f'it has no {missing}, which {kind} needs, so it was saved by '
                      f'another kind of optimizer. Resume with the optimizer the checkpoint was trained '
                      f'with, or load the weights only (finetune=True, or the model weights by hand).')


def step_scheduler(scheduler: Any) -> None:
    """``scheduler.step()`` without torch's warning that it came before ``optimizer.step()``: meant
    for a scheduler stepped out of turn, it also fires for a step the schedule owes when no optimizer
    step was taken (one the grad scaler or the finite-loss check skipped, an epoch's end in a
    resumed process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message=r'Detected call of `lr_scheduler\.step\(\)`')
        scheduler.step()


def _copy_number(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _optimizer_settings_differ(own: Mapping[str, Any], saved: Any) -> Dict[str, Tuple[Any, Any]]:
    """Settings of param group 0 (lr as the schedule's initial_lr) that ``saved`` has otherwise."""
    try:
        mine, theirs = own['param_groups'][0], saved['param_groups'][0]
    except (KeyError, IndexError, TypeError):
        return {}
    differ = {}
    for key in sorted(set(mine) & set(theirs) - {'params', 'param_names', 'initial_lr'}):
        a, b = (mine.get('initial_lr', mine[key]), theirs.get('initial_lr', theirs[key])) if key == 'lr' \
            else (mine[key], theirs[key])
        if _is_setting(a) and a != b:
            differ[key] = (b, a)
    return differ


def all_reduce_mean(tensors: List[torch.Tensor], group: Any, size: int,
                    bucket_bytes: int = BUCKET_BYTES) -> None:
    """Average ``tensors`` in place over ``group`` with one all-reduce per bucket.

    DDP does this for a wrapped model, but a pipeline stage is driven by the schedule's
    point-to-point traffic rather than one forward/backward, so it averages here instead;
    buckets keep the number of collectives small without one huge temporary buffer.
    """
    bucket: List[torch.Tensor] = []
    used = 0
    for tensor in tensors:
        if bucket and (used + tensor.numel() * tensor.element_size() > bucket_bytes
                       or tensor.dtype != bucket[0].dtype or tensor.device != bucket[0].device):
            _reduce_bucket(bucket, group, size)
            bucket, used = [], 0
        bucket.append(tensor)
        used += tensor.numel() * tensor.element_size()
    if bucket:
        _reduce_bucket(bucket, group, size)


def _reduce_bucket(bucket: List[torch.Tensor], group: Any, size: int) -> None:
    flat = torch.cat([t.reshape(-1) for t in bucket])
    dist.all_reduce(flat, group=group)
    flat.div_(size)
    offset = 0
    for tensor in bucket:
        tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def _pipeline_group() -> Optional[Any]:
    """The current pipeline's process group when there is more than one stage, else None."""
    context = get_context()
    if context.pipeline_size == 1 or context.pipeline_group is None or not dist.is_initialized():
        return None
    return context.pipeline_group


def clip_global_norm(params: List[nn.Parameter], max_norm: float,
                     pipeline_group: Optional[Any] = None) -> torch.Tensor:
    """Clip gradients to ``max_norm`` by their global norm; return the norm before clipping.

    With pipeline stages the parameters of one model are spread over ``pipeline_group``,
    so the squared norms are summed over it first: the result equals clipping the
    un-pipelined model.
    """
    if pipeline_group is None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    device = params[0].device if params else torch.device('cpu')
    local = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=device)
    squared = local.float() ** 2
    dist.all_reduce(squared, group=pipeline_group)
    total = squared.sqrt()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
