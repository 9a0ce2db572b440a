"""Engine: a step equals the hand-written loop; accumulation, clipping, AMP, state, bad input."""
import gc
import io
import warnings
import weakref

import pytest
import torch
from torch import nn

from colossal_runner.engine import BaseSchedule, Engine, NoPipelineSchedule
from colossal_runner.nn.lr_scheduler import CosineAnnealingLR, StepLR


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def make_batches(n, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=g), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def test_concept_document_usage_is_bit_identical_to_a_hand_written_loop():
    batches = make_batches(6, 4)
    ref = make_model()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, 1000)
    ref_losses = []
    for x, y in batches:
        ref_opt.zero_grad()
        loss = nn.functional.cross_entropy(ref(x), y)
        loss.backward()
        ref_opt.step()
        ref_sched.step()
        ref_losses.append(loss.detach())

    model = make_model()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = Engine(model=model, criterion=criterion, optimizer=optimizer,
                    lr_scheduler=CosineAnnealingLR(optimizer, 1000), step_schedule=NoPipelineSchedule())
    engine.train()
    data_iter = iter(batches)
    losses = [engine.step(data_iter)[2] for _ in batches]
    for a, b in zip(params_of(model), params_of(ref)):
        assert torch.equal(a, b)
    assert [float(v) for v in losses] == [float(v) for v in ref_losses]
    assert engine.get_lr() == ref_opt.param_groups[0]['lr']
    assert all(p.grad is None for p in model.parameters())  # zeroed after the step


def test_accumulation_of_four_batches_of_8_equals_one_batch_of_32():
    (x, y), = make_batches(1, 32)
    big = make_model()
    big_opt = torch.optim.SGD(big.parameters(), lr=0.5)
    Engine(big, nn.CrossEntropyLoss(), big_opt).step(iter([(x, y)]))

    small = make_model()
    opt = torch.optim.SGD(small.parameters(), lr=0.5)
    sched = StepLR(opt, 10, step_size=1, gamma=0.5)
    engine = Engine(small, nn.CrossEntropyLoss(), opt, lr_scheduler=sched, gradient_accumulation=4)
    parts = list(zip(x.split(8), y.split(8)))
    output, label, loss = engine.step(iter(parts))
    for a, b in zip(params_of(small), params_of(big)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert output.shape == (32, 3) and torch.equal(label, y)
    assert not output.requires_grad and loss.dim() == 0
    torch.testing.assert_close(loss, nn.functional.cross_entropy(make_model()(x), y).detach())
    assert sched.last_epoch == 1 and engine.get_lr() == pytest.approx(0.25)
    engine.step(iter(parts))  # four more batches: one more LR step
    assert sched.last_epoch == 2 and engine.get_lr() == pytest.approx(0.125)


def test_clipping_bounds_the_global_norm_and_keeps_the_direction():
    (x, y), = make_batches(1, 16)
    probe = make_model()
    nn.functional.cross_entropy(probe(x) * 50, y).backward()
    raw = torch.cat([p.grad.flatten() for p in probe.parameters()])
    assert raw.norm() > 0.5  # the bound below is active

    model = make_model()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    engine = Engine(model, lambda out, lab: nn.functional.cross_entropy(out * 50, lab),
                    torch.optim.SGD(model.parameters(), lr=1.0), clip_grad_norm=0.5)
    engine.step(iter([(x, y)]))
    delta = before - torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(delta.norm(), torch.tensor(0.5), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(delta, raw * 0.5 / raw.norm(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(engine.grad_norm, raw.norm(), rtol=1e-5, atol=1e-6)


def test_fp16_step_with_inf_gradients_is_skipped_and_the_scaler_backs_off():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    poison = {'on': True}

    def criterion(out, lab):  # a finite loss whose scaled gradients overflow float16
        loss = nn.functional.cross_entropy(out.float(), lab)
        return loss * 1e30 if poison['on'] else loss

    sched = StepLR(optimizer, 10, step_size=1, gamma=0.5)
    with pytest.warns(UserWarning, match=r"amp='fp16' on the CPU.*several times slower.*amp='bf16'"):
        engine = Engine(model, criterion, optimizer, lr_scheduler=sched, amp='fp16', clip_grad_norm=1.0)
    assert isinstance(engine.scaler, torch.amp.GradScaler) and engine.scaler.is_enabled()
    before = params_of(model)
    scale = engine.scaler.get_scale()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no "lr_scheduler.step() before optimizer.step()" warning
        _, _, loss = engine.step(iter(make_batches(1, 4)))
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), before))
    assert engine.scaler.get_scale() == scale / 2
    # an overflow, not a NaN/Inf loss: the loss is returned and the step is not counted as one
    assert loss is not None and torch.isfinite(loss) and engine.nonfinite_skips == 0
    assert sched.last_epoch == 1  # the schedule follows the step count
    poison['on'] = False
    engine.step(iter(make_batches(1, 4)))
    assert not all(torch.equal(a, b) for a, b in zip(params_of(model), before))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocast_runs_on_cpu_and_returns_a_float32_loss():
    seen = []

    def criterion(out, lab):
        seen.append(out.dtype)
        return nn.functional.cross_entropy(out, lab)

    batches = make_batches(3, 8)
    model = make_model()
    engine = Engine(model, criterion, torch.optim.SGD(model.parameters(), lr=0.1), amp='bf16')
    assert engine.scaler is None
    output, _, loss = engine.step(iter(batches))
    assert seen == [torch.bfloat16] and output.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with engine.autocast():
        assert torch.is_autocast_enabled('cpu')
    fp32 = nn.functional.cross_entropy(make_model()(batches[0][0]), batches[0][1]).detach()
    assert abs(float(loss) - float(fp32)) < 5e-2


def test_state_dict_round_trip_resumes_identically():
    batches = make_batches(4, 4)

    def build():
        model = make_model(seed=3)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        with pytest.warns(UserWarning, match="amp='fp16' on the CPU"):  # fp16 here for its scaler state
            return Engine(model, nn.CrossEntropyLoss(), opt, lr_scheduler=CosineAnnealingLR(opt, 10),
                          amp='fp16')

    first = build()
    it = iter(batches)
    first.step(it)
    first.step(it)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = build()
    second.load_state_dict(torch.load(buffer, weights_only=True))
    assert second.lr_scheduler.last_epoch == 2 and second.get_lr() == first.get_lr()
    assert second.scaler.get_scale() == first.scaler.get_scale()
    rest = batches[2:]
    first.step(iter(rest))
    second.step(iter(rest))
    for a, b in zip(params_of(first.model), params_of(second.model)):
        assert torch.equal(a, b)
    with pytest.raises(KeyError, match=r"needs the key 'model'.*got \['optimizer'\]"):
        second.load_state_dict({'optimizer': {}})


def test_evaluate_step_is_forward_only_and_modes_switch():
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    engine.eval()
    assert not model.training and not engine.training
    before = params_of(model)
    output, label, loss = engine.evaluate_step(iter(make_batches(1, 5)))
    assert output.shape == (5, 3) and not output.requires_grad and loss.dim() == 0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), before))
    engine.train()
    assert model.training and engine.training


