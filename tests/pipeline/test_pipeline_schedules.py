"""Pipeline schedules on real gloo processes equal the single-process run, and hold little memory."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from colossal_runner.distributed.context import ParallelContext, set_context
from colossal_runner.engine import Engine
from colossal_runner.engine.schedule import (GPipeSchedule, InterleavedPipelineSchedule, NoPipelineSchedule,
                                             PipelineSchedule)
from colossal_runner.pipeline import build_pipeline_model
from colossal_runner.registry import MODELS, SCHEDULES
from colossal_runner.testing import run_distributed

from . import _workers as w

TOL = 1e-5


def _check(rows, world_size):
    by_config = {}
    for row in rows:
        by_config.setdefault(row['config'], []).append(row)
    for config, stages in by_config.items():
        name, p, m, chunks, kind, clip = config
        assert len(stages) == world_size, config
        for row in stages:
            assert row['steps'] == len(w.BATCHES), config
            assert row['grad_err'] < TOL, (config, row)
            assert row['param_err'] < TOL, (config, row)
            if row['stage'] == p - 1:
                assert row.get('loss_err', 0.0) < TOL, (config, row)
                assert row['eval_err'] < TOL, (config, row)
                assert row['out_shape'][0] == w.BATCHES[0] // (world_size // p), (config, row)
            else:
                assert row['none'], f'{config}: a non-last stage must return (None, None, None)'
        # the stages of one replica together hold every parameter of the model, once
        replica = [r for r in stages if r['dp'] == 0]
        names = [n for r in replica for n in r['names']]
        model = w.tuple_model() if kind == 'tuple' else MODELS.build(w.MLP)
        assert sorted(names) == sorted(n for n, _ in model.named_parameters()), config


def test_two_stages_equal_single_process():
    configs = [('1f1b', 2, 2, 1, 'mlp', 0.0), ('1f1b', 2, 4, 1, 'mlp', 0.5), ('1f1b', 2, 8, 1, 'mlp', 0.0),
               ('1f1b', 2, 1, 1, 'mlp', 0.0),  # fewer microbatches than stages: runs like GPipe
               ('interleaved', 2, 2, 2, 'mlp', 0.0), ('interleaved', 2, 4, 2, 'mlp', 0.0),
               ('gpipe', 2, 1, 1, 'mlp', 0.0), ('gpipe', 2, 4, 1, 'mlp', 0.0),
               ('1f1b', 2, 4, 1, 'tuple', 0.0), ('1f1b_fixed', 2, 4, 1, 'mlp', 0.0)]
    results = run_distributed(w.compare, 2, configs, timeout=120)
    _check([row for rank in results for row in rank], 2)


def test_fp16_pipeline_steps_on_every_stage_like_one_process():
    """amp='fp16' over 2 stages: the first stage, which never scales a loss, unscales the scaled
    gradients it receives with the same scale, and both stages end where one process does."""
    results = run_distributed(w.fp16_pipeline, 2, timeout=120)
    for res in results:
        assert res['scale'] == res['ref_scale'] == 65536.0
        assert res['errors'] and max(res['errors'].values()) < 1e-3, res['errors']
    assert set(results[0]['errors']).isdisjoint(results[1]['errors'])  # each stage its own half


FOUR_STAGES = [('1f1b', 4, 4, 1, 'mlp', 0.0), ('1f1b', 4, 8, 1, 'mlp', 0.0),
               ('1f1b', 4, 2, 1, 'mlp', 0.0), ('1f1b', 4, 1, 1, 'mlp', 0.0),  # M < P, as Megatron-LM allows
               ('interleaved', 4, 4, 2, 'mlp', 0.0), ('interleaved', 4, 8, 2, 'mlp', 0.0),
               ('gpipe', 4, 2, 1, 'mlp', 0.0), ('gpipe', 4, 8, 1, 'mlp', 0.0),
               # P=2 x D=2: each replica gets half of the global batch
               ('1f1b', 2, 4, 1, 'mlp', 0.0), ('interleaved', 2, 2, 2, 'mlp', 0.0),
               ('gpipe', 2, 2, 1, 'mlp', 0.0)]
MEMORY_M = 8


@pytest.fixture(scope='module')
def four_processes():
    """One 4-process launch for the numerics and the memory checks."""
    return run_distributed(w.compare_and_memory, 4, FOUR_STAGES, MEMORY_M, timeout=150)


def test_four_stages_and_pipeline_x_data_equal_single_process(four_processes):
    _check([row for rows, _ in four_processes for row in rows], 4)


def test_activation_memory_1f1b_holds_p_minus_s_gpipe_holds_m(four_processes):
    for stage, (_, result) in enumerate(four_processes):
        assert result['per_microbatch'] > 0
        assert result['1f1b'] == 4 - stage, (stage, result)
        assert result['gpipe'] == MEMORY_M, (stage, result)


def test_sent_outputs_are_freed_once_received(four_processes):
    # Kept until their backward, stage s would hold P - s outputs under 1F1B and M under GPipe.
    # Freed once received, a stage holds the output it is sending and the one sent before it.
    for stage, (_, result) in enumerate(four_processes[:-1]):
        assert result['1f1b_outputs'] == min(2, 4 - stage), (stage, result)
        assert result['gpipe_outputs'] == 2, (stage, result)
    # the last stage sends nothing: its outputs are returned, one per microbatch
    assert four_processes[-1][1]['gpipe_outputs'] == MEMORY_M


# ---------------------------------------------------------------------- one process
def _engine(schedule, model=None, context=None):
    set_context(context)
    torch.manual_seed(0)
    model = model if model is not None else MODELS.build(w.MLP)
    return Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                  step_schedule=schedule)


@pytest.fixture(autouse=True)
def _reset_context():
    yield
    set_context(None)


@pytest.mark.parametrize('schedule', [PipelineSchedule(4), GPipeSchedule(2)])
def test_one_stage_pipeline_equals_no_pipeline(schedule):
    data = w.batches()
    ref = _engine(NoPipelineSchedule())
    got = _engine(schedule)
    for _ in data:
        a, b = ref.step(iter(data)), got.step(iter(data))
        torch.testing.assert_close(a[2], b[2], atol=TOL, rtol=0)
        torch.testing.assert_close(a[0], b[0], atol=TOL, rtol=0)
        assert torch.equal(a[1], b[1])
    for (n, p), (_, q) in zip(ref.model.named_parameters(), got.model.named_parameters()):
        torch.testing.assert_close(p, q, atol=TOL, rtol=0, msg=n)


def test_one_stage_two_chunks_interleaved_hands_over_locally():
    data = w.batches()
    ref = _engine(NoPipelineSchedule())
    torch.manual_seed(0)
    chunks = build_pipeline_model(dict(w.MLP, partition='uniform'), ParallelContext(), num_model_chunks=2)
    got = _engine(InterleavedPipelineSchedule(2, num_model_chunks=2), model=chunks)
    for _ in data:
        torch.testing.assert_close(ref.step(iter(data))[2], got.step(iter(data))[2], atol=TOL, rtol=0)
    want = dict(ref.model.named_parameters())
    for n, p in got.model.named_parameters():
        torch.testing.assert_close(p, want[n.split('.', 1)[1]], atol=TOL, rtol=0, msg=n)


def _two_stage_context():
    return ParallelContext(pipeline=2, rank=0, world_size=2)  # no process group: nothing can be sent


def test_fewer_microbatches_than_stages_are_accepted_by_1f1b_and_gpipe():
    """Their warm-up is min(P - s - 1, M) forwards (the numerics run above with P=2, M=1 and P=4,
    M=1 or 2); interleaving still needs a multiple of the stages."""
    for schedule in (PipelineSchedule(1), PipelineSchedule(3), GPipeSchedule(1)):
        schedule.check_sizes(4)
        schedule.plan(4)  # built, prefetched and validated
    with pytest.raises(ValueError, match='multiple of the pipeline size 4; got 2. Use 4.'):
        InterleavedPipelineSchedule(2).check_sizes(4)


def test_interleaved_needs_a_multiple_of_the_stages():
    context = ParallelContext(pipeline=2, rank=0, world_size=4)
    model = build_pipeline_model(dict(w.MLP), context, num_model_chunks=2)
    engine = _engine(InterleavedPipelineSchedule(3, num_model_chunks=2), model=model, context=context)
    with pytest.raises(ValueError, match='multiple of the pipeline size 2; got 3. Use 2 or 4'):
        engine.step(iter(w.batches()))


def test_interleaved_needs_a_module_list_of_chunks():
    engine = _engine(InterleavedPipelineSchedule(2, num_model_chunks=2), context=_two_stage_context())
    with pytest.raises(ValueError, match=r'nn.ModuleList of 2 chunks, got MLP.*num_model_chunks=2'):
        engine.step(iter(w.batches()))


def test_batch_not_divisible_by_microbatches_fails_before_communication():
    engine = _engine(PipelineSchedule(3), context=_two_stage_context())
    with pytest.raises(ValueError, match='batch of size 16 into 3 equal microbatches'):
        engine.step(iter(w.batches()))


def test_pipeline_size_must_divide_world_size():
    with pytest.raises(ValueError, match='world size 4 is not divisible by the pipeline size'):
        ParallelContext(pipeline=3, rank=0, world_size=4)


def test_schedules_are_registered_and_built_from_config():
    schedule = SCHEDULES.build(dict(type='InterleavedPipelineSchedule', num_microbatches=4,
                                    num_model_chunks=2))
    assert isinstance(schedule, InterleavedPipelineSchedule) and schedule.num_model_chunks == 2
    assert repr(SCHEDULES.build(dict(type='GPipeSchedule', num_microbatches=3))) == \
        'GPipeSchedule(num_microbatches=3)'
    assert isinstance(SCHEDULES.build(dict(type='PipelineSchedule', num_microbatches=2)), PipelineSchedule)
    with pytest.raises(ValueError, match='num_microbatches must be an int >= 1, got 0'):
        PipelineSchedule(0)
    with pytest.raises(ValueError, match="'float33' is not a torch dtype name"):
        PipelineSchedule(2, tensor_shape=(2, 8), tensor_dtype='float33')


def test_stage_outputs_must_be_tensors_or_tuples_of_tensors():
    from colossal_runner.distributed.p2p import flatten, meta_of
    assert meta_of((torch.zeros(2, 3), torch.ones(2, dtype=torch.int64))) == \
        (True, ((torch.float32, (2, 3)), (torch.int64, (2,))))
    with pytest.raises(TypeError, match='must be a tensor or a tuple of tensors.*got a dict'):
        flatten({'x': torch.zeros(1)})
    with pytest.raises(TypeError, match='got a tuple containing NoneType, Tensor'):
        flatten((torch.zeros(1), None))
