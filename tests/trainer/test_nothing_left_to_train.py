"""A fit with nothing left to train says so, and that epochs / max_steps count the total."""
from colossal_runner.trainer import Trainer

from ._toy import make_engine, make_loader


def test_a_second_fit_with_the_same_epochs_says_that_epochs_is_the_total(project_log):
    trainer = Trainer(make_engine(), hooks=[dict(type='LossHook')])
    loader = make_loader(8)  # 2 steps per epoch
    trainer.fit(loader, epochs=2)
    assert 'nothing left to train' not in project_log.text
    trainer.fit(loader, epochs=2)
    assert trainer.states['iteration'] == 4
    line = next(line for line in project_log.lines if 'nothing left to train' in line)
    assert '2 epoch(s) done' in line and 'fit(epochs=2)' in line
    assert 'epochs is the total number of epochs' in line and 'pass a larger value' in line


def test_a_fit_whose_max_steps_is_reached_says_so(project_log):
    trainer = Trainer(make_engine(), hooks=[dict(type='LossHook')])
    loader = make_loader(8)
    trainer.fit(loader, epochs=5, max_steps=3)
    trainer.fit(loader, epochs=5, max_steps=3)
    assert trainer.states['iteration'] == 3
    line = next(line for line in project_log.lines if 'nothing left to train' in line)
    assert 'iteration 3 has reached max_steps=3' in line and 'pass a larger value' in line
