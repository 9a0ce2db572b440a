"""Pipeline schedules as data: per-rank action lists, their builders, a validator and a simulator.

A *plan* is ``plan[stage] -> [Action, ...]``: what each pipeline stage does, in order. Building
plans with pure functions lets tests check every schedule without processes, and lets the
runtime (:mod:`.pipeline`) stay a small loop that executes whatever plan it is given.

Virtual stages: with ``C`` model chunks per rank and ``P`` ranks, chunk ``c`` of stage ``s``
is virtual stage ``v = c * P + s``; activations flow ``v -> v + 1``, gradients ``v -> v - 1``.

Execution model (what the simulator checks and the runtime guarantees): a receive is posted
with ``irecv`` and the compute that uses it waits for the data; only a stage's first
``RECV_F`` of each chunk waits at once, because it may have to read the shapes first. A send
is posted with ``isend`` and not waited, but it first waits until the neighbour has posted the
receives of this rank's earlier sends of the same kind (``SEND_F`` or ``SEND_B``) to it; that
is what lets a stage free an output once it is sent, rather than at the end of the step.
Sends and receives between two ranks are matched in the order they are posted, so each
rank's sends to a neighbour must list the same items in the same order as that neighbour's
receives. The runtime executes :func:`prefetch_receives` of a built plan, which posts each
receive one compute earlier; it is validated like any other plan.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ...utils.checks import check_positive_int

KINDS = ('F', 'B', 'SEND_F', 'RECV_F', 'SEND_B', 'RECV_B')
COMPUTE = ('F', 'B')
SCHEDULE_NAMES = ('1f1b', 'interleaved', 'gpipe')

Plan = List[List['Action']]


class PlanError(ValueError):
    """A plan is malformed, inconsistent between ranks, or would deadlock."""


_TEXT = re.compile(r'^(SEND_F|RECV_F|SEND_B|RECV_B|F|B)(\d+)(?:c(\d+))?(?:@(\d+))?$')


@dataclass(frozen=True)
class Action:
    """One step of one rank: compute (``F``/``B``) or communicate (``SEND_*``/``RECV_*``).

    ``microbatch`` and ``chunk`` name the data; ``peer`` is the other stage of a
    communication (``None`` for compute). Text form: ``F3``, ``B3c1``, ``SEND_F3c1@2``.
    """

    kind: str
    microbatch: int
    chunk: int = 0
    peer: Optional[int] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PlanError(f'unknown action kind {self.kind!r}; expected one of {", ".join(KINDS)}')
        if (self.peer is None) != (self.kind in COMPUTE):
            raise PlanError(f'{self.kind} actions {"take no" if self.kind in COMPUTE else "need a"} peer; '
                            f'got peer={self.peer!r}')

    def __str__(self) -> str:
        return self.text() if self.peer is None else f'{self.text()}@{self.peer}'

    __repr__ = __str__

    def text(self) -> str:
        """The text form without the peer: what is computed or moved (``F3c1``, ``RECV_B0``)."""
        return f'{self.kind}{self.microbatch}' + (f'c{self.chunk}' if self.chunk else '')

    @classmethod
    def parse(cls, text: str) -> 'Action':
        """The inverse of ``str(action)``: ``'F3'``, ``'B3c1'``, ``'RECV_B0@1'``."""
        match = _TEXT.match(text.strip())
        if not match:
            raise PlanError(f'cannot parse action {text!r}; expected e.g. F3, B3c1, SEND_F3@1, RECV_B0c1@2')
        kind, mb, chunk, peer = match.groups()
        return cls(kind, int(mb), int(chunk or 0), None if peer is None else int(peer))


def parse_plan(rows: Sequence[str]) -> Plan:
    """A plan from one whitespace-separated string per stage (handy in tests and docs)."""
    return [[Action.parse(tok) for tok in row.split()] for row in rows]


def format_plan(plan: Plan) -> List[str]:
    return [' '.join(str(a) for a in actions) for actions in plan]


# ---------------------------------------------------------------------- builders
class _Builder:
    """Turns each rank's order of compute actions into a full plan with sends and receives."""

    def __init__(self, num_stages: int, num_chunks: int):
        self.p, self.c = num_stages, num_chunks
        self.plan: Plan = [[] for _ in range(num_stages)]

    def forward(self, stage: int, mb: int, chunk: int) -> None:
        v, row = chunk * self.p + stage, self.plan[stage]
        if v > 0 and self.p > 1:
            row.append(Action('RECV_F', mb, chunk, (stage - 1) % self.p))
        row.append(Action('F', mb, chunk))
        if v < self.p * self.c - 1 and self.p > 1:
            row.append(Action('SEND_F', mb, chunk, (stage + 1) % self.p))

    def backward(self, stage: int, mb: int, chunk: int) -> None:
        v, row = chunk * self.p + stage, self.plan[stage]
        if v < self.p * self.c - 1 and self.p > 1:
            row.append(Action('RECV_B', mb, chunk, (stage + 1) % self.p))
        row.append(Action('B', mb, chunk))
        if v > 0 and self.p > 1:
            row.append(Action('SEND_B', mb, chunk, (stage - 1) % self.p))


