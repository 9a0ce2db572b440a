"""The Engine (one optimizer step) and the schedules it runs."""
from .engine import Engine
from .schedule import BaseSchedule, NoPipelineSchedule

__all__ = ['Engine', 'BaseSchedule', 'NoPipelineSchedule']
