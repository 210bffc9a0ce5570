"""Cursors: a position in a context that stays correct while entries arrive late.

A position in causal order is not safe: an entry can arrive from a peer with a lower Lamport time
than entries a reader has already seen. A version vector ``{origin: seq}`` is: it says exactly
which entries were delivered, because each origin's entries are numbered 1, 2, 3... with no gap
and are in causal order among themselves. Text form: ``origin:seq,origin:seq`` sorted by origin
(``""`` is the start).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from .entry import NODE_ID_RE, Entry
from .errors import InvalidCursor

_SEQ_RE = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() admits '²' and '١'


class Cursor(Mapping[str, int]):
    __slots__ = ("_seen",)

    def __init__(self, seen: Mapping[str, int] | None = None) -> None:
        self._seen = {origin: seq for origin, seq in (seen or {}).items() if seq > 0}

    def __getitem__(self, origin: str) -> int:
        return self._seen[origin]

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return f"Cursor({str(self)!r})"

    def __str__(self) -> str:
        return ",".join(f"{o}:{s}" for o, s in sorted(self._seen.items()))

    def covers(self, entry: Entry) -> bool:
        return entry.seq <= self._seen.get(entry.origin, 0)

    def advanced(self, entries: Iterable[Entry]) -> Cursor:
        seen = dict(self._seen)
        for e in entries:
            if e.seq > seen.get(e.origin, 0):
                seen[e.origin] = e.seq
        return Cursor(seen)

    @classmethod
    def parse(cls, text: str | Cursor | None) -> Cursor:
        if text is None:
            return cls()
        if isinstance(text, Cursor):
            return text
        seen: dict[str, int] = {}
        for part in filter(None, text.strip().split(",")):
            origin, sep, seq = part.partition(":")
            valid = sep and NODE_ID_RE.fullmatch(origin) and _SEQ_RE.fullmatch(seq)
            if not valid or origin in seen:
                raise InvalidCursor(f"invalid cursor {text!r}: expected origin:seq,origin:seq")
            seen[origin] = int(seq)
        return cls(seen)
