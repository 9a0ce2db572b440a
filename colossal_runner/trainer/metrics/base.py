"""Metric: a value accumulated over an epoch on the model's device, reduced over data-parallel
replicas only when someone reads it."""
from __future__ import annotations

import math
import operator
from abc import ABCMeta
from itertools import chain
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist

from ...distributed import get_context


def reduce_over_data_group(values: torch.Tensor, op: str = 'sum') -> torch.Tensor:
    """Sum (or average with ``op='mean'``, the largest with ``op='max'``) ``values`` over the
    data-parallel group.

    Collective: every rank of the group must call it, in the same order. A no-op without a
    process group or with a single replica.
    """
    context = get_context()
    if context.data_group is None or context.data_size <= 1 or not dist.is_initialized():
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.MAX if op == 'max' else dist.ReduceOp.SUM,
                    group=context.data_group)
    if op == 'mean':
        values = values / context.data_size
    return values


class PendingSteps:
    """Tensors of the latest steps, held so that a metric reduces many steps with one set of ops.

    A metric that counted every step as it came would run its few small tensor operations
    (argmax, compare, sum, add) once per step. For a small model those are a measurable share
    of the whole step: inside a training loop each costs several times what it costs in a tight
    timing loop (benchmarks/overhead.py: Trainer.fit with the loss and accuracy hooks took about
    5% of the step more counting every step than counting in groups of 16). Held
    here and reduced every ``max_steps`` steps, the same operations run once, on the held steps
    concatenated. Nothing is copied: the tensors are referenced, at most ``max_steps`` steps and
    ``max_elements`` elements of them (larger tensors are not held at all), so memory stays small.

    A held tensor must not change before it is reduced. Outputs of a model and batches of a
    DataLoader never do; a loader that reuses its buffers in place would. Every in-place operation
    advances a tensor's version counter (``_version``, which autograd uses to notice a saved
    tensor that changed), and the counters never go down; so the sum of a step's counters is
    recorded when it is held and compared when it is reduced, and such a loader fails loudly
    instead of being counted wrong. ``max_steps=1`` reduces every step as it comes instead.
    """

    def __init__(self, max_steps: int, max_elements: int = 1 << 20):
        self.max_steps = max_steps
        # the largest step held; -1 when nothing is held (max_steps == 1)
        self.step_limit = max_elements if max_steps > 1 else -1
        self.max_elements = max_elements
        self.items: List[Tuple[torch.Tensor, ...]] = []  # held steps, oldest first
        self.versions: List[int] = []  # per held step, the sum of its tensors' version counters
        self.elements = 0
        # the last step taken and its sum: the latest step once nothing is held
        self.taken: Optional[Tuple[Tuple[torch.Tensor, ...], int]] = None

    def add(self, step: Tuple[torch.Tensor, ...], version: int, numel: int) -> bool:
        """Hold one step: its tensors, the sum of their ``_version`` counters now (the caller adds
        them up) and its size (at most ``step_limit``). True when the held steps should now be
        reduced. Runs every step, so it does nothing else."""
        items = self.items
        items.append(step)
        self.versions.append(version)
        self.elements += numel
        return len(items) >= self.max_steps or self.elements > self.max_elements

    def take(self, what: str) -> List[Tuple[torch.Tensor, ...]]:
        """The held steps (oldest first), checked to be unchanged; the buffer is emptied."""
        items, versions = self.items, self.versions
        if not items:
            return items
        self.items, self.versions, self.elements = [], [], 0
        self.taken = (items[-1], versions[-1])
        # Counters only go up, so one sum over every held tensor tells whether any changed;
        # only then is each step checked, to say which one.
        if sum(map(_VERSION, chain.from_iterable(items))) != sum(versions):
            for i, (step, version) in enumerate(zip(items, versions)):
                if sum(map(_VERSION, step)) != version:
                    _raise_changed(what, len(items) - 1 - i)
        return items

    def last_step(self, what: str) -> Optional[Tuple[torch.Tensor, ...]]:
        """The tensors of the last step added (also after :meth:`take`), checked to be unchanged;
        None before the first."""
        if self.items:
            step, version = self.items[-1], self.versions[-1]
        elif self.taken is not None:
            step, version = self.taken
        else:
            return None
        if sum(map(_VERSION, step)) != version:
            _raise_changed(what, 0)
        return step


_VERSION = operator.attrgetter('_version')


def _raise_changed(what: str, ago: int) -> None:
    raise RuntimeError(
        f'{what}: a tensor of a step held for counting ({ago} steps before the latest) was modified in '
        f'place before it was counted: the data loader or the model reuses its buffers. Build the '
        f'metric with defer_steps=1 to count each step as it comes.')


def _accum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == 'mps' else torch.float64


