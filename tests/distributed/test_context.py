"""ParallelContext: the rank layout, its process groups (proved by all_reduce), and its errors."""
import pytest
import torch
import torch.distributed as dist

from colossal_runner.distributed import ParallelContext
from colossal_runner.testing import run_distributed

# The layout the design fixes: rank = dp_index * P + pipeline_stage.
EXPECTED_2x2 = {  # rank: (stage, dp_rank, pipeline_ranks, data_ranks, next_rank, prev_rank)
    0: (0, 0, [0, 1], [0, 2], 1, 1),
    1: (1, 0, [0, 1], [1, 3], 0, 0),
    2: (0, 1, [2, 3], [0, 2], 3, 3),
    3: (1, 1, [2, 3], [1, 3], 2, 2),
}


def _layouts(rank, world_size):
    out = {}
    for pipeline in (2, 4, 1):
        ctx = ParallelContext(pipeline=pipeline)
        sums = []
        for group in (ctx.pipeline_group, ctx.data_group):
            t = torch.tensor([float(rank)])
            dist.all_reduce(t, group=group)  # the sum of the ranks in the group proves membership
            sums.append(t.item())
        out[pipeline] = dict(stage=ctx.stage, dp_rank=ctx.dp_rank, pipeline_ranks=ctx.pipeline_ranks,
                             data_ranks=ctx.data_ranks, next=ctx.next_rank, prev=ctx.prev_rank,
                             first=ctx.is_first_stage, last=ctx.is_last_stage, data=ctx.data_size,
                             logging=ctx.is_logging_rank, main=ctx.is_main_process, sums=sums)
    return out


def test_layout_and_groups_on_four_ranks():
    results = run_distributed(_layouts, 4, timeout=90)
    for rank, res in enumerate(results):
        stage, dp_rank, pranks, dranks, nxt, prv = EXPECTED_2x2[rank]
        got = res[2]
        assert (got['stage'], got['dp_rank'], got['pipeline_ranks'], got['data_ranks'], got['next'],
                got['prev']) == (stage, dp_rank, pranks, dranks, nxt, prv)
        assert got['data'] == 2
        assert got['sums'] == [float(sum(pranks)), float(sum(dranks))]
        assert got['first'] == (stage == 0) and got['last'] == (stage == 1)
        assert got['logging'] == (rank == 1)  # last stage of replica 0
        assert got['main'] == (rank == 0)
        # P=4: one pipeline of all ranks, every data group a single rank.
        assert res[4]['pipeline_ranks'] == [0, 1, 2, 3] and res[4]['data_ranks'] == [rank]
        assert res[4]['sums'] == [6.0, float(rank)]
        assert res[4]['logging'] == (rank == 3)
        # P=1: pure data parallelism over all ranks.
        assert res[1]['data_ranks'] == [0, 1, 2, 3] and res[1]['pipeline_ranks'] == [rank]
        assert res[1]['sums'] == [float(rank), 6.0]
        assert res[1]['dp_rank'] == rank and res[1]['logging'] == (rank == 0)


def test_world_not_divisible_names_both_sizes():
    with pytest.raises(ValueError, match=r'world size 6 is not divisible by .*parallel.pipeline=4'):
        ParallelContext(pipeline=4, rank=0, world_size=6)


def test_tensor_parallelism_is_refused():
    with pytest.raises(ValueError, match=r'parallel.tensor=2 is not supported.*Set parallel.tensor=1'):
        ParallelContext(pipeline=1, tensor=2, rank=0, world_size=2)


def test_pipeline_times_data_must_match_world():
    with pytest.raises(ValueError, match=r'2 x 3 = 6 but the world size is 4'):
        ParallelContext(pipeline=2, data=3, rank=0, world_size=4)


@pytest.mark.parametrize('bad', [0, -2, 1.5, True, '2'])
def test_bad_pipeline_value(bad):
    with pytest.raises(ValueError, match='parallel.pipeline must be a positive int'):
        ParallelContext(pipeline=bad, rank=0, world_size=2)


def test_data_left_out_is_world_over_pipeline():
    ctx = ParallelContext(pipeline=2, rank=5, world_size=8)
    assert ctx.data_size == 4 and ctx.stage == 1 and ctx.dp_rank == 2
    assert ctx.pipeline_ranks == [4, 5] and ctx.data_ranks == [1, 3, 5, 7]
    assert ctx.pipeline_group is None  # no process group: nothing to build
