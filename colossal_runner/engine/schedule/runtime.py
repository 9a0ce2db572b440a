"""The pipeline runtime: executes one stage's row of a plan (see :mod:`.plan`) for one batch.

Every stage pulls the same batch from its own data iterator (same dataset, same sampler
seed and order), so the first stage has the inputs, the last stage has the labels, and all
stages know the microbatch shapes without a message. Activations and gradients travel with
:class:`~colossal_runner.distributed.p2p.P2PCommunicator`.

The batch is split into ``M`` equal microbatches along dim 0; the last stage computes
``criterion(output_m, label_m)`` and back-propagates ``loss_m / M``, so a pipelined step equals
the un-pipelined step on the whole batch when the criterion averages over the batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...distributed.context import get_context
from ...distributed.p2p import Meta, P2PCommunicator, flatten, meta_of, unflatten
from ..batch import concat_batches, split_batch
from .base import BaseSchedule, detach, loss_for_logging
from .plan import Action, build_plan, forward_only, prefetch_receives, validate_plan

if TYPE_CHECKING:
    from ..engine import Engine


def _leaves(obj: Any) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _leaves(item)]
    return []


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')
    return value


class _Stand(torch.autograd.Function):
    """Stand-ins for a stage's outputs as the roots of their backward, holding no activation memory.

    Backward needs a stage output only for its autograd node, never its values (unless the
    last layer saved them, which autograd keeps on its own). Keeping the output tensor itself
    until its backward would hold one more microbatch of activations per in-flight microbatch
    after it has been sent; each stand-in has the output's shape and dtype but one element of
    storage (all strides 0), and passes the incoming gradient through unchanged.
    """

    @staticmethod
    def forward(ctx, *outputs: torch.Tensor):
        return tuple(torch.empty_strided(t.shape, (0,) * t.dim(), dtype=t.dtype, device=t.device)
                     for t in outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        return grads


def _backward_roots(floating: List[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    """One stand-in per floating output that needs a gradient (``None`` where none flows)."""
    needed = [t for t in floating if t.requires_grad]
    stands = iter(_Stand.apply(*needed) if needed else ())
    return [next(stands) if t.requires_grad else None for t in floating]


class PipelineRuntime(BaseSchedule):
    """Shared runtime of the pipeline schedules; subclasses name the plan and its rules.

    Args:
        num_microbatches: ``M``, the number of equal parts each batch is split into.
        num_model_chunks: model chunks per stage (``C``; more than 1 only for interleaving).
        tensor_shape: shape of the tensor passed between stages for one full microbatch, when
            it is fixed; skips the metadata exchange. Dim 0 follows the actual microbatch size.
        tensor_dtype: dtype of that tensor (default float32); a name like ``'bfloat16'`` works.
    """

    schedule_name = '1f1b'

    def __init__(self, num_microbatches: int, num_model_chunks: int = 1,
                 tensor_shape: Optional[Sequence[int]] = None, tensor_dtype: Any = None):
        self.num_microbatches = _check_int('num_microbatches', num_microbatches)
        self.num_model_chunks = _check_int('num_model_chunks', num_model_chunks)
        self.tensor_shape = None if tensor_shape is None else tuple(int(d) for d in tensor_shape)
        if isinstance(tensor_dtype, str):
            if not isinstance(getattr(torch, tensor_dtype, None), torch.dtype):
                raise ValueError(f'tensor_dtype {tensor_dtype!r} is not a torch dtype name; use e.g. '
                                 f"'float32' or 'bfloat16'")
            tensor_dtype = getattr(torch, tensor_dtype)
        self.tensor_dtype = tensor_dtype or torch.float32
        self._plans: Dict[Tuple[int, bool], List[List[Action]]] = {}
        self._comm: Optional[P2PCommunicator] = None
        self._comm_key: Optional[tuple] = None

    # ------------------------------------------------------------------ plan
    def check_sizes(self, num_stages: int) -> None:
        """Raise before any communication when ``M`` does not suit ``num_stages``. 1F1B and GPipe
        run any ``M >= 1``: with fewer microbatches than stages, the first stages' warm-up holds
        every forward (``min(P - s - 1, M)``), as in Megatron-LM; the bubble is then large."""

    def plan(self, num_stages: int, forward_only_: bool = False) -> List[List[Action]]:
        """The validated plan for ``num_stages`` (cached), every stage's row, receives prefetched."""
        key = (num_stages, forward_only_)
        if key not in self._plans:
            plan = build_plan(self.schedule_name, num_stages, self.num_microbatches, self.num_model_chunks)
            if forward_only_:
                plan = forward_only(plan)
            plan = prefetch_receives(plan)  # receives travel during the previous compute
            validate_plan(plan, self.num_microbatches, self.num_model_chunks, backward=not forward_only_)
            self._plans[key] = plan
        return self._plans[key]

    # ------------------------------------------------------------------ step
    def forward_backward_step(self, engine: 'Engine', data_iter: Iterator, forward_only: bool,
                              return_loss: bool = True) -> Tuple[Any, Any, Optional[torch.Tensor]]:
        context = get_context()
        p, stage = context.pipeline_size, context.stage
        self.check_sizes(p)
        chunks = self._chunks(engine.model)
        row = self.plan(p, forward_only)[stage]
        data, label = self.load_batch(engine, data_iter)
        step = _Step(self, engine, chunks, p, stage, split_batch(data, self.num_microbatches),
                     split_batch(label, self.num_microbatches), forward_only, return_loss,
                     self._communicator(context, engine.device))
        # Whether the losses are finite is agreed by all stages before the optimizer step; start
        # that all-reduce now where there is no loss, and after the last loss on the last stage.
        step.agree_early = not forward_only and p > 1 and engine.wants_loss_agreement()
        if step.agree_early and stage != p - 1:
            engine.begin_loss_agreement(torch.zeros(()))
        try:
            for action in row:
                step.run(action)
        except BaseException:
            step.comm.drop_sends()  # a peer may be gone: waiting for its receives could hang
            raise
        step.comm.wait_sends()
        if stage != p - 1:
            return None, None, None
        loss = None
        if step.losses and return_loss:
            losses = [step.losses[m] for m in range(self.num_microbatches)]
            loss = loss_for_logging(torch.stack(losses).mean())
        outputs = [step.outputs[m] for m in range(self.num_microbatches)]
        return concat_batches(outputs), label, loss

    def _communicator(self, context: Any, device: torch.device) -> P2PCommunicator:
        key = (tuple(context.pipeline_ranks), device)
        if self._comm is None or self._comm_key != key:
            self._comm, self._comm_key = P2PCommunicator(context.pipeline_ranks, device), key
        return self._comm

    def _chunks(self, model: nn.Module) -> List[nn.Module]:
        c = self.num_model_chunks
        if c == 1:
            return [model]
        if not isinstance(model, nn.ModuleList) or len(model) != c:
            got = f'a ModuleList of {len(model)}' if isinstance(model, nn.ModuleList) \
                else type(model).__name__
            raise ValueError(f'{type(self).__name__} with num_model_chunks={c} needs the stage model to be '
                             f'an nn.ModuleList of {c} chunks, got {got}; build it with '
                             f'build_pipeline_model(model_cfg, context, num_model_chunks={c}).')
        return list(model)

    def __repr__(self) -> str:
        chunks = f', num_model_chunks={self.num_model_chunks}' if self.num_model_chunks > 1 else ''
        return f'{type(self).__name__}(num_microbatches={self.num_microbatches}{chunks})'


