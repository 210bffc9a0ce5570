"""The working set is bounded; the ledger lives on disk.

Persisted per-context summaries (a start loads no context), lazy loading, the LRU memory
budget, identical answers before and after eviction, migration of stores written without
summaries, and the group commit of received updates (``defer_commits``).
"""

from __future__ import annotations

import random
import sqlite3

import pytest

from p2p_ledger.core.bundle import decode_bundle
from p2p_ledger.core.context_log import ARRAY_NAME, ContextLog
from p2p_ledger.core.errors import IntegrityError
from p2p_ledger.core.index import EntryIndex
from p2p_ledger.core.ledger import (
    EMPTY_STATE_VECTOR,
    GATHER_PASSES,
    Ledger,
    memory_cost,
    same_summary,
    summarize,
)
from p2p_ledger.core.proof import check_proof, make_proof
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.core.yjs import appended_values, encode_state_vector, parse_update
from p2p_ledger.testing import open_pair
from p2p_ledger.trio.store import SqliteStore

from .helpers import append, open_ledger, page_all, sync_all

CONTEXTS = [f"ctx-{i:02d}" for i in range(12)]


def _fill(ledger: Ledger, seed: int, appends: int = 60) -> random.Random:
    rng = random.Random(seed)
    print("seed", seed)
    for _ in range(appends):
        name = rng.choice(CONTEXTS)
        payloads = [rng.randbytes(rng.randint(1, 40)) for _ in range(rng.randint(1, 4))]
        append(ledger, name, *payloads, key=rng.choice("ab"))
    return rng


def _recomputed(ledger: Ledger) -> dict:
    """Every stored context's summary as its rows rebuild it (not through the ledger's cache)."""
    out = {}
    for name in ledger.storage.contexts():
        ctx, stored = ledger._read(name)
        out[name] = summarize(ctx, stored)
    return out


def _assert_summaries_current(storage) -> None:
    persisted = storage.summaries()
    assert persisted is not None, "summaries do not describe the stored rows"
    fresh = open_ledger(storage, "checker", "checker-1")
    recomputed = _recomputed(fresh)
    assert persisted.keys() == recomputed.keys()
    for name, summary in recomputed.items():
        assert same_summary(persisted[name], summary), name
        assert persisted[name].stored == summary.stored, name


def test_a_start_loads_no_context_and_knows_roots_counts_and_state_vectors(storage):
    a = open_ledger(storage, "a")
    _fill(a, 1)
    reopened = open_ledger(storage, "a", "a-2")
    assert reopened.loads == 0 and reopened.live_contexts() == []
    assert reopened.root() == a.root() and reopened.entry_count() == a.entry_count()
    assert sorted(reopened.contexts) == sorted(a.contexts)
    for name in CONTEXTS:
        assert reopened.context_root(name) == a.context_root(name)
        assert reopened.context_entries(name) == len(a.contexts[name])
        assert reopened.state_vector(name) == a.contexts[name].state_vector()
    assert reopened.clock.time >= a.clock.time
    assert reopened.loads == 0, "roots, counts and state vectors come from the summaries"
    _assert_summaries_current(storage)


def test_persisted_summaries_equal_recomputed_ones_after_every_kind_of_write(storage):
    a, b = open_ledger(storage, "a"), open_ledger(MemoryStorage(), "b")
    rng = _fill(a, 2, 30)
    _fill(b, 3, 30)
    sync_all([a, b])  # remote updates
    blob = b.snapshot(CONTEXTS[0])
    c = open_ledger(MemoryStorage(), "c")
    c.load_snapshot(blob)
    a.compact(rng.choice(CONTEXTS))  # stored bytes change, content does not
    append(a, CONTEXTS[1], "after compaction")
    _assert_summaries_current(storage)
    assert a.verify() == []


class _FailingSqlite(SqliteStore):
    """Fails inside the transaction, after the update rows went in and before the summaries."""

    fail = False

    def _put(self, summaries, ids=None):
        if self.fail:
            raise OSError("disk full")
        super()._put(summaries, ids)


