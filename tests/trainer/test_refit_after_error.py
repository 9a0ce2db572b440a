"""fit() called again after fit raised goes on where the first one stopped, as an uninterrupted run.

Where it raised: at an epoch's start (before its first step), in the middle of its steps, after its
last step, or in its end (the test pass, after_train_epoch). The weights, the data order and the
per-epoch hooks must be those of a run that did not stop.
"""
import copy
import json

import pytest
import torch

from colossal_runner.trainer import BaseHook, Trainer

from ._toy import make_engine, make_loader

EPOCHS, STEPS = 3, 5  # 20 samples in batches of 4


class Record(BaseHook):
    """Counts the epoch hooks and keeps every step's labels (the data order)."""

    def __init__(self):
        super().__init__('HIGHEST')  # before RaiseOnce: it sees the call that raises
        self.labels, self.epoch_starts, self.epoch_ends = [], [], []

    def before_train_epoch(self, runner):
        self.epoch_starts.append(runner.states['epoch'])

    def after_train_iter(self, runner, output, label, loss):
        self.labels.append(label.tolist())

    def after_train_epoch(self, runner):
        self.epoch_ends.append(runner.states['epoch'])


class RaiseOnce(BaseHook):
    """Raises ``error`` once, at ``stage`` of ``epoch`` (and at ``iteration`` for the after_train_iter)."""

    def __init__(self, stage, epoch, error=RuntimeError, iteration=None):
        super().__init__('NORMAL')
        self.stage, self.epoch, self.error, self.iteration = stage, epoch, error, iteration
        self.armed = True

    def _maybe_raise(self, runner, stage):
        if (self.armed and stage == self.stage and runner.states['epoch'] == self.epoch
                and self.iteration in (None, runner.states['iteration'])):
            self.armed = False
            raise self.error(f'raised in {stage}')

    def before_train_epoch(self, runner):
        self._maybe_raise(runner, 'before_train_epoch')

    def before_train_iter(self, runner):
        self._maybe_raise(runner, 'before_train_iter')

    def after_train_iter(self, runner, output, label, loss):
        self._maybe_raise(runner, 'after_train_iter')

    def after_test_iter(self, runner, output, label, loss):
        self._maybe_raise(runner, 'after_test_iter')


def _loader(generator):
    # shuffled: from a generator of the loader's own, or from the global RNG
    return make_loader(20, shuffle=True, generator=torch.Generator().manual_seed(3) if generator else None)


def _run(raiser, generator, test=False):
    torch.manual_seed(7)  # the global RNG: dropout, and the order of a loader without a generator
    engine = make_engine(dropout=0.2)
    record = Record()
    trainer = Trainer(engine, hooks=[dict(type='LossHook'), record] + ([raiser] if raiser else []))
    train = _loader(generator)
    test_loader = make_loader(8, seed=1) if test else None
    try:
        trainer.fit(train, epochs=EPOCHS, test_dataloader=test_loader)
    except (RuntimeError, KeyboardInterrupt):
        assert raiser is not None and not raiser.armed
        trainer.fit(train, epochs=EPOCHS, test_dataloader=test_loader)
    return trainer, record


def _assert_same_run(got, want):
    (trainer, record), (reference, reference_record) = got, want
    assert trainer.states['iteration'] == reference.states['iteration'] == EPOCHS * STEPS
    assert record.labels == reference_record.labels  # the same batches, in the same order
    assert record.epoch_ends == reference_record.epoch_ends == [1, 2, 3]
    for a, b in zip(trainer.engine.model.parameters(), reference.engine.model.parameters()):
        assert torch.equal(a, b)  # bit for bit
    assert trainer.engine.get_lr() == reference.engine.get_lr()


@pytest.mark.parametrize('generator', [True, False])
@pytest.mark.parametrize('epoch', [1, 2])
@pytest.mark.parametrize('stage, error', [('before_train_epoch', RuntimeError),
                                          ('before_train_iter', KeyboardInterrupt)])
def test_a_fit_that_raised_at_an_epochs_start_trains_that_epoch_next_time(stage, error, epoch, generator):
    """Before, the next fit took the epoch as done (its iteration count had not moved) and skipped it."""
    got = _run(RaiseOnce(stage, epoch, error), generator)
    _assert_same_run(got, _run(None, generator))
    # before_train_epoch again only when it had not returned
    assert got[1].epoch_starts.count(epoch) == (2 if stage == 'before_train_epoch' else 1)


@pytest.mark.parametrize('generator', [True, False])
@pytest.mark.parametrize('iteration', [7, 10])  # in the middle of epoch 2; after its last step
def test_a_fit_that_raised_in_an_epochs_steps_replays_its_data_order(iteration, generator):
    """Before, the next fit drew a new shuffle for the epoch and skipped its first batches."""
    got = _run(RaiseOnce('after_train_iter', 2, iteration=iteration), generator)
    want = _run(None, generator)
    _assert_same_run(got, want)
    assert got[1].epoch_starts == [1, 2, 3]  # the epoch goes on: its metrics keep their sums
    losses = [run.states['metrics']['train']['Loss'].get_accumulated_value() for run, _ in (got, want)]
    assert losses[0] == losses[1]


