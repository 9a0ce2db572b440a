"""Point-to-point transfers between pipeline stages on ``torch.distributed`` (isend / irecv).

A stage's output is a tensor or a tuple of tensors whose shapes the receiver cannot know
in advance, so the first transfer for a given *key* carries a small metadata message
(structure, dtypes, shapes) and both sides cache it; later transfers with the same key
send only data. The key is chosen by the caller so that both sides compute it without
talking (the pipeline runtime uses the shapes of the input batch, which every stage reads),
which is how a smaller last batch gets fresh metadata and the common case gets none.

Metadata travels with its own tag so it never mixes with data messages between the same
pair of ranks (gloo and MPI honour tags; NCCL matches in posting order, which the plans
keep identical on both sides).

Sends are posted without waiting, but each send first waits for the earlier sends of the
same *lane* (peer and caller-chosen kind, e.g. activations or gradients), so a stage keeps at
most one unreceived message per lane and the buffers of the others are freed. Gloo reports a
send as completed only once it is waited, so polling alone could never free them; the
pipeline plans are checked to stay deadlock-free under this rule (see ``plan.simulate``).
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

DATA_TAG = 0
META_TAG = 1
_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64]
_DTYPE_CODE = {d: i for i, d in enumerate(_DTYPES)}


class Meta(tuple):
    """``(is_tuple, ((dtype, shape), ...))``: what a receiver needs to allocate buffers."""

    @property
    def is_tuple(self) -> bool:
        return self[0]

    @property
    def specs(self) -> Tuple[Tuple[torch.dtype, Tuple[int, ...]], ...]:
        return self[1]


def flatten(obj: Any, what: str = 'a pipeline stage output') -> Tuple[bool, List[torch.Tensor]]:
    """``(is_tuple, tensors)`` for a tensor or a tuple/list of tensors; anything else is an error."""
    if isinstance(obj, torch.Tensor):
        return False, [obj]
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return True, list(obj)
    inner = ''
    if isinstance(obj, (tuple, list)):
        inner = ' containing ' + ', '.join(sorted({type(t).__name__ for t in obj}))
    raise TypeError(f'{what} must be a tensor or a tuple of tensors to be sent to the next stage; got a '
                    f'{type(obj).__name__}{inner}. Make the last layer of the stage return tensors only '
                    f'(or move the split point).')


def unflatten(is_tuple: bool, tensors: Sequence[torch.Tensor]) -> Any:
    return tuple(tensors) if is_tuple else tensors[0]


def meta_of(obj: Any) -> Meta:
    is_tuple, tensors = flatten(obj)
    return Meta((is_tuple, tuple((t.dtype, tuple(t.shape)) for t in tensors)))


def _encode(meta: Meta) -> List[int]:
    out = [int(meta.is_tuple), len(meta.specs)]
    for dtype, shape in meta.specs:
        if dtype not in _DTYPE_CODE:
            raise TypeError(f'cannot send a tensor of dtype {dtype} between pipeline stages; supported: '
                            f'{", ".join(str(d) for d in _DTYPES)}')
        out += [_DTYPE_CODE[dtype], len(shape), *shape]
    return out


def _decode(values: List[int]) -> Meta:
    is_tuple, n, pos, specs = bool(values[0]), values[1], 2, []
    for _ in range(n):
        code, ndim = values[pos], values[pos + 1]
        specs.append((_DTYPES[code], tuple(values[pos + 2:pos + 2 + ndim])))
        pos += 2 + ndim
    return Meta((is_tuple, tuple(specs)))


def _wait(work: Any, action: str, peer: int) -> None:
    """``work.wait()``; its error names the peer (``send to rank 1``): gloo's timeout does not, and
    the fault watcher's message can then say which rank this one waited for. (The text is made
    only on failure: this runs for every transfer.)"""
    try:
        work.wait()
    except RuntimeError as exc:
        exc.args = (f'{exc} ({action} rank {peer})',) + exc.args[1:]
        raise


class Received:
    """Buffers being filled by ``irecv``; :meth:`wait` returns them in the sent structure."""

    def __init__(self, meta: Meta, buffers: List[torch.Tensor], works: List[Any], src: int):
        self.meta, self.buffers, self._works, self.src = meta, buffers, works, src

    def wait(self) -> List[torch.Tensor]:
        for work in self._works:
            _wait(work, 'receive from', self.src)
        self._works = []
        return self.buffers


class P2PCommunicator:
    """Sends and receives stage tensors among ``ranks`` (stage index -> global rank).

    Args:
        ranks: the global rank of every pipeline stage (``context.pipeline_ranks``).
        device: where received tensors are allocated (and metadata tensors live: CPU for
            gloo, the GPU for NCCL).
    """

    def __init__(self, ranks: Sequence[int], device: torch.device):
        self.ranks = list(ranks)
        self.device = device
        self._sent_meta: Dict[Hashable, Meta] = {}
        self._recv_meta: Dict[Hashable, Meta] = {}
        self._sends: List[Tuple[Hashable, Any, torch.Tensor]] = []  # (lane, work, buffer)

    # ------------------------------------------------------------------ sending
    def send(self, obj: Any, peer: int, key: Optional[Hashable], lane: Hashable = None) -> Meta:
        """Post ``obj`` (tensor or tuple of tensors) to stage ``peer``; returns its metadata.

        With ``key=None`` no metadata is sent (the receiver already knows it, e.g. gradients
        shaped like the activations it sent). The earlier sends to ``peer`` on the same
        ``lane`` are waited first (their receiver has posted its receive or is about to), so
        their buffers can be freed; this send itself is not waited.
        """
        meta = meta_of(obj)
        dst = self.ranks[peer]
        lane = (dst, lane)
        self._wait_lane(lane)
        if key is not None:
            cached = self._sent_meta.get(key)
            if cached is None:
                self._post_meta(meta, dst, lane)
                self._sent_meta[key] = meta
            elif cached != meta:
                raise ValueError(f'the output sent to stage {peer} changed from {_describe(cached)} to '
                                 f'{_describe(meta)} although the input batch shapes did not; a stage output '
                                 f'may only depend on the shapes of the input batch.')
        for tensor in flatten(obj)[1]:
            # a detached alias: the caller's tensor object is not kept, only the storage while in flight
            tensor = tensor.detach().contiguous()
            self._sends.append((lane, dist.isend(tensor, dst, tag=DATA_TAG), tensor))
        return meta

    def _post_meta(self, meta: Meta, dst: int, lane: Hashable) -> None:
        values = _encode(meta)
        length = torch.tensor([len(values)], dtype=torch.int64, device=self.device)
        payload = torch.tensor(values, dtype=torch.int64, device=self.device)
        for tensor in (length, payload):
            self._sends.append((lane, dist.isend(tensor, dst, tag=META_TAG), tensor))

    def _wait_lane(self, lane: Hashable) -> None:
        if any(pending == lane for pending, _, _ in self._sends):
            for pending, work, _ in self._sends:
                if pending == lane:
                    _wait(work, 'send to', lane[0])
            self._sends = [entry for entry in self._sends if entry[0] != lane]

    def wait_sends(self, only_completed: bool = False) -> None:
        """Wait for posted sends (or just drop the finished ones) so their buffers can be freed."""
        if only_completed:
            self._sends = [entry for entry in self._sends if not entry[1].is_completed()]
            return
        for lane, work, _ in self._sends:
            _wait(work, 'send to', lane[0])
        self._sends = []

    def drop_sends(self) -> None:
        """Forget posted sends without waiting (after an error, when the peer may never receive)."""
        self._sends = []

    # ------------------------------------------------------------------ receiving
    def recv(self, peer: int, key: Optional[Hashable] = None, meta: Optional[Meta] = None) -> Received:
        """Post receives from stage ``peer``; metadata comes from ``meta``, the cache, or the wire."""
        src = self.ranks[peer]
        if meta is None:
            meta = self._recv_meta.get(key)
            if meta is None:
                length = torch.zeros(1, dtype=torch.int64, device=self.device)
                dist.recv(length, src, tag=META_TAG)
                payload = torch.zeros(int(length.item()), dtype=torch.int64, device=self.device)
                dist.recv(payload, src, tag=META_TAG)
                meta = _decode(payload.tolist())
                self._recv_meta[key] = meta
        buffers = [torch.empty(shape, dtype=dtype, device=self.device) for dtype, shape in meta.specs]
        works = [dist.irecv(buf, src, tag=DATA_TAG) for buf in buffers]
        return Received(meta, buffers, works, src)


def _describe(meta: Meta) -> str:
    parts = [f'{str(d).replace("torch.", "")}{list(s)}' for d, s in meta.specs]
    return ('(' + ', '.join(parts) + ')') if meta.is_tuple else parts[0]
