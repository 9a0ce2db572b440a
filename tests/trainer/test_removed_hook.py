"""A hook removed with trainer.hooks.remove(hook) is not called by the next fit or evaluate."""
from colossal_runner.trainer import BaseHook, Trainer

from ._toy import make_engine, make_loader


class Count(BaseHook):
    def __init__(self):
        super().__init__()
        self.train_steps = self.test_steps = 0

    def after_train_iter(self, runner, output, label, loss):
        self.train_steps += 1

    def after_test_iter(self, runner, output, label, loss):
        self.test_steps += 1


def test_a_removed_hook_is_not_called_by_the_next_fit_or_evaluate():
    """Before, the cached list of each stage's hooks was built again only by register_hook."""
    counted, kept = Count(), Count()
    trainer = Trainer(make_engine(), hooks=[dict(type='LossHook'), counted, kept])
    loader = make_loader(8)  # 2 steps per epoch
    trainer.fit(loader, epochs=1)
    trainer.evaluate(loader)
    trainer.hooks.remove(counted)
    trainer.fit(loader, epochs=2)
    trainer.evaluate(loader)
    assert (counted.train_steps, counted.test_steps) == (2, 2)
    assert (kept.train_steps, kept.test_steps) == (4, 4)