def test_a_fit_that_raised_in_an_epochs_end_runs_that_end_next_time():
    """Ctrl-C in the test pass at the end of epoch 2: before, the next fit started at epoch 3, and
    epoch 2's after_train_epoch (its checkpoint, its records, a per-epoch LR step) never ran."""
    got = _run(RaiseOnce('after_test_iter', 2, KeyboardInterrupt), generator=True, test=True)
    _assert_same_run(got, _run(None, generator=True, test=True))
    assert got[1].epoch_starts == [1, 2, 3]  # only the end ran again


class RaiseAtEpochEnd(BaseHook):
    """Raises once in epoch 2's after_train_epoch, after the higher-priority hooks' (a full disk, say)."""

    def __init__(self):
        super().__init__('LOW')
        self.armed = True

    def after_train_epoch(self, runner):
        if self.armed and runner.states['epoch'] == 2:
            self.armed = False
            raise OSError('raised in after_train_epoch')


def test_hooks_whose_epoch_end_returned_are_not_called_again():
    """A per-epoch LR step (LRSchedulerHook, HIGH priority) ran before the raise: the next fit must
    not step it a second time, nor record that epoch's end twice."""
    runs = []
    for raiser in (RaiseAtEpochEnd(), None):
        torch.manual_seed(7)
        engine = make_engine()  # StepLR(step_size=2, gamma=0.5), stepped per epoch here
        record = Record()
        trainer = Trainer(engine, hooks=[dict(type='LRSchedulerHook', by_epoch=True), record]
                          + ([raiser] if raiser else []))
        train = _loader(True)
        try:
            trainer.fit(train, epochs=EPOCHS)
        except OSError:
            trainer.fit(train, epochs=EPOCHS)
        runs.append((trainer, record))
    _assert_same_run(*runs)
    assert runs[0][0].engine.epoch_lr_scheduler.last_epoch == EPOCHS


def test_a_checkpoint_loaded_after_the_error_decides_where_the_next_fit_goes_on():
    """What memory says of the failed fit no longer applies once a checkpoint is loaded."""
    state = {}

    class SaveAt(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            if runner.states['iteration'] == 3:
                state.update(copy.deepcopy(runner.state_dict()))  # (its tensors are the live ones)

    want = _run(None, generator=True, test=True)
    torch.manual_seed(7)
    record = Record()
    trainer = Trainer(make_engine(dropout=0.2), hooks=[dict(type='LossHook'), SaveAt(), record,
                                                       RaiseOnce('after_test_iter', 2, KeyboardInterrupt)])
    train, test = _loader(generator=True), make_loader(8, seed=1)
    with pytest.raises(KeyboardInterrupt):  # in epoch 2's end
        trainer.fit(train, epochs=EPOCHS, test_dataloader=test)
    trainer.load_state_dict(state)  # back to iteration 3, in epoch 1
    trainer.fit(train, epochs=EPOCHS, test_dataloader=test)
    assert trainer.states['iteration'] == EPOCHS * STEPS
    assert record.labels[10:] == want[1].labels[3:]  # from epoch 1's fourth step on, as uninterrupted
    for a, b in zip(trainer.engine.model.parameters(), want[0].engine.model.parameters()):
        assert torch.equal(a, b)


def test_an_epoch_end_that_raised_keeps_its_records_and_is_not_tested_twice(tmp_path):
    """The next fit used to drop epoch 2's records from metrics.jsonl (as a resume from before that
    end would), write the test record again and never the train record (its hook had returned)."""
    files = []
    for name, raiser in (('raised', RaiseAtEpochEnd()), ('straight', None)):
        torch.manual_seed(7)
        hooks = [dict(type='LossHook'), dict(type='AccuracyHook'), dict(type='LogMetricByEpochHook')]
        trainer = Trainer(make_engine(), work_dir=str(tmp_path / name),
                          hooks=hooks + ([raiser] if raiser else []))
        train, test = _loader(True), make_loader(8, seed=1)
        try:
            trainer.fit(train, epochs=EPOCHS, test_dataloader=test)
        except OSError:
            trainer.fit(train, epochs=EPOCHS, test_dataloader=test)
        with open(tmp_path / name / 'metrics.jsonl') as f:
            files.append([json.loads(line) for line in f])
    got, want = files
    assert [(r['mode'], r['epoch']) for r in got] == [(r['mode'], r['epoch']) for r in want]
    assert [(r['mode'], r['epoch']) for r in got].count(('train', 2)) == 1
    assert got == want
