"""Start (and stop) a distributed run: process group, ParallelContext, device, seeds.

Every launcher ends in :func:`launch`, which initializes ``torch.distributed`` with a
``tcp://host:port`` rendezvous, builds the :class:`ParallelContext` from ``cfg.parallel``,
checks that every rank was started with the same config, seeds every RNG with the same
seed (so model init is identical everywhere) and arms the fault watcher (a rank that
raises makes the others exit, naming it). ``launch_from_torch/slurm/openmpi`` only read
rank and world size from their launcher's environment variables.
"""
from __future__ import annotations

import atexit
import datetime
import difflib
import os
import random
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn

from ..config.errors import ConfigError
from .context import ParallelContext, get_context, set_context
from .faults import FaultWatcher, config_hash, get_watcher, set_watcher, watcher_settings

ConfigLike = Union[str, os.PathLike, Mapping]
LAUNCHERS = ('none', 'torch', 'pytorch', 'slurm', 'openmpi')
_LAUNCHER_ALIASES = {'pytorch': 'torch'}  # mmcv / mmengine's name for torchrun's launcher
DEFAULT_TIMEOUT = 1800.0  # seconds; torch's own default for process-group operations
DEFAULT_SEED = 1024
STARTUP_TIMEOUT = 300.0  # seconds every rank has to reach the rendezvous
_TEARDOWN_AT_EXIT = False


def _load_config(config: ConfigLike) -> Any:
    """A Config / ConfigDict / dict as given, or the Config loaded from a file path."""
    if isinstance(config, (str, os.PathLike)):
        from colossal_runner.config import Config  # imported lazily: config is optional here
        # only the parallel settings are read here; custom_imports are imported where the config
        # is built, after --cfg-options (initialize()), so that the options can change them
        return Config.fromfile(str(config), import_custom_modules=False)
    if config is None:
        return {}
    if not isinstance(config, Mapping) and not hasattr(config, 'get'):
        raise TypeError(f'config must be a Config, a dict or a path to a config file, got '
                        f'{type(config).__name__}; pass e.g. Config.fromfile("configs/digits/mlp.py").')
    return config


def _config_file(cfg: Any) -> Optional[str]:
    """The file a Config was read from, for errors; None for a dict."""
    filename = getattr(cfg, 'filename', None)
    return filename if isinstance(filename, str) else None


def _parallel_settings(cfg: Any) -> dict:
    parallel = cfg.get('parallel', None) or {}
    if not isinstance(parallel, Mapping):
        raise ConfigError(f'expected a dict like dict(pipeline=2, data=2), got {type(parallel).__name__}: '
                          f'{parallel!r}', _config_file(cfg), 'parallel')
    known = ('pipeline', 'data', 'tensor')
    for key in parallel:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f'did you mean {close[0]!r}? ' if close else ''
            raise ConfigError(f'unknown key {key!r}; {hint}parallel takes pipeline, data and tensor, e.g. '
                              f'parallel = dict(pipeline=2, data=2).', _config_file(cfg), ['parallel', key])
    return dict(pipeline=parallel.get('pipeline', 1), data=parallel.get('data', None),
                tensor=parallel.get('tensor', 1))


def _parallel_context(cfg: Any, settings: dict, **layout: Any) -> ParallelContext:
    """``ParallelContext(**settings, **layout)``; a bad setting's error names the config file too."""
    try:
        return ParallelContext(**settings, **layout)
    except ConfigError as err:
        raise ConfigError(err.message, _config_file(cfg), err.key_path) from None


def _timeout_seconds(cfg: Any, timeout: Optional[float]) -> float:
    value = timeout if timeout is not None else cfg.get('dist_timeout', None)
    if value is None:
        return DEFAULT_TIMEOUT
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        message = (f'the process-group timeout must be a positive number of seconds, got {value!r}; '
                   f'set dist_timeout = 600 in the config or pass timeout=600.')
        if timeout is None:  # the config's
            raise ConfigError(message, _config_file(cfg), 'dist_timeout')
        raise ValueError(message)
    return float(value)


def _watcher_settings(cfg: Any, seconds: Optional[float]) -> Optional[dict]:
    """:func:`watcher_settings` of the config's ``fault_watch``; an error names the config file."""
    try:
        return watcher_settings(cfg.get('fault_watch', True), seconds)
    except ConfigError as err:
        raise ConfigError(err.message, _config_file(cfg), err.key_path) from None


