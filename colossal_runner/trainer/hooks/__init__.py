"""Hooks: BaseHook and one file per built-in hook; all registered in HOOKS."""
from .accuracy_hook import AccuracyHook
from .base_hook import STAGES, BaseHook, call_hooks
from .checkpoint_hook import LoadCheckpointHook, SaveCheckpointHook
from .log_memory_hook import LogMemoryByEpochHook
from .log_metric_hook import LogMetricByEpochHook, LogMetricByStepHook
from .log_timing_hook import LogTimingByEpochHook
from .loss_hook import LossHook
from .lr_scheduler_hook import LRSchedulerHook
from .metric_hook import MetricHook, read_metrics
from .tensorboard_hook import TensorboardHook
from .throughput_hook import ThroughputHook

__all__ = ['STAGES', 'BaseHook', 'call_hooks', 'MetricHook', 'read_metrics', 'LossHook', 'AccuracyHook',
           'LRSchedulerHook', 'ThroughputHook', 'LogMetricByEpochHook', 'LogMetricByStepHook',
           'LogTimingByEpochHook', 'LogMemoryByEpochHook', 'TensorboardHook', 'SaveCheckpointHook',
           'LoadCheckpointHook']
