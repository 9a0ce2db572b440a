from .registry import Registry, build_from_cfg
from .root import (
                   DATA_SAMPLERS,
                   DATASETS,
                   HOOKS,
                   LAYERS,
                   LOSSES,
                   LR_SCHEDULERS,
                   METRICS,
                   MODELS,
                   OPTIMIZERS,
                   SCHEDULES,
                   TRANSFORMS,
)

__all__ = ['Registry', 'build_from_cfg', 'MODELS', 'LAYERS', 'LOSSES', 'OPTIMIZERS', 'LR_SCHEDULERS',
           'SCHEDULES', 'HOOKS', 'METRICS', 'DATASETS', 'TRANSFORMS', 'DATA_SAMPLERS']
