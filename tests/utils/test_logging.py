"""utils/logging.get_logger: one log file per run, also for several runs in one process."""
import glob
import logging
import os

import pytest

from colossal_runner.initialize import initialize
from colossal_runner.trainer import BaseHook, Trainer
from colossal_runner.utils.logging import get_logger

from ..trainer._toy import make_engine, make_loader

TINY = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data', 'e2e', 'tiny.py')


@pytest.fixture(autouse=True)
def restore_handlers():
    """Close and detach the handlers the tests here added (their files are in tmp_path)."""
    loggers = [logging.getLogger(name) for name in ('colossal_runner', 'colossal_runner.test_files')]
    before = {logger.name: list(logger.handlers) for logger in loggers}
    yield
    for logger in loggers:
        for handler in list(logger.handlers):
            if handler not in before[logger.name]:
                logger.removeHandler(handler)
                handler.close()


class Say(BaseHook):
    """Logs one line naming the run at the end of each epoch."""

    def __init__(self, name):
        super().__init__()
        self.name = name

    def after_train_epoch(self, runner):
        runner.logger.info(f'{self.name} finished epoch {runner.states["epoch"]}')


def _log_text(work_dir):
    (path,) = glob.glob(os.path.join(str(work_dir), '*.log'))
    with open(path, encoding='utf-8') as f:
        return f.read()


def test_a_second_trainer_in_the_process_does_not_write_into_the_first_runs_log(tmp_path):
    first = Trainer(make_engine(), hooks=[Say('first')], work_dir=str(tmp_path / 'one'))
    first.fit(make_loader(8), epochs=2)
    second = Trainer(make_engine(), hooks=[Say('second')], work_dir=str(tmp_path / 'two'))
    second.fit(make_loader(8), epochs=1)
    one, two = _log_text(tmp_path / 'one'), _log_text(tmp_path / 'two')
    assert 'first finished epoch 1' in one and 'first finished epoch 2' in one
    assert 'second' not in one
    assert 'second finished epoch 1' in two and 'first' not in two
    files = [h for h in second.logger.handlers if isinstance(h, logging.FileHandler)]
    assert [os.path.dirname(h.baseFilename) for h in files] == [str(tmp_path / 'two')]


def test_get_logger_replaces_only_its_own_file_handler_and_closes_it(tmp_path):
    logger = get_logger('colossal_runner.test_files', str(tmp_path / 'a.log'))
    (a,) = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    mine = logging.FileHandler(str(tmp_path / 'mine.log'), encoding='utf-8')  # added by the user
    logger.addHandler(mine)
    logger.info('one')
    assert get_logger('colossal_runner.test_files', str(tmp_path / 'a.log')) is logger   # same file: kept
    logger.info('two')
    assert get_logger('colossal_runner.test_files') is logger   # no file asked for: the current one stays
    logger.info('three')
    get_logger('colossal_runner.test_files', str(tmp_path / 'b.log'))
    logger.info('four')
    assert a not in logger.handlers and a.stream is None        # detached and closed
    assert mine in logger.handlers
    files = sorted(os.path.basename(h.baseFilename) for h in logger.handlers
                   if isinstance(h, logging.FileHandler))
    assert files == ['b.log', 'mine.log']
    for h in logger.handlers:
        h.flush()

    def lines(name):
        return [line.rsplit(' - ', 1)[-1] for line in (tmp_path / name).read_text().splitlines()]

    assert lines('a.log') == ['one', 'two', 'three']
    assert lines('b.log') == ['four']
    assert lines('mine.log') == ['one', 'two', 'three', 'four']


def test_two_initialize_runs_and_a_direct_trainer_each_log_to_their_own_file(tmp_path):
    runs = []
    for name in ('first', 'second'):
        run = initialize(TINY, work_dir=str(tmp_path / name))
        run.trainer.register_hook(Say(name))
        run.trainer.fit(run.train_dataloader, epochs=1)
        runs.append(run)
    direct = Trainer(make_engine(), hooks=[Say('direct')], work_dir=str(tmp_path / 'direct'))
    direct.fit(make_loader(8), epochs=1)
    for name in ('first', 'second', 'direct'):
        text = _log_text(tmp_path / name)
        assert f'{name} finished epoch 1' in text
        assert all(other not in text for other in ('first', 'second', 'direct') if other != name), name


def test_two_runs_started_in_the_same_second_get_their_own_log_files(tmp_path, monkeypatch):
    import time

    import torch
    from torch import nn

    from colossal_runner.engine import Engine
    from colossal_runner.trainer import Trainer
    monkeypatch.setattr(time, 'strftime', lambda fmt, *args: '20261129_120000')

    def run(message):
        model = nn.Linear(2, 2)
        engine = Engine(model, nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1))
        Trainer(engine, work_dir=str(tmp_path)).logger.info(message)

    run('first run')
    run('second run')
    first, second = tmp_path / '20261129_120000.log', tmp_path / '20261129_120000_2.log'
    assert 'first run' in first.read_text() and 'second run' not in first.read_text()
    assert 'second run' in second.read_text()
