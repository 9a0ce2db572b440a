"""Step decays at milestones, with optional warm-up."""
from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

from torch.optim import Optimizer
from torch.optim import lr_scheduler as torch_lr

from ...registry import LR_SCHEDULERS
from .base import WarmupClosedFormLR, check_total_steps


def check_milestones(milestones: Sequence[int]) -> list:
    """Milestones are increasing step indices."""
    if (not isinstance(milestones, (list, tuple)) or not all(isinstance(m, int) for m in milestones)
            or list(milestones) != sorted(set(milestones))):
        raise ValueError(f'milestones must be a list of increasing ints (step indices), got {milestones!r}')
    return list(milestones)


@LR_SCHEDULERS.register_module()
class MultiStepLR(torch_lr.MultiStepLR):
    """torch's MultiStepLR: ``base_lr * gamma ** (number of milestones <= t)``."""

    def __init__(self, optimizer: Optimizer, total_steps: int, milestones: Sequence[int] = (),
                 gamma: float = 0.1, last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        super().__init__(optimizer, check_milestones(milestones), gamma=gamma, last_epoch=last_epoch)


@LR_SCHEDULERS.register_module()
class MultiStepWarmupLR(WarmupClosedFormLR):
    """Linear warm-up, then ``base_lr * gamma ** (number of milestones <= t)``.

    Milestones count from the start of training (the warm-up included), like MultiStepLR's.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                 milestones: Sequence[int] = (), gamma: float = 0.1, last_epoch: int = -1):
        self.milestones = check_milestones(milestones)
        self.gamma = gamma
        super().__init__(optimizer, total_steps, warmup_steps, last_epoch)

    def after_warmup(self, base_lr: float, step: int, span: int) -> float:
        return base_lr * self.gamma ** bisect_right(self.milestones, step + self.warmup_steps)
