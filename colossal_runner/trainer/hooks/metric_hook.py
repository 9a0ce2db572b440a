"""MetricHook: owns one Metric per mode and keeps it in ``runner.states['metrics']``."""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch

from ...distributed import get_context
from ...registry import HOOKS, METRICS
from ..metrics import Metric
from ..priority import Priority
from .base_hook import BaseHook

MODES = ('train', 'test')
#: keys of every metrics.jsonl record besides the metric values (log_values): no metric may take them
RESERVED_NAMES = ('mode', 'by', 'epoch', 'iteration')


def read_metrics(runner: Any, mode: str, accumulated: bool = True,
                 per_step: bool = False) -> Dict[str, float]:
    """``{name: value}`` of the ``mode`` metrics: accumulated values, or latest-step values.

    ``per_step=True`` leaves out epoch-only metrics. Collective over the data-parallel group
    (metrics reduce when read): call it on every rank, write on the logging rank only.
    """
    values = {}
    for name, metric in runner.states['metrics'][mode].items():
        if per_step and metric.epoch_only:
            continue
        value = metric.get_accumulated_value() if accumulated else metric.get_last_step_value()
        if type(value) is not float:
            getter = 'get_accumulated_value' if accumulated else 'get_last_step_value'
            value = _as_float(value, metric, getter)
        values[name] = value
    return values


