"""Summaries that lag their rows (``Ledger.summary_lag_ns``, set by the runtime).

The invariant: rows and heads are committed as always (an acknowledged append is durable and
signed); a context's stored summary (root, count, state vector) is either current or lags,
and a lagging one is never trusted: ``Storage.lagging_summaries`` names every context with rows
committed after the stored summaries, and an open leaves exactly those *settling*: recomputed
from their rows a step at a time (``Ledger.settle_step``), or at once when one is read. In
memory every read of a context (counts, roots, state vectors, diffs, checks) sees its current
state; the node tree shows a settling context at its stored root (a state of it this node held)
until it settles, and no summary is stored while one settles.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from p2p_ledger.core.ledger import SUMMARY_LAG_MOST, SUMMARY_SHARE, Ledger
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.trio.store import SqliteStore

from .helpers import append, open_ledger, sync_all
from .test_lazy_ledger import CONTEXTS, _assert_summaries_current, _fill

LAG = 10**5  # ns; the test clock (counter_ns) moves 1 µs per call: ~50 commits


def _lagging(ledger: Ledger, lag: int = LAG) -> Ledger:
    ledger.summary_lag_ns = lag
    return ledger


def test_commits_within_the_lag_store_no_summary_and_reads_stay_current(storage):
    a = _lagging(open_ledger(storage, "a"), 10**15)  # (never due: only write_summaries)
    _fill(a, 7, 40)
    assert a.lags()
    summaries, lagging = storage.lagging_summaries()
    assert sorted(lagging) == sorted(a.context_names())
    count, counts = a.entry_count(), {name: a.context_entries(name) for name in CONTEXTS}
    root = a.root()  # (settles the roots in memory; stores nothing)
    assert a.fork_count() == 0
    assert storage.lagging_summaries()[1] == lagging  # (reads store nothing)
    assert a.verify() == []  # (stores them first: a second process checks the rows too)
    assert storage.lagging_summaries()[1] == []
    a.write_summaries()
    assert not a.lags() and storage.lagging_summaries()[1] == []
    _assert_summaries_current(storage)
    fresh = open_ledger(storage, "checker", "checker-1")
    assert (fresh.root(), fresh.entry_count()) == (root, count)
    assert counts == {name: fresh.context_entries(name) for name in CONTEXTS}


def test_a_commit_after_the_lag_stores_every_lagging_summary(storage):
    a = _lagging(open_ledger(storage, "a"))
    rng = random.Random(11)
    print("seed", 11)
    stored_at = []
    for i in range(400):
        append(a, rng.choice(CONTEXTS), f"p{i}")
        if not storage.lagging_summaries()[1]:
            stored_at.append(i)
            _assert_summaries_current(storage)
    assert len(stored_at) >= 2, stored_at  # (each time, by the commit that passed the lag)


def test_an_open_after_a_crash_settles_only_the_lagging_contexts_later(storage, monkeypatch):
    a = open_ledger(storage, "a")
    _fill(a, 8, 40)  # summaries stored with every commit
    _lagging(a, 10**15)
    append(a, CONTEXTS[0], "x")
    append(a, CONTEXTS[5], "y", "z")
    root, count, entries = a.root(), a.entry_count(), a.context_entries(CONTEXTS[5])
    # (a crash: nothing more is written; the ledger is dropped)
    settled = []
    real = Ledger._recompute_steps
    monkeypatch.setattr(Ledger, "_recompute_steps",
                        lambda self, name: settled.append(name) or real(self, name))
    again = open_ledger(storage, "a", "a-2")
    assert (again.settling(), settled, again.loads) == (2, [], 0)  # (ready at once)
    # A read of a settling context settles it first: its rows, never its stored summary.
    assert again.context_entries(CONTEXTS[5]) == entries
    assert (settled, again.settling()) == ([CONTEXTS[5]], 1)
    while again.settle_step():
        pass
    assert sorted(settled) == sorted([CONTEXTS[0], CONTEXTS[5]]) and again.loads == 0
    assert (again.root(), again.entry_count()) == (root, count)
    assert storage.lagging_summaries()[1]  # (stored by the next commit, or write_summaries)
    append(again, CONTEXTS[3], "stores them")
    assert storage.lagging_summaries()[1] == []
    _assert_summaries_current(storage)
    assert again.verify() == []


def test_no_summary_is_stored_while_a_context_settles_and_a_second_crash_loses_nothing(storage):
    a = _lagging(open_ledger(storage, "a"), 10**15)
    _fill(a, 17, 40)
    count, names = a.entry_count(), set(a.context_names())
    # (a crash; the next open stores summaries with every commit, but one context settles)
    b = open_ledger(storage, "a", "a-2")
    assert b.settling() == len(names)
    b.settle_step()
    append(b, "brand-new", "while settling")
    b.write_summaries()
    assert set(storage.lagging_summaries()[1]) == {*names, "brand-new"}
    # (a second crash while they settle)
    c = open_ledger(storage, "a", "a-3")
    c.settle()
    assert c.entry_count() == count + 1
    c.write_summaries()
    _assert_summaries_current(storage)
    assert c.verify() == []


def test_an_append_after_a_crash_comes_after_every_entry_stored(storage):
    """The Lamport clock: the times of the rows a crash left lagging count at once (an entry
    appended after the restart, in any context, orders after every entry stored before)."""
    a = open_ledger(storage, "a")
    append(a, CONTEXTS[0], "early")
    _lagging(a, 10**15)
    for i in range(30):
        append(a, CONTEXTS[1], f"late {i}")
    last = a.clock.time
    b = open_ledger(storage, "a", "a-2")
    assert b.settling() == 1
    (entry,) = append(b, CONTEXTS[0], "after the crash").entries
    assert entry.lamport > last
    assert b.settling() == 1  # (appending elsewhere settles nothing)


def test_a_peer_asking_about_a_settling_context_gets_its_rows(storage):
    """Diffs and state vectors of a settling context come from its rows: a peer holding the
    state its stored summary describes still gets what was committed after it."""
    a = open_ledger(storage, "a")
    _fill(a, 18, 20)
    peer = open_ledger(MemoryStorage(), "p")
    sync_all([a, peer])
    _lagging(a, 10**15)
    append(a, CONTEXTS[2], "after the summaries", "and another")
    b = open_ledger(storage, "a", "a-2")
    assert b.settling() == 1
    sync_all([b, peer])
    assert peer.context_entries(CONTEXTS[2]) == b.context_entries(CONTEXTS[2])
    assert peer.root() == b.root() and b.settling() == 0


def test_a_lagging_context_is_never_evicted():
    storage = MemoryStorage()
    a = _lagging(open_ledger(storage, "a", memory_budget=1), 10**15)
    _fill(a, 9, 40)
    assert sorted(a.live_contexts()) == sorted(a.context_names())  # all lag: all stay
    a.write_summaries()
    append(a, CONTEXTS[0], "one more")  # (lags again, alone)
    a.write_summaries()
    a.get(CONTEXTS[1])
    assert len(a.live_contexts()) == 1
    _assert_summaries_current(storage)


def test_received_updates_and_diffs_while_summaries_lag(storage):
    a = _lagging(open_ledger(storage, "a"), 10**15)
    b = open_ledger(MemoryStorage(), "b")
    _fill(a, 12, 30)
    _fill(b, 13, 30)
    sync_all([a, b])  # diffs answered from lagging contexts, remote updates committed
    assert a.root() == b.root() and a.entry_count() == b.entry_count()
    assert a.lags()
    a.write_summaries()
    _assert_summaries_current(storage)


class _FailingSqlite(SqliteStore):
    fail = False

    def commit(self, updates, summaries=None, heads=(), lamport=None):
        if self.fail:
            raise OSError("disk full")
        super().commit(updates, summaries, heads, lamport)


def test_a_failed_commit_while_summaries_lag_keeps_counts_and_roots_durable(tmp_path):
    storage = _FailingSqlite(tmp_path / "n")
    try:
        a = _lagging(open_ledger(storage, "a"), 10**15)
        _fill(a, 14, 20)
        root, count = a.root(), a.entry_count()
        storage.fail = True
        with pytest.raises(OSError):
            append(a, CONTEXTS[0], "lost")
        with pytest.raises(OSError):
            append(a, "brand-new", "lost too")
        storage.fail = False
        assert (a.root(), a.entry_count()) == (root, count)
        append(a, CONTEXTS[0], "kept")
        a.write_summaries()
        _assert_summaries_current(storage)
        assert a.verify() == []
    finally:
        storage.close()


def test_summaries_lagging_at_a_sigkill_are_settled_after_the_next_open(tmp_path):
    """A real crash: a child appends with summaries that never come due and is SIGKILLed
    mid-stream; the next open settles the lagging ones, every finished commit is there
    and checks, and the stored summaries equal recomputed ones. The clock after the crash is
    never below an acknowledged entry's Lamport time, and the open takes it from what the
    commits stored with their rows, reading none of them."""
    data = tmp_path / "node"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(data)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    committed = 0
    for _ in range(40):  # 40 finished commits, then kill it wherever it is
        line = child.stdout.readline()
        assert line.startswith("committed"), line
        committed, acknowledged = int(line.split()[2]), int(line.split()[3])
    child.kill()
    child.wait(timeout=30)
    store = SqliteStore(data)
    try:
        summaries, lagging = store.lagging_summaries()
        assert lagging, "the child stored its summaries: the crash tested nothing"
        lamport, rows = store.lagging_lamport()
        assert lamport >= acknowledged and list(rows) == []
        again = open_ledger(store, "x", "x-2")
        assert again.settling() and again.loads == 0
        assert again.clock.time >= acknowledged
        again.settle()
        assert again.entry_count() >= committed
        again.write_summaries()
        assert store.lagging_summaries()[1] == []
        _assert_summaries_current(store)
        assert again.verify() == []
    finally:
        store.close()



class _Older(SqliteStore):
    """A store as an older version writes it: rows without their Lamport time."""

    def commit(self, updates, summaries=None, heads=(), lamport=None):
        super().commit(updates, summaries, heads)


def test_rows_committed_without_their_lamport_time_are_read_by_the_open(tmp_path):
    """After a crash, rows that an older version (or a tool) committed without their Lamport
    time, after rows with one, are read: the clock orders a new entry after theirs too."""
    data = tmp_path / "n"
    store = SqliteStore(data)
    a = _lagging(open_ledger(store, "a"), 10**15)
    append(a, CONTEXTS[0], "with its time")
    store.close()  # (a crash: no summary stored)
    older = _Older(data)
    b = _lagging(open_ledger(older, "a", "a-2"), 10**15)
    for i in range(5):
        append(b, CONTEXTS[1], f"without {i}")
    last = b.clock.time
    older.close()
    store = SqliteStore(data)
    try:
        assert store.lagging_lamport()[0] < last
        c = open_ledger(store, "a", "a-3")
        assert c.clock.time >= last
        (entry,) = append(c, CONTEXTS[2], "after the crash").entries
        assert entry.lamport > last
    finally:
        store.close()

_KILLED_WRITER = """
import sys
from p2p_ledger.core.ledger import SUMMARY_LAG_MOST, SUMMARY_SHARE, Ledger
from p2p_ledger.trio.store import SqliteStore
store = SqliteStore(sys.argv[1])
ledger = Ledger.open(store, "x", "x-1")
ledger.summary_lag_ns = 10**18  # (never due)
total = 0
for i in range(100000):
    appended = ledger.append([ledger.prepare(f"c{i % 7}", "k", b"p" * (i % 50))
                              for _ in range(1 + i % 5)])
    total += len(appended.entries)
    print("committed", i, total, max(e.lamport for e in appended.entries), flush=True)