class SilentStage(BaseSchedule):
    """A stand-in for a pipeline stage that does not compute the loss."""

    def forward_backward_step(self, engine, data_iter, forward_only, return_loss=True):
        x, _ = self.load_batch(engine, data_iter)
        out = self.call_model(engine, x)
        if not forward_only:
            engine.backward_by_grad(out, torch.ones_like(out))
        return None, None, None


def test_non_last_pipeline_stage_returns_none_but_still_steps():
    model = make_model()
    before = params_of(model)
    engine = Engine(model, None, torch.optim.SGD(model.parameters(), lr=0.1), step_schedule=SilentStage(),
                    gradient_accumulation=2)
    assert engine.step(iter(make_batches(2, 4))) == (None, None, None)
    assert not all(torch.equal(a, b) for a, b in zip(params_of(model), before))


def test_schedule_from_config_dict():
    model = make_model()
    engine = Engine(model, nn.CrossEntropyLoss(), None, step_schedule=dict(type='NoPipelineSchedule'))
    assert isinstance(engine.schedule, NoPipelineSchedule)


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(step_schedule=object()), TypeError, r'step_schedule must be a BaseSchedule.*got object'),
    (dict(gradient_accumulation=0), ValueError, r'gradient_accumulation must be an int >= 1.*got 0'),
    (dict(gradient_accumulation=2.0), ValueError, r'gradient_accumulation must be an int >= 1.*got 2.0'),
    (dict(clip_grad_norm=-1.0), ValueError, r'clip_grad_norm must be a number >= 0.*got -1.0'),
    (dict(amp='fp8'), ValueError, r"amp must be None, 'bf16', 'fp16'; got 'fp8'"),
    (dict(lr_scheduler='cosine'), TypeError, r'lr_scheduler must have a step\(\) method.*got str'),
])
def test_bad_engine_arguments_say_what_was_received(kwargs, error, message):
    model = make_model()
    with pytest.raises(error, match=message):
        Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_bad_inputs_at_step_time():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match='lr_scheduler was built on a different optimizer'):
        Engine(model, nn.CrossEntropyLoss(), opt, lr_scheduler=StepLR(other, 10))
    with pytest.raises(TypeError, match='model must be a torch.nn.Module, got function'):
        Engine(lambda x: x, nn.CrossEntropyLoss(), opt)
    engine = Engine(model, nn.CrossEntropyLoss(), opt)
    x, y = make_batches(1, 4)[0]
    with pytest.raises(TypeError, match=r'a batch must be \(data, label\).*received a tuple of length 3'):
        engine.step(iter([(x, y, y)]))
    with pytest.raises(TypeError, match=r'data_iter must be an iterator, got list.*iter\(dataloader\)'):
        engine.step([(x, y)])
    with pytest.raises(ValueError, match=r'criterion must return a 0-dim tensor.*got \(4,\)'):
        Engine(model, nn.CrossEntropyLoss(reduction='none'), opt).step(iter([(x, y)]))
    with pytest.raises(ValueError, match=r'needs an optimizer.*optimizer=None'):
        Engine(model, nn.CrossEntropyLoss(), None).step(iter([(x, y)]))


