"""tools/test.py on weights a plain torch loop saved: it evaluates them as it does its own checkpoint."""
import json
import os

import pytest
import torch

from colossal_runner.checkpoint import load_checkpoint

from .conftest import run_tool


@pytest.mark.parametrize('layout', ['state_dict', 'hand_loop'])
def test_test_tool_evaluates_bare_weights(trained, tmp_path, layout):
    work_dir, proc = trained
    assert proc.returncode == 0, proc.stderr
    latest = os.path.join(work_dir, 'checkpoints', 'latest.pt')
    weights = load_checkpoint(latest)['engine']['model']
    path = str(tmp_path / 'weights.pt')
    torch.save(weights if layout == 'state_dict' else {'epoch': 2, 'model': weights, 'optimizer': {}}, path)
    runs = [run_tool(['test.py', 'configs/digits/mlp.py', file, '--json']) for file in (latest, path)]
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    assert json.loads(runs[1].stdout) == json.loads(runs[0].stdout)
    assert 'loaded only model weights' in runs[1].stderr
