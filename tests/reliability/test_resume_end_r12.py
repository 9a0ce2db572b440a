"""Resuming around an epoch's end, in process: a checkpoint taken at max_steps in the middle of an
epoch (before or after that epoch's end), a resume that cannot go on from its checkpoint, and one
from an older checkpoint than the newest (latest.pt)."""
import os
import shutil

import pytest
import torch
from torch import nn

from colossal_runner.checkpoint import checkpoints_after, find_latest, load_checkpoint, point_latest
from colossal_runner.engine import Engine
from colossal_runner.testing.hooks import StopAfterIteration, StopTraining
from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import (BaseHook, LoadCheckpointHook, LogMemoryByEpochHook,
                                           LogMetricByEpochHook, LogMetricByStepHook, LossHook,
                                           LRSchedulerHook, SaveCheckpointHook)

from ..trainer._toy import make_loader


pytestmark = pytest.mark.usefixtures('no_fsync')


class EpochEnds(BaseHook):
    """Each epoch end: (epoch, iteration, learning rate after it, the epoch's train loss)."""

    def __init__(self):
        super().__init__('LOWEST')
        self.ends = []

    def after_train_epoch(self, runner):
        self.ends.append((runner.states['epoch'], runner.states['iteration'], runner.engine.get_lr(),
                          runner.states['metrics']['train']['Loss'].get_accumulated_value()))


def build(work_dir, *hooks, interval=5):
    """An MLP whose LR halves at every epoch end (so an end run twice, or skipped, shows), 10 steps an
    epoch, an iteration checkpoint every ``interval`` steps and an epoch checkpoint after each epoch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    ends = EpochEnds()
    trainer = Trainer(Engine(model, nn.CrossEntropyLoss(), optimizer, lr_scheduler=scheduler), hooks=[
        LossHook(), LRSchedulerHook(by_epoch=True), LogMetricByEpochHook(), ends,
        SaveCheckpointHook(interval=interval, by_epoch=False, checkpoint_dir=str(work_dir / 'iter')),
        SaveCheckpointHook(interval=1, checkpoint_dir=str(work_dir / 'epoch')), *hooks],
        work_dir=str(work_dir))
    return trainer, ends


def fit(trainer, max_steps=5, epochs=2, batch_size=4):
    return trainer.fit(make_loader(40, batch_size=batch_size), epochs=epochs, max_steps=max_steps,
                       test_dataloader=make_loader(8, seed=1))


def text(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def test_a_checkpoint_at_max_steps_mid_epoch_runs_the_epoch_end_only_when_it_was_taken_before_it(
        tmp_path, project_log):
    """max_steps=5 stops epoch 1 (10 steps) in its middle. iter_5.pt is written before the epoch's end
    (test, records; no per-epoch LR step for an end max_steps brought early): resuming from it runs
    that end, as the uninterrupted run did, and fit says it ran something. epoch_1.pt is written in
    that end, with the same data entry (epoch 1, step 5, iterator not exhausted): resuming from it with
    the same max_steps trains nothing, runs no end and keeps the end's records in metrics.jsonl."""
    trainer, ends = build(tmp_path / 'ref')
    assert fit(trainer) is True
    reference, ref_ends = trainer.engine.model.state_dict(), ends.ends
    records = text(tmp_path / 'ref' / 'metrics.jsonl')
    assert [line.count('"by": "epoch"') for line in records.splitlines()] == [1, 1]  # test, train
    assert ref_ends[0][:3] == (1, 5, 0.1)
    assert fit(trainer) is False  # the same Trainer again: its end is done, and its records stay
    assert text(tmp_path / 'ref' / 'metrics.jsonl') == records and ends.ends == ref_ends

    seen = len(project_log.lines)
    shutil.copytree(tmp_path / 'ref', tmp_path / 'due')  # its records too: the resumed run replaces them
    trainer, ends = build(tmp_path / 'due')
    trainer.resume(str(tmp_path / 'due' / 'iter' / 'iter_5.pt'))
    assert fit(trainer) is True
    assert ends.ends == ref_ends and text(tmp_path / 'due' / 'metrics.jsonl') == records
    for name, tensor in trainer.engine.model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert not [line for line in project_log.lines[seen:] if 'nothing left to train' in line]

    shutil.copytree(tmp_path / 'ref', tmp_path / 'ended')
    trainer, ends = build(tmp_path / 'ended')
    trainer.resume(str(tmp_path / 'ended' / 'epoch' / 'epoch_1.pt'))
    assert fit(trainer) is False
    assert ends.ends == [] and trainer.engine.get_lr() == 0.1
    assert text(tmp_path / 'ended' / 'metrics.jsonl') == records
    assert 'nothing left to train: iteration 5 has reached max_steps=5' in project_log.text


def test_a_checkpoint_at_the_runs_last_step_runs_the_end_and_fit_says_it_ran(tmp_path):
    trainer, ends = build(tmp_path / 'ref', interval=10)
    assert fit(trainer, max_steps=None, epochs=1) is True
    trainer, again = build(tmp_path / 'again', interval=10)
    trainer.resume(str(tmp_path / 'ref' / 'iter' / 'iter_10.pt'))
    assert fit(trainer, max_steps=None, epochs=1) is True
    assert again.ends == ends.ends
    assert fit(trainer, max_steps=None, epochs=1) is False  # all done now


