"""The lifecycle: golden call order, priorities and ties, dispatch, validation of hooks."""
import pytest

from colossal_runner.registry import HOOKS
from colossal_runner.trainer import STAGES, BaseHook, Priority, Trainer
from colossal_runner.trainer.hooks import LossHook

from ._toy import make_engine, make_loader


class RecordingHook(BaseHook):
    """Records every lifecycle call with the epoch and iteration it sees."""

    def __init__(self, calls, tag='', priority='NORMAL'):
        super().__init__(priority)
        self.calls, self.tag = calls, tag

    def _record(self, stage, runner):
        self.calls.append((self.tag + stage, runner.states['epoch'], runner.states['iteration']))


for _stage in STAGES + ('after_hook_is_attached',):
    def _method(self, runner, *args, _stage=_stage):
        self._record(_stage, runner)
    setattr(RecordingHook, _stage, _method)


def test_golden_hook_order():
    calls = []
    trainer = Trainer(make_engine(), hooks=[RecordingHook(calls)])
    trainer.fit(make_loader(12, batch_size=4), epochs=2, test_dataloader=make_loader(8, batch_size=4),
                test_interval=1)

    def test_pass(epoch, iteration):
        return ([('before_test', epoch, iteration), ('before_test_epoch', epoch, iteration)]
                + [('before_test_iter', epoch, iteration), ('after_test_iter', epoch, iteration)] * 2
                + [('after_test_epoch', epoch, iteration), ('after_test', epoch, iteration)])

    expected = [('after_hook_is_attached', 0, 0), ('before_train', 0, 0),
                ('before_train_epoch', 1, 0),
                ('before_train_iter', 1, 0), ('after_train_iter', 1, 1),
                ('before_train_iter', 1, 1), ('after_train_iter', 1, 2),
                ('before_train_iter', 1, 2), ('after_train_iter', 1, 3),
                *test_pass(1, 3),
                ('after_train_epoch', 1, 3),
                ('before_train_epoch', 2, 3),
                ('before_train_iter', 2, 3), ('after_train_iter', 2, 4),
                ('before_train_iter', 2, 4), ('after_train_iter', 2, 5),
                ('before_train_iter', 2, 5), ('after_train_iter', 2, 6),
                *test_pass(2, 6),
                ('after_train_epoch', 2, 6),
                ('after_train', 2, 6)]
    assert calls == expected
    assert set(STAGES) == {c[0] for c in calls} - {'after_hook_is_attached'}
    assert len(STAGES) == 12


def test_priority_order_and_ties_keep_registration_order():
    calls = []
    hooks = [RecordingHook(calls, 'low:', 'LOW'), RecordingHook(calls, 'normal1:', 'NORMAL'),
             RecordingHook(calls, 'p5:', 5), RecordingHook(calls, 'normal2:', 50),
             RecordingHook(calls, 'highest:', Priority.HIGHEST), RecordingHook(calls, 'normal3:', 'normal')]
    trainer = Trainer(make_engine(), hooks=hooks)
    assert [h.priority for h in trainer.hooks] == [0, 5, 50, 50, 50, 70]
    calls.clear()
    trainer.call_hook('before_train')
    assert [c[0] for c in calls] == ['highest:before_train', 'p5:before_train', 'normal1:before_train',
                                     'normal2:before_train', 'normal3:before_train', 'low:before_train']


def test_dispatch_skips_points_a_hook_does_not_override():
    class OnlyEpochs(BaseHook):
        def __init__(self):
            super().__init__()
            self.seen = []

        def after_train_epoch(self, runner):
            self.seen.append(runner.states['epoch'])

    hook = OnlyEpochs()
    assert hook.overrides('after_train_epoch') and not hook.overrides('after_train_iter')
    Trainer(make_engine(), hooks=[hook]).fit(make_loader(8), epochs=3)
    assert hook.seen == [1, 2, 3]


def test_exception_in_a_hook_names_the_hook_and_the_point():
    class Broken(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            raise RuntimeError('boom')

    trainer = Trainer(make_engine(), hooks=[Broken()])
    with pytest.raises(RuntimeError, match='boom') as info:
        trainer.fit(make_loader(8), epochs=1)
    assert any('Broken.after_train_iter' in note for note in info.value.__notes__)


def test_registering_bad_hooks_fails_early_with_clear_messages():
    trainer = Trainer(make_engine())
    with pytest.raises(TypeError, match='must be a BaseHook instance or a config dict'):
        trainer.register_hook(object())
    with pytest.raises(ValueError, match='unknown priority name .*HIGHEST=0.*LOWEST=100'):
        trainer.register_hook(dict(type='LossHook', priority='URGENT'))
    with pytest.raises(ValueError, match=r'must be in 0\.\.100.*got 101'):
        LossHook(priority=101)
    with pytest.raises(ValueError, match=r'must be in 0\.\.100.*got -1'):
        BaseHook(priority=-1)
    with pytest.raises(KeyError, match="Did you mean 'LossHook'"):
        trainer.register_hook(dict(type='LosHook'))

    class NoSuperInit(BaseHook):
        def __init__(self):
            pass

    with pytest.raises(TypeError, match=r'call super\(\)\.__init__\(priority\)'):
        trainer.register_hook(NoSuperInit())
    assert trainer.hooks == []


def test_hook_from_dict_takes_priority_from_the_dict():
    trainer = Trainer(make_engine(), hooks=[dict(type='LossHook', priority='LOWEST'),
                                            dict(type='AccuracyHook')])
    assert [type(h).__name__ for h in trainer.hooks] == ['AccuracyHook', 'LossHook']
    assert trainer.hooks[1].priority == 100
    assert HOOKS.get('LoadCheckpointHook') is not None