class GeneralPath(NoPipelineSchedule):
    """The same schedule under another type, so Engine.step takes its general path."""

    calls = 0

    def forward_backward_step(self, engine, data_iter, forward_only, return_loss=True):
        GeneralPath.calls += 1
        return super().forward_backward_step(engine, data_iter, forward_only, return_loss)


class DictModel(nn.Module):
    """Takes a dict batch and returns a tuple, to exercise the structured-batch branches."""

    def __init__(self):
        super().__init__()
        self.net = make_model()

    def forward(self, x, scale):
        out = self.net(x) * scale
        return out, out.detach().sum()


@pytest.mark.parametrize('structured', [False, True])
def test_plain_step_equals_the_general_path_bit_for_bit(monkeypatch, structured):
    """Engine.step writes the common case out in one method (_plain_step); it must do exactly
    what the general path (schedule + engine helpers) does: same outputs, losses, weights, LR."""
    fast_calls = []  # calls of the default schedule's method by an engine holding the default schedule
    original = NoPipelineSchedule.forward_backward_step
    monkeypatch.setattr(NoPipelineSchedule, 'forward_backward_step', lambda self, *a, **k: (
        type(self) is NoPipelineSchedule and fast_calls.append(1)) or original(self, *a, **k))
    batches = make_batches(5, 4)
    if structured:
        batches = [({'x': x, 'scale': torch.tensor(0.5)}, y) for x, y in batches]

    def criterion(output, label):
        return nn.functional.cross_entropy(output[0] if structured else output, label)

    runs = []
    for schedule in (NoPipelineSchedule(), GeneralPath()):
        model = DictModel() if structured else make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        engine = Engine(model, criterion, opt, lr_scheduler=StepLR(opt, 2, gamma=0.5), step_schedule=schedule)
        engine.train()
        it = iter(batches)
        steps = [engine.step(it) for _ in batches]
        runs.append((steps, params_of(model), engine.get_lr()))
    (fast, fast_params, fast_lr), (general, general_params, general_lr) = runs
    assert not fast_calls and GeneralPath.calls >= len(batches)  # each engine took the path meant
    for (out_a, label_a, loss_a), (out_b, label_b, loss_b) in zip(fast, general):
        for a, b in zip(out_a if structured else [out_a], out_b if structured else [out_b]):
            assert torch.equal(a, b) and not a.requires_grad
        assert label_a is not None and (label_a == label_b).all()
        assert torch.equal(loss_a, loss_b) and loss_a.dim() == 0 and not loss_a.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(fast_params, general_params))
    assert fast_lr == general_lr < 0.1  # the scheduler stepped once per step on both


