"""InterleavedPipelineSchedule: 1F1B over several model chunks (virtual stages) per rank."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ...registry import SCHEDULES
from .plan import suggest_multiples
from .runtime import PipelineRuntime


@SCHEDULES.register_module()
class InterleavedPipelineSchedule(PipelineRuntime):
    """Interleaved 1F1B: each rank holds ``C`` chunks; chunk ``c`` of stage ``s`` is virtual stage
    ``c * P + s``, so a microbatch visits every rank ``C`` times.

    The bubble shrinks to about ``(P - 1) / (C M + P - 1)`` at the cost of ``C`` times more
    messages. Needs ``M`` to be a multiple of ``P``, and the stage model to be an
    ``nn.ModuleList`` of ``C`` chunks (``build_pipeline_model(..., num_model_chunks=C)``).
    """

    schedule_name = 'interleaved'

    def __init__(self, num_microbatches: int, num_model_chunks: int = 2,
                 tensor_shape: Optional[Sequence[int]] = None, tensor_dtype: Any = None):
        super().__init__(num_microbatches, num_model_chunks, tensor_shape, tensor_dtype)

    def check_sizes(self, num_stages: int) -> None:
        """``M`` must be a multiple of ``P`` (microbatches go through the chunks in groups of ``P``)."""
        super().check_sizes(num_stages)
        if self.num_microbatches % num_stages:
            m = self.num_microbatches
            raise ValueError(f'InterleavedPipelineSchedule needs num_microbatches to be a multiple of the '
                             f'pipeline size {num_stages}; got {m}. {suggest_multiples(m, num_stages)}')
