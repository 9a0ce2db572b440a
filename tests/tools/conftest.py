import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
E2E = os.path.join(ROOT, 'tests', 'data', 'e2e')


def run_tool(args, cwd=None, timeout=180, module=False):
    """Run ``tools/<args[0]>`` (or ``python -m colossal_runner.<name>``) as a real subprocess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([E2E, ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    tool, rest = args[0], list(args[1:])
    if module:
        cmd = [sys.executable, '-m', f'colossal_runner.{tool[:-3]}'] + rest
    else:
        cmd = [sys.executable, os.path.join(ROOT, 'tools', tool)] + rest
    return subprocess.run(cmd, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def run_tools_at_once(arg_lists, cwd=None, timeout=180):
    """:func:`run_tool` for several independent runs, started together (each starts its own
    interpreter and imports torch: a few seconds each, spent side by side on a multi-core machine)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([E2E, ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'tools', args[0])] + list(args[1:]),
                              cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for args in arg_lists]
    results = []
    for proc, args in zip(procs, arg_lists):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for each in procs:
                each.kill()
            raise
        results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    return results


@pytest.fixture
def fresh_logger():
    """For tools run through their main() in this process: the console handler holds the
    sys.stderr of its time, and capsys swaps sys.stderr per test."""
    def clear():
        logger = logging.getLogger('colossal_runner')
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    clear()
    yield
    clear()


def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """One short real training run of configs/digits/mlp.py (2 epochs), shared by the tool tests."""
    work_dir = str(tmp_path_factory.mktemp('mlp_run'))
    proc = run_tool(['train.py', 'configs/digits/mlp.py', '--work-dir', work_dir, '--no-progress',
                     '--cfg-options', 'max_epochs=2', 'optimizer.lr=0.005'], module=True)
    return work_dir, proc


@pytest.fixture(scope='session')
def resumed(trained, tmp_path_factory):
    """A copy of the trained run resumed (--resume, newest checkpoint) for a third epoch."""
    trained_dir, proc = trained
    assert proc.returncode == 0, proc.stderr
    work_dir = str(tmp_path_factory.mktemp('resumed') / 'mlp')
    shutil.copytree(trained_dir, work_dir, symlinks=True)
    proc = run_tool(['train.py', 'configs/digits/mlp.py', '--work-dir', work_dir, '--no-progress',
                     '--resume', '--cfg-options', 'max_epochs=3', 'optimizer.lr=0.005'])
    return work_dir, proc
