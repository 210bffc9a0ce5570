"""The discrete-event loop: a virtual clock, a heap of timed callbacks, and the trace digest.

Time is an integer count of nanoseconds since the start of the run, so ordering never depends
on float rounding; the loop jumps straight to the next event, which is why hours of simulated
time cost only as much as the events in them. Events at the same instant run in the order they
were scheduled (a sequence number breaks ties), so a run is a pure function of its inputs.

Every state-changing event writes one canonical text line (``time kind details``) into a
running sha256: two runs with the same seed and scenario must produce the same digest, byte for
byte. ``keep_trace`` also keeps the lines, for debugging a diverging run.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable
from typing import Any

NS = 1_000_000_000

Callback = Callable[[Any], None]


def to_ns(seconds: float) -> int:
    return int(round(seconds * NS))


def deadline_ns(seconds: float) -> int:
    """The first integer nanosecond at or after a float deadline (never a hair before it)."""
    t = math.ceil(seconds * NS)
    while t / NS < seconds:  # why: ceil of the product can round below the float deadline
        t += 1
    return t


class EventLoop:
    def __init__(self, keep_trace: bool = False) -> None:
        self.now = 0
        self._heap: list[tuple[int, int, Callback, Any]] = []
        self._seq = 0
        self._digest = hashlib.sha256()
        self.events = 0
        self.trace: list[str] | None = [] if keep_trace else None

    def at(self, when: int, callback: Callback, arg: Any = None) -> None:
        """Run ``callback(arg)`` at virtual time ``when`` (ns; never before now)."""
        if when < self.now:
            when = self.now
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, callback, arg))

    def after(self, delay: int, callback: Callback, arg: Any = None) -> None:
        self.at(self.now + delay, callback, arg)

    def record(self, kind: str, details: str) -> None:
        """Add one canonical line to the trace digest."""
        line = f"{self.now} {kind} {details}\n"
        self._digest.update(line.encode())
        if self.trace is not None:
            self.trace.append(line)

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Run the next event; False when there is none."""
        if not self._heap:
            return False
        when, _, callback, arg = heapq.heappop(self._heap)
        self.now = when
        self.events += 1
        callback(arg)
        return True

    def run_until(self, until: int, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to virtual time ``until`` (inclusive), or until ``stop()`` is true.

        ``stop`` is checked after every event; the clock ends at ``until`` if the queue ran dry
        or the next event is later.
        """
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, callback, arg = heapq.heappop(heap)
            self.now = when
            self.events += 1
            callback(arg)
            if stop is not None and stop():
                return
        if self.now < until:
            self.now = until
