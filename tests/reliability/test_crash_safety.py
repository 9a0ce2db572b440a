"""SIGKILL tools/train.py at random moments, and in the middle of a checkpoint save, then --resume:
the run always completes, and its final parameters equal the uninterrupted run's."""
import glob
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from colossal_runner.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPERS = os.path.join(ROOT, 'tests', 'data', 'reliability')
pytestmark = pytest.mark.timeout(400)

CONFIG = """
model = dict(type='MLP', in_features=8, hidden=[16], num_classes=3, dropout=0.1)
loss = dict(type='CrossEntropyLoss')
optimizer = dict(type='SGD', lr=0.1, momentum=0.9)
lr_scheduler = dict(type='CosineAnnealingWarmupLR', warmup_epochs=1)
data = dict(train=dict(dataset=dict(type='SyntheticClassification', num_samples=96, num_features=8,
                                    num_classes=3),
                       dataloader=dict(batch_size=8, shuffle=True)))
hooks = [dict(type='LossHook'), dict(type='SaveCheckpointHook', interval=1, by_epoch=False, max_keep=3)]
max_epochs = 3
seed = 5
custom_imports = dict(imports=['crash_points'])
"""
TOTAL = 3 * 96 // 8


def start(config, work_dir, resume, env_extra=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HELPERS, ROOT, os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1', **(env_extra or {}))
    args = [sys.executable, os.path.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
            '--no-progress'] + (['--resume'] if resume else [])
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def checkpoints(work_dir):
    return sorted(glob.glob(os.path.join(work_dir, 'checkpoints', 'iter_*.pt')))


def wait_for(predicate, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate() or proc.poll() is not None:
            return
        time.sleep(0.01)
    raise AssertionError('timed out waiting for the training process')


def kill(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def final_state(work_dir):
    state = load_checkpoint(os.path.join(work_dir, 'checkpoints', f'iter_{TOTAL}.pt'))
    assert state['states']['iteration'] == TOTAL
    return state['engine']


def test_killed_at_random_moments_and_resumed_equals_the_uninterrupted_run(tmp_path):
    config = str(tmp_path / 'crash.py')
    with open(config, 'w', encoding='utf-8') as f:
        f.write(CONFIG)
    rng = random.Random(20261129)
    reference_dir, crashed = str(tmp_path / 'reference'), str(tmp_path / 'crashed')
    with ThreadPoolExecutor(1) as pool:  # the uninterrupted run, alongside the crashing one
        reference = pool.submit(lambda: start(config, reference_dir, False).communicate(timeout=300))
        kills, log = 0, []
        plan = [('save', 4), ('random', None), ('save', 2), ('random', None)]
        for attempt in range(len(plan) + 3):
            how, at = plan[attempt] if attempt < len(plan) else ('none', None)
            marker = str(tmp_path / f'saving{attempt}')
            env = dict(CR_SLOW_SAVE_AT=str(at), CR_MARKER=marker) if how == 'save' else {}
            proc = start(config, crashed, resume=attempt > 0, env_extra=env)
            if how == 'save':
                wait_for(lambda: os.path.exists(marker), proc)
            elif how == 'random':  # some time after this attempt's first new checkpoint
                seen = set(checkpoints(crashed))
                wait_for(lambda: set(checkpoints(crashed)) - seen, proc)
                time.sleep(rng.uniform(0.0, 0.5))
            if how != 'none':
                code, err = kill(proc)
                log.append((how, code, err[-2000:]))
                kills += code == -signal.SIGKILL
                if code == -signal.SIGKILL:
                    # No torn file is ever taken for a checkpoint: every complete-looking name loads.
                    for path in checkpoints(crashed):
                        load_checkpoint(path)
                    assert glob.glob(os.path.join(crashed, 'checkpoints', '.*.tmp')) or how != 'save'
                    continue
            else:
                err = proc.communicate(timeout=300)[1]
                code = proc.returncode
            assert code == 0, f'attempt {attempt} ({how}) failed: {err[-3000:]}'
            break
        out, err = reference.result()
    assert 'Final metrics' in out, err[-3000:]
    assert kills >= 3, f'the process ended before it could be killed: {log}'
    want, got = final_state(reference_dir), final_state(crashed)
    for name, tensor in want['model'].items():
        assert torch.equal(tensor, got['model'][name]), name
    assert want['lr_scheduler'] == got['lr_scheduler']
    for a, b in zip(want['optimizer']['state'].values(), got['optimizer']['state'].values()):
        assert torch.equal(a['momentum_buffer'], b['momentum_buffer'])
