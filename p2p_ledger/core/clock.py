"""Lamport clock: a local event ticks it, an observed time advances it to max(local, seen).

The clock saturates at ``entry.MAX_LAMPORT``: entries above it are refused on the way in, and a
tick at the limit stays there (entries with equal times are ordered by id), so no entry — not
even a hostile one at the limit — can make appends fail.
"""

from __future__ import annotations

from .entry import MAX_LAMPORT


class LamportClock:
    __slots__ = ("_time",)

    def __init__(self, time: int = 0) -> None:
        self._time = min(time, MAX_LAMPORT)

    @property
    def time(self) -> int:
        return self._time

    def tick(self) -> int:
        """A local event: returns the new time, above anything seen before (until the limit)."""
        if self._time < MAX_LAMPORT:
            self._time += 1
        return self._time

    def observe(self, seen: int) -> None:
        """Another node's event happened before our next one."""
        if seen > self._time:
            self._time = min(seen, MAX_LAMPORT)