def test_plain_step_is_used_only_where_it_does_the_same(monkeypatch):
    """Anything the plain step does not do (accumulation, clipping, AMP, no criterion) takes the
    general path."""
    calls = []
    original = NoPipelineSchedule.forward_backward_step
    monkeypatch.setattr(NoPipelineSchedule, 'forward_backward_step',
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    x, y = make_batches(1, 4)[0]
    for kwargs in (dict(gradient_accumulation=2), dict(clip_grad_norm=1.0), dict(amp='bf16')):
        model = make_model()
        engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)
        before = len(calls)
        engine.step(iter([(x, y)] * 2))
        assert len(calls) > before, kwargs
    engine = Engine(model, None, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match='the engine has no criterion'):
        engine.step(iter([(x, y)]))


@pytest.mark.parametrize('accumulation', [1, 2])
def test_next_forward_reuses_the_gradient_accumulators(accumulation):
    """The step's graph stays referenced until the next step, as `loss` does in a hand-written
    loop, so the next forward finds each parameter's gradient accumulator instead of making a
    new one: a hook put on the first step's accumulator runs again in the second step (in each
    of its micro-steps; accumulation takes the general path, the plain step the other)."""
    model = make_model()
    engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                    gradient_accumulation=accumulation)
    engine.train()
    it = iter(make_batches(2 * accumulation, 4))
    engine.step(it)
    ran = []
    node = torch.autograd.graph.get_gradient_edge(model[0].weight).node
    node.register_hook(lambda *grads: ran.append(1))
    del node  # only the engine's reference to the graph keeps the accumulator now
    engine.step(it)
    assert ran == [1] * accumulation


def test_plain_step_keeps_neither_the_batch_nor_the_activations_alive():
    """What stays of a step's graph until the next step is its nodes: backward has freed what they
    saved, so the batch and the activations go as soon as the caller drops them."""
    model = make_model()
    activations = []
    model[1].register_forward_hook(lambda module, inputs, output: activations.append(weakref.ref(output)))
    engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    engine.train()
    x, y = make_batches(1, 4)[0]
    batch = weakref.ref(x)
    output, label, loss = engine.step(iter([(x, y)]))
    assert output.shape == (4, 3) and not loss.requires_grad
    del x, y, output, label, loss
    gc.collect()
    assert batch() is None and activations[0]() is None


def _saved(engine):
    buffer = io.BytesIO()
    torch.save(engine.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _older(state):
    """``state`` as a checkpoint from before the optimizer's and the scheduler's types were saved."""
    return {k: v for k, v in state.items()
            if k not in ('optimizer_type', 'lr_scheduler_type', 'lr_scheduler_by_epoch')}


def test_a_resumed_schedule_keeps_the_configs_length_and_continues_on_it(project_log):
    """'Train longer': a checkpoint of a 4-step cosine run loaded into an 8-step run continues on
    the 8-step curve at step 4 (the LR is not stuck at the old schedule's end), and says so."""
    def build(total):
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return Engine(model, nn.CrossEntropyLoss(), optimizer,
                      lr_scheduler=CosineAnnealingLR(optimizer, total, eta_min=0.001))

    short = build(4)
    for x, y in make_batches(4, 5):
        short.step(iter([(x, y)]))
    assert short.get_lr() == pytest.approx(0.001)  # the short schedule has ended
    longer, reference = build(8), build(8)
    longer.load_state_dict(_saved(short))
    for x, y in make_batches(4, 5):
        reference.step(iter([(x, y)]))
    assert longer.lr_scheduler.total_steps == 8 and longer.lr_scheduler.last_epoch == 4
    assert longer.get_lr() == pytest.approx(reference.get_lr()) and longer.get_lr() > 0.05
    for x, y in make_batches(2, 5, seed=3):  # and it follows the 8-step curve from there
        longer.step(iter([(x, y)]))
        reference.step(iter([(x, y)]))
        assert longer.get_lr() == pytest.approx(reference.get_lr())
    assert 'total_steps=8 (the checkpoint: 4)' in project_log.text
    assert 'continues at step 4' in project_log.text


def test_an_unchanged_schedule_loads_exactly_and_quietly(project_log):
    def build():
        model = make_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return Engine(model, nn.CrossEntropyLoss(), optimizer,
                      lr_scheduler=StepLR(optimizer, 10, step_size=2))

    first, second = build(), build()
    for x, y in make_batches(3, 5):
        first.step(iter([(x, y)]))
    second.load_state_dict(_saved(first))
    assert second.lr_scheduler.state_dict() == first.lr_scheduler.state_dict()
    assert second.optimizer.param_groups[0]['lr'] == first.optimizer.param_groups[0]['lr']
    assert project_log.text == ''


def test_an_optimizer_state_of_another_kind_is_refused_and_nothing_is_loaded(project_log):
    """A checkpoint without the optimizer's type: told apart by the settings it lacks."""
    model = make_model()
    adam = Engine(model, nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=0.01))
    adam.step(iter(make_batches(1, 5)))
    sgd_model = make_model()
    sgd = Engine(sgd_model, nn.CrossEntropyLoss(),
                 torch.optim.SGD(sgd_model.parameters(), lr=0.1, momentum=0.9))
    before = sgd.optimizer.state_dict()
    with pytest.raises(ValueError, match=r"does not fit this run's SGD: it has no "
                                         r"\['dampening', 'momentum'\].*another kind of optimizer"
                                         r".*finetune=True"):
        sgd.load_state_dict(_older(_saved(adam)))
    assert sgd.optimizer.state_dict() == before
    sgd.step(iter(make_batches(1, 5)))  # still usable


