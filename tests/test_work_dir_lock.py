"""One training per work directory (``<work_dir>/.lock``), and the work_dir errors of initialize()."""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from colossal_runner.config import ConfigError
from colossal_runner.initialize import initialize
from colossal_runner.train import main

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TINY = os.path.join(HERE, 'data', 'e2e', 'tiny.py')
locks = pytest.mark.skipif(sys.platform == 'win32', reason='no fcntl: work directories are not locked')


HOLD = """
import os, sys, time
from colossal_runner.utils.work_dir_lock import lock_work_dir
lock_work_dir(sys.argv[1])
child = os.fork()  # as a DataLoader worker is forked: it must not keep the lock once this process dies
if child == 0:
    time.sleep(120)
    os._exit(0)
print(child, flush=True)
sys.stdin.read()
"""


def _hold(work_dir):
    """Another process that holds the lock of ``work_dir`` until it is killed (no torch: quick), and
    the pid of the child it forked."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(work_dir)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def _snapshot(directory):
    return {os.path.relpath(os.path.join(base, name), directory):
            hashlib.sha256(open(os.path.join(base, name), 'rb').read()).hexdigest()
            for base, _, names in os.walk(directory) for name in names}


@locks
def test_a_second_training_into_a_busy_work_dir_stops_before_touching_it(tmp_path, capsys):
    work_dir = tmp_path / 'run'
    (work_dir / 'checkpoints').mkdir(parents=True)
    # what the first run is writing: a checkpoint being saved, its metrics
    (work_dir / 'checkpoints' / '.epoch_2.pt.k3x9.tmp').write_bytes(b'half a checkpoint')
    (work_dir / 'metrics.jsonl').write_text('{"mode": "train", "epoch": 1}\n')
    holder, worker = _hold(work_dir)
    try:
        before = _snapshot(work_dir)
        with pytest.raises(SystemExit) as stopped:
            main([TINY, '--work-dir', str(work_dir), '--no-progress'])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert (f'train.py: error: another training (pid {holder.pid} on host {socket.gethostname()}) is '
                f'writing into work_dir {str(work_dir)!r}, or that process ran one there and is still '
                f'alive (a notebook, a script that went on); wait for it to finish, or choose another '
                f'--work-dir') in err
        assert _snapshot(work_dir) == before  # no temporary removed, no metrics moved, no log file
        holder.kill()
        holder.wait()
        # The kernel dropped the killed holder's lock, although its forked child lives on: nothing
        # stale to delete before the next run.
        initialize(TINY, work_dir=str(work_dir), log_file=False)
        assert (work_dir / '.lock').read_text() == f'pid {os.getpid()} on host {socket.gethostname()}\n'
    finally:
        holder.kill()
        holder.wait()
        os.kill(worker, signal.SIGKILL)


@locks
def test_the_same_process_may_initialize_its_work_dir_again(tmp_path):
    work_dir = tmp_path / 'run'
    initialize(TINY, work_dir=str(work_dir), log_file=False)
    initialize(TINY, work_dir=str(work_dir), log_file=False)  # e.g. a resume test: reuses its own lock
    shutil.rmtree(work_dir)  # a new directory of the same name is locked anew
    initialize(TINY, work_dir=str(work_dir), log_file=False)
    assert (work_dir / '.lock').read_text() == f'pid {os.getpid()} on host {socket.gethostname()}\n'


@locks
def test_a_run_into_another_work_dir_lets_the_earlier_one_go(tmp_path):
    """A notebook's next experiment: the finished run's directory is free for tools/train.py again."""
    import fcntl
    initialize(TINY, work_dir=str(tmp_path / 'first'), log_file=False)
    initialize(TINY, work_dir=str(tmp_path / 'second'), log_file=False)
    for name, free in (('first', True), ('second', False)):
        fd = os.open(tmp_path / name / '.lock', os.O_RDWR)
        try:  # another open file description: flock conflicts with this process's own lock too
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            taken = False
        finally:
            os.close(fd)
        assert taken == free, name


@pytest.mark.parametrize('from_config', [False, True])
def test_a_work_dir_that_is_a_file_is_named_as_such_with_where_it_came_from(tmp_path, from_config):
    afile = tmp_path / 'afile'
    afile.write_text('x')
    given = dict(cfg_options={'work_dir': str(afile)}) if from_config else dict(work_dir=str(afile))
    with pytest.raises(ConfigError) as raised:
        initialize(TINY, log_file=False, **given)
    message = str(raised.value)
    assert f'the work directory {str(afile)!r}' in message and 'is a file, not a directory' in message
    assert 'choose another with --work-dir DIR' in message
    if from_config:
        assert raised.value.key_path == 'work_dir' and message.startswith(f'config {TINY}, key work_dir: ')
    else:  # --work-dir: the config's key is not to blame
        assert raised.value.key_path is None and 'key work_dir' not in message
        assert message.startswith(f'the work directory {str(afile)!r} (from --work-dir) is a file')
    assert afile.read_text() == 'x'


@locks
def test_a_refused_work_dir_keeps_the_lock_the_process_holds(tmp_path):
    import fcntl

    from colossal_runner.utils.work_dir_lock import WorkDirBusyError, lock_work_dir
    for name in ('mine', 'busy'):
        (tmp_path / name).mkdir()
    lock_work_dir(str(tmp_path / 'mine'))
    other = os.open(tmp_path / 'busy' / '.lock', os.O_RDWR | os.O_CREAT)  # as another process would
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(WorkDirBusyError):
            lock_work_dir(str(tmp_path / 'busy'))
        probe = os.open(tmp_path / 'mine' / '.lock', os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # still held by this process
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
    finally:
        os.close(other)
