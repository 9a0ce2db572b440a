"""Our pipeline schedules against torch.distributed.pipelining, on the same stages and data.

The model is 8 x (Linear(512, 512) + ReLU), split over P ranks (P = 2 and 4), global batch
64 in 8 microbatches, MSE loss, gloo on the CPU, one thread per rank. For every schedule,
ours (Engine + GPipeSchedule / PipelineSchedule / InterleavedPipelineSchedule) and torch's
(ScheduleGPipe / Schedule1F1B / ScheduleInterleaved1F1B) run in the same processes,
interleaved (ours, torch, torch, ours, ours, torch, ...), after warm-up; every iteration is
timed between barriers. The ratio is the median over iterations of ours_i / torch_i, two
runs next to each other in time, so the machine's drift cancels (its quartiles show the
noise); the median ms of each are printed too. The first steps' losses of every run are
checked against a single-process reference, and the peak bytes of saved activations per
stage are measured with ``torch.autograd.graph.saved_tensors_hooks`` and expressed in
microbatches (the theory: GPipe holds M, 1F1B holds P - s on stage s).

    python benchmarks/pipeline.py [--iters 40] [--warmup 3] [--stages 2 4] [--nonfinite-loss raise]

Our engine checks every step's loss for NaN/Inf by default, agreeing on it with an all-reduce
over the stages that torch's schedules do not do; ``--nonfinite-loss off`` leaves the check out,
for a like-for-like comparison of the schedules alone.

Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import weakref
from typing import Dict, List

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from colossal_runner.distributed import ParallelContext, set_context  # noqa: E402
from colossal_runner.engine import Engine  # noqa: E402
from colossal_runner.engine.engine import NONFINITE_CHOICES  # noqa: E402
from colossal_runner.engine.schedule import (GPipeSchedule, InterleavedPipelineSchedule,  # noqa: E402
                                             PipelineSchedule)
from colossal_runner.pipeline import build_pipeline_model  # noqa: E402
from colossal_runner.testing import run_distributed  # noqa: E402

WIDTH, LAYERS, BATCH, MICRO, LR, CHECK_STEPS = 512, 8, 64, 8, 0.01, 3
SCHEDULES = {  # name: (our schedule class, torch schedule class name, model chunks per rank)
    'gpipe': (GPipeSchedule, 'ScheduleGPipe', 1),
    '1f1b': (PipelineSchedule, 'Schedule1F1B', 1),
    'interleaved': (InterleavedPipelineSchedule, 'ScheduleInterleaved1F1B', 2),
}


def full_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()) for _ in range(LAYERS)])


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, WIDTH, generator=g), torch.randn(BATCH, WIDTH, generator=g)


def reference_losses() -> List[float]:
    model = full_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = batch()
    losses = []
    for _ in range(CHECK_STEPS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


class SavedBytes:
    """Bytes of tensors saved for backward that are still alive, and their peak.

    torch has no counter for this; a pack hook wraps each saved tensor in a holder whose
    finalizer runs when autograd frees it, which is exactly when the activation is released.
    """

    class _Holder:
        __slots__ = ('tensor', '__weakref__')

        def __init__(self, tensor):
            self.tensor = tensor

    def __init__(self, params: List[nn.Parameter]):
        # Autograd also saves weights (for the input gradient); they are not activations.
        self.skip = {q.untyped_storage().data_ptr() for q in params}
        self.live = 0
        self.peak = 0

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def pack(self, tensor):
        if tensor.untyped_storage().data_ptr() in self.skip:
            return tensor
        holder = self._Holder(tensor)
        nbytes = tensor.numel() * tensor.element_size()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(holder, self._release, nbytes)
        return holder

    @staticmethod
    def unpack(holder):
        return holder.tensor if isinstance(holder, SavedBytes._Holder) else holder

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class Ours:
    def __init__(self, name: str, context: ParallelContext, nonfinite_loss: str = 'raise'):
        schedule_cls, _, chunks = SCHEDULES[name]
        schedule = schedule_cls(MICRO, num_model_chunks=chunks) if chunks > 1 else schedule_cls(MICRO)
        self.stage = build_pipeline_model(full_model(), context, num_model_chunks=chunks)
        opt = torch.optim.SGD(self.stage.parameters(), lr=LR)
        self.engine = Engine(self.stage, nn.MSELoss(), opt, step_schedule=schedule,
                             nonfinite_loss=nonfinite_loss)
        self.engine.train()
        self.data = batch()

    def step(self):
        _, _, loss = self.engine.step(iter([self.data]))
        return None if loss is None else float(loss)

    def chunks(self) -> List[nn.Module]:
        return list(self.stage) if isinstance(self.stage, nn.ModuleList) else [self.stage]


class Torch:
    def __init__(self, name: str, context: ParallelContext):
        import torch.distributed.pipelining as pp
        _, cls_name, chunks = SCHEDULES[name]
        layers = list(full_model())
        p = context.pipeline_size
        virtual = p * chunks
        per = LAYERS // virtual
        self.modules = [nn.Sequential(*copy.deepcopy(layers[v * per:(v + 1) * per]))
                        for v in (c * p + context.stage for c in range(chunks))]
        stages = [pp.PipelineStage(m, c * p + context.stage, virtual, torch.device('cpu'),
                                   group=context.pipeline_group)
                  for c, m in enumerate(self.modules)]
        cls = getattr(pp, cls_name)
        self.schedule = cls(stages if chunks > 1 else stages[0], MICRO, loss_fn=nn.functional.mse_loss)
        params = [q for m in self.modules for q in m.parameters()]
        self.opt = torch.optim.SGD(params, lr=LR)
        self.context = context
        self.x, self.y = batch()

    def step(self):
        self.opt.zero_grad()
        losses: List[torch.Tensor] = []
        if self.context.is_first_stage:
            self.schedule.step(self.x)
        elif self.context.is_last_stage:
            self.schedule.step(target=self.y, losses=losses)
        else:
            self.schedule.step()
        self.opt.step()
        return float(torch.stack(losses).detach().mean()) if losses else None

    def chunks(self) -> List[nn.Module]:
        return self.modules


def microbatch_bytes(chunks: List[nn.Module], context: ParallelContext) -> int:
    """Saved bytes of one microbatch through this rank's chunks (and the loss on the last stage)."""
    counter = SavedBytes([q for chunk in chunks for q in chunk.parameters()])
    x = torch.randn(BATCH // MICRO, WIDTH, requires_grad=True)
    with counter.hooks():
        outs = [chunk(x) for chunk in chunks]
        if context.is_last_stage:  # the last stage also keeps what the loss saves
            outs.append(nn.functional.mse_loss(outs[-1], torch.randn_like(outs[-1])))
    del outs
    return counter.peak


def _quartiles(values: List[float]) -> List[float]:
    if len(values) < 2:
        return [values[0], values[0]] if values else [float('nan')] * 2
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def rank_main(rank: int, world_size: int, iters: int, warmup: int, nonfinite_loss: str = 'raise') -> Dict:
    context = ParallelContext(pipeline=world_size)
    set_context(context)
    results: Dict = {'stage': context.stage}
    for name in SCHEDULES:
        runs = {'ours': Ours(name, context, nonfinite_loss), 'torch': Torch(name, context)}
        losses = {k: [r.step() for _ in range(CHECK_STEPS)] for k, r in runs.items()}
        for r in runs.values():
            for _ in range(warmup):
                r.step()
        times: Dict[str, List[float]] = {k: [] for k in runs}
        for i in range(iters):  # A B A B ...: both feel the same machine noise
            for k in (('ours', 'torch') if i % 2 == 0 else ('torch', 'ours')):
                dist.barrier()
                t0 = time.perf_counter()
                runs[k].step()
                dist.barrier()
                times[k].append(time.perf_counter() - t0)
        memory = {}
        for k, r in runs.items():
            counter = SavedBytes([q for chunk in r.chunks() for q in chunk.parameters()])
            with counter.hooks():
                r.step()
            memory[k] = counter.peak / microbatch_bytes(r.chunks(), context)
        paired = [a / b for a, b in zip(times['ours'], times['torch'])]  # neighbours in time
        results[name] = {'losses': losses, 'ms': {k: statistics.median(v) * 1e3 for k, v in times.items()},
                         'paired_ratio': statistics.median(paired),
                         'paired_iqr': _quartiles(paired), 'activations_in_microbatches': memory}
        set_context(context)
    set_context(None)
    return results


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=40, help='timed iterations per contender')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--stages', type=int, nargs='+', default=[2, 4])
    parser.add_argument('--nonfinite-loss', choices=NONFINITE_CHOICES, default='raise',
                        help="our Engine's NaN/Inf loss check (default: the Engine's own default, "
                             "'raise'); 'off' leaves out the check and its all-reduce, which torch's "
                             'schedules do not do')
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    load_start = os.getloadavg()
    reference = reference_losses()
    out: Dict = {'benchmark': 'pipeline', 'batch': BATCH, 'microbatches': MICRO,
                 'nonfinite_loss': args.nonfinite_loss, 'reference_losses': reference, 'rows': []}
    print(f'load average at start {load_start[0]:.2f}; {LAYERS} x Linear({WIDTH},{WIDTH})+ReLU, '
          f'batch {BATCH}, {MICRO} microbatches, gloo, 1 thread per rank, median of {args.iters} iterations; '
          f'our nonfinite_loss={args.nonfinite_loss!r}')
    print(f"{'P':>2} {'schedule':<12} {'ours ms':>9} {'torch ms':>9} {'ours/torch':>11} {'IQR':>13} "
          f"{'losses ok':>10}   activations per stage, ours | torch (microbatches)")
    for p in args.stages:
        per_rank = run_distributed(rank_main, p, args.iters, args.warmup, args.nonfinite_loss, timeout=1200)
        last = per_rank[-1]
        for name in SCHEDULES:
            ms = last[name]['ms']
            ok = all(max(abs(a - b) for a, b in zip(last[name]['losses'][k], reference)) < 1e-5
                     for k in ('ours', 'torch'))
            ours_mem = [round(r[name]['activations_in_microbatches']['ours'], 2) for r in per_rank]
            torch_mem = [round(r[name]['activations_in_microbatches']['torch'], 2) for r in per_rank]
            theory = {'gpipe': [MICRO] * p, '1f1b': [p - s for s in range(p)]}.get(name)
            iqr = [round(q, 3) for q in last[name]['paired_iqr']]
            row = dict(stages=p, schedule=name, ours_ms=round(ms['ours'], 3), torch_ms=round(ms['torch'], 3),
                       ratio=round(last[name]['paired_ratio'], 3), ratio_iqr=iqr,
                       ratio_of_medians=round(ms['ours'] / ms['torch'], 3), losses_equal=ok,
                       activations_ours=ours_mem, activations_torch=torch_mem, activations_theory=theory)
            out['rows'].append(row)
            print(f"{p:>2} {name:<12} {row['ours_ms']:>9.2f} {row['torch_ms']:>9.2f} {row['ratio']:>11.3f} "
                  f"{iqr[0]:>6.3f}-{iqr[1]:<6.3f} {str(ok):>10}   {ours_mem} | {torch_mem}"
                  + (f'  (theory {theory})' if theory else ''))
    load_end = os.getloadavg()
    out.update(load_start=load_start[0], load_end=load_end[0])
    print(f'load average at end {load_end[0]:.2f}')
    print(json.dumps(out))
    return out


if __name__ == '__main__':
    main()