def _check_sizes(num_stages: int, num_microbatches: int, num_chunks: int = 1) -> None:
    for name, value in (('num_stages', num_stages), ('num_microbatches', num_microbatches),
                        ('num_chunks', num_chunks)):
        check_positive_int(name, value)


def suggest_multiples(value: int, size: int) -> str:
    """``'Use 4 or 8.'`` for 6 and 4: the multiples of ``size`` either side of ``value`` (not a
    multiple), the lower one only when it is not 0."""
    lower = value // size * size
    return f'Use {lower} or {lower + size}.' if lower > 0 else f'Use {lower + size}.'


def build_1f1b_plan(num_stages: int, num_microbatches: int) -> Plan:
    """Non-interleaved one-forward-one-backward: ``P - s - 1`` warm-up forwards, 1F1B, cool-down.

    Stage ``s`` holds at most ``P - s`` microbatches of activations at once.
    """
    _check_sizes(num_stages, num_microbatches)
    b = _Builder(num_stages, 1)
    for s in range(num_stages):
        warmup = min(num_stages - s - 1, num_microbatches)
        for m in range(warmup):
            b.forward(s, m, 0)
        for i in range(num_microbatches - warmup):
            b.forward(s, warmup + i, 0)
            b.backward(s, i, 0)
        for m in range(num_microbatches - warmup, num_microbatches):
            b.backward(s, m, 0)
    return b.plan


def build_gpipe_plan(num_stages: int, num_microbatches: int) -> Plan:
    """GPipe: every forward, then every backward; each stage holds all ``M`` microbatches."""
    _check_sizes(num_stages, num_microbatches)
    b = _Builder(num_stages, 1)
    for s in range(num_stages):
        for m in range(num_microbatches):
            b.forward(s, m, 0)
        for m in range(num_microbatches):
            b.backward(s, m, 0)
    return b.plan


def build_interleaved_plan(num_stages: int, num_microbatches: int, num_chunks: int) -> Plan:
    """Interleaved 1F1B over ``C`` chunks per rank (virtual stage ``c * P + s``).

    Microbatches go through the chunks in groups of ``P``, so ``M`` must be a multiple of ``P``.
    Warm-up is ``2 (P - s - 1) + (C - 1) P`` forwards; the bubble shrinks by a factor ``C``.
    """
    _check_sizes(num_stages, num_microbatches, num_chunks)
    p, m_total, c = num_stages, num_microbatches, num_chunks
    if m_total % p:
        raise ValueError(f'the interleaved schedule needs num_microbatches to be a multiple of the '
                         f'pipeline size {p}; got {m_total}. {suggest_multiples(m_total, p)}')
    total = m_total * c

    def unit(k: int, forward: bool) -> Tuple[int, int]:
        group, pos = divmod(k, p * c)
        chunk = pos // p
        return group * p + pos % p, (chunk if forward else c - 1 - chunk)

    b = _Builder(p, c)
    for s in range(p):
        warmup = min((p - s - 1) * 2 + (c - 1) * p, total)
        for k in range(warmup):
            b.forward(s, *unit(k, True))
        for i in range(total - warmup):
            b.forward(s, *unit(warmup + i, True))
            b.backward(s, *unit(i, False))
        for k in range(total - warmup, total):
            b.backward(s, *unit(k, False))
    return b.plan