class _Step:
    """The state of one batch on one stage: pending receives, saved activations, results."""

    def __init__(self, schedule: PipelineRuntime, engine: 'Engine', chunks: List[nn.Module], p: int,
                 stage: int, data: List[Any], labels: List[Any], forward_only: bool, return_loss: bool,
                 comm: P2PCommunicator):
        self.s, self.engine, self.chunks, self.p, self.stage = schedule, engine, chunks, p, stage
        self.data, self.labels = data, labels
        self.forward_only, self.return_loss, self.comm = forward_only, return_loss, comm
        self.last_v = p * len(chunks) - 1
        self.sig = tuple(tuple(t.shape) for t in _leaves(data[0]))  # same on every stage
        self.pending_f: Dict[Tuple[int, int], Any] = {}
        self.pending_b: Dict[Tuple[int, int], Any] = {}
        self.to_send: Dict[Tuple[int, int], Any] = {}
        self.grads_to_send: Dict[Tuple[int, int], List[torch.Tensor]] = {}
        self.local: Dict[Tuple[int, int], Any] = {}  # one-stage pipelines hand chunks over locally
        self.sent_meta: Dict[Tuple[int, int], Meta] = {}
        self.saved: Dict[Tuple[int, int], Tuple[Any, Any]] = {}
        self.outputs: Dict[int, Any] = {}
        self.losses: Dict[int, torch.Tensor] = {}
        self.agree_early = False  # set by the schedule: see Engine.begin_loss_agreement

    def run(self, a: Action) -> None:
        getattr(self, a.kind.lower())(a.microbatch, a.chunk, a.peer)
        self.comm.wait_sends(only_completed=True)

    # ------------------------------------------------------------------ communication
    def _fixed_meta(self) -> Optional[Meta]:
        shape = self.s.tensor_shape
        if shape is None:
            return None
        mb = _leaves(self.data[0])[0].shape[0]
        return Meta((False, ((self.s.tensor_dtype, (mb,) + shape[1:]),)))

    def send_f(self, m: int, c: int, peer: int) -> None:
        out = self.to_send.pop((m, c))
        fixed = self._fixed_meta()
        if fixed is not None and meta_of(out) != fixed:  # checked before sending: the peer expects `fixed`
            raise ValueError(f'stage {self.stage} produced {meta_of(out).specs} but tensor_shape / '
                             f'tensor_dtype say {fixed.specs}; fix tensor_shape or leave it None to '
                             f'exchange shapes.')
        key = None if fixed is not None else ('F', peer, c, self.sig)
        self.sent_meta[(m, c)] = self.comm.send(out, peer, key, lane='F')

    def recv_f(self, m: int, c: int, peer: int) -> None:
        self.pending_f[(m, c)] = self.comm.recv(peer, ('F', peer, c, self.sig), self._fixed_meta())

    def send_b(self, m: int, c: int, peer: int) -> None:
        self.comm.send(tuple(self.grads_to_send.pop((m, c))), peer, key=None, lane='B')

    def recv_b(self, m: int, c: int, peer: int) -> None:
        meta = self.sent_meta.pop((m, c))
        specs = tuple(spec for spec in meta.specs if spec[0].is_floating_point)
        self.pending_b[(m, c)] = self.comm.recv(peer, meta=Meta((True, specs)))

    # ------------------------------------------------------------------ compute
    def _input(self, m: int, c: int) -> Any:
        v = c * self.p + self.stage
        if v == 0:
            return self.data[m]
        if self.p == 1:
            out = self.local.pop((m, c))
            is_tuple, tensors = flatten(out)
            tensors = [t.detach() for t in tensors]
        else:
            pending = self.pending_f.pop((m, c))
            is_tuple, tensors = pending.meta.is_tuple, pending.wait()
        if not self.forward_only and torch.is_grad_enabled():
            for t in tensors:
                if t.is_floating_point():
                    t.requires_grad_(True)
        return unflatten(is_tuple, tensors)

    def f(self, m: int, c: int, _peer: None) -> None:
        v = c * self.p + self.stage
        x = self._input(m, c)
        chunk = self.chunks[c]
        if v == 0:
            out = self.s.call_model(self.engine, x, model=chunk)
        else:  # a received tuple goes in as one argument, as between layers of an nn.Sequential
            with self.engine.autocast():
                out = chunk(x)
        if v == self.last_v:
            loss = None
            if self.return_loss or not self.forward_only:
                loss = self.s.compute_loss(self.engine, out, self.labels[m])
                self.losses[m] = loss.detach()
                if self.agree_early and len(self.losses) == self.s.num_microbatches:
                    losses = torch.stack(list(self.losses.values()))
                    self.engine.begin_loss_agreement((~torch.isfinite(losses)).any())
            self.outputs[m] = detach(out)
            if not self.forward_only:
                self.saved[(m, c)] = (x, loss)
            return
        floating = [t for t in flatten(out)[1] if t.is_floating_point()]  # fails early on bad outputs
        if not self.forward_only:
            self.saved[(m, c)] = (x, _backward_roots(floating))
        if self.p == 1:
            self.local[(m, c + 1)] = out
        else:
            self.to_send[(m, c)] = out

    def b(self, m: int, c: int, _peer: None) -> None:
        v = c * self.p + self.stage
        x, out = self.saved.pop((m, c))
        if v == self.last_v:
            self.engine.backward(out / self.s.num_microbatches)
        else:
            if self.p == 1:
                grads = self.local.pop(('grad', m, c))
            else:
                grads = self.pending_b.pop((m, c)).wait()
            pairs = [(root, g) for root, g in zip(out, grads) if root is not None]
            if pairs:
                self.engine.backward_by_grad([t for t, _ in pairs], [g for _, g in pairs])
        del out
        if v == 0:
            return
        grads = [t.grad if t.grad is not None else torch.zeros_like(t)
                 for t in flatten(x)[1] if t.is_floating_point()]
        if self.p == 1:
            self.local[('grad', m, c - 1)] = grads
        else:
            self.grads_to_send[(m, c)] = grads
