"""Engine on 2 real gloo processes: data-parallel gradient averaging, DDP no_sync, pipeline clipping.

All checks share one launch because starting processes is the expensive part.
"""
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from colossal_runner.distributed.context import ParallelContext, set_context
from colossal_runner.engine import Engine, NonFiniteLossError
from colossal_runner.engine.engine import all_reduce_mean
from colossal_runner.testing import run_distributed


class Stage(nn.Module):
    """One pipeline stage's share of a model: four weights."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return self.weight * x


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def full_batches(steps):
    g = torch.Generator().manual_seed(4)
    return [(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(steps)]


def reference_params(steps):
    """One process, the full batch of 8 per step."""
    model = make_model()
    engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9))
    engine.step(iter(full_batches(steps)))
    engine.step(iter(full_batches(steps)[1:]))
    return [p.detach().clone() for p in model.parameters()]


def my_micro_batches(rank, steps, micro):
    """This rank's half of every full batch, cut into ``micro`` micro-batches."""
    out = []
    for x, y in full_batches(steps):
        xs, ys = x[rank * 4:(rank + 1) * 4], y[rank * 4:(rank + 1) * 4]
        out.extend(zip(xs.chunk(micro), ys.chunk(micro)))
    return out


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _checks(rank, world_size):
    results = {}
    expected = reference_params(2)

    # 1. plain model + data_parallel_group: bucketed all-reduce, with accumulation of 2 micro-steps
    model = make_model()
    engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9),
                    gradient_accumulation=2, data_parallel_group=dist.group.WORLD)
    data = iter(my_micro_batches(rank, 2, 2))
    engine.step(data)
    engine.step(data)
    results['allreduce_diff'] = max_diff([p.detach() for p in model.parameters()], expected)

    # 2. DDP: gradients are synchronised once per optimizer step, on the last micro-step only
    calls = []

    def counting_hook(state, bucket):
        state.append(1)
        return default_hooks.allreduce_hook(None, bucket)

    ddp = DistributedDataParallel(make_model(), bucket_cap_mb=25)
    ddp.register_comm_hook(calls, counting_hook)
    engine = Engine(ddp, nn.CrossEntropyLoss(), torch.optim.SGD(ddp.parameters(), lr=0.3, momentum=0.9),
                    gradient_accumulation=2, data_parallel_group=dist.group.WORLD)
    data = iter(my_micro_batches(rank, 2, 2))
    engine.step(data)
    results['ddp_syncs_first_step'] = len(calls)
    engine.step(data)
    results['ddp_diff'] = max_diff([p.detach() for p in ddp.module.parameters()], expected)
    results['ddp_state_keys'] = sorted(engine.state_dict()['model'])[:1]

    # 3. the bucketed mean over several buckets and dtypes
    tensors = [torch.full((3,), float(rank)), torch.full((2, 2), 2.0 * rank, dtype=torch.float64),
               torch.full((5,), 10.0 + rank)]
    all_reduce_mean(tensors, dist.group.WORLD, world_size, bucket_bytes=16)
    results['bucket_means'] = [t.tolist() for t in tensors]

    # 4. a 2-stage pipeline: each rank holds half of the parameters. Clipping uses the global
    # norm over both stages, and an fp16 overflow on one stage makes both skip the step (a finite
    # loss of 0 whose scaled gradients overflow: not a NaN/Inf loss, so nonfinite_loss leaves it be).
    set_context(ParallelContext(pipeline=2))
    try:
        scale = 3.0 if rank == 0 else 4.0
        stage = Stage()
        engine = Engine(stage, lambda out, lab: out.sum() * scale,
                        torch.optim.SGD(stage.parameters(), lr=1.0), clip_grad_norm=5.0)
        engine.step(iter([(torch.ones(4), torch.zeros(4))]))
        results['pipeline_norm'] = float(engine.grad_norm)
        results['pipeline_weight'] = stage.weight.detach().tolist()

        stage = Stage()
        poison = 1e35 if rank == 1 else 1.0
        engine = Engine(stage, lambda out, lab: out.sum() * poison,
                        torch.optim.SGD(stage.parameters(), lr=1.0), amp='fp16')
        before = engine.scaler.get_scale()
        _, _, loss = engine.step(iter([(torch.ones(4), torch.zeros(4))]))
        results['fp16_weight'] = stage.weight.detach().tolist()
        results['fp16_scale_ratio'] = engine.scaler.get_scale() / before
        results['fp16_overflow_loss'] = None if loss is None else float(loss)

        # 5. fp16, a NaN loss on stage 1 only: both stages raise together (nonfinite_loss='raise')
        stage = Stage()
        poison = float('nan') if rank == 1 else 1.0
        engine = Engine(stage, lambda out, lab: out.sum() * poison,
                        torch.optim.SGD(stage.parameters(), lr=1.0), amp='fp16')
        try:
            engine.step(iter([(torch.ones(4), torch.zeros(4))]))
            results['fp16_raise'] = None
        except NonFiniteLossError as exc:
            results['fp16_raise'] = exc.local
        results['fp16_raise_weight'] = stage.weight.detach().tolist()
    finally:
        set_context(None)

    # 6. fp16 and DDP, a NaN sample on replica 1 only: both replicas drop the step and count it
    ddp = DistributedDataParallel(make_model())
    engine = Engine(ddp, nn.CrossEntropyLoss(), torch.optim.SGD(ddp.parameters(), lr=0.3), amp='fp16',
                    nonfinite_loss='skip')
    x, y = full_batches(1)[0]
    x = x[rank * 4:(rank + 1) * 4].clone()
    if rank == 1:
        x[0, 0] = float('nan')
    before = [p.detach().clone() for p in ddp.parameters()]
    _, _, loss = engine.step(iter([(x, y[rank * 4:(rank + 1) * 4])]))
    results['fp16_ddp_skip'] = (loss is None, engine.nonfinite_skips,
                                max_diff([p.detach() for p in ddp.parameters()], before))
    return results


def test_engine_on_two_processes():
    results = run_distributed(_checks, 2, timeout=90)
    for rank, res in enumerate(results):
        assert res['allreduce_diff'] < 1e-6, rank
        assert res['ddp_diff'] < 1e-6, rank
        assert res['ddp_syncs_first_step'] == 1, rank  # one bucket, synced on the last micro-step only
        assert res['ddp_state_keys'] == ['0.bias']  # saved without DDP's 'module.' prefix
        assert res['bucket_means'] == [[0.5] * 3, [[1.0, 1.0], [1.0, 1.0]], [10.5] * 5]
        # global norm over both stages: sqrt(4 * 9 + 4 * 16) = 10, so every gradient is halved
        assert res['pipeline_norm'] == pytest.approx(10.0)
        assert res['pipeline_weight'] == pytest.approx([-1.5 if rank == 0 else -2.0] * 4, rel=1e-5)
        assert res['fp16_weight'] == [0.0] * 4 and res['fp16_scale_ratio'] == 0.5, rank
        assert res['fp16_overflow_loss'] == 0.0, rank
        # each stage raised; only stage 1's own loss was the bad one
        assert res['fp16_raise'] is (rank == 1) and res['fp16_raise_weight'] == [0.0] * 4, rank
        assert res['fp16_ddp_skip'] == (True, 1, 0.0), rank
