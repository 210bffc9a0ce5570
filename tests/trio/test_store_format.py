"""Store formats: a store of format 2 (the one before contexts had integer ids) opened by this
version is rewritten in format 3 once, keeping every row (its id too), head and summary, and
verifies; a rewrite that fails leaves the format-2 store whole; ``repair`` salvages a damaged
store of format 2 into format 3. Heads of one commit share a crown (origin, signature, the
upper path), counted exactly and deleted with the last head that uses it."""

from __future__ import annotations

import hashlib
import logging
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from p2p_ledger.core.context_log import ANCHOR_EVERY
from p2p_ledger.core.identity import Head, Identity
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.storage import MemoryStorage, Summary
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


# ---- heads of one commit share a crown ----------------------------------------------------


def _crowns(store: SqliteStore) -> dict[int, tuple[int, int]]:
    """crown → (its count of live heads, the heads that use it)."""
    used = dict(store.db.execute(
        "SELECT crown, count(*) FROM heads WHERE crown IS NOT NULL GROUP BY crown").fetchall())
    return {crown: (live, used.get(crown, 0))
            for crown, live in store.db.execute("SELECT id, live FROM crowns")}


def _signed(identity: Identity, contexts: list[str], seq: int) -> list[tuple[str, bytes, bytes]]:
    """One commit's heads over ``contexts`` as head changes (context, raw id, encoded head)."""
    heads = identity.sign_heads([(c, 1, seq, hashlib.sha256(f"{c} {seq}".encode()).digest())
                                 for c in contexts])
    return [(c, h.entry_id, h.encode()) for c, h in zip(contexts, heads, strict=True)]


def _model_heads(changes: list[tuple[str, bytes, bytes]]) -> dict[str, dict[bytes, bytes]]:
    model: dict[str, dict[bytes, bytes]] = {}
    for context, raw, head in changes:
        model.setdefault(context, {})[raw] = head
    return model


NAMES = [f"c{i:02d}" for i in range(40)]


def _commits(identity: Identity) -> list[tuple[str, bytes, bytes]]:
    """Heads of commits over 40, 5 and 1 contexts (paths of 6, 3 and 0 hashes) and one signed
    alone (format 1: no path)."""
    legacy = Head(identity.public, 1, 3, bytes(32), bytes(64), None)
    return (_signed(identity, NAMES, 1) + _signed(identity, NAMES[:5], 2)
            + _signed(identity, NAMES[5:6], 2) + [("c00", legacy.entry_id, legacy.encode())])


def _assert_heads(store: SqliteStore, model: dict[str, dict[bytes, bytes]]) -> None:
    for context in NAMES:
        assert sorted(store.heads(context)) == sorted(model.get(context, {}).values())
    assert all(live == used > 0 for live, used in _crowns(store).values())


def _delete_every_head(store: SqliteStore, model: dict[str, dict[bytes, bytes]],
                       rng: random.Random, size: Callable[[], int]) -> None:
    """Delete the heads of ``model`` in a shuffled order, ``size()`` per commit, checking the
    heads and crowns after each; no crown is left."""
    held = [(c, raw) for c, kept in model.items() for raw in kept]
    rng.shuffle(held)
    while held:
        n = size()
        gone, held = held[:n], held[n:]
        store.commit([], heads=[(c, raw, None) for c, raw in gone])
        for c, raw in gone:
            del model[c][raw]
        _assert_heads(store, model)
    assert _crowns(store) == {}


def test_heads_of_one_commit_share_crowns_and_come_back_as_signed(tmp_path: Path) -> None:
    """Head changes in a seeded random order: every read gives back the heads as encoded, each
    crown counts exactly the heads that use it, and the last head gone takes it along."""
    rng = random.Random(7)
    print("seed", 7)
    changes = _commits(Identity.from_seed("alice"))
    model = _model_heads(changes)
    store = SqliteStore(tmp_path)
    try:
        store.commit([(c, b"row") for c in NAMES], heads=changes)
        assert 0 < len(_crowns(store)) <= 40 // 8 + 1  # the 40-context commit: groups of 8
        _assert_heads(store, model)
        _delete_every_head(store, model, rng, lambda: rng.randint(1, 9))
    finally:
        store.close()


def test_crowns_survive_a_reopen_a_head_stored_again_and_a_compaction(tmp_path: Path) -> None:
    changes = _commits(Identity.from_seed("alice"))
    model = _model_heads(changes)
    store = SqliteStore(tmp_path)
    try:
        store.commit([(c, b"row") for c in NAMES], heads=changes)
    finally:
        store.close()
    store = SqliteStore(tmp_path)
    try:
        _assert_heads(store, model)
        # (the ledger does not store a head twice; a tool might): a new commit's heads, then
        # the 40-context commit's again
        new = _signed(Identity.from_seed("alice"), NAMES[20:36], 9)
        store.commit([], heads=new + changes[:40])
        twice = _signed(Identity.from_seed("alice"), NAMES[30:40], 10)
        store.commit([], heads=twice + twice)  # (given twice in one commit: stored once)
        for context, raw, head in new + twice:
            model[context][raw] = head
        _assert_heads(store, model)
        store.replace_context("c09", b"state", [])  # a compaction that keeps no head
        del model["c09"]
        _assert_heads(store, model)
        kept = list(model["c10"].items())
        store.replace_context("c10", b"state", kept)  # one that keeps them all
        _assert_heads(store, model)
    finally:
        store.close()


