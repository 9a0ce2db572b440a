"""Style stays consistent: ruff (configured in pyproject.toml) passes on the whole tree."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    targets = [p for p in ('colossal_runner', 'tools', 'tests', 'benchmarks', 'configs', 'setup.py')
               if (ROOT / p).exists()]
    proc = subprocess.run([sys.executable, '-m', 'ruff', 'check', *targets], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f'ruff found problems:\n{proc.stdout}\n{proc.stderr}'
