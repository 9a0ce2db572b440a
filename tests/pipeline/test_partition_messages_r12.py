"""Explicit partitions with interleaving: the error says what the P x C + 1 entries mean, and a run's
config error names the key model.partition; stage seeds follow seed + 100 * stage."""
from __future__ import annotations

import os

import pytest
import torch

from colossal_runner.config import ConfigError
from colossal_runner.distributed.context import ParallelContext, set_context
from colossal_runner.pipeline import PartitionError, build_pipeline_model, seed_pipeline_stage, stage_seed

MLP = dict(type='MLP', in_features=6, hidden=(8,), num_classes=3)  # Flatten, Linear, ReLU, Linear: 4 layers
TINY = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data', 'e2e', 'tiny.py')


@pytest.fixture(autouse=True)
def _reset_context():
    yield
    set_context(None)


def test_interleaved_boundaries_error_says_which_stage_holds_each_part():
    context = ParallelContext(pipeline=2, rank=0, world_size=2)  # no process group: nothing is sent
    with pytest.raises(PartitionError) as info:
        build_pipeline_model(dict(MLP, partition=[0, 2, 4]), context, num_model_chunks=2)
    message = str(info.value)
    assert 'must be 5 strictly increasing ints from 0 to 4' in message
    assert ('2 stages x 2 model chunks = 4 parts, and part k is chunk k // 2 on stage k % 2, so stage 0 '
            'holds parts 0, 2') in message
    assert message.endswith('got [0, 2, 4]. For example partition=[0, 1, 2, 3, 4].')
    with pytest.raises(PartitionError) as info:  # without chunks, nothing about them
        build_pipeline_model(dict(MLP, partition=[0, 4]), context)
    assert 'chunk' not in str(info.value)


def test_a_bad_partition_in_a_run_config_names_the_key_model_partition(tmp_path):
    from colossal_runner.config import Config
    from colossal_runner.initialize import initialize

    cfg = Config.fromfile(TINY).to_dict()
    cfg['schedule'] = dict(type='InterleavedPipelineSchedule', num_microbatches=1, num_model_chunks=2)
    cfg['model'] = dict(cfg['model'], partition=[0, 7])
    with pytest.raises(ConfigError) as info:
        initialize(cfg, work_dir=str(tmp_path), log_file=False)
    assert info.value.key_path == 'model.partition'
    assert '1 stage x 2 model chunks = 2 parts' in str(info.value)
    cfg['model']['partition'] = 'flops'
    with pytest.raises(ConfigError, match=r"key model\.partition: unknown partition method 'flops'"):
        initialize(cfg, work_dir=str(tmp_path), log_file=False)


def test_each_stage_after_the_first_gets_seed_plus_100_times_its_stage():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    seed_pipeline_stage(7, ParallelContext(pipeline=1, rank=0, world_size=1))
    seed_pipeline_stage(7, ParallelContext(pipeline=2, rank=0, world_size=2))
    assert torch.equal(torch.get_rng_state(), state)  # one stage, and stage 0, go on where they were
    seed_pipeline_stage(7, ParallelContext(pipeline=4, rank=3, world_size=4))
    assert torch.initial_seed() == stage_seed(7, 3) == 307
    seed_pipeline_stage(7, ParallelContext(pipeline=2, data=2, rank=3, world_size=4))  # stage 1 of replica 1
    assert torch.initial_seed() == 107  # the data-parallel replicas of a stage share its stream
