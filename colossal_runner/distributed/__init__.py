"""Distributed runs: launchers, the pipeline x data-parallel layout, data parallelism, faults."""
from .context import ParallelContext, get_context, set_context
from .faults import FaultWatcher, config_hash, report_failure
from .launch import (broadcast_parameters, get_device, launch, launch_from_openmpi, launch_from_slurm,
                     launch_from_torch, set_seed, setup_parallel, teardown, wrap_data_parallel)

__all__ = ['ParallelContext', 'get_context', 'set_context', 'FaultWatcher', 'config_hash', 'report_failure',
           'broadcast_parameters', 'get_device', 'launch', 'launch_from_openmpi', 'launch_from_slurm',
           'launch_from_torch', 'set_seed', 'setup_parallel', 'teardown', 'wrap_data_parallel']
