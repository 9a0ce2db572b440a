"""Every LR scheduler against its closed-form formula, written out independently here."""
import io
import math

import pytest
import torch

from colossal_runner.nn import lr_scheduler as L
from colossal_runner.registry import LR_SCHEDULERS

T = 20
BASES = (0.1, 0.02)  # two param groups: formulas apply per group
END = 0.001


def make_optimizer():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{'params': [a], 'lr': BASES[0]}, {'params': [b], 'lr': BASES[1]}], lr=BASES[0],
                           momentum=0.9)


def warm(b, t, w):
    return b * (t + 1) / (w + 1)


def cos_to(b, end, s, span):
    s = min(s, span)
    return end + (b - end) * (1 + math.cos(math.pi * s / span)) / 2


def poly(b, s, span):
    return (b - END) * (1 - min(s, span) / span) ** 2 + END


def milestones(b, t, gamma, steps):
    return b * gamma ** sum(t >= m for m in steps)


# name: (kwargs, formula(base_lr, t) or None where not checked, steps to run)
CASES = {
    'CosineAnnealingLR': (dict(eta_min=END), lambda b, t: cos_to(b, END, t, T), T),
    'CosineAnnealingWarmupLR': (
        dict(warmup_steps=5, eta_min=END),
        lambda b, t: warm(b, t, 5) if t < 5 else cos_to(b, END, t - 5, 15), T + 3),
    'FlatAnnealingLR': (
        dict(pct_start=0.5),
        lambda b, t: b if t < 10 else cos_to(b, 0.0, t - 10, 10), T + 3),
    'FlatAnnealingWarmupLR': (
        dict(warmup_steps=4, pct_start=0.25, eta_min=END),
        lambda b, t: warm(b, t, 4) if t < 4 else b if t < 8 else cos_to(b, END, t - 8, 12), T + 3),
    'LinearWarmupLR': (
        dict(warmup_steps=5),
        lambda b, t: warm(b, t, 5) if t < 5 else b * max(0, T - t) / 15, T + 3),
    'MultiStepLR': (
        dict(milestones=[5, 12], gamma=0.5),
        lambda b, t: milestones(b, t, 0.5, [5, 12]), T + 3),
    'MultiStepWarmupLR': (
        dict(warmup_steps=3, milestones=[8, 15], gamma=0.1),
        lambda b, t: warm(b, t, 3) if t < 3 else milestones(b, t, 0.1, [8, 15]), T + 3),
    'PolynomialLR': (dict(end_lr=END, power=2.0), lambda b, t: poly(b, t, T), T + 3),
    'PolynomialWarmupLR': (
        dict(warmup_steps=4, end_lr=END, power=2.0),
        lambda b, t: warm(b, t, 4) if t < 4 else poly(b, t - 4, 16), T + 3),
    'StepLR': (dict(step_size=3, gamma=0.5), lambda b, t: b * 0.5 ** (t // 3), T + 3),
    'ExponentialLR': (dict(gamma=0.9), lambda b, t: b * 0.9 ** t, T + 3),
    'LambdaLR': (dict(lr_lambda=lambda t: 1 / (t + 1)), lambda b, t: b / (t + 1), T + 3),
    'MultiplicativeLR': (dict(lr_lambda=lambda t: 0.8), lambda b, t: b * 0.8 ** t, T + 3),
    # one cycle: starts at max/25, peaks at max after pct_start * T - 1 steps, ends at max/25/1e4 at T - 1
    'OneCycleLR': (dict(), lambda b, t: {0: b / 25, 5: b, T - 1: b / 25 / 1e4}.get(t), T - 1),
}


def lrs_over(scheduler, optimizer, steps):
    """The LR of each group at scheduler steps 0..steps, stepping the way the Engine does."""
    seen = [list(scheduler.get_last_lr())]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        seen.append(list(scheduler.get_last_lr()))
    return seen


@pytest.mark.parametrize('name', sorted(CASES))
def test_values_match_closed_form(name):
    kwargs, formula, steps = CASES[name]
    optimizer = make_optimizer()
    scheduler = LR_SCHEDULERS.build(dict(type=name, total_steps=T, **kwargs),
                                    default_args=dict(optimizer=optimizer))
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    checked = 0
    seen = lrs_over(scheduler, optimizer, steps)
    for t, lrs in enumerate(seen):
        for base, lr in zip(BASES, lrs):
            expected = formula(base, t)
            if expected is not None:
                assert lr == pytest.approx(expected, rel=1e-9, abs=1e-12), f'{name} at step {t}'
                checked += 1
    assert [group['lr'] for group in optimizer.param_groups] == seen[-1]
    assert checked >= 6


@pytest.mark.parametrize('name', sorted(CASES))
def test_state_dict_round_trip(name):
    kwargs, _, _ = CASES[name]
    opt_a = make_optimizer()
    sched_a = getattr(L, name)(opt_a, T, **kwargs)
    lrs_over(sched_a, opt_a, 7)
    buffer = io.BytesIO()  # checkpoints are loaded with weights_only=True: the state must allow it
    torch.save({'opt': opt_a.state_dict(), 'sched': sched_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    opt_b = make_optimizer()
    sched_b = getattr(L, name)(opt_b, T, **kwargs)
    opt_b.load_state_dict(saved['opt'])
    sched_b.load_state_dict(saved['sched'])
    assert sched_b.last_epoch == 7
    assert lrs_over(sched_b, opt_b, 10) == lrs_over(sched_a, opt_a, 10)


def test_usage_from_the_concept_document():
    optimizer = make_optimizer()
    scheduler = L.CosineAnnealingLR(optimizer, 1000)
    assert scheduler.total_steps == 1000 and scheduler.T_max == 1000


@pytest.mark.parametrize('name', ['CosineAnnealingWarmupLR', 'LinearWarmupLR', 'FlatAnnealingWarmupLR',
                                  'MultiStepWarmupLR', 'PolynomialWarmupLR'])
def test_warmup_longer_than_total_is_rejected(name):
    with pytest.raises(ValueError, match=r'warmup_steps=30 is larger than total_steps=20.*Lower warmup'):
        getattr(L, name)(make_optimizer(), 20, warmup_steps=30)


def test_bad_arguments_say_what_was_received():
    with pytest.raises(ValueError, match=r'total_steps must be a positive int.*got 0'):
        L.CosineAnnealingLR(make_optimizer(), 0)
    with pytest.raises(ValueError, match=r'warmup_steps must be an int >= 0, got -1'):
        L.LinearWarmupLR(make_optimizer(), 10, warmup_steps=-1)
    with pytest.raises(ValueError, match=r'pct_start must be a number in \[0, 1\].*got 1.5'):
        L.FlatAnnealingLR(make_optimizer(), 10, pct_start=1.5)
    with pytest.raises(ValueError, match=r'milestones must be a list of increasing ints.*\[5, 2\]'):
        L.MultiStepWarmupLR(make_optimizer(), 10, milestones=[5, 2])
    with pytest.raises(TypeError, match=r'LambdaLR needs lr_lambda.*got NoneType'):
        L.LambdaLR(make_optimizer(), 10)
    with pytest.raises(ValueError, match=r'power must be a positive number, got 0'):
        L.PolynomialLR(make_optimizer(), 10, power=0)


def test_full_warmup_ends_at_base_lr_and_zero_warmup_starts_there():
    optimizer = make_optimizer()
    scheduler = L.LinearWarmupLR(optimizer, 4, warmup_steps=4)
    lrs = [lr[0] for lr in lrs_over(scheduler, optimizer, 5)]
    assert lrs[:4] == pytest.approx([0.1 * k / 5 for k in (1, 2, 3, 4)]) and lrs[4] == 0.0
    optimizer = make_optimizer()
    assert L.CosineAnnealingWarmupLR(optimizer, 10).get_last_lr() == list(BASES)


def test_a_group_below_end_lr_rises_to_it_as_documented():
    """docs/lr_scheduler.md: the polynomial schedulers end every group at one absolute end_lr."""
    for name in ('PolynomialLR', 'PolynomialWarmupLR'):
        frozen, backbone = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([{'params': [frozen], 'lr': 0.0}, {'params': [backbone], 'lr': END / 10}],
                              lr=0.1)
        sched = getattr(L, name)(opt, T, end_lr=END)
        for _ in range(T):
            opt.step()
            sched.step()
        assert sched.get_last_lr() == pytest.approx([END, END])


def _doc_block(page, needle):
    """The python block of docs/<page> that contains ``needle``."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[2] / 'docs' / page).read_text()
    blocks = [b for b in re.findall(r'```python\n(.*?)```', text, re.S) if needle in b]
    assert len(blocks) == 1, f'expected one python block with {needle!r} in docs/{page}'
    return blocks[0]


def test_the_documented_reduce_lr_on_plateau_hook_runs_and_resumes(monkeypatch):
    """The hook in docs/lr_scheduler.md steps ReduceLROnPlateau on the test loss after each test
    epoch. The test inputs are zeros and the model has no bias, so the test loss never improves:
    with patience=0 the LR halves after every test epoch but the first."""
    from torch.utils.data import DataLoader, TensorDataset

    from colossal_runner.engine import Engine
    from colossal_runner.registry import HOOKS
    from colossal_runner.trainer import Trainer

    monkeypatch.setattr(HOOKS, '_module_dict', dict(HOOKS._module_dict))  # the registration stays here
    namespace = {}
    exec(_doc_block('lr_scheduler.md', 'ReduceLROnPlateauHook'), namespace)
    torch.manual_seed(0)
    train = DataLoader(TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,))), batch_size=8)
    test = DataLoader(TensorDataset(torch.zeros(8, 6), torch.randint(0, 3, (8,))), batch_size=8)

    def build():  # the hook by its config, as a config file names it
        model = torch.nn.Linear(6, 3, bias=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return Trainer(Engine(model, torch.nn.CrossEntropyLoss(), opt),
                       hooks=[dict(type='LossHook'),
                              dict(type='ReduceLROnPlateauHook', factor=0.5, patience=0)])

    def plateau(trainer):
        return [h for h in trainer.hooks if type(h).__name__ == 'ReduceLROnPlateauHook'][0].scheduler

    trainer = build()
    trainer.fit(train, epochs=3, test_dataloader=test)
    assert trainer.engine.get_lr() == pytest.approx(0.1 * 0.5 ** 2)
    assert plateau(trainer).last_epoch == 3 and plateau(trainer).best == pytest.approx(math.log(3))
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    buffer.seek(0)
    resumed = build()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert plateau(resumed).state_dict() == plateau(trainer).state_dict()
    assert resumed.engine.get_lr() == pytest.approx(0.025)
