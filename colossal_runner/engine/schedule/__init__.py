"""Schedules turn a batch into forward/backward work; all are registered in SCHEDULES."""
from .base import BaseSchedule, detach, loss_for_logging
from .no_pipeline import NoPipelineSchedule
from .pipeline import PipelineSchedule
from .interleaved import InterleavedPipelineSchedule
from .gpipe import GPipeSchedule

__all__ = ['BaseSchedule', 'NoPipelineSchedule', 'detach', 'loss_for_logging']
