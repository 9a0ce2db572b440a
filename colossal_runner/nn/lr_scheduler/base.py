"""Argument checks and a closed-form base for the schedulers torch does not have.

torch has no linear warm-up in front of its schedulers other than composing them with
``SequentialLR``, whose hand-over repeats the base LR at the boundary and whose chained
(recursive) updates drift; it also has no polynomial decay to a non-zero ``end_lr``. The
schedulers here subclass torch's ``LRScheduler`` and compute each LR directly from the step
count, so ``state_dict()``, ``get_last_lr()`` and torch's tooling work unchanged and the
values are exactly the documented formulas.
"""
from __future__ import annotations

import math
from typing import List

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ...utils.checks import check_positive_int


def check_total_steps(total_steps: int) -> int:
    """``total_steps`` is the number of optimizer steps the schedule spans: a positive int."""
    return check_positive_int('total_steps', total_steps,
                              ' (the number of optimizer steps the schedule spans)')


def check_warmup(warmup_steps: int, total_steps: int) -> int:
    """``warmup_steps`` must be an int in ``[0, total_steps]``."""
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise ValueError(f'warmup_steps must be an int >= 0, got {warmup_steps!r}')
    if warmup_steps > total_steps:
        raise ValueError(f'warmup_steps={warmup_steps} is larger than total_steps={total_steps}; the '
                         f'warm-up must fit in the schedule. Lower warmup_steps or raise total_steps.')
    return warmup_steps


def check_fraction(name: str, value: float) -> float:
    """A fraction of the schedule, in ``[0, 1]``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f'{name} must be a number in [0, 1] (a fraction of the steps), got {value!r}')
    return float(value)


def cosine(start: float, end: float, step: int, span: int) -> float:
    """Half a cosine from ``start`` (step 0) to ``end`` (step ``span`` and later)."""
    if span <= 0 or step >= span:
        return end
    return end + (start - end) * (1 + math.cos(math.pi * step / span)) / 2


class WarmupClosedFormLR(LRScheduler):
    """A linear warm-up, then ``after_warmup(base_lr, step, span)``; subclasses give the latter.

    At scheduler step ``t`` (the number of ``step()`` calls so far) with ``W`` warm-up
    steps, the LR is ``base_lr * (t + 1) / (W + 1)`` for ``t < W``: it rises from a small
    value and reaches ``base_lr`` on the first step after the warm-up, never twice in a row.
    Afterwards ``after_warmup`` gets ``step = t - W`` and ``span = total_steps - W``.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        self.warmup_steps = check_warmup(warmup_steps, total_steps)
        super().__init__(optimizer, last_epoch)

    def after_warmup(self, base_lr: float, step: int, span: int) -> float:
        raise NotImplementedError

    def lr_at(self, base_lr: float, t: int) -> float:
        """The LR at scheduler step ``t`` for a param group whose initial LR is ``base_lr``."""
        if t < self.warmup_steps:
            return base_lr * (t + 1) / (self.warmup_steps + 1)
        return self.after_warmup(base_lr, t - self.warmup_steps, self.total_steps - self.warmup_steps)

    def get_lr(self) -> List[float]:
        return [self.lr_at(base_lr, max(self.last_epoch, 0)) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()
