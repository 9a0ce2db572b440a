"""Why a multi-process run stopped reaches stderr and the log file even when torchrun's SIGTERM
cuts the ranks short: the failing rank says its error before telling the others (they stop, and
torchrun then SIGTERMs it while it waits for them), and a rank SIGTERMed before its watcher read
the failure names it instead of a bare "terminated (SIGTERM)"."""
import datetime
import gc
import logging
import os
import signal
import sys

import pytest
import torch.distributed as dist

from colossal_runner.distributed.faults import FaultWatcher, set_watcher
from colossal_runner.testing import free_port
from colossal_runner.train import report_errors, report_interruption


@pytest.fixture
def log_file(tmp_path):
    """A run log file (as get_logger adds it) on colossal_runner's logger; yields its path."""
    logger = logging.getLogger('colossal_runner')
    handler = logging.FileHandler(tmp_path / 'run.log')
    handler.setFormatter(logging.Formatter('%(levelname)s - %(message)s'))
    handler._colossal_log_file = True
    logger.addHandler(handler)
    yield tmp_path / 'run.log'
    logger.removeHandler(handler)
    handler.close()


class _WatcherSeeingWhatWasSaid:
    """A fault watcher that records what stderr and the log file held when it was told of the failure
    (the moment after which, in a torchrun job, this rank may be SIGTERMed at any time)."""

    rank = 1
    stopped_for = None

    def __init__(self, capsys, log_file):
        self.capsys, self.log_file, self.seen = capsys, log_file, None

    def handle_failure(self, error):
        self.seen = (self.capsys.readouterr().err, self.log_file.read_text())
        return None

    def finish(self, root):
        pass


def test_the_failing_rank_says_its_error_before_it_tells_the_others(log_file, capsys):
    watcher = _WatcherSeeingWhatWasSaid(capsys, log_file)
    set_watcher(watcher)
    try:
        with pytest.raises(SystemExit) as exited, report_errors('train.py', False, 1, logs_before=[]):
            raise RuntimeError('bomb on rank 1 at forward 30')
    finally:
        set_watcher(None)
    assert exited.value.code == 1
    err, log = watcher.seen
    assert 'train.py: error: RuntimeError: bomb on rank 1 at forward 30' in err, err
    assert 'ERROR - train.py: error: RuntimeError: bomb on rank 1 at forward 30' in log, log
    assert 'bomb' not in capsys.readouterr().err  # said once, not again after report_failure


@pytest.fixture
def failed_job():
    """A store where rank 1 of 2 has reported a failure, and rank 0's watcher (installed, its thread
    not started: nothing watches heartbeats here) that has not read it yet."""
    port = free_port()
    store = dist.TCPStore('127.0.0.1', port, 2, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=30))
    watchers = []
    for rank in (0, 1):
        watcher = FaultWatcher('127.0.0.1', port, rank, 2)
        watcher.store = dist.PrefixStore('colossal_runner/faults/test', store)
        watchers.append(watcher)
    assert watchers[1].report(RuntimeError('bomb on rank 1 at forward 30'))
    set_watcher(watchers[0])
    yield watchers[0]
    set_watcher(None)
    # The store's server thread must not outlive the test: a rank that a later test forks from this
    # process inherits a copy of whatever that thread held at the fork, and may hang in its own
    # store (tests/distributed/test_faults.py's forked ranks did, on some machines).
    for watcher in watchers:
        watcher.store = None
    del watchers, store
    gc.collect()


@pytest.mark.skipif(sys.platform == 'win32', reason='POSIX signals')
def test_a_sigterm_before_the_watcher_read_the_failure_names_the_failed_rank(failed_job, log_file, capsys):
    with pytest.raises(SystemExit) as exited, report_interruption('train.py', lambda: None, logs_before=[]):
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun stopping the job
    assert exited.value.code == 143
    line = ('train.py: rank 0 is stopping because rank 1 failed: RuntimeError: bomb on rank 1 at forward 30; '
            'terminated (SIGTERM) before training started')
    assert capsys.readouterr().err == line + '\n'
    assert log_file.read_text().rstrip().endswith(f'ERROR - {line}')
    # Once the watcher has said why (its own line), the SIGTERM line does not repeat it.
    failed_job._say_stopping(failed_job.first_failure())
    capsys.readouterr()
    with pytest.raises(SystemExit), report_interruption('train.py', lambda: None, logs_before=[]):
        os.kill(os.getpid(), signal.SIGTERM)
    assert capsys.readouterr().err == 'train.py: terminated (SIGTERM) before training started\n'
