"""NoPipelineSchedule: the whole model on this process, one batch per call."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional, Tuple

import torch

from ...registry import SCHEDULES
from ..batch import call_model
from .base import BaseSchedule, check_loss, detach, loss_for_logging

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
        # The same steps as BaseSchedule.call_model + compute_loss, under one autocast: this is
        # the whole per-step cost of the framework for plain training, so it stays flat.
        data, label = self.load_batch(engine, data_iter)
        loss = None
        with engine.autocast():
            output = call_model(engine.model, data)
            if return_loss or not forward_only:
                if engine.criterion is None:
                    return self.compute_loss(engine, output, label)  # raises, saying what to do
                loss = check_loss(engine.criterion(output, label))
        if not forward_only:
            engine.backward(loss)
        return detach(output), label, (loss_for_logging(loss) if return_loss else None)
