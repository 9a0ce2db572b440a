"""A pipeline schedule on one stage (parallel.pipeline=1) with 2 data-parallel ranks trains like one
process on the global batch: the Engine averages the gradients, not DDP, whose reducer averages
GPipe's all-forwards-then-all-backwards order wrongly (and which cannot wrap interleaving's chunks)."""
import pytest
import torch
from torch import nn

from colossal_runner.distributed import set_seed
from colossal_runner.registry import MODELS
from colossal_runner.testing import run_distributed

MODEL = dict(type='MLP', in_features=8, hidden=[16], num_classes=3)
GLOBAL_BATCH = 8
STEPS = 3
SEED = 3
SCHEDULES = {'gpipe': dict(type='GPipeSchedule', num_microbatches=2),
             '1f1b': dict(type='PipelineSchedule', num_microbatches=2),
             'interleaved': dict(type='InterleavedPipelineSchedule', num_microbatches=2, num_model_chunks=2)}


def _data():
    gen = torch.Generator().manual_seed(7)
    return (torch.randn(STEPS * GLOBAL_BATCH, 8, generator=gen),
            torch.randint(0, 3, (STEPS * GLOBAL_BATCH,), generator=gen))


def _train(rank, world_size, schedule, work_dir):
    from colossal_runner.initialize import initialize
    cfg = dict(model=dict(MODEL), loss=dict(type='CrossEntropyLoss'), optimizer=dict(type='SGD', lr=0.5),
               data=dict(train=dict(dataset=dict(type='SyntheticClassification', num_samples=32,
                                                 num_features=8, num_classes=3),
                                    dataloader=dict(batch_size=GLOBAL_BATCH // world_size))),
               schedule=dict(SCHEDULES[schedule]), parallel=dict(pipeline=1), seed=SEED, hooks=[])
    run = initialize(cfg, work_dir=work_dir, log_file=False)
    engine = run.engine
    x, y = _data()
    per_rank = GLOBAL_BATCH // world_size
    engine.train()
    for s in range(STEPS):
        part = slice(s * GLOBAL_BATCH + rank * per_rank, s * GLOBAL_BATCH + (rank + 1) * per_rank)
        engine.step(iter([(x[part], y[part])]))
    return dict(ddp=isinstance(engine.model, nn.parallel.DistributedDataParallel),
                averages=engine.data_parallel_group is not None,
                params=[p.detach().clone() for p in engine.model.parameters()])


def _single_process_on_the_global_batch():
    set_seed(SEED)  # as initialize() seeds right before building the model
    model = MODELS.build(dict(MODEL))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = _data()
    for s in range(STEPS):
        part = slice(s * GLOBAL_BATCH, (s + 1) * GLOBAL_BATCH)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[part]), y[part]).backward()
        optimizer.step()
    return [p.detach() for p in model.parameters()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize('schedule', list(SCHEDULES))
def test_one_stage_pipeline_schedule_on_two_replicas_equals_one_process(schedule, tmp_path):
    results = run_distributed(_train, 2, schedule, str(tmp_path), timeout=90)
    reference = _single_process_on_the_global_batch()
    for res in results:
        assert not res['ddp'] and res['averages']  # the Engine averages over the data-parallel group
        assert len(res['params']) == len(reference)
        for got, want in zip(res['params'], reference):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0]['params'], results[1]['params']):
        assert torch.equal(a, b)  # the replicas stay identical