class _FailingMemory(MemoryStorage):
    fail = False

    def commit(self, updates, summaries=None, heads=(), lamport=None):
        if self.fail:
            raise OSError("disk full")
        super().commit(updates, summaries, heads, lamport)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_commit_failing_midway_leaves_rows_and_summaries_in_agreement(kind, tmp_path):
    storage = _FailingMemory() if kind == "memory" else _FailingSqlite(tmp_path / "n")
    a = open_ledger(storage, "a")
    _fill(a, 4, 20)
    peer = open_ledger(MemoryStorage(), "p")
    remote = append(peer, CONTEXTS[3], "from a peer").updates[0][1]
    root, count = a.root(), a.entry_count()
    storage.fail = True
    with pytest.raises(OSError):
        append(a, CONTEXTS[0], "lost")
    with pytest.raises(OSError):
        a.apply_remote(CONTEXTS[3], remote)
    storage.fail = False
    assert (a.root(), a.entry_count()) == (root, count)
    _assert_summaries_current(storage)
    assert len(a.apply_remote(CONTEXTS[3], remote)) == 1
    append(a, CONTEXTS[0], "kept")
    _assert_summaries_current(storage)
    if kind == "sqlite":
        storage.close()


def test_summaries_survive_a_killed_writer_process(tmp_path):
    """A real crash: a child appends in a loop and is SIGKILLed mid-stream; every commit it
    finished is described by the summaries, and nothing else is."""
    import subprocess
    import sys

    data = tmp_path / "node"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(data)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(30):  # 30 finished commits, then kill it wherever it is
        assert child.stdout.readline().startswith("committed")
    child.kill()
    child.wait(timeout=30)
    store = SqliteStore(data)
    try:
        _assert_summaries_current(store)
        assert open_ledger(store, "x", "x-2").verify() == []
    finally:
        store.close()


_KILLED_WRITER = """
import sys
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.trio.store import SqliteStore
store = SqliteStore(sys.argv[1])
ledger = Ledger.open(store, "x", "x-1")
for i in range(100000):
    ledger.append([ledger.prepare(f"c{i % 7}", "k", b"p" * (i % 50)) for _ in range(1 + i % 5)])
    print("committed", i, flush=True)
"""


def test_the_memory_budget_bounds_the_loaded_contexts():
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    _fill(a, 5)
    one = max(memory_cost(s) for s in a.summaries.values())
    budget = 3 * one
    b = open_ledger(storage, "a", "a-2", memory_budget=budget)
    rng = random.Random(6)
    for step in range(200):
        name = rng.choice(CONTEXTS)
        action = rng.choice(["get", "append", "diff", "proof", "lookup"])
        if action == "get":
            b.get(name, limit=3)
        elif action == "append":
            append(b, name, f"step {step}")
        elif action == "diff":  # (a peer holding nothing gets the rows: nothing loaded)
            b.bundle_diff(name, encode_state_vector({1: 0}))
        elif action == "lookup":
            b.contexts[name]
        else:
            entry = b.get(name, limit=1)[0][0]
            make_proof(b, name, entry.id)
        live = b.live_contexts()
        assert live[-1] == name, "the context just used stays loaded"
        cost = sum(memory_cost(b.summaries[n], b._live[n].has_doc) for n in live)
        assert b._live_cost == cost
        assert cost <= max(budget, memory_cost(b.summaries[name], b._live[name].has_doc)), \
            (step, live)
    assert b.loads > len(CONTEXTS), "contexts were evicted and reloaded"


