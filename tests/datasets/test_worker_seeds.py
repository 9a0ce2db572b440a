"""DataLoader workers draw their own random augmentation on each data-parallel replica, the same on
the pipeline stages of one replica, and the sample order stays shared."""
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from colossal_runner.data import build_dataloader
from colossal_runner.distributed import ParallelContext


class RandomDraws(Dataset):
    """Each item: its index and one draw from torch, numpy and Python's RNGs (an augmentation's)."""

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return torch.tensor([float(index), torch.rand(()).item(), np.random.rand(), random.random()]), 0


def _first_epoch(rank, num_workers):
    # 2 stages x 2 replicas: rank = dp_rank * 2 + stage
    context = ParallelContext(pipeline=2, data=2, rank=rank, world_size=4)
    loader = build_dataloader(dict(batch_size=4, num_workers=num_workers), RandomDraws(), context=context,
                              shuffle=True, seed=5)
    loader.sampler.set_epoch(0)
    return torch.cat([x for x, _ in loader])


def test_workers_draw_differently_on_each_replica_and_alike_on_its_stages():
    stage0_dp0, stage1_dp0, stage0_dp1 = (_first_epoch(rank, num_workers=2) for rank in (0, 1, 2))
    torch.testing.assert_close(stage0_dp0, stage1_dp0, rtol=0, atol=0)  # one replica: identical
    for column in (1, 2, 3):  # torch, numpy, random: each replica's workers have their own seeds
        assert not torch.equal(stage0_dp0[:, column], stage0_dp1[:, column]), column
    # The order is still split from one shared permutation: disjoint halves of the data.
    indices = stage0_dp0[:, 0].tolist() + stage0_dp1[:, 0].tolist()
    assert sorted(indices) == [float(i) for i in range(16)]


def test_one_replica_keeps_the_worker_seeds_torch_gives():
    """dp_rank 0 (and every single-process run) draws exactly as before: old runs stay reproducible."""
    from torch.utils.data import DataLoader, DistributedSampler

    from colossal_runner.data import seed_worker
    dataset = RandomDraws()
    loader = build_dataloader(dict(batch_size=4, num_workers=2), dataset, shuffle=True, seed=5)
    plain = DataLoader(dataset, batch_size=4, num_workers=2, worker_init_fn=seed_worker,
                       sampler=DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=5),
                       generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(torch.cat([x for x, _ in loader]), torch.cat([x for x, _ in plain]),
                               rtol=0, atol=0)
