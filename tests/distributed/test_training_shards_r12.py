"""Every data-parallel replica must run as many training batches per epoch (each step all-reduces the
gradients over all of them): a sampler that gives them different numbers is a config error at
start-up, naming data.train.dataloader.sampler, and not a gloo abort (or an NCCL hang) mid-epoch."""
import logging
import uuid
from pathlib import Path

import pytest
import torch

from colossal_runner.config import Config, ConfigError
from colossal_runner.distributed import ParallelContext
from colossal_runner.initialize import build_data, check_equal_training_shards
from colossal_runner.testing import run_distributed

TINY = str(Path(__file__).resolve().parents[1] / 'data' / 'e2e' / 'tiny.py')
KEY = 'data.train.dataloader.sampler'


def _config(samples, batch_size, sampler):
    dataset = dict(type='SyntheticClassification', num_samples=samples, num_features=8, num_classes=3)
    return Config(dict(data=dict(train=dict(dataset=dataset, dataloader=dict(batch_size=batch_size,
                                                                            sampler=sampler)))))


def test_unpadded_distributed_sampler_is_refused_for_training():
    """50 samples over 3 replicas: 17, 17 and 16; in batches of 17 each replica runs one batch, but
    the replicas' gradients are then means over different numbers of samples."""
    cfg = _config(50, 17, dict(type='UnpaddedDistributedSampler'))
    context = ParallelContext(pipeline=1, rank=0, world_size=3)  # no process group needed
    train, _ = build_data(cfg, context, seed=0)
    with pytest.raises(ConfigError) as info:
        check_equal_training_shards(cfg, train, context)
    assert info.value.key_path == KEY
    assert info.value.message.startswith('UnpaddedDistributedSampler is for test loaders: it splits the 50 '
                                         'training samples over the 3 data-parallel replicas without '
                                         'repeating any, so their shares differ (17 or 16 samples)')
    assert "torch's DistributedSampler, the default, pads the shards to equal length" in info.value.message
    one = ParallelContext(pipeline=1, rank=0, world_size=1)
    check_equal_training_shards(cfg, build_data(cfg, one, seed=0)[0], one)  # one replica: nothing uneven


@pytest.mark.parametrize('lengths, message', [
    ([(0, 5, 17)] * 2 + [(1, 5, 17)] * 2, None),
    ([(0, None, None)] * 2 + [(1, None, None)] * 2, None),  # no length anywhere: nothing to compare
    ([(0, 5, 17)] * 2 + [(1, 4, 16)] * 2, 'different numbers of batches per epoch (replica 0: 5 batches from '
                                          '17 samples; replica 1: 4 batches from 16 samples, batch_size=4)'),
])
def test_pipeline_stages_of_a_replica_count_once(monkeypatch, lengths, message):
    """pipeline=2 x data=2: ranks 0, 1 are replica 0's stages, ranks 2, 3 replica 1's."""
    import torch.distributed as dist

    def gather(out, mine):
        assert mine == (0, 5, 17)  # this rank's replica, batches and samples
        out[:] = lengths
    cfg = _config(34, 4, None)
    context = ParallelContext(pipeline=2, rank=1, world_size=4)  # no process group: none is made
    train, _ = build_data(cfg, context, seed=0)
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'get_world_size', lambda *args: 4)
    monkeypatch.setattr(dist, 'all_gather_object', gather)
    if message is None:
        check_equal_training_shards(cfg, train, context)
        return
    with pytest.raises(ConfigError) as info:
        check_equal_training_shards(cfg, train, context)
    assert info.value.key_path == KEY and message in info.value.message


class _UnevenShards(torch.utils.data.Sampler):
    """Replica r of n reads every n-th sample from r: no padding, so the shards differ in length."""

    def __init__(self, dataset, num_replicas, rank):
        self.indices = list(range(rank, len(dataset), num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _start(rank, world_size, work_dir):
    from colossal_runner.initialize import initialize
    from colossal_runner.registry import DATA_SAMPLERS
    DATA_SAMPLERS.register_module(name='UnevenShardsR12', module=_UnevenShards)
    logger = logging.getLogger(f'test_training_shards_{uuid.uuid4().hex}')
    results = []
    for sampler in (dict(type='UnevenShardsR12'), None):
        cfg = Config.fromfile(TINY)
        # 33 samples: 17 and 16 per replica, 3 and 2 batches of 8 (with torch's padding: 17 and 17)
        cfg.merge_from_dict({'hooks': [], 'data.train.dataset.num_samples': 33,
                             'data.train.dataloader.batch_size': 8, 'data.train.dataloader.shuffle': False,
                             'data.train.dataloader.sampler': sampler})
        try:
            run = initialize(cfg, work_dir=f'{work_dir}/{len(results)}', logger=logger)
            results.append(len(run.train_dataloader))
        except ConfigError as err:
            results.append((err.key_path, err.message))
    return results


def test_replicas_with_different_numbers_of_batches_fail_at_start_up(tmp_path):
    for uneven, default in run_distributed(_start, 2, str(tmp_path), timeout=90):
        assert uneven == (KEY, 'the training dataloader gives the 2 data-parallel replicas different numbers '
                               'of batches per epoch (replica 0: 3 batches from 17 samples; replica 1: 2 '
                               'batches from 16 samples, batch_size=8): every optimizer step all-reduces the '
                               'gradients over all replicas, so each must run the same steps. Use a sampler '
                               "that gives every replica as many samples: torch's DistributedSampler, the "
                               'default when data.train.dataloader.sampler is left out, pads the shards to '
                               'equal length')
        assert default == 3  # torch's padding: both replicas run 3 batches
