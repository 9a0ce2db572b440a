"""Every root registry of colossal_runner, declared in one place.

Fall-backs let configs name the usual torch / torchvision classes without registering
them: ``dict(type='SGD', lr=0.1)`` finds ``torch.optim.SGD``. ``builtins`` names the modules
that register colossal_runner's own entries; a registry imports them before anything else
registers into it or looks in it, so a user's ``force=True`` can replace a built-in.
"""
import inspect
from typing import Any

from .registry import Registry


def _is_loss(name: str, obj: Any) -> bool:
    """torch.nn's losses (``MSELoss``), not its layers: LOSSES offers only these from torch.nn."""
    from torch.nn.modules.loss import _Loss  # torch is imported already: obj comes from torch.nn
    return name.endswith('Loss') or (inspect.isclass(obj) and issubclass(obj, _Loss))


def _is_optimizer(name: str, obj: Any) -> bool:
    """torch.optim's optimizers, not the ``Optimizer`` base class or its helper functions."""
    from torch.optim import Optimizer
    return inspect.isclass(obj) and issubclass(obj, Optimizer) and obj is not Optimizer


MODELS = Registry('model', fallback='torchvision.models', builtins='colossal_runner.models')
LAYERS = Registry('layer', fallback='torch.nn')
LOSSES = Registry('loss', fallback='torch.nn', builtins='colossal_runner.models', fallback_filter=_is_loss)
OPTIMIZERS = Registry('optimizer', fallback='torch.optim', fallback_filter=_is_optimizer)
LR_SCHEDULERS = Registry('lr_scheduler', builtins='colossal_runner.nn.lr_scheduler')
SCHEDULES = Registry('schedule', builtins='colossal_runner.engine.schedule')
HOOKS = Registry('hook', builtins='colossal_runner.trainer.hooks')
METRICS = Registry('metric', builtins='colossal_runner.trainer.metrics')
DATASETS = Registry('dataset', fallback='torchvision.datasets', builtins='colossal_runner.data')
TRANSFORMS = Registry('transform', fallback='torchvision.transforms')
DATA_SAMPLERS = Registry('data_sampler', fallback='torch.utils.data')

__all__ = ['MODELS', 'LAYERS', 'LOSSES', 'OPTIMIZERS', 'LR_SCHEDULERS', 'SCHEDULES', 'HOOKS',
           'METRICS', 'DATASETS', 'TRANSFORMS', 'DATA_SAMPLERS']
