"""Step-based LR schedulers, all ``(optimizer, total_steps, ...)`` and registered in LR_SCHEDULERS.

Each is a ``torch.optim.lr_scheduler.LRScheduler``: step it once per optimizer step (the
Engine does), save it with ``state_dict()``.
"""
from .base import WarmupClosedFormLR
from .cosine import CosineAnnealingLR, CosineAnnealingWarmupLR, FlatAnnealingLR, FlatAnnealingWarmupLR
from .linear import LinearWarmupLR
from .multistep import MultiStepLR, MultiStepWarmupLR
from .polynomial import PolynomialLR, PolynomialWarmupLR
from .torch_family import ExponentialLR, LambdaLR, MultiplicativeLR, OneCycleLR, StepLR

__all__ = ['WarmupClosedFormLR', 'CosineAnnealingLR', 'CosineAnnealingWarmupLR', 'FlatAnnealingLR',
           'FlatAnnealingWarmupLR', 'LinearWarmupLR', 'MultiStepLR', 'MultiStepWarmupLR', 'OneCycleLR',
           'PolynomialLR', 'PolynomialWarmupLR', 'StepLR', 'ExponentialLR', 'LambdaLR', 'MultiplicativeLR']
