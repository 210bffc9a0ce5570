"""SqliteStore: WAL, one transaction per commit, flock on the data directory."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from p2p_ledger.core.errors import LedgerError, StoreDamagedError, StoreError, StoreLockedError
from p2p_ledger.core.storage import MemoryStorage, Summary
from p2p_ledger.trio.store import (
    APPLICATION_ID,
    CHECKPOINT_EVERY,
    DB_NAME,
    STORE_FORMAT,
    SqliteStore,
)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "data")
    yield s
    s.close()


def test_second_store_on_the_same_dir_is_locked_out(tmp_path):
    first = SqliteStore(tmp_path)
    with pytest.raises(StoreLockedError) as info:
        SqliteStore(tmp_path)
    assert isinstance(info.value, LedgerError)
    assert str(tmp_path) in str(info.value)
    # The refused attempt must not have broken the first one.
    first.commit([("c", b"one")])
    first.close()
    second = SqliteStore(tmp_path)
    try:
        assert second.load() == {"c": [b"one"]}
        with pytest.raises(StoreLockedError):
            SqliteStore(tmp_path)
    finally:
        second.close()


def test_other_directories_are_independent(tmp_path):
    a = SqliteStore(tmp_path / "a")
    b = SqliteStore(tmp_path / "b")  # open at the same time: the lock is per directory
    try:
        a.commit([("c", b"in a")])
        b.set_meta("node_id", "b")
        assert b.load() == {} and a.get_meta("node_id") is None
        assert a.load() == {"c": [b"in a"]} and b.get_meta("node_id") == "b"
    finally:
        a.close()
        b.close()


def test_creates_the_directory_and_uses_wal(tmp_path):
    target = tmp_path / "deep" / "er"
    s = SqliteStore(target)
    try:
        assert (target / "LOCK").exists()
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        s.close()


def test_commit_load_round_trip_in_commit_order(store):
    assert store.load() == {}
    store.commit([("a", b"1"), ("b", b"\x00\xff"), ("a", b"2")])
    store.commit([])
    store.commit([("b", b"3"), ("a", b"")])
    assert store.load() == {"a": [b"1", b"2", b""], "b": [b"\x00\xff", b"3"]}
    assert all(type(blob) is bytes for blobs in store.load().values() for blob in blobs)


def test_commit_survives_reopen(tmp_path):
    s = SqliteStore(tmp_path)
    s.commit([("a", b"1")])
    s.commit([("b", b"2"), ("a", b"3")])
    s.set_meta("node_id", "n1")
    s.close()
    s = SqliteStore(tmp_path)
    try:
        assert s.load() == {"a": [b"1", b"3"], "b": [b"2"]}
        assert s.get_meta("node_id") == "n1"
    finally:
        s.close()


def test_a_failed_commit_stores_nothing(store):
    store.commit([("a", b"1")])
    with pytest.raises(sqlite3.IntegrityError):
        store.commit([("a", b"2"), ("b", None)])  # NOT NULL fails on the second row
    assert store.load() == {"a": [b"1"]}
    store.commit([("a", b"3")])  # the connection is usable again (no dangling transaction)
    assert store.load() == {"a": [b"1", b"3"]}


def test_replace_context(tmp_path):
    s = SqliteStore(tmp_path)
    s.commit([("a", b"1"), ("b", b"x"), ("a", b"2")])
    s.replace_context("a", b"state", [])
    assert s.load() == {"a": [b"state"], "b": [b"x"]}
    s.commit([("a", b"3")])
    assert s.load()["a"] == [b"state", b"3"]
    s.replace_context("new", b"n", [])
    s.close()
    s = SqliteStore(tmp_path)
    try:
        assert s.load() == {"a": [b"state", b"3"], "b": [b"x"], "new": [b"n"]}
    finally:
        s.close()


def test_a_span_of_a_row_that_is_gone_is_named_damage(store):
    """``read_spans`` asked for a row the context no longer has (deleted under the store by
    another program) says the store is damaged and how to repair it, in one line."""
    store.commit([("a", b"one"), ("a", b"two")])
    assert store.read_spans("a", [(1, 0, 3)]) == [b"two"]
    store.db.execute("DELETE FROM updates WHERE ctx = (SELECT id FROM contexts WHERE name = 'a')")
    store.commit([("a", b"new")])
    with pytest.raises(StoreDamagedError, match="context a has 3 stored rows, not 4.*repair"):
        store.read_spans("a", [(3, 0, 3)])


def test_meta(store):
    assert store.get_meta("missing") is None
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")
    store.set_meta("other", "")
    assert store.get_meta("k") == "v2"
    assert store.get_meta("other") == ""


def test_memory_storage_behaves_the_same():
    m = MemoryStorage()
    assert m.load() == {}
    m.commit([("a", b"1"), ("b", b"2"), ("a", b"3")])
    m.commit([])
    assert m.load() == {"a": [b"1", b"3"], "b": [b"2"]}
    assert m.commits == 2
    loaded = m.load()
    loaded["a"].append(b"x")  # load returns copies
    assert m.load()["a"] == [b"1", b"3"]
    m.replace_context("a", b"s", [])
    assert m.load() == {"a": [b"s"], "b": [b"2"]}
    m.set_meta("k", "v")
    assert m.get_meta("k") == "v" and m.get_meta("z") is None
    m.close()


def test_a_failed_open_releases_the_lock(tmp_path):
    (tmp_path / "ledger.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="is not a p2p-ledger SQLite database"):
        SqliteStore(tmp_path)
    (tmp_path / "ledger.sqlite3").unlink()
    SqliteStore(tmp_path).close()


def test_a_repaired_store_gets_fresh_summaries(tmp_path):
    """repair rewrites the rows numbered from 1: had it copied the old summaries' mark, an
    intact store (same row count) would have looked summarised with an empty summary table."""
    from p2p_ledger.core.ledger import Ledger
    from p2p_ledger.trio.identity import open_identity
    from p2p_ledger.trio.repair import repair

    data = tmp_path / "node"
    store = SqliteStore(data)
    identity = open_identity(data, store)
    store.set_meta("node_id", "n")
    ledger = Ledger.open(store, identity, "i-1", label="n")
    for i in range(5):
        ledger.append([ledger.prepare(f"c{i % 2}", "k", f"p{i}")])
    root, count = ledger.root(), ledger.entry_count()
    store.close()
    repair(data)
    store = SqliteStore(data)
    try:
        assert store.summaries() is None
        reopened = Ledger.open(store, open_identity(data, store), "i-2", label="n")
        assert reopened.settling() == 2
        reopened.settle()
        assert (reopened.root(), reopened.entry_count()) == (root, count)
        reopened.write_summaries()
        assert store.summaries() is not None
    finally:
        store.close()


def test_repair_drops_what_a_lost_row_leaves_unvouched_and_keeps_the_rest(tmp_path):
    """Rows carry no heads: an entry is vouched for by its successor's row or by a stored head
    (chain tips, and anchors every ANCHOR_EVERY seqs). A lost row leaves the entries below it
    unvouched down to the nearest anchor: repair drops those rows, keeps the rest and the
    heads naming their entries, and the repaired store verifies."""
    from p2p_ledger.core.context_log import ANCHOR_EVERY
    from p2p_ledger.core.identity import Head
    from p2p_ledger.core.ledger import Ledger
    from p2p_ledger.trio.identity import open_identity
    from p2p_ledger.trio.repair import repair

    data = tmp_path / "node"
    store = SqliteStore(data)
    identity = open_identity(data, store)
    store.set_meta("node_id", "n")
    ledger = Ledger.open(store, identity, "i-1", label="n")
    last = 2 * ANCHOR_EVERY + 22
    for i in range(1, last + 1):  # one row per entry: seq i is row i
        ledger.append([ledger.prepare("c", "k", f"p{i}")])
    seqs = sorted(Head.from_bytes(h).seq for h in store.heads("c"))
    assert seqs == [ANCHOR_EVERY, 2 * ANCHOR_EVERY, last]  # two anchors and the tip
    lost = ANCHOR_EVERY + 30
    store.db.execute("DELETE FROM updates WHERE id = ?", (lost,))
    store.close()
    report = repair(data)
    # rows ANCHOR_EVERY+1 .. lost-1 lost their voucher; the rows above the lost one are kept
    # (their entries wait in Yjs for the lost one, which a peer holds)
    assert report.dropped == lost - 1 - ANCHOR_EVERY, report.problems
    assert report.kept == last - 1 - report.dropped
    assert all("ForgedEntry" in p for p in report.problems)
    store = SqliteStore(data)
    try:
        reopened = Ledger.open(store, open_identity(data, store), "i-2", label="n")
        assert reopened.verify() == []
        assert [e.seq for e in reopened.get("c")[0]] == list(range(1, ANCHOR_EVERY + 1))
        assert sorted(Head.from_bytes(h).seq for h in store.heads("c")) == seqs
    finally:
        store.close()


def _header(path):
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("PRAGMA application_id").fetchone()[0],
                conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_store_names_its_application_and_format(tmp_path):
    SqliteStore(tmp_path).close()
    assert _header(tmp_path / DB_NAME) == (APPLICATION_ID, STORE_FORMAT)


def test_an_unmarked_store_is_read_and_marked(tmp_path):
    s = SqliteStore(tmp_path)
    s.commit([("c", b"kept")])
    s.db.executescript("PRAGMA application_id = 0; PRAGMA user_version = 0;")  # an older version's
    s.close()
    s = SqliteStore(tmp_path)
    try:
        assert s.load() == {"c": [b"kept"]}
    finally:
        s.close()
    assert _header(tmp_path / DB_NAME) == (APPLICATION_ID, STORE_FORMAT)


def test_a_newer_format_is_refused_untouched(tmp_path):
    s = SqliteStore(tmp_path)
    s.commit([("c", b"theirs")])
    s.db.execute(f"PRAGMA user_version = {STORE_FORMAT + 1}")
    s.close()
    before = (tmp_path / DB_NAME).read_bytes()
    with pytest.raises(StoreError, match=f"store format {STORE_FORMAT + 1}, written by a newer"):
        SqliteStore(tmp_path)
    assert (tmp_path / DB_NAME).read_bytes() == before
    SqliteStore.lock(tmp_path)  # and the lock was released


def test_another_applications_database_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.executescript("PRAGMA application_id = 1234; CREATE TABLE notes (x);")
    conn.close()
    with pytest.raises(StoreError, match="another application"):
        SqliteStore(tmp_path)
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("checkpoint ")]


def test_large_commits_are_checkpointed_in_a_thread_of_their_own(tmp_path):
    """The writer leaves checkpoints to a thread (its own waits for 64 MiB of WAL): committed
    rows reach the database file without another commit, and close stops the thread first."""
    before = _checkpoint_threads()
    s = SqliteStore(tmp_path)
    db = tmp_path / DB_NAME
    try:
        s.commit([("small", b"x" * 1000)])
        assert _checkpoint_threads() == before  # none until CHECKPOINT_EVERY bytes
        row = bytes(range(256)) * (CHECKPOINT_EVERY // 256)
        s.commit([("big", row)])
        assert len(_checkpoint_threads()) == len(before) + 1
        deadline = time.monotonic() + 60
        while db.stat().st_size < CHECKPOINT_EVERY:  # a bounded poll of the other thread
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
    finally:
        s.close()
    assert _checkpoint_threads() == before
    assert not (tmp_path / (DB_NAME + "-wal")).exists()  # the last connection closed the WAL
    again = SqliteStore(tmp_path)
    try:
        assert again.load() == {"small": [b"x" * 1000], "big": [row]}
    finally:
        again.close()


def test_a_new_store_has_16_kib_pages_and_an_old_one_keeps_its_own(tmp_path):
    """The page size is fixed when a store is created (``PAGE_SIZE``); the writer's own
    checkpoint comes past CHECKPOINT_BACKSTOP bytes of WAL whatever the page size."""
    from p2p_ledger.trio.store import CHECKPOINT_BACKSTOP, PAGE_SIZE

    new = SqliteStore(tmp_path / "new")
    try:
        assert new.db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 16384
        assert new.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] * PAGE_SIZE \
            == CHECKPOINT_BACKSTOP
        new.commit([("c", b"x" * 1000)])
    finally:
        new.close()
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    conn = sqlite3.connect(old_dir / DB_NAME)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    old = SqliteStore(old_dir)
    try:
        assert old.db.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert old.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] * 4096 \
            == CHECKPOINT_BACKSTOP
        old.commit([("c", b"x" * 1000)])
        assert list(old.iter_context("c")) == [b"x" * 1000]
    finally:
        old.close()


def _lagging(store):
    time_, rows = store.lagging_lamport()
    return time_, list(rows)


def test_the_lamport_time_committed_with_lagging_rows_spares_an_open_reading_them(tmp_path):
    """A commit that leaves summaries lagging stores the highest Lamport time of its entries
    with its rows (the highest so far): an open after a crash takes it instead of reading
    them. Rows committed without one (a tool, an older version) are read, and so is every
    row after them until summaries are stored again; a compaction changes no Lamport time."""
    summary = Summary(bytes(32), 1, b"\x00", 1, 0, 3)
    store = SqliteStore(tmp_path)
    try:
        store.commit([("a", b"r1")], {"a": summary})
        assert _lagging(store) == (0, [])
        store.commit([("a", b"r2")], lamport=5)
        store.commit([("b", b"r3")], lamport=3)
        assert _lagging(store) == (5, [])
    finally:
        store.close()
    store = SqliteStore(tmp_path)  # (as after a crash)
    try:
        assert _lagging(store) == (5, [])
        store.commit([("b", b"r4")], lamport=6)
        store.replace_context("a", b"state", [])  # (its entries' times are counted already)
        assert _lagging(store) == (6, [])
        store.commit([("b", b"r5")])  # (without a time)
        store.commit([("a", b"r6")], lamport=9)
        assert _lagging(store) == (6, [("b", b"r5"), ("a", b"r6")])
        store.commit([], {"a": summary, "b": summary})  # (nothing lags)
        assert _lagging(store)[1] == []
        store.commit([("b", b"r7")], lamport=2)
        assert _lagging(store) == (2, [])
    finally:
        store.close()
    memory = MemoryStorage()  # (keeps no time: it reads its rows, which cost nothing)
    memory.commit([("a", b"r1")], lamport=5)
    assert _lagging(memory) == (0, [("a", b"r1")])
