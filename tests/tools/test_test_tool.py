"""tools/test.py as a real subprocess, on the checkpoint the training tool wrote."""
import json
import os

from .conftest import run_tool


def test_test_tool_reproduces_the_training_runs_test_metrics(resumed):
    work_dir, proc = resumed
    assert proc.returncode == 0, proc.stderr
    final = json.load(open(os.path.join(work_dir, 'final_metrics.json')))  # of epoch 3, the last
    before = sorted(os.listdir(work_dir))
    out = run_tool(['test.py', 'configs/digits/mlp.py', os.path.join(work_dir, 'checkpoints', 'latest.pt'),
                    '--json'])
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert abs(metrics['Accuracy'] - final['test']['Accuracy']) < 1e-6
    assert abs(metrics['Loss'] - final['test']['Loss']) < 1e-5
    assert sorted(os.listdir(work_dir)) == before  # evaluation writes nothing
