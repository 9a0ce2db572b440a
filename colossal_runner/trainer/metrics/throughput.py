"""Throughput: samples per second over all data-parallel replicas."""
from __future__ import annotations

import torch

from ...registry import METRICS
from .base import Metric, reduce_over_data_group


@METRICS.register_module()
class Throughput(Metric):
    """Samples per second, fed by ThroughputHook with ``update(num_samples, seconds)``.

    Counts are host numbers (a batch size and a wall-clock interval), so updating costs no
    device work; reading sums the samples of all replicas and divides by the longest time of
    any of them: the job is as fast as its slowest replica (one with fewer or no test batches,
    whose time is shorter, would make an average time too short).
    """

    name = 'Throughput'

    def reset(self) -> None:
        self._samples = 0.0
        self._seconds = 0.0
        self._last = (0.0, 0.0)

    def update(self, num_samples: float, seconds: float) -> None:
        self._samples += float(num_samples)
        self._seconds += float(seconds)
        self._last = (float(num_samples), float(seconds))

    def _value(self, samples: float, seconds: float) -> float:
        # The samples of all replicas (a sum) over the slowest replica's time (a max): the job's rate.
        pair = torch.tensor([samples, seconds], dtype=torch.float64, device=self.device)
        total = float(reduce_over_data_group(pair[:1])[0])
        longest = float(reduce_over_data_group(pair[1:], op='max')[0])
        return total / longest if longest > 0 else float('nan')

    def get_last_step_value(self) -> float:
        return self._value(*self._last)

    def get_accumulated_value(self) -> float:
        return self._value(self._samples, self._seconds)
