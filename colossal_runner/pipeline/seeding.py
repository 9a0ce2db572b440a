"""Each pipeline stage's own stream of torch's random numbers (dropout and other in-model draws).

Every rank starts from the same seed, so that a stage's weights equal the whole model's (see
:mod:`.build`). Left at that, the stages would go on drawing the same numbers: two stages with
layers of the same structure would drop exactly the same units, where the un-split model's
dropout layers draw independent masks. After the stage (and the data loaders) are built, stage
``s > 0`` therefore restarts torch's generator from ``seed + 100 * s``, as Megatron-LM seeds its
pipeline stages; stage 0 goes on from where building the model left it, as one process would.
The data-parallel replicas of one stage share its stream.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..distributed.context import ParallelContext, get_context

STAGE_SEED_STRIDE = 100  # Megatron-LM's: seed + 100 * pipeline stage


def stage_seed(seed: int, stage: int) -> int:
    """The seed of pipeline stage ``stage``'s random numbers: ``seed + 100 * stage``."""
    return seed + STAGE_SEED_STRIDE * stage


def seed_pipeline_stage(seed: int, context: Optional[ParallelContext] = None) -> None:
    """Give this rank's pipeline stage its own stream of torch's random numbers (CPU and CUDA).

    Call it once the stage model is built (its weights are drawn from the run's ``seed`` on every
    stage, to equal the whole model's) and before training. :func:`colossal_runner.initialize`
    does; with the Python API, call it after :func:`build_pipeline_model` and everything else
    whose construction draws random numbers. Nothing that must agree between stages may draw from
    torch's global generator afterwards: the dataloaders of :func:`colossal_runner.data.
    build_dataloader` carry generators of their own, and the Trainer refuses a loader whose order
    would come from the global one. Python's and NumPy's generators are left as seeded, alike on
    every stage. With one stage this does nothing.
    """
    context = context or get_context()
    if context.pipeline_size > 1 and context.stage > 0:
        torch.manual_seed(stage_seed(seed, context.stage))  # also seeds every CUDA device