def test_answers_are_identical_before_and_after_eviction(storage):
    a = open_ledger(storage, "a")
    b = open_ledger(MemoryStorage(), "b")
    _fill(a, 7)
    _fill(b, 8, 20)
    sync_all([a, b])
    # The same store read by a ledger that keeps nothing but the context in use.
    tiny = open_ledger(storage, "a", "a-2", memory_budget=1)
    peer_sv = b.contexts[CONTEXTS[0]].state_vector()
    for _ in range(2):  # the second pass reads reloaded contexts
        for name in CONTEXTS:
            assert tiny.get(name) == a.get(name)
            assert tiny.get(name, key="a") == a.get(name, key="a")
            assert page_all(tiny, name, 3) == page_all(a, name, 3)
            middle = a.get(name, limit=4)[1]
            assert tiny.get(name, after=middle) == a.get(name, after=middle)
            assert tiny.context_root(name) == a.context_root(name)
            assert tiny.bundle_diff(name, None) == a.bundle_diff(name, None)
            assert tiny.bundle_diff(name, peer_sv) == a.bundle_diff(name, peer_sv)
            assert tiny.snapshot(name) == a.snapshot(name)
            for entry in a.get(name, limit=3)[0]:
                proof, theirs = make_proof(tiny, name, entry.id), make_proof(a, name, entry.id)
                # (each ledger signs the root at its own clock's time)
                signed, their_signed = proof.pop("signed_root"), theirs.pop("signed_root")
                assert proof == theirs and signed["root"] == their_signed["root"]
                assert check_proof(proof, a.context_root(name)) == entry
            assert len(tiny.live_contexts()) == 1
    assert tiny.root() == a.root() and tiny.forks() == a.forks()
    assert tiny.verify() == []


def test_watchers_see_each_entry_once_across_evictions():
    storage = MemoryStorage()
    a = open_ledger(storage, "a", memory_budget=1)
    peer = open_ledger(MemoryStorage(), "p")
    seen: list[tuple[str, str]] = []
    a.listeners.append(lambda context, entries: seen.extend((context, e.id) for e in entries))
    rng = random.Random(9)
    for step in range(60):
        name = rng.choice(CONTEXTS[:4])
        if rng.random() < 0.5:
            append(a, name, f"{step}")
        else:
            blob = append(peer, name, f"p{step}").updates[0][1]
            a.apply_remote(name, blob)
    held = {(n, e.id) for n in CONTEXTS[:4] for e in a.get(n)[0]}
    assert len(seen) == len(set(seen)) and set(seen) == held


def test_gossip_about_contexts_in_sync_loads_none():
    sa, sb = MemoryStorage(), MemoryStorage()
    a, b = open_ledger(sa, "a"), open_ledger(sb, "b")
    _fill(a, 10)
    sync_all([a, b])
    a2, b2 = open_ledger(sa, "a", "a-2"), open_ledger(sb, "b", "b-2")
    pair = open_pair(a2, b2)
    pair.a.session.send_root()
    pair.pump()
    assert a2.root() == b2.root()
    assert a2.loads == 0 and b2.loads == 0
    # One context differs: the round descends to it (state vectors from the summaries) and
    # loads that context only.
    append(a, CONTEXTS[5], "new")
    a3 = open_ledger(sa, "a", "a-3")
    pair = open_pair(a3, b2)
    pair.a.session.send_root()
    pair.pump()
    assert a3.root() == b2.root()
    assert a3.live_contexts() == [CONTEXTS[5]] and b2.live_contexts() == [CONTEXTS[5]]


def test_a_peer_holding_everything_is_answered_without_loading():
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    _fill(a, 11, 10)
    name = next(iter(a.contexts))
    sv = a.state_vector(name)
    cold = open_ledger(storage, "a", "a-2")
    assert cold.bundle_diff(name, sv) is None and cold.loads == 0
    assert cold.bundle_diff(name, b"\x00") is not None and cold.loads == 0  # the rows
    assert cold.bundle_diff(name, encode_state_vector({1: 0})) is not None and cold.loads == 1


