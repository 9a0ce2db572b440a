"""The Trainer's cost per iteration, side by side with a hand-written PyTorch loop.

Every contender trains the same tiny model (Linear(32,64)-ReLU-Linear(64,10)) on the same
in-memory data (20,000 samples, batch 32, 2 epochs) from the same seed and data order, with
one thread. All rows must end on identical parameters: otherwise they did not do the same
arithmetic and the timing means nothing.

The bare hand-written loop is the floor (zero_grad, forward, backward, step, scheduler step);
every row's ratio to it is printed. Two more hand-written loops also compute what the
Trainer's hooks compute (epoch loss and accuracy, the learning rate, a log line per epoch):
one sums the loss and counts correct predictions every step, as one would write it first; the
other keeps 16 steps' outputs, labels and losses and counts them together, as LossHook and
AccuracyHook do. Trainer.fit with those hooks is compared with the second, the same work done
the same way, and with the floor.

Method. This machine is shared and noisy (the speed of a whole run drifts by tens of
percent), so the contenders run in lockstep: each is a thread, and a baton lets exactly
one of them run a block of ``--block`` iterations at a time, in a fresh random order every
round (seeded). Blocks with the same index did the same iterations at nearly the same moment,
so the ratio of a contender's block to the baseline's block cancels the drift; the figure is
the median of those paired ratios over all blocks after warm-up and all repeats. ms/iter
is the median block time; end-to-end is the time a contender held the baton, construction
included. The bare loop also runs a second time as its own contender: its ratio, which
should be 1, shows how far this run's noise alone moves a ratio.

    python benchmarks/overhead.py [--repeats N] [--samples 20000] [--epochs 2] [--block 5] [--against REF]
                                  [--nonfinite-loss raise]

``--nonfinite-loss off`` builds our rows' Engine without its NaN/Inf loss check (one host read of
the loss per step: nearly free on the CPU, a wait for the step on a GPU); the default is the
Engine's.

``--against REF`` measures a change directly: the Engine and Trainer.fit rows run a second
time with this repository's package as of git REF, in the same lockstep runs, and the script
prints each of our rows over its REF twin, block by block. Both sides are built in the same run
and feel the same drift; the noise control (the bare loop run twice) shows how far this run's
noise alone moves such a ratio, about a point, so repeat the run before trusting a smaller gain.

Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import importlib
import io
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from types import ModuleType
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import colossal_runner  # noqa: E402
import colossal_runner.engine  # noqa: E402,F401  (run_engine and run_trainer reach them as attributes)
import colossal_runner.trainer.hooks  # noqa: E402,F401
from colossal_runner.engine.engine import NONFINITE_CHOICES  # noqa: E402
from colossal_runner.nn.lr_scheduler import CosineAnnealingLR  # noqa: E402

from other_frameworks import NOTES, optional_contenders  # noqa: E402  (benchmarks/, next to this file)

WARMUP_ITERS = 50  # left out of the figures (construction, allocator and cache warm-up)
BARE, METRICS, AGAIN = 'hand-written loop', 'hand-written + metrics', 'hand-written, again'
GROUPED = 'hand + grouped metrics'
LOG = logging.getLogger('benchmarks.overhead')


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


# ---------------------------------------------------------------------- contenders
# Each takes (dataset, epochs, batch_size, tick), calls tick() after every iteration and
# returns (final loss, model, epoch accuracies or None).
def run_hand_written(dataset, epochs, batch_size, tick):
    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            tick()
    return loss.item(), model, None


def run_hand_written_metrics(dataset, epochs, batch_size, tick, group=1):
    """The loop plus the Trainer's metrics, by hand. ``group=1`` adds each step's loss and
    correct count as it comes, as one writes it first; otherwise the outputs, labels and losses
    of ``group`` steps are kept and counted together, once, as LossHook and AccuracyHook do."""
    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    accuracies = []
    for epoch in range(1, epochs + 1):
        loss_sum, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
        seen, steps, held = 0, 0, []
        for x, y in loader:
            lr = optimizer.param_groups[0]['lr']
            optimizer.zero_grad()
            out = model(x)
            loss = criterion(out, y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if group == 1:
                loss_sum += loss.detach()
                correct += (out.detach().argmax(dim=-1) == y).sum()
            else:
                held.append((out.detach(), y, loss.detach()))
                if len(held) == group:
                    loss_sum, correct = _count_group(held, loss_sum, correct)
                    held = []
            seen, steps = seen + y.numel(), steps + 1
            tick()
        loss_sum, correct = _count_group(held, loss_sum, correct)
        accuracies.append(correct.item() / seen)
        LOG.info('epoch %d: loss %.4f, accuracy %.4f, lr %.3g', epoch, loss_sum.item() / steps,
                 accuracies[-1], lr)
    return loss.item(), model, accuracies


def run_hand_written_grouped(dataset, epochs, batch_size, tick):
    return run_hand_written_metrics(dataset, epochs, batch_size, tick, group=16)


def _count_group(held, loss_sum, correct):
    if held:
        outs, labels, losses = zip(*held)
        loss_sum += torch.stack(losses).sum(dtype=torch.float64)
        correct += (torch.cat(outs).argmax(dim=-1) == torch.cat(labels)).sum()
    return loss_sum, correct


def run_engine(dataset, epochs, batch_size, tick, package: ModuleType = colossal_runner,
               nonfinite_loss: str = 'raise'):
    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    engine = package.engine.Engine(model, criterion, optimizer, lr_scheduler=scheduler,
                                   nonfinite_loss=nonfinite_loss)
    engine.train()
    for _ in range(epochs):
        it = iter(loader)
        for _ in range(len(loader)):
            _, _, loss = engine.step(it)
            tick()
        next(it, None)  # end the epoch as a `for` loop does (the sampler draws when exhausted)
    return loss.item(), model, None


@functools.lru_cache(maxsize=None)
def probe_hooks(base: type) -> tuple:
    """The two hooks the Trainer rows use to measure, as subclasses of ``base`` (the BaseHook of
    the package being measured: with ``--against``, another copy of the package has its own)."""

    class TickHook(base):
        """Calls ``tick`` after every training iteration; keeps the last loss."""

        def __init__(self, tick):
            super().__init__(priority='LOWEST')
            self.tick = tick
            self.last_loss = None

        def after_train_iter(self, runner, output, label, loss):
            self.last_loss = loss
            self.tick()

    class EpochAccuracy(base):
        """Reads the epoch's training accuracy after the metric hooks have closed the epoch."""

        def __init__(self):
            super().__init__(priority='LOWEST')
            self.values: List[float] = []

        def after_train_epoch(self, runner):
            self.values.append(runner.states['metrics']['train']['Accuracy'].get_accumulated_value())

    return TickHook, EpochAccuracy


