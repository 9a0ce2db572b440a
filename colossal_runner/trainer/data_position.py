"""Where the training data stood when a checkpoint was taken, so a resumed epoch sees the same batches.

An epoch's batch order is decided when its iterator is created: by ``sampler.set_epoch`` (torch's
``DistributedSampler``: seed + epoch), by the sampler's or the DataLoader's ``torch.Generator``
(``DataLoader(shuffle=True, generator=g)``), or by the global torch RNG (``shuffle=True`` without
a generator). The Trainer snapshots all of these just before ``iter(loader)``; a checkpoint stores
that snapshot, the batches consumed so far and the sampler's seed/epoch (the ``data`` entry).

Resuming replays the epoch's iterator from the snapshot and consumes the batches already trained
on (they are loaded, not trained), then puts back the random state of the moment of the save; the
next batch is the one the uninterrupted run trained next. Replaying is simpler and more general
than seeking inside torch's private iterator state, and it costs one pass of data loading.
A ``fit`` that raises in the middle of an epoch keeps the same entry in memory (``hold``), so
that the next ``fit`` of the Trainer replays the epoch likewise.

``end_begun`` says whether the epoch's end (its test pass, ``after_train_epoch``) had begun when
the entry was taken. ``finished`` alone cannot say it: an epoch that ``max_steps`` stopped in its
middle ends without its iterator being exhausted, so a checkpoint written during or after that
end (``epoch_N.pt``, ``save_last``) is ``finished: False`` too, like one taken at its last step
before the end. Entries written before the key existed lack it. A run resumed from such an entry
with a larger ``max_steps`` goes on with the epoch's steps (and runs its end again at its real
end); the Trainer holds the same entry in memory after an end that ``max_steps`` brought early,
so that a later ``fit`` of it does likewise.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, Iterator, List, Optional

import torch

from ..checkpoint import get_rng_state, set_rng_state


def _order_sampler(loader: Iterable) -> Any:
    """The sampler that orders the indices: ``loader.sampler``, or with a ``batch_sampler`` of one's
    own its sampler (torch then sets ``loader.sampler`` to a SequentialSampler it never iterates),
    or the batch sampler itself when it has no ``sampler``."""
    batch_sampler = getattr(loader, 'batch_sampler', None)
    if batch_sampler is None:
        return getattr(loader, 'sampler', None)
    return getattr(batch_sampler, 'sampler', batch_sampler)


def _samplers(loader: Iterable) -> List[Any]:
    """``loader.sampler``, its batch sampler's sampler and the batch sampler, each once."""
    batch_sampler = getattr(loader, 'batch_sampler', None)
    found: List[Any] = []
    for sampler in (getattr(loader, 'sampler', None), getattr(batch_sampler, 'sampler', None), batch_sampler):
        if sampler is not None and not any(sampler is s for s in found):
            found.append(sampler)
    return found


def _generators(loader: Iterable) -> Dict[str, torch.Generator]:
    found: Dict[str, torch.Generator] = {}
    candidates = (('loader', loader), ('sampler', _order_sampler(loader)),
                  ('batch_sampler', getattr(loader, 'batch_sampler', None)))
    for name, owner in candidates:
        gen = getattr(owner, 'generator', None)
        if isinstance(gen, torch.Generator) and not any(gen is g for g in found.values()):
            found[name] = gen
    return found


def _get_generators(loader: Iterable) -> Dict[str, torch.Tensor]:
    return {name: gen.get_state() for name, gen in _generators(loader).items()}


def _set_generators(loader: Iterable, states: Dict[str, torch.Tensor]) -> None:
    for name, gen in _generators(loader).items():
        if name in states:
            gen.set_state(states[name])


def _sampler_info(loader: Iterable) -> Dict[str, Any]:
    sampler = _order_sampler(loader)
    info: Dict[str, Any] = dict(type=type(sampler).__name__)
    for key in ('seed', 'epoch', 'shuffle', 'num_replicas', 'rank'):
        value = getattr(sampler, key, None)
        if isinstance(value, (bool, int)):
            info[key] = value
    return info


def set_sampler_epoch(loader: Iterable, epoch: int) -> None:
    """``set_epoch(epoch - 1)`` on the loader's sampler, its batch sampler's sampler and its batch
    sampler, each that has it (0-based, as DistributedSampler expects)."""
    for sampler in _samplers(loader):
        if callable(getattr(sampler, 'set_epoch', None)):
            sampler.set_epoch(epoch - 1)


