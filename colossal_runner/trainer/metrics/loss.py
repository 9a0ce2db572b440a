"""Loss: the mean of the per-step losses (each already a batch mean)."""
from __future__ import annotations

import math
import numbers
from typing import Union

import torch

from ...registry import METRICS
from ...utils.checks import check_positive_int
from .base import Metric, PendingSteps, reduce_over_data_group


@METRICS.register_module()
class Loss(Metric):
    """Mean loss over the steps of an epoch and over data-parallel replicas; lower is better.

    ``update`` takes the loss as a tensor or as a Python float (LossHook passes the float the
    Engine already read for its finite check, when it has one): floats are added up on the host
    at once, tensors on their device.

    Args:
        defer_steps: add up the held losses of up to this many steps together (see
            :class:`~colossal_runner.trainer.metrics.base.PendingSteps`); 1 adds every step's
            loss as it comes.
        epoch_only, device: as in :class:`Metric`.
    """

    name = 'Loss'

    def __init__(self, epoch_only: bool = False, device: Union[str, torch.device, None] = None,
                 defer_steps: int = 16):
        check_positive_int('defer_steps', defer_steps)
        self.defer_steps = defer_steps
        super().__init__(epoch_only=epoch_only, device=device)

    def reset(self) -> None:
        # The running sum stays on the device (no sync per step); the step count is a host int.
        self._sum = self.zeros(0).new_zeros(())
        self._host_sum = 0.0  # losses given as floats (a float64 sum, like the tensor one)
        self._count = 0
        self._pending = PendingSteps(self.defer_steps)
        self._last: Union[torch.Tensor, float, None] = None

    def update(self, output, label, loss: Union[torch.Tensor, float]) -> None:
        if type(loss) is float:
            self._host_sum += loss
            self._count += 1
            self._last = loss
            return
        if not isinstance(loss, torch.Tensor):
            if isinstance(loss, numbers.Real) and not isinstance(loss, bool):  # an int, a NumPy float
                return self.update(output, label, float(loss))
            raise TypeError(f'Loss.update expects the loss as a tensor or a float, got {type(loss).__name__}')
        value = loss.detach() if loss.requires_grad else loss  # the Engine's loss is already detached
        if value.ndim:
            value = value.reshape(())
        self._count += 1
        self._last = value
        if self._pending.step_limit < 1:
            self._sum += value
        elif self._pending.add((value,), value._version, 1):
            self._add_pending()

    def _add_pending(self) -> None:
        steps = self._pending.take('Loss')
        if steps:
            # summed in the accumulator's dtype (float64), as adding them one by one would
            self._sum += torch.stack([value for value, in steps]).sum(dtype=self._sum.dtype)

    def _value(self, total: torch.Tensor, count: int) -> float:
        pair = torch.stack([total.to(self._sum.dtype), self._sum.new_tensor(float(count))])
        pair = reduce_over_data_group(pair)
        return self.ratio(pair[0], pair[1])

    def get_last_step_value(self) -> float:
        if self._last is None:
            return self._value(self._sum, 0)
        if type(self._last) is float:
            return self._value(self._sum.new_tensor(self._last), 1)
        self._pending.last_step('Loss')  # checks that the held value was not overwritten
        return self._value(self._last, 1)

    def get_accumulated_value(self) -> float:
        self._add_pending()
        return self._value(self._sum + self._host_sum, self._count)

    @staticmethod
    def is_better(a: float, b: float) -> bool:
        if math.isnan(a):
            return False
        return math.isnan(b) or a < b
