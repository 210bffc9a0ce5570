"""What the ledger needs from durable storage, and an in-memory implementation.

The ledger calls storage synchronously: when ``commit`` returns, the updates are durable. The
runtime uses SQLite (``store.SqliteStore``); the simulator and unit tests use ``MemoryStorage``,
whose ``commit`` is durable by definition (a simulated crash keeps exactly what was committed).

Besides the update rows, storage keeps one ``Summary`` per context, written in the same
transaction as the rows it describes: what a start needs (the node-level Merkle tree, entry
counts, state vectors for gossip, the Lamport clock) without loading any context. ``summaries``
answers None when they do not describe the stored rows (a store written before they existed):
then the ledger recomputes them once, a context at a time (``Ledger.open``).

And the *heads* each context still needs (``identity.Head``, encoded), one per (context, entry
id): the signed heads of chain tips and the few kept to bound proofs (``ContextLog.heads``).
Rows written since heads left them carry none; a head whose entry gained a successor is
deleted by the commit that stores the successor, in the same transaction as its rows, so a
stored context always authenticates from its rows and its heads (rows of older formats carry
their own heads, which still count).

A loaded context keeps no record in memory once its row is stored: it reads records back as
*spans* of its rows (``read_spans``: a row's number in the context, an offset, a size), since a
record's bytes sit whole inside the Yjs update of the row that stored it (``index.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

# Where a record lies in a context's stored rows: (the row's number in the context, counting
# from 0 in commit order, the byte offset in that row, the record's size).
Span = tuple[int, int, int]
# A change to a context's stored heads: (context, raw entry id, the encoded head, or None to
# delete it).
HeadChange = tuple[str, bytes, bytes | None]


class Summary(NamedTuple):
    """One context as a start needs it, kept current by every commit touching the context."""

    root: bytes  # the context's Merkle root over entry ids
    entries: int
    state_vector: bytes  # Yjs state vector of the context's Doc (gossip's fast path)
    max_lamport: int
    forks: int  # positions with more than one authentic entry
    stored: int  # bytes of the context's stored update rows (the memory budget's proxy)


class ContextView(Protocol):
    """One consistent view of a store's contexts, read while the store goes on committing
    (``store.StoreReader.view``): what ``Ledger.verify_steps`` checks in steps."""

    def iter_context(self, context: str) -> Iterator[bytes]: ...

    def heads(self, context: str) -> list[bytes]: ...

    def summary(self, context: str) -> Summary | None: ...


class Storage(Protocol):
    def load(self) -> dict[str, list[bytes]]:
        """Every context's stored Yjs updates, in commit order (repair and tools; the ledger
        reads one context at a time with ``iter_context``)."""
        ...

    def contexts(self) -> list[str]:
        """The names of the contexts that have stored rows."""
        ...

    def iter_context(self, context: str) -> Iterator[bytes]:
        """One context's stored updates, in commit order, read as they are consumed (a few at
        a time: ``verify`` streams a context of any size in bounded memory). Consume it before
        the next commit."""
        ...

    def iter_rows(self, context: str, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """One context's stored updates after row ``after``, in commit order, each with its
        row number (increasing with the commit order; a compaction gives the new row a higher
        one), read as they are consumed like ``iter_context``. Consume it before the next
        commit."""
        ...

    def summaries(self) -> dict[str, Summary] | None:
        """Every context's summary, or None when they do not describe the stored rows."""
        ...

    def lagging_summaries(self) -> tuple[dict[str, Summary], list[str]]:
        """The stored summaries, and the contexts with rows committed after them (their
        summary lags or is missing: the ledger settles those, ``Ledger.settle_step``)."""
        ...

    def lagging_lamport(self) -> tuple[int, Iterator[tuple[str, bytes]]]:
        """What the Lamport times of the rows the stored summaries do not describe (every row
        when they were never written: what a crash left lagging) come to, for ``Ledger.open``'s
        clock: the highest time committed with them (``commit``'s ``lamport``; 0 if none),
        and (context, bundle) of those committed without it, in commit order, read as they
        are consumed (may include rows the time covers). Consume it before the next commit."""
        ...

    def read_spans(self, context: str, spans: Sequence[Span]) -> list[bytes]:
        """The bytes at each ``Span`` of one context's stored rows, in order: a loaded
        context's index reads its records from the rows they were committed in
        (``index.EntryIndex``). A row's number is its place among the context's rows in commit
        order (``iter_context``'s order), until ``replace_context`` makes the new state row 0.
        Spans out of the rows are a bug of the caller (IndexError or short bytes)."""
        ...

    def heads(self, context: str) -> list[bytes]:
        """The encoded heads stored for ``context`` (not those inside its rows)."""
        ...

    def scan(self, contexts: Collection[str]) -> Iterator[tuple[str, Iterator[bytes], list[bytes]]]:
        """Of ``contexts``, those with stored rows or heads, one after another in no set
        order: (name, its rows as ``iter_context`` reads them, its heads as ``heads`` gives
        them) — ``verify``'s one pass over a store instead of two reads per context. Read a
        context's rows before asking for the next. The scan may end early (a read that
        failed): the caller reads the contexts it did not give one by one."""
        ...

    def commit(self, updates: Sequence[tuple[str, bytes]],
               summaries: Mapping[str, Summary] | None = None,
               heads: Sequence[HeadChange] = (), lamport: int | None = None) -> None:
        """Append (context, update) pairs, replace those contexts' summaries and apply the
        head changes, in one durable transaction. ``summaries`` None leaves the summaries of
        those contexts lagging (tools that write rows only; the ledger with
        ``summary_lag_ns``): the next open recomputes them. Summaries describe every row
        committed up to the last commit that wrote any (it must write all that lag).
        ``lamport``: with lagging summaries, a Lamport time at or above every entry in
        ``updates`` and no higher than a stored entry's (the ledger gives its touched contexts'
        highest), kept so that an open after a crash need not read the rows for it (None:
        not given, the open reads them; see ``lagging_lamport``)."""
        ...

    def put_summaries(self, summaries: Mapping[str, Summary]) -> None:
        """Replace every summary by these (recomputed from the rows: the migration)."""
        ...

    def replace_context(self, context: str, state: bytes,
                        heads: Sequence[tuple[bytes, bytes]]) -> None:
        """Atomically replace a context's update history by one state and its stored heads by
        ``heads`` ((raw entry id, encoded head) pairs: compaction); its summary keeps its
        content and counts ``len(state)`` stored bytes."""
        ...

    def get_meta(self, name: str) -> str | None: ...

    def set_meta(self, name: str, value: str) -> None: ...

    def close(self) -> None: ...


