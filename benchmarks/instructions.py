"""Work per training iteration, counted instead of timed: Python calls, and CPU instructions.

``overhead.py`` times the Trainer against a hand-written loop. On these shared machines a timed
ratio moves by about a point from one run to the next, as much as most single changes to the
Engine or the Trainer. Counts do not move. This script runs some of ``overhead.py``'s
contenders (same model, data, seed and data order) and counts, over the same iterations after a
warm-up:

- **Python calls per iteration**: Python functions entered and calls into C functions, counted
  with ``sys.setprofile`` in this process. Exact, and needs nothing installed.
- **instructions per iteration**, counted by valgrind's callgrind when valgrind is installed
  (``--no-valgrind`` leaves them out). Each contender runs in a child process under callgrind
  with instrumentation off until the warm-up is done. ``callgrind_control`` then switches it on
  and dumps the counters three times: after the warm-up, after ``N`` more iterations and after
  ``2N`` more. The figure is (second window - first window) / N, so what the dump calls themselves
  execute cancels out. The instructions are also split by where the code lives: the Python
  interpreter, torch (with MKL), the C and C++ runtime.

Instructions are not time: the extra work of the Engine and the Trainer has measured at about
twice as large a share of the time (``overhead.py``) as of the instructions, since the bare
loop's average instruction is a matrix kernel's. Read the counts to find where extra work is
and to measure a change finely, and ``overhead.py`` for what it costs.

Read differences under about 3,000 instructions per iteration as noise. The children run with
one hash seed (``PYTHONHASHSEED=0``), which otherwise moves a count by several thousand from one
process to the next, and with command lines of one length; each freezes the objects that exist
after its warm-up (``gc.freeze``), so that a full garbage collection, whose cost depends on
everything the process ever imported, does not land in one window and not the other. The same
child run twice then gives the same count; one character more on its command line moves it by
about 2,000.

    python benchmarks/instructions.py [--iterations 160] [--warmup 20] [--no-valgrind] [--jobs 2]

Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import collections
import functools
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # overhead.py, next to this file

import overhead  # noqa: E402

# overhead.py's contenders counted here, by a short key for --only; the hand-written loop is the
# baseline of every ratio.
CONTENDERS: Dict[str, Tuple[str, Callable]] = {
    'bare': (overhead.BARE, overhead.run_hand_written),
    'grouped': (overhead.GROUPED, overhead.run_hand_written_grouped),
    'engine': ('Engine.step loop', overhead.run_engine),
    'trainer-no-hooks': ('Trainer.fit, no hooks', overhead.run_trainer_bare),
    'trainer': ('Trainer.fit', overhead.run_trainer),
    # the same, with the Engine's NaN/Inf loss check left out (nonfinite_loss='off'): what the
    # check's one host read per step costs here, side by side
    'trainer-off': ('Trainer.fit, check off', functools.partial(overhead.run_trainer, nonfinite_loss='off')),
}
# With --against REF, these rows run a second time with the package as of REF.
TWINS = ('engine', 'trainer')
BATCH = 32
# Where instructions run, by the file name of the shared object that holds the code.
PLACES = (('Python interpreter', re.compile(r'libpython|/python3?[.\d]*$')),
          ('torch', re.compile(r'libtorch|libc10|libgomp|libshm|mkl')),
          ('C/C++ runtime', re.compile(r'libc\.so|ld-linux|libstdc\+\+|libm\.so|libgcc|libpthread')))


def contenders(against: Optional[str] = None) -> Tuple[Dict[str, Tuple[str, Callable]], Optional[str]]:
    """(CONTENDERS plus the TWINS run by the package as of git ``against``, under the keys
    ``engine@ref`` and ``trainer@ref``; the commit ``against`` names). See
    ``overhead.load_package_at``."""
    rows = dict(CONTENDERS)
    if against is None:
        return rows, None
    package = overhead.load_package_at(against)
    for label, fn in overhead.contenders_at(package, against).items():
        rows['engine@ref' if label.startswith('Engine') else 'trainer@ref'] = (label, fn)
    return rows, package.commit


# ---------------------------------------------------------------------- the windows
class Windows:
    """Calls ``mark(i)`` after iterations ``warmup``, ``warmup + n`` and ``warmup + 3n``
    (``i`` = 0, 1, 2): the edges of the two windows of ``n`` and ``2n`` iterations. At the first
    edge it freezes the objects that exist (``gc.freeze``; the caller unfreezes)."""

    def __init__(self, warmup: int, n: int, mark: Callable[[int], None]):
        self.edges = (warmup, warmup + n, warmup + 3 * n)
        self.mark = mark
        self.done = 0

    def __call__(self) -> None:  # the contender's tick
        self.done += 1
        if self.done in self.edges:
            if self.done == self.edges[0]:
                gc.collect()
                gc.freeze()
            self.mark(self.edges.index(self.done))


def samples_for(warmup: int, n: int) -> int:
    """Enough samples for one epoch that holds the warm-up and both windows, plus a few steps
    (an epoch boundary inside a window would add the sampler's shuffle to one window only)."""
    return (warmup + 3 * n + 4) * BATCH


# ---------------------------------------------------------------------- Python calls
def count_calls(fn: Callable, warmup: int, n: int) -> Dict[str, float]:
    """Python calls and calls into C per iteration, over the window of ``2n`` iterations
    (the same iterations as the second instruction window)."""
    counts = collections.Counter()
    on = [False]

    def profile(frame, event, arg):
        if on[0]:
            counts[event] += 1

    def mark(i: int) -> None:
        on[0] = i == 1

    dataset = overhead.make_data(samples_for(warmup, n))
    sys.setprofile(profile)
    try:
        fn(dataset, 1, BATCH, Windows(warmup, n, mark))
    finally:
        sys.setprofile(None)
        gc.unfreeze()
    return {'python': counts['call'] / (2 * n), 'c': counts['c_call'] / (2 * n)}


# ---------------------------------------------------------------------- instructions
def valgrind_tools() -> Optional[str]:
    """None when valgrind and callgrind_control are on the PATH, else what is missing."""
    missing = [tool for tool in ('valgrind', 'callgrind_control') if shutil.which(tool) is None]
    return ', '.join(missing) or None


def run_child(key: str, warmup: int, n: int, against: Optional[str]) -> None:
    """In the child under callgrind: run contender ``key``, dumping the counters at the window
    edges; print its final loss as JSON for the parent."""
    torch.set_num_threads(1)
    pid = str(os.getpid())

    def control(*args: str) -> None:
        subprocess.run(['callgrind_control', *args, pid], check=True, capture_output=True)

    def mark(i: int) -> None:
        if i == 0:
            control('--instr=on')
        control('--dump')

    loss, model, _ = contenders(against)[0][key][1](overhead.make_data(samples_for(warmup, n)), 1, BATCH,
                                      Windows(warmup, n, mark))
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    print(json.dumps({'final_loss': loss, 'params_sum': float(params.double().sum())}))


def parse_callgrind(path: str) -> Dict[str, int]:
    """``{object file: self instructions}`` and ``'total'`` from one callgrind output file.

    The format (valgrind's docs, "Callgrind Format Specification"): ``ob=(id) name`` names the
    shared object of the functions that follow (``cob=`` the callee's, and either may define
    the name of an id); a ``calls=`` line is followed by one line with the callee's inclusive
    cost, which is not the caller's own; every other line starting with a position holds the
    self cost, Ir first after the position (``positions: line``).
    """
    names: Dict[str, str] = {}
    costs: Dict[str, int] = collections.Counter()
    current, after_call, total = '?', False, None
    compressed = re.compile(r'^\((\d+)\)(?:\s+(.*))?$')

    def resolve(value: str) -> str:
        match = compressed.match(value.strip())
        if not match:
            return value.strip()
        key, name = match.groups()
        if name:
            names[key] = name
        return names.get(key, f'({key})')

    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            head = line[:1]
            if head.isdigit() or head in '+-*':
                if after_call:
                    after_call = False
                    continue
                fields = line.split()
                if len(fields) > 1:
                    costs[current] += int(fields[1])
            elif line.startswith('ob='):
                current = resolve(line[3:])
            elif line.startswith('cob='):
                resolve(line[4:])
            elif line.startswith('calls='):
                after_call = True
            elif line.startswith('totals:'):
                total = int(line.split()[1])
    costs = dict(costs)
    costs['total'] = total if total is not None else sum(costs.values())
    return costs


def places(costs: Dict[str, int]) -> Dict[str, int]:
    """Self instructions grouped as in PLACES, the rest under 'other'."""
    grouped = collections.Counter()
    for obj, value in costs.items():
        if obj == 'total':
            continue
        place = next((label for label, pattern in PLACES if pattern.search(obj)), 'other')
        grouped[place] += value
    return dict(grouped)


def count_instructions(key: str, warmup: int, n: int, directory: str,
                       against: Optional[str] = None) -> dict:
    """Run contender ``key`` under callgrind; instructions per iteration, in all and by place."""
    out = os.path.join(directory, f'{key}.callgrind')
    command = ['valgrind', '--tool=callgrind', '--instr-atstart=no', f'--callgrind-out-file={out}',
               # the key padded to one width: the length of the command line moves where the
               # process's memory lies, and with it a count, by a thousand instructions or two
               sys.executable, os.path.abspath(__file__), '--child', key.ljust(16), '--warmup', str(warmup),
               '--iterations', str(n)] + (['--against', against] if against else [])
    # One hash seed for every child: string hashes decide how dictionaries collide, which moves
    # a count by thousands of instructions per iteration from one process to the next.
    proc = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED='0'))
    if proc.returncode != 0:
        raise RuntimeError(f'{key}: valgrind exited with {proc.returncode}:\n'
                           f'{proc.stderr[-2000:]}')
    # Dumps are numbered in order: .1 at the end of the warm-up, .2 after the first window,
    # .3 after the second; the file without a number holds what ran after the last dump.
    first, second = parse_callgrind(f'{out}.2'), parse_callgrind(f'{out}.3')
    first_places = places(first)
    per_place = {place: (value - first_places.get(place, 0)) / n for place, value in places(second).items()}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(instructions=(second['total'] - first['total']) / n,
                  places={k: round(v) for k, v in sorted(per_place.items(), key=lambda kv: -kv[1])})
    return result


