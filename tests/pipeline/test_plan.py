"""Schedules as data: builders, validator and simulator, checked without processes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colossal_runner.engine.schedule.interleaved import InterleavedPipelineSchedule
from colossal_runner.engine.schedule.pipeline import PipelineSchedule
from colossal_runner.engine.schedule.plan import (Action, PlanError, build_1f1b_plan, build_gpipe_plan,
                                                  build_interleaved_plan, build_plan, format_plan,
                                                  format_timeline, forward_only, parse_plan, peak_in_flight,
                                                  prefetch_receives, simulate, validate_plan)


def test_action_text_round_trips():
    for text in ('F3', 'B0', 'F2c1', 'SEND_F3c1@2', 'RECV_B0@1', 'SEND_B7@0', 'RECV_F1c3@3'):
        assert str(Action.parse(text)) == text
    assert Action.parse('F2c1') == Action('F', 2, 1)
    assert Action.parse('SEND_F3@1') == Action('SEND_F', 3, 0, 1)


@pytest.mark.parametrize('text', ['X3', 'F', 'F3@1', 'SEND_F3', 'f3', 'F-1'])
def test_action_rejects_bad_text(text):
    with pytest.raises(PlanError):
        Action.parse(text)


def test_action_rejects_bad_fields():
    with pytest.raises(PlanError, match="unknown action kind 'FWD'"):
        Action('FWD', 0)
    with pytest.raises(PlanError, match='F actions take no peer'):
        Action('F', 0, 0, 1)
    with pytest.raises(PlanError, match='SEND_F actions need a peer'):
        Action('SEND_F', 0)


GRID = [(p, m, c) for p in (1, 2, 3, 4) for m in (1, 2, 3, 4, 6, 8) for c in (1, 2, 3)]


@pytest.mark.parametrize('p,m,c', GRID)
def test_every_built_plan_validates(p, m, c):
    plans = {'gpipe': build_gpipe_plan(p, m), '1f1b': build_1f1b_plan(p, m)}  # any M, also M < P
    if m % p == 0:
        plans['interleaved'] = build_interleaved_plan(p, m, c)
    for name, plan in plans.items():
        chunks = c if name == 'interleaved' else 1
        validate_plan(plan, m, chunks)
        validate_plan(forward_only(plan), m, chunks, backward=False)
        assert len(plan) == p
        for row in plan:  # each stage computes each (microbatch, chunk) forward and backward once
            assert sorted((a.kind, a.microbatch, a.chunk) for a in row if a.kind in 'FB') == \
                sorted((k, i, j) for k in 'FB' for i in range(m) for j in range(chunks))


@settings(max_examples=25, deadline=None)
@given(p=st.integers(1, 6), groups=st.integers(1, 4), c=st.integers(1, 4))
def test_interleaved_plans_validate_for_any_sizes(p, groups, c):
    plan = build_interleaved_plan(p, p * groups, c)
    validate_plan(plan, p * groups, c)


@pytest.mark.parametrize('p,m', [(2, 2), (2, 5), (4, 4), (4, 8), (3, 7)])
def test_1f1b_shape_warmup_and_memory(p, m):
    plan = build_1f1b_plan(p, m)
    for s, row in enumerate(plan):
        computes = [a for a in row if a.kind in ('F', 'B')]
        first_b = next(i for i, a in enumerate(computes) if a.kind == 'B')
        assert first_b == min(p - s - 1, m) + 1  # warm-up forwards, then one more F before the first B
        after = computes[first_b - 1:first_b - 1 + 2 * (m - (p - s - 1))]
        assert [a.kind for a in after] == ['F', 'B'] * (len(after) // 2)  # steady state alternates
    assert peak_in_flight(plan) == [p - s for s in range(p)]
    assert peak_in_flight(build_gpipe_plan(p, m)) == [m] * p


@pytest.mark.parametrize('p,m', [(2, 1), (4, 1), (4, 2), (4, 3), (5, 2)])
def test_1f1b_with_fewer_microbatches_than_stages(p, m):
    """Megatron-LM's warm-up, min(P - s - 1, M): a stage with P - s - 1 >= M runs every forward,
    then every backward (as GPipe); the later stages alternate. Prefetched, it stays valid."""
    plan = build_1f1b_plan(p, m)
    for s, row in enumerate(plan):
        computes = [a.kind for a in row if a.kind in ('F', 'B')]
        warmup = min(p - s - 1, m)
        assert computes[:warmup] == ['F'] * warmup
        if warmup == m:
            assert computes == ['F'] * m + ['B'] * m, s
        else:
            assert computes[warmup:warmup + 2] == ['F', 'B'], s
    assert peak_in_flight(plan) == [min(p - s, m) for s in range(p)]
    assert simulate(build_1f1b_plan(p, m)).bubble == pytest.approx((p - 1) / (m + p - 1))
    for rows, backward in ((plan, True), (forward_only(plan), False)):
        validate_plan(prefetch_receives(rows), m, backward=backward)
    schedule = PipelineSchedule(m)
    schedule.check_sizes(p)  # the runtime accepts it (the rule M >= P is lifted) and runs this plan
    assert [[a for a in row if a.kind in ('F', 'B')] for row in schedule.plan(p)] == \
        [[a for a in row if a.kind in ('F', 'B')] for row in plan]


@pytest.mark.parametrize('p,m', [(2, 4), (4, 8), (4, 16), (3, 6)])
def test_bubble_matches_the_formula_and_interleaving_shrinks_it(p, m):
    expected = (p - 1) / (m + p - 1)
    assert simulate(build_1f1b_plan(p, m)).bubble == pytest.approx(expected)
    assert simulate(build_gpipe_plan(p, m)).bubble == pytest.approx(expected)
    assert simulate(build_interleaved_plan(p, m, 2), 2).bubble < expected


def test_builders_reject_bad_sizes():
    with pytest.raises(ValueError, match='multiple of the pipeline size 4; got 6. Use 4 or 8'):
        build_interleaved_plan(4, 6, 2)
    with pytest.raises(ValueError, match='num_stages must be a positive int, got 0'):
        build_1f1b_plan(0, 4)
    with pytest.raises(ValueError, match="unknown schedule 'zigzag'; expected one of 1f1b, interleaved"):
        build_plan('zigzag', 2, 2)


def _gpipe_2x2():
    return format_plan(build_gpipe_plan(2, 2))


def test_format_and_parse_are_inverse():
    rows = _gpipe_2x2()
    assert format_plan(parse_plan(rows)) == rows
    assert rows[1].split()[:3] == ['RECV_F0@0', 'F0', 'RECV_F1@0']


def _replace(rows, stage, old, new):
    rows = list(rows)
    assert old in rows[stage]
    rows[stage] = rows[stage].replace(old, new)
    return parse_plan(rows)


@pytest.mark.parametrize('stage,old,new,message', [
    (0, 'F0 SEND_F0@1', 'SEND_F0@1 F0', 'SEND_F0@1 .position 0. comes before its forward F0'),
    (0, 'RECV_B0@1 B0', 'B0 RECV_B0@1', 'RECV_B0 comes after the B0 that needs it'),
    (0, 'F0 SEND_F0@1 F1 SEND_F1@1', 'F0 F1 SEND_F1@1 SEND_F0@1',
     'stage 0 -> stage 1: message 0 is sent as the input of RECV_F1 but stage 1 posts RECV_F0'),
    (1, 'B1 SEND_B1@0', 'B1', 'stage 1 is missing SEND_B1'),
    (0, 'SEND_F1@1', 'SEND_F1@0', 'the peer must be stage 1, got 0'),
    (1, 'RECV_F1@0 F1 ', 'RECV_F1@0 F1 F1 ', 'repeats position'),
    (1, 'SEND_B0@0', 'SEND_B5@0', r'microbatch must be in \[0, 2\)'),
])
def test_validator_rejects_broken_plans(stage, old, new, message):
    rows = _gpipe_2x2()
    with pytest.raises(PlanError, match=message):
        validate_plan(_replace(rows, stage, old, new), 2)


def test_validator_rejects_a_backward_before_its_forward():
    plan = parse_plan(['B0 F0'])
    with pytest.raises(PlanError, match=r'stage 0: B0 \(position 0\) comes before its forward F0'):
        validate_plan(plan, 1)


def test_validator_finds_a_deadlock_and_names_the_blocked_stages():
    # stage 1's F1 needs SEND_F1, which stage 0 posts after B0, which needs stage 1's SEND_B0,
    # which comes after F1; receives are posted early but the compute waits for their send
    plan = parse_plan(['F0 SEND_F0@1 F1 RECV_B0@1 B0 SEND_F1@1 RECV_B1@1 B1',
                       'RECV_F0@0 F0 RECV_F1@0 F1 B0 SEND_B0@0 B1 SEND_B1@0'])
    with pytest.raises(PlanError, match=r'deadlocks: stage 0 waits at B0 \(position 4\); '
                                        r'stage 1 waits at F1 \(position 3\)'):
        validate_plan(plan, 2)


def test_a_gradient_is_received_after_its_output_was_sent():
    # the runtime shapes the gradient buffer like the output it sent
    plan = parse_plan(['F0 RECV_B0@1 SEND_F0@1 B0', 'RECV_F0@0 F0 B0 SEND_B0@0'])
    with pytest.raises(PlanError, match=r'RECV_B0@1 \(position 1\) comes before its send SEND_F0'):
        validate_plan(plan, 1)


def test_a_first_receive_of_a_chunk_waits_for_its_shapes():
    # two chunks per stage, forward only: stage 0's first RECV_F of chunk 1 stands before F1
    # and waits there until stage 1 sends F0 (time 2), so F1 starts at 2, not 1; its second
    # RECV_F of chunk 1 is only posted, and F0c1 runs as soon as its input was sent
    rows = ['F0 SEND_F0@1 {} F1 SEND_F1@1 RECV_F1c1@1 F0c1 SEND_F0c1@1 F1c1 SEND_F1c1@1',
            'RECV_F0@0 F0 SEND_F0@0 RECV_F1@0 F1 SEND_F1@0 RECV_F0c1@0 F0c1 RECV_F1c1@0 F1c1']
    early = parse_plan([rows[0].format('RECV_F0c1@1'), rows[1]])
    validate_plan(early, 2, 2, backward=False)
    starts = {str(a): t for t, a in simulate(early, 2).starts[0]}
    assert (starts['F1'], starts['F0c1'], starts['F1c1']) == (2, 3, 4)
    late = parse_plan([rows[0].format('').replace('F1 SEND_F1@1', 'F1 SEND_F1@1 RECV_F0c1@1'), rows[1]])
    assert {str(a): t for t, a in simulate(late, 2).starts[0]}['F1'] == 1


def test_prefetched_receives_move_one_compute_earlier_and_stay_valid():
    plan = build_1f1b_plan(2, 4)
    got = format_plan(prefetch_receives(plan))
    assert got[0] == ('F0 SEND_F0@1 RECV_B0@1 F1 SEND_F1@1 B0 RECV_B1@1 F2 SEND_F2@1 B1 RECV_B2@1 F3 '
                      'SEND_F3@1 RECV_B3@1 B2 B3')
    # the first RECV_F stays (it may wait for shapes); the others go before the previous compute
    assert got[1] == ('RECV_F0@0 F0 RECV_F1@0 B0 SEND_B0@0 F1 RECV_F2@0 B1 SEND_B1@0 F2 RECV_F3@0 B2 '
                      'SEND_B2@0 F3 B3 SEND_B3@0')
    # a gradient receive never moves before the send of the output it belongs to
    assert format_plan(prefetch_receives(build_gpipe_plan(2, 1)))[0] == 'F0 SEND_F0@1 RECV_B0@1 B0'


@pytest.mark.parametrize('p,m,c', [(2, 4, 1), (3, 6, 1), (4, 8, 1), (4, 8, 2), (2, 2, 3), (5, 10, 2)])
def test_prefetched_plans_validate_and_are_never_slower(p, m, c):
    for name in ('1f1b', 'gpipe', 'interleaved'):
        if name != 'interleaved' and c > 1:
            continue
        plan = build_plan(name, p, m, c)
        for rows in (plan, forward_only(plan)):
            fast = prefetch_receives(rows)
            validate_plan(fast, m, c, backward=rows is plan)
            for cost in (1, 2):
                assert simulate(fast, c, 1, cost).makespan <= simulate(rows, c, 1, cost).makespan


def test_a_send_waits_until_the_previous_send_of_its_kind_is_received():
    # stage 1 posts RECV_F1 only after B0 (cost 3), at time 5; stage 0 runs all its forwards
    # first, so its SEND_F2 waits until then and F3 starts at 5 instead of 3
    first = [f'F{m} SEND_F{m}@1' for m in range(4)] + [f'RECV_B{m}@1 B{m}' for m in range(4)]
    last = [f'RECV_F{m}@0 F{m} B{m}' for m in range(4)] + [f'SEND_B{m}@0' for m in range(4)]
    plan = parse_plan([' '.join(first), ' '.join(last)])
    validate_plan(plan, 4)
    starts = {str(a): t for t, a in simulate(plan, backward_cost=3).starts[0]}
    assert [starts[f'F{m}'] for m in range(4)] == [0, 1, 2, 5]


def test_a_plan_that_needs_unwaited_sends_is_a_deadlock():
    # with sends that never wait this would run; here stage 0's SEND_F3 waits for stage 1 to
    # receive F2, which stage 1 posts after its SEND_F1, which waits for stage 0's RECV_F0c1
    c1 = ' '.join(f'RECV_F{m}c1@1 F{m}c1 SEND_F{m}c1@1' for m in range(4))
    plan = parse_plan([' '.join(f'F{m} SEND_F{m}@1' for m in range(4)) + ' ' + c1,
                       ' '.join(f'RECV_F{m}@0 F{m} SEND_F{m}@0' for m in range(4)) + ' '
                       + ' '.join(f'RECV_F{m}c1@0 F{m}c1' for m in range(4))])
    with pytest.raises(PlanError, match=r'deadlocks: stage 0 waits at SEND_F3@1 \(position 7\); '
                                        r'stage 1 waits at SEND_F1@0 \(position 5\)'):
        validate_plan(plan, 4, 2, backward=False)


def test_validator_rejects_talking_past_the_ends():
    plan = parse_plan(['F0 B0 SEND_B0@1', 'F0 B0'])
    with pytest.raises(PlanError, match='virtual stage 0 has no previous stage'):
        validate_plan(plan, 1)


def test_timeline_shows_every_stage_and_idle_time():
    text = format_timeline(build_1f1b_plan(4, 8))
    lines = text.splitlines()
    assert [line.split(' |')[0] for line in lines] == [f'stage {s}' for s in range(4)]
    cells = [line.split('| ')[1].split() for line in lines]
    assert cells[0][:4] == ['F0', 'F1', 'F2', 'F3'] and cells[3][:5] == ['.', '.', '.', 'F0', 'B0']
    assert all(sum(c not in '.' for c in row) == 16 for row in cells)
    assert 'F1c1' in format_timeline(build_interleaved_plan(2, 4, 2), 2)
    assert '~' in format_timeline(build_gpipe_plan(2, 2), backward_cost=2)


@pytest.mark.parametrize('row,message', [
    ('F0c1 F0 B0c1 B0', 'stage 0: F0c1 runs before F0 whose output it needs'),
    ('F0 F0c1 B0 B0c1', 'stage 0: B0 runs before B0c1 whose gradient it needs'),
    ('F0 F0c1 B0c1', 'stage 0 is missing B0: every microbatch needs it'),
])
def test_one_stage_chunks_hand_over_in_order(row, message):
    with pytest.raises(PlanError, match=message):
        validate_plan(parse_plan([row]), 1, num_chunks=2)


@pytest.mark.parametrize('p, m, hint', [(4, 2, 'Use 4.'), (4, 3, 'Use 4.'), (4, 6, 'Use 4 or 8.'),
                                        (3, 7, 'Use 6 or 9.')])
def test_interleaved_size_errors_suggest_distinct_valid_multiples(p, m, hint):
    """Fewer microbatches than stages used to read "Use 4 or 4." (the lower multiple, 0, was
    replaced by p); only multiples that are at least p are suggested, each once."""
    with pytest.raises(ValueError, match=rf'pipeline size {p}; got {m}\. {hint}$'):
        build_interleaved_plan(p, m, 2)
    schedule = InterleavedPipelineSchedule(m, num_model_chunks=2)
    with pytest.raises(ValueError, match=rf'pipeline size {p}; got {m}\. {hint}$'):
        schedule.check_sizes(p)
