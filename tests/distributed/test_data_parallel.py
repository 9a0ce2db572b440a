"""Data parallelism: 2 DDP ranks with global batch B train exactly like 1 process with batch B."""
import pytest
import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from colossal_runner.data import build_dataloader
from colossal_runner.distributed import ParallelContext, setup_parallel, wrap_data_parallel
from colossal_runner.engine import Engine
from colossal_runner.testing import run_distributed

GLOBAL_BATCH = 8
STEPS = 4


def _model():
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))  # init from the seed set by setup


def _engine(model, accumulation):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    return Engine(model, nn.CrossEntropyLoss(), optimizer, gradient_accumulation=accumulation)


def _data():
    gen = torch.Generator().manual_seed(123)
    return torch.randn(STEPS * GLOBAL_BATCH, 6, generator=gen), torch.randint(0, 3, (STEPS * GLOBAL_BATCH,),
                                                                              generator=gen)


def _ddp_vs_single(rank, world_size, accumulation):
    ctx = setup_parallel(dict(parallel=dict(pipeline=1), seed=0))
    x, y = _data()
    # Reference: one process, whole global batch per optimizer step, no accumulation.
    reference = _model()
    initial = [p.detach().clone() for p in reference.parameters()]
    ref_engine = _engine(reference, 1)
    ref_engine.train()
    for s in range(STEPS):
        part = slice(s * GLOBAL_BATCH, (s + 1) * GLOBAL_BATCH)
        ref_engine.step(iter([(x[part], y[part])]))
    # Data parallel: re-seeded like a fresh run, so init must match the reference's exactly.
    setup_parallel(dict(parallel=dict(pipeline=1), seed=0))
    model = _model()
    same_init = all(torch.equal(a, b) for a, b in zip(initial, model.parameters()))
    ddp = wrap_data_parallel(model, ctx)
    syncs = []
    ddp.register_comm_hook(None, lambda state, bucket: (syncs.append(1), allreduce_hook(None, bucket))[1])
    engine = _engine(ddp, accumulation)
    engine.train()
    micro = GLOBAL_BATCH // (world_size * accumulation)
    batches = []
    for s in range(STEPS):
        start = s * GLOBAL_BATCH + rank * (GLOBAL_BATCH // world_size)  # this rank's half of the step
        for m in range(accumulation):
            part = slice(start + m * micro, start + (m + 1) * micro)
            batches.append((x[part], y[part]))
    it = iter(batches)
    for _ in range(STEPS):
        engine.step(it)
    return dict(ddp=isinstance(ddp, nn.parallel.DistributedDataParallel), same_init=same_init,
                syncs=len(syncs), initial=initial, params=[p.detach().clone() for p in model.parameters()],
                reference=[p.detach().clone() for p in reference.parameters()])


@pytest.mark.parametrize('accumulation', [1, 2])
def test_two_ddp_ranks_equal_one_process(accumulation):
    results = run_distributed(_ddp_vs_single, 2, accumulation, timeout=90)
    for res in results:
        assert res['ddp'] and res['same_init']
        assert res['syncs'] == STEPS  # one gradient sync per optimizer step, none on accumulation steps
        for got, want in zip(res['params'], res['reference']):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert not any(torch.equal(a, b) for a, b in zip(res['params'], res['initial']))  # it trained
    for a, b in zip(results[0]['params'], results[1]['params']):
        assert torch.equal(a, b)  # replicas stay bit-identical


def _pipeline_replicas(rank, world_size):
    ctx = setup_parallel(dict(parallel=dict(pipeline=2)))
    torch.manual_seed(100 + rank)  # deliberately different init on every rank
    model = _model()
    wrapped = wrap_data_parallel(model, ctx)
    return dict(same_object=wrapped is model, weight=model[0].weight.detach().clone())


def test_pipeline_stages_are_not_ddp_but_start_identical():
    results = run_distributed(_pipeline_replicas, 4, timeout=90)
    assert all(r['same_object'] for r in results)
    # Stage 0 lives on ranks 0 and 2, stage 1 on ranks 1 and 3: each copies its data group's first rank.
    assert torch.equal(results[0]['weight'], results[2]['weight'])
    assert torch.equal(results[1]['weight'], results[3]['weight'])
    assert not torch.equal(results[0]['weight'], results[1]['weight'])


def test_single_replica_is_left_alone():
    model = _model()
    assert wrap_data_parallel(model, ParallelContext(pipeline=1, rank=0, world_size=1)) is model


def test_data_parallel_ranks_see_disjoint_reproducible_shuffles():
    dataset = torch.utils.data.TensorDataset(torch.arange(40).float(), torch.arange(40))

    def order(dp_rank, epoch):
        ctx = ParallelContext(pipeline=1, rank=dp_rank, world_size=2)  # no process group needed
        loader = build_dataloader(dict(batch_size=4), dataset, context=ctx, seed=0, shuffle=True)
        loader.sampler.set_epoch(epoch)
        return [int(i) for _, label in loader for i in label]

    r0, r1 = order(0, 0), order(1, 0)
    assert sorted(r0 + r1) == list(range(40)) and not set(r0) & set(r1)
    assert order(0, 0) == r0  # reproducible
    assert order(0, 1) != r0  # a new shuffle every epoch


def _samples(loader):
    return [int(i) for _, label in loader for i in label]


def test_test_split_shards_are_not_padded_but_train_shards_are():
    """torch's DistributedSampler repeats samples to even out the shards; the test split must not
    (a repeated sample would count twice in the accuracy), the train split must (DDP needs every
    replica to run the same number of steps)."""
    from colossal_runner.config import Config
    from colossal_runner.initialize import build_data
    part = dict(dataset=dict(type='SyntheticClassification', num_samples=9, num_features=4, num_classes=3),
                dataloader=dict(batch_size=2))
    cfg = Config(dict(data=dict(train=part, test=part)))
    train, test = {}, {}
    for dp_rank in (0, 1):
        ctx = ParallelContext(pipeline=1, rank=dp_rank, world_size=2)  # no process group needed
        train[dp_rank], test[dp_rank] = build_data(cfg, ctx, seed=0)
    got = [_samples(_indexed(test[r])) for r in (0, 1)]
    assert sorted(got[0] + got[1]) == list(range(9))  # every sample once
    assert (len(test[0]), len(test[1])) == (3, 2)  # 5 and 4 samples in batches of 2
    trained = [_samples(_indexed(train[r])) for r in (0, 1)]
    assert len(trained[0]) == len(trained[1]) == 5 and len(set(trained[0] + trained[1])) == 9


def _indexed(loader):
    """The loader's batches with each sample's index as its label."""
    indices = list(iter(loader.sampler)) if loader.sampler is not None else list(range(len(loader.dataset)))
    size = loader.batch_size
    return [(None, torch.tensor(indices[i:i + size])) for i in range(0, len(indices), size)]


def _bn_model():
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))


