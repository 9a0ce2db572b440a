"""Metrics accumulated by MetricHooks into ``runner.states['metrics']``; all in METRICS."""
from .accuracy import Accuracy
from .base import Metric, reduce_over_data_group
from .learning_rate import LearningRate
from .loss import Loss
from .throughput import Throughput

__all__ = ['Metric', 'Loss', 'Accuracy', 'LearningRate', 'Throughput', 'reduce_over_data_group']
