"""Launchers: environment parsing (torchrun, SLURM, OpenMPI), real start-up and teardown, config check."""
import functools

import pytest
import torch
import torch.distributed as dist

from colossal_runner.config import ConfigError
from colossal_runner.distributed import (get_context, get_device, launch_from_openmpi, launch_from_slurm,
                                         launch_from_torch, setup_parallel, teardown)
from colossal_runner.testing import DistributedTestError, free_port, run_distributed

from ._procs import fork_ranks

@pytest.fixture(autouse=True)
def _reset_context():
    yield
    teardown()  # in-process tests set the current context; leave the default for other tests


def _start(launcher, pipeline, port, rank):
    cfg = dict(parallel=dict(pipeline=pipeline), seed=7, dist_timeout=30)
    if launcher == 'slurm':
        cfg.update(dist_host='127.0.0.1', dist_port=port)
    ctx = setup_parallel(cfg, launcher=launcher)
    t = torch.tensor([float(ctx.rank)])
    dist.all_reduce(t)
    out = dict(rank=ctx.rank, world=ctx.world_size, stage=ctx.stage, dp_rank=ctx.dp_rank, sum=t.item(),
               backend=dist.get_backend(), rand=torch.rand(1).item(), same=get_context() is ctx)
    teardown()
    out.update(initialized_after=dist.is_initialized(), world_after=get_context().world_size)
    return out


LAUNCHER_ENV = {
    'torch': lambda r, w, port: dict(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(w),
                                     MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port)),
    'slurm': lambda r, w, port: dict(SLURM_PROCID=str(r), SLURM_NPROCS=str(w), SLURM_LOCALID=str(r)),
    'openmpi': lambda r, w, port: dict(OMPI_COMM_WORLD_RANK=str(r), OMPI_COMM_WORLD_LOCAL_RANK=str(r),
                                       OMPI_COMM_WORLD_SIZE=str(w), MASTER_ADDR='127.0.0.1',
                                       MASTER_PORT=str(port)),
}


LAUNCHER_ENV['pytorch'] = LAUNCHER_ENV['torch']  # mmcv's name for it


@pytest.mark.parametrize('launcher, pipeline', [('torch', 2), ('pytorch', 1), ('slurm', 1), ('openmpi', 1)])
def test_every_launcher_starts_a_real_job(monkeypatch, launcher, pipeline):
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(var, raising=False)  # each launcher must read only its own variables
    port = free_port()
    envs = [LAUNCHER_ENV[launcher](r, 2, port) for r in range(2)]
    outs = fork_ranks(functools.partial(_start, launcher, pipeline, port), envs, timeout=60)
    for rank, out in enumerate(outs):
        assert (out['rank'], out['world'], out['sum']) == (rank, 2, 1.0), launcher
        assert (out['stage'], out['dp_rank']) == ((rank, 0) if pipeline == 2 else (0, rank))
        assert out['backend'] == 'gloo' and out['same']
        assert out['initialized_after'] is False and out['world_after'] == 1
    assert outs[0]['rand'] == outs[1]['rand']  # same seed on every rank: identical model init


@pytest.mark.parametrize('fn, env, missing', [
    (launch_from_torch, dict(RANK='0', WORLD_SIZE='2'), "['LOCAL_RANK', 'MASTER_PORT', 'MASTER_ADDR']"),
    (lambda cfg: launch_from_slurm(cfg, '127.0.0.1', 1), dict(SLURM_PROCID='0'), "['SLURM_NPROCS']"),
    (lambda cfg: launch_from_openmpi(cfg, '127.0.0.1', 1), {},
     "['OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_SIZE']"),
])
def test_missing_launcher_variables_are_named(monkeypatch, fn, env, missing):
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID',
                'SLURM_NPROCS', 'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_SIZE'):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(KeyError) as err:
        fn({})
    message = err.value.args[0]
    assert missing in message and "start the script with" in message


def test_non_integer_variable_is_refused(monkeypatch):
    monkeypatch.setenv('SLURM_PROCID', 'zero')
    monkeypatch.setenv('SLURM_NPROCS', '2')
    with pytest.raises(ValueError, match="SLURM_PROCID must be an integer, got 'zero'"):
        launch_from_slurm({}, '127.0.0.1', 1)


