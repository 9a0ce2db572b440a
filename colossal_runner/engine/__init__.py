"""The Engine (one optimizer step) and the schedules it runs."""
from .engine import Engine, NonFiniteLossError
from .schedule import BaseSchedule, NoPipelineSchedule

__all__ = ['Engine', 'NonFiniteLossError', 'BaseSchedule', 'NoPipelineSchedule']
