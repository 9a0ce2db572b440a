"""Training T iterations == training k, being stopped, resuming from the last checkpoint, training to T.

Bit-identical on the CPU for every k, at and between iteration checkpoints, mid-epoch and at an
epoch's end, with three ways of shuffling (DistributedSampler, the global RNG, a loader generator),
dropout, random augmentation in the dataset and gradient accumulation with a left-over batch.
"""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from colossal_runner.checkpoint import load_checkpoint
from colossal_runner.data import build_dataloader
from colossal_runner.engine import Engine
from colossal_runner.testing.hooks import StopAfterIteration, StopTraining
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import (AccuracyHook, BaseHook, LossHook, LRSchedulerHook,
                                            SaveCheckpointHook)

EPOCHS, STEPS_PER_EPOCH, INTERVAL = 4, 3, 2   # 7 batches of 2, 2 per step: 3 steps + 1 left over
TOTAL = EPOCHS * STEPS_PER_EPOCH


class Augmented(Dataset):
    """14 samples with noise drawn from the global torch RNG on every read (like a random crop)."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(14, 6, generator=g), torch.randint(0, 3, (14,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(6), self.y[i]


def make_loader(kind):
    dataset = Augmented()
    if kind == 'distributed_sampler':
        return build_dataloader(dict(batch_size=2), dataset, shuffle=True, seed=7)
    if kind == 'global_rng':
        return DataLoader(dataset, batch_size=2, shuffle=True)
    return DataLoader(dataset, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(5))


def run(kind, ckpt_dir, stop_at=None, resume_from=None):
    torch.manual_seed(0 if resume_from is None else 99)   # a resumed run must not rely on the seed
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    engine = Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler, gradient_accumulation=2)
    hooks = [LossHook(), SaveCheckpointHook(interval=INTERVAL, by_epoch=False, checkpoint_dir=ckpt_dir)]
    if stop_at is not None:
        hooks.append(StopAfterIteration(stop_at))
    trainer = Trainer(engine, hooks=hooks)
    loader = make_loader(kind)
    if resume_from is not None:
        trainer.resume(resume_from)
    try:
        trainer.fit(loader, epochs=EPOCHS)
    except StopTraining:
        return None
    assert trainer.states['iteration'] == TOTAL
    return [p.detach().clone() for p in model.parameters()]


pytestmark = pytest.mark.usefixtures('no_fsync')


@pytest.mark.parametrize('kind', ['distributed_sampler', 'global_rng', 'loader_generator'])
def test_resume_from_any_iteration_is_bit_identical(kind, tmp_path):
    reference = run(kind, str(tmp_path / 'ref'))
    # Resuming from each checkpoint the uninterrupted run wrote: mid-epoch (2, 4, 8, 10) and at
    # the end of epoch 2 (6, saved before the left-over batch was drawn).
    for k in range(INTERVAL, TOTAL, INTERVAL):
        resumed = run(kind, str(tmp_path / f'from{k}'), resume_from=str(tmp_path / 'ref' / f'iter_{k}.pt'))
        for a, b in zip(reference, resumed):
            assert torch.equal(a, b), f'{kind}: resumed from iteration {k}'
    # Stopped between checkpoints: the work since the last one is redone.
    for k in (3, 7):
        directory = str(tmp_path / f'stop{k}')
        assert run(kind, directory, stop_at=k) is None
        assert load_checkpoint(directory)['states']['iteration'] == k - 1
        resumed = run(kind, str(tmp_path / f'again{k}'), resume_from=directory)
        for a, b in zip(reference, resumed):
            assert torch.equal(a, b), f'{kind}: stopped at {k}'


def test_checkpoint_records_the_data_position(tmp_path):
    run('distributed_sampler', str(tmp_path))
    state = load_checkpoint(str(tmp_path / 'iter_4.pt'))
    data = state['data']
    assert (data['epoch'], data['steps_done'], data['batches'], data['finished']) == (2, 1, 2, False)
    assert data['sampler'] == dict(type='DistributedSampler', seed=7, epoch=1, shuffle=True, num_replicas=1,
                                   rank=0)
    assert set(data['epoch_start']) == {'rng', 'generators'} and 'loader' in data['generators']


def test_resuming_with_another_sampler_seed_warns(tmp_path):
    run('distributed_sampler', str(tmp_path / 'ref'), stop_at=2)
    trainer = Trainer(Engine(nn.Linear(6, 3), nn.CrossEntropyLoss(),
                             torch.optim.SGD(nn.Linear(6, 3).parameters(), lr=0.1), gradient_accumulation=2))
    trainer.engine.optimizer = torch.optim.SGD(trainer.engine.model.parameters(), lr=0.1)
    state = load_checkpoint(str(tmp_path / 'ref'))
    state['engine'] = dict(state['engine'], model=trainer.engine.model.state_dict(), optimizer=None,
                           lr_scheduler=None)
    trainer.load_state_dict(state)
    other = build_dataloader(dict(batch_size=2), Augmented(), shuffle=True, seed=8)
    with pytest.warns(UserWarning, match=r"different data sampler.*'seed': \(7, 8\).*epoch 1 will differ"):
        trainer.fit(other, epochs=1)


class EpochEnds(BaseHook):
    """Records every epoch's end: the epoch, the iteration, the learning rate after it and the
    epoch's training loss and accuracy."""

    def __init__(self):
        super().__init__('LOWEST')
        self.ends = []

    def after_train_epoch(self, runner):
        metrics = runner.states['metrics']['train']
        self.ends.append((runner.states['epoch'], runner.states['iteration'], runner.engine.get_lr(),
                          metrics['Loss'].get_accumulated_value(),
                          metrics['Accuracy'].get_accumulated_value()))


