"""Partitioning layers and building one stage with the weights of the whole model."""
from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import colossal_runner.models  # noqa: F401  (registers MLP, SimpleCNN, TinyGPT)
from colossal_runner.distributed.context import ParallelContext
from colossal_runner.pipeline import (build_pipeline_model, get_layers, partition_balanced, partition_layers,
                                      partition_uniform, split_model)
from colossal_runner.registry import MODELS


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 40), parts=st.integers(1, 10))
def test_uniform_partition_is_balanced_and_complete(n, parts):
    if n < parts:
        with pytest.raises(ValueError, match=f'the model has {n} layers but {parts} pipeline parts'):
            partition_uniform(n, parts)
        return
    bounds = partition_uniform(n, parts)
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    assert bounds[0] == 0 and bounds[-1] == n and len(sizes) == parts
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(0, 50), min_size=1, max_size=9), parts=st.integers(1, 4))
def test_balanced_partition_is_optimal(weights, parts):
    if len(weights) < parts:
        return
    bounds = partition_balanced(weights, parts)
    heaviest = lambda b: max(sum(weights[x:y]) for x, y in zip(b, b[1:]))
    best = min(heaviest([0, *cuts, len(weights)])
               for cuts in itertools.combinations(range(1, len(weights)), parts - 1))
    assert heaviest(bounds) == best
    assert all(a < b for a, b in zip(bounds, bounds[1:])) and bounds[0] == 0 and bounds[-1] == len(weights)
    if sum(w > 0 for w in weights) >= parts:  # no stage without parameters when it can be helped
        assert all(sum(weights[x:y]) > 0 for x, y in zip(bounds, bounds[1:])), bounds


def test_balanced_partition_leaves_no_stage_without_parameters():
    """Two heavy layers decide the heaviest part, so many splits tie; the one that put the
    ReLU (no parameters) alone on a stage ([0, 1, 2, 5, 7]) left that stage nothing to optimize
    (torch: 'optimizer got an empty parameter list')."""
    weights = [50, 0, 5, 2, 1, 0, 50]
    bounds = partition_balanced(weights, 4)
    assert all(sum(weights[x:y]) > 0 for x, y in zip(bounds, bounds[1:])), bounds
    assert max(sum(weights[x:y]) for x, y in zip(bounds, bounds[1:])) == 50


def test_parameter_partition_balances_parameters_not_layers():
    layers = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 100)]
    assert partition_layers(layers, 2, 'uniform') == [0, 3, 5]
    assert partition_layers(layers, 2, 'parameters') == [0, 4, 5]  # the big last layer stands alone


def test_explicit_boundaries_and_errors():
    layers = [nn.ReLU()] * 5
    assert partition_layers(layers, 2, [0, 1, 5]) == [0, 1, 5]
    with pytest.raises(ValueError, match=r'3 strictly increasing ints from 0 to 5.*got \[0, 3, 3\].*'
                                         r'partition=\[0, 3, 5\]'):
        partition_layers(layers, 2, [0, 3, 3])
    with pytest.raises(ValueError, match=r'got \[0, 5\]'):
        partition_layers(layers, 2, [0, 5])
    with pytest.raises(ValueError, match="unknown partition method 'flops'; expected 'uniform', 'param"):
        partition_layers(layers, 2, 'flops')
    with pytest.raises(TypeError, match='got float'):
        partition_layers(layers, 2, 0.5)


MODEL_CFGS = [dict(type='MLP', in_features=12, hidden=(8, 8, 8)),
              dict(type='SimpleCNN', channels=(4, 8), hidden=16),
              dict(type='TinyGPT', vocab_size=11, block_size=8, n_layer=3, n_embd=16, n_head=2)]


@pytest.mark.parametrize('cfg', MODEL_CFGS, ids=lambda c: c['type'])
@pytest.mark.parametrize('p,chunks,partition', [(2, 1, 'uniform'), (3, 1, 'parameters'), (2, 2, 'uniform')])
def test_stages_hold_exactly_the_whole_models_parameters(cfg, p, chunks, partition):
    torch.manual_seed(11)
    whole = MODELS.build(cfg).state_dict()
    after_whole = torch.rand(3)  # the random generator's state after building the whole model
    seen = {}
    for stage in range(p):
        torch.manual_seed(11)
        context = ParallelContext(p, rank=stage, world_size=p)
        part = build_pipeline_model(dict(cfg, partition=partition), context, num_model_chunks=chunks)
        assert isinstance(part, nn.ModuleList if chunks > 1 else nn.Sequential)
        assert torch.equal(torch.rand(3), after_whole)  # every stage ends with the same generator state
        for key, value in part.state_dict().items():
            key = key.split('.', 1)[1] if chunks > 1 else key
            assert key not in seen, f'{key} is on two stages'
            seen[key] = value
            assert torch.equal(value, whole[key]), key
    assert sorted(seen) == sorted(whole)


