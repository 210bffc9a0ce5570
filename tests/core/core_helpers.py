"""Shared helpers for the core tests (ledgers, syncing, forged Yjs updates)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

from pycrdt import Array, Doc

from p2p_ledger.core.entry import Entry
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.trio.store import SqliteStore


def counter_ns() -> Callable[[], int]:
    """A deterministic wall clock for ``now_ns``."""
    ticks = itertools.count(1_700_000_000_000_000_000, 1000)
    return lambda: next(ticks)


class Backend:
    """Creates storages of one kind and reopens them (closing SQLite stores first)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.open_stores: list[SqliteStore] = []
        self._n = 0

    def new(self) -> MemoryStorage | SqliteStore:
        self._n += 1
        if self.kind == "memory":
            return MemoryStorage()
        store = SqliteStore(self.tmp_path / f"node{self._n}", synchronous="OFF")
        self.open_stores.append(store)
        return store

    def reopen(self, storage):
        if self.kind == "memory":
            return storage
        storage.close()
        self.open_stores.remove(storage)
        store = SqliteStore(storage.path, synchronous="OFF")
        self.open_stores.append(store)
        return store

    def close(self) -> None:
        for store in self.open_stores:
            store.close()
        self.open_stores.clear()


def open_ledger(storage, node_id: str, instance: str | None = None, **kw) -> Ledger:
    kw.setdefault("now_ns", counter_ns())
    return Ledger.open(storage, node_id, instance or f"{node_id}-1", **kw)


def append(ledger: Ledger, context: str, *payloads: str | bytes, key: str = "k"):
    return ledger.append([ledger.prepare(context, key, p) for p in payloads])


def sync(src: Ledger, dst: Ledger, context: str) -> list[Entry]:
    """Send dst what it lacks of src's context, computed from dst's state vector."""
    if context not in src.contexts:
        return []
    have = dst.contexts.get(context)
    update = src.contexts[context].diff(have.state_vector() if have is not None else None)
    return dst.apply_remote(context, update)


def sync_all(ledgers: Iterable[Ledger]) -> None:
    ledgers = list(ledgers)
    while True:
        moved = 0
        for src in ledgers:
            for dst in ledgers:
                if src is not dst:
                    for name in list(src.contexts):
                        moved += len(sync(src, dst, name))
        if not moved:
            return


def ids(entries: Iterable[Entry]) -> list[str]:
    return [e.id for e in entries]


def read_ids(ledger: Ledger, context: str, **kw) -> list[str]:
    return ids(ledger.get(context, **kw)[0])


def page_all(ledger: Ledger, context: str, limit: int, after=None, key=None) -> list[list[Entry]]:
    pages = []
    while True:
        page, after = ledger.get(context, key=key, after=after, limit=limit)
        if not page:
            return pages
        assert len(page) <= limit
        pages.append(page)


def forged_update(records: Iterable[bytes], client_id: int = 4242) -> bytes:
    """A Yjs update from a foreign doc appending ``records`` to the "entries" array."""
    doc = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    arr.extend(list(records))
    return doc.get_update()


def deleting_update(full_state: bytes, index: int = 0, client_id: int = 4343) -> bytes:
    """An update (delete set only) removing item ``index`` of a doc holding ``full_state``."""
    doc = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    doc.apply_update(full_state)
    before = doc.get_state()
    del arr[index]
    return doc.get_update(before)


def state_of(ledger: Ledger) -> tuple:
    """Everything observable about a ledger, to check that a refused operation changed nothing."""
    reads = {name: read_ids(ledger, name) for name in sorted(ledger.contexts)}
    stored = {k: list(v) for k, v in ledger.storage.load().items()}
    return ledger.root(), reads, stored, ledger.clock.time, ledger.entry_count()
