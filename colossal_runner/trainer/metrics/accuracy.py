"""Accuracy: the fraction of samples whose label is among the top-k predictions."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch

from ...registry import METRICS
from .base import Metric, PendingSteps, reduce_over_data_group
from ...utils.checks import check_positive_int


_TENSOR = torch.Tensor


@METRICS.register_module()
class Accuracy(Metric):
    """Top-k accuracy of class scores ``output[..., C]`` against integer labels ``label[...]``.

    Outputs with extra dimensions (a language model's ``(B, T, V)``) count every position.

    Args:
        topk: count a sample as correct when its label is among the ``topk`` highest scores.
        defer_steps: count the held outputs and labels of up to this many steps together
            (see :class:`~colossal_runner.trainer.metrics.base.PendingSteps`); 1 counts every
            step as it comes, for a data loader that overwrites its batches in place.
        epoch_only, device: as in :class:`Metric`.
    """

    name = 'Accuracy'

    def __init__(self, topk: int = 1, epoch_only: bool = False,
                 device: Union[str, torch.device, None] = None, defer_steps: int = 16):
        self.topk = check_positive_int('topk', topk)
        self.defer_steps = check_positive_int('defer_steps', defer_steps)
        super().__init__(epoch_only=epoch_only, device=device)

    def reset(self) -> None:
        # Correct counts stay on the device (no sync per step); sample counts are host ints.
        self._correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self._total = 0
        self._pending = PendingSteps(self.defer_steps)
        # The number of classes of the held steps (all the same); 0 or -1 sends the next step
        # through _update, which sets it.
        self._held_classes = 0
        self._last: Optional[Tuple[torch.Tensor, int]] = None  # (correct, samples) of a step counted at once

    def update(self, output: Any, label: Any, loss: Optional[torch.Tensor] = None) -> None:
        # The common step, held as it is, in as few operations as possible (this runs every
        # step, and inside a training loop each line costs several times its timeit figure):
        # [N, C] scores without a graph, N labels, as many classes as the held steps, small.
        pending = self._pending
        if type(output) is _TENSOR and type(label) is _TENSOR and output.ndim == 2 and label.ndim == 1:
            rows, classes = output.shape
            if (rows == label.shape[0] and classes == self._held_classes and not output.requires_grad
                    and rows * classes <= pending.step_limit):
                self._total += rows
                if pending.add((output, label), output._version + label._version, rows * classes):
                    self._count_pending()
                return
        self._update(output, label)

    def _update(self, output: Any, label: Any) -> None:
        """update() for every case: checks, reshapes, detaches, or counts at once."""
        if not isinstance(output, torch.Tensor) or not isinstance(label, torch.Tensor):
            raise TypeError(f'Accuracy.update expects tensors (scores [..., C], labels [...]), got '
                            f'{type(output).__name__} and {type(label).__name__}; write a Metric '
                            f'subclass for structured outputs.')
        # reshape only when needed: this runs every iteration
        scores = output if output.ndim == 2 else output.reshape(-1, output.shape[-1])
        target = label if label.ndim == 1 else label.reshape(-1)
        rows, classes = scores.shape
        if classes < 2:
            # Off the per-step fast path, which takes only the width held before: never 1 then.
            raise ValueError(
                f'Accuracy: the output has {classes} score(s) per sample (output shape '
                f'{tuple(output.shape)}); expected one score per class, [..., C] with C >= 2. The highest '
                f'of one score is always class 0, so the value would be the share of samples labelled 0. '
                f'For a binary classifier with one logit (BCEWithLogitsLoss), use a Metric that thresholds '
                f'the logit instead of AccuracyHook (docs/hooks.md, "Metrics", has one), or give the '
                f'model 2 outputs and train with CrossEntropyLoss.')
        count = target.shape[0]
        if rows != count:
            raise ValueError(f'Accuracy: {rows} predictions (output shape {tuple(output.shape)}) '
                             f'but {count} labels (label shape {tuple(label.shape)})')
        self._total += count
        pending, numel = self._pending, rows * classes
        if numel <= pending.step_limit:
            if scores.requires_grad:  # a held tensor must not keep an autograd graph alive
                scores = scores.detach()
            self._last = None
            if classes != self._held_classes:  # held steps are concatenated: count those first
                self._count_pending()
                self._held_classes = classes
            if pending.add((scores, target), scores._version + target._version, numel):
                self._count_pending()
        else:
            correct = self._count(scores, target)
            self._correct += correct
            self._last = (correct, count)
            self._held_classes = -1  # the next held step takes this path, which clears _last

    def _count(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """How many rows of ``scores`` have ``target`` among their top k (a 0-dim int64 tensor).

        argmax / topk / == build no autograd graph, so nothing needs detaching here.
        """
        k = min(self.topk, scores.shape[-1])
        if k == 1:  # argmax is the cheap top-1
            return (scores.argmax(dim=-1) == target).sum()
        top = scores.topk(k, dim=-1).indices
        return (top == target.unsqueeze(-1)).any(dim=-1).sum()

    def _count_pending(self) -> None:
        steps = self._pending.take('Accuracy')
        if not steps:
            return
        scores, targets = zip(*steps)  # all with the same number of classes (see update)
        self._correct += self._count(torch.cat(scores), torch.cat(targets))

    def state_dict(self) -> Dict[str, Any]:
        self._count_pending()  # whole counts: counting the held steps now changes no number
        return {'correct': self._correct.detach().cpu(), 'total': self._total}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._correct = state['correct'].to(device=self.device, dtype=torch.int64)
        self._total = int(state['total'])

    def _value(self, correct: torch.Tensor, total: int) -> float:
        pair = torch.stack([correct.to(self.zeros(0).dtype), self.zeros(0).new_tensor(float(total))])
        pair = reduce_over_data_group(pair)
        return self.ratio(pair[0], pair[1])

    def get_last_step_value(self) -> float:
        if self._last is not None:
            return self._value(*self._last)
        step = self._pending.last_step('Accuracy')
        if step is None:
            return self._value(self._correct.new_zeros(()), 0)
        scores, target = step
        return self._value(self._count(scores, target), target.numel())

    def get_accumulated_value(self) -> float:
        self._count_pending()
        return self._value(self._correct, self._total)

    def __repr__(self) -> str:
        return (f'Accuracy(topk={self.topk}, epoch_only={self.epoch_only}, device={self.device}, '
                f'defer_steps={self.defer_steps})')
