"""When fit raises: hooks' on_exception runs (after_train does not) and the exception propagates."""
import pytest

from colossal_runner.trainer import BaseHook, Trainer

from ._toy import make_engine, make_loader


class Resource(BaseHook):
    """Opens something in before_train and closes it in after_train, or in on_exception on failure."""

    def __init__(self, priority='NORMAL'):
        super().__init__(priority)
        self.open = False
        self.calls = []

    def before_train(self, runner):
        self.open = True

    def after_train(self, runner):
        self.calls.append('after_train')
        self.open = False

    def on_exception(self, runner, exc):
        self.calls.append(('on_exception', exc, runner.states['iteration']))
        self.open = False


class RaiseAt(BaseHook):
    def __init__(self, iteration, error=RuntimeError, priority='LOW'):
        super().__init__(priority)
        self.iteration, self.error = iteration, error

    def after_train_iter(self, runner, output, label, loss):
        if runner.states['iteration'] == self.iteration:
            raise self.error(f'boom at iteration {self.iteration}')


@pytest.mark.parametrize('error', [RuntimeError, KeyboardInterrupt])
def test_a_failing_fit_calls_on_exception_not_after_train(error):
    resource = Resource()
    trainer = Trainer(make_engine(), hooks=[resource, RaiseAt(3, error)])
    with pytest.raises(error, match='boom at iteration 3') as info:
        trainer.fit(make_loader(16), epochs=2)
    assert resource.calls == [('on_exception', info.value, 3)] and not resource.open
    # nothing added, not replaced (call_hook notes an Exception's hook, not a KeyboardInterrupt's)
    notes = ['(raised in RaiseAt.after_train_iter)'] if error is RuntimeError else []
    assert getattr(info.value, '__notes__', []) == notes


def test_a_fit_that_ends_normally_does_not_call_on_exception():
    resource = Resource()
    Trainer(make_engine(), hooks=[resource]).fit(make_loader(8), epochs=1)
    assert resource.calls == ['after_train'] and not resource.open


def test_a_failing_after_train_still_lets_the_other_hooks_close():
    class FailingAfterTrain(BaseHook):
        def after_train(self, runner):
            raise OSError('disk full')

    resource = Resource(priority='LOW')  # its after_train would run after the failing one
    trainer = Trainer(make_engine(), hooks=[FailingAfterTrain(), resource])
    with pytest.raises(OSError, match='disk full'):
        trainer.fit(make_loader(8), epochs=1)
    assert [c[0] for c in resource.calls] == ['on_exception'] and not resource.open


def test_a_failing_on_exception_is_logged_and_the_original_error_propagates(project_log):
    class BadCleanup(BaseHook):
        def on_exception(self, runner, exc):
            raise ValueError('cleanup failed')

    resource = Resource(priority='LOW')  # runs after the failing cleanup
    trainer = Trainer(make_engine(), hooks=[BadCleanup(), resource, RaiseAt(1)])
    with pytest.raises(RuntimeError, match='boom at iteration 1'):
        trainer.fit(make_loader(8), epochs=1)
    assert ('BadCleanup.on_exception raised ValueError: cleanup failed (ignored, after fit raised '
            'RuntimeError)') in project_log.lines
    assert not resource.open
