"""A per-epoch LR step held back at an epoch that max_steps cut short is taken by a run that goes on
with the next epoch instead (a loader without a length resumes at the next epoch)."""
import logging

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from colossal_runner.engine import Engine
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import LossHook, LRSchedulerHook, SaveCheckpointHook

from ._toy import make_dataset


class _Stream(IterableDataset):
    def __init__(self, n):
        self.data = make_dataset(n)

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


def _trainer(work):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    hooks = [LossHook(), LRSchedulerHook(by_epoch=True),
             SaveCheckpointHook(interval=1, checkpoint_dir=str(work / 'checkpoints'))]
    return Trainer(Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler), hooks=hooks,
                   logger=logging.getLogger('test_lr_pending'))


def test_a_resume_at_the_next_epoch_takes_the_held_back_step_first(tmp_path):
    loader = DataLoader(_Stream(40), batch_size=4)  # 10 steps per epoch, no length known ahead
    whole = _trainer(tmp_path / 'whole')
    whole.fit(loader, epochs=3, max_steps=25)
    cut = _trainer(tmp_path / 'cut')
    cut.fit(loader, epochs=3, max_steps=7)  # epoch 1 ends at step 7: its LR step is held back
    assert cut.engine.get_lr() == 0.1
    saved = torch.load(tmp_path / 'cut' / 'checkpoints' / 'epoch_1.pt', weights_only=True)
    assert saved['hooks']['LRSchedulerHook']['pending_epoch'] == 1
    resumed = _trainer(tmp_path / 'cut')
    resumed.resume(str(tmp_path / 'cut' / 'checkpoints' / 'epoch_1.pt'))
    resumed.fit(loader, epochs=3, max_steps=25)  # goes on with epoch 2: the held-back step comes first
    assert resumed.engine.get_lr() == whole.engine.get_lr() == 0.025
