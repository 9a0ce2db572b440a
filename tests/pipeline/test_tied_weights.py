"""Tied weights (one tensor in several layers, as GPT-2's head and token embedding) on pipeline stages."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from colossal_runner.distributed.context import ParallelContext, set_context
from colossal_runner.engine import Engine
from colossal_runner.engine.schedule import InterleavedPipelineSchedule, NoPipelineSchedule
from colossal_runner.models.gpt import SequenceCrossEntropyLoss, TinyGPT
from colossal_runner.pipeline import build_pipeline_model, split_model
from colossal_runner.testing import run_distributed

GPT = dict(vocab_size=11, block_size=8, n_layer=2, n_embd=16, n_head=2)  # 5 layers: embedding ... head


class TiedGPT(TinyGPT):
    """The output head uses the token embedding's weight, as GPT-2 and nanoGPT do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self[-1].weight = self[0].tok.weight


class HeadFirstTiedGPT(TinyGPT):
    """Tied the other way round: the embedding takes the head's tensor, with the head's initialization."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self[0].tok.weight = self[-1].weight


class TiedPair(nn.Module):
    """Two Linear layers sharing one weight inside one pipeline layer."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class PairNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(4, 4), TiedPair(), nn.Linear(4, 2))


class MiddleTiedNet(nn.Sequential):
    """Layers 1 and 2 share a weight: a partition can keep them on one stage."""

    def __init__(self):
        super().__init__(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
        self[2].weight = self[1].weight


@pytest.fixture(autouse=True)
def _reset_context():
    yield
    set_context(None)


def _kwargs(model_type):
    return GPT if issubclass(model_type, TinyGPT) else {}


@pytest.mark.parametrize('model_type,p,rank,chunks,partition', [
    (TiedGPT, 1, 0, 2, 'uniform'),            # one process, interleaved: the tie spans its two chunks
    (HeadFirstTiedGPT, 1, 0, 2, 'uniform'),
    (TiedGPT, 1, 0, 3, 'parameters'),
    (PairNet, 1, 0, 2, 'uniform'),            # a tie inside one layer
    (PairNet, 2, 1, 1, [0, 1, 3]),
    (MiddleTiedNet, 2, 1, 1, [0, 1, 4]),      # stage 1 holds both holders
    (MiddleTiedNet, 2, 0, 1, [0, 1, 4]),      # stage 0 holds neither
])
def test_tied_weights_stay_tied_with_the_whole_models_values(model_type, p, rank, chunks, partition):
    torch.manual_seed(3)
    whole = dict(model_type(**_kwargs(model_type)).named_parameters(remove_duplicate=False))
    after_whole = torch.rand(3)
    torch.manual_seed(3)
    stage = build_pipeline_model(dict(type=model_type, partition=partition, **_kwargs(model_type)),
                                 ParallelContext(p, rank=rank, world_size=p), num_model_chunks=chunks)
    assert torch.equal(torch.rand(3), after_whole)  # the generator is consumed as by the whole model
    got = {(n.split('.', 1)[1] if chunks > 1 else n): t
           for n, t in stage.named_parameters(remove_duplicate=False)}
    assert got and set(got) <= set(whole)
    for name, tensor in got.items():
        assert torch.equal(tensor, whole[name]), name
    tied = [(a, b) for a in got for b in got if a < b and whole[a] is whole[b]]
    assert tied or (rank == 0 and model_type is MiddleTiedNet)  # stage 0 holds neither holder
    for a, b in ((a, b) for a in got for b in got if a < b):
        assert (got[a] is got[b]) == ((a, b) in tied), (a, b)


def test_a_tied_gpt_trains_on_interleaved_chunks_of_one_process_like_the_whole_model():
    set_context(ParallelContext())
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 11, (4, 8), generator=gen), torch.randint(0, 11, (4, 8), generator=gen))
            for _ in range(3)]
    torch.manual_seed(5)
    whole = TiedGPT(**GPT)
    torch.manual_seed(5)
    chunks = build_pipeline_model(dict(type=TiedGPT, **GPT), ParallelContext(), num_model_chunks=2)
    assert len(list(chunks.parameters())) == len(list(whole.parameters()))  # one tensor for the tie
    engines = [Engine(model, SequenceCrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.5),
                      step_schedule=schedule)
               for model, schedule in ((whole, NoPipelineSchedule()),
                                       (chunks, InterleavedPipelineSchedule(2, num_model_chunks=2)))]
    it = [iter(data), iter(data)]
    for _ in data:
        ref, got = (engine.step(i)[2] for engine, i in zip(engines, it))
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    want = dict(whole.named_parameters(remove_duplicate=False))
    for name, param in chunks.named_parameters(remove_duplicate=False):
        torch.testing.assert_close(param, want[name.split('.', 1)[1]], atol=1e-5, rtol=0, msg=name)
    assert chunks[1][-1].weight is chunks[0][0].tok.weight