def run_trainer(dataset, epochs, batch_size, tick, with_hooks=True, package: ModuleType = colossal_runner,
                nonfinite_loss: str = 'raise'):
    model, criterion, optimizer, scheduler, loader = make_run(dataset, epochs, batch_size)
    engine = package.engine.Engine(model, criterion, optimizer, lr_scheduler=scheduler,
                                   nonfinite_loss=nonfinite_loss)
    tick_hook, epoch_accuracy = probe_hooks(package.trainer.hooks.BaseHook)
    ticker, accuracy = tick_hook(tick), epoch_accuracy()
    hooks = [dict(type='LossHook'), dict(type='AccuracyHook'), dict(type='LRSchedulerHook'),
             dict(type='LogMetricByEpochHook'), ticker, accuracy] if with_hooks else [ticker]
    package.trainer.Trainer(engine, hooks=hooks).fit(loader, epochs=epochs, display_progress=False)
    return ticker.last_loss.item(), model, accuracy.values if with_hooks else None


def run_trainer_bare(dataset, epochs, batch_size, tick, **kwargs):
    """The loop alone: no metric, LR or logging hooks (the timing hook only)."""
    return run_trainer(dataset, epochs, batch_size, tick, with_hooks=False, **kwargs)


# ---------------------------------------------------------------------- --against
AT_REF = 'colossal_runner_at_ref'