def test_crowns_counted_without_a_trigger_survive_a_rolled_back_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store counts crowns down itself, knowing the crowns of the heads it stored: only
    those of committed transactions (a rolled-back crown's id is handed out again). A commit
    that fails after storing heads and deleting others changes nothing it knows; deleting the
    heads it had stored (none: a tool might) counts no crown down."""
    alice = Identity.from_seed("alice")
    changes = _commits(alice)
    model = _model_heads(changes)
    store = SqliteStore(tmp_path)
    try:
        assert store.db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                                ).fetchone()[0] == 0
        store.commit([(c, b"row") for c in NAMES], heads=changes)
        failed = _signed(alice, NAMES[20:36], 9)
        with monkeypatch.context() as patch:
            def broken(*_: object) -> None:
                raise sqlite3.OperationalError("disk I/O error")
            patch.setattr(store, "_put", broken)
            with pytest.raises(sqlite3.OperationalError):
                store.commit([], {"c00": Summary(bytes(32), 1, b"\x00", 1, 0, 3)},
                             heads=failed + [(c, raw, None) for c, raw, _ in changes[:10]])
        _assert_heads(store, model)
        later = _signed(alice, NAMES[4:20], 10)  # (crowns with the ids the failed one took)
        store.commit([], heads=later)
        for context, raw, head in later:
            model[context][raw] = head
        store.commit([], heads=[(c, raw, None) for c, raw, _ in failed])
        _assert_heads(store, model)
        _delete_every_head(store, model, random.Random(3), lambda: 7)
    finally:
        store.close()


def test_heads_superseded_in_the_commit_that_stores_the_next_count_their_crowns_exactly(
        tmp_path: Path) -> None:
    """As a spread ingest does: each commit deletes the heads of some contexts and stores their
    next ones (the store renames a deleted head's row for the head stored in its context),
    before and after a reopen (crowns it does not know), with a context that deletes more
    heads than it stores, one that stores more than it deletes, and one that stores again a
    head it holds while it deletes another (the general way). After each commit every head
    reads back as encoded and each crown counts exactly the heads that use it."""
    alice = Identity.from_seed("alice")
    rng = random.Random(11)
    print("seed", 11)
    model: dict[str, dict[bytes, bytes]] = {}
    store = SqliteStore(tmp_path)

    def commit(changes: list[tuple[str, bytes, bytes | None]]) -> None:
        store.commit([(c, b"row") for c in dict.fromkeys(c for c, _, _ in changes)],
                     heads=changes)
        for context, raw, head in changes:
            if head is None:
                model[context].pop(raw, None)
        for context, raw, head in changes:
            if head is not None:
                model.setdefault(context, {})[raw] = head
        _assert_heads(store, model)

    try:
        commit(list(_signed(alice, NAMES, 1)))
        for seq in range(2, 12):
            if seq == 6:  # (crowns read as their heads go)
                store.close()
                store = SqliteStore(tmp_path)
            touched = sorted(rng.sample(NAMES, rng.randint(1, 30)))
            changes: list[tuple[str, bytes, bytes | None]] = []
            for (context, raw, head) in _signed(alice, touched, seq):
                gone = [(context, old, None) for old in model[context]]
                if context == touched[0]:
                    gone += [(context, b"never stored".ljust(32), None)]  # (deletes more)
                news: list[tuple[str, bytes, bytes | None]] = [(context, raw, head)]
                if context == touched[-1] and len(touched) > 1:  # (stores more)
                    extra = _signed(alice, [context], 100 + seq)[0]
                    news.append(extra)
                changes += (gone + news) if seq % 2 else (news + gone)
            commit(changes)
        # a context that deletes a head it holds and stores again one it holds
        c = NAMES[0]
        held = list(model[c].items())
        again = _signed(alice, [c], 200)[0]
        commit([again])
        commit([(c, held[0][0], None), again])
        _delete_every_head(store, model, rng, lambda: rng.randint(1, 9))
    finally:
        store.close()


def test_a_head_deleted_and_stored_again_in_a_commit_that_stores_another_again(
        tmp_path: Path) -> None:
    """A commit (a tool's: the ledger does not store a head twice) that deletes a head and
    stores it again, and stores again another head it holds, counts each crown down once."""
    alice = Identity.from_seed("alice")
    changes = _signed(alice, NAMES[:16], 1)  # (a crown for each 8)
    model = _model_heads(changes)
    store = SqliteStore(tmp_path)
    try:
        store.commit([], heads=changes)
        (c0, raw0, head0), (c1, raw1, head1) = changes[:2]
        store.commit([], heads=[(c0, raw0, None), (c0, raw0, head0), (c1, raw1, head1)])
        _assert_heads(store, model)
        _delete_every_head(store, model, random.Random(5), lambda: 3)
    finally:
        store.close()
