"""Ledger: group-committed appends, remote updates, causal paging, roots, rebuild, compaction."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from pycrdt import Array, Doc, get_update

from p2p_ledger.core import ledger as ledger_module
from p2p_ledger.core.context_log import ContextLog
from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import Limits, decode_record
from p2p_ledger.core.errors import (
    ForbiddenUpdate,
    IntegrityError,
    InvalidContextName,
    InvalidCursor,
    InvalidMeta,
    KeyTooLarge,
    MetaTooLarge,
    PayloadTooLarge,
    RemoteProtocolError,
)
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.testing import bundled, deleting_update, forged_update
from p2p_ledger.trio.store import SqliteStore

from .helpers import (
    Backend,
    append,
    append_after_last,
    chain_entries,
    ids,
    open_ledger,
    origin_of,
    page_all,
    read_ids,
    state_of,
    sync,
    sync_all,
)

NODES = ("a", "b", "c")
CONTEXTS = ("c1", "c2")
KEYS = ("k1", "k2", "k3")


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    b = Backend(request.param, tmp_path)
    yield b
    b.close()


@pytest.fixture
def memory(tmp_path):
    b = Backend("memory", tmp_path)
    yield b
    b.close()


def order_keys(entries):
    return [e.order_key for e in entries]


def assert_causal(entries):
    keys = order_keys(entries)
    assert keys == sorted(keys), "entries must come in causal (Lamport, origin, seq) order"


# ---- appends -----------------------------------------------------------------------------------


def test_append_assigns_lamport_and_gap_free_seq(backend):
    ledger = open_ledger(backend.new(), "a")
    first = append(ledger, "c1", "x", "y")
    second = ledger.append([
        ledger.prepare("c2", "k", "p"), ledger.prepare("c1", "k", "z"),
        ledger.prepare("c2", "k", "q"),
    ])
    entries = first.entries + second.entries
    assert [e.lamport for e in entries] == [1, 2, 3, 4, 5]
    assert [(e.context, e.seq) for e in entries] == [
        ("c1", 1), ("c1", 2), ("c2", 1), ("c1", 3), ("c2", 2)]
    assert [e.payload for e in second.entries] == [b"p", b"z", b"q"]  # request order
    assert all(e.origin == origin_of("a") and e.key == "k" for e in entries)
    for e in entries:
        assert decode_record(e.record) == e
    assert sorted(name for name, _ in second.updates) == ["c1", "c2"]
    assert ledger.entry_count() == 5
    assert ids(ledger.get("c1")[0]) == ids([entries[0], entries[1], entries[3]])


def test_group_commit_is_one_storage_commit():
    storage = MemoryStorage()
    ledger = open_ledger(storage, "a")
    requests = [ledger.prepare(CONTEXTS[i % 2], KEYS[i % 3], f"p{i}") for i in range(250)]
    before = storage.commits
    result = ledger.append(requests)
    assert storage.commits == before + 1
    assert len(result.entries) == 250 and len(result.updates) == 2
    assert {name: len(blobs) for name, blobs in storage.updates.items()} == {"c1": 1, "c2": 1}
    for name in CONTEXTS:
        assert [e.seq for e in result.entries if e.context == name] == list(range(1, 126))
    # The committed updates are exactly what a peer needs.
    peer = open_ledger(MemoryStorage(), "b")
    for name, update in result.updates:
        peer.apply_remote(name, update)
    assert peer.root() == ledger.root()


def test_prepare_errors_are_named_and_change_nothing():
    ledger = open_ledger(MemoryStorage(), "a", limits=Limits(max_payload=8, max_meta=8))
    append(ledger, "c1", "x")
    before = state_of(ledger)
    cases = [
        (InvalidContextName, ("bad name",)), (InvalidContextName, ("",)),
        (InvalidContextName, ("x" * 129,)), (InvalidContextName, (None,)),
        (KeyTooLarge, ("c1", "k" * 257)), (PayloadTooLarge, ("c1", "k", b"x" * 9)),
        (MetaTooLarge, ("c1", "k", b"", {"abcd": "efghi"})),
        (InvalidMeta, ("c1", "k", b"", {"a": 1})),
    ]
    for cls, args in cases:
        with pytest.raises(cls):
            ledger.prepare(*args)
    assert state_of(ledger) == before
    assert ledger.prepare("c1", "k", b"x" * 8, {"abcd": "efgh"}).payload == b"x" * 8


def test_listeners_hear_new_entries_once():
    heard = []
    a = open_ledger(MemoryStorage(), "a")
    b = open_ledger(MemoryStorage(), "b")
    b.listeners.append(lambda ctx, entries: heard.append((ctx, ids(entries))))
    e = append(a, "c1", "1", "2").entries
    sync(a, b, "c1")
    sync(a, b, "c1")
    mine = append(b, "c1", "3").entries
    assert heard == [("c1", ids(e)), ("c1", ids(mine))]


# ---- reads -------------------------------------------------------------------------------------


def test_unknown_context_reads_empty_and_names_are_checked():
    ledger = open_ledger(MemoryStorage(), "a")
    assert ledger.get("nothing") == ([], Cursor())
    x = "ab" * 32 + ".0000000000000001"
    got, cursor = ledger.get("nothing", after=f"{x}:3")
    assert got == [] and cursor == {x: 3}
    with pytest.raises(InvalidContextName):
        ledger.get("no such name")
    with pytest.raises(InvalidCursor):
        ledger.get("nothing", after="garbage")
    assert ledger.context_root("nothing") == open_ledger(MemoryStorage(), "b").context_root("x")


def test_key_filter_and_cursor_text():
    ledger = open_ledger(MemoryStorage(), "a")
    ledger.append([ledger.prepare("c1", KEYS[i % 3], str(i)) for i in range(9)])
    k1 = ledger.get("c1", key="k1")[0]
    assert [e.payload for e in k1] == [b"0", b"3", b"6"]
    assert ledger.get("c1", key="zz") == ([], Cursor())
    page, cursor = ledger.get("c1", limit=4)
    assert str(cursor) == f"{ledger.writer('c1')}:4"
    rest, end = ledger.get("c1", after=str(cursor))
    assert [e.payload for e in page + rest] == [str(i).encode() for i in range(9)]
    assert ledger.get("c1", after=end) == ([], end)
    assert ledger.get("c1", limit=0) == ([], Cursor())
    assert [e.payload for p in page_all(ledger, "c1", 2, key="k2") for e in p] == [b"1", b"4", b"7"]


def test_lamport_advances_on_received_entries():
    a = open_ledger(MemoryStorage(), "a")
    b = open_ledger(MemoryStorage(), "b")
    append(a, "c1", *"12345")
    append(b, "c2", "early")  # lamport 1 on b
    assert b.clock.time == 1
    received = sync(a, b, "c1")
    assert max(e.lamport for e in received) == 5 and b.clock.time == 5
    mine = append(b, "c1", "after").entries[0]
    assert mine.lamport == 6
    assert ids(b.get("c1")[0])[-1] == mine.id  # causally after what b had seen


def test_same_entries_in_different_orders_read_the_same(memory):
    a = open_ledger(memory.new(), "a")
    b = open_ledger(memory.new(), "b")
    pushes = []
    for i in range(6):
        src = (a, b)[i % 2]
        pushes += [u for _, u in append(src, "c1", f"{src.node_id}{i}").updates]
    c = open_ledger(memory.new(), "c")
    d = open_ledger(memory.new(), "d")
    for u in pushes:
        c.apply_remote("c1", u)
    for u in reversed(pushes):
        d.apply_remote("c1", u)  # an update that skips an item of its own client is dropped
    assert len(read_ids(d, "c1")) < 6
    sync_all([a, b])
    sync(a, d, "c1")  # anti-entropy asks for what the state vector lacks, in order
    full = read_ids(a, "c1")
    assert len(full) == 6
    for other in (b, c, d):
        assert read_ids(other, "c1") == full
        assert other.root() == a.root() and other.context_root("c1") == a.context_root("c1")


def test_get_from_any_cursor_pages_exactly_once():
    rng = random.Random(7)
    a, b = open_ledger(MemoryStorage(), "a"), open_ledger(MemoryStorage(), "b")
    for _ in range(40):
        src = rng.choice((a, b))
        append(src, "c1", *[f"p{rng.random()}" for _ in range(rng.randint(1, 3))],
               key=rng.choice(KEYS))
        if rng.random() < 0.3:
            sync_all([a, b])
    sync_all([a, b])
    everything = a.get("c1")[0]
    assert_causal(everything)
    top = defaultdict(int)
    for e in everything:
        top[e.writer] = max(top[e.writer], e.seq)
    for _ in range(30):
        cursor = Cursor({o: rng.randint(0, s) for o, s in top.items()})
        key = rng.choice((None, *KEYS))
        expected = [e for e in everything if not cursor.covers(e) and key in (None, e.key)]
        for limit in (1, 2, 5):
            pages = page_all(a, "c1", limit, after=str(cursor), key=key)
            assert ids(e for p in pages for e in p) == ids(expected)
        assert ids(a.get("c1", key=key, after=cursor)[0]) == ids(expected)


# ---- random histories --------------------------------------------------------------------------


class Reader:
    """A client paging one context of one node with its own cursor, at random moments."""

    def __init__(self, node: str, context: str, key: str | None, limit: int) -> None:
        self.node, self.context, self.key, self.limit = node, context, key, limit
        self.cursor: Cursor | None = None
        self.pages: list[list] = []

    def read(self, ledger) -> list:
        page, self.cursor = ledger.get(self.context, key=self.key, after=self.cursor,
                                       limit=self.limit)
        assert len(page) <= self.limit
        assert_causal(page)
        if page:
            self.pages.append(page)
        return page


def run_history(seed: int, backend: Backend, steps: int, pushes: bool, restarts: bool):
    rng = random.Random(seed)
    storages = {n: backend.new() for n in NODES}
    incarnation = dict.fromkeys(NODES, 1)
    ledgers = {n: open_ledger(storages[n], n, f"{n}-1") for n in NODES}
    readers = [Reader(n, ctx, key, rng.randint(1, 4))
               for n in NODES for ctx in CONTEXTS for key in (None, "k1")]
    queue: list[tuple[str, str, bytes]] = []
    authored: dict[str, object] = {}

    def deliver(dst, name, update):
        ledger = ledgers[dst]
        new = ledger.apply_remote(name, update)
        assert all(ledger.clock.time >= e.lamport for e in new)

    ops = ["append", "deliver", "sync", "read", "restart"]
    weights = [4, 3 if pushes else 0, 2, 4, 1 if restarts else 0]
    for _ in range(steps):
        op = rng.choices(ops, weights)[0]
        if op == "append":
            n = rng.choice(NODES)
            ledger = ledgers[n]
            seen = max((ctx.max_lamport for ctx in ledger.contexts.values()), default=0)
            requests = [ledger.prepare(rng.choice(CONTEXTS), rng.choice(KEYS), f"{n}{rng.random()}")
                        for _ in range(rng.randint(1, 3))]
            result = ledger.append(requests)
            lamports = [e.lamport for e in result.entries]
            assert lamports == sorted(set(lamports)) and lamports[0] > seen
            for e in result.entries:
                assert e.origin == origin_of(n) and decode_record(e.record) == e
                authored[e.id] = e
            if pushes:
                for name, update in result.updates:
                    queue += [(d, name, update) for d in NODES if d != n and rng.random() < 0.7]
        elif op == "deliver" and queue:
            deliver(*queue.pop(rng.randrange(len(queue))))  # out of order: entries arrive late
        elif op == "sync":
            src, dst = rng.sample(NODES, 2)
            sync(ledgers[src], ledgers[dst], rng.choice(CONTEXTS))
        elif op == "read":
            reader = rng.choice(readers)
            reader.read(ledgers[reader.node])
        elif op == "restart":
            n = rng.choice(NODES)
            before = ledgers[n]
            snapshot = {name: read_ids(before, name) for name in before.contexts}
            incarnation[n] += 1
            storages[n] = backend.reopen(storages[n])
            ledgers[n] = open_ledger(storages[n], n, f"{n}-{incarnation[n]}")
            assert ledgers[n].root() == before.root()
            assert {name: read_ids(ledgers[n], name) for name in ledgers[n].contexts} == snapshot
            assert ledgers[n].clock.time >= before.clock.time
    rng.shuffle(queue)
    for item in queue:
        deliver(*item)
    sync_all(ledgers.values())
    for reader in readers:
        while reader.read(ledgers[reader.node]):
            pass
    return rng, ledgers, readers, authored


def check_converged(rng, ledgers, readers, authored):
    by_context = defaultdict(list)
    for e in authored.values():
        by_context[e.context].append(e)
    first = ledgers[NODES[0]]
    for name, entries in by_context.items():
        expected = sorted(entries, key=lambda e: e.order_key)
        for ledger in ledgers.values():
            got = ledger.get(name)[0]
            assert ids(got) == ids(expected)
            assert got == expected
        # seq per origin per context: 1, 2, 3... and Lamport grows with seq
        per_origin = defaultdict(list)
        for e in expected:
            per_origin[e.writer].append(e)
        for own in per_origin.values():
            assert [e.seq for e in own] == list(range(1, len(own) + 1))
        for limit in (1, 3, 7):
            pages = page_all(first, name, limit)
            assert ids(e for p in pages for e in p) == ids(expected)
    for ledger in ledgers.values():
        assert ledger.root() == first.root()
        assert ledger.verify() == []
    for reader in readers:
        delivered = [e for page in reader.pages for e in page]
        assert len(set(ids(delivered))) == len(delivered), "an entry was delivered twice"
        wanted = {e.id for e in authored.values()
                  if e.context == reader.context and reader.key in (None, e.key)}
        assert set(ids(delivered)) == wanted, "an entry was never delivered"
        per_origin = defaultdict(list)
        for e in delivered:
            per_origin[e.writer].append(e.seq)
        for seqs in per_origin.values():
            if reader.key is None:
                assert seqs == list(range(1, len(seqs) + 1))
            else:
                assert seqs == sorted(seqs)


@pytest.mark.parametrize("seed", range(20))
def test_random_history_with_late_arrivals(seed, memory):
    check_converged(*run_history(seed, memory, steps=200, pushes=True, restarts=False))


@pytest.mark.parametrize("seed", range(20))
def test_random_history_answered_in_parts(seed, backend, monkeypatch):
    """The same histories with every answer from the rows cut into parts of ~600 bytes (a few
    entries) and every context answered from its rows: several writers interleaved, late
    pushes, restarts (odd seeds). Each part applies on top of those before it, every part is
    authentic on its own, and repeating ``sync`` (a part per call) converges (a walk that cut
    where a writer's chain had no head livelocked here)."""
    monkeypatch.setattr(ledger_module, "PART_BYTES", 600)
    monkeypatch.setattr(ledger_module, "ROWS_ONLY", 0)
    check_converged(*run_history(seed, backend, steps=200, pushes=True, restarts=seed % 2 == 1))


@pytest.mark.parametrize("seed", [2, 14, 16, 19, 24])
def test_random_history_with_late_arrivals_and_restarts(seed, memory):
    """Out-of-order pushes (Yjs holds some back, then integrates them on a later update, which
    may leave the state vector unchanged) and restarts: every restart must rebuild exactly what
    was delivered before it. Seeds 14 and 24 lost an entry on restart when only the update that
    made held-back entries surface was stored; seed 16 when a held-back update was not stored."""
    check_converged(*run_history(seed, memory, steps=200, pushes=True, restarts=True))


@pytest.mark.parametrize("seed", range(3))
def test_random_history_with_restarts_rebuilds_identically(seed, backend):
    rng, ledgers, readers, authored = run_history(
        100 + seed, backend, steps=90, pushes=False, restarts=True)
    check_converged(rng, ledgers, readers, authored)
    for n, ledger in ledgers.items():
        reads = {name: ledger.get(name)[0] for name in CONTEXTS}  # (read before its store closes)
        reopened = open_ledger(backend.reopen(ledger.storage), n, f"{n}-final", verify=True)
        assert reopened.root() == ledger.root()
        assert {name: reopened.get(name)[0] for name in CONTEXTS} == reads
        assert reopened.clock.time >= ledger.clock.time


# ---- durability across reopen (SQLite) -----------------------------------------------------------


def test_sqlite_reopen_keeps_entries_clock_and_seq(tmp_path):
    a = open_ledger(MemoryStorage(), "a")
    append(a, "c1", *"123456")
    store = SqliteStore(tmp_path / "b")
    b = open_ledger(store, "b", "b-1")
    sync(a, b, "c1")
    mine = append(b, "c1", "x").entries[0]
    append(b, "c2", "y")
    assert mine.lamport == 7 and mine.seq == 1
    clock, root = b.clock.time, b.root()
    reads = {name: b.get(name)[0] for name in CONTEXTS}
    store.close()
    store = SqliteStore(tmp_path / "b")
    try:
        b2 = open_ledger(store, "b", "b-2")
        assert b2.clock.time >= clock
        assert b2.root() == root
        assert {name: b2.get(name)[0] for name in CONTEXTS} == reads
        nxt = append(b2, "c1", "z").entries[0]
        # a new open is a new writer chain: it never reuses a position of the last one
        assert nxt.seq == 1 and nxt.writer != mine.writer and nxt.origin == mine.origin
        assert nxt.lamport > clock
        sync_all([a, b2])
        assert a.root() == b2.root()
    finally:
        store.close()


def test_a_stored_record_whose_id_lies_is_refused_when_its_context_settles():
    good, other = chain_entries("a", [1], "c1")[0], chain_entries("z", [1], "c1")[0]
    liar = bytes.fromhex(other.id) + good.body
    storage = MemoryStorage()
    storage.updates["c1"] = [bundled(forged_update([liar]))]
    ledger = open_ledger(storage, "a")  # (rows without a summary: c1 settles later)
    with pytest.raises(IntegrityError, match="c1"):
        ledger.context_entries("c1")
    for _ in range(2):  # (and again at every step: it never settles to a summary)
        with pytest.raises(IntegrityError, match="c1"):
            while ledger.settle_step():
                pass
    assert ledger.settling() == 1


def test_a_read_that_fails_a_context_half_settled_leaves_the_next_step_failing_alike():
    """A context whose bad row lies past its first settle step: the step goes through, a read
    of the context then fails, and so do the steps after (never a crash of the ledger on steps
    that were over)."""
    storage = MemoryStorage()
    writer = open_ledger(storage, "a")
    append(writer, "c1", *(f"entry {i}" for i in range(300)))
    good, other = chain_entries("a", [1], "c1")[0], chain_entries("z", [1], "c1")[0]
    storage.commit([("c1", bundled(forged_update([bytes.fromhex(other.id) + good.body])))])
    ledger = open_ledger(storage, "a", "a-2")
    assert ledger.settle_step()  # (256 of the 300 entries checked)
    with pytest.raises(IntegrityError, match="c1"):
        ledger.context_entries("c1")
    with pytest.raises(IntegrityError, match="c1"):  # (its steps start again, and fail alike)
        while ledger.settle_step():
            pass
    assert ledger.settling() == 1


def test_verify_reports_entries_over_the_limits():
    storage = MemoryStorage()
    append(open_ledger(storage, "a"), "c1", b"x" * 100)
    small = Limits(max_payload=10)
    trusting = open_ledger(storage, "a", "a-2", limits=small)
    problems = trusting.verify()
    assert len(problems) == 1 and "c1" in problems[0]
    with pytest.raises(IntegrityError):
        open_ledger(storage, "a", "a-3", limits=small, verify=True)
    assert open_ledger(storage, "a", "a-4").verify() == []


# ---- refused remote updates --------------------------------------------------------------------


def test_deleting_update_is_forbidden_and_changes_nothing(backend):
    a = open_ledger(backend.new(), "a")
    b = open_ledger(backend.new(), "b")
    append(a, "c1", "1", "2", "3")
    append(b, "c1", "4")
    sync_all([a, b])
    for victim in (a, b):
        before = state_of(victim)
        update = deleting_update(victim.contexts["c1"].diff(), index=0)
        with pytest.raises(ForbiddenUpdate):
            victim.apply_remote("c1", bundled(update))
        assert state_of(victim) == before
        assert victim.contexts["c1"].item_count() == 4


def test_update_that_inserts_and_deletes_is_forbidden():
    ledger = open_ledger(MemoryStorage(), "a")
    append(ledger, "c1", "mine")
    before = state_of(ledger)
    records = [e.record for name in ("c1", "new") for e in chain_entries("z", [1, 2], name)]
    for name, chunk in (("c1", records[:2]), ("new", records[2:])):
        doc = Doc(client_id=99)
        arr = doc.get("entries", type=Array)
        arr.extend(chunk)
        del arr[0]
        with pytest.raises(ForbiddenUpdate):
            ledger.apply_remote(name, bundled(doc.get_update()))
    assert state_of(ledger) == before and "new" not in ledger.contexts


def test_update_with_a_lying_record_is_refused_and_nothing_is_stored(backend):
    ledger = open_ledger(backend.new(), "a")
    append(ledger, "c1", "mine")
    before = state_of(ledger)
    for name in ("c1", "new"):
        good, honest = chain_entries("z", [1, 2], name)
        liar = bytes.fromhex(honest.id) + chain_entries("y", [2], name)[0].body
        with pytest.raises(IntegrityError, match=honest.id):
            ledger.apply_remote(name, bundled(forged_update([good.record, liar])))
    assert state_of(ledger) == before and "new" not in ledger.contexts
    assert ledger.get("new") == ([], Cursor())


def test_malformed_updates_are_refused():
    ledger = open_ledger(MemoryStorage(), "a")
    append(ledger, "c1", "mine")
    before = state_of(ledger)
    wrong_ctx = chain_entries("z", [1], "c2")[0].record
    for name, update in (("c1", b"\x01\x02garbage"), ("c1", bundled(forged_update([wrong_ctx]))),
                         ("new", b""), ("new", bundled(b"")), ("c1", bundled(b"\x01\x02")),
                         ("c1", bundled(forged_update([b"short"])))):
        with pytest.raises((RemoteProtocolError, IntegrityError)):
            ledger.apply_remote(name, update)
    with pytest.raises(InvalidContextName):
        ledger.apply_remote("bad name", bundled(forged_update([])))
    assert state_of(ledger) == before and "new" not in ledger.contexts


# ---- compaction and verification ---------------------------------------------------------------


def test_compaction_keeps_reads_and_root(backend):
    a = open_ledger(backend.new(), "a")
    b = open_ledger(MemoryStorage(), "b")
    for i in range(5):
        append(a, "c1", f"a{i}")
        append(b, "c1", f"b{i}")
        sync(b, a, "c1")
    append(a, "c2", "other")
    assert len(a.storage.load()["c1"]) == 10
    root, reads = a.root(), {n: a.get(n)[0] for n in CONTEXTS}
    c2_blobs = a.storage.load()["c2"]
    a.compact("c1")
    assert len(a.storage.load()["c1"]) == 1
    assert a.storage.load()["c2"] == c2_blobs
    assert a.root() == root and {n: a.get(n)[0] for n in CONTEXTS} == reads
    assert a.verify() == []
    reopened = open_ledger(backend.reopen(a.storage), "a", "a-2", verify=True)
    assert reopened.root() == root and {n: reopened.get(n)[0] for n in CONTEXTS} == reads
    # Life goes on after compaction: append and replicate.
    append(reopened, "c1", "later")
    sync_all([reopened, b])
    assert reopened.root() == b.root() and len(read_ids(b, "c1")) == 11
    reopened.compact("nothing-here")
    with pytest.raises(InvalidContextName):
        reopened.compact("bad name")


def test_rows_past_a_narrow_row_column_are_read_back_after_compaction(backend):
    # (a compaction leaves one row: the index's row column is one byte wide again, so the
    # 300 commits after it widen it while their records are located in their rows)
    a = open_ledger(backend.new(), "a")
    twin = open_ledger(MemoryStorage(), "twin")
    append(a, "c1", "first")
    a.compact("c1")
    for i in range(300):
        append(a, "c1", f"a{i}")
    assert a.contexts["c1"].index.row.typecode == "H"
    sync(a, twin, "c1")
    assert a.get("c1") == twin.get("c1") and a.root() == twin.root()
    assert [e.payload for e in a.get("c1")[0]] == [b"first", *(b"a%d" % i for i in range(300))]
    assert a.verify() == []


def test_verify_is_empty_when_sound(backend):
    ledger = open_ledger(backend.new(), "a")
    assert ledger.verify() == []
    append(ledger, "c1", "1", "2")
    append(ledger, "c2", "3")
    assert ledger.verify() == []


class FlakyStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def commit(self, updates, summaries=None, heads=(), lamport=None) -> None:
        if self.fail:
            raise OSError("disk full")
        super().commit(updates, summaries, heads, lamport)


def _durable_view(ledger):
    root, reads, stored, _clock, count = state_of(ledger)
    return root, reads, stored, count


def test_a_failed_commit_rolls_the_ledger_back_to_storage():
    storage = FlakyStorage()
    a = open_ledger(storage, "a")
    append(a, "c1", "1")
    peer = open_ledger(MemoryStorage(), "b")
    remote = append(peer, "c1", "r").updates[0][1]
    before = _durable_view(a)
    storage.fail = True
    with pytest.raises(OSError):
        append(a, "c1", "lost")
    with pytest.raises(OSError):
        a.apply_remote("c1", remote)
    assert _durable_view(a) == before
    storage.fail = False
    assert [e.seq for e in append(a, "c1", "2").entries] == [2]  # the failed seq is reused
    assert len(a.apply_remote("c1", remote)) == 1  # the peer can simply resend
    assert open_ledger(storage, "a", "a-2").root() == a.root()


# ---- known bugs ----------------------------------------------------------------------------------


def _pending_scenario_before_fill():
    """b gets a's second item before z's item that it follows: Yjs holds it pending."""
    a = open_ledger(MemoryStorage(), "a")
    z = open_ledger(MemoryStorage(), "z")
    storage = MemoryStorage()
    b = open_ledger(storage, "b")
    b.apply_remote("c1", append(a, "c1", "1").updates[0][1])
    sync(a, z, "c1")
    uz = append(z, "c1", "z").updates[0][1]
    sync(z, a, "c1")
    u2 = append_after_last(a, "c1", "2")
    assert b.apply_remote("c1", u2) == []  # its origin (z's item) is missing: pending
    assert len(storage.updates["c1"]) == 2  # ... and persisted as applied
    return a, b, storage, uz


def _pending_scenario():
    a, b, storage, uz = _pending_scenario_before_fill()
    new = b.apply_remote("c1", uz)
    got = sorted((e.origin, e.seq) for e in new)
    assert got == sorted([(origin_of("a"), 2), (origin_of("z"), 1)])  # both surface
    return a, b, storage


def _unsettled_are_unsettled(ledger) -> None:
    """Every update a context keeps as unsettled (decided from the gate's clock ranges) is one
    pycrdt still holds structs of outside its state vector."""
    for name in list(ledger.contexts):
        ctx = ledger._context(name)
        state = ctx.doc.get_state()
        for update, _ in ctx._unsettled:
            assert get_update(update, state) != b"\x00\x00"


def test_pending_structs_are_tracked_by_clock_ranges_until_they_settle():
    a, b, storage, uz = _pending_scenario_before_fill()
    ctx = b._context("c1")
    assert [ends is not None for _, ends in ctx._unsettled] == [True]  # decided without pycrdt
    _unsettled_are_unsettled(b)
    b.apply_remote("c1", uz)
    assert ctx._unsettled == []


@pytest.mark.parametrize("seed", range(6))
def test_unsettled_updates_agree_with_pycrdt_in_random_histories(seed, memory):
    _, ledgers, _, _ = run_history(300 + seed, memory, steps=150, pushes=True, restarts=False)
    for ledger in ledgers.values():
        _unsettled_are_unsettled(ledger)


def test_entries_integrated_from_a_pending_update_are_durable():
    _, b, storage = _pending_scenario()
    reopened = open_ledger(storage, "b", "b-2")
    assert read_ids(reopened, "c1") == read_ids(b, "c1")


def test_own_entries_survive_reopen_after_pending_updates():
    _, b, storage = _pending_scenario()
    mine = append(b, "c1", "mine").entries[0]
    reopened = open_ledger(storage, "b", "b-2")
    assert mine.id in read_ids(reopened, "c1")
    nxt = append(reopened, "c1", "next").entries[0]
    assert (nxt.seq, nxt.origin) == (1, mine.origin) and nxt.writer != mine.writer


def test_compaction_keeps_pending_structs():
    # Doc.get_update() leaves out what yrs holds pending: a compaction while a:2 waited for z's
    # item lost a:2 from the store once z's item arrived (live 3 entries, rebuilt 2).
    _, b, storage, uz = _pending_scenario_before_fill()
    b.compact("c1")
    assert len(storage.updates["c1"]) == 1
    b.apply_remote("c1", uz)
    expected = read_ids(b, "c1")  # (b reads the rows that the next compaction replaces)
    reopened = open_ledger(storage, "b", "b-2")
    assert read_ids(reopened, "c1") == expected and len(expected) == 3
    reopened.compact("c1")  # a rebuilt ledger knows what is pending too
    assert read_ids(open_ledger(storage, "b", "b-3"), "c1") == expected
    assert open_ledger(storage, "b", "b-4").verify() == []  # (the pending entry's head kept)


def _gap_scenario(storage):
    """b receives x's third item while x's second never reached it (a same-client gap).

    x's second item and zz's item are concurrent; zz's larger Yjs client id puts its item after
    x's, so x's third item follows zz's. yrs (0.28, in pycrdt 0.14.13) would show that item in
    b's array at once although b lacks x's second one, but leave it out of b's state vector
    (and of every diff from it); b's own next append would then point at it, and no replay of
    b's store could integrate that append (found by the fuzzer: 440 of 724 acknowledged entries
    gone after a crash). With seven Yjs clients that update also reorders the bytes of b's
    encoded state vector while its content stays the same.
    """
    x = open_ledger(MemoryStorage(), "x")
    b = open_ledger(storage, "b")
    append(x, "c1", "x0")
    zs = []
    for name in ("z1", "z2", "z3", "z4", "z5"):
        z = open_ledger(MemoryStorage(), name)
        sync_all([x, *zs, z])
        append(z, "c1", name)
        zs.append(z)
    sync_all([x, *zs])
    zz = open_ledger(MemoryStorage(), "zz")
    sync(x, zz, "c1")
    assert zz.contexts["c1"].doc.client_id > x.contexts["c1"].doc.client_id
    append(x, "c1", "x1")  # never reaches b
    append(zz, "c1", "zz")
    sync(zz, x, "c1")
    gapped = append(x, "c1", "x2").updates[0][1]
    sync(zz, b, "c1")
    return x, b, gapped


def test_an_update_that_skips_an_item_of_its_client_is_dropped(backend):
    storage = backend.new()
    x, b, gapped = _gap_scenario(storage)
    before = state_of(b)
    assert b.apply_remote("c1", gapped) == []
    assert state_of(b) == before  # nothing shown, nothing stored
    sync(x, b, "c1")  # the state vector still asks for x's second and third items
    assert read_ids(b, "c1") == read_ids(x, "c1")
    reopened = open_ledger(backend.reopen(storage), "b", "b-2")
    assert read_ids(reopened, "c1") == read_ids(x, "c1")


def test_own_entry_after_a_dropped_gap_survives_reopen(backend):
    storage = backend.new()
    x, b, gapped = _gap_scenario(storage)
    b.apply_remote("c1", gapped)
    mine = append(b, "c1", "mine").entries[0]
    reopened = open_ledger(backend.reopen(storage), "b", "b-2")
    assert mine.id in read_ids(reopened, "c1")
    sync_all([x, reopened])
    assert read_ids(reopened, "c1") == read_ids(x, "c1")


def test_empty_update_does_not_change_the_root():
    a = open_ledger(MemoryStorage(), "a")
    b = open_ledger(MemoryStorage(), "b")
    append(a, "c1", "x")
    sync(a, b, "c1")
    assert a.root() == b.root()
    b.apply_remote("c2", bundled(Doc().get_update()))
    assert b.get("c2") == ([], Cursor())
    assert a.root() == b.root()


def test_failed_commit_in_a_new_context_keeps_the_root():
    storage = FlakyStorage()
    a = open_ledger(storage, "a")
    append(a, "c1", "1")
    before = _durable_view(a)
    storage.fail = True
    with pytest.raises(OSError):
        append(a, "c9", "lost")
    assert _durable_view(a) == before


# ---- memory: a dropped ledger is freed ---------------------------------------------------------
# pycrdt keeps observer callbacks in Rust, where Python's GC cannot see a cycle through them.


def _live_context_logs() -> int:
    import gc

    from p2p_ledger.core.context_log import ContextLog

    gc.collect()
    return sum(isinstance(o, ContextLog) for o in gc.get_objects())


def test_dropped_ledger_and_its_contexts_are_freed():
    import gc
    import weakref

    from p2p_ledger.core.entry import Entry

    def entries_alive() -> int:
        gc.collect()
        return sum(isinstance(o, Entry) and o.context == "freed-ctx" for o in gc.get_objects())

    ledger = open_ledger(MemoryStorage(), "a")
    append(ledger, "freed-ctx", "x", "y")
    append(ledger, "c2", "z")
    assert len(ledger.contexts["freed-ctx"]) == 2
    assert entries_alive() == 0, "a loaded context keeps records, not Entry objects"
    ctx_ref = weakref.ref(ledger.contexts["freed-ctx"])
    doc_ref = weakref.ref(ledger.contexts["freed-ctx"].doc)
    ledger_ref = weakref.ref(ledger)
    del ledger
    gc.collect()
    assert ledger_ref() is None
    assert ctx_ref() is None and doc_ref() is None and entries_alive() == 0


def test_context_logs_made_by_verify_and_rollback_are_freed():
    before = _live_context_logs()

    class FailOnce(MemoryStorage):
        fail = False

        def commit(self, updates, summaries=None, heads=(), lamport=None):
            if self.fail:
                self.fail = False
                raise OSError("disk full")
            super().commit(updates, summaries, heads, lamport)

    storage = FailOnce()
    ledger = open_ledger(storage, "a")
    append(ledger, "c1", "x")
    for _ in range(3):
        assert ledger.verify() == []
    storage.fail = True
    with pytest.raises(OSError):
        append(ledger, "c1", "y")  # rolled back: c1 is rebuilt from storage
    assert read_ids(ledger, "c1") and len(ledger.contexts["c1"]) == 1
    assert _live_context_logs() == before + 1
    del ledger
    assert _live_context_logs() == before


def test_an_append_failing_before_its_commit_leaves_our_chains_where_the_index_says(
        monkeypatch):
    """The ledger remembers each chain's tip from its last commit; an append that fails
    before its commit (here c2's insert, after c1's) may have left our entry in c1's index,
    so the next append there asks the index again, as it did before the tip was kept: no
    position of our chain is signed twice."""
    a = open_ledger(MemoryStorage(), "a")
    a.append([a.prepare("c1", "", b"1"), a.prepare("c2", "", b"1")])
    original = ContextLog.append_local

    def failing(ctx, *args, **kwargs):
        if ctx.name == "c2":
            raise RuntimeError("a bug")
        return original(ctx, *args, **kwargs)

    monkeypatch.setattr(ContextLog, "append_local", failing)
    with pytest.raises(RuntimeError):
        a.append([a.prepare("c1", "", b"lost"), a.prepare("c2", "", b"lost")])
    monkeypatch.setattr(ContextLog, "append_local", original)
    held = max(e.seq for e in a.get("c1")[0] if e.writer == a.writer("c1"))
    (entry,) = a.append([a.prepare("c1", "", b"2")]).entries
    assert entry.seq == held + 1
    assert a.forks() == []