def _as_float(value: Any, metric: Metric, getter: str) -> float:
    """A getter's value as a Python float (a one-element tensor, a NumPy number, an int); a
    TypeError naming the metric and the getter for anything else (a per-class vector, None)."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return float(value.detach())  # (a device error while reading it propagates as it is)
        what = f'a Tensor of shape {tuple(value.shape)}'
    elif isinstance(value, (str, bytes)):
        what = f'a {type(value).__name__} ({value!r:.60})'
    else:
        try:
            return float(value)
        except (TypeError, ValueError):
            shape = getattr(value, 'shape', None)
            what = 'None' if value is None else f'a {type(value).__name__}' + (
                f' of shape {tuple(shape)}' if shape is not None else f' ({value!r:.60})')
    raise TypeError(f'{type(metric).__name__}.{getter}() must return a number (a Python float), got {what}; '
                    f'return one value, as a Python number: value.item() of a one-element tensor, or '
                    f'self.ratio(numerator, denominator).')


def step_was_dropped(loss: Any) -> bool:
    """Whether a training step has no values to log: the engine dropped it for a NaN/Inf loss
    (``nonfinite_loss='skip'``), which gives ``loss=None`` on the last pipeline stage.

    Metric hooks leave such a step out, so its "latest step" values would be the previous
    step's. Other stages never see a loss, and this is False there: they read as before (and
    write nothing). Data-parallel replicas of a stage drop steps together, so a collective read
    skipped here is skipped on every rank of its group.
    """
    return loss is None and get_context().is_last_stage


@HOOKS.register_module()
class MetricHook(BaseHook):
    """Accumulates a metric during training and testing; subclass it, or give ``metric``.

    Resets the metric before each epoch and updates it after each iteration, skipping
    iterations without a loss (non-last pipeline stages). Runs early (VERY_HIGH) so that
    readers (loggers, TensorBoard, checkpoints) see the current iteration's value.

    Args:
        metric: a Metric class or a config ``dict(type='Accuracy', topk=5)`` from METRICS;
            subclasses set it through :meth:`build_metric` instead.
        name: key in ``runner.states['metrics'][mode]``; the metric's ``name`` by default.
        modes: which of ``'train'`` / ``'test'`` to measure.
        priority: see :class:`Priority`.
    """

    def __init__(self, metric: Union[Mapping, type, None] = None, name: Optional[str] = None,
                 modes: Sequence[str] = MODES, priority: Union[int, str, Priority] = 'VERY_HIGH'):
        super().__init__(priority)
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise ValueError(f'modes must be a non-empty subset of {MODES}, got {tuple(modes)!r}')
        if metric is not None and not (isinstance(metric, Mapping)
                                       or (inspect.isclass(metric) and issubclass(metric, Metric))):
            raise TypeError(f'metric must be a Metric subclass or a config dict like '
                            f"dict(type='Accuracy'), got {type(metric).__name__}: {metric!r}")
        self._metric_cfg = metric
        self.modes = tuple(modes)
        self.metrics: Dict[str, Metric] = {mode: self.build_metric() for mode in self.modes}
        self.name = name or self.metrics[self.modes[0]].name or type(self.metrics[self.modes[0]]).__name__
        # Without an `update` override, each step goes to the metric directly: one Python call
        # less per step (benchmarks/overhead.py), and the same result.
        self._direct = type(self).update is MetricHook.update
        self._epoch = 0            # the epoch the train metric is accumulating
        self._resumed: Optional[Dict[str, Any]] = None  # a checkpoint's state, for the next epoch start

    def build_metric(self) -> Metric:
        """A fresh metric; called once per mode."""
        if self._metric_cfg is None:
            raise TypeError(f'{type(self).__name__} needs a metric: pass metric=dict(type=...) or '
                            f'override build_metric()')
        if isinstance(self._metric_cfg, Mapping):
            return METRICS.build(dict(self._metric_cfg))
        return self._metric_cfg()

    def after_hook_is_attached(self, runner: Any) -> None:
        if self.name in RESERVED_NAMES:
            raise ValueError(f'a metric cannot be named {self.name!r}: {", ".join(RESERVED_NAMES)} are the '
                             f'keys each metrics.jsonl record holds besides the metric values; '
                             f'{self._rename_fix()}')
        for mode, metric in self.metrics.items():
            table = runner.states['metrics'][mode]
            if self.name in table:
                raise ValueError(f'a {mode} metric named {self.name!r} already exists (from another hook); '
                                 f'{self._duplicate_fix()}')
            metric.to(runner.engine.device)
            table[self.name] = metric

    def _takes_name(self) -> bool:
        parameters = inspect.signature(type(self).__init__).parameters.values()
        return any(p.name == 'name' or p.kind is p.VAR_KEYWORD for p in parameters)

    def _duplicate_fix(self) -> str:
        """How to fix a second metric of the same name: rename it, when this hook takes a name."""
        hook = type(self).__name__
        if self._takes_name():
            return f'give this {hook} another name=...'
        return f"{hook} takes no name=: remove the duplicate hook (a config's _base_ may already list one)"

    def _rename_fix(self) -> str:
        """How to give this hook's metric another name."""
        hook = type(self).__name__
        if self._takes_name():
            return f'give this {hook} another name=...'
        return f"{hook} takes no name=: set another name on its metric class (its 'name' attribute)"

    def update(self, metric: Metric, runner: Any, output: Any, label: Any, loss: Any) -> None:
        """Feed one iteration to ``metric``; override to pass other inputs."""
        metric.update(output, label, loss)

    def before_train_epoch(self, runner: Any) -> None:
        self._epoch = runner.states['epoch']
        resumed, self._resumed = self._resumed, None
        if 'train' in self.metrics:
            self.metrics['train'].reset()
            # The epoch the checkpoint was in. Resumed on several replicas, replica 0 alone takes the
            # sums back: the metric adds up the replicas, so each would count them once more.
            if resumed is not None and resumed['epoch'] == self._epoch and get_context().dp_rank == 0:
                self.metrics['train'].load_state_dict(resumed['train'])

    def state_dict(self) -> Dict[str, Any]:
        """The train metric's partial sums, when it can give them (Loss, Accuracy): a run resumed
        from a checkpoint taken mid-epoch then reports the same epoch values as without the stop.

        Only one process: in a data-parallel run each replica holds its own part and only replica
        0 writes the checkpoint, so there nothing is saved and a resumed epoch counts its steps
        after the resume (as a metric without ``state_dict`` does).
        """
        metric = self.metrics.get('train')
        if metric is None or (get_context().data_size or 1) > 1:
            return {}
        state = metric.state_dict()
        return {} if state is None else {'epoch': self._epoch, 'train': state}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._resumed = dict(state) if state and 'train' in state else None

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if loss is not None and 'train' in self.metrics:
            if self._direct:
                self.metrics['train'].update(output, label, loss)
            else:
                self.update(self.metrics['train'], runner, output, label, loss)

    def before_test_epoch(self, runner: Any) -> None:
        if 'test' in self.metrics:
            self.metrics['test'].reset()

    def after_test_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if 'test' in self.metrics and loss is not None:
            self.update(self.metrics['test'], runner, output, label, loss)