def _old_store(path, rows):
    """A database as written before summaries existed: the old schema, update rows only."""
    path.mkdir()
    db = sqlite3.connect(path / "ledger.sqlite3")
    db.executescript("""
        CREATE TABLE updates (id INTEGER PRIMARY KEY AUTOINCREMENT, context TEXT NOT NULL,
                              blob BLOB NOT NULL);
        CREATE INDEX updates_by_context ON updates (context, id);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    db.executemany("INSERT INTO updates (context, blob) VALUES (?, ?)", rows)
    db.commit()
    db.close()


def test_an_old_store_gets_its_summaries_computed_once(tmp_path):
    source = open_ledger(MemoryStorage(), "a")
    _fill(source, 12)
    rows = [(name, blob) for name, blobs in source.storage.load().items() for blob in blobs]
    _old_store(tmp_path / "old", rows)
    store = SqliteStore(tmp_path / "old")
    try:
        assert store.summaries() is None
        migrated = open_ledger(store, "a", "a-2")
        assert migrated.settling() == len(source.context_names())
        migrated.settle()
        assert migrated.root() == source.root() and migrated.entry_count() == source.entry_count()
        assert migrated.live_contexts() == []  # computed one at a time, none kept
        migrated.write_summaries()
        _assert_summaries_current(store)
        for name in CONTEXTS:
            assert migrated.get(name) == source.get(name)
        append(migrated, CONTEXTS[0], "new")
        _assert_summaries_current(store)
    finally:
        store.close()


def test_missing_summaries_are_computed_streamed_or_by_the_rebuild_they_always_had(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An open that recomputes summaries streams each context's rows (``audit``: no
    ``ContextLog``); rows the stream refuses are rebuilt as before and give what that gives."""
    import p2p_ledger.core.ledger as ledger_module
    from p2p_ledger.core.audit import audit
    from p2p_ledger.core.bundle import encode_bundle
    from p2p_ledger.core.errors import ForgedEntry
    from p2p_ledger.testing import forged_update

    from .helpers import chain_entries

    storage = MemoryStorage()
    _fill(open_ledger(storage, "a"), 14)
    want = _recomputed(open_ledger(storage, "a", "a-1"))
    storage.summary = None  # a store written without summaries

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("the open built a ContextLog")

    with monkeypatch.context() as patch:
        patch.setattr(ledger_module, "ContextLog", refuse)
        reopened = open_ledger(storage, "a", "a-2")
        reopened.settle()
    assert reopened.summaries.keys() == want.keys()
    assert all(same_summary(reopened.summaries[n], want[n]) for n in want)
    [forged] = chain_entries("z", [1], CONTEXTS[0])  # nothing vouches for it: audit refuses
    storage.updates[CONTEXTS[0]].append(encode_bundle((), forged_update([forged.record])))
    storage.summary = None
    with pytest.raises(ForgedEntry):
        audit(CONTEXTS[0], storage.iter_context(CONTEXTS[0]), reopened.limits,
              reopened.stored_heads(CONTEXTS[0]))
    rebuilt = open_ledger(storage, "a", "a-3")
    rebuilt.settle()
    assert same_summary(rebuilt.summaries[CONTEXTS[0]], _recomputed(rebuilt)[CONTEXTS[0]])


def test_rows_written_without_summaries_make_the_next_open_recompute_them(storage):
    a = open_ledger(storage, "a")
    _fill(a, 13, 20)
    b = open_ledger(MemoryStorage(), "b")
    blob = append(b, CONTEXTS[2], "written by a tool").updates[0][1]
    bundle = decode_bundle(blob)
    assert bundle.heads
    storage.commit([(CONTEXTS[2], blob)])  # a writer that keeps no summaries
    assert storage.summaries() is None
    reopened = open_ledger(storage, "a", "a-2")
    assert len(reopened.get(CONTEXTS[2])[0]) == len(a.get(CONTEXTS[2])[0]) + 1
    reopened.settle()
    reopened.write_summaries()
    _assert_summaries_current(storage)


def test_received_updates_are_staged_and_committed_together_before_any_read():
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    a.defer_commits = True
    peer = open_ledger(MemoryStorage(), "p")
    notified: list[str] = []
    a.listeners.append(lambda context, entries: notified.extend(e.id for e in entries))
    blobs = [(name, append(peer, name, name).updates[0][1]) for name in CONTEXTS[:3]]
    commits, root = storage.commits, a.root()
    for name, blob in blobs:
        assert len(a.apply_remote(name, blob)) == 1
    assert a.has_staged() and storage.commits == commits and not notified
    assert a.root() == root, "the node root shows durable data only"
    assert a.entry_count() == 0
    entries = a.get(CONTEXTS[0])[0]  # reading a context with staged rows commits them
    assert len(entries) == 1 and not a.has_staged()
    assert storage.commits == commits + 1, "one transaction for every staged update"
    assert len(notified) == 3 and a.root() == peer.root()
    _assert_summaries_current(storage)
    # Appends take the staged rows into their own commit.
    a.apply_remote(CONTEXTS[4], append(peer, CONTEXTS[4], "x").updates[0][1])
    append(a, CONTEXTS[5], "mine")
    assert storage.commits == commits + 2 and not a.has_staged()
    _assert_summaries_current(storage)


def test_a_driver_gathers_while_received_updates_keep_arriving_within_the_passes():
    """``gathering``: the rule both drivers (runtime committer, simulator) follow."""
    a = open_ledger(MemoryStorage(), "a")
    a.defer_commits = True
    peer = open_ledger(MemoryStorage(), "p")
    assert not a.gathering(0, -1), "nothing staged: commit (nothing) at once"
    a.apply_remote(CONTEXTS[0], append(peer, CONTEXTS[0], "x").updates[0][1])
    assert a.gathering(0, -1)
    assert not a.gathering(1, 1), "nothing more arrived during the wait"
    a.apply_remote(CONTEXTS[1], append(peer, CONTEXTS[1], "y").updates[0][1])
    assert a.gathering(1, 1)
    assert not a.gathering(GATHER_PASSES, 1), "at most GATHER_PASSES waits"
    a.flush()
    assert not a.gathering(0, -1)


def test_staged_contexts_stay_until_their_commit_then_the_budget_holds():
    a = open_ledger(MemoryStorage(), "a", memory_budget=1)
    a.defer_commits = True
    peer = open_ledger(MemoryStorage(), "p")
    for name in CONTEXTS:
        a.apply_remote(name, append(peer, name, name).updates[0][1])
    assert len(a.live_contexts()) == len(CONTEXTS), "staged rows pin their contexts"
    a.flush()
    assert len(a.live_contexts()) == 1 and a.entry_count() == len(CONTEXTS)
    _assert_summaries_current(a.storage)


@pytest.mark.parametrize("size", [100, 40_000])
def test_a_fresh_peer_gets_the_stored_rows_the_same_entries_as_the_doc(size: int) -> None:
    """``bundle_diff`` for a peer holding nothing of a context merges the stored rows instead
    of loading the ContextLog, squashed to one struct per run of a writer's items: the same
    entries (set for set) as the Doc's diff, and a bundle a fresh node accepts whole (every
    head it needs is in it)."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    storage = MemoryStorage()
    a, peer = open_ledger(storage, "a"), open_ledger(MemoryStorage(), "p")
    for i in range(3):  # three commits of ours, one received from another writer
        append(a, "big", *(rng.randbytes(size + i) for _ in range(2)))
    sync_all([peer, a])
    append(peer, "big", rng.randbytes(size))
    sync_all([peer, a])
    append(a, "big", rng.randbytes(2 * size))
    assert len(storage.updates["big"]) >= 5
    a = open_ledger(storage, "a", "a-2")  # nothing loaded
    from_rows = a.bundle_diff("big", EMPTY_STATE_VECTOR)
    assert from_rows is not None and a.live_contexts() == [] and a.loads == 0
    rows_update = decode_bundle(from_rows).update
    # ours before and after the peer's are one run (each of our items names our previous one
    # as origin), then the peer's
    assert len(parse_update(rows_update).items) == 2
    # A peer naming a state vector that holds nothing of ours gets the Doc's diff.
    from_doc = a.bundle_diff("big", encode_state_vector({12345: 0}))
    assert from_doc is not None and a.loads == 1
    assert sorted(appended_values(rows_update, ARRAY_NAME)) == \
        sorted(appended_values(decode_bundle(from_doc).update, ARRAY_NAME))
    for blob in (from_rows, from_doc):
        fresh = open_ledger(MemoryStorage(), "fresh")
        assert len(fresh.apply_remote("big", blob)) == len(a.contexts["big"]) == 8
        assert fresh.context_root("big") == a.context_root("big")
        assert [e.id for e in fresh.get("big")[0]] == [e.id for e in a.get("big")[0]]


def test_a_single_row_goes_as_stored_and_peers_holding_some_get_the_docs_diff() -> None:
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    pushed = append(a, "one", "z").updates[0][1]
    a = open_ledger(storage, "a", "a-2")
    fresh = open_ledger(MemoryStorage(), "fresh")
    whole = a.bundle_diff("one", None)  # (None: send everything)
    assert whole == pushed, "a single stored row goes with its stored heads: as it was pushed"
    older = MemoryStorage()  # a row of an older format holds its heads: it goes as it is
    older.updates["one"] = [pushed]
    assert open_ledger(older, "a", "a-3").bundle_diff("one", None) is pushed
    assert len(fresh.apply_remote("one", whole)) == 1
    assert a.loads == 0
    append(a, "one", "w")
    diff = a.bundle_diff("one", fresh.state_vector("one"))
    assert diff is not None and a.loads == 1
    assert len(fresh.apply_remote("one", diff)) == 1


# ---- records live in the stored rows -------------------------------------------------------


class _CountingReads:
    """Wraps a storage: counts ``read_spans`` calls and the spans they asked for."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.spans = inner, 0, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def read_spans(self, context, spans):
        self.calls += 1
        self.spans += len(spans)
        return self.inner.read_spans(context, spans)


def _unstored(ledger: Ledger) -> int:
    return sum(len(ledger._live[name].index.unstored) for name in ledger.live_contexts())


def test_records_leave_memory_once_stored_and_reads_come_from_the_rows(storage) -> None:
    """A loaded context keeps no record in memory once its rows are committed (after appends,
    received updates, a load, a compaction): reads, pages by key, proofs and snapshots read
    them from the rows, in one storage read per page, and answer what they answered when
    every record was in memory; appends read nothing."""
    counted = _CountingReads(storage)
    a = open_ledger(counted, "a")
    peer = open_ledger(MemoryStorage(), "p")
    for name in CONTEXTS[:4]:  # entries of another writer, received
        a.apply_remote(name, append(peer, name, "theirs", key="b").updates[0][1])
    _fill(a, 5)
    assert counted.calls == 0, "appends and received updates read no record back"
    assert _unstored(a) == 0
    expected = {name: a.get(name)[0] for name in CONTEXTS}
    assert counted.calls > 0
    in_memory = open_ledger(MemoryStorage(), "m")  # (the same entries, all read from memory)
    for name in CONTEXTS:
        if expected[name]:
            in_memory.load_snapshot(a.snapshot(name))
    for name in CONTEXTS:
        assert [e.id for e in in_memory.get(name)[0]] == [e.id for e in expected[name]]
        assert page_all(a, name, 3, key="b") == page_all(in_memory, name, 3, key="b")
    name = max(CONTEXTS, key=lambda n: len(expected[n]))
    calls = counted.calls
    assert a.get(name, limit=5)[0] == expected[name][:5] and counted.calls == calls + 1
    a.compact(name)
    assert _unstored(a) == 0 and a.get(name)[0] == expected[name]
    append(a, name, "after the compaction")
    reopened = open_ledger(counted, "a", "a-2")
    for n in CONTEXTS:
        assert reopened.get(n)[0] == a.get(n)[0]
    assert _unstored(reopened) == 0


def test_staged_records_stay_in_memory_until_their_commit(storage) -> None:
    """With ``defer_commits`` a received update's records are not stored yet: the index holds
    them (a second update is authenticated against them) until the commit, then reads them
    from the rows."""
    a = open_ledger(storage, "a")
    a.defer_commits = True
    peer = open_ledger(MemoryStorage(), "p")
    first = append(peer, "c1", "one", "two").updates[0][1]
    second = append(peer, "c1", "three").updates[0][1]
    assert len(a.apply_remote("c1", first)) == 2 and len(a.apply_remote("c1", second)) == 1
    assert a.has_staged() and len(a._live["c1"].index.unstored) == 3
    assert [e.payload for e in a.get("c1")[0]] == [b"one", b"two", b"three"]
    assert not a.has_staged() and _unstored(a) == 0
    assert a.get("c1")[0] == peer.get("c1")[0]


@pytest.mark.parametrize("with_doc", [False, True])
def test_a_row_of_several_writers_in_another_order_is_parsed(monkeypatch, with_doc) -> None:
    """A catch-up of a context several writers wrote holds their items in the order of the
    update's bytes (by Yjs client). Without a Doc they are indexed in that order; a Doc's
    observer reports them in the array's order, not the order of the bytes: the update is
    then parsed to find them. Either way every record leaves memory."""
    parsed = []
    inner = ContextLog._locate_parsed
    monkeypatch.setattr(ContextLog, "_locate_parsed",
                        lambda self, *args: parsed.append(1) or inner(self, *args))
    writers = [open_ledger(MemoryStorage(), name) for name in ("w1", "w2", "w3")]
    for round_ in range(2):
        for w in writers:
            append(w, "c1", f"{w.node_id} {round_}")
            sync_all(writers)
    fresh = open_ledger(MemoryStorage(), "fresh")
    if with_doc:
        append(fresh, "c1", "mine")
        assert fresh.contexts["c1"].doc is not None
    sync_all([writers[0], fresh])
    assert bool(parsed) == with_doc
    assert _unstored(fresh) == 0
    assert fresh.get("c1")[0] == writers[0].get("c1")[0]


def test_a_stored_record_that_is_not_where_the_index_says_is_refused() -> None:
    """A row changed under a loaded context (damage, or a tool) is not read as another
    entry: IntegrityError naming the context."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    append(a, "c1", "one", "two")
    row = storage.updates["c1"][0]
    storage.updates["c1"][0] = row[:-300] + bytes(300)
    with pytest.raises(IntegrityError, match="c1"):
        a.get("c1")


def _fill_runs(ledger: Ledger, rng: random.Random, names: list[str], commits: int) -> None:
    """Commits of 16-40 entries per context (the rows a load reads as columns when their
    records are of one size), some of two sizes, some with a key per entry."""
    for _ in range(commits):
        name = rng.choice(names)
        n, size = rng.randint(16, 40), rng.randint(1, 60)
        sizes = [size] * n if rng.random() < 0.7 else [rng.randint(1, 60) for _ in range(n)]
        keys = ["k"] * n if rng.random() < 0.5 else [rng.choice("ab") for _ in range(n)]
        ledger.append([ledger.prepare(name, key, rng.randbytes(s))
                       for key, s in zip(keys, sizes, strict=True)])


def test_a_load_reads_runs_as_columns_and_answers_as_before(storage, monkeypatch) -> None:
    """Rows of one writer's even records are loaded as columns (``ContextLog.load_run``),
    interleaved with rows of another writer, catch-ups and rows loaded record by record:
    every read, page, cursor, key, root, proof and diff equals the one of the ledger that
    wrote them, before and after eviction."""
    names = ["r1", "r2", "r3"]
    rng = random.Random(5)
    a = open_ledger(storage, "a")
    b = open_ledger(MemoryStorage(), "b")
    _fill_runs(a, rng, names, 12)
    sync_all([a, b])
    _fill_runs(b, rng, names, 6)
    _fill_runs(a, rng, names, 6)
    sync_all([a, b])
    _fill_runs(a, rng, names, 6)
    tiny = open_ledger(storage, "a", "a-2", memory_budget=1)
    peer_sv = b.contexts[names[0]].state_vector()
    runs = []
    add_run = EntryIndex.add_run

    def counted(index, *args):
        runs.append(add_run(index, *args))
        return runs[-1]

    monkeypatch.setattr(EntryIndex, "add_run", counted)
    for _ in range(2):
        for name in names:
            assert tiny.get(name) == a.get(name)
            for key in ("a", "k"):
                assert tiny.get(name, key=key) == a.get(name, key=key)
                assert page_all(tiny, name, 7, key=key) == page_all(a, name, 7, key=key)
            assert page_all(tiny, name, 5) == page_all(a, name, 5)
            middle = a.get(name, limit=30)[1]
            assert tiny.get(name, after=middle) == a.get(name, after=middle)
            assert tiny.context_root(name) == a.context_root(name)
            assert tiny.bundle_diff(name, peer_sv) == a.bundle_diff(name, peer_sv)
            for entry in a.get(name, limit=40)[0][::13]:
                proof, theirs = make_proof(tiny, name, entry.id), make_proof(a, name, entry.id)
                signed, their_signed = proof.pop("signed_root"), theirs.pop("signed_root")
                assert proof == theirs and signed["root"] == their_signed["root"]
    assert runs.count(True) > 10, "rows of even records are read as columns"
    # appends into a context loaded from runs continue it (the id table filled on use)
    for name in names:
        before = a.get(name)[0]
        appended = tiny.append([tiny.prepare(name, "k", b"more %d" % i) for i in range(20)])
        assert tiny.get(name)[0] == before + appended.entries
        assert all(e.id in tiny.contexts[name].by_id for e in before + appended.entries)
    assert tiny.verify() == []


def test_a_damaged_record_of_a_run_is_refused_when_read() -> None:
    """A load reads a run's records as columns without hashing them: a record changed in
    the store (its id kept) is refused when a read reaches it, IntegrityError naming the
    context, as a load that hashed it refused it."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    for first in (0, 20):
        a.append([a.prepare("c1", "k", b"payload %02d" % i) for i in range(first, first + 20)])
    row = storage.updates["c1"][1]
    at = row.index(b"payload 27")
    storage.updates["c1"][1] = row[:at] + b"PAYLOAD 27" + row[at + 10 :]
    reopened = open_ledger(storage, "a", "a-2")
    assert reopened.get("c1", limit=25)[0] == a.get("c1", limit=25)[0]
    assert reopened._live["c1"].index._placed == 0, "both rows were read as columns"
    with pytest.raises(IntegrityError, match="c1"):
        reopened.get("c1")


def test_a_first_append_after_a_load_of_runs_answers_as_after_a_lookup(storage) -> None:
    """Appended right after a load of runs (no lookup: the loaded ids not in the id table
    yet, nor in the tree), entries are indexed as after one: reads, roots, proofs and the
    entries found by id equal a peer's that received everything; the peer's copy of what is
    held already is deduplicated; our new entries join the tree."""
    names = ["r1", "r2"]
    rng = random.Random(7)
    a = open_ledger(storage, "a")
    peer = open_ledger(MemoryStorage(), "b")
    _fill_runs(a, rng, names, 10)
    sync_all([a, peer])
    first = open_ledger(storage, "a", "a-2")
    for name in names:
        before = a.get(name)[0]
        appended = first.append([first.prepare(name, "k", b"first %d" % i) for i in range(3)])
        index = first._live[name].index
        assert index._placed < len(index), "the loaded ids wait to be placed"
        assert first.get(name)[0] == before + appended.entries
        assert first.apply_remote(name, peer.bundle_diff(name, None)) == []
        assert first.get(name)[0] == before + appended.entries
    sync_all([first, peer])
    for name in names:
        assert first.get(name) == peer.get(name)
        assert first.context_root(name) == peer.context_root(name)
        held = first.get(name)[0]
        assert all(e.id in first.contexts[name].by_id for e in held)
        for entry in held[::17] + held[-3:]:
            proof = make_proof(first, name, entry.id)
            assert check_proof(proof)
            assert proof["signed_root"]["root"] == make_proof(peer, name, entry.id)[
                "signed_root"]["root"]
    assert first.verify() == []