def _env(names: Sequence[str], launcher: str, hint: str) -> list:
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise KeyError(f'launcher "{launcher}" needs the environment variables {list(names)}, but '
                       f'{missing} are not set; {hint}')
    values: list = []
    for name in names:
        if name in ('MASTER_ADDR',):  # a host name, not a number
            values.append(os.environ[name])
            continue
        try:
            values.append(int(os.environ[name]))
        except ValueError:
            raise ValueError(f'environment variable {name} must be an integer, got '
                             f'{os.environ[name]!r} (launcher "{launcher}").') from None
    return values


def get_device(local_rank: Optional[int] = None) -> torch.device:
    """The device this process computes on: ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device('cpu')
    if local_rank is None:
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
    return torch.device('cuda', local_rank % torch.cuda.device_count())


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so every rank builds the same model."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional
        pass


def launch(config: ConfigLike, rank: int, world_size: int, host: str, port: Union[int, str],
           backend: Optional[str] = None, local_rank: Optional[int] = None, seed: int = DEFAULT_SEED,
           timeout: Optional[float] = None, verbose: bool = False) -> ParallelContext:
    """Join the process group at ``tcp://host:port`` as ``rank`` of ``world_size``.

    Returns the ParallelContext (also made current with ``set_context``). ``timeout`` (seconds,
    default ``cfg.dist_timeout`` or 1800) bounds every collective, so a rank that stops
    answering makes the others fail instead of hanging forever; ranks have at least
    ``STARTUP_TIMEOUT`` (300 s) to arrive at the rendezvous.
    """
    cfg = _load_config(config)
    for name, value in (('rank', rank), ('world_size', world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f'{name} must be an int, got {type(value).__name__}: {value!r}')
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f'rank must be in [0, world_size) and world_size >= 1, got rank={rank}, '
                         f'world_size={world_size}.')
    seconds = _timeout_seconds(cfg, timeout)
    device = get_device(local_rank)
    if backend is None:
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if device.type == 'cuda':
        torch.cuda.set_device(device)  # nccl collectives use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend, store=_rendezvous_store(host, int(port), rank, world_size, seconds),
                                rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=seconds))
    elif dist.get_rank() != rank or dist.get_world_size() != world_size:
        raise ValueError(f'a process group is already initialized as rank {dist.get_rank()} of '
                         f'{dist.get_world_size()}, but launch was asked for rank {rank} of {world_size}; '
                         f'call teardown() first.')
    return _finish_setup(cfg, host, port, seed, seconds, verbose)


def _rendezvous_store(host: str, port: int, rank: int, world_size: int, seconds: float) -> dist.Store:
    """The TCPStore the ranks meet at, allowed at least STARTUP_TIMEOUT for every rank to arrive.

    Built here rather than through ``init_method='tcp://...'`` so that a short ``dist_timeout``
    (meant for collectives) does not also fail ranks that merely start a little late.
    """
    timeout = datetime.timedelta(seconds=max(seconds, STARTUP_TIMEOUT))
    agent = (os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'  # torchrun's agent hosts it
             and os.environ.get('MASTER_ADDR') == host and os.environ.get('MASTER_PORT') == str(port))
    return dist.TCPStore(host, port, world_size, is_master=rank == 0 and not agent, timeout=timeout,
                         multi_tenant=not agent, wait_for_workers=False)


def _finish_setup(cfg: Any, host: Optional[str], port: Any, seed: int, seconds: Optional[float],
                  verbose: bool) -> ParallelContext:
    """Fault watcher, config check, context, seeds; ``seconds=None`` keeps the group's own timeout."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    settings = _watcher_settings(cfg, seconds)
    if world_size > 1 and host is not None and get_watcher() is None and settings is not None:
        watcher = FaultWatcher(host, int(port), rank, world_size, timeout=seconds or 60.0, **settings)
        set_watcher(watcher.start())
    _check_same_config(cfg, rank, world_size)
    context = _parallel_context(cfg, _parallel_settings(cfg), rank=rank, world_size=world_size,
                                timeout=seconds)
    set_context(context)
    set_seed(seed)
    global _TEARDOWN_AT_EXIT
    if not _TEARDOWN_AT_EXIT:  # process groups are destroyed even when the script forgets teardown()
        atexit.register(teardown)
        _TEARDOWN_AT_EXIT = True
    if verbose and rank == 0:
        print(f'colossal_runner: {context} backend={dist.get_backend()} timeout={seconds}s', flush=True)
    return context


