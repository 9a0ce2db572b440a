"""PipelineSchedule: non-interleaved one-forward-one-backward (1F1B) pipeline parallelism."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ...registry import SCHEDULES
from .runtime import PipelineRuntime


@SCHEDULES.register_module()
class PipelineSchedule(PipelineRuntime):
    """1F1B: stage ``s`` runs ``P - s - 1`` warm-up forwards, then alternates one forward and
    one backward, then drains the remaining backwards.

    Compared with GPipe the bubble is the same, ``(P - 1) / (M + P - 1)``, but stage ``s``
    keeps at most ``P - s`` microbatches of activations instead of ``M``, so ``M`` can grow
    (shrinking the bubble) without running out of memory. Any ``M >= 1`` runs; with ``M < P``
    the warm-up is ``min(P - s - 1, M)`` forwards, so the first stages run like GPipe.

    Args:
        num_microbatches: ``M``; every batch size must be a multiple of it.
        tensor_shape: optional fixed shape of the activation between stages for a full
            microbatch (skips the one-off shape exchange); ``tensor_dtype`` its dtype.
    """

    schedule_name = '1f1b'

    def __init__(self, num_microbatches: int, tensor_shape: Optional[Sequence[int]] = None,
                 tensor_dtype: Any = None):
        super().__init__(num_microbatches, 1, tensor_shape, tensor_dtype)