class MemoryStorage:
    """Durable for the life of the object: what a simulated node keeps across a crash."""

    def __init__(self) -> None:
        self.updates: dict[str, list[bytes]] = {}
        self.stored_heads: dict[str, dict[bytes, bytes]] = {}  # context → raw id → head
        self.summary: dict[str, Summary] | None = {}
        self.lagging: set[str] = set()  # contexts with rows committed after the summaries
        self.meta: dict[str, str] = {}
        self.commits = 0
        self.row_base: dict[str, int] = {}  # row numbers before a context's first row (iter_rows)

    def load(self) -> dict[str, list[bytes]]:
        return {name: list(blobs) for name, blobs in self.updates.items()}

    def contexts(self) -> list[str]:
        return list(self.updates)

    def iter_context(self, context: str) -> Iterator[bytes]:
        return iter(list(self.updates.get(context, ())))

    def heads(self, context: str) -> list[bytes]:
        return list(self.stored_heads.get(context, {}).values())

    def scan(self, contexts: Collection[str]) -> Iterator[tuple[str, Iterator[bytes], list[bytes]]]:
        for name in contexts:
            if name in self.updates or self.stored_heads.get(name):
                yield name, self.iter_context(name), self.heads(name)

    def iter_rows(self, context: str, after: int = 0) -> Iterator[tuple[int, bytes]]:
        # the row number: the base of the context's rows (raised by a compaction) + the index
        rows = self.updates.get(context, [])
        base = self.row_base.get(context, 0)
        start = max(0, after - base)
        return iter([(base + i + 1, blob) for i, blob in enumerate(rows[start:], start)])

    def read_spans(self, context: str, spans: Sequence[Span]) -> list[bytes]:
        rows = self.updates[context]
        return [rows[row][at : at + size] for row, at, size in spans]

    def summaries(self) -> dict[str, Summary] | None:
        if self.summary is None or self.lagging or not self.summary.keys() >= self.updates.keys():
            return None  # (rows written straight into ``updates``, as tests do, have none)
        return dict(self.summary)

    def lagging_summaries(self) -> tuple[dict[str, Summary], list[str]]:
        if self.summary is None:
            return {}, list(self.updates)
        return dict(self.summary), [name for name in self.updates
                                    if name in self.lagging or name not in self.summary]

    def lagging_lamport(self) -> tuple[int, Iterator[tuple[str, bytes]]]:
        # No time is kept (reading the rows in memory costs nothing), so a simulated crash and
        # tail loss need no more than the rows. Every row of a lagging context: those the
        # summaries describe too, which is allowed.
        lagging = self.lagging_summaries()[1]
        return 0, iter([(name, blob) for name in lagging for blob in self.updates[name]])

    def commit(self, updates: Sequence[tuple[str, bytes]],
               summaries: Mapping[str, Summary] | None = None,
               heads: Sequence[HeadChange] = (), lamport: int | None = None) -> None:
        for context, blob in updates:
            self.updates.setdefault(context, []).append(blob)
        for context, raw, head in heads:
            held = self.stored_heads.setdefault(context, {})
            if head is None:
                held.pop(raw, None)
            else:
                held[raw] = head
        if summaries is None:
            self.lagging.update(context for context, _ in updates)  # (until recomputed)
        else:
            if self.summary is not None:
                self.summary.update(summaries)
            self.lagging.clear()  # (they describe every row so far, as in SqliteStore)
        self.commits += 1

    def put_summaries(self, summaries: Mapping[str, Summary]) -> None:
        self.summary = dict(summaries)
        self.lagging.clear()

    def replace_context(self, context: str, state: bytes,
                        heads: Sequence[tuple[bytes, bytes]]) -> None:
        self.row_base[context] = self.row_base.get(context, 0) + len(self.updates.get(context, ()))
        self.updates[context] = [state]
        self.stored_heads[context] = dict(heads)
        if self.summary is not None and context in self.summary:
            self.summary[context] = self.summary[context]._replace(stored=len(state))

    def get_meta(self, name: str) -> str | None:
        return self.meta.get(name)

    def set_meta(self, name: str, value: str) -> None:
        self.meta[name] = value

    def close(self) -> None:
        pass