def load_package_at(ref: str) -> ModuleType:
    """This repository's ``colossal_runner`` as of git ``ref``, importable next to the working
    tree's, for measuring a change against the code before it in the same lockstep runs.

    ``git archive`` writes the package into a temporary directory under another name
    (``colossal_runner_at_ref``); its absolute imports of ``colossal_runner`` are renamed too, so
    that none of its code is the working tree's. (Two separate processes cannot share a baton
    at the block scale lockstep needs; two packages in one process can.)
    """
    try:
        archive = subprocess.run(['git', '-C', ROOT, 'archive', '--format=tar', ref, 'colossal_runner'],
                                 capture_output=True, check=True).stdout
        commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', f'{ref}^{{commit}}'],
                                capture_output=True, check=True, text=True).stdout.strip()
    except FileNotFoundError:
        raise SystemExit('--against needs git on the PATH, and this directory as a git checkout') from None
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f'--against {ref!r}: git could not give the package at that revision '
                         f'({exc.stderr.decode(errors="replace").strip()}). Give a commit, branch or tag of '
                         f'this repository, e.g. --against HEAD or --against HEAD~3.') from None
    directory = tempfile.mkdtemp(prefix='overhead-against-')
    atexit.register(shutil.rmtree, directory, True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter='data')
    package_dir = os.path.join(directory, AT_REF)
    os.rename(os.path.join(directory, 'colossal_runner'), package_dir)
    absolute = re.compile(r'^(\s*(?:from|import)\s+)colossal_runner\b', re.MULTILINE)
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                with open(path, encoding='utf-8') as f:
                    text = f.read()
                renamed = absolute.sub(r'\1' + AT_REF, text)
                if renamed != text:
                    with open(path, 'w', encoding='utf-8') as f:
                        f.write(renamed)
    sys.path.insert(0, directory)
    package = importlib.import_module(AT_REF)
    for part in ('engine', 'trainer', 'trainer.hooks'):
        importlib.import_module(f'{AT_REF}.{part}')
    package.commit = commit
    return package


def contenders_at(package: ModuleType, ref: str, nonfinite_loss: str = 'raise') -> Dict[str, Callable]:
    """The Engine and Trainer.fit rows again, run by ``package`` (from :func:`load_package_at`)."""
    return {f'Engine.step loop at {ref}': functools.partial(run_engine, package=package,
                                                            nonfinite_loss=nonfinite_loss),
            f'Trainer.fit at {ref}': functools.partial(run_trainer, package=package,
                                                       nonfinite_loss=nonfinite_loss)}


# ---------------------------------------------------------------------- lockstep
class Lockstep:
    """Runs contenders as threads, one block of iterations at a time each, in random order.

    A thread that does not hold the baton waits on a condition, so exactly one contender
    computes at any moment; torch runs single-threaded, so the threads never compete.
    """

    def __init__(self, names: List[str], block: int, seed: int = 0):
        self.names, self.block = names, block
        self.cond = threading.Condition()
        self.turn: Optional[str] = None
        self.done: set = set()
        self.round = 0
        self.blocks: Dict[str, List[float]] = {n: [] for n in names}
        self.held: Dict[str, float] = {n: 0.0 for n in names}
        self.errors: Dict[str, BaseException] = {}
        self.rng = random.Random(seed)
        self.orders: List[List[str]] = []

    def _order(self) -> List[str]:
        # A fresh random order every round (seeded): whoever runs right after whom, and so
        # finds the caches as the other left them, changes from round to round.
        while len(self.orders) <= self.round:
            self.orders.append(self.rng.sample(self.names, len(self.names)))
        return self.orders[self.round]

    def _pass_baton(self, name: str) -> None:
        """Called with the lock held by the thread ``name`` that ends its block."""
        order = self._order()
        i = order.index(name)
        while True:
            i += 1
            if i == len(order):
                self.round, i = self.round + 1, 0
                order = self._order()
            nxt = order[i]
            if nxt not in self.done or len(self.done) == len(self.names):
                break
        self.turn = nxt if len(self.done) < len(self.names) else None
        self.cond.notify_all()

    def run(self, contenders: Dict[str, Callable], args: tuple) -> Dict[str, tuple]:
        results: Dict[str, tuple] = {}

        def worker(name: str) -> None:
            count = [0]
            start = [0.0]

            def wait_turn():
                with self.cond:
                    self.cond.wait_for(lambda: self.turn == name)
                start[0] = time.perf_counter()

            def end_block():
                elapsed = time.perf_counter() - start[0]
                self.blocks[name].append(elapsed / max(1, count[0] % self.block or self.block))
                self.held[name] += elapsed

            def tick():
                count[0] += 1
                if count[0] % self.block == 0:
                    end_block()
                    with self.cond:
                        self._pass_baton(name)
                    wait_turn()

            wait_turn()
            try:
                results[name] = contenders[name](*args, tick)
            except BaseException as exc:  # reported by the main thread
                self.errors[name] = exc
            if count[0] % self.block:
                end_block()  # a last, partial block
            else:
                self.held[name] += time.perf_counter() - start[0]
            with self.cond:
                self.done.add(name)
                self._pass_baton(name)

        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in self.names]
        for t in threads:
            t.start()
        with self.cond:
            self.turn = self._order()[0]
            self.cond.notify_all()
        for t in threads:
            t.join()
        if self.errors:
            name, exc = next(iter(self.errors.items()))
            raise RuntimeError(f'contender {name!r} failed') from exc
        return results


