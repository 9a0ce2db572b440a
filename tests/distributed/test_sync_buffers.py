"""Engine.sync_buffers on pipeline stage replicas (not DDP): each stage's replicas evaluate with
the running statistics of the stage's first replica, the ones its checkpoint holds."""
import torch
from torch import nn

from colossal_runner.distributed import setup_parallel
from colossal_runner.engine import Engine
from colossal_runner.testing import run_distributed


def _bn_stage_replicas(rank, world_size):
    context = setup_parallel(dict(parallel=dict(pipeline=2, data=2), seed=0))
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    engine = Engine(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                    data_parallel_group=context.data_group)
    with torch.no_grad():  # each rank's own batches: its own running statistics, as in training
        model.train()
        model(torch.randn(8, 4, generator=torch.Generator().manual_seed(rank)) + rank)
    before = [b.detach().clone() for b in model.buffers()]
    engine.sync_buffers()
    return dict(stage=context.stage, source=context.data_ranks[0], before=before,
                after=[b.detach().clone() for b in model.buffers()])


def test_pipeline_stage_replicas_get_their_first_replicas_buffers():
    results = run_distributed(_bn_stage_replicas, 4, timeout=90)
    # Stage 0 on ranks 0 and 2, stage 1 on ranks 1 and 3 (rank = dp_rank * 2 + stage).
    assert [r['stage'] for r in results] == [0, 1, 0, 1] and [r['source'] for r in results] == [0, 1, 0, 1]
    assert not torch.equal(results[0]['before'][0], results[2]['before'][0])  # replicas had diverged
    for result in results:
        for got, want in zip(result['after'], results[result['source']]['before']):
            assert torch.equal(got, want)
    assert not torch.equal(results[0]['after'][0], results[1]['after'][0])  # stages keep their own
