"""BaseHook: twelve no-op lifecycle points, and the one function that dispatches them."""
from __future__ import annotations

import difflib
import inspect
import os
from typing import Any, Dict, Iterable, List, Optional, Union

from ..priority import Priority, get_priority

# The lifecycle, listed once. ``fit`` runs them in this nesting:
# before_train > [before_train_epoch > [before_train_iter, after_train_iter]*
#                 > (before_test > before_test_epoch > [before_test_iter, after_test_iter]*
#                    > after_test_epoch > after_test)? > after_train_epoch]* > after_train
STAGES = (
    'before_train', 'after_train',
    'before_train_epoch', 'after_train_epoch',
    'before_train_iter', 'after_train_iter',
    'before_test', 'after_test',
    'before_test_epoch', 'after_test_epoch',
    'before_test_iter', 'after_test_iter',
)


class BaseHook:
    """A hook is a plain class: override the points you need, the rest stay no-ops and are skipped.

    Args:
        priority: an int in 0..100 or a :class:`Priority` name; lower runs first, ties keep
            registration order.
    """

    def __init__(self, priority: Union[int, str, Priority] = 'NORMAL'):
        self.priority = get_priority(priority)

    def after_hook_is_attached(self, runner: Any) -> None:
        """Called once when the hook is registered with a runner."""

    def before_train(self, runner: Any) -> None:
        """Called once before training starts."""

    def after_train(self, runner: Any) -> None:
        """Called once after training ends."""

    def before_train_epoch(self, runner: Any) -> None:
        """Called before each training epoch."""

    def after_train_epoch(self, runner: Any) -> None:
        """Called after each training epoch (after that epoch's test, when one runs)."""

    def before_train_iter(self, runner: Any) -> None:
        """Called before each training iteration (one optimizer step)."""

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        """Called after each training iteration; all three are None on non-last pipeline stages."""

    def before_test(self, runner: Any) -> None:
        """Called once before an evaluation."""

    def after_test(self, runner: Any) -> None:
        """Called once after an evaluation."""

    def before_test_epoch(self, runner: Any) -> None:
        """Called before the pass over the test data."""

    def after_test_epoch(self, runner: Any) -> None:
        """Called after the pass over the test data."""

    def before_test_iter(self, runner: Any) -> None:
        """Called before each test iteration."""

    def after_test_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        """Called after each test iteration; all three are None on non-last pipeline stages."""

    def on_exception(self, runner: Any, exc: BaseException) -> None:
        """Called when ``fit`` raises, in place of ``after_train``: release what the hook holds open.
        Not one of the twelve points."""

    def state_dict(self) -> Dict[str, Any]:
        """What this hook needs to resume; saved in checkpoints. Stateless hooks return {}."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def overrides(self, stage: str) -> bool:
        """Whether this hook does something at ``stage`` (dispatch skips the no-op defaults)."""
        return getattr(type(self), stage) is not getattr(BaseHook, stage)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(priority={self.priority})'


# Points of other frameworks' hooks and callbacks, and what they are here: a hook ported from one of
# them would otherwise define methods that are never called, without a word.
_FOREIGN_POINTS: Dict[str, tuple] = {
    'before_run': ('before_train', 'mmengine'), 'after_run': ('after_train', 'mmengine'),
    'before_val': ('before_test', 'mmengine'), 'after_val': ('after_test', 'mmengine'),
    'before_val_epoch': ('before_test_epoch', 'mmengine'),
    'after_val_epoch': ('after_test_epoch', 'mmengine'),
    'before_val_iter': ('before_test_iter', 'mmengine'), 'after_val_iter': ('after_test_iter', 'mmengine'),
    'before_epoch': ('before_train_epoch', 'mmcv'), 'after_epoch': ('after_train_epoch', 'mmcv'),
    'before_iter': ('before_train_iter', 'mmcv'), 'after_iter': ('after_train_iter', 'mmcv'),
    'before_save_checkpoint': ('state_dict', 'mmengine'),
    'after_load_checkpoint': ('load_state_dict', 'mmengine'),
    'on_fit_start': ('before_train', 'Lightning'), 'on_fit_end': ('after_train', 'Lightning'),
    'on_train_start': ('before_train', 'Lightning'), 'on_train_end': ('after_train', 'Lightning'),
    'on_train_epoch_start': ('before_train_epoch', 'Lightning'),
    'on_train_epoch_end': ('after_train_epoch', 'Lightning'),
    'on_train_batch_start': ('before_train_iter', 'Lightning'),
    'on_train_batch_end': ('after_train_iter', 'Lightning'),
    'on_save_checkpoint': ('state_dict', 'Lightning'), 'on_load_checkpoint': ('load_state_dict', 'Lightning'),
    'on_train_begin': ('before_train', 'Keras'), 'on_epoch_begin': ('before_train_epoch', 'Keras'),
    'on_epoch_end': ('after_train_epoch', 'Keras'), 'on_train_batch_begin': ('before_train_iter', 'Keras'),
    'on_test_begin': ('before_test', 'Keras'), 'on_test_batch_begin': ('before_test_iter', 'Keras'),
}
for _part in ('validation', 'test'):  # Lightning's validation and test loops are the test points here
    _FOREIGN_POINTS.update({
        f'on_{_part}_start': ('before_test', 'Lightning'), f'on_{_part}_end': ('after_test', 'Lightning'),
        f'on_{_part}_epoch_start': ('before_test_epoch', 'Lightning'),
        f'on_{_part}_epoch_end': ('after_test_epoch', 'Lightning'),
        f'on_{_part}_batch_start': ('before_test_iter', 'Lightning'),
        f'on_{_part}_batch_end': ('after_test_iter', 'Lightning'),
    })
# The methods the Trainer calls with the runner and a fixed number of further arguments.
_CALLED = STAGES + ('after_hook_is_attached', 'on_exception')


def _signature_text(function: Any, name: str) -> str:
    """``name(self, runner, ...)``: the parameters without their annotations."""
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return name + str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def check_hook_methods(hook: BaseHook) -> List[str]:
    """Check a hook's methods as it is registered; returns warnings about methods never called.

    A method named like a point that is none (``after_train_iteration``, mmengine's ``before_run``,
    Lightning's ``on_train_epoch_end``) is never called: one warning each, naming the point to use.
    A point the Trainer would call with arguments its override cannot take is a TypeError now,
    rather than at the first call, an epoch into the run.
    """
    cls = type(hook)
    for stage in _CALLED:
        own = getattr(cls, stage, None)
        if own is getattr(BaseHook, stage):
            continue
        try:
            signature = inspect.signature(getattr(hook, stage))
            outer = inspect.signature(getattr(hook, stage), follow_wrapped=False)
        except (TypeError, ValueError):  # no signature to read (a builtin): called as it is
            continue
        expected = _signature_text(getattr(BaseHook, stage), stage)
        placeholders = [None] * (len(inspect.signature(getattr(BaseHook, stage)).parameters) - 1)
        try:
            try:
                signature.bind(*placeholders)
            except TypeError:  # a decorator's wrapper (functools.wraps) may take them and pass on others
                outer.bind(*placeholders)
        except TypeError as exc:
            shown = _signature_text(own, stage) if inspect.isfunction(own) else f'{stage}{signature}'
            raise TypeError(f'{cls.__name__}.{shown} cannot take the arguments the Trainer passes to it: '
                            f'{expected} ({exc}). Give the method that signature.') from None
    problems = []
    for name in dir(cls):
        if not name.startswith(('before_', 'after_', 'on_')) or hasattr(BaseHook, name):
            continue
        if not callable(getattr(cls, name, None)):
            continue
        if name in _FOREIGN_POINTS:
            ours, framework = _FOREIGN_POINTS[name]
            hint = f"{framework}'s {name} is {_signature_text(getattr(BaseHook, ours), ours)} here"
            if framework == 'mmcv':  # called for both loops there
                hint += f" ({ours.replace('train', 'test')} for the test pass)"
            hint += '. '
        else:
            close = difflib.get_close_matches(name, _CALLED, n=1, cutoff=0.6)
            hint = f'Did you mean {_signature_text(getattr(BaseHook, close[0]), close[0])}? ' if close else ''
        problems.append(f'{cls.__name__}.{name} is never called: it is not one of the points a hook has. '
                        f'{hint}The points are {", ".join(STAGES)} (STAGES in '
                        f'colossal_runner.trainer.hooks), after_hook_is_attached and on_exception. Rename a '
                        f'helper method so that it does not start with before_, after_ or on_.')
    return problems


def dir_in_work_dir(runner: Any, given: Optional[str], hook: str, arg: str, subdir: str) -> str:
    """``given``, or ``<runner.work_dir>/<subdir>`` when it is None (hooks that write files)."""
    if given is not None:
        return given
    if runner.work_dir is None:
        raise ValueError(f'{hook} needs a {arg}, or a runner with a work_dir '
                         "(Trainer(..., work_dir='work_dirs/x')); got neither.")
    return os.path.join(runner.work_dir, subdir)


def call_hooks(hooks: Iterable[BaseHook], stage: str, runner: Any, *args: Any) -> None:
    """Call ``stage`` on each hook that overrides it, in the given (priority) order.

    An exception keeps its type and traceback and gains a note naming the hook and the point.
    """
    for hook in hooks:
        if hook.overrides(stage):
            invoke_hook(hook, stage, runner, *args)


def invoke_hook(hook: BaseHook, stage: str, runner: Any, *args: Any) -> None:
    """Call one hook point; an exception gains a note naming the hook and the point."""
    try:
        getattr(hook, stage)(runner, *args)
    except Exception as exc:
        note_hook_failure(exc, hook, stage)
        raise


def note_hook_failure(exc: BaseException, hook: BaseHook, stage: str, detail: str = '') -> None:
    """Add a note naming the hook and the point (and ``detail``, what it was doing) to an
    exception raised there."""
    if hasattr(exc, 'add_note'):
        exc.add_note(f'(raised in {type(hook).__name__}.{stage}{", " + detail if detail else ""})')
