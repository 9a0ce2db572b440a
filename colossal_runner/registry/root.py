"""Every root registry of colossal_runner, declared in one place.

Fall-backs let configs name the usual torch / torchvision classes without registering
them: ``dict(type='SGD', lr=0.1)`` finds ``torch.optim.SGD``.
"""
from .registry import Registry

MODELS = Registry('model', fallback='torchvision.models')
LAYERS = Registry('layer', fallback='torch.nn')
LOSSES = Registry('loss', fallback='torch.nn')
OPTIMIZERS = Registry('optimizer', fallback='torch.optim')
LR_SCHEDULERS = Registry('lr_scheduler')
SCHEDULES = Registry('schedule')
HOOKS = Registry('hook')
METRICS = Registry('metric')
DATASETS = Registry('dataset', fallback='torchvision.datasets')
TRANSFORMS = Registry('transform', fallback='torchvision.transforms')
DATA_SAMPLERS = Registry('data_sampler', fallback='torch.utils.data')

__all__ = ['MODELS', 'LAYERS', 'LOSSES', 'OPTIMIZERS', 'LR_SCHEDULERS', 'SCHEDULES', 'HOOKS',
           'METRICS', 'DATASETS', 'TRANSFORMS', 'DATA_SAMPLERS']
