"""LogMemoryByEpochHook: process memory (and CUDA memory on a GPU) after each epoch."""
from __future__ import annotations

import os
import resource
import sys
from typing import Any, Dict, Union

import torch

from ...registry import HOOKS
from ..priority import Priority
from .base_hook import BaseHook
from .log_metric_hook import log_values
from ...utils.checks import check_positive_int

_MB = 1024.0 ** 2


def memory_usage(device: torch.device) -> Dict[str, float]:
    """Resident set size now and at its peak, in MiB; CUDA allocated/peak when ``device`` is a GPU."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    values = dict(rss_peak_mb=peak / (_MB if sys.platform == 'darwin' else 1024.0))
    try:  # /proc exists on Linux only; the current RSS is optional elsewhere
        with open('/proc/self/statm') as f:
            values['rss_mb'] = int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / _MB
    except (OSError, ValueError, IndexError):
        pass
    else:
        # The kernel updates ru_maxrss lazily, so it can read below the RSS just measured; a
        # peak is at least the current value.
        values['rss_peak_mb'] = max(values['rss_peak_mb'], values['rss_mb'])
    if device.type == 'cuda':
        values['cuda_allocated_mb'] = torch.cuda.memory_allocated(device) / _MB
        values['cuda_peak_mb'] = torch.cuda.max_memory_allocated(device) / _MB
    return values


@HOOKS.register_module()
class LogMemoryByEpochHook(BaseHook):
    """Logs memory use when training starts (``by='memory_start'``), after every ``interval``-th
    train epoch and after each test (``by='memory'``)."""

    def __init__(self, interval: int = 1, priority: Union[int, str, Priority] = 'BELOW_NORMAL'):
        super().__init__(priority)
        self.interval = check_positive_int('interval', interval)

    def before_train(self, runner: Any) -> None:
        # A key of its own: a run resumed from epoch_N.pt starts at epoch N, whose end has a 'memory' record
        log_values(runner, 'train', 'memory_start', memory_usage(runner.engine.device))

    def after_train_epoch(self, runner: Any) -> None:
        if runner.states['epoch'] % self.interval == 0:
            log_values(runner, 'train', 'memory', memory_usage(runner.engine.device))

    def after_test(self, runner: Any) -> None:
        log_values(runner, 'test', 'memory', memory_usage(runner.engine.device))
