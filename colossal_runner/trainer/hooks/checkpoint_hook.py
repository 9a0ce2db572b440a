"""SaveCheckpointHook / LoadCheckpointHook: periodic, pruned, best-metric and resumable checkpoints."""
from __future__ import annotations

import difflib
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.distributed as dist

from ...checkpoint import (check_writable, checkpoint_name, checkpoints_after, find_latest, latest_name,
                           list_checkpoints, load_agreed, point_latest, remove_stale_temporaries,
                           save_checkpoint)
from ...config import ConfigError
from ...distributed import get_context
from ...registry import HOOKS
from ..priority import Priority
from .base_hook import BaseHook, dir_in_work_dir
from ...utils.checks import check_positive_int


def _stage() -> Optional[int]:
    context = get_context()
    return context.stage if context.pipeline_size > 1 else None


class SaveBestError(ConfigError, KeyError):
    """``save_best`` names no metric: a KeyError (a missing key of ``runner.states['metrics']``) and
    a ConfigError, so that tools report it as a bad config (exit 2) naming ``hooks[i].save_best``."""

    __str__ = BaseException.__str__  # the sentence as it is, not KeyError's repr of it


@HOOKS.register_module()
class SaveCheckpointHook(BaseHook):
    """Saves the full training state every ``interval`` epochs (or iterations).

    Every rank of data-parallel replica 0 writes its own stage's file (``epoch_{E}.pt``,
    ``epoch_{E}_stage{s}.pt`` with several stages); ``latest.pt`` links the newest.
    With ``save_last`` (the default, as in mmcv) the state at the end of training is saved too
    when the interval did not fall on the last epoch or iteration, so ``latest.pt`` always holds
    the final weights: 135 iterations with ``interval=20, by_epoch=False`` end with ``iter_135.pt``.
    ``by_epoch=False`` saves mid-epoch too: the file records the data position (see
    :mod:`colossal_runner.trainer.data_position`), so a resumed run trains on the same batches.
    Before training the directory is checked for writability and temporaries of saves that
    were killed are removed. A run resumed from another checkpoint than the one ``latest.pt``
    names (an older one, by its path) points ``latest.pt`` at the one it resumed from, with a
    warning naming the later checkpoints it leaves behind: a later ``--resume`` without a path
    then continues this run, whose records ``metrics.jsonl`` and TensorBoard keep, not the
    abandoned one, whose records after the checkpoint this run replaces.

    Args:
        interval: epochs (``by_epoch=True``) or iterations between saves.
        checkpoint_dir: where to write; ``<work_dir>/checkpoints`` when None.
        by_epoch: save after epochs, else after iterations (``iter_{N}.pt``).
        max_keep: keep only the newest ``max_keep`` periodic files (None keeps all); the final
            file of ``save_last`` counts as one of them.
        save_best: a metric name, ``'Accuracy'`` or ``'test/Accuracy'`` / ``'train/Loss'``; after
            each epoch whose value is better (the metric's ``is_better``) than every earlier one,
            ``best.pt`` is written. A bare name means the test metric when one exists.
        save_last: after training, save the final state unless the last save already holds it
            (the interval divided the run, or nothing was trained). It is named as this hook's
            periodic files: ``epoch_{E}.pt`` with ``by_epoch`` (``E`` the last epoch run, also
            when ``max_steps`` ended it early), else ``iter_{N}.pt``; ``latest.pt`` points at it,
            and resuming from it continues exactly as the uninterrupted run would.
        priority: LOW, after metric writers and the LR scheduler's epoch step.
    """

    def __init__(self, interval: int = 1, checkpoint_dir: Optional[str] = None, by_epoch: bool = True,
                 max_keep: Optional[int] = None, save_best: Optional[str] = None, save_last: bool = True,
                 priority: Union[int, str, Priority] = 'LOW'):
        super().__init__(priority)
        interval = check_positive_int('interval', interval)
        if max_keep is not None and (not isinstance(max_keep, int) or isinstance(max_keep, bool)
                                     or max_keep < 1):
            raise ValueError(f'max_keep must be None (keep all) or a positive int, got {max_keep!r}')
        if save_best is not None and not isinstance(save_best, str):
            raise TypeError(f"save_best must be a metric name such as 'Accuracy' or 'test/Loss', "
                            f'got {type(save_best).__name__}: {save_best!r}')
        if not isinstance(save_last, bool):
            raise TypeError(f'save_last must be True (save the final state after training) or False, '
                            f'got {type(save_last).__name__}: {save_last!r}')
        self.interval = interval
        self.checkpoint_dir = checkpoint_dir
        self.by_epoch = by_epoch
        self.max_keep = max_keep
        self.save_best = save_best
        self.save_last = save_last
        # The iteration whose state the newest file of this fit holds (the start: nothing new yet).
        self._saved_at: Optional[int] = None
        self.saved: List[str] = []          # periodic files this hook wrote, oldest first
        self.best_value = float('nan')
        self.best_epoch: Optional[int] = None
        # (config file, key path) when built from a config, for the save_best error
        self.config_source: Tuple[Optional[str], Optional[str]] = (None, None)

    def after_hook_is_attached(self, runner: Any) -> None:
        self.checkpoint_dir = dir_in_work_dir(runner, self.checkpoint_dir, 'SaveCheckpointHook',
                                              'checkpoint_dir', 'checkpoints')

    def check_save_best(self, runner: Any, filename: Optional[str] = None,
                        key_path: Optional[str] = None) -> None:
        """Raise :class:`SaveBestError` if ``save_best`` names no metric ``runner`` has.

        ``before_train`` calls it, with the config file and ``hooks[i].save_best`` for the message
        when :func:`colossal_runner.initialize.build_hooks` built this hook from a config
        (``config_source``).
        """
        if self.save_best is not None:
            self._best_metric(runner, filename, key_path)

    def _best_metric(self, runner: Any, filename: Optional[str] = None, key_path: Optional[str] = None):
        mode, _, name = self.save_best.rpartition('/')
        metrics = runner.states['metrics']
        bare = not mode
        if bare:
            mode = 'test' if name in metrics['test'] else 'train'
        if mode not in ('train', 'test'):
            raise ConfigError(f"SaveCheckpointHook: save_best={self.save_best!r}: the mode must be 'train' "
                              f"or 'test', e.g. 'test/Accuracy'", filename, key_path)
        if name not in metrics[mode]:
            raise SaveBestError(self._missing_metric(metrics, mode, name, bare), filename, key_path)
        return metrics[mode][name]

    def _missing_metric(self, metrics: Dict[str, Any], mode: str, name: str, bare: bool) -> str:
        """The error for a save_best that names no metric: both modes' metrics, and the closest name."""
        what = (f'no test metric named {name!r} (a bare name means the test metric when there is one) '
                f'and no train metric of that name either' if bare else f'no {mode} metric named {name!r}')
        listed = '; '.join(f"{m} metrics: [{', '.join(sorted(metrics[m])) or 'none'}]"
                           for m in ('test', 'train'))
        names = sorted({n if bare else f'{m}/{n}' for m in ('test', 'train') for n in metrics[m]})
        close = difflib.get_close_matches(name if bare else f'{mode}/{name}', names, n=1)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        return (f'SaveCheckpointHook: save_best={self.save_best!r}: {what}; {listed}.{hint} Set save_best '
                f"to one of them ('test/<name>' or 'train/<name>' picks the mode), or add the metric hook "
                f'that makes it.')

    def before_train(self, runner: Any) -> None:
        self._saved_at = runner.states['iteration']  # a resumed state is already on disk
        self.check_save_best(runner, *self.config_source)  # fail now, not after the first epoch
        if get_context().dp_rank == 0:
            check_writable(self.checkpoint_dir)  # an unwritable directory fails now, not at the first save
            removed = remove_stale_temporaries(self.checkpoint_dir, _stage())
            if removed:
                runner.logger.info(f'removed {len(removed)} partial checkpoint file(s) an interrupted save '
                                   f'left in {self.checkpoint_dir}')
            self._latest_to_resumed(runner)

    def _latest_to_resumed(self, runner: Any) -> None:
        """When the run goes on from a checkpoint other than the one latest.pt names, point latest.pt
        at it (this stage's; each writing rank its own): latest.pt names this run's newest state."""
        resumed = getattr(runner, 'resumed_from', None)
        if not resumed or getattr(runner, 'resumed_at', None) != runner.states['iteration']:
            return  # a fresh run, or one that has trained on since it was resumed
        stage = _stage()
        latest = find_latest(self.checkpoint_dir, stage)
        if latest is None or os.path.realpath(latest) == os.path.realpath(resumed):
            return  # nothing saved here yet (a resume from another directory), or latest is it already
        iteration, epochs_done = runner.resume_point()  # (raises for a position the run cannot go on from)
        point_latest(self.checkpoint_dir, resumed, stage)
        later = checkpoints_after(self.checkpoint_dir, iteration, epochs_done, stage)
        link = os.path.join(self.checkpoint_dir, latest_name(stage))
        if later:
            runner.logger.warning(
                f'resumed from {resumed}, an earlier checkpoint than the newest: {self.checkpoint_dir} holds '
                f'checkpoints taken after it by a run that went on from there before ({", ".join(later)}). '
                f'This run leaves them behind (its own saves replace those of the same name), and its '
                f'records replace theirs in metrics.jsonl and TensorBoard; {link} now names {resumed}, so '
                f'that --resume without a path continues this run')
        else:
            runner.logger.info(f'{link} now names {resumed}, the checkpoint this run resumed from '
                               f'(it named {latest})')

    def _path(self, name: str) -> str:
        return os.path.join(self.checkpoint_dir, name)

    def _save(self, runner: Any, kind: str, number: int) -> None:
        self._saved_at = runner.states['iteration']  # on every rank: after_train decides alike
        if get_context().dp_rank != 0:
            return
        name = checkpoint_name(kind, number, _stage())
        if name in self.saved:
            self.saved.remove(name)
        self.saved.append(name)
        save_checkpoint(runner.state_dict(), self._path(name))
        runner.logger.info(f'saved checkpoint {self._path(name)}')
        while self.max_keep is not None and len(self.saved) > self.max_keep:
            old = self._path(self.saved.pop(0))
            if os.path.exists(old):
                os.remove(old)

    def _check_best(self, runner: Any) -> None:
        metric = self._best_metric(runner)
        value = torch.tensor([metric.get_accumulated_value()], dtype=torch.float64)
        context = get_context()
        if context.pipeline_size > 1 and context.pipeline_group is not None and dist.is_initialized():
            # Only the last stage computes metrics; every stage must agree on "better".
            value = value.to(runner.engine.device)
            dist.broadcast(value, src=context.pipeline_ranks[-1], group=context.pipeline_group)
        value = float(value)
        if math.isnan(value) or not metric.is_better(value, self.best_value):
            return
        self.best_value, self.best_epoch = value, runner.states['epoch']
        if context.dp_rank == 0:
            stage = _stage()
            name = f'best_stage{stage}.pt' if stage is not None else 'best.pt'
            save_checkpoint(runner.state_dict(), self._path(name), update_latest=False)
            runner.logger.info(f'new best {self.save_best}={value:.6g} at epoch {self.best_epoch}: '
                               f'saved {self._path(name)}')

    def after_train_iter(self, runner: Any, output: Any, label: Any, loss: Any) -> None:
        if not self.by_epoch and runner.states['iteration'] % self.interval == 0:
            self._save(runner, 'iter', runner.states['iteration'])

    def after_train_epoch(self, runner: Any) -> None:
        if self.save_best is not None:
            self._check_best(runner)  # first, so the periodic file holds the updated best
        if self.by_epoch and runner.states['epoch'] % self.interval == 0:
            self._save(runner, 'epoch', runner.states['epoch'])

    def after_train(self, runner: Any) -> None:
        iteration = runner.states['iteration']
        if not self.save_last or iteration == self._saved_at:
            return
        if self.by_epoch:
            self._save(runner, 'epoch', runner.states['epoch'])
        else:
            self._save(runner, 'iter', iteration)

    def state_dict(self) -> Dict[str, Any]:
        return dict(saved=list(self.saved), best_value=self.best_value, best_epoch=self.best_epoch)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.saved = list(state.get('saved', []))
        self.best_value = float(state.get('best_value', float('nan')))
        self.best_epoch = state.get('best_epoch')