def test_optimizer_settings_that_differ_from_the_checkpoint_are_named(project_log):
    def build(lr):
        model = make_model()
        return Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))

    first, second = build(0.1), build(0.05)
    first.step(iter(make_batches(1, 5)))
    second.load_state_dict(_saved(first))
    assert second.get_lr() == 0.1  # the checkpoint's settings are the ones training continues with
    assert 'lr=0.1 (config: 0.05)' in project_log.text and 'finetune=True' in project_log.text


def test_composite_and_one_cycle_schedulers_resume(project_log):
    """SequentialLR's saved sub-scheduler states are progress, not settings (treated as settings
    they replaced the schedulers by dicts: the next step failed); OneCycleLR recomputes its LR on
    a longer schedule, and the momentum it cycles is not reported as a changed setting."""
    from colossal_runner.nn.lr_scheduler import OneCycleLR

    def sequential():
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.SequentialLR(
            opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.5, total_iters=2),
                  torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)], milestones=[2])
        return Engine(model, nn.CrossEntropyLoss(), opt, lr_scheduler=sched)

    first, second = sequential(), sequential()
    for x, y in make_batches(3, 5):
        first.step(iter([(x, y)]))
    second.load_state_dict(_saved(first))
    for x, y in make_batches(2, 5, seed=4):
        first.step(iter([(x, y)]))
        second.step(iter([(x, y)]))
        assert second.get_lr() == first.get_lr()
    assert project_log.text == ''

    def one_cycle(total):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return Engine(model, nn.CrossEntropyLoss(), opt, lr_scheduler=OneCycleLR(opt, total))

    short, longer, reference = one_cycle(10), one_cycle(20), one_cycle(20)
    for x, y in make_batches(4, 5):
        short.step(iter([(x, y)]))
        reference.step(iter([(x, y)]))
    longer.load_state_dict(_saved(short))
    assert longer.get_lr() == pytest.approx(reference.get_lr())
    assert 'total_steps=20 (the checkpoint: 10)' in project_log.text
    assert 'optimizer:' not in project_log.text  # the cycled momentum is not a changed setting


def test_an_sgd_state_into_adam_is_refused_and_adam_is_left_as_it_was(project_log):
    """torch's Adam.__setstate__ stops half-way on SGD's state (KeyError: 'step'), after SGD's
    settings and momentum buffers are in place; the engine puts Adam's own state back (a checkpoint
    without the optimizer's type, which is otherwise refused before anything is loaded)."""
    sgd_model = make_model()
    sgd = Engine(sgd_model, nn.CrossEntropyLoss(),
                 torch.optim.SGD(sgd_model.parameters(), lr=0.1, momentum=0.9))
    sgd.step(iter(make_batches(1, 5)))
    model = make_model()
    adam = Engine(model, nn.CrossEntropyLoss(), torch.optim.AdamW(model.parameters(), lr=0.01))
    before = adam.optimizer.state_dict()
    with pytest.raises(ValueError, match=r"does not fit this run's AdamW: it has no \['betas', 'eps'\]"
                                         r".*another kind of optimizer") as info:
        adam.load_state_dict(_older(_saved(sgd)))
    assert isinstance(info.value.__cause__, KeyError)
    assert adam.optimizer.state_dict() == before  # no momentum buffers, AdamW's settings
    reference_model = make_model()
    reference_model.load_state_dict(sgd_model.state_dict())  # the weights were loaded before the optimizer
    reference = Engine(reference_model, nn.CrossEntropyLoss(),
                       torch.optim.AdamW(reference_model.parameters(), lr=0.01))
    for engine in (adam, reference):  # still usable: a fresh AdamW's step
        engine.step(iter(make_batches(1, 5)))
    for a, b in zip(params_of(reference_model), params_of(model)):
        assert torch.equal(a, b)


