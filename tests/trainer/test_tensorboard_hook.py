"""TensorboardHook: event files read back with tensorboard's own EventAccumulator."""
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import AccuracyHook, LossHook, LRSchedulerHook, TensorboardHook

from ._toy import make_engine, make_loader


def test_scalars_per_step_per_epoch_and_per_test(tmp_path):
    hook = TensorboardHook(interval=2)
    trainer = Trainer(make_engine(), hooks=[LossHook(), AccuracyHook(), LRSchedulerHook(), hook],
                      work_dir=str(tmp_path))
    trainer.fit(make_loader(16), epochs=3, test_dataloader=make_loader(8), test_interval=1)
    log_dir = tmp_path / 'tensorboard'
    assert hook.log_dir == str(log_dir) and os.listdir(log_dir)
    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert tags == {'train/Loss', 'train/Accuracy', 'train/LearningRate',
                    'train_epoch/Loss', 'train_epoch/Accuracy', 'train_epoch/LearningRate',
                    'test/Loss', 'test/Accuracy'}
    assert [e.step for e in events.Scalars('train/Loss')] == [2, 4, 6, 8, 10, 12]   # every 2 of 12 steps
    assert [e.step for e in events.Scalars('train_epoch/Loss')] == [1, 2, 3]
    assert [e.step for e in events.Scalars('test/Accuracy')] == [1, 2, 3]
    last_epoch_loss = trainer.states['metrics']['train']['Loss'].get_accumulated_value()
    assert events.Scalars('train_epoch/Loss')[-1].value == pytest.approx(last_epoch_loss, rel=1e-6)
    assert [e.value for e in events.Scalars('train/LearningRate')][:2] == pytest.approx([0.1, 0.05])


def test_needs_a_log_dir_or_a_work_dir():
    with pytest.raises(ValueError, match='TensorboardHook needs a log_dir'):
        Trainer(make_engine(), hooks=[TensorboardHook()])
    with pytest.raises(ValueError, match='interval must be a positive int'):
        TensorboardHook(log_dir='x', interval=0)