def test_a_resume_that_cannot_go_on_from_its_checkpoint_drops_no_record_and_keeps_latest(tmp_path):
    """A mid-epoch checkpoint resumed with another batch size fails; it used to drop the records
    written after the checkpoint first, which no later resume wrote again."""
    work_dir = tmp_path / 'run'
    trainer, _ = build(work_dir, LogMetricByStepHook(interval=1), interval=3)
    fit(trainer, max_steps=None, epochs=1)
    records, latest = text(work_dir / 'metrics.jsonl'), os.readlink(work_dir / 'iter' / 'latest.pt')
    assert latest == 'iter_10.pt'
    message = 'taken 3 optimizer steps into epoch 1 of a run with 10 steps per epoch; this run has 5'
    trainer, _ = build(work_dir, interval=3)
    trainer.resume(str(work_dir / 'iter' / 'iter_3.pt'))
    with pytest.raises(ValueError, match=message):
        fit(trainer, max_steps=None, epochs=1, batch_size=8)
    # Loaded in before_train (LoadCheckpointHook), a hook writing a record there (memory_start).
    loader = LoadCheckpointHook(str(work_dir / 'iter' / 'iter_3.pt'))
    trainer, _ = build(work_dir, loader, LogMemoryByEpochHook(), interval=3)
    with pytest.raises(ValueError, match=message):
        fit(trainer, max_steps=None, epochs=1, batch_size=8)
    assert text(work_dir / 'metrics.jsonl') == records
    assert os.readlink(work_dir / 'iter' / 'latest.pt') == latest


def test_a_resume_from_an_older_checkpoint_points_latest_at_it(tmp_path, project_log):
    """Stopped at 7 (iter_3, iter_6 saved); resumed from iter_3.pt and stopped at 5, before its next
    save. latest.pt named iter_6.pt, of the first run, whose records after iteration 3 the second run
    had dropped: a plain resume then went on from iter_6 and the records of 4-6 were never written
    again. Now latest.pt names iter_3.pt, and the runs end with the uninterrupted run's records."""
    def run(work_dir, stop_at=None, resume=None):
        stops = [StopAfterIteration(stop_at)] if stop_at else []
        trainer, _ = build(work_dir, LogMetricByStepHook(interval=1), *stops, interval=3)
        if resume:
            trainer.resume(resume)
        try:
            fit(trainer, max_steps=None, epochs=1)
        except StopTraining:
            pass
        return trainer

    run(tmp_path / 'ref')
    work_dir = tmp_path / 'run'
    run(work_dir, stop_at=7)
    checkpoints = str(work_dir / 'iter')
    run(work_dir, stop_at=5, resume=os.path.join(checkpoints, 'iter_3.pt'))
    line = next(line for line in project_log.lines if 'an earlier checkpoint than the newest' in line)
    assert f'{checkpoints} holds checkpoints taken after it by a run that went on from there before ' \
           f'(iter_6.pt)' in line
    latest, resumed = os.path.join(checkpoints, 'latest.pt'), os.path.join(checkpoints, 'iter_3.pt')
    assert f'{latest} now names {resumed}' in line
    assert os.readlink(os.path.join(checkpoints, 'latest.pt')) == 'iter_3.pt'
    assert run(work_dir, resume=checkpoints).resumed_from == resumed
    assert text(work_dir / 'metrics.jsonl') == text(tmp_path / 'ref' / 'metrics.jsonl')


def test_latest_helpers_for_pipeline_stages_and_another_directory(tmp_path):
    """Each pipeline stage has its own latest_stage{s}.pt; a run resumed from another work
    directory's checkpoint links to it by a relative path."""
    names = ('iter_3_stage1.pt', 'iter_6_stage1.pt', 'epoch_1_stage1.pt', 'iter_6_stage0.pt', 'iter_9.pt')
    for name in names:
        torch.save({'name': name}, str(tmp_path / name))
    later = checkpoints_after(str(tmp_path), 3, 0, stage=1)
    assert sorted(later) == ['epoch_1_stage1.pt', 'iter_6_stage1.pt']
    assert checkpoints_after(str(tmp_path), 6, 1, stage=1) == []
    point_latest(str(tmp_path), str(tmp_path / 'iter_3_stage1.pt'), stage=1)
    assert os.readlink(tmp_path / 'latest_stage1.pt') == 'iter_3_stage1.pt'
    assert find_latest(str(tmp_path), 1) == str(tmp_path / 'iter_3_stage1.pt')
    assert not (tmp_path / 'latest.pt').exists() and not (tmp_path / 'latest_stage0.pt').exists()
    own = tmp_path / 'own'
    own.mkdir()
    point_latest(str(own), str(tmp_path / 'iter_9.pt'))
    assert os.readlink(own / 'latest.pt') == os.path.join('..', 'iter_9.pt')
    assert load_checkpoint(str(own / 'latest.pt')) == {'name': 'iter_9.pt'}
