"""TensorboardHook: event files read back with tensorboard's own EventAccumulator."""
import os
import threading

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from colossal_runner.trainer import BaseHook, Trainer
from colossal_runner.trainer.hooks import (AccuracyHook, LossHook, LRSchedulerHook, SaveCheckpointHook,
                                          TensorboardHook)

from ._toy import make_engine, make_loader


def test_scalars_per_step_per_epoch_and_per_test(tmp_path):
    hook = TensorboardHook(interval=2)
    trainer = Trainer(make_engine(), hooks=[LossHook(), AccuracyHook(), LRSchedulerHook(), hook],
                      work_dir=str(tmp_path))
    trainer.fit(make_loader(16), epochs=3, test_dataloader=make_loader(8), test_interval=1)
    log_dir = tmp_path / 'tensorboard'
    assert hook.log_dir == str(log_dir) and os.listdir(log_dir)
    events, epochs = _read(log_dir), _read(log_dir / 'epoch')  # steps are iterations / epochs
    assert set(events.Tags()['scalars']) == {'train/Loss', 'train/Accuracy', 'train/LearningRate'}
    assert set(epochs.Tags()['scalars']) == {'train_epoch/Loss', 'train_epoch/Accuracy',
                                             'train_epoch/LearningRate', 'test/Loss', 'test/Accuracy'}
    assert [e.step for e in events.Scalars('train/Loss')] == [2, 4, 6, 8, 10, 12]   # every 2 of 12 steps
    assert [e.step for e in epochs.Scalars('train_epoch/Loss')] == [1, 2, 3]
    assert [e.step for e in epochs.Scalars('test/Accuracy')] == [1, 2, 3]
    last_epoch_loss = trainer.states['metrics']['train']['Loss'].get_accumulated_value()
    assert epochs.Scalars('train_epoch/Loss')[-1].value == pytest.approx(last_epoch_loss, rel=1e-6)
    assert [e.value for e in events.Scalars('train/LearningRate')][:2] == pytest.approx([0.1, 0.05])


def _read(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events


def _run(work_dir, epochs, resume=None, **save):
    saver = SaveCheckpointHook(checkpoint_dir=str(work_dir / 'ckpt'), **save)
    trainer = Trainer(make_engine(), hooks=[LossHook(), TensorboardHook(interval=1), saver],
                      work_dir=str(work_dir))
    if resume is not None:
        trainer.resume(str(work_dir / 'ckpt' / resume))
    trainer.fit(make_loader(16), epochs=epochs, test_dataloader=make_loader(8))  # 4 steps per epoch
    return trainer


def _age_event_files(log_dir):
    """Date the event files 100 s back, as those of an earlier process. TensorBoard reads a
    directory's files in name order, and a file's name starts with the second it was opened and
    ends with a per-process counter: two runs in one process and one second could sort in the
    wrong order ('...9' after '...10')."""
    for folder in (log_dir, log_dir / 'epoch'):
        for name in os.listdir(folder):
            parts = name.split('.')
            if name.startswith('events.out.tfevents.'):
                parts[3] = '%010d' % (int(parts[3]) - 100)
                os.rename(folder / name, folder / '.'.join(parts))


@pytest.mark.parametrize('save, resume, epochs', [
    (dict(interval=2), 'epoch_2.pt', 4),                 # after epoch 2's end: iteration 8
    (dict(by_epoch=False, interval=4), 'iter_4.pt', 3),  # at epoch 1's last step, before its end
])
def test_a_resumed_run_hides_what_the_run_it_replaces_wrote_after_the_checkpoint(tmp_path, save, resume,
                                                                                  epochs):
    """The first run goes on past the checkpoint (as a run that crashed later would); resumed from
    the checkpoint into the same directory, every step and epoch is shown once, not twice."""
    _run(tmp_path, epochs, **save)
    _age_event_files(tmp_path / 'tensorboard')
    _run(tmp_path, epochs, resume=resume, **save)
    events, per_epoch = _read(tmp_path / 'tensorboard'), _read(tmp_path / 'tensorboard' / 'epoch')
    assert [e.step for e in events.Scalars('train/Loss')] == list(range(1, 4 * epochs + 1))
    for tag in ('train_epoch/Loss', 'test/Loss'):
        assert [e.step for e in per_epoch.Scalars(tag)] == list(range(1, epochs + 1))


def test_needs_a_log_dir_or_a_work_dir():
    with pytest.raises(ValueError, match='TensorboardHook needs a log_dir'):
        Trainer(make_engine(), hooks=[TensorboardHook()])
    with pytest.raises(ValueError, match='interval must be a positive int'):
        TensorboardHook(log_dir='x', interval=0)


def test_a_failing_fit_closes_the_writers_with_every_event_on_disk(tmp_path):
    class RaiseAt(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            if runner.states['iteration'] == 7:
                raise RuntimeError('boom')

    tensorboard = TensorboardHook()
    trainer = Trainer(make_engine(), hooks=[LossHook(), tensorboard, RaiseAt(priority='LOW')],
                      work_dir=str(tmp_path))
    threads = set(threading.enumerate())
    with pytest.raises(RuntimeError, match='boom'):
        trainer.fit(make_loader(16), epochs=3)  # 4 steps per epoch: fails in epoch 2
    assert tensorboard.writer is None and tensorboard.epoch_writer is None
    assert set(threading.enumerate()) <= threads  # each writer's thread has written all and ended
    steps = [e.step for e in _read(tmp_path / 'tensorboard').Scalars('train/Loss')]
    assert steps == list(range(1, 8))
    assert [e.step for e in _read(tmp_path / 'tensorboard' / 'epoch').Scalars('train_epoch/Loss')] == [1]
