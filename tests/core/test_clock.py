"""Lamport clock laws, and its saturation at MAX_LAMPORT (no value can make appends fail)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_ledger.core.clock import LamportClock
from p2p_ledger.core.entry import MAX_LAMPORT

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
ops = st.lists(st.one_of(st.just(None), st.integers(0, MAX_LAMPORT - 50)), max_size=40)


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
@given(start=st.integers(0, 1000), seen=st.integers(0, MAX_LAMPORT - 1))
def test_tick_after_observe_is_later(start, seen):
    clock = LamportClock(start)
    clock.observe(seen)
    assert clock.tick() > seen


@SETTINGS
@given(seen=st.integers(MAX_LAMPORT - 3, 2**64))
def test_clock_saturates_instead_of_failing(seen):
    """An observed time at or past the limit (a hostile entry) never makes a tick fail: the
    clock stays at MAX_LAMPORT, and entries with equal times are ordered by id."""
    clock = LamportClock()
    clock.observe(seen)
    assert clock.time <= MAX_LAMPORT
    ticks = [clock.tick() for _ in range(10)]
    assert ticks[-1] == MAX_LAMPORT
    assert ticks == sorted(ticks)


def test_default_clock_starts_at_zero():
    clock = LamportClock()
    assert clock.time == 0
    assert [clock.tick() for _ in range(3)] == [1, 2, 3]
    clock.observe(2)
    assert clock.time == 3
    clock.observe(10)
    assert clock.tick() == 11
