"""Store formats: a store of format 2 (the one before contexts had integer ids) opened by this
version is rewritten in format 3 once, keeping every row (its id too), head and summary, and
verifies; a rewrite that fails leaves the format-2 store whole; ``repair`` salvages a damaged
store of format 2 into format 3."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from p2p_ledger.core.context_log import ANCHOR_EVERY
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.trio import store as store_module
from p2p_ledger.trio.repair import repair
from p2p_ledger.trio.store import (
    APPLICATION_ID,
    DB_NAME,
    STORE_FORMAT,
    SUMMARIES_UPTO,
    SqliteStore,
)

from ..core.helpers import append, ids, new_ledger, open_ledger, sync_all

# Format 2, as that version created it.
FORMAT_2 = """
CREATE TABLE updates (id INTEGER PRIMARY KEY AUTOINCREMENT, context TEXT NOT NULL,
                      blob BLOB NOT NULL);
CREATE INDEX updates_by_context ON updates (context, id);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE summaries (context TEXT PRIMARY KEY, root BLOB NOT NULL, entries INTEGER NOT NULL,
                        state_vector BLOB NOT NULL, max_lamport INTEGER NOT NULL,
                        forks INTEGER NOT NULL, stored INTEGER NOT NULL);
CREATE TABLE heads (context TEXT NOT NULL, id BLOB NOT NULL, head BLOB NOT NULL,
                    PRIMARY KEY (context, id)) WITHOUT ROWID;
"""
GONE = 5  # rows deleted at the end of the old table: their ids are never handed out again


def _source() -> Ledger:
    """Three contexts: one with anchors (a row per entry), one with two writers, one entry."""
    a, b = new_ledger("a"), new_ledger("b")
    for i in range(ANCHOR_EVERY + 10):
        append(a, "c0", f"p{i}")
    append(b, "c1", "x", "y")
    append(a, "c1", "z")
    sync_all([a, b])
    append(a, "c1", "after the sync")
    append(a, "c2", "only")
    return a


def _format_2_store(path: Path, storage: MemoryStorage) -> list[tuple[str, bytes]]:
    """``storage``'s rows (contexts interleaved), heads and summaries in a format-2 store at
    ``path``; returns the rows in id order."""
    path.mkdir(exist_ok=True)
    rows = _interleaved(storage.updates)
    db = sqlite3.connect(path / DB_NAME, isolation_level=None)
    db.executescript(FORMAT_2 + f"PRAGMA application_id = {APPLICATION_ID};"
                     "PRAGMA user_version = 2;")
    db.executemany("INSERT INTO updates (context, blob) VALUES (?, ?)", rows)
    db.executemany("INSERT INTO heads VALUES (?, ?, ?)", [
        (name, raw, head) for name, held in storage.stored_heads.items()
        for raw, head in held.items()])
    summaries = storage.summaries()
    assert summaries is not None
    db.executemany("INSERT INTO summaries VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(name, *summary) for name, summary in summaries.items()])
    db.executemany("INSERT INTO meta VALUES (?, ?)",
                   [("node_id", "a"), (SUMMARIES_UPTO, str(len(rows)))])
    db.execute("UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'updates'", (GONE,))
    db.close()
    return rows


def _interleaved(updates: dict[str, list[bytes]]) -> list[tuple[str, bytes]]:
    lists = {name: list(blobs) for name, blobs in updates.items()}
    out = []
    while any(lists.values()):
        for name, blobs in lists.items():
            if blobs:
                out.append((name, blobs.pop(0)))
    return out


def _header(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path / DB_NAME)
    try:
        return (conn.execute("PRAGMA application_id").fetchone()[0],
                conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_format_2_store_is_rewritten_once_keeping_every_row_head_and_summary(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = _source()
    storage = source.storage
    assert isinstance(storage, MemoryStorage)
    rows = _format_2_store(tmp_path, storage)
    assert len(storage.stored_heads["c0"]) > 1  # anchors as well as the tip
    with caplog.at_level(logging.WARNING, logger=store_module.__name__):
        store = SqliteStore(tmp_path)
    try:
        assert _header(tmp_path) == (APPLICATION_ID, STORE_FORMAT) and STORE_FORMAT == 3
        assert store.load() == storage.load()
        for name in storage.updates:
            assert sorted(store.heads(name)) == sorted(storage.heads(name))
            assert [row for row, _ in store.iter_rows(name)] == [
                i for i, (context, _) in enumerate(rows, 1) if context == name]
        assert store.summaries() == storage.summaries()
        ledger = open_ledger(store, "a", "a-2", verify=True)
        assert (ledger.root(), ledger.entry_count()) == (source.root(), source.entry_count())
        for name in storage.updates:
            assert ids(ledger.get(name)[0]) == ids(source.get(name)[0])
        append(ledger, "c0", "after the rewrite")
        last = max(row for row, _ in store.iter_rows("c0"))
        assert last == len(rows) + GONE + 1  # AUTOINCREMENT's past was kept
    finally:
        store.close()
    store = SqliteStore(tmp_path)
    try:
        assert open_ledger(store, "a", "a-3", verify=True).entry_count() == (
            source.entry_count() + 1)
    finally:
        store.close()
    assert [r.message for r in caplog.records].count(
        f"{tmp_path / DB_NAME}: rewriting the store in format 3 (once)") == 1


def test_a_rewrite_that_fails_leaves_the_format_2_store_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source()
    assert isinstance(source.storage, MemoryStorage)
    _format_2_store(tmp_path, source.storage)

    def dump() -> list[list[tuple[object, ...]]]:
        conn = sqlite3.connect(tmp_path / DB_NAME)
        try:
            return [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                    for table in ("updates", "heads", "summaries", "meta", "sqlite_sequence")]
        finally:
            conn.close()

    before = dump()

    def broken(head: bytes) -> bytes:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(store_module, "_stored_head", broken)
    with pytest.raises(RuntimeError, match="the disk went away"):
        SqliteStore(tmp_path)
    assert _header(tmp_path) == (APPLICATION_ID, 2) and dump() == before
    monkeypatch.undo()
    store = SqliteStore(tmp_path)
    try:
        assert open_ledger(store, "a", "a-2", verify=True).root() == source.root()
    finally:
        store.close()


def test_repair_salvages_a_damaged_format_2_store_into_format_3(tmp_path: Path) -> None:
    source = _source()
    assert isinstance(source.storage, MemoryStorage)
    rows = _format_2_store(tmp_path, source.storage)
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("DELETE FROM updates WHERE context = 'c2'")  # its only row is lost
    conn.commit()
    conn.close()
    report = repair(tmp_path)
    assert (report.kept, report.dropped) == (len(rows) - 1, 0), report.problems
    assert _header(tmp_path) == (APPLICATION_ID, STORE_FORMAT)
    store = SqliteStore(tmp_path)
    try:
        ledger = open_ledger(store, "a", "a-2", verify=True)
        assert ledger.entry_count() == source.entry_count() - 1
        for name in ("c0", "c1"):
            assert ids(ledger.get(name)[0]) == ids(source.get(name)[0])
        assert ledger.get("c2")[0] == []
    finally:
        store.close()
