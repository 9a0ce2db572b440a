"""torch's own schedulers, given the common ``(optimizer, total_steps, ...)`` signature.

``total_steps`` is not needed by these formulas; taking it lets every scheduler be built
from a config in the same way (the Trainer passes the run's number of optimizer steps).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Union

from torch.optim import Optimizer
from torch.optim import lr_scheduler as torch_lr

from ...registry import LR_SCHEDULERS
from .base import check_fraction, check_total_steps

LambdaType = Union[Callable[[int], float], List[Callable[[int], float]]]


@LR_SCHEDULERS.register_module()
class StepLR(torch_lr.StepLR):
    """``base_lr * gamma ** (t // step_size)``."""

    def __init__(self, optimizer: Optimizer, total_steps: int, step_size: int = 1, gamma: float = 0.1,
                 last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f'step_size must be a positive int, got {step_size!r}')
        super().__init__(optimizer, step_size=step_size, gamma=gamma, last_epoch=last_epoch)


@LR_SCHEDULERS.register_module()
class ExponentialLR(torch_lr.ExponentialLR):
    """``base_lr * gamma ** t``."""

    def __init__(self, optimizer: Optimizer, total_steps: int, gamma: float = 0.1, last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        super().__init__(optimizer, gamma=gamma, last_epoch=last_epoch)


def _check_lambda(lr_lambda: Optional[LambdaType], name: str) -> LambdaType:
    ok = callable(lr_lambda) or (isinstance(lr_lambda, (list, tuple)) and all(map(callable, lr_lambda)))
    if not ok:
        raise TypeError(f'{name} needs lr_lambda: a function of the step (or a list of them, one per param '
                        f'group), got {type(lr_lambda).__name__}')
    return list(lr_lambda) if isinstance(lr_lambda, tuple) else lr_lambda


@LR_SCHEDULERS.register_module()
class LambdaLR(torch_lr.LambdaLR):
    """``base_lr * lr_lambda(t)``."""

    def __init__(self, optimizer: Optimizer, total_steps: int, lr_lambda: Optional[LambdaType] = None,
                 last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        super().__init__(optimizer, _check_lambda(lr_lambda, 'LambdaLR'), last_epoch=last_epoch)


@LR_SCHEDULERS.register_module()
class MultiplicativeLR(torch_lr.MultiplicativeLR):
    """``lr(t) = lr(t - 1) * lr_lambda(t)`` for ``t >= 1``; ``base_lr`` at ``t = 0``."""

    def __init__(self, optimizer: Optimizer, total_steps: int, lr_lambda: Optional[LambdaType] = None,
                 last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        super().__init__(optimizer, _check_lambda(lr_lambda, 'MultiplicativeLR'), last_epoch=last_epoch)


@LR_SCHEDULERS.register_module()
class OneCycleLR(torch_lr.OneCycleLR):
    """torch's one-cycle policy over ``total_steps``; ``max_lr`` defaults to the optimizer's LRs.

    The LR starts at ``max_lr / div_factor``, rises to ``max_lr`` over ``pct_start`` of the
    steps and anneals to ``max_lr / div_factor / final_div_factor`` at ``total_steps - 1``.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, max_lr: Union[float, List[float], None] = None,
                 pct_start: float = 0.3, anneal_strategy: str = 'cos', cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False, last_epoch: int = -1):
        self.total_steps = check_total_steps(total_steps)
        if max_lr is None:
            max_lr = [group['lr'] for group in optimizer.param_groups]
        super().__init__(optimizer, max_lr=max_lr, total_steps=total_steps,
                         pct_start=check_fraction('pct_start', pct_start), anneal_strategy=anneal_strategy,
                         cycle_momentum=cycle_momentum, base_momentum=base_momentum,
                         max_momentum=max_momentum, div_factor=div_factor, final_div_factor=final_div_factor,
                         three_phase=three_phase, last_epoch=last_epoch)

    def _get_closed_form_lr(self) -> List[float]:
        # torch's get_lr is already a function of the step count; it only warns when called
        # outside step(). A resumed run with another total_steps recomputes its LR with it.
        with torch_lr._enable_get_lr_call(self):
            return self.get_lr()
