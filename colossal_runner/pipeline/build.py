"""Build only this rank's pipeline stage of a model, with the weights the whole model would have.

The model is built on the meta device (no memory, no random numbers), then its layers are
walked in order: each one is allocated and re-initialized with ``reset_parameters`` so the
random generator is consumed exactly as when building the whole model, and the layers of
other stages are dropped right away. A rank therefore holds one foreign layer at most,
and its own layers' parameters equal those of the un-split model built with the same seed.
Tied weights (one tensor held by several layers) stay one tensor when all holders are on the
stage; tied across stages they are an error, since nothing would keep the copies equal.
"""
from __future__ import annotations

import copy
import warnings
from bisect import bisect_right
from collections import OrderedDict
from typing import Any, Container, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.utils._python_dispatch import TorchDispatchMode

from ..distributed.context import ParallelContext, get_context
from ..registry import MODELS
from ..utils.checks import check_positive_int
from .partition import PartitionSpec, partition_layers


def get_layers(model: nn.Module) -> List[nn.Module]:
    """The ordered layers a pipeline splits: a Sequential's children, or ``model.pipeline_layers()``."""
    if isinstance(model, nn.Sequential):
        return list(model.children())
    layers = getattr(model, 'pipeline_layers', None)
    if callable(layers):
        return list(layers())
    raise TypeError(f'{type(model).__name__} cannot be split into pipeline stages: it must be an '
                    f'nn.Sequential (each child one layer) or define pipeline_layers() returning its ordered '
                    f'layers, whose composition is the forward pass.')


def _resettable(layer: nn.Module) -> bool:
    """True when every module owning tensors can rebuild them with ``reset_parameters``."""
    for module in layer.modules():
        owns_params = any(True for _ in module.parameters(recurse=False))
        owns_buffers = any(True for _ in module.buffers(recurse=False))
        if (owns_params or owns_buffers) and not callable(getattr(module, 'reset_parameters', None)):
            return False
        if owns_buffers and not isinstance(module, _NormBase):  # other buffers may be computed in __init__
            return False
    return True


def _reset(layer: nn.Module) -> None:
    """Initialize ``layer`` in construction order: each module's ``reset_parameters``, children first."""
    done = set()

    def visit(module: nn.Module) -> None:
        for child in module.children():
            visit(child)
        if id(module) not in done and callable(getattr(module, 'reset_parameters', None)):
            done.add(id(module))
            module.reset_parameters()

    with torch.no_grad():
        visit(layer)


def _materialize(layer: nn.Module, writes: '_InPlaceWrites') -> None:
    """Allocate ``layer`` on the CPU and initialize it in construction order, recording into ``writes``."""
    layer.to_empty(device='cpu')
    with writes:
        _reset(layer)


class _InPlaceWrites(TorchDispatchMode):
    """Records every in-place operation (``uniform_``, ``normal_``, ``fill_``, ...) with the shape it
    writes and its other arguments. On the meta device these do nothing and cost nothing.

    torch has no record of how a module was initialized, so this is how :func:`_replays_init`
    compares what a model's constructor wrote into its tensors with what ``reset_parameters``
    writes.
    """

    def __init__(self, keep: Optional[Container[int]] = None) -> None:
        super().__init__()
        self.writes: List[Tuple[Any, ...]] = []
        # The tensor written by each write numbered in ``keep`` (every write when None): a tied
        # weight keeps the values of the last write into its storage.
        self.keep = keep
        self.targets: Dict[int, torch.Tensor] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.endswith('_') and args and isinstance(args[0], torch.Tensor):
            if self.keep is None or len(self.writes) in self.keep:
                self.targets[len(self.writes)] = args[0]
            others = tuple(a for a in args[1:] if not isinstance(a, torch.Tensor))
            self.writes.append((name, tuple(args[0].shape), others, tuple(sorted((kwargs or {}).items()))))
        return func(*args, **(kwargs or {}))