class DataPosition:
    """The Trainer's record of the current epoch's data order and how far into it training is."""

    def __init__(self) -> None:
        self.loader: Optional[Iterable] = None
        self.epoch = 0
        self.steps_done = 0            # optimizer steps of the current epoch
        self.batches_per_step = 1
        self.steps_per_epoch: Optional[int] = None  # this run's; a resume checks its own against it
        self.finished = False          # the epoch's iterator was exhausted
        self.end_begun = False         # the epoch's end (test pass, after_train_epoch) has begun
        self.epoch_start: Optional[Dict[str, Any]] = None
        self.pending: Optional[Dict[str, Any]] = None   # a checkpoint's entry, for the next fit

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> Optional[Dict[str, Any]]:
        if self.loader is None or self.epoch_start is None:
            return None
        return dict(epoch=self.epoch, steps_done=self.steps_done, steps_per_epoch=self.steps_per_epoch,
                    batches=self.steps_done * self.batches_per_step, finished=self.finished,
                    end_begun=self.end_begun,
                    sampler=_sampler_info(self.loader), epoch_start=self.epoch_start,
                    generators=_get_generators(self.loader))

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        self.pending = dict(state) if state else None

    def hold(self, epoch: int) -> None:
        """``fit`` raised during the steps of ``epoch`` (or max_steps stopped them): keep where the
        data stood, as a checkpoint taken now would, so that the next ``fit`` replays the epoch's
        order rather than draw a new one. A checkpoint's entry not yet replayed is kept as it is."""
        if self.pending is None and self.epoch == epoch and not self.finished:
            state = self.state_dict()
            if state is not None:
                self.pending = dict(state, rng=get_rng_state())

    # ------------------------------------------------------------------ training
    def open_epoch(self, loader: Iterable, epoch: int, skip_steps: int, batches_per_step: int,
                   steps_per_epoch: Optional[int] = None) -> Iterator:
        """The epoch's data iterator, ``skip_steps`` optimizer steps in (call after set_epoch)."""
        saved = self.pending
        self.loader, self.epoch, self.batches_per_step = loader, epoch, batches_per_step
        self.steps_per_epoch = steps_per_epoch
        self.steps_done, self.finished, self.end_begun = skip_steps, False, False
        # No step done is replayed too (a fit that raised before the epoch's first step): the
        # epoch's iterator may have drawn from the generators already.
        replay = (saved is not None and not saved.get('finished') and saved.get('epoch') == epoch
                  and saved.get('steps_done') == skip_steps and saved.get('epoch_start'))
        if replay:
            self._check_sampler(loader, saved)
            set_rng_state(saved['epoch_start']['rng'])
            _set_generators(loader, saved['epoch_start']['generators'])
        elif saved is not None and saved.get('finished'):
            _set_generators(loader, saved.get('generators') or {})
        self.epoch_start = dict(rng=get_rng_state(), generators=_get_generators(loader))
        data_iter = iter(loader)
        for _ in range(skip_steps * batches_per_step):
            next(data_iter)  # batches the checkpoint had already trained on
        if replay and saved.get('rng'):
            set_rng_state(saved['rng'])  # back to the moment of the save (dropout, augmentation)
        self.pending = None  # only now: should the data raise while replaying, a next fit replays again
        return data_iter

    def replay_finished_epoch(self, loader: Iterable, epoch: int) -> None:
        """Before resuming at ``epoch``: replay the previous epoch when its last step was saved
        before its iterator was exhausted (an iteration checkpoint at an epoch's end), so the
        samplers' generators advance as they did in the uninterrupted run."""
        saved = self.pending
        if (saved is None or saved.get('finished') or saved.get('epoch') != epoch - 1
                or not saved.get('epoch_start')):
            return
        self.pending = None
        set_sampler_epoch(loader, epoch - 1)
        self._check_sampler(loader, saved)
        set_rng_state(saved['epoch_start']['rng'])
        _set_generators(loader, saved['epoch_start']['generators'])
        data_iter = iter(loader)
        for _ in range(saved.get('batches', 0)):
            next(data_iter)
        if saved.get('rng'):
            set_rng_state(saved['rng'])
        for _ in data_iter:  # the left-over batches, drawn after the save as in the uninterrupted run
            pass

    def end_epoch(self, exhausted: bool) -> None:
        self.finished = exhausted

    def begin_end(self) -> None:
        """The epoch's steps are over (all of them, or max_steps stopped it): its end begins."""
        self.end_begun = True

    def end_still_due(self, epoch: int) -> Optional[bool]:
        """For a checkpoint's entry taken in the middle of ``epoch`` (or at its last step, before
        its iterator was exhausted): True when the epoch's end had not begun then, so a resumed run
        still runs it, even when the checkpoint's iteration has reached max_steps; False when it
        had (max_steps stopped the epoch, and the checkpoint was written in or after its end: a run
        with the same max_steps has nothing left; one that trains further goes on with the epoch).
        None when no such entry is pending or it does not say (written before ``end_begun``)."""
        saved = self.pending
        if saved is None or saved.get('epoch') != epoch or saved.get('finished') is not False:
            return None
        begun = saved.get('end_begun')
        return None if not isinstance(begun, bool) else not begun

    @staticmethod
    def _check_sampler(loader: Iterable, saved: Dict[str, Any]) -> None:
        # Not the rank: replica 0 writes the checkpoint that every replica resumes from, and each
        # replays its own part of the same order. The number of replicas does change the parts.
        now, then = _sampler_info(loader), saved.get('sampler') or {}
        changed = {k: (then[k], now.get(k)) for k in ('type', 'seed', 'num_replicas')
                   if k in then and then[k] != now.get(k)}
        if changed:
            warnings.warn(f'resuming mid-epoch with a different data sampler than the checkpoint\'s '
                          f'(saved vs now: {changed}); the remaining batches of epoch {saved.get("epoch")} '
                          f'will differ from the uninterrupted run. Use the same seed and data settings '
                          f'to resume exactly.', UserWarning, stacklevel=3)