def run_by_epoch(ckpt_dir, resume_from=None, epochs=EPOCHS, interval=STEPS_PER_EPOCH):
    """As run(), with the LR stepped per epoch (so a skipped epoch end changes the weights)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    engine = Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler, gradient_accumulation=2)
    ends = EpochEnds()
    trainer = Trainer(engine, hooks=[LossHook(), AccuracyHook(), LRSchedulerHook(by_epoch=True), ends,
                                     SaveCheckpointHook(interval=interval, by_epoch=False,
                                                        checkpoint_dir=ckpt_dir)])
    if resume_from is not None:
        trainer.resume(resume_from)
    trainer.fit(make_loader('loader_generator'), epochs=epochs)
    return [p.detach().clone() for p in model.parameters()], ends.ends


@pytest.mark.parametrize('at_epoch', [2, EPOCHS])
def test_resuming_at_an_epochs_last_step_still_ends_that_epoch(tmp_path, at_epoch):
    """An iteration checkpoint at the last step of an epoch is saved before the epoch's end hooks
    run (here: the per-epoch LR step). Resuming from it runs that end, then the next epochs:
    the same epoch ends, learning rates, epoch metrics and weights as without the interruption,
    also when it was the run's last step."""
    reference, ref_ends = run_by_epoch(str(tmp_path / 'ref'), interval=STEPS_PER_EPOCH)
    k = at_epoch * STEPS_PER_EPOCH
    resumed, ends = run_by_epoch(str(tmp_path / 'again'), resume_from=str(tmp_path / 'ref' / f'iter_{k}.pt'))
    assert ends == ref_ends[at_epoch - 1:]
    assert ends[0][:3] == (at_epoch, k, 0.1 * 0.5 ** at_epoch)
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)


def test_a_mid_epoch_resume_reports_the_same_epoch_metrics(tmp_path):
    """LossHook and AccuracyHook save their partial sums in iteration checkpoints: the epoch a run
    was stopped in reports the loss and accuracy of all its steps, to the last bit."""
    _, ref_ends = run_by_epoch(str(tmp_path / 'ref'), interval=1)
    for k in (4, 5, 7):  # the first and second step of epoch 2, the first of epoch 3
        _, ends = run_by_epoch(str(tmp_path / f'from{k}'), resume_from=str(tmp_path / 'ref' / f'iter_{k}.pt'))
        epoch = -(-k // STEPS_PER_EPOCH)
        assert ends == ref_ends[epoch - 1:], k
