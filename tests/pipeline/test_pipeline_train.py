"""End to end: torchrun with 2 pipeline stages trains, evaluates, checkpoints per stage and resumes."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(config: str, work_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'tools' / 'train.py'), str(ROOT / config), '--launcher', 'torch',
           '--work-dir', str(work_dir), '--no-progress', *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc


@pytest.mark.timeout(320)
def test_mlp_pipeline_trains_checkpoints_each_stage_and_resumes(tmp_path):
    work = tmp_path / 'mlp'
    _torchrun('configs/digits/mlp_pipeline.py', work, '--cfg-options', 'max_epochs=1')
    ckpts = work / 'checkpoints'
    assert (ckpts / 'epoch_1_stage0.pt').is_file() and (ckpts / 'epoch_1_stage1.pt').is_file()
    first = json.loads((work / 'final_metrics.json').read_text())
    assert first['test']['Loss'] < math.log(10)  # better than guessing among 10 classes
    assert 0.0 <= first['test']['Accuracy'] <= 1.0
    # tools/test.py on one stage's file of it: each stage evaluates its own file of epoch 1
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'tools' / 'test.py'), str(ROOT / 'configs/digits/mlp_pipeline.py'),
           str(ckpts / 'epoch_1_stage0.pt'), '--launcher', 'torch', '--json']
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tested = json.loads(proc.stdout.strip().splitlines()[-1])
    assert tested['Accuracy'] == pytest.approx(first['test']['Accuracy'])

    proc = _torchrun('configs/digits/mlp_pipeline.py', work, '--resume', '--cfg-options', 'max_epochs=2')
    assert 'resumed from' in proc.stdout + proc.stderr and 'at epoch 1' in proc.stdout + proc.stderr
    assert (ckpts / 'epoch_2_stage0.pt').is_file() and (ckpts / 'epoch_2_stage1.pt').is_file()
    second = json.loads((work / 'final_metrics.json').read_text())
    assert second['train']['Loss'] < first['train']['Loss']  # epoch 2 continued from the trained weights


@pytest.mark.timeout(160)
def test_tiny_gpt_pipeline_trains_and_evaluates(tmp_path):
    work = tmp_path / 'gpt'
    # 30k characters: 13 steps of 32 sequences, and 8-sequence test batches (drop_last) so that a test set
    # of 3k characters still gives batches
    _torchrun('configs/text/gpt_tiny_pipeline.py', work, '--cfg-options', 'max_epochs=1',
              'data.train.dataset.max_chars=30000', 'data.test.dataset.max_chars=30000',
              'data.test.dataloader.batch_size=8')
    assert (work / 'checkpoints' / 'epoch_1_stage0.pt').is_file()
    metrics = json.loads((work / 'final_metrics.json').read_text())
    assert math.isfinite(metrics['train']['Loss']) and math.isfinite(metrics['test']['Loss'])