"""


def test_a_root_read_while_summaries_lag_does_not_hold_back_later_commits(storage):
    """A read of the node root computes the lagging summaries (to store later); a commit of
    the same context after it, then the commit that stores them, must store the newer one
    (found by the real split-brain scenario: a node's root stayed behind its entries)."""
    a = _lagging(open_ledger(storage, "a"))
    rng = random.Random(16)
    print("seed", 16)
    for i in range(400):
        append(a, rng.choice(CONTEXTS[:3]), f"p{i}")
        if i % 7 == 0:
            a.root()  # (gossip reads it between commits)
        if not a.lags():
            _assert_summaries_current(storage)
            fresh = open_ledger(storage, "checker", f"checker-{i}")
            assert fresh.root() == a.root()


def test_the_root_never_shows_staged_entries_while_summaries_lag(storage):
    """Received updates staged for the next commit (``defer_commits``) are not durable: the
    node root leaves them out until they commit, lagging summaries or not (a context holding
    staged rows shows the root it had when last computed)."""
    a = _lagging(open_ledger(storage, "a"), 10**15)
    a.defer_commits = True
    peer = open_ledger(MemoryStorage(), "p")
    append(a, CONTEXTS[1], "elsewhere")
    before = a.root()
    append(a, CONTEXTS[0], "ours")  # (lags, never computed)
    pushed = append(peer, CONTEXTS[0], "theirs").updates[0][1]
    assert len(a.apply_remote(CONTEXTS[0], pushed)) == 1 and a.has_staged()
    assert a.root() == before
    a.write_summaries()  # (commits the staged rows first)
    assert not a.has_staged() and not a.lags() and a.root() != before
    _assert_summaries_current(storage)
    assert open_ledger(storage, "checker", "checker-1").root() == a.root()


def test_ids_appended_join_the_tree_when_it_is_read(storage):
    """Our appends' ids wait for the tree to be used (``ContextLog.tree``): a proof, a root or
    a descent of a context sees every entry appended, as a tree built from scratch does."""
    from p2p_ledger.core.merkle import root_of_keys
    from p2p_ledger.core.proof import check_proof, make_proof

    a = _lagging(open_ledger(storage, "a"), 10**15)
    _fill(a, 15, 30)
    last = append(a, CONTEXTS[2], "newest").entries[0]
    ctx = a.contexts[CONTEXTS[2]]
    assert ctx._loading is not None, "no id waited: the test tests nothing"
    proof = make_proof(a, CONTEXTS[2], last.id)
    assert check_proof(proof).id == last.id
    ids = [bytes.fromhex(e.id) for e in ctx.ordered]
    assert ctx.root() == root_of_keys(ids) == a.context_root(CONTEXTS[2])


def test_verify_after_a_crash_audits_each_settling_context_once(storage, monkeypatch):
    """``verify`` of a store opened after a crash settles the settling contexts by its own
    audit of their rows: each context's rows are read and checked once (it settled them all
    first, then audited them again), and the summaries it stores are the ones of the rows."""
    import p2p_ledger.core.ledger as ledger_module

    a = _lagging(open_ledger(storage, "a"), 10**15)
    _fill(a, 6, 30)
    root, count = a.root(), a.entry_count()
    # (a crash: every summary lags)
    audited: list[str] = []
    real = ledger_module.audit_steps
    monkeypatch.setattr(ledger_module, "audit_steps",
                        lambda name, *args, **kwargs: audited.append(name) or real(
                            name, *args, **kwargs))
    b = open_ledger(storage, "a", "a-2")
    settling = b.settling()
    assert settling == len(b.context_names()) > 1
    assert b.verify() == []
    assert sorted(audited) == sorted(b.context_names())  # (each once)
    assert (b.settling(), b.root(), b.entry_count()) == (0, root, count)
    assert storage.lagging_summaries()[1] == []  # (stored by verify, as before)
    _assert_summaries_current(storage)


class _Clock:
    """A clock the test moves (ns)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _spread_ledger(storage, budget: int | None = None) -> tuple[Ledger, _Clock]:
    clock = _Clock()
    ledger = _lagging(open_ledger(storage, "a", now_ns=clock, memory_budget=budget), 1000)
    return ledger, clock


@pytest.mark.parametrize("budget", [None, 1])  # (whatever is loaded)
def test_summaries_spread_over_many_contexts_wait_for_rows_to_share_them(storage, budget):
    """Past the lag, a commit stores the lagging summaries only once SUMMARY_SHARE rows were
    committed per summary to store, or once they lag SUMMARY_LAG_MOST times the lag: spread
    over many contexts (a row each) a summary per row is not stored; in one context it is
    stored by the first commit past the lag. Reads stay current meanwhile; what is stored is."""
    names = [f"s{i:02d}" for i in range(40)]
    a, clock = _spread_ledger(storage, budget)
    for name in names:  # 40 rows, 40 summaries to store
        append(a, name, "x")
    clock.now += 1000  # (the lag has passed)
    append(a, names[0], "x")
    assert storage.lagging_summaries()[1], "a summary per row was stored"
    assert a.entry_count() == 41 and a.context_entries(names[3]) == 1
    for i in range(4 * len(names) - len(names) - 2):  # (one row short of 4 per summary)
        append(a, names[i % len(names)], "y")
    assert storage.lagging_summaries()[1]
    append(a, names[0], "z")
    assert storage.lagging_summaries()[1] == []
    _assert_summaries_current(storage)
    # the longest lag: the rows never reach 4 per summary
    for name in names:
        append(a, name, "w")
    clock.now += 1000 * SUMMARY_LAG_MOST - 1
    append(a, names[0], "v")
    assert storage.lagging_summaries()[1]
    clock.now += 1
    append(a, names[1], "u")
    assert storage.lagging_summaries()[1] == []
    _assert_summaries_current(storage)
    # one context: stored by the first commit past the lag (commits of a second: ~80 rows)
    one, clock = _spread_ledger(MemoryStorage(), budget)
    for i in range(SUMMARY_SHARE - 1):
        append(one, "only", f"{i}")
    clock.now += 1000
    append(one, "only", "last")
    assert not one.lags()