def test_a_failed_load_of_the_same_kind_is_re_raised_as_is():
    """A state that fails for another reason than its kind keeps torch's own error."""
    model = make_model()
    engine = Engine(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    saved = _saved(engine)
    saved['optimizer']['param_groups'][0]['params'] = [0]  # one parameter where there are four
    before = engine.optimizer.state_dict()
    with pytest.raises(ValueError, match="doesn't match the size") as info:
        engine.load_state_dict(saved)
    assert 'another kind' not in str(info.value)
    assert engine.optimizer.state_dict() == before


def test_a_scheduler_whose_step_needs_a_metric_is_refused_when_built():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau\.step\(\) needs the argument\(s\) metrics.*"
                                         r"once per optimizer step, without arguments.*lr_scheduler=None"
                                         r".*after_test_epoch"):
        Engine(model, nn.CrossEntropyLoss(), opt, lr_scheduler=plateau)

    class Optional_(StepLR):  # a step() with only optional arguments is fine
        def step(self, epoch=None, *args, **kwargs):
            super().step()

    Engine(model, nn.CrossEntropyLoss(), opt, lr_scheduler=Optional_(opt, 10))


def test_evaluate_step_without_a_criterion_says_what_to_use_instead():
    model = make_model()
    engine = Engine(model, None, None)
    with pytest.raises(ValueError, match=r'no criterion.*evaluate_step.*pass criterion=\.\.\. to Engine.*'
                                         r'Trainer\.predict\(data\)') as info:
        engine.evaluate_step(iter(make_batches(1, 4)))
    assert 'or call with return_loss=False' not in str(info.value)  # evaluate_step takes no such argument


@pytest.mark.parametrize('steps', [1, 3])
def test_step_lr_is_saved_and_restored(steps):
    """The LearningRate metric reads engine.step_lr: a run resumed at the end of an epoch reports
    the rate of the last step before it, not NaN."""
    def build():
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Engine(model, nn.CrossEntropyLoss(), opt, lr_scheduler=StepLR(opt, 10, gamma=0.5))

    first = build()
    for x, y in make_batches(steps, 5):
        first.step(iter([(x, y)]))
    assert first.step_lr is not None
    resumed = build()
    resumed.load_state_dict(_saved(first))
    assert resumed.step_lr == first.step_lr
    older = {key: value for key, value in _saved(first).items() if key != 'step_lr'}  # an older checkpoint
    untouched = build()
    untouched.load_state_dict(older)
    assert untouched.step_lr is None and untouched.get_lr() == first.get_lr()


@pytest.mark.parametrize('saved, mine', [('AdamW', 'Adamax'), ('Adam', 'RAdam'), ('Adam', 'AdamW'),
                                         ('AdamW', 'Adam'), ('SGD', 'Adam')])
def test_an_optimizer_of_another_class_is_refused_before_anything_is_loaded(saved, mine):
    """Within the Adam family torch loads the state of one into the other; then the first step
    fails (Adamax's KeyError 'exp_inf') or trains on with the other's update rule (Adam's
    decoupled_weight_decay=False under AdamW). The saved class name tells them apart."""
    model = make_model()
    first = Engine(model, nn.CrossEntropyLoss(), getattr(torch.optim, saved)(model.parameters(), lr=0.01))
    first.step(iter(make_batches(1, 5)))
    other = make_model(seed=1)
    second = Engine(other, nn.CrossEntropyLoss(), getattr(torch.optim, mine)(other.parameters(), lr=0.01))
    weights, before = params_of(other), second.optimizer.state_dict()
    with pytest.raises(ValueError, match=rf"the checkpoint's optimizer is {saved}, this run builds {mine}.*"
                                         rf"optimizer\.type='{saved}'.*finetune=True"):
        second.load_state_dict(_saved(first))
    assert second.optimizer.state_dict() == before
    assert all(torch.equal(a, b) for a, b in zip(weights, params_of(other)))


