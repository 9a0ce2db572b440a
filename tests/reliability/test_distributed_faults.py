"""One rank SIGKILLed in the middle of a step: every other rank exits non-zero within the
process-group timeout (none hangs) naming the killed rank, and the run resumes from its last
checkpoint to the same result."""
import os
import signal
import time

import pytest
import torch

from colossal_runner.testing import free_port

from ..distributed._procs import collect, describe, start_ranks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'tests', 'data', 'reliability', 'dp_train.py')
PG_TIMEOUT = 20  # seconds: the configured dist_timeout
pytestmark = pytest.mark.timeout(300)


def launch(world, ckpt_dir, victim, kill_at, resume, out):
    port = str(free_port())
    args = [[str(r), str(world), port, ckpt_dir, str(victim), str(kill_at), str(PG_TIMEOUT), resume, out]
            for r in range(world)]
    return start_ranks(SCRIPT, args, [{} for _ in range(world)], cwd=ROOT)


def test_a_killed_rank_stops_the_others_and_the_run_resumes(tmp_path):
    start = time.monotonic()
    runs = {  # started together so that their start-ups overlap
        'reference': launch(2, str(tmp_path / 'ref'), -1, -1, '0', str(tmp_path / 'ref.pt')),
        'kill2': launch(2, str(tmp_path / 'two'), 1, 7, '0', str(tmp_path / 'unused2.pt')),
        'kill4': launch(4, str(tmp_path / 'four'), 2, 5, '0', str(tmp_path / 'unused4.pt')),
    }
    results = {name: collect(procs, timeout=150, start=start) for name, procs in runs.items()}
    assert all(r.returncode == 0 for r in results['reference']), describe(results['reference'])
    for name, victim in (('kill2', 1), ('kill4', 2)):
        ranks = results[name]
        info = describe(ranks)
        assert ranks[victim].returncode == -signal.SIGKILL, info
        for rank, result in enumerate(ranks):
            if rank != victim:
                assert result.returncode not in (0, None), f'rank {rank} did not stop: {info}'
                # The killed rank is named by every survivor, not whichever survivor noticed first.
                named = f'rank {rank} is stopping because rank {victim} stopped responding (no heartbeat for'
                assert named in result.stderr, f'rank {rank} did not name rank {victim}: {info}'
                assert 'it was probably killed' in result.stderr, info
        # Gloo sees the closed connection; nobody waits for the full timeout plus start-up.
        slowest = max(r.seconds for r in ranks)
        assert slowest < PG_TIMEOUT + 60, info

    assert os.listdir(tmp_path / 'two'), 'no checkpoint before the kill'
    procs = launch(2, str(tmp_path / 'two'), -1, -1, '1', str(tmp_path / 'resumed.pt'))
    resumed = collect(procs, timeout=150)
    assert all(r.returncode == 0 for r in resumed), describe(resumed)
    want, got = torch.load(tmp_path / 'ref.pt'), torch.load(tmp_path / 'resumed.pt')
    for a, b in zip(want, got):
        assert torch.equal(a, b)
