"""tools/test.py on weights a plain torch loop saved: it evaluates them as it does its own checkpoint."""
import json
import os

import torch

from colossal_runner.checkpoint import load_checkpoint

from .conftest import run_tools_at_once


def test_test_tool_evaluates_bare_weights(trained, tmp_path):
    work_dir, proc = trained
    assert proc.returncode == 0, proc.stderr
    latest = os.path.join(work_dir, 'checkpoints', 'latest.pt')
    weights = load_checkpoint(latest)['engine']['model']
    files = [latest]
    hand_loop = {'epoch': 2, 'model': weights, 'optimizer': {}}
    for layout, content in (('state_dict', weights), ('hand_loop', hand_loop)):
        files.append(str(tmp_path / f'{layout}.pt'))
        torch.save(content, files[-1])
    runs = run_tools_at_once([['test.py', 'configs/digits/mlp.py', file, '--json'] for file in files])
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    tested = [json.loads(run.stdout) for run in runs]
    assert tested[0].pop('checkpoint') == dict(path=os.path.realpath(latest), epoch=2, iteration=90)
    # the same metrics as from the run's own checkpoint
    for file, run, metrics in zip(files[1:], runs[1:], tested[1:]):
        assert metrics.pop('checkpoint') == dict(path=file, epoch=None, iteration=None)
        assert metrics == tested[0]
        assert 'loaded only model weights' in run.stderr
        assert f'evaluating {file} (bare model weights, no epoch or iteration)' in run.stderr