class _ResetAfterInit(ABCMeta):
    """Calls ``reset()`` once the whole ``__init__`` has run: a subclass may then set what its
    ``reset()`` reads (``self.num_classes``) before or after ``super().__init__()``. Built on
    ABCMeta so that a metric may also derive from ``abc.ABC`` without a metaclass conflict."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        metric = super().__call__(*args, **kwargs)
        if not (hasattr(metric, 'device') and hasattr(metric, 'epoch_only')):
            raise TypeError(f'{cls.__name__}.__init__ did not call super().__init__(): the Metric base '
                            f'sets epoch_only and device there (which reset(), zeros() and the loggers '
                            f'read). Call super().__init__(**kwargs) in it, passing on epoch_only / device '
                            f'when it takes them.')
        metric.reset()
        return metric


class Metric(metaclass=_ResetAfterInit):
    """Base class of metrics: ``reset()``, ``update(...)``, ``get_last_step_value()``,
    ``get_accumulated_value()``, ``is_better(a, b)``.

    State lives in tensors on ``device`` so that ``update`` never waits for the device; the
    getters return Python floats and therefore synchronize, and they reduce over the
    data-parallel group, so every rank of that group must call them together (hooks read on
    every rank and only the logging rank writes). A value with nothing accumulated is NaN.

    Args:
        epoch_only: the value is only meaningful over a whole epoch; per-step loggers skip it.
        device: where the state lives; MetricHook moves it to the engine's device.
    """

    #: the key in ``runner.states['metrics'][mode]``; the class name by default.
    name: Optional[str] = None

    def __init__(self, epoch_only: bool = False, device: Union[str, torch.device, None] = None):
        self.epoch_only = epoch_only
        self.device = torch.device(device if device is not None else 'cpu')
        # no reset() here: it follows the whole __init__, the subclass's included (_ResetAfterInit)

    def to(self, device: Union[str, torch.device]) -> 'Metric':
        """Move the state to ``device`` (resets it: call before accumulating)."""
        self.device = torch.device(device)
        self.reset()
        return self

    def zeros(self, n: int) -> torch.Tensor:
        """``n`` zero accumulators on this metric's device."""
        return torch.zeros(n, dtype=_accum_dtype(self.device), device=self.device)

    def reset(self) -> None:
        """Forget everything accumulated (called before each epoch)."""
        raise NotImplementedError(f'{type(self).__name__}.reset() is not implemented: every metric needs it, '
                                  f'to set its accumulators (self.zeros(n)); it is called once the metric is '
                                  f'built and before each epoch.')

    def update(self, *args: Any) -> None:
        """Accumulate one step; MetricHook passes ``(output, label, loss)`` by default."""
        raise NotImplementedError(f'{type(self).__name__}.update() is not implemented: every metric needs '
                                  f'it; MetricHook calls update(output, label, loss) after each iteration.')

    def get_last_step_value(self) -> float:
        """The value of the latest step, reduced over the data-parallel group."""
        raise NotImplementedError(f'{type(self).__name__}.get_last_step_value() is not implemented: per-step '
                                  f'loggers (LogMetricByStepHook, TensorboardHook) read it. Implement it, or '
                                  f'build the metric with epoch_only=True (a value only meaningful over a '
                                  f'whole epoch), which they skip.')

    def get_accumulated_value(self) -> float:
        """The value over every step since the last reset, reduced over the data-parallel group."""
        raise NotImplementedError(f'{type(self).__name__}.get_accumulated_value() is not implemented: every '
                                  f'metric needs it; the epoch loggers, evaluate() and save_best read it.')

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """What this process has accumulated since the last reset (tensors, numbers, lists), for a
        checkpoint taken in the middle of an epoch; None when the metric cannot be resumed (the
        default), and then a resumed epoch counts only its steps after the resume."""
        return None

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from what :meth:`state_dict` returned (called right after a reset)."""
        raise NotImplementedError(f'{type(self).__name__}.state_dict() returned a state but the class has no '
                                  f'load_state_dict(state) to take it back: define both, or neither (then a '
                                  f'resumed epoch counts only its steps after the resume).')

    @staticmethod
    def is_better(a: float, b: float) -> bool:
        """Whether value ``a`` is better than ``b`` (higher is better by default); NaN never is."""
        if math.isnan(a):
            return False
        return math.isnan(b) or a > b

    @staticmethod
    def ratio(num: torch.Tensor, den: torch.Tensor) -> float:
        """``num / den`` as a float, NaN when ``den`` is zero."""
        den_value = float(den)
        return float(num) / den_value if den_value else float('nan')

    def __repr__(self) -> str:
        return f'{type(self).__name__}(epoch_only={self.epoch_only}, device={self.device})'