def _replays_init(cfg: Mapping) -> Tuple[nn.Module, bool, Dict[int, int]]:
    """The model built on the meta device; whether calling ``reset_parameters`` layer by layer
    writes its tensors exactly as its constructor did: the same operations, in the same order, on
    the same shapes, with the same arguments. A model whose constructor initializes weights its own
    way (``nn.init.normal_(w, std=0.02)`` after the layers are made, as GPT-style code does) would
    otherwise lose that initialization on a pipeline stage; and, by tensor storage, the number of
    the constructor's last write into each tensor it wrote (which write a tied weight keeps)."""
    built = _InPlaceWrites()
    with torch.device('meta'), built:
        model = MODELS.build(cfg)
    # built keeps every written tensor alive, so no two of them share a storage key
    last_write = {_storage_key(tensor): k for k, tensor in built.targets.items()}
    layers = get_layers(model)
    if not all(_resettable(layer) for layer in layers):
        return model, False, last_write
    replayed = _InPlaceWrites(keep=())
    with replayed:
        for layer in layers:
            _reset(layer)
    return model, built.writes == replayed.writes, last_write


def _storage_key(tensor: torch.Tensor) -> int:
    """Identifies a tensor's memory, so that a write through an alias (``weight.data``) counts too."""
    return tensor.untyped_storage()._cdata


class _Tie(NamedTuple):
    """One tensor held in several places: (layer index, state-dict name, module, attribute) each."""
    tensor: torch.Tensor
    owners: List[Tuple[int, str, nn.Module, str]]


def _ties(layers: List[nn.Module]) -> List[_Tie]:
    """The tensors (parameters or buffers) that more than one place in ``layers`` holds: tied
    weights, such as a GPT's output head sharing the token embedding's weight."""
    held: Dict[int, _Tie] = {}
    for i, layer in enumerate(layers):
        for path, module in layer.named_modules(remove_duplicate=False):
            for table in (module._parameters, module._buffers):
                for attr, tensor in table.items():
                    if tensor is not None:
                        name = '.'.join(part for part in (str(i), path, attr) if part)
                        held.setdefault(id(tensor), _Tie(tensor, [])).owners.append((i, name, module, attr))
    return [tie for tie in held.values() if len(tie.owners) > 1]


def _check_ties_within_stages(ties: List[_Tie], bounds: List[int], stages: int) -> None:
    """Raise when a tied tensor's holders fall on different stages: each stage would train its own
    copy, and nothing keeps copies in different processes equal. Checked on every rank alike."""
    split = []
    for tie in ties:
        if not (isinstance(tie.tensor, nn.Parameter) and tie.tensor.requires_grad):
            continue  # a buffer or a frozen parameter is never trained: equal copies stay equal
        on = [(name, (bisect_right(bounds, i) - 1) % stages) for i, name, _, _ in tie.owners]
        if len({stage for _, stage in on}) > 1:
            split.append((tie, on))
    if not split:
        return
    where = '; '.join(' and '.join(f'{name} (stage {stage})' for name, stage in on) for _, on in split)
    layers = sorted({i for tie, _ in split for i, *_ in tie.owners})
    last = bounds[-1] - 1
    if any({0, last} <= {i for i, *_ in tie.owners} for tie, _ in split):
        fix = (f'layers 0 and {last} are always on the first and the last stage, so untie the weights (give '
               f'each layer its own parameter) or use one pipeline stage (parallel.pipeline=1)')
    else:
        fix = (f'use a partition that keeps layers {layers} on one stage (explicit boundaries in the model '
               f"config's partition key, model.partition), or untie the weights (give each layer its own "
               f'parameter)')
    raise ValueError(f'the partition {bounds} puts tied weights on different pipeline stages: {where} are '
                     f'one tensor. Each stage would train its own copy and nothing keeps the copies equal '
                     f'(tied weights across stages are not supported); {fix}.')


