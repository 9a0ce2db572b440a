"""The Trainer's cost per iteration, side by side with a hand-written PyTorch loop.

Every contender trains the same tiny model (Linear(32,64)-ReLU-Linear(64,10)) on the same
in-memory data (20,000 samples, batch 32, 2 epochs) from the same seed and data order, with
one thread. Contenders run interleaved (A B C A B C ...) and the figures are medians over
repetitions, because this machine is shared and noisy. All rows must end on the same loss:
otherwise they did not do the same arithmetic and the timing means nothing.

    python benchmarks/overhead.py [--repeats 5] [--samples 20000] [--epochs 2]

Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from colossal_runner.engine import Engine  # noqa: E402
from colossal_runner.nn.lr_scheduler import CosineAnnealingLR  # noqa: E402
from colossal_runner.trainer import Trainer  # noqa: E402

WARMUP_ITERS = 50  # iterations left out of the steady-state figure (allocator and cache warm-up)


def make_data(samples: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 32, generator=g)
    w = torch.randn(32, 10, generator=g)
    y = (x @ w).argmax(dim=1)
    return TensorDataset(x, y)


def make_run(dataset: TensorDataset, epochs: int, batch_size: int, seed: int = 1):
    """Fresh model, optimizer, scheduler and loader, identical for every contender."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps = epochs * (len(dataset) // batch_size)
    scheduler = CosineAnnealingLR(optimizer, steps)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    return model, nn.CrossEntropyLoss(), optimizer, scheduler, loader


class IterTimer:
    """Timestamps of every iteration end, to split warm-up from steady state."""

    def __init__(self):
        self.stamps: List[float] = []

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def steady_ms(self) -> float:
        s = self.stamps[WARMUP_ITERS:]
        return (s[-1] - s[0]) / (len(s) - 1) * 1e3


def run_hand_written(dataset, epochs, batch_size):
    t0 = time.perf_counter()
    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    timer = IterTimer()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            timer.tick()
    return loss.item(), timer, time.perf_counter() - t0, model


def run_engine(dataset, epochs, batch_size):
    t0 = time.perf_counter()
    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    engine = Engine(model, criterion, optimizer, lr_scheduler=scheduler)
    engine.train()
    timer = IterTimer()
    for _ in range(epochs):
        it = iter(loader)
        for _ in range(len(loader)):
            _, _, loss = engine.step(it)
            timer.tick()
        next(it, None)  # end the epoch as a `for` loop does (the sampler draws when exhausted)
    return loss.item(), timer, time.perf_counter() - t0, model


def run_trainer(dataset, epochs, batch_size, with_hooks=True):
    from colossal_runner.trainer.hooks import BaseHook

    class TickHook(BaseHook):
        def __init__(self, timer):
            super().__init__(priority='LOWEST')
            self.timer = timer
            self.last_loss = None

        def after_train_iter(self, runner, output, label, loss):
            self.timer.tick()
            self.last_loss = loss

    t0 = time.perf_counter()
    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    engine = Engine(model, criterion, optimizer, lr_scheduler=scheduler)
    timer = IterTimer()
    tick = TickHook(timer)
    hooks = [dict(type='LossHook'), dict(type='AccuracyHook'), dict(type='LRSchedulerHook'),
             dict(type='LogMetricByEpochHook'), tick] if with_hooks else [tick]
    trainer = Trainer(engine, hooks=hooks)
    trainer.fit(loader, epochs=epochs, display_progress=False)
    return tick.last_loss.item(), timer, time.perf_counter() - t0, model


def run_trainer_bare(dataset, epochs, batch_size):
    """The loop alone: no metric, LR or logging hooks (the timing hook only)."""
    return run_trainer(dataset, epochs, batch_size, with_hooks=False)


def optional_contenders() -> Dict[str, Callable]:
    """Rows for other frameworks, only when they happen to be installed (never a dependency)."""
    rows: Dict[str, Callable] = {}
    try:
        import ignite.engine as ie

        def run_ignite(dataset, epochs, batch_size):
            t0 = time.perf_counter()
            model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
            trainer = ie.create_supervised_trainer(model, optimizer, criterion)
            timer = IterTimer()
            trainer.add_event_handler(ie.Events.ITERATION_COMPLETED,
                                      lambda e: (scheduler.step(), timer.tick()))
            state = trainer.run(loader, max_epochs=epochs)
            return float(state.output), timer, time.perf_counter() - t0, model

        rows['ignite'] = run_ignite
    except ImportError:
        pass
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--samples', type=int, default=20000)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger('colossal_runner').setLevel(logging.WARNING)
    load_start = os.getloadavg()
    dataset = make_data(args.samples)
    contenders: Dict[str, Callable] = {'hand-written loop': run_hand_written, 'Engine.step loop': run_engine,
                                       'Trainer.fit': run_trainer, 'Trainer.fit, no hooks': run_trainer_bare,
                                       **optional_contenders()}
    steady: Dict[str, List[float]] = {k: [] for k in contenders}
    total: Dict[str, List[float]] = {k: [] for k in contenders}
    losses: Dict[str, float] = {}
    params: Dict[str, torch.Tensor] = {}
    names = list(contenders)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate who goes first
        for name in order:
            loss, timer, seconds, model = contenders[name](dataset, args.epochs, args.batch_size)
            steady[name].append(timer.steady_ms())
            total[name].append(seconds)
            losses[name] = loss
            params[name] = torch.cat([p.detach().flatten() for p in model.parameters()])
    load_end = os.getloadavg()

    base = 'hand-written loop'
    base_ms = statistics.median(steady[base])
    identical = {k: bool(torch.equal(params[k], params[base])) for k in names}
    print(f'load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; '
          f'{args.samples} samples, batch {args.batch_size}, {args.epochs} epochs, '
          f'{args.repeats} repeats, 1 thread')
    print(f"{'contender':<22} {'ms/iter':>9} {'ratio':>7} {'end-to-end s':>13} {'final loss':>12} "
          f"{'same params':>12}")
    result = {'benchmark': 'overhead', 'load_start': load_start[0], 'load_end': load_end[0], 'rows': {}}
    for name in names:
        ms = statistics.median(steady[name])
        row = dict(ms_per_iter=round(ms, 5), ratio=round(ms / base_ms, 4),
                   end_to_end_s=round(statistics.median(total[name]), 4), final_loss=losses[name],
                   identical_params=identical[name])
        result['rows'][name] = row
        print(f'{name:<22} {ms:>9.4f} {ms / base_ms:>7.3f} {row["end_to_end_s"]:>13.3f} '
              f'{losses[name]:>12.6f} {str(identical[name]):>12}')
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