# ---------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iterations', type=int, default=160,
                        help='N: the windows are N and 2N iterations (default 160, ten groups of the '
                             "metric hooks' 16 steps)")
    parser.add_argument('--warmup', type=int, default=20, help='iterations before the first window')
    parser.add_argument('--no-valgrind', action='store_true', help='count Python calls only')
    parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                        help='contenders run under valgrind at once (one core each)')
    parser.add_argument('--only', nargs='+', choices=list(CONTENDERS), metavar='KEY',
                        help=f"count these contenders only ({', '.join(CONTENDERS)}); the hand-written loop "
                             f'is always counted, as the baseline')
    parser.add_argument('--against', metavar='REF',
                        help="also count the Engine and Trainer.fit rows with this repository's package at "
                             'git REF (a commit, branch or tag), and print ours over theirs')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for flag, value, least in (('--iterations', args.iterations, 1), ('--warmup', args.warmup, 1),
                               ('--jobs', args.jobs, 1)):
        if value < least:
            parser.error(f'{flag} must be at least {least}, got {value}')
    if args.child:
        run_child(args.child.strip(), args.warmup, args.iterations, args.against)
        return {}
    missing = None if args.no_valgrind else valgrind_tools()
    if missing:
        raise SystemExit(f'instructions are counted with valgrind, but the PATH has no {missing}. Install '
                         f'valgrind (e.g. apt-get install valgrind), or pass --no-valgrind to count Python '
                         f'calls only.')
    torch.set_num_threads(1)
    rows, commit = contenders(args.against)
    keys = [key for key in rows if key == 'bare' or args.only is None or key.split('@')[0] in args.only]
    calls = {key: count_calls(rows[key][1], args.warmup, args.iterations) for key in keys}
    instructions: Dict[str, dict] = {}
    if not args.no_valgrind:
        with tempfile.TemporaryDirectory(prefix='instructions-') as directory, \
                ThreadPoolExecutor(args.jobs) as pool:
            futures = {key: pool.submit(count_instructions, key, args.warmup, args.iterations, directory,
                                        args.against) for key in keys}
            instructions = {key: future.result() for key, future in futures.items()}
    print(f'{len(keys)} contenders, 1 epoch, batch {BATCH}, warm-up {args.warmup} iterations, windows of '
          f'{args.iterations} and {2 * args.iterations} iterations, 1 thread')
    header = f"{'contender':<24} {'Python calls':>12} {'C calls':>8}"
    if instructions:
        header += f" {'instructions':>12} {'ratio':>6}   by place (per iteration)"
    print(header)
    result = {'benchmark': 'instructions', 'warmup': args.warmup, 'iterations': args.iterations,
              'valgrind': bool(instructions), 'rows': {}}
    for key in keys:
        name = rows[key][0]
        row = {'key': key, 'python_calls': calls[key]['python'], 'c_calls': calls[key]['c']}
        line = f"{name:<24} {row['python_calls']:>12.1f} {row['c_calls']:>8.1f}"
        if instructions:
            counted = instructions[key]
            row.update(instructions=round(counted['instructions']),
                       ratio=round(counted['instructions'] / instructions['bare']['instructions'], 4),
                       places=counted['places'], final_loss=counted['final_loss'],
                       params_sum=counted['params_sum'])
            shares = ', '.join(f'{place} {value:,}' for place, value in counted['places'].items())
            line += f" {row['instructions']:>12,} {row['ratio']:>6.3f}   {shares}"
        result['rows'][name] = row
        print(line)
    if instructions:
        same = len({(row['final_loss'], row['params_sum']) for row in result['rows'].values()}) == 1
        result['same_arithmetic'] = same
        print(f"final losses and parameter sums {'equal' if same else 'DIFFER'} across the contenders")
    if args.against:
        result['against'] = {'ref': args.against, 'commit': commit, 'rows': {}}
        for key in (k for k in TWINS if k in keys):
            name, twin = rows[key][0], rows[f'{key}@ref'][0]
            calls_more = calls[key]['python'] - calls[f'{key}@ref']['python']
            entry = result['against']['rows'][name] = dict(python_calls=round(calls_more, 3))
            line = f'{name} over {twin} ({commit}): {calls_more:+.2f} Python calls per iteration'
            if instructions:
                ours, theirs = instructions[key]['instructions'], instructions[f'{key}@ref']['instructions']
                entry.update(ratio=round(ours / theirs, 5), per_iteration=round(ours - theirs))
                line += f', {ours / theirs:.4f} of its instructions ({ours - theirs:+,.0f} per iteration)'
            print(line)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
