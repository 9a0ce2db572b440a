"""mmcv's command, ``python -m torch.distributed.launch --nproc_per_node=2 tools/train.py CONFIG
--launcher pytorch``, runs: the ``--local-rank=N`` that launcher adds is accepted (and ignored:
LOCAL_RANK is in the environment too)."""
import subprocess
import sys
from pathlib import Path

import pytest

from colossal_runner import test as test_cli
from colossal_runner import train as train_cli
from colossal_runner.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / 'tests' / 'data' / 'e2e' / 'tiny.py')


@pytest.mark.parametrize('parse', [train_cli.parse_args, lambda argv: test_cli.parse_args(argv + ['ckpt'])])
@pytest.mark.parametrize('flag', ['--local-rank=1', '--local_rank=1'])
def test_both_spellings_of_the_launchers_local_rank_are_accepted(parse, flag):
    args = parse([TINY, flag, '--launcher', 'pytorch'])
    assert args.local_rank == 1 and args.launcher == 'pytorch'


@pytest.mark.timeout(200)
def test_torch_distributed_launch_with_the_pytorch_launcher_trains(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.launch', '--nproc_per_node=2',
           f'--master_port={free_port()}', str(ROOT / 'tools' / 'train.py'), TINY, '--launcher', 'pytorch',
           '--work-dir', str(tmp_path / 'w'),
           '--no-progress', '--cfg-options', 'max_epochs=1']
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'unrecognized arguments' not in out
    assert 'ParallelContext(rank=0, world_size=2, pipeline=1, data=2' in out, out[-4000:]
    assert out.count('Final metrics:') == 1, out[-4000:]
    assert (tmp_path / 'w' / 'checkpoints' / 'epoch_1.pt').is_file()
