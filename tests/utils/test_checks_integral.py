"""check_positive_int takes integral numbers such as NumPy's (never a bool) and returns a plain int."""
import re

import numpy as np
import pytest

from colossal_runner.trainer.hooks import SaveCheckpointHook, TensorboardHook
from colossal_runner.trainer.metrics import Accuracy
from colossal_runner.utils.checks import check_positive_int


@pytest.mark.parametrize('value', [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_integral_numbers_come_back_as_plain_ints(value):
    got = check_positive_int('epochs', value)
    assert got == 3 and type(got) is int


@pytest.mark.parametrize('value', [True, np.bool_(True), 2.0, np.float64(2.0), '2', None, 0, np.int64(0), -1])
def test_everything_else_is_refused_saying_what_it_got(value):
    with pytest.raises(ValueError, match=re.escape(f'epochs must be a positive int (epochs to train), '
                                                   f'got {value!r}')):
        check_positive_int('epochs', value, ' (epochs to train)')


def test_callers_keep_the_plain_int():
    assert type(Accuracy(topk=np.int64(2), defer_steps=np.int64(4)).topk) is int
    assert type(SaveCheckpointHook(interval=np.int64(2)).interval) is int
    assert type(TensorboardHook(interval=np.int64(5)).interval) is int


def test_fit_keeps_numpy_counts_as_plain_ints():
    from colossal_runner.trainer import Trainer
    from tests.trainer._toy import make_engine, make_loader
    trainer = Trainer(make_engine())
    trainer.fit(make_loader(16), epochs=np.int64(1), max_steps=np.int64(3), test_interval=np.int64(1))
    assert type(trainer.states['max_epochs']) is int and type(trainer.states['max_steps']) is int
    assert trainer.states['iteration'] == 3


def test_a_numpy_batch_size_builds_a_loader():
    from colossal_runner.data.dataloader import build_dataloader
    loader = build_dataloader(dict(batch_size=np.int64(4)), list(range(10)))
    assert loader.batch_size == 4 and type(loader.batch_size) is int and len(loader) == 3
