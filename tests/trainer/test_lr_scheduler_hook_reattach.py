"""LRSchedulerHook(by_epoch=True) of a second Trainer on the same engine finds the scheduler that an
earlier one (finished, or whose construction failed at a later hook) took from the engine."""
import copy
import warnings

import pytest

from colossal_runner.trainer import Trainer
from colossal_runner.trainer.hooks import LRSchedulerHook

from ._toy import make_engine, make_loader


def _lr(engine):
    return engine.optimizer.param_groups[0]['lr']


def test_a_trainer_built_after_one_that_failed_still_steps_the_scheduler_per_epoch():
    engine = make_engine()  # StepLR(step_size=2, gamma=0.5) from lr=0.1
    scheduler = engine.lr_scheduler
    with pytest.raises(ValueError, match='modes'):
        Trainer(engine, hooks=[dict(type='LRSchedulerHook', by_epoch=True),
                               dict(type='LossHook', modes=('tran',))])  # the typo fails the second hook
    hook = LRSchedulerHook(by_epoch=True)
    Trainer(engine, hooks=[hook, dict(type='LossHook')]).fit(make_loader(16), epochs=4)  # 4 steps an epoch
    assert hook.lr_scheduler is scheduler and engine.epoch_lr_scheduler is scheduler
    assert engine.lr_scheduler is None  # the engine does not also step it per step
    assert scheduler.last_epoch == 4 and _lr(engine) == pytest.approx(0.1 * 0.5 ** 2)


def test_a_second_trainer_with_the_hook_continues_the_per_epoch_schedule():
    engine = make_engine()
    Trainer(engine, hooks=[LRSchedulerHook(by_epoch=True)]).fit(make_loader(16), epochs=2)
    assert _lr(engine) == pytest.approx(0.05)
    second = LRSchedulerHook(by_epoch=True)
    trainer = Trainer(engine, hooks=[second])
    trainer.fit(make_loader(16), epochs=2)  # a new Trainer's epochs count from 0
    assert second.lr_scheduler is engine.epoch_lr_scheduler and second.lr_scheduler.last_epoch == 4
    assert _lr(engine) == pytest.approx(0.025)
    assert second.state_dict()['lr_scheduler']['last_epoch'] == 4


def test_the_hook_still_refuses_an_engine_without_any_scheduler():
    with pytest.raises(ValueError, match='lr_scheduler=None'):
        Trainer(make_engine(lr_scheduler=False), hooks=[LRSchedulerHook(by_epoch=True)])


def test_a_trainer_without_the_hook_steps_the_scheduler_per_step_again():
    engine = make_engine()  # StepLR(step_size=2, gamma=0.5): per step, 4 steps halve the lr twice
    scheduler = engine.lr_scheduler
    Trainer(engine, hooks=[LRSchedulerHook(by_epoch=True)]).fit(make_loader(16), epochs=1)
    assert scheduler.last_epoch == 1 and _lr(engine) == pytest.approx(0.1)
    Trainer(engine).fit(make_loader(16), epochs=1)  # no by-epoch hook: the engine steps it again
    assert engine.lr_scheduler is scheduler
    assert scheduler.last_epoch == 5 and _lr(engine) == pytest.approx(0.1 * 0.5 ** 2)


def test_a_second_trainer_built_to_evaluate_leaves_the_first_ones_schedule_per_epoch():
    engine = make_engine()
    hook = LRSchedulerHook(by_epoch=True)
    first = Trainer(engine, hooks=[hook])
    first.fit(make_loader(16), epochs=1)
    Trainer(engine, hooks=[dict(type='AccuracyHook')]).evaluate(make_loader(8))  # no by-epoch hook
    first.fit(make_loader(16), epochs=2)  # its fit takes the scheduler back to once per epoch
    assert hook.lr_scheduler.last_epoch == 2 and _lr(engine) == pytest.approx(0.05)


def test_a_removed_by_epoch_hook_leaves_the_scheduler_to_the_engine():
    engine = make_engine()
    hook = LRSchedulerHook(by_epoch=True)
    trainer = Trainer(engine, hooks=[hook])
    trainer.fit(make_loader(16), epochs=1)
    trainer.hooks.remove(hook)
    trainer.fit(make_loader(16), epochs=2)  # 4 more steps, each stepping StepLR(step_size=2)
    assert hook.lr_scheduler.last_epoch == 5 and _lr(engine) == pytest.approx(0.1 * 0.5 ** 2)


def test_a_trainer_built_to_evaluate_does_not_change_how_the_first_one_resumes():
    reference = make_engine()
    trainer = Trainer(reference, hooks=[LRSchedulerHook(by_epoch=True)])
    trainer.fit(make_loader(16), epochs=3)
    state = copy.deepcopy(trainer.state_dict())
    assert state['engine']['lr_scheduler_by_epoch']
    trainer.fit(make_loader(16), epochs=4)

    engine = make_engine()
    hook = LRSchedulerHook(by_epoch=True)
    resumed = Trainer(engine, hooks=[hook])
    Trainer(engine, hooks=[dict(type='AccuracyHook')])  # built up front, as in a notebook
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # before: "stepped per optimizer step ... starts from its first step"
        resumed.load_state_dict(state)
    assert _lr(engine) == pytest.approx(0.05) and hook.lr_scheduler.last_epoch == 3
    resumed.fit(make_loader(16), epochs=4)
    assert _lr(engine) == pytest.approx(_lr(reference)) == pytest.approx(0.025)
