"""Lamport clock laws."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_ledger.core.clock import LamportClock

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
ops = st.lists(st.one_of(st.just(None), st.integers(0, 2**64)), max_size=40)


@SETTINGS
@given(start=st.integers(0, 1000), ops=ops)
def test_clock_laws(start, ops):
    clock = LamportClock(start)
    assert clock.time == start
    highest = start  # everything ticked or observed so far
    last_tick = None
    for op in ops:
        before = clock.time
        if op is None:
            t = clock.tick()
            assert t > highest, "tick must be strictly above anything seen before"
            assert t == clock.time
            if last_tick is not None:
                assert t > last_tick
            last_tick = t
            highest = t
        else:
            clock.observe(op)
            assert clock.time >= before, "observe never goes back"
            assert clock.time == max(before, op)
            highest = max(highest, op)
    assert clock.time == highest


@SETTINGS
@given(start=st.integers(0, 1000), seen=st.integers(0, 2**64))
def test_tick_after_observe_is_later(start, seen):
    clock = LamportClock(start)
    clock.observe(seen)
    assert clock.tick() > seen


def test_default_clock_starts_at_zero():
    clock = LamportClock()
    assert clock.time == 0
    assert [clock.tick() for _ in range(3)] == [1, 2, 3]
    clock.observe(2)
    assert clock.time == 3
    clock.observe(10)
    assert clock.tick() == 11
