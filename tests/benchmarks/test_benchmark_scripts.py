"""The benchmark scripts run and their contenders do the same arithmetic (no timing is checked)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(script: str, *args: str, timeout: int = 240) -> dict:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_overhead_rows_end_on_identical_parameters_and_metrics():
    result = _run('overhead.py', '--samples', '640', '--epochs', '2', '--repeats', '1', '--block', '4')
    rows = result['rows']
    assert set(rows) >= {'hand-written loop', 'hand-written, again', 'hand-written + metrics',
                         'hand + grouped metrics', 'Engine.step loop', 'Trainer.fit, no hooks', 'Trainer.fit'}
    ours = {name: row for name, row in rows.items() if not row['other_framework']}
    assert len(ours) == 7  # other frameworks' rows appear only where they are installed
    assert len({row['final_loss'] for row in ours.values()}) == 1, rows
    assert all(row['identical_params'] for row in ours.values()), rows
    # the Trainer's metric hooks and both hand-written metric loops agree on every epoch's accuracy
    assert result['same_epoch_accuracy'] and len(rows['Trainer.fit']['epoch_accuracy']) == 2
    assert rows['Trainer.fit']['epoch_accuracy'] == rows['hand + grouped metrics']['epoch_accuracy']
    assert rows['Trainer.fit']['baseline'] == 'hand + grouped metrics'
    for row in rows.values():
        assert row['ms_per_iter'] > 0 and row['ratio'] > 0 and row['end_to_end_s'] > 0


def test_pipeline_benchmark_losses_equal_and_activations_at_the_theory():
    result = _run('pipeline.py', '--stages', '2', '--iters', '2', '--warmup', '1')
    assert [(r['stages'], r['schedule']) for r in result['rows']] == \
        [(2, 'gpipe'), (2, '1f1b'), (2, 'interleaved')]
    for row in result['rows']:
        assert row['losses_equal'], row
        if row['activations_theory'] is not None:
            assert row['activations_ours'] == row['activations_theory'], row
        assert row['activations_ours'] == row['activations_torch'], row
        assert row['ours_ms'] > 0 and row['torch_ms'] > 0


def test_overhead_against_a_git_revision_runs_that_package_in_the_same_lockstep():
    """--against REF imports the package as of REF under another name and pairs its Engine and
    Trainer.fit rows with ours, block by block."""
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                            text=True, check=True).stdout.strip()
    result = _run('overhead.py', '--samples', '320', '--epochs', '1', '--repeats', '1', '--block', '2',
                  '--against', 'HEAD')
    rows = result['rows']
    for name in ('Engine.step loop at HEAD', 'Trainer.fit at HEAD'):
        assert rows[name]['identical_params']
        assert rows[name]['final_loss'] == rows['Trainer.fit']['final_loss']
    assert rows['Trainer.fit at HEAD']['epoch_accuracy'] == rows['Trainer.fit']['epoch_accuracy']
    assert rows['Trainer.fit at HEAD']['baseline'] == 'hand + grouped metrics'
    assert result['against']['ref'] == 'HEAD' and result['against']['commit'] == commit
    assert set(result['against']['rows']) == {'Engine.step loop', 'Trainer.fit'}
    assert all(row['ratio'] > 0 for row in result['against']['rows'].values())


def test_overhead_against_an_unknown_revision_says_what_to_give():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'overhead.py'), '--against',
                           'no-such-revision'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and not proc.stdout
    assert "--against 'no-such-revision'" in proc.stderr and 'Give a commit, branch or tag' in proc.stderr
