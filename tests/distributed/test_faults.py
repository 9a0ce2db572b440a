"""A failing rank takes the whole job down quickly and is named; config hashing."""
import textwrap
import time

import pytest

from colossal_runner.distributed import config_hash
from colossal_runner.testing import free_port

from ._procs import ForkedRank, collect, describe, start_ranks

TRAIN_SCRIPT = textwrap.dedent('''
    import sys, time
    import torch
    from colossal_runner.distributed import launch, teardown, wrap_data_parallel
    rank, world, port, mode, timeout = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], \\
        float(sys.argv[5])
    torch.set_num_threads(1)
    context = launch(dict(dist_timeout=timeout), rank, world, '127.0.0.1', port)
    model = wrap_data_parallel(torch.nn.Linear(4, 2), context)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(100000):
        if step == 3 and rank == 1:
            if mode == 'raise':
                raise RuntimeError('boom in step 3')
            if mode == 'caught':  # a tool that catches, prints one line and exits itself
                from colossal_runner.distributed import report_failure
                report_failure(ValueError('bad batch in step 3'))
                sys.exit(2)
            time.sleep(600)  # hangs outside any collective
        loss = model(torch.randn(8, 4)).pow(2).mean()
        loss.backward()  # DDP all-reduce: rank 0 waits here for rank 1
        optimizer.step()
        optimizer.zero_grad()
    teardown()
''')


@pytest.fixture(scope='module')
def fault_runs(tmp_path_factory):
    """The fault scenarios, run together so that their start-ups overlap.

    'raise' runs the script in fresh interpreters, exactly as a user would; the others
    run the same script in forked copies of this process (``ForkedRank``: same uncaught-
    exception handling, no interpreter start-up) to keep the test fast.
    """
    tmp = tmp_path_factory.mktemp('faults')
    script = tmp / 'train.py'
    script.write_text(TRAIN_SCRIPT)
    # 'raise': the process-group timeout is long (120 s), so only the fault watcher can end rank 0
    # in time. 'hang': rank 1 hangs without raising; rank 0's collective times out after 3 s.
    # 'caught': rank 1 catches its error and exits with sys.exit after report_failure.
    scenarios = {'raise': 120, 'hang': 3, 'caught': 120}
    ports = {mode: str(free_port()) for mode in scenarios}  # one rendezvous port per job
    args = {mode: [[str(r), '2', ports[mode], mode, str(t)] for r in range(2)]
            for mode, t in scenarios.items()}
    start = time.monotonic()
    procs = start_ranks(str(script), args['raise'], [{} for _ in range(2)])
    forked = {mode: [ForkedRank(str(script), a, str(tmp), f'{mode}{r}') for r, a in enumerate(args[mode])]
              for mode in ('hang', 'caught')}
    runs = {'raise': collect(procs, timeout=60, start=start)}
    runs.update({mode: [f.result(start + 60, start) for f in ranks] for mode, ranks in forked.items()})
    return runs


def test_rank_raising_mid_step_stops_the_job_and_is_named(fault_runs):
    results = fault_runs['raise']
    info = describe(results)
    assert all(r.returncode not in (0, None) for r in results), info
    assert 'RuntimeError: boom in step 3' in results[1].stderr, info
    assert 'rank 0 is stopping because rank 1 failed: RuntimeError: boom in step 3' in results[0].stderr, info


def test_hanging_rank_hits_the_timeout_and_the_rest_stop(fault_runs):
    # Rank 0 reports its timeout, and rank 1's watcher ends rank 1 instead of leaving it asleep.
    results = fault_runs['hang']
    info = describe(results)
    assert all(r.returncode not in (0, None) for r in results), info
    assert 'rank 1 is stopping because rank 0 failed' in results[1].stderr, info
    assert 'Timed out' in results[0].stderr or 'timeout' in results[0].stderr.lower(), info


def test_caught_error_reported_by_hand_stops_the_others(fault_runs):
    results = fault_runs['caught']
    info = describe(results)
    assert results[1].returncode == 2, info
    assert results[0].returncode not in (0, None), info
    expected = 'rank 0 is stopping because rank 1 failed: ValueError: bad batch in step 3'
    assert expected in results[0].stderr, info


class _Obj:
    pass


def test_config_hash_ignores_key_order_and_object_addresses():
    a = dict(model=dict(type='MLP', hidden=[8, 8]), optimizer=dict(lr=0.1, type='SGD'), obj=_Obj(),
             fn=len)
    b = dict(optimizer=dict(type='SGD', lr=0.1), obj=_Obj(), fn=len, model=dict(hidden=[8, 8], type='MLP'))
    assert config_hash(a) == config_hash(b)
    c = dict(b, optimizer=dict(type='SGD', lr=0.2))
    assert config_hash(a) != config_hash(c)
    assert config_hash(dict(a, model=dict(type='MLP', hidden=[8, 9]))) != config_hash(a)


def test_report_failure_without_watcher_is_a_no_op():
    from colossal_runner.distributed import report_failure
    assert report_failure(RuntimeError('x')) is False


@pytest.mark.parametrize('bad', [0, -1, 'ten', True])
def test_bad_timeout_is_refused(bad):
    from colossal_runner.distributed import setup_parallel
    with pytest.raises(ValueError, match='timeout must be a positive number of seconds'):
        setup_parallel(dict(dist_timeout=bad))