def test_single_process_setup_and_its_errors(monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    ctx = setup_parallel(dict(parallel=dict(pipeline=1), seed=3))
    assert ctx is get_context() and ctx.world_size == 1
    first = torch.rand(1)
    setup_parallel(dict(seed=3))
    assert torch.equal(first, torch.rand(1))  # seeded from cfg.seed
    with pytest.raises(ValueError, match='unknown launcher .*expected one of'):
        setup_parallel({}, launcher='mpi')
    with pytest.raises(ValueError, match='not divisible.*--launcher torch'):
        setup_parallel(dict(parallel=dict(pipeline=2)))
    with pytest.raises(ConfigError) as err:
        setup_parallel(dict(parallel=dict(pipline=2)))
    assert str(err.value).startswith("key parallel.pipline: unknown key 'pipline'; did you mean 'pipeline'? "
                                     'parallel takes pipeline, data and tensor')
    with pytest.raises(TypeError, match='config must be a Config, a dict or a path'):
        setup_parallel(42)
    assert get_device(0) == (torch.device('cuda', 0) if torch.cuda.is_available() else torch.device('cpu'))


def test_single_process_hint_only_where_more_processes_help(monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    with pytest.raises(ValueError) as err:
        setup_parallel(dict(parallel=dict(pipeline=2, data=2)))
    assert 'not divisible' in str(err.value)
    assert 'to run 4 processes (parallel.pipeline=2 x parallel.data=2)' in str(err.value)
    assert '`torchrun --nproc_per_node=4 ... --launcher torch`' in str(err.value)
    with pytest.raises(ValueError) as err:
        setup_parallel(dict(parallel=dict(data=3)))
    assert '--nproc_per_node=3 ' in str(err.value)
    # more processes would not fix these: no torchrun hint, only the error itself
    for parallel, expected in ((dict(tensor=2), 'parallel.tensor=2 is not supported'),
                               (dict(pipeline=2, tensor=2), 'parallel.tensor=2 is not supported'),
                               (dict(pipeline=0), 'parallel.pipeline must be a positive int')):
        with pytest.raises(ValueError) as err:
            setup_parallel(dict(parallel=parallel))
        assert expected in str(err.value)
        assert 'launcher "none"' not in str(err.value) and 'torchrun' not in str(err.value)


def test_launcher_none_under_torchrun_with_several_processes_is_refused(monkeypatch):
    """torchrun sets WORLD_SIZE and TORCHELASTIC_RUN_ID: without --launcher torch each process would
    train alone and all of them would write one work directory."""
    monkeypatch.setenv('TORCHELASTIC_RUN_ID', 'none')
    monkeypatch.setenv('WORLD_SIZE', '2')
    with pytest.raises(ValueError, match=r'started by torchrun with WORLD_SIZE=2 but without --launcher '
                                         r'torch \(launcher "none"\): each of the 2 processes would train '
                                         r'alone.*'
                                         r'Add --launcher torch'):
        setup_parallel(dict(seed=3))
    monkeypatch.setenv('WORLD_SIZE', '1')  # torchrun --nproc_per_node=1: one process, nothing to share
    assert setup_parallel(dict(seed=3)).world_size == 1
    monkeypatch.delenv('TORCHELASTIC_RUN_ID')
    monkeypatch.setenv('WORLD_SIZE', '2')  # set by something else: a warning, as before
    with pytest.warns(UserWarning, match='WORLD_SIZE=2 is set but launcher is "none"'):
        assert setup_parallel(dict(seed=3)).world_size == 1


def test_config_from_a_file_path(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text('parallel = dict(pipeline=1)\nseed = 5\n')
    assert setup_parallel(str(path)).world_size == 1


def _mismatch(rank, world_size):
    cfg = dict(optimizer=dict(type='SGD', lr=0.1 if rank != 2 else 0.2), parallel=dict(pipeline=1))
    try:
        setup_parallel(cfg)
    except ValueError as err:
        return str(err)
    return 'started'


def _same(rank, world_size):
    ctx = setup_parallel(dict(optimizer=dict(type='SGD', lr=0.1), parallel=dict(pipeline=1)))
    return ctx.world_size


def test_different_configs_are_refused_on_every_rank():
    messages = run_distributed(_mismatch, 3, timeout=60)
    for message in messages:
        assert 'different configs: ranks [2] differ from ranks [0, 1]' in message, messages
    assert run_distributed(_same, 2, timeout=60) == [2, 2]


def test_run_distributed_names_the_failing_rank():
    with pytest.raises(DistributedTestError, match=r'ranks \[2\] failed'):
        run_distributed(_raise_on_two, 3, timeout=60)


def _raise_on_two(rank, world_size):
    setup_parallel({})
    if rank == 2:
        raise RuntimeError('rank two broke')
    return rank


def test_train_and_test_accept_mmcvs_launcher_name_pytorch():
    from colossal_runner.test import parse_args as parse_test_args
    from colossal_runner.train import parse_args
    assert parse_args(['cfg.py', '--launcher', 'pytorch']).launcher == 'pytorch'
    assert parse_test_args(['cfg.py', 'ckpt.pt', '--launcher', 'pytorch']).launcher == 'pytorch'
    with pytest.raises(ValueError, match="unknown launcher 'mpi'; expected one of .*'pytorch'"):
        setup_parallel({}, launcher='mpi')