def _retie(tie: _Tie, written: Optional[torch.Tensor]) -> None:
    """Make every holder of ``tie`` hold one tensor again, after its layers were allocated apart:
    the one ``written`` last by the constructor's initialization, as in the whole model."""
    held = [getattr(module, attr) for _, _, module, attr in tie.owners]
    key = _storage_key(written) if written is not None else None
    shared = next((t for t in held if _storage_key(t) == key), held[0])
    for _, _, module, attr in tie.owners:
        table = module._parameters if attr in module._parameters else module._buffers
        table[attr] = shared


def stage_parts(context: ParallelContext, num_model_chunks: int) -> List[int]:
    """The parts (virtual stages) this rank holds: chunk ``c`` is part ``c * P + stage``."""
    return [c * context.pipeline_size + context.stage for c in range(num_model_chunks)]


def _assemble(layers: List[Tuple[int, nn.Module]], bounds: List[int], parts: List[int]) -> nn.Module:
    by_index = dict(layers)
    chunks = [nn.Sequential(OrderedDict((str(i), by_index[i]) for i in range(bounds[v], bounds[v + 1])))
              for v in parts]
    return chunks[0] if len(chunks) == 1 else nn.ModuleList(chunks)


def split_model(model: nn.Module, context: Optional[ParallelContext] = None, num_model_chunks: int = 1,
                partition: PartitionSpec = 'uniform') -> nn.Module:
    """This rank's stage of an already built ``model`` (its other layers are simply not kept).

    Returns an ``nn.Sequential`` whose children keep their index in the whole model (so
    state-dict keys match the un-split model's), or an ``nn.ModuleList`` of them for
    ``num_model_chunks > 1``.
    """
    context = context or get_context()
    layers = get_layers(model)
    stages = context.pipeline_size
    bounds = partition_layers(layers, stages * num_model_chunks, partition, stages)
    _check_ties_within_stages(_ties(layers), bounds, stages)
    return _assemble(list(enumerate(layers)), bounds, stage_parts(context, num_model_chunks))


