"""Polynomial decay to ``end_lr`` (torch's PolynomialLR always ends at 0), with optional warm-up."""
from __future__ import annotations

from torch.optim import Optimizer

from ...registry import LR_SCHEDULERS
from .base import WarmupClosedFormLR


@LR_SCHEDULERS.register_module()
class PolynomialWarmupLR(WarmupClosedFormLR):
    """Linear warm-up, then ``(base_lr - end_lr) * (1 - s / span) ** power + end_lr`` with
    ``s = t - warmup_steps`` and ``span = total_steps - warmup_steps``; ``end_lr`` afterwards.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, end_lr: float = 0.0001,
                 power: float = 1.0, last_epoch: int = -1):
        if not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(f'power must be a positive number, got {power!r}')
        self.end_lr = end_lr
        self.power = power
        super().__init__(optimizer, total_steps, warmup_steps, last_epoch)

    def after_warmup(self, base_lr: float, step: int, span: int) -> float:
        if step >= span:
            return self.end_lr
        return (base_lr - self.end_lr) * (1 - step / span) ** self.power + self.end_lr


@LR_SCHEDULERS.register_module()
class PolynomialLR(PolynomialWarmupLR):
    """``(base_lr - end_lr) * (1 - t / total_steps) ** power + end_lr``; ``end_lr`` afterwards."""

    def __init__(self, optimizer: Optimizer, total_steps: int, end_lr: float = 0.0001, power: float = 1.0,
                 last_epoch: int = -1):
        super().__init__(optimizer, total_steps, 0, end_lr, power, last_epoch)
