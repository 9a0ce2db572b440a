"""Module-level functions that the pipeline tests run on real gloo processes.

Each launch runs many configurations: starting processes is the slow part. Every rank also
computes the single-process reference itself and returns only the differences.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

import colossal_runner.models  # noqa: F401  (registers MLP)
from colossal_runner.distributed.context import ParallelContext, set_context
from colossal_runner.engine import Engine
from colossal_runner.engine.schedule import (GPipeSchedule, InterleavedPipelineSchedule, NoPipelineSchedule,
                                             PipelineSchedule)
from colossal_runner.pipeline import build_pipeline_model
from colossal_runner.registry import MODELS

SEED = 7
IN, CLASSES = 6, 3
MLP = dict(type='MLP', in_features=IN, hidden=(8,) * 7, num_classes=CLASSES)  # 16 layers, 8 Linear
BATCHES = (16, 8)  # the second step has a smaller batch: shapes are exchanged again


class Fork(nn.Module):
    """Outputs a tuple with a float and an integer tensor, to cross a stage boundary."""

    def forward(self, x):
        return x, torch.tanh(x), torch.full((x.shape[0],), 3, dtype=torch.int64)


class Join(nn.Module):
    def forward(self, parts):
        x, y, n = parts
        return x * y + n[:, None].float()


def tuple_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(IN, 8), Fork(), Join(), nn.Linear(8, CLASSES))


class RecordingSGD(torch.optim.SGD):
    """SGD that keeps a copy of every gradient it applies (the engine zeroes them afterwards)."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.record: List[List[torch.Tensor]] = []

    def step(self, closure=None):
        self.record.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                            for g in self.param_groups for p in g['params']])
        return super().step(closure)


SCHEDULES = {'1f1b': PipelineSchedule, 'gpipe': GPipeSchedule}


def make_schedule(name: str, m: int, chunks: int):
    if name == 'interleaved':
        return InterleavedPipelineSchedule(m, num_model_chunks=chunks)
    if name == 'none':
        return NoPipelineSchedule()
    if name == '1f1b_fixed':  # shapes given up front: no metadata messages (dim 0 follows the batch)
        return PipelineSchedule(m, tensor_shape=(BATCHES[0] // m, 8), tensor_dtype='float32')
    return SCHEDULES[name](m)


def batches(seed: int = SEED):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, IN, generator=gen), torch.randint(0, CLASSES, (b,), generator=gen))
            for b in BATCHES]


def train(model: nn.Module, schedule, data, data_group=None, clip: float = 0.0):
    """Two optimizer steps and one evaluation step; gradients, losses and outputs by name."""
    opt = RecordingSGD(model.parameters(), lr=0.1)
    engine = Engine(model, nn.CrossEntropyLoss(), opt, step_schedule=schedule, data_parallel_group=data_group,
                    clip_grad_norm=clip)
    it = iter(data)
    losses = [engine.step(it)[2] for _ in range(len(data))]
    engine.eval()
    out, label, eval_loss = engine.evaluate_step(iter(data[:1]))
    names = [n for n, _ in model.named_parameters()]
    grads = {n: [rec[i] for rec in opt.record] for i, n in enumerate(names)}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return dict(losses=losses, grads=grads, params=params, out=out, eval_loss=eval_loss)


def _strip(name: str, chunks: int) -> str:
    return name.split('.', 1)[1] if chunks > 1 else name


def compare(rank: int, world_size: int, configs: List[tuple]) -> List[Dict]:
    """Run each ``(schedule, P, M, C, model, clip)`` and return its differences from the reference."""
    results = []
    for name, p, m, chunks, model_kind, clip in configs:
        context = ParallelContext(pipeline=p)  # every rank builds the same groups in the same order
        d, shard = context.data_size, context.dp_rank
        full = batches()
        local = [(x.chunk(d)[shard], y.chunk(d)[shard]) for x, y in full]
        set_context(ParallelContext(pipeline=1, rank=0, world_size=1))  # the reference is one process
        torch.manual_seed(SEED)
        reference = tuple_model() if model_kind == 'tuple' else MODELS.build(MLP)
        ref = train(reference, NoPipelineSchedule(), full, clip=clip)
        set_context(context)
        torch.manual_seed(SEED)
        if model_kind == 'tuple':
            stage = build_pipeline_model(tuple_model(), context, chunks)
        else:
            # by parameters, each of the P * C parts gets one Linear (uniform would leave one bare)
            partition = 'parameters' if chunks > 1 else 'uniform'
            stage = build_pipeline_model(dict(MLP, partition=partition), context, chunks)
        got = train(stage, make_schedule(name, m, chunks), local, context.data_group, clip)
        row = dict(config=(name, p, m, chunks, model_kind, clip), stage=context.stage, dp=shard,
                   names=sorted(_strip(n, chunks) for n in got['grads']), grad_err=0.0, param_err=0.0)
        for n, grads in got['grads'].items():
            want = ref['grads'][_strip(n, chunks)]
            errors = [(g - w).abs().max().item() for g, w in zip(grads, want)]
            row['grad_err'] = max([row['grad_err']] + errors)
            row['steps'] = len(grads)
            row['param_err'] = max(row['param_err'],
                                   (got['params'][n] - ref['params'][_strip(n, chunks)]).abs().max().item())
        if context.is_last_stage:
            if d == 1:  # with data parallelism each replica's loss is that of its shard
                row['loss_err'] = max((a - b).abs().item() for a, b in zip(got['losses'], ref['losses']))
            row['eval_err'] = (got['eval_loss'] - ref['eval_loss']).abs().item() if d == 1 else 0.0
            row['out_shape'] = tuple(got['out'].shape)
        else:
            row['none'] = got['losses'] == [None] * len(BATCHES) and got['out'] is None
        results.append(row)
    set_context(None)
    return results