def test_chunk_c_of_stage_s_is_virtual_stage_c_times_p_plus_s():
    cfg = dict(type='MLP', in_features=4, hidden=(4,) * 7, partition=[0, 2, 4, 6, 8, 10, 12, 14, 16])
    stage1 = build_pipeline_model(cfg, ParallelContext(4, rank=1, world_size=4), num_model_chunks=2)
    assert [list(chunk._modules) for chunk in stage1] == [['2', '3'], ['10', '11']]


def test_a_stage_only_allocates_its_own_layers():
    cfg = dict(type='MLP', in_features=64, hidden=(256, 256, 256))
    whole = sum(p.numel() for p in MODELS.build(cfg).parameters())
    first = build_pipeline_model(cfg, ParallelContext(2, rank=0, world_size=2))
    assert 0 < sum(p.numel() for p in first.parameters()) < whole
    assert all(p.device.type == 'cpu' and not p.is_meta for p in first.parameters())


def test_fewer_layers_than_stages_is_a_clear_error():
    with pytest.raises(ValueError, match=r'the model has 4 layers but 6 pipeline parts \(stages x model'):
        build_pipeline_model(dict(type='MLP', hidden=8), ParallelContext(3, rank=0, world_size=3), 2)


def test_one_stage_builds_the_model_itself():
    torch.manual_seed(0)
    model = build_pipeline_model(dict(type='MLP', hidden=8, partition='parameters'), ParallelContext())
    assert type(model).__name__ == 'MLP'


