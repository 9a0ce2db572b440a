"""tools/train.py stopped by SIGTERM (time limit, preemption, torchrun) or SIGINT (Ctrl-C): one line
on stderr and in the log saying where the run was and what --resume continues from."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from colossal_runner.train import report_interruption

from .conftest import E2E, ROOT

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='POSIX signals')


def _start(work_dir):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([E2E, ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train.py'), os.path.join(E2E, 'tiny.py'),
           '--work-dir', str(work_dir), '--no-progress', '--cfg-options', 'max_epochs=100000']
    # A shell's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _log_text(work_dir):
    logs = glob.glob(os.path.join(str(work_dir), '*.log'))
    return open(logs[0], encoding='utf-8').read() if logs else ''


def test_sigterm_and_sigint_say_where_the_run_stopped_and_how_to_resume(tmp_path):
    runs = {signal.SIGTERM: (tmp_path / 'term', 143, 'terminated (SIGTERM)'),
            signal.SIGINT: (tmp_path / 'int', 130, 'interrupted')}
    procs = {sig: _start(work_dir) for sig, (work_dir, _, _) in runs.items()}  # both at once: half the time
    try:
        for sig, proc in procs.items():
            deadline = time.monotonic() + 120
            while 'saved checkpoint' not in _log_text(runs[sig][0]):  # training runs, a checkpoint exists
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
                time.sleep(0.1)
            proc.send_signal(sig)
        outputs = {sig: proc.communicate(timeout=60) for sig, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for sig, (work_dir, status, what) in runs.items():
        _, err = outputs[sig]
        assert procs[sig].returncode == status, err[-2000:]
        line = err.strip().splitlines()[-1]
        match = re.fullmatch(rf'train\.py: {re.escape(what)} at epoch (\d+), iteration (\d+); rerun with '
                             rf'--resume to continue from the last checkpoint, (.*epoch_(\d+)\.pt)', line)
        assert match, line
        epoch, iteration, checkpoint, saved = (int(match[1]), int(match[2]), match[3], int(match[4]))
        assert os.path.dirname(checkpoint) == str(work_dir / 'checkpoints') and os.path.isfile(checkpoint)
        assert 1 <= saved <= epoch and iteration >= 4 * saved  # 4 steps an epoch
        assert 'Traceback' not in err
        assert _log_text(work_dir).rstrip().endswith(f'ERROR - {line}')  # the batch job's log says why


def test_sigterm_before_training_and_the_handler_is_restored(capsys):
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with report_interruption('train.py', lambda: None):
            assert signal.getsignal(signal.SIGTERM) is not previous
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert stopped.value.code == 143
    assert capsys.readouterr().err == 'train.py: terminated (SIGTERM) before training started\n'
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # the dropped one
def test_a_sigterm_whose_exception_python_drops_is_delivered_again(capsys):
    """A SIGTERM handled inside a __del__ (a DataLoader iterator's, at an epoch's end) raises where
    Python prints and drops the exception: the run must still stop, not train on to its end."""
    class SignalsWhenDeleted:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as stopped:
        with report_interruption('train.py', lambda: None):
            SignalsWhenDeleted()  # deleted at once; its Terminated is dropped ("Exception ignored in")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
    assert stopped.value.code == 143
    assert capsys.readouterr().err.endswith('train.py: terminated (SIGTERM) before training started\n')


def test_a_forked_child_gets_the_default_sigterm_back():
    with pytest.raises(SystemExit):
        with report_interruption('train.py', lambda: None):
            pid = os.fork()
            if pid == 0:  # the child: a SIGTERM must end it by the signal, not by a Terminated traceback
                os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            raise KeyboardInterrupt  # leave through the handled path


def test_a_sigterm_on_its_way_out_is_not_interrupted_by_another(capsys):
    """Cleanup while the first Terminated unwinds (hooks' on_exception) runs to its end: the signal is
    sent again only when Python dropped the exception, not after a delay."""
    cleaned = []
    with pytest.raises(SystemExit) as stopped:
        with report_interruption('train.py', lambda: None):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except BaseException:
                time.sleep(1.2)  # a slow cleanup, e.g. a flush
                cleaned.append('done')
                raise
    assert stopped.value.code == 143 and cleaned == ['done']