def build_plan(schedule: str, num_stages: int, num_microbatches: int, num_chunks: int = 1) -> Plan:
    """The plan of a schedule by name: ``'1f1b'``, ``'interleaved'`` or ``'gpipe'``."""
    if schedule == '1f1b':
        return build_1f1b_plan(num_stages, num_microbatches)
    if schedule == 'gpipe':
        return build_gpipe_plan(num_stages, num_microbatches)
    if schedule == 'interleaved':
        return build_interleaved_plan(num_stages, num_microbatches, num_chunks)
    raise ValueError(f'unknown schedule {schedule!r}; expected one of {", ".join(SCHEDULE_NAMES)}')


def forward_only(plan: Plan) -> Plan:
    """The plan without backward work: what evaluation runs."""
    return [[a for a in row if a.kind in ('F', 'SEND_F', 'RECV_F')] for row in plan]


# ---------------------------------------------------------------------- validation
def _where(stage: int, index: int, action: Action) -> str:
    return f'stage {stage}: {action} (position {index})'


def validate_plan(plan: Plan, num_microbatches: int, num_chunks: int = 1, backward: bool = True) -> None:
    """Raise :class:`PlanError` unless ``plan`` is complete, consistent between ranks and deadlock-free.

    Checks, per rank: every (microbatch, chunk) has exactly one ``F`` (and one ``B`` when
    ``backward``); every ``B`` follows its ``F``; inputs are received before they are used and
    results sent after they exist, to the right neighbour. Across ranks: each send is matched,
    in order, by the neighbour's receive. Finally :func:`simulate` proves there is no deadlock.
    """
    p = len(plan)
    if p < 1:
        raise PlanError('a plan needs at least one stage')
    last_v = p * num_chunks - 1
    for s, row in enumerate(plan):
        seen: Dict[Tuple[str, int, int], int] = {}
        for i, a in enumerate(row):
            if not isinstance(a, Action):
                raise PlanError(f'stage {s} position {i}: expected an Action, got {type(a).__name__}')
            if not (0 <= a.microbatch < num_microbatches and 0 <= a.chunk < num_chunks):
                raise PlanError(f'{_where(s, i, a)}: microbatch must be in [0, {num_microbatches}) and '
                                f'chunk in [0, {num_chunks})')
            key = (a.kind, a.microbatch, a.chunk)
            if key in seen:
                raise PlanError(f'{_where(s, i, a)} repeats position {seen[key]}; each action runs once')
            seen[key] = i
            v = a.chunk * p + s
            if a.peer is not None:
                to_next = a.kind in ('SEND_F', 'RECV_B')
                if (to_next and v == last_v) or (not to_next and v == 0):
                    raise PlanError(f'{_where(s, i, a)}: virtual stage {v} has no '
                                    f'{"next" if to_next else "previous"} stage to talk to')
                want = (s + 1) % p if to_next else (s - 1) % p
                if a.peer != want:
                    raise PlanError(f'{_where(s, i, a)}: the peer must be stage {want}, got {a.peer}')
            before = {'B': ('F', 'forward'), 'SEND_F': ('F', 'forward'), 'SEND_B': ('B', 'backward'),
                      'RECV_B': ('SEND_F', 'send')}  # a gradient is shaped like the output that was sent
            if a.kind in before:
                need, name = before[a.kind]
                if seen.get((need, a.microbatch, a.chunk), i) >= i:
                    raise PlanError(f'{_where(s, i, a)} comes before its {name} {need}{a.microbatch}'
                                    f'{"c%d" % a.chunk if a.chunk else ""}; every {a.kind} must follow it')
        for m in range(num_microbatches):
            for c in range(num_chunks):
                v = c * p + s
                kinds = ['F'] + (['B'] if backward else [])
                needs = kinds + (['RECV_F', 'SEND_B'] if v > 0 and p > 1 else []) \
                    + (['SEND_F', 'RECV_B'] if v < last_v and p > 1 else [])
                for kind in needs:
                    if kind in ('SEND_B', 'RECV_B') and not backward:
                        continue
                    if (kind, m, c) not in seen:
                        name = Action(kind, m, c, 0 if kind not in COMPUTE else None).text()
                        raise PlanError(f'stage {s} is missing {name}: every microbatch needs it '
                                        f'on this stage')
                for kind, user in (('RECV_F', 'F'), ('RECV_B', 'B')):
                    if (kind, m, c) in seen and seen[(kind, m, c)] > seen.get((user, m, c), -1):
                        raise PlanError(f'stage {s}: {Action(kind, m, c, 0).text()} comes after the '
                                        f'{Action(user, m, c).text()} that needs it')
                if p == 1 and v > 0 and seen[('F', m, c)] < seen[('F', m, c - 1)]:
                    raise PlanError(f'stage 0: {Action("F", m, c).text()} runs before '
                                    f'{Action("F", m, c - 1).text()} whose output it needs')
                if p == 1 and backward and v < last_v and seen[('B', m, c)] < seen.get(('B', m, c + 1), -1):
                    raise PlanError(f'stage 0: {Action("B", m, c).text()} runs before '
                                    f'{Action("B", m, c + 1).text()} whose gradient it needs')
    _check_channels(plan, num_chunks)
    simulate(plan, num_chunks)


