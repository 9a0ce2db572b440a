"""tools/train.py killed in the final test pass of a run that max_steps ends in the middle of an
epoch, after its last iteration checkpoint, then resumed with the job's fixed command line: the
resume runs the epoch's end, prints the final metrics and writes final_metrics.json, as the
uninterrupted run does. The killed run itself started with --resume and no checkpoint yet."""
import json
import os
import signal
import subprocess
import sys

import pytest

from .conftest import E2E, ROOT, read_jsonl

pytestmark = pytest.mark.skipif(sys.platform == 'win32', reason='POSIX signals')

KILLER = """
import os, signal
from colossal_runner.registry import HOOKS
from colossal_runner.trainer.hooks import BaseHook

@HOOKS.register_module()
class KillInTestHook(BaseHook):
    '''SIGKILLs the process in the test pass at iteration KILL_IN_TEST (when set), as a preemption.'''
    def after_test_iter(self, runner, output, label, loss):
        if str(runner.states['iteration']) == os.environ.get('KILL_IN_TEST'):
            os.kill(os.getpid(), signal.SIGKILL)
"""

# tiny.py's epochs have 4 steps: max_steps=6 ends the run in the middle of epoch 2, right after iter_6.pt
CONFIG = f"""_base_ = [{os.path.join(E2E, 'tiny.py')!r}]
max_steps = 6
hooks = [dict(type='LossHook'), dict(type='AccuracyHook'), dict(type='LogMetricByEpochHook'),
         dict(type='SaveCheckpointHook', interval=3, by_epoch=False), dict(type='KillInTestHook')]
custom_imports = dict(imports=['kill_in_test'])
"""


def _start(config, work_dir, *args, kill_at=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(config), ROOT,
                                                       os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    env.pop('KILL_IN_TEST', None)
    if kill_at is not None:
        env['KILL_IN_TEST'] = str(kill_at)
    command = [sys.executable, os.path.join(ROOT, 'tools', 'train.py'), config, '--work-dir', str(work_dir),
               '--no-progress', *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def test_killed_in_the_final_test_pass_at_max_steps_the_resume_runs_the_epochs_end(tmp_path):
    (tmp_path / 'kill_in_test.py').write_text(KILLER, encoding='utf-8')
    config = str(tmp_path / 'cfg.py')
    (tmp_path / 'cfg.py').write_text(CONFIG, encoding='utf-8')
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    procs = [_start(config, whole), _start(config, killed, '--resume', kill_at=6)]  # side by side
    (code, out, err), (kill_code, _, kill_err) = [_finish(proc) for proc in procs]
    assert code == 0, err[-3000:]
    assert kill_code == -signal.SIGKILL, kill_err[-3000:]
    # A requeued job's --resume before any checkpoint existed: it trained from scratch.
    assert f"--resume: no checkpoint in {killed / 'checkpoints'} yet, starting from scratch" in kill_err
    assert not (killed / 'final_metrics.json').exists()
    assert os.readlink(killed / 'checkpoints' / 'latest.pt') == 'iter_6.pt'

    resumed, resumed_out, resumed_err = _finish(_start(config, killed, '--resume'))
    assert resumed == 0, resumed_err[-3000:]
    assert 'at epoch 2, iteration 6 (step 2 of 4 of the epoch)' in resumed_err
    assert 'nothing to train' not in resumed_err and 'nothing left to train' not in resumed_err
    final_line = [line for line in out.splitlines() if line.startswith('Final metrics:')]
    assert final_line and [line for line in resumed_out.splitlines() if line.startswith('Final metrics:')] \
        == final_line
    assert json.loads((killed / 'final_metrics.json').read_text(encoding='utf-8')) \
        == json.loads((whole / 'final_metrics.json').read_text(encoding='utf-8'))
    records = read_jsonl(str(killed / 'metrics.jsonl'))
    assert records == read_jsonl(str(whole / 'metrics.jsonl'))
    assert [(r['mode'], r['epoch'], r['iteration']) for r in records] == [
        ('test', 1, 4), ('train', 1, 4), ('test', 2, 6), ('train', 2, 6)]


def test_a_stop_before_the_first_save_says_that_resume_starts_over_too(tmp_path):
    from types import SimpleNamespace

    from colossal_runner.train import stopped_at
    from colossal_runner.trainer.hooks import SaveCheckpointHook
    trainer = SimpleNamespace(states=dict(epoch=1, iteration=3),
                              hooks=[SaveCheckpointHook(checkpoint_dir=str(tmp_path))])
    assert stopped_at(trainer) == (f'at epoch 1, iteration 3; no checkpoint was saved yet in {tmp_path}: '
                                   f'a rerun starts over, with or without --resume')
