"""BaseHook: twelve no-op lifecycle points, and the one function that dispatches them."""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Union

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