GPT_ACROSS = (r'the partition \[.*\] puts tied weights on different pipeline stages: '
              r'0\.tok\.weight \(stage 0\) and 4\.weight \(stage 1\) are one tensor\. .*layers 0 and 4 '
              r'are always on the first and the last stage, so untie the weights .*parallel\.pipeline=1')


@pytest.mark.parametrize('chunks', [1, 2])
def test_weights_tied_across_stages_are_an_error_on_every_stage(chunks):
    for rank in range(2):
        with pytest.raises(ValueError, match=GPT_ACROSS):
            build_pipeline_model(dict(type=TiedGPT, **GPT), ParallelContext(2, rank=rank, world_size=2),
                                 chunks)
    with pytest.raises(ValueError, match=GPT_ACROSS):  # an already built model is split the same way
        split_model(TiedGPT(**GPT), ParallelContext(2, rank=0, world_size=2), chunks)


def test_a_tie_a_partition_can_keep_on_one_stage_is_suggested():
    with pytest.raises(ValueError, match=r'1\.weight \(stage 0\) and 2\.weight \(stage 1\) are one tensor.*'
                                         r'use a partition that keeps layers \[1, 2\] on one stage .*'
                                         r'model\.partition'):
        build_pipeline_model(dict(type=MiddleTiedNet), ParallelContext(2, rank=1, world_size=2))


def _build_tied_gpt_over_two_stages(rank, world_size):
    try:
        build_pipeline_model(dict(type=TiedGPT, **GPT), ParallelContext(pipeline=2))
    except ValueError as error:
        return str(error)
    return None


def test_weights_tied_across_stages_stop_both_processes_with_the_same_error():
    first, second = run_distributed(_build_tied_gpt_over_two_stages, 2, timeout=60)
    assert first == second and '0.tok.weight (stage 0) and 4.weight (stage 1) are one tensor' in first


class Scaled(nn.Module):
    def __init__(self, table, frozen):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer('table', table, persistent=False)
        self.frozen = frozen

    def forward(self, x):
        return self.lin(x) * self.table * self.frozen


class SharedConstantsNet(nn.Sequential):
    """Every block holds one constant table (a buffer) and one frozen parameter: never trained."""

    def __init__(self):
        table, frozen = torch.linspace(0.5, 1.5, 4), nn.Parameter(torch.full((4,), 2.0), requires_grad=False)
        super().__init__(*[Scaled(table, frozen) for _ in range(3)], nn.Linear(4, 2))


@pytest.mark.parametrize('build', ['config', 'module'])
def test_buffers_and_frozen_parameters_shared_across_stages_are_kept_not_refused(build):
    whole = SharedConstantsNet()
    for rank, held in ((0, [0, 1]), (1, [2])):
        context = ParallelContext(2, rank=rank, world_size=2)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the "no memory saved" fallback: the constructor fills them
            stage = (build_pipeline_model(dict(type=SharedConstantsNet), context) if build == 'config'
                     else split_model(SharedConstantsNet(), context))
        blocks = [getattr(stage, str(i)) for i in held]  # children keep their whole-model index
        assert all(torch.equal(b.table, whole[0].table) and torch.equal(b.frozen, whole[0].frozen)
                   for b in blocks)
        assert len({id(b.table) for b in blocks}) == 1 and len({id(b.frozen) for b in blocks}) == 1
