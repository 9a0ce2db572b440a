"""The schema of ``runner.states``, documented once here.

``runner.states`` is a plain dict that hooks read and write:

=================  ==========================================================================
key                meaning
=================  ==========================================================================
``epoch``          the current training epoch, counted from 1; after it ends, the number of
                   completed epochs (0 before training). Restored from checkpoints.
``iteration``      optimizer steps done so far over the whole run; incremented right after
                   ``engine.step`` and before ``after_train_iter``. Restored from checkpoints.
``max_epochs``     ``epochs`` given to ``fit`` (None before ``fit``).
``max_steps``      ``max_steps`` given to ``fit``, else the iteration at which the last epoch
                   ends when the data loader has a length (``max_epochs * steps_per_epoch``,
                   unless a checkpoint of a run with another epoch length was resumed: then
                   counted on from its iteration), else None. Read before every step, so a
                   hook may lower it to stop the run early.
``steps_per_epoch`` optimizer steps in one pass over the training data:
                   ``len(train_dataloader) // engine.gradient_accumulation`` (None when the
                   loader has no length).
``nonfinite_skips`` training steps dropped because their loss was NaN/Inf (with the
                   engine's ``nonfinite_loss='skip'``; 0 otherwise). Restored from checkpoints.
``metrics``        ``{'train': {name: Metric}, 'test': {name: Metric}}``, filled by MetricHooks
                   when they are attached. Asking for a missing name raises a KeyError that
                   lists the names that exist.
=================  ==========================================================================

Only ``epoch``, ``iteration`` and ``nonfinite_skips`` are saved in checkpoints (with the data
position, see :mod:`colossal_runner.trainer.data_position`); hooks keep their own state through
``state_dict`` / ``load_state_dict``.
"""
from __future__ import annotations

from typing import Any, Dict

# The keys a checkpoint restores.
RESUMABLE_KEYS = ('epoch', 'iteration', 'nonfinite_skips')


class MetricDict(dict):
    """``{name: Metric}`` whose KeyError lists the metrics that do exist."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def __missing__(self, key: str) -> Any:
        available = ', '.join(sorted(self)) or 'none'
        raise KeyError(f'no {self.mode} metric named {key!r}; available {self.mode} metrics: '
                       f'[{available}]. Metrics are added by metric hooks, e.g. '
                       f"hooks=[dict(type='LossHook'), dict(type='AccuracyHook')].")


def new_states() -> Dict[str, Any]:
    """Fresh ``runner.states`` as documented in this module."""
    return dict(epoch=0, iteration=0, nonfinite_skips=0, max_epochs=None, max_steps=None,
                steps_per_epoch=None,
                metrics=dict(train=MetricDict('train'), test=MetricDict('test')))