@HOOKS.register_module()
class LoadCheckpointHook(BaseHook):
    """Loads a checkpoint before training (or before a standalone evaluation).

    A trainer resumed from a checkpoint of its own run (``trainer.resume``, as ``tools/train.py
    --resume`` does; not one that merely trained in this process) is not loaded into: the resume
    wins, as mmcv's ``resume_from`` wins over ``load_from``, so a fine-tune run killed mid-way
    continues with its own weights rather than the pretrained ones. The skip is logged.

    Args:
        checkpoint_dir: the directory SaveCheckpointHook wrote, or one checkpoint file (with
            ``finetune=True`` also bare weights a plain torch loop saved).
        epoch: load ``epoch_{epoch}.pt``; -1 loads the newest complete checkpoint.
        finetune: load the model weights only: training starts at epoch 1 with a fresh
            optimizer, scheduler and hooks.
        strict: the checkpoint's model keys must match the model's exactly; with False,
            matching weights load and the rest keep their values.
        priority: HIGHEST, so that the restored ``runner.states`` are there for every other hook.
    """

    def __init__(self, checkpoint_dir: str, epoch: int = -1, finetune: bool = False, strict: bool = True,
                 priority: Union[int, str, Priority] = 'HIGHEST'):
        super().__init__(priority)
        if not isinstance(epoch, int) or isinstance(epoch, bool) or (epoch < 1 and epoch != -1):
            raise ValueError(f'epoch must be a positive epoch number or -1 for the latest, got {epoch!r}')
        self.checkpoint_dir = checkpoint_dir
        self.epoch = epoch
        self.finetune = finetune
        self.strict = strict
        self.loaded = False

    def checkpoint_path(self) -> str:
        """The file to load, with an error listing what exists when it is missing."""
        path = self.checkpoint_dir
        if os.path.isfile(path) or (not os.path.isdir(path) and path.endswith(('.pt', '.pth'))):
            # one file, e.g. weights a plain torch loop saved, or epoch_3.pt of a pipeline run whose
            # stages' files (epoch_3_stage1.pt) load_agreed finds; it says what is missing, if anything
            if self.epoch != -1:
                raise ValueError(f'LoadCheckpointHook: checkpoint_dir {self.checkpoint_dir!r} is a file, so '
                                 f'epoch={self.epoch} cannot choose among epochs: leave epoch out to load '
                                 f'that file, or give the directory that holds epoch_{self.epoch}.pt')
            return self.checkpoint_dir
        if not os.path.isdir(self.checkpoint_dir):
            raise FileNotFoundError(f'LoadCheckpointHook: checkpoint_dir {self.checkpoint_dir!r} does not '
                                    f'exist (working directory {os.getcwd()!r}); point it at the '
                                    f'directory SaveCheckpointHook wrote.')
        stage = _stage()
        existing = list_checkpoints(self.checkpoint_dir, stage)
        if self.epoch == -1:
            if not existing:
                raise FileNotFoundError(f'LoadCheckpointHook: no checkpoint in {self.checkpoint_dir!r}; '
                                        f'it holds {sorted(os.listdir(self.checkpoint_dir))}')
            return self.checkpoint_dir  # resolved to the newest complete file by load_checkpoint
        name = checkpoint_name('epoch', self.epoch, stage)
        if name not in existing:
            raise FileNotFoundError(f'LoadCheckpointHook: no checkpoint for epoch {self.epoch} ({name}) in '
                                    f'{self.checkpoint_dir!r}; available: {existing or "none"}. '
                                    f'Use epoch=-1 for the latest.')
        return os.path.join(self.checkpoint_dir, name)

    def _load(self, runner: Any) -> None:
        if self.loaded:
            return
        at = runner.states
        if getattr(runner, 'resumed_at', None) == at['iteration']:
            # Loading now would overwrite the resumed weights (finetune) or move the run back to
            # this hook's epoch, while the optimizer, schedule and step count stay resumed.
            self.loaded = True  # said once, not again at each evaluation
            runner.logger.info(f"LoadCheckpointHook: not loading {self.checkpoint_dir!r} (epoch "
                               f"{'latest' if self.epoch == -1 else self.epoch}): the run was resumed from "
                               f"a checkpoint (epoch {at['epoch']}, iteration {at['iteration']}), which "
                               f'wins over this hook, as resume_from wins over load_from in mmcv')
            return
        path = self.checkpoint_path()
        # every stage at the same moment (see load_agreed), unless only the weights are wanted
        state = load_agreed(path, check=not self.finetune, stage=_stage())
        runner.load_state_dict(state, strict=self.strict, finetune=self.finetune)
        self.loaded = True
        done = state.get('states')
        note = ', weights only' if self.finetune else ''
        # bare weights (a plain torch.save of a state_dict) load with finetune and have no progress
        where = (f"epoch {done['epoch']}, iteration {done['iteration']}" if isinstance(done, Mapping)
                 else 'bare model weights')
        runner.logger.info(f'loaded checkpoint from {path} ({where}{note})')

    def before_train(self, runner: Any) -> None:
        self._load(runner)

    def before_test(self, runner: Any) -> None:
        self._load(runner)
