"""Loss: the mean loss per sample (per label element) over an epoch, from per-step batch means."""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Union

import torch

from ...engine.batch import batch_size_of
from ...registry import METRICS
from ...utils.checks import check_positive_int
from .base import Metric, PendingSteps, reduce_over_data_group

_TENSOR = torch.Tensor


def loss_weight(label: Any) -> int:
    """How many terms a mean-reduced loss of a batch with ``label`` averages: the weight of its step.

    A label tensor counts every element: ``B`` class indices, ``B x T`` token targets of a
    language model (whose loss is the mean over all ``B x T`` tokens), ``B x D`` regression
    targets. Labels of another structure (a dict, a tuple) count the first tensor's dim-0 size;
    a step without a label tensor counts 1.
    """
    if isinstance(label, torch.Tensor):
        return label.numel()
    if label is None:
        return 1
    try:
        return batch_size_of(label)
    except TypeError:
        return 1


@METRICS.register_module()
class Loss(Metric):
    """Mean loss per sample over an epoch and over data-parallel replicas; lower is better.

    Each step's loss is a mean over its batch, so the epoch value weights it by the number of
    terms it averages (:func:`loss_weight`: the label's number of elements, i.e. the batch size
    for class labels and ``B x T`` tokens for a language model): ``sum(loss * n) / sum(n)``,
    summed over replicas too. It equals the loss of the whole epoch's data at once, whatever the
    batch size, the short last batch or the number of replicas (an unweighted mean of batch
    means would not). It assumes a mean-reduced criterion; with ``ignore_index`` padding the
    ignored positions count as well. :meth:`get_last_step_value` is the latest step's loss as
    the criterion returned it (averaged over replicas).

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
        self.defer_steps = check_positive_int('defer_steps', defer_steps)
        super().__init__(epoch_only=epoch_only, device=device)

    def reset(self) -> None:
        # The running weighted sum stays on the device (no sync per step); the weights (samples)
        # are host ints, known from the label's shape without reading the device.
        self._sum = self.zeros(0).new_zeros(())
        self._host_sum = 0.0  # weighted losses given as floats (a float64 sum, like the tensor one)
        self._count = 0       # the sum of the weights
        self._pending = PendingSteps(self.defer_steps)
        self._weights: List[int] = []  # the weight of each held step, in the order held
        self._last: Union[torch.Tensor, float, None] = None

    def update(self, output, label, loss: Union[torch.Tensor, float]) -> None:
        weight = label.numel() if type(label) is _TENSOR else loss_weight(label)
        if type(loss) is float:
            self._host_sum += loss * weight
            self._count += weight
            self._last = loss
            return
        if not isinstance(loss, torch.Tensor):
            if isinstance(loss, numbers.Real) and not isinstance(loss, bool):  # an int, a NumPy float
                return self.update(output, label, float(loss))
            raise TypeError(f'Loss.update expects the loss as a tensor or a float, got {type(loss).__name__}')
        value = loss.detach() if loss.requires_grad else loss  # the Engine's loss is already detached
        if value.ndim:
            value = value.reshape(())
        self._count += weight
        self._last = value
        if self._pending.step_limit < 1:
            self._sum.add_(value, alpha=weight)  # one operation: sum += weight * value, in float64
        else:
            self._weights.append(weight)
            if self._pending.add((value,), value._version, 1):
                self._add_pending()

    def _add_pending(self) -> None:
        steps = self._pending.take('Loss')
        if not steps:
            return
        weights, self._weights = self._weights, []
        # Grouped by weight, each group summed (in float64) and scaled by a host number: a tensor
        # of the weights would be a copy to the device, which waits for it on a GPU. A run has one
        # batch size and a shorter last batch, so this is one or two groups.
        groups: Dict[int, List[torch.Tensor]] = {}
        for (value,), weight in zip(steps, weights):
            groups.setdefault(weight, []).append(value)
        for weight, values in groups.items():
            self._sum.add_(torch.stack(values).sum(dtype=self._sum.dtype), alpha=weight)

    def state_dict(self) -> Dict[str, Any]:
        # The held steps are saved as they are (scalars), not added up first: the resumed run then
        # adds the same numbers in the same groups as the uninterrupted one, to the last bit.
        return {'sum': self._sum.detach().cpu(), 'host_sum': self._host_sum, 'count': self._count,
                'held': [value.detach().cpu() for value, in self._pending.items],
                'weights': list(self._weights)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._sum = state['sum'].to(device=self._sum.device, dtype=self._sum.dtype)
        self._host_sum, self._count = float(state['host_sum']), int(state['count'])
        for value, weight in zip(state['held'], state['weights']):
            value = value.to(self.device)
            self._weights.append(int(weight))
            self._pending.add((value,), value._version, 1)

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