def build_pipeline_model(model_cfg: Union[Mapping, nn.Module], context: Optional[ParallelContext] = None,
                         num_model_chunks: int = 1,
                         device: Union[str, torch.device, None] = None,
                         partition: Optional[PartitionSpec] = None) -> nn.Module:
    """Build this rank's pipeline stage from a model config (``dict(type=..., partition=...)``).

    Args:
        model_cfg: a MODELS config; its optional ``partition`` key (``'uniform'``,
            ``'parameters'`` or explicit boundaries) is popped before building. An already
            built module is split as it is (see :func:`split_model`).
        context: the parallel layout (the current one by default).
        num_model_chunks: chunks per rank for the interleaved schedule.
        device: where the stage's parameters end up (CPU by default); they are always
            initialized on the CPU so that the random numbers match a CPU-built model.
        partition: how to split the layers; for a config, its ``partition`` key may say it
            instead (not both). ``'uniform'`` by default.

    With one stage and one chunk the whole model is built normally.
    """
    context = context or get_context()
    check_positive_int('num_model_chunks', num_model_chunks)
    if isinstance(model_cfg, nn.Module):
        stage = split_model(model_cfg, context, num_model_chunks, partition or 'uniform')
        return stage.to(device) if device is not None else stage
    if not isinstance(model_cfg, Mapping):
        raise TypeError(f'model_cfg must be a config dict like dict(type="MLP", partition="uniform") or an '
                        f'nn.Module, got {type(model_cfg).__name__}')
    cfg = copy.deepcopy(dict(model_cfg))
    if partition is not None and 'partition' in cfg:
        raise ValueError(f'the partition is given twice, as partition={partition!r} and in the model config '
                         f'(partition={cfg["partition"]!r}); give it once')
    partition = cfg.pop('partition', partition or 'uniform')
    num_parts = context.pipeline_size * num_model_chunks
    if num_parts == 1:
        model = MODELS.build(cfg)
        get_layers(model)  # the same "can it be split" check as with several stages
        return model.to(device) if device is not None else model
    meta_model, replays, last_write = _replays_init(cfg)
    layers = get_layers(meta_model)
    bounds = partition_layers(layers, num_parts, partition, context.pipeline_size)
    # Checked on the meta model, before anything is allocated, and for every stage: all ranks then
    # stop with the same error, rather than one rank alone at its optimizer while the others wait.
    _check_stages_have_parameters(layers, bounds, context.pipeline_size, num_model_chunks)
    ties = _ties(layers)
    _check_ties_within_stages(ties, bounds, context.pipeline_size)
    parts = stage_parts(context, num_model_chunks)
    mine = {i for v in parts for i in range(bounds[v], bounds[v + 1])}
    if not replays:
        name = _type_name(cfg.get('type'))
        warnings.warn(f'{name} has tensors that reset_parameters() cannot rebuild as its constructor '
                      f'made them (a layer without reset_parameters, a buffer, or weights initialized '
                      f'in __init__); building the whole model on the CPU and keeping this stage only (no '
                      f'memory saved). To build stages layer by layer, give each layer a '
                      f'reset_parameters() that does all of its initialization.')
        stage = split_model(MODELS.build(cfg), context, num_model_chunks, partition)
        return stage.to(device) if device is not None else stage
    kept: List[Tuple[int, Any]] = []
    # A trained tied tensor's holders are all ours or none (checked above); a buffer or a frozen
    # parameter is tied again among this stage's holders only. Each holder's layer is allocated
    # apart, so the tie is remade afterwards from the write whose values the whole model keeps.
    ours = [(_Tie(tie.tensor, held), last_write.get(_storage_key(tie.tensor))) for tie in ties
            for held in [[owner for owner in tie.owners if owner[0] in mine]] if len(held) > 1]
    writes = _InPlaceWrites(keep={k for _, k in ours})
    # Every layer is initialized, even after ours, so that the random generator ends in the same
    # state on every stage (as after building the whole model): whatever is built next draws what it
    # would in one process. Training then gives each stage a stream of its own (seed_pipeline_stage).
    for i, layer in enumerate(layers):
        _materialize(layer, writes)
        if i in mine:
            kept.append((i, layer))
        else:  # its values only had to draw the random numbers: free them before the next layer
            layer.to_empty(device='meta')
    for tie, k in ours:
        _retie(tie, writes.targets.get(k))
    del meta_model, layers
    stage = _assemble(kept, bounds, parts)
    return stage.to(device) if device is not None else stage


def _check_stages_have_parameters(layers: List[nn.Module], bounds: List[int], stages: int,
                                  chunks: int) -> None:
    """Raise when a pipeline stage would hold no parameters: it could not build an optimizer (torch
    only says "optimizer got an empty parameter list", naming no stage or setting)."""
    weighted = [any(p.numel() for p in layer.parameters()) for layer in layers]  # meta tensors count too
    held = {s: [i for c in range(chunks) for i in range(bounds[c * stages + s], bounds[c * stages + s + 1])]
            for s in range(stages)}
    empty = {s: held_layers for s, held_layers in held.items() if not any(weighted[i] for i in held_layers)}
    if not empty:
        return
    total, have = len(bounds) - 1, sum(weighted)
    where = '; '.join(f'stage {s}: layers {held_layers}' for s, held_layers in empty.items())
    fix = ("set the model config's partition='parameters' (model.partition in a config; it gives every "
           'part parameters when it can) or explicit boundaries' if have >= total else
           f'the model has only {have} layers with parameters for {total} pipeline parts: use at most {have} '
           f'parts (parallel.pipeline x num_model_chunks), or a model with more layers')
    raise ValueError(f'the partition {bounds} leaves pipeline stages without parameters ({where}), so no '
                     f'optimizer can be built for them; {fix}.')


def _type_name(model_type: Any) -> str:
    return model_type if isinstance(model_type, str) else getattr(model_type, '__name__', repr(model_type))
