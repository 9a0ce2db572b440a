"""Which rank does what: the pipeline x data-parallel layout and its process groups.

Rank layout: ``rank = dp_index * P + pipeline_stage``. Ranks ``0..P-1`` form the first
pipeline (data-parallel replica 0); the ranks holding the same stage in every replica
form that stage's data-parallel group.
"""
from __future__ import annotations

import datetime
from typing import List, Optional, Union

import torch
import torch.distributed as dist

from ..config.errors import ConfigError
from ..utils.checks import check_positive_int

_CONTEXT: Optional['ParallelContext'] = None


class ParallelContext:
    """The parallel layout of this process.

    Args:
        pipeline: number of pipeline stages ``P``.
        data: number of data-parallel replicas ``D``; ``world_size // P`` when ``None``.
        tensor: tensor parallelism; only 1 is supported for now.
        rank, world_size: this process's global rank and the world size; read from the
            initialized default process group when ``None`` (or 0 / 1 without one).
        timeout: seconds (or a timedelta) bounding collectives in the pipeline and data
            groups; the default process group's timeout when ``None``, so a configured
            ``dist_timeout`` also covers these groups (``new_group`` would otherwise use
            torch's 30-minute default).

    Process groups are created with ``torch.distributed.new_group``, which every rank must
    call in the same order: build a ParallelContext on every rank at the same point.
    """

    def __init__(self, pipeline: int = 1, data: Optional[int] = None, tensor: int = 1,
                 rank: Optional[int] = None, world_size: Optional[int] = None,
                 timeout: Union[None, float, datetime.timedelta] = None):
        initialized = dist.is_available() and dist.is_initialized()
        if rank is None:
            rank = dist.get_rank() if initialized else 0
        if world_size is None:
            world_size = dist.get_world_size() if initialized else 1
        # ConfigErrors naming the config key: the launcher adds the config file's name
        for name, value in (('parallel.pipeline', pipeline), ('parallel.tensor', tensor)):
            try:
                check_positive_int(name, value)
            except ValueError as err:
                raise ConfigError(str(err), key_path=name) from None
        if tensor != 1:
            raise ConfigError(f'parallel.tensor={tensor} is not supported yet: colossal_runner has '
                              f'pipeline and data parallelism only. Set parallel.tensor=1 or remove it.',
                              key_path='parallel.tensor')
        if world_size % pipeline:
            raise ConfigError(f'the world size {world_size} is not divisible by the pipeline size '
                              f'parallel.pipeline={pipeline}; launch a multiple of {pipeline} processes '
                              f'or change parallel.pipeline.', key_path='parallel.pipeline')
        if data is None:
            data = world_size // pipeline
        if not isinstance(data, int) or isinstance(data, bool) or data < 1:
            raise ConfigError(f'parallel.data must be a positive int or None, got {data!r}',
                              key_path='parallel.data')
        if pipeline * data != world_size:
            raise ConfigError(f'parallel.pipeline x parallel.data = {pipeline} x {data} = {pipeline * data} '
                              f'but the world size is {world_size}; launch {pipeline * data} processes '
                              f'or leave parallel.data out so it is world_size / pipeline.',
                              key_path='parallel.data')
        self.rank = rank
        self.world_size = world_size
        self.pipeline_size = pipeline
        self.data_size = data
        self.stage = rank % pipeline
        self.dp_rank = rank // pipeline
        self.pipeline_ranks: List[int] = [self.dp_rank * pipeline + s for s in range(pipeline)]
        self.data_ranks: List[int] = [d * pipeline + self.stage for d in range(data)]
        self.pipeline_group = None
        self.data_group = None
        if initialized and world_size > 1:
            timeout = _group_timeout(timeout)
            # new_group is collective over the world: every rank creates every group.
            for d in range(data):
                ranks = [d * pipeline + s for s in range(pipeline)]
                group = dist.new_group(ranks, timeout=timeout)
                if d == self.dp_rank:
                    self.pipeline_group = group
            for s in range(pipeline):
                ranks = [d * pipeline + s for d in range(data)]
                group = dist.new_group(ranks, timeout=timeout)
                if s == self.stage:
                    self.data_group = group

    # ------------------------------------------------------------------ queries
    @property
    def is_first_stage(self) -> bool:
        return self.stage == 0

    @property
    def is_last_stage(self) -> bool:
        return self.stage == self.pipeline_size - 1

    @property
    def next_rank(self) -> int:
        """Global rank of the next stage in this pipeline (wraps around)."""
        return self.pipeline_ranks[(self.stage + 1) % self.pipeline_size]

    @property
    def prev_rank(self) -> int:
        """Global rank of the previous stage in this pipeline (wraps around)."""
        return self.pipeline_ranks[(self.stage - 1) % self.pipeline_size]

    @property
    def is_main_process(self) -> bool:
        """Rank 0: the one that writes shared files (dumped config, logs)."""
        return self.rank == 0

    @property
    def is_logging_rank(self) -> bool:
        """The rank whose values are logged: last stage of data-parallel replica 0."""
        return self.dp_rank == 0 and self.is_last_stage

    def __repr__(self) -> str:
        return (f'ParallelContext(rank={self.rank}, world_size={self.world_size}, '
                f'pipeline={self.pipeline_size}, data={self.data_size}, stage={self.stage}, '
                f'dp_rank={self.dp_rank})')


def _group_timeout(timeout: Union[None, float, datetime.timedelta]) -> Optional[datetime.timedelta]:
    if isinstance(timeout, (int, float)):
        return datetime.timedelta(seconds=timeout)
    if timeout is not None:
        return timeout
    try:  # the default group's timeout; torch has no public getter for it
        default = dist.distributed_c10d._get_default_group()
        device = torch.device('cuda') if 'nccl' in str(dist.get_backend()) else torch.device('cpu')
        return default._get_backend(device).options._timeout
    except Exception:
        return None  # torch's default


def get_context() -> ParallelContext:
    """The current ParallelContext; a single-process one if none was set."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = ParallelContext()
    return _CONTEXT


def set_context(context: Optional[ParallelContext]) -> None:
    """Make ``context`` the current one (``None`` resets to single-process)."""
    global _CONTEXT
    _CONTEXT = context
