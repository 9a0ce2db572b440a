"""End to end: ``torchrun --nproc_per_node=2 tools/train.py ... --launcher torch`` trains and resumes.

Two data-parallel ranks: one rank logs, one set of checkpoints is written, ``--resume``
continues from it. The slowest test of the area (two torchrun jobs); kept as one test.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(work_dir: Path, *extra: str, max_epochs: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'tools' / 'train.py'), str(ROOT / 'configs' / 'digits' / 'mlp.py'),
           '--launcher', 'torch',
           '--work-dir', str(work_dir), '--no-progress', '--cfg-options', f'max_epochs={max_epochs}', *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(520)
def test_torchrun_two_ranks_train_log_once_and_resume(tmp_path):
    work_dir = tmp_path / 'work'
    first = _torchrun(work_dir, max_epochs=1)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-4000:]
    assert 'world_size=2, pipeline=1, data=2' in out, out[-4000:]
    assert out.count('Final metrics:') == 1, out[-4000:]  # only the logging rank prints
    assert out.count('Epoch 1/1 train') == 1, out[-4000:]  # and logs
    assert len(list(work_dir.glob('*.log'))) == 1
    checkpoints = sorted(p.name for p in work_dir.rglob('*.pt'))
    # One set, written by rank 0 only: no per-rank or per-stage copies (latest.pt may point to it).
    assert [n for n in checkpoints if n.startswith('epoch_')] == ['epoch_1.pt'], checkpoints
    assert set(checkpoints) <= {'epoch_1.pt', 'latest.pt'}, checkpoints
    metrics = json.loads((work_dir / 'final_metrics.json').read_text())
    assert 0.0 <= metrics['test']['Accuracy'] <= 1.0

    second = _torchrun(work_dir, '--resume', max_epochs=2)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert out.count('resumed from') == 1, out[-4000:]
    assert 'Epoch 1/2 train' not in out and out.count('Epoch 2/2 train') == 1, out[-4000:]
    checkpoints = sorted(p.name for p in work_dir.rglob('*.pt'))
    assert [n for n in checkpoints if n.startswith('epoch_')] == ['epoch_1.pt', 'epoch_2.pt'], checkpoints


@pytest.mark.timeout(200)
def test_torchrun_without_launcher_torch(tmp_path):
    """Several processes: refused before anything is written, with the fix. (One process under
    torchrun without it still runs: tests/distributed/test_launch.py, with torchrun's variables.)"""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'tools' / 'train.py'), str(ROOT / 'tests' / 'data' / 'e2e' / 'tiny.py'),
           '--work-dir', str(tmp_path / 'two'), '--no-progress']
    two = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=90)
    out = two.stdout + two.stderr
    assert two.returncode != 0, out[-4000:]
    # Both ranks refuse; torchrun may stop the second before it prints, once the first has exited.
    assert 'but without --launcher torch' in out and 'Add --launcher torch' in out, out[-4000:]
    assert not list((tmp_path / 'two').rglob('*.pt')), out[-4000:]
