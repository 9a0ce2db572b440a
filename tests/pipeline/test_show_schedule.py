"""tools/show_schedule.py run as a subprocess, as a user would."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'show_schedule.py'), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_1f1b_timeline():
    proc = _run('--schedule', '1f1b', '--stages', '4', '--microbatches', '8', '--actions')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == '1f1b: 4 stages, 8 microbatches'
    rows = [line for line in lines if line.startswith('stage ') and ' | ' in line]
    assert len(rows) == 4
    cells = [row.split(' | ')[1].split() for row in rows]
    assert cells[0][:4] == ['F0', 'F1', 'F2', 'F3']  # stage 0 warms up with P - 1 = 3 forwards, then one more
    assert cells[3][3:6] == ['F0', 'B0', 'F1']  # the last stage alternates at once
    assert 'bubble: 27.3%' in proc.stdout  # (P - 1) / (M + P - 1) = 3 / 11
    assert 'peak microbatches in flight per stage: [4, 3, 2, 1]' in proc.stdout
    assert 'stage 3: RECV_F0@2 F0 B0 SEND_B0@2' in proc.stdout


def test_interleaved_timeline():
    proc = _run('--schedule', 'interleaved', '--stages', '2', '--microbatches', '4', '--chunks', '2',
                '--backward-cost', '2')
    assert proc.returncode == 0, proc.stderr
    assert '2 chunks per stage' in proc.stdout and 'F0c1' in proc.stdout and 'B3c1' in proc.stdout
    assert '~' in proc.stdout  # a backward spans two time units


def test_bad_arguments_are_explained():
    proc = _run('--schedule', 'interleaved', '--stages', '4', '--microbatches', '6')
    assert proc.returncode == 2
    assert ('--schedule interleaved needs --microbatches to be a multiple of --stages 4; got 6. Use 4 or 8.'
            in proc.stderr)
    for flag, what in (('--stages', 'pipeline stages'), ('--microbatches', 'microbatches per batch')):
        proc = _run(flag, '0')  # the flags are named, not the plan builders' num_stages / num_microbatches
        assert proc.returncode == 2 and f'error: {flag} must be a positive int ({what}), got 0' in proc.stderr
    proc = _run('--schedule', '1f1b', '--chunks', '2')
    assert proc.returncode == 2 and '--chunks applies to --schedule interleaved only' in proc.stderr
    proc = _run('--schedule', 'zigzag')
    assert proc.returncode == 2 and "invalid choice: 'zigzag'" in proc.stderr


def test_1f1b_with_fewer_microbatches_than_stages_is_shown_as_the_runtime_runs_it():
    proc = _run('--schedule', '1f1b', '--stages', '4', '--microbatches', '2')
    assert proc.returncode == 0, proc.stderr
    assert 'bubble: 60.0%' in proc.stdout
    assert 'peak microbatches in flight per stage: [2, 2, 2, 1]' in proc.stdout


def test_the_tool_lists_the_same_schedules_as_the_plan_module():
    import importlib.util

    from colossal_runner.engine.schedule.plan import SCHEDULE_NAMES
    spec = importlib.util.spec_from_file_location('show_schedule', ROOT / 'tools' / 'show_schedule.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.SCHEDULE_NAMES == SCHEDULE_NAMES
