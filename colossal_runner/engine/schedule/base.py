"""BaseSchedule: how one batch from the data iterator becomes forward/backward work.

The engine owns the optimizer step; a schedule owns everything between pulling a batch and
having the gradients in ``.grad``: splitting it into microbatches, running the forward passes
(under the engine's autocast), computing the loss, and calling the engine's backward. Keeping
that split lets the same Engine run plain and pipeline-parallel training.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Iterator, Optional, Tuple

import torch

from ..batch import call_model, to_device, unpack_batch

if TYPE_CHECKING:  # the engine imports the schedules, not the other way round
    from ..engine import Engine


def detach(obj: Any) -> Any:
    """A copy of ``obj`` (tensors, tuples, lists, dicts, nested) with every tensor detached.

    Returned outputs must not keep the autograd graph of the step alive.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        return type(obj)((k, detach(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, '_fields'):  # namedtuple
        return type(obj)(*(detach(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(detach(v) for v in obj)
    return obj


def check_loss(loss: Any) -> torch.Tensor:
    """``loss`` when it is a 0-dim tensor, else a clear error about the criterion."""
    if isinstance(loss, Mapping):  # parts of a loss, as some detection models return them
        raise ValueError(f'the criterion must return one 0-dim loss tensor, got a dict with the keys '
                         f'{sorted(map(str, loss))}; return one scalar tensor (e.g. the sum of the parts) '
                         f'and log the parts with a metric (a MetricHook).')
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f'the criterion must return a 0-dim tensor (a reduced loss), got {shape}; '
                         f"use a reduction such as reduction='mean'.")
    return loss


def loss_for_logging(loss: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The loss detached, and in float32 when autocast produced a half-precision one."""
    if loss is None:
        return None
    loss = loss.detach()
    if loss.dtype in (torch.float16, torch.bfloat16):
        loss = loss.float()
    return loss


class BaseSchedule(ABC):
    """The interface the Engine drives; subclasses decide how a batch is executed.

    ``forward_backward_step`` pulls exactly one batch with ``next(data_iter)`` (a pipeline
    schedule splits it into microbatches), moves it to ``engine.device``, runs the model
    under ``engine.autocast()`` and ``engine.criterion(output, label)``, and, unless
    ``forward_only``, calls ``engine.backward(loss / num_microbatches)`` for every
    microbatch. It returns ``(output, label, loss)`` with ``output`` detached and ``loss`` a
    detached 0-dim tensor (the mean over microbatches), or ``None`` for all three on a
    pipeline stage that does not compute the loss.
    """

    def load_batch(self, engine: 'Engine', data_iter: Iterator) -> Tuple[Any, Any]:
        """Pull one batch, check that it is ``(data, label)`` and move it to the engine's device."""
        try:
            batch = next(data_iter)
        except TypeError:
            if not hasattr(data_iter, '__next__'):  # checked only on failure: this runs every step
                raise TypeError(f'data_iter must be an iterator, got {type(data_iter).__name__}; '
                                f'pass iter(dataloader) rather than the dataloader itself.') from None
            raise
        # The common case (a list or tuple of two plain tensors, as a DataLoader yields) is
        # handled inline: this runs every step. Anything else takes the general helpers.
        if type(batch) in (list, tuple) and len(batch) == 2:
            data, label = batch
        else:
            data, label = unpack_batch(batch)
        return to_device(data, engine.device), to_device(label, engine.device)

    def call_model(self, engine: 'Engine', data: Any, model: Optional[torch.nn.Module] = None) -> Any:
        """Run ``model`` (the engine's by default) on ``data`` under the engine's autocast."""
        with engine.autocast():
            return call_model(engine.model if model is None else model, data)

    def compute_loss(self, engine: 'Engine', output: Any, label: Any) -> torch.Tensor:
        """``engine.criterion(output, label)`` under the engine's autocast, checked to be a scalar."""
        if engine.criterion is None:
            raise ValueError('the engine has no criterion, so no loss can be computed: training and '
                             'evaluation (engine.step / evaluate_step, Trainer.fit / evaluate) compute a '
                             'loss and need one; pass criterion=... to Engine (criterion in the config). '
                             'For the outputs alone, use Trainer.predict(data), or a schedule call with '
                             'forward_only=True, return_loss=False.')
        with engine.autocast():
            return check_loss(engine.criterion(output, label))

    @abstractmethod
    def forward_backward_step(self, engine: 'Engine', data_iter: Iterator, forward_only: bool,
                              return_loss: bool = True) -> Tuple[Any, Any, Optional[torch.Tensor]]:
        """Run one batch from ``data_iter``; return ``(output, label, loss)`` as described above."""

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'
