"""Cosine annealing, with optional warm-up and a flat start."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim import lr_scheduler as torch_lr

from ...registry import LR_SCHEDULERS
from .base import WarmupClosedFormLR, check_fraction, check_total_steps, cosine


@LR_SCHEDULERS.register_module()
class CosineAnnealingLR(torch_lr.CosineAnnealingLR):
    """torch's CosineAnnealingLR over ``total_steps``:
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / total_steps)) / 2``.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, eta_min: float = 0.0, last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        super().__init__(optimizer, T_max=total_steps, eta_min=eta_min, last_epoch=last_epoch)


@LR_SCHEDULERS.register_module()
class CosineAnnealingWarmupLR(WarmupClosedFormLR):
    """Linear warm-up for ``warmup_steps``, then cosine annealing to ``eta_min`` at ``total_steps``."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, eta_min: float = 0.0,
                 last_epoch: int = -1):
        self.eta_min = eta_min
        super().__init__(optimizer, total_steps, warmup_steps, last_epoch)

    def after_warmup(self, base_lr: float, step: int, span: int) -> float:
        return cosine(base_lr, self.eta_min, step, span)


@LR_SCHEDULERS.register_module()
class FlatAnnealingWarmupLR(WarmupClosedFormLR):
    """Warm-up, then the base LR for ``pct_start`` of the remaining steps, then cosine to ``eta_min``.

    The flat part lasts ``int((total_steps - warmup_steps) * pct_start)`` steps.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, pct_start: float = 0.72,
                 eta_min: float = 0.0, last_epoch: int = -1):
        self.pct_start = check_fraction('pct_start', pct_start)
        self.eta_min = eta_min
        super().__init__(optimizer, total_steps, warmup_steps, last_epoch)

    def after_warmup(self, base_lr: float, step: int, span: int) -> float:
        flat = int(span * self.pct_start)
        if step < flat:
            return base_lr
        return cosine(base_lr, self.eta_min, step - flat, span - flat)


@LR_SCHEDULERS.register_module()
class FlatAnnealingLR(FlatAnnealingWarmupLR):
    """The base LR for ``int(total_steps * pct_start)`` steps, then cosine annealing to ``eta_min``."""

    def __init__(self, optimizer: Optimizer, total_steps: int, pct_start: float = 0.72, eta_min: float = 0.0,
                 last_epoch: int = -1):
        super().__init__(optimizer, total_steps, 0, pct_start, eta_min, last_epoch)
