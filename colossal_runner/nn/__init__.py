"""Neural-network training pieces that are not models: step-based LR schedulers."""
from . import lr_scheduler

__all__ = ['lr_scheduler']
