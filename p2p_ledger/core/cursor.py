"""Cursors: a position in a context that stays correct while entries arrive late.

A position in causal order is not safe: an entry can arrive from a peer with a lower Lamport time
than entries a reader has already seen. A version vector ``{writer: seq}`` is: it says exactly
which entries were delivered, because each writer's entries (one origin's chain during one open
of its data directory, ``<origin hex>.<chain hex>``) are numbered 1, 2, 3... with no gap and are
delivered in that order. A writer never reuses a seq (a node that lost the tail of its store
starts a new chain), so a cursor taken anywhere is valid on every node. Text form:
``writer:seq,writer:seq`` sorted by writer (``""`` is the start).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from .entry import Entry
from .errors import InvalidCursor

_SEQ_RE = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() admits '²' and '١'
WRITER_RE = re.compile(r"[0-9a-f]{64}\.[0-9a-f]{16}")


class Cursor(Mapping[str, int]):
    __slots__ = ("_seen",)

    def __init__(self, seen: Mapping[str, int] | None = None) -> None:
        self._seen = {writer: seq for writer, seq in (seen or {}).items() if seq > 0}

    def __getitem__(self, writer: str) -> int:
        return self._seen[writer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return f"Cursor({str(self)!r})"

    def __str__(self) -> str:
        return ",".join(f"{o}:{s}" for o, s in sorted(self._seen.items()))

    def covers(self, entry: Entry) -> bool:
        return entry.seq <= self._seen.get(entry.writer, 0)

    def advanced(self, entries: Iterable[Entry]) -> Cursor:
        seen = dict(self._seen)
        for e in entries:
            if e.seq > seen.get(e.writer, 0):
                seen[e.writer] = e.seq
        return Cursor(seen)

    @classmethod
    def parse(cls, text: str | Cursor | None) -> Cursor:
        if text is None:
            return cls()
        if isinstance(text, Cursor):
            return text
        seen: dict[str, int] = {}
        for part in filter(None, text.strip().split(",")):
            writer, sep, seq = part.partition(":")
            valid = sep and WRITER_RE.fullmatch(writer) and _SEQ_RE.fullmatch(seq)
            if not valid or writer in seen:
                raise InvalidCursor(f"invalid cursor {text!r}: expected writer:seq,writer:seq "
                                    "(writer = 64 hex digits of the origin, '.', 16 of the chain)")
            seen[writer] = int(seq)
        return cls(seen)