def _dp_evaluation(rank, world_size):
    import torch.distributed as dist
    from colossal_runner.trainer import Trainer
    from colossal_runner.trainer.hooks import AccuracyHook, LossHook
    ctx = setup_parallel(dict(parallel=dict(pipeline=1), seed=0))
    x, y = _data()
    model = _bn_model()
    trainer = Trainer(_engine(wrap_data_parallel(model, ctx), 1), hooks=[LossHook(), AccuracyHook()])
    trainer.engine.train()
    half = slice(rank * 4, rank * 4 + 4)
    trainer.engine.step(iter([(x[half], y[half])]))  # each replica's running statistics now differ
    alone = trainer.predict(x[:2]) if rank == 0 else None  # one rank alone, right after training
    want_alone = model.eval()(x[:2])
    # What evaluation must compute: the trained weights with the first replica's running statistics
    reference = _bn_model()
    reference.load_state_dict(model.state_dict())
    for buffer in reference.buffers():
        dist.broadcast(buffer, src=0)
    reference.eval()
    results = {}
    for size in (9, 1):  # 5 and 4 samples per replica (3 and 2 batches); 1 and none
        with torch.no_grad():
            out = reference(x[:size])
        loader = build_dataloader(dict(batch_size=2), torch.utils.data.TensorDataset(x[:size], y[:size]),
                                  context=ctx, pad_shards=False)
        results[size] = dict(metrics=trainer.evaluate(loader), batches=len(loader),
                             loss=float(nn.functional.cross_entropy(out, y[:size])),
                             accuracy=float((out.argmax(1) == y[:size]).float().mean()))
    dist.barrier()
    return dict(results=results, alone=None if alone is None else alone.detach().clone(),
                want_alone=want_alone.detach().clone(), training=trainer.engine.training,
                buffers=[b.clone() for b in model.buffers()])


def test_data_parallel_evaluation_counts_each_sample_once_with_uneven_shards():
    """Each sample counts once, with the first replica's BatchNorm statistics on every replica, also
    when the replicas run different numbers of test batches (none at all on one), and a rank may
    call predict alone right after training (DDP's own forward would start a buffer broadcast)."""
    results = run_distributed(_dp_evaluation, 2, timeout=60)
    assert [[r['results'][size]['batches'] for r in results] for size in (9, 1)] == [[3, 2], [1, 0]]
    for res in results:
        for size in (9, 1):
            got = res['results'][size]
            assert got['metrics']['Accuracy'] == pytest.approx(got['accuracy'], abs=1e-6)
            assert got['metrics']['Loss'] == pytest.approx(got['loss'], rel=1e-5)
    torch.testing.assert_close(results[0]['alone'], results[0]['want_alone'])
    for a, b in zip(results[0]['buffers'], results[1]['buffers']):
        assert torch.equal(a, b)  # evaluation gave every replica the first one's statistics
