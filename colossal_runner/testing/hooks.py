"""A hook that stops training where a kill would, for tests of resume and of refitting."""
from __future__ import annotations

from ..trainer.hooks.base_hook import BaseHook


class StopTraining(Exception):
    """Raised by :class:`StopAfterIteration`."""


class StopAfterIteration(BaseHook):
    """Raises :class:`StopTraining` after iteration ``at``'s other hooks (priority LOWEST: after a
    checkpoint due at it was saved), as a kill right there would stop the run."""

    def __init__(self, at: int):
        super().__init__('LOWEST')
        self.at = at

    def after_train_iter(self, runner, output, label, loss) -> None:
        if runner.states['iteration'] == self.at:
            raise StopTraining(f'stopped after iteration {self.at}')
