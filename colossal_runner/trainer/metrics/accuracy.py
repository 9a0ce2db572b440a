"""Accuracy: the fraction of samples whose label is among the top-k predictions."""
from __future__ import annotations

from typing import Any, Optional, Union

import torch

from ...registry import METRICS
from .base import Metric, reduce_over_data_group
from ...utils.checks import check_positive_int


@METRICS.register_module()
class Accuracy(Metric):
    """Top-k accuracy of class scores ``output[..., C]`` against integer labels ``label[...]``.

    Outputs with extra dimensions (a language model's ``(B, T, V)``) count every position.

    Args:
        topk: count a sample as correct when its label is among the ``topk`` highest scores.
        epoch_only, device: as in :class:`Metric`.
    """

    name = 'Accuracy'

    def __init__(self, topk: int = 1, epoch_only: bool = False,
                 device: Union[str, torch.device, None] = None):
        check_positive_int('topk', topk)
        self.topk = topk
        super().__init__(epoch_only=epoch_only, device=device)

    def reset(self) -> None:
        # Correct counts stay on the device (no sync per step); sample counts are host ints.
        self._correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self._total = 0
        self._last = (torch.zeros((), dtype=torch.int64, device=self.device), 0)

    def update(self, output: Any, label: Any, loss: Optional[torch.Tensor] = None) -> None:
        if not isinstance(output, torch.Tensor) or not isinstance(label, torch.Tensor):
            raise TypeError(f'Accuracy.update expects tensors (scores [..., C], labels [...]), got '
                            f'{type(output).__name__} and {type(label).__name__}; write a Metric '
                            f'subclass for structured outputs.')
        # argmax / topk / == build no autograd graph, so no detach; reshape only when needed
        # (this runs every iteration, and each tensor call is a measurable share of a small step)
        scores = output if output.dim() == 2 else output.reshape(-1, output.shape[-1])
        target = label if label.dim() == 1 else label.reshape(-1)
        if scores.shape[0] != target.shape[0]:
            raise ValueError(f'Accuracy: {scores.shape[0]} predictions (output shape {tuple(output.shape)}) '
                             f'but {target.shape[0]} labels (label shape {tuple(label.shape)})')
        k = min(self.topk, scores.shape[-1])
        if k == 1:  # argmax is the cheap top-1; this runs every iteration
            correct = (scores.argmax(dim=-1) == target).sum()
        else:
            top = scores.topk(k, dim=-1).indices
            correct = (top == target.unsqueeze(-1)).any(dim=-1).sum()
        self._correct += correct
        self._total += target.numel()
        self._last = (correct, target.numel())

    def _value(self, correct: torch.Tensor, total: int) -> float:
        pair = torch.stack([correct.to(self.zeros(0).dtype), self.zeros(0).new_tensor(float(total))])
        pair = reduce_over_data_group(pair)
        return self.ratio(pair[0], pair[1])

    def get_last_step_value(self) -> float:
        return self._value(*self._last)

    def get_accumulated_value(self) -> float:
        return self._value(self._correct, self._total)

    def __repr__(self) -> str:
        return f'Accuracy(topk={self.topk}, epoch_only={self.epoch_only}, device={self.device})'