def _check_same_config(cfg: Any, rank: int, world_size: int) -> None:
    """Refuse to start when ranks were given different configs (a classic silent-divergence bug)."""
    if world_size == 1:
        return
    mine = config_hash(cfg)
    hashes: list = [None] * world_size
    dist.all_gather_object(hashes, mine)
    if len(set(hashes)) > 1:
        groups: dict = {}
        for r, h in enumerate(hashes):
            groups.setdefault(h, []).append(r)
        majority = max(groups.values(), key=len)
        differ = sorted(r for r in range(world_size) if r not in majority)
        raise ValueError(f'ranks were started with different configs: ranks {differ} differ from ranks '
                         f'{majority} (config hashes {dict((h[:12], rs) for h, rs in groups.items())}). '
                         f'Start every rank with the same config file and --cfg-options.')


def launch_from_torch(config: ConfigLike, backend: Optional[str] = None, seed: int = DEFAULT_SEED,
                      timeout: Optional[float] = None, verbose: bool = False) -> ParallelContext:
    """Launch from the variables torchrun sets: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT."""
    names = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_PORT', 'MASTER_ADDR')
    rank, local_rank, world_size, port, host = _env(
        names, 'torch', 'start the script with `torchrun --nproc_per_node=N script.py ... --launcher torch`.')
    return launch(config, rank, world_size, host, port, backend=backend,
                  local_rank=local_rank, seed=seed, timeout=timeout, verbose=verbose)


def launch_from_slurm(config: ConfigLike, host: str, port: Union[int, str], backend: Optional[str] = None,
                      seed: int = DEFAULT_SEED, timeout: Optional[float] = None,
                      verbose: bool = False) -> ParallelContext:
    """Launch from SLURM_PROCID / SLURM_NPROCS (and SLURM_LOCALID for the GPU), as set by ``srun``."""
    rank, world_size = _env(('SLURM_PROCID', 'SLURM_NPROCS'), 'slurm',
                            'start the script with `srun` (one task per process), or use --launcher torch.')
    local_rank = int(os.environ['SLURM_LOCALID']) if 'SLURM_LOCALID' in os.environ else None
    return launch(config, rank, world_size, host, port, backend=backend, local_rank=local_rank,
                  seed=seed, timeout=timeout, verbose=verbose)


def launch_from_openmpi(config: ConfigLike, host: str, port: Union[int, str], backend: Optional[str] = None,
                        seed: int = DEFAULT_SEED, timeout: Optional[float] = None,
                        verbose: bool = False) -> ParallelContext:
    """Launch from OMPI_COMM_WORLD_RANK / _LOCAL_RANK / _SIZE, as set by OpenMPI's ``mpirun``."""
    rank, local_rank, world_size = _env(
        ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_SIZE'), 'openmpi',
        'start the script with OpenMPI `mpirun -np N`, or use --launcher torch.')
    return launch(config, rank, world_size, host, port, backend=backend, local_rank=local_rank,
                  seed=seed, timeout=timeout, verbose=verbose)


