"""NoPipelineSchedule: the whole model on this process, one batch per call."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional, Tuple

import torch

from ...registry import SCHEDULES
from .base import BaseSchedule, detach, loss_for_logging

if TYPE_CHECKING:
    from ..engine import Engine


@SCHEDULES.register_module()
class NoPipelineSchedule(BaseSchedule):
    """Forward the batch, compute the loss, and (when training) back-propagate it.

    This is what a hand-written loop does; the engine adds accumulation, clipping and the
    optimizer step around it.
    """

    def forward_backward_step(self, engine: 'Engine', data_iter: Iterator, forward_only: bool,
                              return_loss: bool = True) -> Tuple[Any, Any, Optional[torch.Tensor]]:
        # Plain training with one micro-step and nothing else takes Engine._plain_step instead.
        data, label = self.load_batch(engine, data_iter)
        # Forward only: the unwrapped model (Engine.module); DDP matters for backward alone.
        output = self.call_model(engine, data, model=engine.module if forward_only else None)
        loss = None
        if return_loss or not forward_only:
            loss = self.compute_loss(engine, output, label)
        if not forward_only:
            engine.backward(loss)
        return detach(output), label, (loss_for_logging(loss) if return_loss else None)