def paired_ratios(blocks: Dict[str, List[float]], name: str, base: str, skip: int) -> List[float]:
    """``name``'s block time over ``base``'s, block by block, after the first ``skip`` blocks."""
    return [x / y for x, y in zip(blocks[name][skip:], blocks[base][skip:])]


def median_and_quartiles(values: List[float]) -> tuple:
    """(median, first quartile, third quartile); NaN quartiles for fewer than two values."""
    if len(values) < 2:
        return statistics.median(values), float('nan'), float('nan')
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[0], q[2]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=None,
                        help='lockstep runs, each with a rotated order (default: one per contender, so that '
                             'each contender starts once)')
    parser.add_argument('--samples', type=int, default=20000)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--block', type=int, default=5, help='iterations a contender runs per turn')
    parser.add_argument('--against', metavar='REF',
                        help="also run the Engine and Trainer.fit rows with this repository's package at git "
                             'REF (a commit, branch or tag) in the same lockstep runs, and print ours '
                             'over theirs: measures a change directly')
    parser.add_argument('--nonfinite-loss', choices=NONFINITE_CHOICES, default='raise',
                        help="the Engine's NaN/Inf loss check in our rows (default: the Engine's own "
                             "default, 'raise', one host read of the loss per step); 'off' leaves it out")
    args = parser.parse_args(argv)
    at_ref = load_package_at(args.against) if args.against else None
    torch.set_num_threads(1)
    # Both metric rows print their two epoch lines to the console, as a training script would.
    LOG.addHandler(logging.StreamHandler())
    LOG.setLevel(logging.INFO)
    load_start = os.getloadavg()
    dataset = make_data(args.samples)
    # AGAIN is the bare loop a second time: its ratio to BARE shows the noise of this very run.
    others = optional_contenders(make_run)

    def ours(run: Callable) -> Callable:  # our rows, built with the --nonfinite-loss setting
        return functools.partial(run, nonfinite_loss=args.nonfinite_loss)

    contenders: Dict[str, Callable] = {BARE: run_hand_written, AGAIN: run_hand_written,
                                       METRICS: run_hand_written_metrics, GROUPED: run_hand_written_grouped,
                                       'Engine.step loop': ours(run_engine),
                                       'Trainer.fit, no hooks': ours(run_trainer_bare),
                                       'Trainer.fit': ours(run_trainer), **others}
    against = contenders_at(at_ref, args.against, args.nonfinite_loss) if at_ref is not None else {}
    contenders.update(against)
    if args.repeats is None:
        args.repeats = len(contenders)
    baseline = {name: BARE for name in contenders}
    baseline['Trainer.fit'] = GROUPED
    baseline.update({name: GROUPED for name in against if name.startswith('Trainer.fit')})
    # with --against: each of our rows over the same row at REF, block by block
    pairs = dict(zip(('Engine.step loop', 'Trainer.fit'), against))
    pair_ratios: Dict[str, List[float]] = {n: [] for n in pairs}
    names = list(contenders)
    ratios: Dict[str, List[float]] = {n: [] for n in names}
    floor_ratios: Dict[str, List[float]] = {n: [] for n in names}
    block_ms: Dict[str, List[float]] = {n: [] for n in names}
    total: Dict[str, List[float]] = {n: [] for n in names}
    results: Dict[str, tuple] = {}
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        lockstep = Lockstep(order, args.block, seed=rep)
        results = lockstep.run(contenders, (dataset, args.epochs, args.batch_size))
        # warm-up blocks left out; at most half of them, so that a short run still has figures
        skip = min(-(-WARMUP_ITERS // args.block), len(lockstep.blocks[BARE]) // 2)
        for name in names:
            ratios[name] += paired_ratios(lockstep.blocks, name, baseline[name], skip)
            floor_ratios[name] += paired_ratios(lockstep.blocks, name, BARE, skip)
            block_ms[name] += [t * 1e3 for t in lockstep.blocks[name][skip:]]
            total[name].append(lockstep.held[name])
        for name, theirs in pairs.items():
            pair_ratios[name] += paired_ratios(lockstep.blocks, name, theirs, skip)
    load_end = os.getloadavg()

    params = {n: torch.cat([p.detach().flatten() for p in results[n][1].parameters()]) for n in names}
    print(f'load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f}; {args.samples} samples, '
          f'batch {args.batch_size}, {args.epochs} epochs, {args.repeats} lockstep repeats of blocks of '
          f'{args.block} iterations, 1 thread; our nonfinite_loss={args.nonfinite_loss!r}')
    width = max(24, *map(len, names))
    print(f"{'contender':<{width}} {'ms/iter':>8} {'baseline':<24} {'ratio':>6} {'IQR':>13} {'vs floor':>8} "
          f"{'end-to-end s':>12} {'final loss':>10} {'same params':>11}")
    result = {'benchmark': 'overhead', 'load_start': load_start[0], 'load_end': load_end[0],
              'block': args.block, 'repeats': args.repeats, 'nonfinite_loss': args.nonfinite_loss, 'rows': {}}
    for name in names:
        ratio, low, high = median_and_quartiles(ratios[name])
        row = dict(ms_per_iter=round(statistics.median(block_ms[name]), 4), baseline=baseline[name],
                   ratio=round(ratio, 4), ratio_iqr=[round(low, 4), round(high, 4)],
                   ratio_to_floor=round(statistics.median(floor_ratios[name]), 4),
                   end_to_end_s=round(statistics.median(total[name]), 3), final_loss=results[name][0],
                   identical_params=bool(torch.equal(params[name], params[BARE])),
                   epoch_accuracy=results[name][2], other_framework=name in others)
        result['rows'][name] = row
        print(f"{name:<{width}} {row['ms_per_iter']:>8.4f} {baseline[name]:<24} {row['ratio']:>6.3f} "
              f"{low:>6.3f}-{high:<6.3f} {row['ratio_to_floor']:>8.3f} {row['end_to_end_s']:>12.3f} "
              f"{row['final_loss']:>10.6f} {str(row['identical_params']):>11}")
    for name in others:
        if not result['rows'][name]['identical_params']:
            print(f'{name}: other parameters than the hand-written loop. {NOTES.get(name, "Not explained.")}')
    if pairs:
        result['against'] = {'ref': args.against, 'commit': at_ref.commit, 'rows': {}}
        for name, theirs in pairs.items():
            ratio, low, high = median_and_quartiles(pair_ratios[name])
            result['against']['rows'][name] = dict(ratio=round(ratio, 4),
                                                   ratio_iqr=[round(low, 4), round(high, 4)])
            print(f'{name} over {theirs} ({at_ref.commit}): {ratio:.3f} (quartiles {low:.3f}-{high:.3f}); '
                  f'below 1 means faster now')
    same_metrics = results[METRICS][2] == results[GROUPED][2] == results['Trainer.fit'][2]
    result['same_epoch_accuracy'] = same_metrics
    print(f'epoch accuracies, hand-written + metrics {results[METRICS][2]}, grouped {results[GROUPED][2]}, '
          f"Trainer.fit {results['Trainer.fit'][2]}: {'equal' if same_metrics else 'DIFFERENT'}")
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
