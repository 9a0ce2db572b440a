"""Print a pipeline schedule as a text timeline, after validating its plan.

    python tools/show_schedule.py --schedule 1f1b --stages 4 --microbatches 8
    python tools/show_schedule.py --schedule interleaved --stages 4 --microbatches 8 --chunks 2
    python tools/show_schedule.py --schedule gpipe --stages 4 --microbatches 8 --actions

Each row is a stage, each cell one time unit of compute (``F3``: forward of microbatch 3,
``B3c1``: backward of microbatch 3 on chunk 1, ``.``: idle). The summary gives the bubble
(idle fraction) and the peak number of microbatches whose activations a stage holds.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

SCHEDULE_NAMES = ('1f1b', 'interleaved', 'gpipe')  # as in colossal_runner.engine.schedule.plan


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Print the timeline of a pipeline schedule.')
    parser.add_argument('--schedule', choices=SCHEDULE_NAMES, default='1f1b')
    parser.add_argument('--stages', type=int, default=4, help='pipeline stages P')
    parser.add_argument('--microbatches', type=int, default=8, help='microbatches per batch M')
    parser.add_argument('--chunks', type=int, default=None,
                        help='model chunks per stage (interleaved only; default 2)')
    parser.add_argument('--backward-cost', type=int, default=1,
                        help='time units of one backward relative to a forward (often 2 in practice)')
    parser.add_argument('--actions', action='store_true', help='also print every stage\'s action list')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.chunks is not None and args.schedule != 'interleaved':
        print(f'error: --chunks applies to --schedule interleaved only, got --schedule {args.schedule}',
              file=sys.stderr)
        return 2
    chunks = (2 if args.schedule == 'interleaved' else 1) if args.chunks is None else args.chunks
    for flag, value, what in (('--stages', args.stages, 'pipeline stages'),
                              ('--microbatches', args.microbatches, 'microbatches per batch'),
                              ('--chunks', chunks, 'model chunks per stage')):
        if value < 1:
            print(f'error: {flag} must be a positive int ({what}), got {value}', file=sys.stderr)
            return 2
    # imported here so that argument errors come back without the cost of importing torch
    from colossal_runner.engine.schedule.plan import (PlanError, build_plan, format_plan, format_timeline,
                                                      peak_in_flight, simulate, suggest_multiples,
                                                      validate_plan)
    if args.schedule == 'interleaved' and args.microbatches % args.stages:
        print(f'error: --schedule interleaved needs --microbatches to be a multiple of --stages '
              f'{args.stages}; got {args.microbatches}. {suggest_multiples(args.microbatches, args.stages)}',
              file=sys.stderr)
        return 2
    try:
        plan = build_plan(args.schedule, args.stages, args.microbatches, chunks)
        validate_plan(plan, args.microbatches, chunks)
        if args.backward_cost < 1:
            raise ValueError(f'--backward-cost must be >= 1, got {args.backward_cost}')
        timeline = format_timeline(plan, chunks, backward_cost=args.backward_cost)
        sim = simulate(plan, chunks, backward_cost=args.backward_cost)
    except (ValueError, PlanError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    extra = f', {chunks} chunks per stage' if args.schedule == 'interleaved' else ''
    print(f'{args.schedule}: {args.stages} stages, {args.microbatches} microbatches{extra}')
    print(timeline)
    print(f'time units: {sim.makespan}, bubble: {sim.bubble:.1%}, '
          f'peak microbatches in flight per stage: {peak_in_flight(plan)}')
    if args.actions:
        for stage, row in enumerate(format_plan(plan)):
            print(f'stage {stage}: {row}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