def _receiver_item(a: Action, src: int, p: int) -> Tuple[str, int, int]:
    """What the neighbour's matching receive looks like: (kind, microbatch, chunk)."""
    v = a.chunk * p + src + (1 if a.kind == 'SEND_F' else -1)
    return ('RECV_F' if a.kind == 'SEND_F' else 'RECV_B', a.microbatch, v // p)


def _check_channels(plan: Plan, num_chunks: int) -> None:
    p = len(plan)
    sends: Dict[Tuple[int, int], List[Tuple[str, int, int]]] = {}
    recvs: Dict[Tuple[int, int], List[Tuple[str, int, int]]] = {}
    for s, row in enumerate(plan):
        for a in row:
            if a.kind.startswith('SEND'):
                sends.setdefault((s, a.peer), []).append(_receiver_item(a, s, p))
            elif a.kind.startswith('RECV'):
                recvs.setdefault((a.peer, s), []).append((a.kind, a.microbatch, a.chunk))
    for channel in sorted(set(sends) | set(recvs)):
        sent, got = sends.get(channel, []), recvs.get(channel, [])
        for k in range(max(len(sent), len(got))):
            want = sent[k] if k < len(sent) else None
            have = got[k] if k < len(got) else None
            if want != have:
                src, dst = channel
                fmt = lambda item: 'nothing' if item is None else \
                    f'{item[0]}{item[1]}' + (f'c{item[2]}' if item[2] else '')
                raise PlanError(f'stage {src} -> stage {dst}: message {k} is sent as the input of '
                                f'{fmt(want)} but stage {dst} posts {fmt(have)} as its receive number {k}; '
                                f'sends and receives between two stages must be in the same order')


# ---------------------------------------------------------------------- simulation
@dataclass
class Simulation:
    """Start time of every compute action per stage, the makespan, and the idle fraction."""

    starts: List[List[Tuple[int, Action]]]
    makespan: int
    forward_cost: int
    backward_cost: int

    @property
    def bubble(self) -> float:
        busy = sum(self.forward_cost if a.kind == 'F' else self.backward_cost
                   for row in self.starts for _, a in row)
        return 1.0 - busy / (self.makespan * len(self.starts)) if self.makespan else 0.0


def simulate(plan: Plan, num_chunks: int = 1, forward_cost: int = 1, backward_cost: int = 1) -> Simulation:
    """Run the plan on a model clock, with the runtime's rules for waiting.

    Compute takes time. A receive is posted without waiting, except a stage's first
    ``RECV_F`` of each chunk, which may have to read the shapes from the wire and so waits for
    its send; the compute that uses a received tensor waits until its send was posted. A send
    waits until the neighbour has posted the receives of this stage's earlier sends of the
    same kind. Raises :class:`PlanError` naming every blocked stage when none can progress.
    """
    p = len(plan)
    pos = [0] * p
    clock = [0] * p
    Item = Tuple[int, int, Tuple[str, int, int]]  # (src, dst, receiver's item)
    posted: Dict[Item, int] = {}  # -> time the send was posted
    received: Dict[Item, int] = {}  # -> time the receive was posted
    unwaited: Dict[Tuple[int, int, str], List[Item]] = {}  # (src, dst, kind) -> sends not yet waited
    inputs: List[Dict[Tuple[str, int, int], Item]] = [{} for _ in range(p)]  # compute -> its receive
    shapes_known: List[set] = [set() for _ in range(p)]  # chunks whose first RECV_F a stage has done
    starts: List[List[Tuple[int, Action]]] = [[] for _ in range(p)]
    while True:
        progressed = False
        for s in range(p):
            row = plan[s]
            while pos[s] < len(row):
                a = row[pos[s]]
                if a.kind.startswith('SEND'):
                    lane = unwaited.setdefault((s, a.peer, a.kind), [])
                    if any(item not in received for item in lane):
                        break
                    clock[s] = max([clock[s]] + [received[item] for item in lane])
                    item = (s, a.peer, _receiver_item(a, s, p))
                    posted[item] = clock[s]
                    lane[:] = [item]
                elif a.kind.startswith('RECV'):
                    key = (a.peer, s, (a.kind, a.microbatch, a.chunk))
                    if a.kind == 'RECV_F' and a.chunk not in shapes_known[s]:
                        if key not in posted:
                            break
                        clock[s] = max(clock[s], posted[key])
                        shapes_known[s].add(a.chunk)
                    received[key] = clock[s]
                    inputs[s][(a.kind[-1], a.microbatch, a.chunk)] = key
                else:
                    key = inputs[s].get((a.kind, a.microbatch, a.chunk))
                    if key is not None:
                        if key not in posted:
                            break
                        clock[s] = max(clock[s], posted[key])
                        del inputs[s][(a.kind, a.microbatch, a.chunk)]
                    starts[s].append((clock[s], a))
                    clock[s] += forward_cost if a.kind == 'F' else backward_cost
                pos[s] += 1
                progressed = True
        if all(pos[s] == len(plan[s]) for s in range(p)):
            return Simulation(starts, max(clock), forward_cost, backward_cost)
        if not progressed:
            blocked = [f'stage {s} waits at {plan[s][pos[s]]} (position {pos[s]})'
                       for s in range(p) if pos[s] < len(plan[s])]
            raise PlanError('the plan deadlocks: ' + '; '.join(blocked)
                            + '. Each waits for another stage to reach an action that comes later in its '
                            'list (a compute waits for the send of its input; a send for the receive of '
                            'the previous send of its kind).')


def _same_data(a: Action, b: Action) -> bool:
    return (a.microbatch, a.chunk) == (b.microbatch, b.chunk)


def prefetch_receives(plan: Plan) -> Plan:
    """The plan with every receive posted one compute action earlier; what the runtime runs.

    A receive is posted with ``irecv`` and waited only by the compute that uses it, so posting
    it before the previous compute lets the data travel while that compute runs, rather than
    the stage waiting for the transfer right before it needs it (and it lets the sender's next
    send go sooner). Receives keep their order within a row, so every channel still matches its
    sends. The cost is one receive buffer per neighbour, allocated one compute earlier. A
    stage's first ``RECV_F`` of each chunk stays where it is: it may wait for the shapes.
    """
    out: Plan = []
    for row in plan:
        new: List[Action] = []
        shapes_known = set()
        for a in row:
            if a.kind == 'RECV_F' and a.chunk not in shapes_known:
                shapes_known.add(a.chunk)
                new.append(a)
            elif a.kind.startswith('RECV'):
                # back over this row's sends, then over one compute; never past an action on
                # the same data (a gradient is shaped like the output sent just before it)
                j = len(new)
                while j > 0 and new[j - 1].kind.startswith('SEND') and not _same_data(new[j - 1], a):
                    j -= 1
                if j > 0 and new[j - 1].kind in COMPUTE and not _same_data(new[j - 1], a):
                    j -= 1
                new.insert(j, a)
            else:
                new.append(a)
        out.append(new)
    return out


def peak_in_flight(plan: Plan) -> List[int]:
    """Per stage, the most microbatch-chunks whose forward ran but whose backward did not yet."""
    peaks = []
    for row in plan:
        live = peak = 0
        for a in row:
            live += (a.kind == 'F') - (a.kind == 'B')
            peak = max(peak, live)
        peaks.append(peak)
    return peaks


def format_timeline(plan: Plan, num_chunks: int = 1, forward_cost: int = 1, backward_cost: int = 1) -> str:
    """A text timeline: one row per stage, one cell per time unit, ``.`` where the stage idles."""
    sim = simulate(plan, num_chunks, forward_cost, backward_cost)
    labels = [[''] * sim.makespan for _ in plan]
    for s, row in enumerate(sim.starts):
        for t, a in row:
            cost = forward_cost if a.kind == 'F' else backward_cost
            for k in range(cost):
                labels[s][t + k] = str(a) if k == 0 else '~'
    width = max([len(x) for r in labels for x in r] + [2])
    lines = []
    for s, row in enumerate(labels):
        cells = ' '.join((x or '.').ljust(width) for x in row)
        lines.append(f'stage {s} | {cells}'.rstrip())
    return '\n'.join(lines)