def test_subclasses_of_an_optimizer_or_scheduler_resume_its_checkpoint_exactly():
    """A user's subclass adding, say, logging follows the same class: its checkpoint resumes both
    ways, where a comparison of the exact class names refused the optimizer and restarted the
    schedule."""

    class MySGD(torch.optim.SGD):
        pass

    class MyStepLR(StepLR):
        pass

    def build(optimizer_cls, scheduler_cls):
        model = make_model()
        optimizer = optimizer_cls(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = scheduler_cls(optimizer, 10, step_size=2, gamma=0.5)
        return Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler)

    plain, subclassed = (torch.optim.SGD, StepLR), (MySGD, MyStepLR)
    for saved, mine in ((plain, subclassed), (subclassed, plain)):
        straight = build(*saved)
        straight.train()
        batches = make_batches(6, 5)
        for batch in batches[:3]:
            straight.step(iter([batch]))
        state = _saved(straight)
        resumed = build(*mine)
        resumed.train()
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # neither a restart of the schedule nor a settings warning
            resumed.load_state_dict(state)
        for batch in batches[3:]:
            straight.step(iter([batch]))
            resumed.step(iter([batch]))
        assert resumed.get_lr() == straight.get_lr()
        assert all(torch.equal(a, b) for a, b in zip(params_of(straight.model), params_of(resumed.model)))


def test_an_optimizer_whose_step_needs_a_closure_is_refused_when_built():
    model = make_model()
    with pytest.raises(ValueError, match=r"optimizer LBFGS\.step\(\) needs the argument\(s\) closure.*"
                                         r"once per step, without arguments.*optimizer\.type"):
        Engine(model, nn.CrossEntropyLoss(), torch.optim.LBFGS(model.parameters()))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    StepLR(sgd, 10)  # a scheduler wraps the instance's step in a (*args, **kwargs) function: still fine
    Engine(model, nn.CrossEntropyLoss(), sgd)


def _engine(scheduler=None, lr=0.1, **kwargs):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return Engine(model, nn.CrossEntropyLoss(), optimizer,
                  lr_scheduler=scheduler(optimizer, 10, **kwargs) if scheduler else None)


def _trained(engine, steps=3):
    for x, y in make_batches(steps, 5):
        engine.step(iter([(x, y)]))
    return _saved(engine)


def test_a_scheduler_removed_before_a_resume_keeps_the_checkpoints_rate_and_says_so(project_log):
    saved = _trained(_engine(CosineAnnealingLR))
    resumed = _engine()
    resumed.load_state_dict(saved)
    lr = saved['optimizer']['param_groups'][0]['lr']
    assert resumed.get_lr() == lr < 0.1
    assert (f"had a CosineAnnealingLR stepped per optimizer step, this run has none: it trains on at the "
            f"checkpoint's learning rate, {lr:.6g}, the old schedule's last value") in project_log.text
    assert 'put the lr_scheduler back in the config' in project_log.text


@pytest.mark.parametrize('older', [False, True])
def test_a_scheduler_added_before_a_resume_starts_from_its_first_step_and_says_so(project_log, older):
    """The optimizer's load used to put back the checkpoint's rate over the one the new schedule set
    (and OneCycleLR lost its max_lr: KeyError at the first step)."""
    from colossal_runner.nn.lr_scheduler import CosineAnnealingWarmupLR, OneCycleLR

    for make, kwargs in ((CosineAnnealingWarmupLR, dict(warmup_steps=3)), (OneCycleLR, {})):
        saved = _trained(_engine(lr=0.07))
        saved = _older(saved) if older else saved
        resumed, fresh = _engine(make, **kwargs), _engine(make, **kwargs)
        project_log.lines.clear()
        resumed.load_state_dict(saved)
        assert resumed.optimizer.param_groups[0]['momentum'] == fresh.optimizer.param_groups[0]['momentum']
        for x, y in make_batches(4, 5, seed=5):  # the new schedule from its first step
            assert resumed.get_lr() == fresh.get_lr() != 0.07
            resumed.step(iter([(x, y)]))
            fresh.step(iter([(x, y)]))
        had = 'no lr_scheduler stepped per optimizer step (it had none' if older else 'no lr_scheduler'
        assert (f"the checkpoint's run had {had}" in project_log.text
                and f'this run has a {make.__name__} stepped per optimizer step, with no state in it, so '
                    f'its schedule starts from its first step now, mid-run' in project_log.text)


