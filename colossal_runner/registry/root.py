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


def _is_model(name: str, obj: Any) -> bool:
    """torchvision's model classes (``ResNet``) and builders (``resnet18``), not its output tuples
    (``GoogLeNetOutputs``), weight enums or helpers (``list_models``, ``get_weight``)."""
    from torch import nn
    if inspect.isclass(obj):
        return issubclass(obj, nn.Module)
    if not (inspect.isfunction(obj) and name.islower()):
        return False
    try:
        returns = inspect.signature(obj).return_annotation  # torchvision annotates its builders
    except (TypeError, ValueError):  # no readable signature: keep it, as before the filter
        return True
    return returns is inspect.Signature.empty or (inspect.isclass(returns) and issubclass(returns, nn.Module))


def _is_sampler(name: str, obj: Any) -> bool:
    """torch.utils.data's samplers, not its loaders, datasets or functions (``random_split``)."""
    from torch.utils.data import Sampler
    return inspect.isclass(obj) and issubclass(obj, Sampler) and obj is not Sampler


MODELS = Registry('model', fallback='torchvision.models', builtins='colossal_runner.models',
                  fallback_filter=_is_model)
LAYERS = Registry('layer', fallback='torch.nn')
LOSSES = Registry('loss', fallback='torch.nn', builtins='colossal_runner.models', fallback_filter=_is_loss)
OPTIMIZERS = Registry('optimizer', fallback='torch.optim', fallback_filter=_is_optimizer)
# mmcv's schedules take by_epoch; here the choice is a hook's, and by_epoch's close name, torch's
# last_epoch, is a scheduler's progress, not a unit.
_BY_EPOCH = ("by_epoch is not a scheduler argument here: the Engine steps its lr_scheduler once per "
             "optimizer step, and to step it once per epoch instead drop by_epoch and add "
             "dict(type='LRSchedulerHook', by_epoch=True) to hooks (in code, to the Trainer's hooks); "
             "the schedule's lengths (total_steps, milestones) then count epochs.")
LR_SCHEDULERS = Registry('lr_scheduler', builtins='colossal_runner.nn.lr_scheduler',
                         argument_hints={'by_epoch': _BY_EPOCH})
SCHEDULES = Registry('schedule', builtins='colossal_runner.engine.schedule')
HOOKS = Registry('hook', builtins='colossal_runner.trainer.hooks')
METRICS = Registry('metric', builtins='colossal_runner.trainer.metrics')
DATASETS = Registry('dataset', fallback='torchvision.datasets', builtins='colossal_runner.data')
TRANSFORMS = Registry('transform', fallback='torchvision.transforms')
DATA_SAMPLERS = Registry('data_sampler', fallback='torch.utils.data', fallback_filter=_is_sampler)

__all__ = ['MODELS', 'LAYERS', 'LOSSES', 'OPTIMIZERS', 'LR_SCHEDULERS', 'SCHEDULES', 'HOOKS',
           'METRICS', 'DATASETS', 'TRANSFORMS', 'DATA_SAMPLERS']
