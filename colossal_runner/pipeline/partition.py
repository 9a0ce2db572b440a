"""Where to cut a sequence of layers into pipeline parts: uniform, by parameters, or explicit.

A partition is given as *boundaries*: ``[0, b1, ..., n]`` with part ``k`` holding layers
``boundaries[k]:boundaries[k + 1]``. Every part holds at least one layer.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

from torch import nn

PartitionSpec = Union[str, Sequence[int]]
METHODS = ('uniform', 'parameters')


class PartitionError(ValueError):
    """A partition setting that cannot be used: an unknown method or wrong explicit boundaries
    (the model config's ``partition`` key, ``model.partition`` in a run's config)."""


def _check_counts(num_layers: int, num_parts: int) -> None:
    if not isinstance(num_parts, int) or num_parts < 1:
        raise ValueError(f'the number of pipeline parts must be a positive int, got {num_parts!r}')
    if num_layers < num_parts:
        raise ValueError(f'the model has {num_layers} layers but {num_parts} pipeline parts (stages x '
                         f'model chunks) are needed, and each part needs at least one layer; use fewer '
                         f'stages or chunks, or a model with more layers.')


def partition_uniform(num_layers: int, num_parts: int) -> List[int]:
    """Equal layer counts; the first ``num_layers % num_parts`` parts get one layer more."""
    _check_counts(num_layers, num_parts)
    base, extra = divmod(num_layers, num_parts)
    bounds = [0]
    for k in range(num_parts):
        bounds.append(bounds[-1] + base + (k < extra))
    return bounds


def partition_balanced(weights: Sequence[float], num_parts: int) -> List[int]:
    """Contiguous parts minimizing the heaviest part's total weight (e.g. parameter count).

    Dynamic programming over (layers used, parts made): exact, and cheap for the few hundred
    layers a model has. Ties go to the split that puts layers earlier. When at least
    ``num_parts`` layers weigh something, no part is left weightless (a pipeline stage without
    parameters has nothing to optimize); that never makes the heaviest part heavier, since a
    weightless part can always join a neighbour while a weighted one splits.
    """
    n = len(weights)
    _check_counts(n, num_parts)
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + float(w))
    no_empty = sum(1 for w in weights if w > 0) >= num_parts
    inf = float('inf')
    # best[k][i]: smallest possible heaviest part when the first i layers form k parts
    best = [[inf] * (n + 1) for _ in range(num_parts + 1)]
    cut = [[0] * (n + 1) for _ in range(num_parts + 1)]
    best[0][0] = 0.0
    for k in range(1, num_parts + 1):
        for i in range(k, n - (num_parts - k) + 1):
            for j in range(k - 1, i):
                if no_empty and prefix[i] == prefix[j]:
                    continue
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    bounds = [n]
    for k in range(num_parts, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    return bounds[::-1]


def check_boundaries(bounds: Sequence[int], num_layers: int, num_parts: int,
                     num_stages: Optional[int] = None) -> List[int]:
    """Validate explicit boundaries ``[0, ..., num_layers]`` with ``num_parts + 1`` increasing entries.

    ``num_stages`` (``P``), when ``num_parts`` is ``P`` stages x ``C`` model chunks, lets the
    error say which stage and chunk each part is.
    """
    _check_counts(num_layers, num_parts)
    bounds = list(bounds)
    ok = (len(bounds) == num_parts + 1 and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
          and bounds[0] == 0 and bounds[-1] == num_layers
          and all(a < b for a, b in zip(bounds, bounds[1:])))
    if not ok:
        example = partition_uniform(num_layers, num_parts)
        parts = ''
        if num_stages and num_parts > num_stages and num_parts % num_stages == 0:
            p, c = num_stages, num_parts // num_stages
            first = ', '.join(str(k) for k in range(0, num_parts, p))
            parts = (f'; {p} stage{"s" if p > 1 else ""} x {c} model chunks = {num_parts} parts, and part k '
                     f'is chunk k // {p} on stage k % {p}, so stage 0 holds parts {first}')
        where = f'part k holds layers bounds[k]:bounds[k+1]{parts}'
        raise PartitionError(f'explicit partition boundaries must be {num_parts + 1} strictly increasing '
                             f'ints from 0 to {num_layers} ({where}); got {bounds}. For example '
                             f'partition={example}.')
    return bounds


def partition_layers(layers: Sequence[nn.Module], num_parts: int,
                     method: PartitionSpec = 'uniform', num_stages: Optional[int] = None) -> List[int]:
    """Boundaries splitting ``layers`` into ``num_parts`` parts by ``method``.

    ``method``: ``'uniform'`` (layer counts), ``'parameters'`` (balanced parameter counts) or
    an explicit list of boundaries. ``num_stages``: see :func:`check_boundaries`.
    """
    if isinstance(method, str):
        if method == 'uniform':
            return partition_uniform(len(layers), num_parts)
        if method == 'parameters':
            return partition_balanced([sum(p.numel() for p in layer.parameters()) for layer in layers],
                                      num_parts)
        raise PartitionError(f"unknown partition method {method!r}; expected 'uniform', 'parameters' or a "
                             f'list of boundaries like [0, 2, {len(layers)}]')
    if isinstance(method, Sequence):
        return check_boundaries(method, len(layers), num_parts, num_stages)
    raise TypeError(f"partition must be 'uniform', 'parameters' or a list of boundaries, got "
                    f'{type(method).__name__}')
