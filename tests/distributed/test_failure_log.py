"""The run's log file says why a rank stopped when another rank failed, not the gloo error that
followed on it (``Connection closed by peer``)."""
import logging
import os
import textwrap
from pathlib import Path

import pytest

from colossal_runner.distributed.faults import Failure, set_watcher
from colossal_runner.testing import free_port
from colossal_runner.train import report_errors

from ._procs import describe, run_ranks

ROOT = Path(__file__).resolve().parents[2]
HOOK = textwrap.dedent('''
    import os
    from colossal_runner.registry import HOOKS
    from colossal_runner.trainer.hooks import BaseHook

    @HOOKS.register_module()
    class FailOnRankOne(BaseHook):
        def after_train_iter(self, runner, output, label, loss):
            if runner.states['iteration'] == 3 and os.environ['RANK'] == '1':
                raise RuntimeError('boom on rank 1 at iteration 3')
''')


def test_a_rank_stopped_by_another_ranks_failure_logs_that_cause(tmp_path):
    (tmp_path / 'fail_on_rank_one.py').write_text(HOOK)
    config = tmp_path / 'fail.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = {str(ROOT / 'tests' / 'data' / 'e2e' / 'tiny.py')!r}
        custom_imports = dict(imports=['fail_on_rank_one'])
        hooks = [dict(type='LossHook'), dict(type='FailOnRankOne')]
        fault_watch = dict(heartbeat_timeout=2.0)
    '''))
    work_dir = tmp_path / 'work'
    port = str(free_port())
    envs = [dict(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=port,
                 PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)])) for r in range(2)]
    args = [[str(config), '--launcher', 'torch', '--work-dir', str(work_dir), '--no-progress']] * 2
    results = run_ranks(str(ROOT / 'tools' / 'train.py'), args, envs, timeout=120, cwd=str(ROOT))
    info = describe(results)
    assert all(r.returncode not in (0, None) for r in results), info
    assert 'train.py: error: RuntimeError: boom on rank 1 at iteration 3' in results[1].stderr, info
    stopping = 'rank 0 is stopping because rank 1 failed: RuntimeError: boom on rank 1 at iteration 3'
    assert stopping in results[0].stderr and results[0].stderr.count(stopping) == 1, info
    # Rank 0 writes the run's log: the cause is in it, gloo's follow-on error is not, anywhere.
    (log,) = work_dir.glob('*.log')
    text = log.read_text()
    assert f'ERROR - {stopping}' in text, text
    assert 'Connection closed' not in text and 'train.py: error:' not in text, text
    assert 'train.py: error:' not in results[0].stderr, info


class _PeerFailed:
    """A fault watcher that found another rank's failure first (as FaultWatcher.finish records it)."""

    rank = 0
    stopped_for = None

    def handle_failure(self, error):
        return Failure(1, 'RuntimeError: boom')

    def finish(self, root):
        self.stopped_for = root


def _run_failing(error, tmp_path, capsys):
    logger = logging.getLogger('colossal_runner')
    handler = logging.FileHandler(tmp_path / 'run.log')
    handler._colossal_log_file = True
    set_watcher(_PeerFailed())
    try:
        with pytest.raises(SystemExit) as exited, report_errors('train.py', False, 1, logs_before=[]):
            logger.addHandler(handler)  # the log file the run opened
            raise error
    finally:
        set_watcher(None)
        logger.removeHandler(handler)
        handler.close()
    return exited.value.code, capsys.readouterr().err, (tmp_path / 'run.log').read_text()


def test_the_follow_on_communication_error_is_not_reported_as_the_cause(tmp_path, capsys):
    gloo = RuntimeError('[pair.cc:561] Connection closed by peer [127.0.0.1]:14758')
    code, err, log = _run_failing(gloo, tmp_path, capsys)
    assert code == 1 and 'Connection closed' not in err + log and 'train.py: error' not in err + log
    # This rank's own error is still reported, even when another rank failed first.
    code, err, log = _run_failing(ValueError('bad batch'), tmp_path, capsys)
    assert code == 1 and 'train.py: error: ValueError: bad batch' in err and 'ValueError: bad batch' in log