def test_a_scheduler_of_another_class_starts_from_its_first_step_and_says_so(project_log):
    """torch would copy CosineAnnealingLR's attributes into StepLR, which then follows neither."""
    saved = _trained(_engine(CosineAnnealingLR), steps=4)
    resumed, fresh = _engine(StepLR, step_size=2, gamma=0.5), _engine(StepLR, step_size=2, gamma=0.5)
    resumed.load_state_dict(saved)
    assert not hasattr(resumed.lr_scheduler, 'T_max') and resumed.lr_scheduler.last_epoch == 0
    for x, y in make_batches(3, 5, seed=5):
        assert resumed.get_lr() == fresh.get_lr()
        resumed.step(iter([(x, y)]))
        fresh.step(iter([(x, y)]))
    assert ("had a CosineAnnealingLR stepped per optimizer step; this run has a StepLR stepped per "
            "optimizer step, with no state in it") in project_log.text


def _with_epoch_hook(engine, by_epoch=True):
    """What LRSchedulerHook does to an engine when a Trainer attaches it."""
    from types import SimpleNamespace

    from colossal_runner.trainer.hooks import LRSchedulerHook
    hook = LRSchedulerHook(by_epoch=by_epoch, store_lr_in_state=False)
    hook.after_hook_is_attached(SimpleNamespace(engine=engine))
    return hook


def test_switching_to_and_from_a_per_epoch_scheduler_restarts_it_and_says_so(project_log):
    # per step -> per epoch: the engine's state is a per-step schedule's, the epoch one starts afresh
    saved = _trained(_engine(StepLR, step_size=2, gamma=0.5))
    resumed = _engine(StepLR, step_size=2, gamma=0.5)
    hook = _with_epoch_hook(resumed)
    resumed.load_state_dict(saved)
    assert hook.lr_scheduler.last_epoch == 0 and resumed.get_lr() == 0.1
    assert ('had a StepLR stepped per optimizer step; this run has a StepLR stepped per epoch '
            '(LRSchedulerHook(by_epoch=True)), with no state in it') in project_log.text
    # per epoch -> per step
    first = _engine(StepLR, step_size=1, gamma=0.5)
    first_hook = _with_epoch_hook(first)
    _trained(first)
    first_hook.lr_scheduler.step()  # one epoch
    saved, hook_state = _saved(first), first_hook.state_dict()
    assert saved['lr_scheduler'] is None and saved['lr_scheduler_by_epoch'] and first.get_lr() == 0.05
    project_log.lines.clear()
    per_step = _engine(StepLR, step_size=1, gamma=0.5)
    per_step_hook = _with_epoch_hook(per_step, by_epoch=False)
    per_step.load_state_dict(saved)
    per_step_hook.load_state_dict(hook_state)
    assert per_step.lr_scheduler.last_epoch == 0 and per_step.get_lr() == 0.1
    assert ('had a StepLR stepped per epoch (LRSchedulerHook(by_epoch=True)); this run has a StepLR stepped '
            'per optimizer step') in project_log.text
    # per epoch -> per epoch, the same class: loaded by the hook, quietly
    project_log.lines.clear()
    again = _engine(StepLR, step_size=1, gamma=0.5)
    again_hook = _with_epoch_hook(again)
    again.load_state_dict(saved)
    again_hook.load_state_dict(hook_state)
    assert again_hook.lr_scheduler.last_epoch == 1 and again.get_lr() == 0.05 and project_log.text == ''
    # per epoch, another class: not loaded (the engine warned)
    other = _engine(CosineAnnealingLR)
    other_hook = _with_epoch_hook(other)
    other.load_state_dict(saved)
    other_hook.load_state_dict(hook_state)
    assert other_hook.lr_scheduler.last_epoch == 0 and other.get_lr() == 0.1
    assert 'had a StepLR stepped per epoch' in project_log.text


def test_an_evaluation_engine_loads_a_scheduled_checkpoint_quietly(project_log):
    saved = _trained(_engine(CosineAnnealingLR))
    evaluation = Engine(make_model(seed=2), nn.CrossEntropyLoss(), None)
    evaluation.load_state_dict(saved)
    assert project_log.text == ''