class NoReset(nn.Module):
    """A layer whose weight cannot be rebuilt by reset_parameters."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return x * self.weight


class _NoResetNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(4, 4), NoReset(), nn.Linear(4, 2))


def test_layers_without_reset_parameters_fall_back_to_a_full_build():
    torch.manual_seed(5)
    whole = _NoResetNet().state_dict()
    torch.manual_seed(5)
    with pytest.warns(UserWarning, match=r'has tensors that reset_parameters\(\) cannot rebuild'):
        stage = build_pipeline_model(dict(type=_NoResetNet, partition=[0, 2, 3]),
                                     ParallelContext(2, rank=0, world_size=2))
    for key, value in stage.state_dict().items():
        assert torch.equal(value, whole[key])


class _OwnInitNet(nn.Sequential):
    """Initializes its Linear layers itself after making them, as GPT-style code does."""

    def __init__(self, std=0.02):
        super().__init__(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        for module in self:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)


@pytest.mark.parametrize('partition', ['uniform', 'parameters', [0, 3, 5]])
def test_weights_a_constructor_initializes_itself_are_kept_on_every_stage(partition):
    torch.manual_seed(3)
    whole = _OwnInitNet().state_dict()
    seen = set()
    for rank in range(2):
        torch.manual_seed(3)
        with pytest.warns(UserWarning, match='weights initialized in __init__'):
            stage = build_pipeline_model(dict(type=_OwnInitNet, partition=partition),
                                         ParallelContext(2, rank=rank, world_size=2))
        for key, value in stage.state_dict().items():
            assert torch.equal(value, whole[key]), key
            seen.add(key)
    assert seen == set(whole)
    assert whole['2.weight'].std() < 0.05 and not whole['2.bias'].any()  # the constructor's init, not torch's


def test_models_initialized_by_reset_parameters_alone_build_layer_by_layer_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        gpt = dict(type='TinyGPT', vocab_size=11, block_size=8, n_layer=2, n_embd=16, n_head=2)
        build_pipeline_model(gpt, ParallelContext(2, rank=1, world_size=2))


def test_a_built_module_is_split_with_the_partition_given():
    model = _OwnInitNet()
    stage = build_pipeline_model(model, ParallelContext(2, rank=0, world_size=2), partition=[0, 1, 5])
    assert list(stage._modules) == ['0']
    with pytest.raises(ValueError, match='the partition is given twice'):
        build_pipeline_model(dict(type=_OwnInitNet, partition='uniform'),
                             ParallelContext(2, rank=0, world_size=2), partition='parameters')


class Listed(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)])

    def pipeline_layers(self):
        return list(self.blocks)


def test_models_that_list_their_layers_can_be_split_and_others_cannot():
    stage = split_model(Listed(), ParallelContext(2, rank=1, world_size=2))
    assert [type(m).__name__ for m in stage] == ['Linear']
    with pytest.raises(TypeError, match='Conv2d cannot be split into pipeline stages: it must be an nn.Seq'):
        get_layers(nn.Conv2d(1, 1, 1))


def test_a_stage_without_parameters_is_an_error_on_every_stage():
    """Explicit boundaries that give stage 1 a ReLU alone: another partition would do. Every rank
    raises (not only stage 1, at its optimizer), so that none goes on to wait for it."""
    for rank in range(4):
        with pytest.raises(ValueError, match=r'leaves pipeline stages without parameters \(stage 1: layers '
                                             r'\[2\]\).*partition=\'parameters\''):
            build_pipeline_model(dict(type='MLP', hidden=[8, 8, 8], partition=[0, 2, 3, 5, 8]),
                                 ParallelContext(4, rank=rank, world_size=4))


def test_a_stage_left_without_parameters_is_told_how_many_parts_fit():
    """configs/digits/mlp.py's MLP has 3 Linear layers: over 4 stages one stage holds none, and no
    partition helps, so the error says how many parts fit instead of suggesting one."""
    mlp = dict(type='MLP', in_features=64, hidden=[128, 64], num_classes=10, partition='parameters')
    with pytest.raises(ValueError, match=r'\(stage 0: layers \[0\]\).*only 3 layers with parameters for 4 '
                                         r'pipeline parts: use at most 3 parts \(parallel.pipeline'):
        build_pipeline_model(mlp, ParallelContext(pipeline=4, rank=3, world_size=4))


def test_uniform_parts_of_a_two_layer_mlp_over_four_stages_name_each_bare_stage():
    """hidden=[8] is Flatten, Linear, ReLU, Linear: uniform over 4 stages leaves stages 0 and 2 bare
    (torch said only 'optimizer got an empty parameter list')."""
    with pytest.raises(ValueError, match=r'\(stage 0: layers \[0\]; stage 2: layers \[2\]\).*only 2 layers'):
        build_pipeline_model(dict(type='MLP', hidden=[8], partition='uniform'),
                             ParallelContext(pipeline=4, rank=1, world_size=4))


def test_a_chunk_without_parameters_is_fine_while_its_stage_has_some():
    """Interleaved: a stage's optimizer holds all its chunks' parameters, so only a whole stage
    without any is refused."""
    cfg = dict(type='MLP', hidden=[8, 8], partition=[0, 1, 2, 4, 6])  # stage 0's chunk 0: Flatten alone
    stage0 = build_pipeline_model(cfg, ParallelContext(2, rank=0, world_size=2), num_model_chunks=2)
    assert [list(chunk._modules) for chunk in stage0] == [['0'], ['2', '3']]
    assert not list(stage0[0].parameters()) and list(stage0[1].parameters())


_LIVE: list = []  # every _CountingLinear built, in order (the meta model's layers among them)


class _CountingLinear(nn.Linear):
    """Records, as it initializes, how many of the layers built so far hold real memory."""
    seen: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _LIVE.append(self)

    def reset_parameters(self):
        super().reset_parameters()
        if not self.weight.is_meta:
            _CountingLinear.seen.append(sum(not layer.weight.is_meta for layer in _LIVE))


@MODELS.register_module()
class _CountingStack(nn.Sequential):
    def __init__(self, n=6, width=8):
        super().__init__(*[_CountingLinear(width, width) for _ in range(n)])


def test_a_stage_holds_at_most_one_other_stages_layer_while_it_builds():
    _LIVE.clear()
    _CountingLinear.seen.clear()
    stage = build_pipeline_model(dict(type='_CountingStack', n=6), ParallelContext(2, rank=0, world_size=2))
    assert len(stage) == 3 and len(_CountingLinear.seen) == 6
    # stage 0 keeps layers 0-2; each of layers 3-5 is freed before the next is allocated
    assert _CountingLinear.seen == [1, 2, 3, 4, 4, 4]
