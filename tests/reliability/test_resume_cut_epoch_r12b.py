"""Going on from an epoch that max_steps stopped in its middle: a second fit of the same Trainer with a
larger max_steps, or a resume from a checkpoint written in or after that epoch's end (the epoch
checkpoint, save_last's), trains the rest of the epoch as the uninterrupted longer run did: at the
epoch's learning rate (a per-epoch scheduler is not stepped at the end max_steps brought early), with
the RNG the steps left (no test pass happened there in the longer run), and with the metrics.jsonl
records of the longer run (the early end's records are replaced by the epoch's real end)."""
import shutil

import pytest
import torch
from torch import nn

from colossal_runner.engine import Engine
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import (BaseHook, LogMetricByEpochHook, LogMetricByStepHook, LossHook,
                                           LRSchedulerHook, SaveCheckpointHook)

from ..trainer._toy import make_loader

pytestmark = pytest.mark.usefixtures('no_fsync')


class Rates(BaseHook):
    """The learning rate every step used, and whether each epoch end saw its epoch cut short."""

    def __init__(self):
        super().__init__('LOWEST')
        self.rates, self.ends = [], []

    def after_train_iter(self, runner, output, label, loss):
        self.rates.append((runner.states['iteration'], runner.engine.step_lr))

    def after_train_epoch(self, runner):
        self.ends.append((runner.states['epoch'], runner.states['iteration'], runner.epoch_cut_short))


def build(work_dir):
    """10 steps an epoch, dropout (the global RNG), an LR halved at each epoch's end, and a test loader
    whose iterator draws from the global RNG too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    rates = Rates()
    trainer = Trainer(Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler), hooks=[
        LossHook(), LRSchedulerHook(by_epoch=True), LogMetricByEpochHook(), LogMetricByStepHook(interval=1),
        SaveCheckpointHook(interval=1, checkpoint_dir=str(work_dir / 'epoch')),
        SaveCheckpointHook(interval=100, by_epoch=False, checkpoint_dir=str(work_dir / 'iter')), rates],
        work_dir=str(work_dir))
    # one pair of loaders for the fits of a Trainer: a fit goes on with the state their generator is in
    trainer.loaders = (make_loader(40, shuffle=True, generator=torch.Generator().manual_seed(3)),
                       make_loader(8, seed=1, shuffle=True))
    return trainer, rates


def fit(trainer, max_steps):
    train, test = trainer.loaders
    return trainer.fit(train, epochs=3, max_steps=max_steps, test_dataloader=test)


def text(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


@pytest.fixture
def reference(tmp_path):
    """One fit to iteration 25 (the middle of epoch 3): the run the others must equal."""
    trainer, rates = build(tmp_path / 'ref')
    torch.manual_seed(5)
    fit(trainer, 25)
    assert rates.ends == [(1, 10, False), (2, 20, False), (3, 25, True)]
    return trainer.engine.model.state_dict(), rates.rates, text(tmp_path / 'ref' / 'metrics.jsonl')


def check_same(trainer, rates, work_dir, reference):
    weights, reference_rates, records = reference
    assert rates.rates[-len(reference_rates):] == reference_rates[-len(rates.rates):]
    assert [lr for it, lr in reference_rates if it in (7, 8, 10, 11)] == [0.1, 0.1, 0.1, 0.05]
    for name, tensor in trainer.engine.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    # the early end's records (its test pass, the epoch's train values at iteration 7) are gone
    assert text(work_dir / 'metrics.jsonl') == records


def test_a_second_fit_with_a_larger_max_steps_equals_the_uninterrupted_run(tmp_path, reference):
    trainer, rates = build(tmp_path / 'run')
    torch.manual_seed(5)
    assert fit(trainer, 7) is True
    assert rates.ends == [(1, 7, True)] and trainer.engine.get_lr() == 0.1  # no epoch step for it
    early = text(tmp_path / 'run' / 'metrics.jsonl')
    assert '"mode": "test", "by": "epoch", "epoch": 1, "iteration": 7' in early
    assert fit(trainer, 7) is False  # the same max_steps: nothing to train, the early end stays
    assert text(tmp_path / 'run' / 'metrics.jsonl') == early
    assert fit(trainer, 25) is True
    assert rates.ends == [(1, 7, True), (1, 10, False), (2, 20, False), (3, 25, True)]
    check_same(trainer, rates, tmp_path / 'run', reference)


@pytest.mark.parametrize('checkpoint', ['epoch/epoch_1.pt', 'iter/iter_7.pt'])
def test_a_resume_from_the_early_ends_checkpoint_with_a_larger_max_steps_equals_the_uninterrupted_run(
        tmp_path, reference, checkpoint):
    """epoch_1.pt is written in the end max_steps brought early, iter_7.pt by save_last after it."""
    trainer, _ = build(tmp_path / 'first')
    torch.manual_seed(5)
    fit(trainer, 7)
    shutil.copytree(tmp_path / 'first', tmp_path / 'run')
    saved = torch.load(str(tmp_path / 'run' / checkpoint), weights_only=True)
    assert saved['data']['end_begun'] is True and saved['data']['finished'] is False
    trainer, rates = build(tmp_path / 'run')
    trainer.resume(str(tmp_path / 'run' / checkpoint))
    assert fit(trainer, 25) is True
    assert rates.ends == [(1, 10, False), (2, 20, False), (3, 25, True)]
    check_same(trainer, rates, tmp_path / 'run', reference)
