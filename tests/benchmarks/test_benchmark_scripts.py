"""The benchmark scripts run and their contenders do the same arithmetic (no timing is checked)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(script: str, *args: str, timeout: int = 240) -> dict:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


@pytest.mark.parametrize('nonfinite_loss', ['raise', 'off'])  # our rows with and without the loss check
def test_overhead_rows_end_on_identical_parameters_and_metrics(nonfinite_loss):
    result = _run('overhead.py', '--samples', '640', '--epochs', '2', '--repeats', '1', '--block', '4',
                  '--nonfinite-loss', nonfinite_loss)
    assert result['nonfinite_loss'] == nonfinite_loss
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


@pytest.mark.parametrize('nonfinite_loss', ['raise', 'off'])  # our default, and without the check
def test_pipeline_benchmark_losses_equal_and_activations_at_the_theory(nonfinite_loss):
    result = _run('pipeline.py', '--stages', '2', '--iters', '2', '--warmup', '1',
                  '--nonfinite-loss', nonfinite_loss)
    assert result['nonfinite_loss'] == nonfinite_loss
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


def test_instruction_counts_without_valgrind_count_python_calls_and_compare_with_a_git_revision():
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                            text=True, check=True).stdout.strip()
    result = _run('instructions.py', '--no-valgrind', '--only', 'engine', 'trainer', 'trainer-off',
                  '--warmup', '2', '--iterations', '8', '--against', 'HEAD', timeout=180)
    rows = result['rows']
    assert list(rows) == ['hand-written loop', 'Engine.step loop', 'Trainer.fit', 'Trainer.fit, check off',
                          'Engine.step loop at HEAD', 'Trainer.fit at HEAD']
    # without the loss check: no item() and math.isfinite per step (C calls), the metric adds tensors
    assert rows['Trainer.fit, check off']['python_calls'] < rows['hand-written loop']['python_calls'] + 40
    assert rows['Trainer.fit, check off']['c_calls'] != rows['Trainer.fit']['c_calls']
    assert not result['valgrind'] and 'instructions' not in rows['Trainer.fit']
    # Exact counts: the Engine and the Trainer add a few calls per iteration to the loop, no more.
    bare, engine, trainer = (rows[name]['python_calls'] for name in list(rows)[:3])
    assert bare < engine < trainer < bare + 40, rows
    # the package at HEAD is the same code under another name: the same calls
    assert rows['Trainer.fit at HEAD']['python_calls'] == trainer
    assert result['against']['commit'] == commit
    assert result['against']['rows'] == {'Engine.step loop': {'python_calls': 0.0},
                                         'Trainer.fit': {'python_calls': 0.0}}


def test_instruction_counts_say_what_to_install_without_valgrind(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'instructions.py'), '--only',
                           'trainer'], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PATH=str(tmp_path)))
    assert proc.returncode != 0 and not proc.stdout
    assert 'but the PATH has no valgrind, callgrind_control' in proc.stderr and '--no-valgrind' in proc.stderr


def test_callgrind_output_is_split_by_shared_object(tmp_path):
    """Self costs go to the object of their function; a call's inclusive cost is not the caller's."""
    sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
    try:
        from instructions import parse_callgrind, places
    finally:
        sys.path.pop(0)
    path = tmp_path / 'out'
    path.write_text('# callgrind format\nversion: 1\npositions: line\nevents: Ir\nsummary: 0\n\n'
                    'ob=(1) /usr/lib/libpython3.11.so.1.0\nfl=(1) ceval.c\nfn=(1) eval\n10 100\n+2 50\n'
                    'cob=(2) /opt/torch/lib/libtorch_cpu.so\ncfi=(2) ???\ncfn=(2) addmm\ncalls=3 0\n0 7000\n'
                    '* 25\n\nob=(2)\nfl=(2)\nfn=(2)\n0 7000\n\nob=(3) /lib/x86_64-linux-gnu/libc.so.6\n'
                    'fl=(3) ???\nfn=(3) malloc\n0 300\n\ntotals: 7475\n')
    costs = parse_callgrind(str(path))
    assert costs == {'/usr/lib/libpython3.11.so.1.0': 175, '/opt/torch/lib/libtorch_cpu.so': 7000,
                     '/lib/x86_64-linux-gnu/libc.so.6': 300, 'total': 7475}
    assert places(costs) == {'Python interpreter': 175, 'torch': 7000, 'C/C++ runtime': 300}


@pytest.mark.skipif(shutil.which('valgrind') is None or shutil.which('callgrind_control') is None,
                    reason='valgrind is not installed (the error path is tested above)')
@pytest.mark.timeout(400)
def test_instruction_counts_under_callgrind_add_up_and_do_the_same_arithmetic():
    result = _run('instructions.py', '--only', 'trainer', '--warmup', '2', '--iterations', '4', '--jobs', '2',
                  timeout=380)
    rows = result['rows']
    assert list(rows) == ['hand-written loop', 'Trainer.fit']
    assert result['valgrind'] and result['same_arithmetic']
    bare, trainer = rows.values()
    for row in rows.values():
        # the split by place adds up to the total, window minus window
        assert abs(sum(row['places'].values()) - row['instructions']) <= 0.001 * row['instructions'], row
        assert row['places']['torch'] > 0 and row['places']['Python interpreter'] > 0
    assert trainer['instructions'] > bare['instructions'] and trainer['ratio'] > 1 and bare['ratio'] == 1
