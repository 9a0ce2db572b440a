import time

import pytest
import torch
import torch.distributed as dist

from colossal_runner.testing import DistributedTestError, run_distributed


def _sum_ranks(rank, world_size):
    t = torch.tensor([float(rank)])
    dist.all_reduce(t)
    return (rank, world_size, t.item(), torch.get_num_threads())


def _raise_on_one(rank, world_size):
    if rank == 1:
        raise RuntimeError('boom from rank one')
    return rank


def _hang(rank, world_size):
    time.sleep(60)


def test_collective_over_real_processes():
    results = run_distributed(_sum_ranks, 3, timeout=60)
    assert [r[0] for r in results] == [0, 1, 2]
    assert all(r[1] == 3 and r[2] == 3.0 and r[3] == 1 for r in results)


def test_failing_rank_is_named():
    with pytest.raises(DistributedTestError, match=r'ranks \[1\] failed') as info:
        run_distributed(_raise_on_one, 2, timeout=30)
    assert 'boom from rank one' in str(info.value)


def test_hung_ranks_time_out():
    start = time.monotonic()
    with pytest.raises(DistributedTestError, match=r'did not finish within 3'):
        run_distributed(_hang, 2, timeout=3)
    assert time.monotonic() - start < 30