class _Box:
    """A saved activation; counts how many are alive."""

    def __init__(self, tensor, counter):
        self.tensor, self.counter = tensor, counter
        counter[0] += 1
        counter[1] = max(counter[1], counter[0])

    def __del__(self):
        self.counter[0] -= 1


def peak_saved(engine: Engine, data) -> int:
    counter = [0, 0]
    with torch.autograd.graph.saved_tensors_hooks(lambda t: _Box(t, counter), lambda box: box.tensor):
        engine.step(iter(data))
    return counter[1]


def peak_live_outputs(engine: Engine, data) -> int:
    """The most stage outputs whose memory is alive at once during one step.

    A weak reference to each output's storage (not to the tensor object) sees the memory
    itself, wherever it is still held: by the runtime, a send in flight, or autograd.
    """
    refs: List[StorageWeakRef] = []
    peak = [0]

    def record(module, args, out):
        refs.append(StorageWeakRef(out.untyped_storage()))
        peak[0] = max(peak[0], sum(not ref.expired() for ref in refs))  # it only grows at a forward

    handle = engine.model.register_forward_hook(record)
    try:
        engine.step(iter(data))
    finally:
        handle.remove()
    return peak[0]


def memory(rank: int, world_size: int, m: int) -> Dict[str, float]:
    """Per stage: peak in-flight microbatches (live saved tensors relative to one microbatch's)
    and the peak number of stage outputs alive. The stages end in a Linear, which does not
    save its output, so a sent output is needed by nothing once its receiver has it."""
    context = ParallelContext(pipeline=world_size)
    set_context(context)
    torch.manual_seed(SEED)
    stage = build_pipeline_model(dict(MLP, partition='uniform'), context)
    assert isinstance(stage[-1], nn.Linear) or context.is_last_stage, stage
    opt = torch.optim.SGD(stage.parameters(), lr=0.0)
    x, y = torch.randn(2 * m, IN), torch.randint(0, CLASSES, (2 * m,))
    single = Engine(stage, nn.CrossEntropyLoss(), opt, step_schedule=GPipeSchedule(1))
    one = peak_saved(single, [(x[:2], y[:2])])
    result = {'per_microbatch': one}
    for name in ('1f1b', 'gpipe'):
        engine = Engine(stage, nn.CrossEntropyLoss(), opt, step_schedule=make_schedule(name, m, 1))
        result[name] = peak_saved(engine, [(x, y)]) / one
        result[name + '_outputs'] = peak_live_outputs(engine, [(x, y)])
    set_context(None)
    return result


def compare_and_memory(rank: int, world_size: int, configs: List[tuple], m: int):
    """Both checks in one launch: process start-up is the slow part of these tests."""
    return compare(rank, world_size, configs), memory(rank, world_size, m)



def fp16_pipeline(rank: int, world_size: int) -> Dict:
    """Two fp16 optimizer steps of 1F1B over 2 stages, and of one process, on the same data: the
    stage without the loss never scales a loss itself, yet unscales what it receives."""
    single = ParallelContext(pipeline=1, rank=0, world_size=1)
    context = ParallelContext(pipeline=2)
    set_context(single)
    torch.manual_seed(SEED)
    reference = MODELS.build(MLP)
    ref_engine = Engine(reference, nn.CrossEntropyLoss(), torch.optim.SGD(reference.parameters(), lr=0.1),
                        amp='fp16')
    set_context(context)
    torch.manual_seed(SEED)
    stage = build_pipeline_model(dict(MLP), context, 1)
    engine = Engine(stage, nn.CrossEntropyLoss(), torch.optim.SGD(stage.parameters(), lr=0.1),
                    step_schedule=PipelineSchedule(2), amp='fp16')
    for x, y in batches():
        engine.step(iter([(x, y)]))
        set_context(single)
        ref_engine.step(iter([(x, y)]))
        set_context(context)
    ref = dict(reference.named_parameters())
    errors = {name: (p.detach() - ref[name].detach()).abs().max().item()
              for name, p in stage.named_parameters()}
    set_context(None)
    return dict(scale=engine.scaler.get_scale(), ref_scale=ref_engine.scaler.get_scale(), errors=errors)