def setup_parallel(cfg: ConfigLike, launcher: str = 'none', timeout: Optional[float] = None,
                   backend: Optional[str] = None, seed: Optional[int] = None) -> ParallelContext:
    """Set up this process for ``cfg`` with the given launcher and return its ParallelContext.

    ``launcher='none'`` runs a single process, or uses a process group somebody already
    initialized (tests, notebooks); under torchrun with several processes it is refused
    (each would train alone). ``torch`` (or ``pytorch``, as mmcv calls it) reads torchrun's
    variables; ``slurm`` and ``openmpi`` read theirs and rendezvous at
    ``cfg.dist_host``/``MASTER_ADDR`` (default 127.0.0.1) and ``cfg.dist_port``/``MASTER_PORT``
    (default 29500). The seed is ``cfg.seed`` when set, else 1024.
    """
    cfg = _load_config(cfg)
    if launcher not in LAUNCHERS:
        raise ValueError(f'unknown launcher {launcher!r}; expected one of {list(LAUNCHERS)}.')
    launcher = _LAUNCHER_ALIASES.get(launcher, launcher)
    _watcher_settings(cfg, None)  # a bad fault_watch fails here, even in one process
    if seed is None:
        seed = cfg.get('seed', None)
        seed = DEFAULT_SEED if seed is None else seed
    if launcher == 'torch':
        return launch_from_torch(cfg, backend=backend, seed=seed, timeout=timeout)
    if launcher in ('slurm', 'openmpi'):
        host = cfg.get('dist_host', None) or os.environ.get('MASTER_ADDR', '127.0.0.1')
        port = cfg.get('dist_port', None) or os.environ.get('MASTER_PORT', 29500)
        fn = launch_from_slurm if launcher == 'slurm' else launch_from_openmpi
        return fn(cfg, host, port, backend=backend, seed=seed, timeout=timeout)
    explicit = timeout is not None or cfg.get('dist_timeout', None) is not None
    seconds = _timeout_seconds(cfg, timeout) if explicit else None
    if dist.is_available() and dist.is_initialized():  # somebody else initialized the group
        return _finish_setup(cfg, os.environ.get('MASTER_ADDR'), os.environ.get('MASTER_PORT'), seed,
                             seconds, verbose=False)
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    if world_size > 1 and 'TORCHELASTIC_RUN_ID' in os.environ:  # torchrun started several processes
        raise ValueError(f'started by torchrun with WORLD_SIZE={world_size} but without --launcher torch '
                         f'(launcher "none"): each of the {world_size} processes would train alone, all '
                         f'writing one work directory. Add --launcher torch (launcher="torch" in '
                         f'setup_parallel), or start a single process.')
    if world_size > 1:
        warnings.warn(f'WORLD_SIZE={world_size} is set but launcher is "none": every process '
                      f'will train alone. Pass --launcher torch when starting with torchrun.')
    settings = _parallel_settings(cfg)
    try:
        context = _parallel_context(cfg, settings, rank=0, world_size=1)
    except ConfigError as err:
        hint = _more_processes_hint(settings)
        raise ConfigError(f'{err.message}{hint}', err.filename, err.key_path) from None
    set_context(context)
    set_seed(seed)
    return context


def _more_processes_hint(settings: dict) -> str:
    """The torchrun hint for ``parallel`` settings that are fine but need more than the one process
    launcher "none" runs; '' for any other error (``parallel.tensor=2``), which no process count fixes."""
    pipeline, data = settings['pipeline'], settings['data']
    try:
        needed = pipeline * (1 if data is None else data)
        ParallelContext(**settings, rank=0, world_size=needed)  # no process group here: only checks
    except (TypeError, ValueError):
        return ''
    return (f' (launcher "none" runs one process; to run {needed} processes (parallel.pipeline={pipeline}'
            f' x parallel.data={1 if data is None else data}) start with '
            f'`torchrun --nproc_per_node={needed} ... --launcher torch`.)')


def broadcast_parameters(model: nn.Module, context: Optional[ParallelContext] = None) -> None:
    """Copy parameters and buffers from the first rank of each data-parallel group to the others.

    DDP does this itself on construction; pipeline stages (which the Engine all-reduces
    without DDP) call this so every replica of a stage starts from the same weights.
    """
    context = context or get_context()
    if context.data_size == 1 or context.data_group is None:
        return
    broadcast_tensors(list(model.parameters()) + list(model.buffers()), context.data_ranks[0],
                      context.data_group)


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int, group: Any) -> None:
    """Copy ``tensors`` (a module's parameters or buffers, in the same order on every rank of
    ``group``) from global rank ``src`` to the others, in place. Collective over ``group``."""
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=src, group=group)


def wrap_data_parallel(model: nn.Module, context: Optional[ParallelContext] = None,
                       **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel over the data-parallel group when that applies.

    Only for ``data_size > 1`` with one pipeline stage. With several stages the model is
    returned unwrapped (weights broadcast within each stage's data group) and the Engine
    all-reduces its gradients over ``context.data_group``: DDP's reducer expects one
    forward and one backward per step through autograd from a loss, while a pipeline stage
    runs several microbatch forwards and backward from received gradients.
    """
    context = context or get_context()
    if context.data_size == 1:
        return model
    if context.pipeline_size > 1:
        broadcast_parameters(model, context)
        return model
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    params = list(model.parameters())
    device = params[0].device if params else torch.device('cpu')
    device_ids = [device.index] if device.type == 'cuda' else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               process_group=context.data_group, **ddp_kwargs)


def teardown() -> None:
    """Stop the fault watcher, destroy every process group and reset the context (safe to repeat)."""
    watcher = get_watcher()
    if watcher is not None:
        watcher.stop()
        set_watcher(None)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    set_context(None)
