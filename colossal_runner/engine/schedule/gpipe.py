"""GPipeSchedule: all forwards, then all backwards."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ...registry import SCHEDULES
from .runtime import PipelineRuntime


@SCHEDULES.register_module()
class GPipeSchedule(PipelineRuntime):
    """GPipe: every stage runs the forwards of all ``M`` microbatches, then their backwards.

    The simplest pipeline and the reference the others are measured against: same bubble
    as 1F1B, but each stage holds the activations of all ``M`` microbatches at the peak.
    Works with any ``M >= 1``.
    """

    schedule_name = 'gpipe'

    def __init__(self, num_microbatches: int, tensor_shape: Optional[Sequence[int]] = None,
                 tensor_dtype: Any = None):
        super().__init__(num_microbatches, 1, tensor_shape, tensor_dtype)
