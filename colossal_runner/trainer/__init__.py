"""The Trainer (fit / evaluate / predict), its hooks and metrics."""
from . import hooks, metrics
from .hooks import STAGES, BaseHook
from .priority import Priority, get_priority
from .states import MetricDict
from .trainer import Trainer

__all__ = ['Trainer', 'Priority', 'get_priority', 'STAGES', 'BaseHook', 'MetricDict', 'hooks', 'metrics']
