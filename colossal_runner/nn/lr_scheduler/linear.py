"""Linear warm-up, then linear decay to zero."""
from __future__ import annotations

from torch.optim import Optimizer

from ...registry import LR_SCHEDULERS
from .base import WarmupClosedFormLR


@LR_SCHEDULERS.register_module()
class LinearWarmupLR(WarmupClosedFormLR):
    """Linear warm-up for ``warmup_steps``, then linear decay to 0 at ``total_steps``:
    ``base_lr * (total_steps - t) / (total_steps - warmup_steps)``, and 0 afterwards.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, last_epoch: int = -1):
        super().__init__(optimizer, total_steps, warmup_steps, last_epoch)

    def after_warmup(self, base_lr: float, step: int, span: int) -> float:
        if step >= span:
            return 0.0 * base_lr
        return base_lr * (span - step) / span
