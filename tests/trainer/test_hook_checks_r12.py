"""Hooks checked as they are registered (point names, signatures), hook state that is not a dict,
hooks given to fit / evaluate, and hook state values older torch versions cannot load."""
import functools
import logging
import warnings

import pytest
import torch

from colossal_runner.checkpoint import check_weights_only
from colossal_runner.trainer import BaseHook, Trainer
from colossal_runner.trainer.hooks import STAGES
from colossal_runner.utils.logging import detach_log_file

from ._toy import make_engine, make_loader


class PortedHook(BaseHook):
    """Methods named after mmengine / Lightning points, and a typo: none of them is ever called."""

    def before_run(self, runner):
        pass

    def after_val_epoch(self, runner, metrics=None):
        pass

    def after_train_iteration(self, runner, output, label, loss):
        pass

    def on_train_epoch_end(self, runner):
        pass

    def on_validation_batch_end(self, runner, *args):
        pass


def _register(hook, work_dir=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        trainer = Trainer(make_engine(), work_dir=work_dir)
        trainer.register_hook(hook)
    return trainer, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_methods_named_like_points_that_are_none_are_warned_about_with_the_point_to_use(tmp_path):
    try:
        trainer, messages = _register(PortedHook(), work_dir=str(tmp_path))
    finally:
        detach_log_file(logging.getLogger('colossal_runner'))
    assert trainer.hooks[-1].__class__ is PortedHook  # registered all the same
    by_method = {name: [m for m in messages if f'PortedHook.{name} is never called' in m]
                 for name in ('before_run', 'after_val_epoch', 'after_train_iteration', 'on_train_epoch_end',
                              'on_validation_batch_end')}
    assert all(len(found) == 1 for found in by_method.values()), messages
    assert "mmengine's before_run is before_train(self, runner) here" in by_method['before_run'][0]
    assert ("mmengine's after_val_epoch is after_test_epoch(self, runner) here"
            in by_method['after_val_epoch'][0])
    assert ("Lightning's on_train_epoch_end is after_train_epoch(self, runner) here"
            in by_method['on_train_epoch_end'][0])
    assert ("Lightning's on_validation_batch_end is after_test_iter(self, runner, output, label, loss) here"
            in by_method['on_validation_batch_end'][0])
    assert ('Did you mean after_train_iter(self, runner, output, label, loss)?'
            in by_method['after_train_iteration'][0])
    assert all(stage in messages[0] for stage in STAGES)  # the list of points
    # the run's log file has them too (the console has each warning once, from warnings.warn)
    log_text = ''.join(path.read_text() for path in tmp_path.glob('*.log'))
    assert log_text.count('is never called') == 5


def test_a_correct_hook_and_the_built_in_hooks_give_no_warning():
    class Fine(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            pass

        def on_exception(self, runner, exc):
            pass

        def helper(self):  # any other name is the hook's own business
            pass

    for hook in (Fine(), dict(type='LossHook'), dict(type='AccuracyHook'), dict(type='LRSchedulerHook'),
                 dict(type='LogMetricByEpochHook'), dict(type='LogMetricByStepHook'),
                 dict(type='ThroughputHook'), dict(type='LogTimingByEpochHook'),
                 dict(type='LogMemoryByEpochHook'), dict(type='SaveCheckpointHook', checkpoint_dir='unused')):
        _, messages = _register(hook)
        assert not [m for m in messages if 'never called' in m], (hook, messages)


def test_a_point_whose_signature_cannot_take_the_trainers_arguments_is_refused_at_registration():
    class Sig(BaseHook):
        def after_train_iter(self, runner):
            pass

    trainer = Trainer(make_engine())
    with pytest.raises(TypeError) as info:
        trainer.register_hook(Sig())
    message = str(info.value)
    assert 'Sig.after_train_iter(self, runner) cannot take the arguments' in message
    assert 'after_train_iter(self, runner, output, label, loss)' in message
    assert trainer.hooks == []  # not registered

    class EpochWithExtra(BaseHook):
        def after_train_epoch(self, runner, metrics):  # mmengine's after_val_epoch shape, on a point here
            pass

    with pytest.raises(TypeError, match=r'EpochWithExtra\.after_train_epoch\(self, runner, metrics\).*'
                                        r'after_train_epoch\(self, runner\)'):
        Trainer(make_engine(), hooks=[EpochWithExtra()])

    class Flexible(BaseHook):  # defaults and *args take what the Trainer passes
        def after_train_iter(self, runner, *args, extra=None):
            pass

        def before_train(self, runner, optional=1):
            pass

    Trainer(make_engine(), hooks=[Flexible()]).fit(make_loader(8), epochs=1)


def test_a_decorator_whose_wrapper_takes_the_trainers_arguments_is_not_refused():
    # functools.wraps makes inspect.signature show the wrapped function, which takes one more
    def inject(function):
        @functools.wraps(function)
        def wrapper(self, runner):
            return function(self, runner, calls)
        return wrapper

    calls = []

    class Injected(BaseHook):
        @inject
        def after_train_epoch(self, runner, seen):
            seen.append(runner.states['epoch'])

    Trainer(make_engine(), hooks=[Injected()]).fit(make_loader(8), epochs=2)
    assert calls == [1, 2]


class StateHook(BaseHook):
    def __init__(self, state):
        super().__init__()
        self.state = state

    def state_dict(self):
        return self.state


@pytest.mark.parametrize('state, shown', [
    (torch.zeros(3), 'a Tensor of shape (3,)'),   # once the truth value of a tensor: RuntimeError
    (torch.tensor(0.), 'a Tensor of shape ()'),   # once silently not saved
    (0.0, 'a float (0.0)'),
    ([1, 2], 'a list ([1, 2])'),
    (None, 'None'),
])
def test_a_hook_state_dict_that_is_not_a_dict_is_a_type_error_naming_the_hook(state, shown):
    trainer = Trainer(make_engine(), hooks=[StateHook(state)])
    with pytest.raises(TypeError) as info:
        trainer.state_dict()
    message = str(info.value)
    assert message.startswith(f'StateHook.state_dict() returned {shown}')
    assert 'must return a dict' in message and "hooks['StateHook']" in message


def test_an_empty_hook_state_is_not_saved_and_a_falsy_value_in_a_dict_is():
    trainer = Trainer(make_engine(), hooks=[StateHook({}), StateHook({'ema': 0.0})])
    assert trainer.state_dict()['hooks'] == {'StateHook#2': {'ema': 0.0}}


def test_fit_and_evaluate_refuse_hooks_saying_where_they_go():
    trainer = Trainer(make_engine())
    for call in (lambda: trainer.fit(make_loader(8), epochs=1, hooks=[dict(type='LossHook')]),
                 lambda: trainer.evaluate(make_loader(8), hooks=[dict(type='LossHook')])):
        with pytest.raises(TypeError) as info:
            call()
        message = str(info.value)
        assert 'takes no hooks' in message and 'Trainer(engine, hooks=[...])' in message
        assert 'trainer.register_hook' in message and 'keep their state across fits' in message
    assert trainer.states['iteration'] == 0  # nothing ran
    trainer.fit(make_loader(8), epochs=1, hooks=None)
    assert trainer.evaluate(make_loader(8), hooks=None) == {}


@pytest.mark.parametrize('value, fix', [({3, 1, 2}, 'store sorted(value)'),
                                        (1j, 'store [value.real, value.imag]')])
def test_a_set_or_complex_in_a_hook_state_is_refused_saying_older_torch_cannot_load_it(value, fix):
    with pytest.raises(TypeError) as info:
        check_weights_only({'hooks': {'H': {'v': value}}})
    message = str(info.value)
    assert message.startswith(f"state['hooks']['H']['v'] is a {type(value).__name__}")
    assert '2.5 and earlier' in message and 'torch>=2.1' in message and fix in message
