"""A user's module with a custom hook, loaded through custom_imports."""
import json
import os

from colossal_runner.registry import HOOKS
from colossal_runner.trainer.hooks import BaseHook


@HOOKS.register_module()
class MarkerHook(BaseHook):
    """Writes one line per training iteration and a summary at the end into ``<work_dir>/<name>``."""

    def __init__(self, name='marker.txt', priority='LOW'):
        super().__init__(priority)
        self.name = name
        self.iterations = []

    def after_train_iter(self, runner, output, label, loss):
        self.iterations.append(runner.states['iteration'])

    def after_train(self, runner):
        with open(os.path.join(runner.work_dir, self.name), 'w') as f:
            json.dump(dict(iterations=self.iterations, epoch=runner.states['epoch']), f)
