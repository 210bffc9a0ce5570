"""Lamport clock: a local event ticks it, an observed time advances it to max(local, seen)."""

from __future__ import annotations


class LamportClock:
    __slots__ = ("_time",)

    def __init__(self, time: int = 0) -> None:
        self._time = time

    @property
    def time(self) -> int:
        return self._time

    def tick(self) -> int:
        """A local event: returns the new time, strictly above anything seen before."""
        self._time += 1
        return self._time

    def observe(self, seen: int) -> None:
        """Another node's event happened before our next one."""
        if seen > self._time:
            self._time = seen
