"""A failing rank takes the whole job down quickly and is named; config hashing."""
import signal
import textwrap
import time

import pytest

from colossal_runner.config import ConfigError

from colossal_runner.distributed import config_hash
from colossal_runner.distributed.faults import is_communication_error, watcher_settings
from colossal_runner.testing import free_port

from ._procs import ForkedRank, collect, describe, start_ranks

HEARTBEAT = 2.0  # seconds: fault_watch.heartbeat_timeout in these jobs
TRAIN_SCRIPT = textwrap.dedent('''
    import os, signal, sys, time
    import torch
    from colossal_runner.distributed import launch, teardown, wrap_data_parallel
    rank, world, port, mode, timeout = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], \\
        float(sys.argv[5])
    torch.set_num_threads(1)
    cfg = dict(dist_timeout=timeout, fault_watch=dict(heartbeat_timeout=HEARTBEAT))
    context = launch(cfg, rank, world, '127.0.0.1', port)
    if mode == 'hangp2p':  # pipeline stages: rank 0 sends to rank 1, which hangs and never receives
        from colossal_runner.distributed.p2p import P2PCommunicator
        if rank == 1:
            time.sleep(600)
        comm = P2PCommunicator([0, 1], torch.device('cpu'))
        comm.send(torch.ones(4), peer=1, key=None)
        comm.wait_sends()
    model = wrap_data_parallel(torch.nn.Linear(4, 2), context)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    victim = 0 if mode in ('kill0', 'late1') else 1
    for step in range(100000):
        if step == 3 and mode.startswith('late'):  # a normal end; the other rank ends 2.5 heartbeats later
            if rank != victim:
                time.sleep(2.5 * HEARTBEAT)
            break
        if step == 3 and rank == victim:
            if mode.startswith('kill'):  # dies without a word, as under the OOM killer
                os.kill(os.getpid(), signal.SIGKILL)
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
    script.write_text(TRAIN_SCRIPT.replace('HEARTBEAT', str(HEARTBEAT)))
    # 'raise': the process-group timeout is long (120 s), so only the fault watcher can end rank 0
    # in time. 'hang': rank 1 hangs without raising; rank 0's collective times out after 3 s.
    # 'hangp2p': the same with a pipeline send from rank 0 to rank 1 instead of a collective.
    # 'caught': rank 1 catches its error and exits with sys.exit after report_failure.
    # 'kill' / 'kill0': rank 1 / rank 0 (which hosts the store) is SIGKILLed mid-training.
    # 'late0' / 'late1': a normal end where rank 0 / rank 1 finishes long after the other one.
    scenarios = {'raise': 120, 'hang': 3, 'hangp2p': 3, 'caught': 120, 'kill': 120, 'kill0': 120,
                 'late0': 120, 'late1': 120}
    ports = {mode: str(free_port()) for mode in scenarios}  # one rendezvous port per job
    args = {mode: [[str(r), '2', ports[mode], mode, str(t)] for r in range(2)]
            for mode, t in scenarios.items()}
    start = time.monotonic()
    procs = start_ranks(str(script), args['raise'], [{} for _ in range(2)])
    forked = {mode: [ForkedRank(str(script), a, str(tmp), f'{mode}{r}') for r, a in enumerate(args[mode])]
              for mode in scenarios if mode != 'raise'}
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
    # rank 0's timeout is not rank 0's fault: the message says what it waited for
    assert 'rank 1 is stopping because rank 0 timed out waiting for a peer: ' in results[1].stderr, info
    assert 'Timed out' in results[0].stderr or 'timeout' in results[0].stderr.lower(), info


def test_a_pipeline_transfer_timeout_names_the_rank_it_waited_for(fault_runs):
    results = fault_runs['hangp2p']
    info = describe(results)
    assert all(r.returncode not in (0, None) for r in results), info
    assert 'send operation to complete (send to rank 1)' in results[0].stderr, info
    assert ('rank 1 is stopping because rank 0 timed out waiting for rank 1 (this rank): '
            in results[1].stderr), info


def test_caught_error_reported_by_hand_stops_the_others(fault_runs):
    results = fault_runs['caught']
    info = describe(results)
    assert results[1].returncode == 2, info
    assert results[0].returncode not in (0, None), info
    expected = 'rank 0 is stopping because rank 1 failed: ValueError: bad batch in step 3'
    assert expected in results[0].stderr, info


@pytest.mark.parametrize('mode, victim', [('kill', 1), ('kill0', 0)])
def test_a_killed_rank_is_named_by_the_survivor(fault_runs, mode, victim):
    # Rank 0 hosts the rendezvous store: its death is told by the store vanishing, not a heartbeat.
    results = fault_runs[mode]
    info = describe(results)
    survivor = 1 - victim
    assert results[victim].returncode == -signal.SIGKILL, info
    assert results[survivor].returncode == 1, info
    named = f'rank {survivor} is stopping because rank {victim} stopped responding ('
    assert named in results[survivor].stderr, info
    assert 'it was probably killed' in results[survivor].stderr, info
    assert f'because rank {survivor}' not in results[survivor].stderr, info  # the survivor blames nobody else
    assert results[survivor].seconds < 50, info


@pytest.mark.parametrize('mode', ['late0', 'late1'])
def test_a_rank_that_finished_normally_is_not_taken_for_a_dead_one(fault_runs, mode):
    # One rank ends (teardown stops its heartbeat) while the other keeps going for longer than
    # the heartbeat timeout: both exit 0, nobody is declared lost.
    results = fault_runs[mode]
    info = describe(results)
    assert [r.returncode for r in results] == [0, 0], info
    assert 'stopped responding' not in results[0].stderr + results[1].stderr, info


def test_communication_errors_are_told_from_a_ranks_own_errors():
    peer_closed = RuntimeError('[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:14766')
    assert is_communication_error(peer_closed)
    assert is_communication_error(RuntimeError('Timed out waiting 3000ms for recv operation to complete'))
    assert not is_communication_error(RuntimeError('boom in step 3'))
    assert not is_communication_error(ValueError('bad batch: connection closed'))


def test_watcher_settings_defaults_and_errors():
    assert watcher_settings(False, 100.0) is None and watcher_settings(None, None) is None
    assert watcher_settings(True, None) == dict(heartbeat_timeout=10.0, poll_interval=0.5)
    assert watcher_settings(True, 6.0)['heartbeat_timeout'] == 3.0  # named before the collectives time out
    assert watcher_settings(dict(heartbeat_timeout=4, interval=0.25), 1800.0) == dict(heartbeat_timeout=4,
                                                                                     poll_interval=0.25)
    with pytest.raises(ConfigError, match=r"key fault_watch.heartbeat: unknown keys \['heartbeat'\] in "
                                          r"fault_watch; did you mean 'heartbeat_timeout'\? expected"):
        watcher_settings(dict(heartbeat=3), None)
    with pytest.raises(ConfigError, match='key fault_watch.heartbeat_timeout: fault_watch.heartbeat_timeout '
                                          'must be a positive number'):
        watcher_settings(dict(heartbeat_timeout=-1), None)
    with pytest.raises(ConfigError, match='at least twice the interval'):
        watcher_settings(dict(heartbeat_timeout=1, interval=1), None)
    with pytest.raises(ConfigError, match='key fault_watch: fault_watch must be True, False or a dict'):
        watcher_settings('yes', None)


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


def test_bad_fault_watch_is_refused_at_setup_even_with_one_process():
    from colossal_runner.distributed import setup_parallel
    with pytest.raises(ValueError, match='fault_watch.interval must be a positive number of seconds, got 0'):
        setup_parallel(dict(fault_watch=dict(interval=0)))


def test_fault_watch_and_dist_timeout_errors_name_the_config_file_and_key(tmp_path):
    from colossal_runner.config import Config
    from colossal_runner.distributed import setup_parallel
    path = tmp_path / 'run.py'
    path.write_text('fault_watch = dict(heartbeat=1)\n')
    with pytest.raises(ConfigError, match=f"config {path}, key fault_watch.heartbeat: unknown keys"):
        setup_parallel(Config.fromfile(str(path)))
    path.write_text("dist_timeout = 'abc'\n")
    with pytest.raises(ConfigError, match=f"config {path}, key dist_timeout: the process-group timeout"):
        setup_parallel(Config.fromfile(str(path)))
