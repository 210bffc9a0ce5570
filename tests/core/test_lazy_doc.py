"""A loaded context holds no pycrdt Doc until something needs one.

Loads, appends and a peer's update whose structs all integrate need none (``yjs.integrate``
reads the structs); a Yjs diff of a loaded context, an update whose structs would wait in yrs
and a compaction make one, from the stored rows. Every answer (reads, roots, state vectors,
diffs, stored rows, refusals) is the one a context holding its Doc from the start gives: a
twin ledger whose contexts all have a Doc from the start (the code before) is fed the same
operations, hostile ones included, and compared after each.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable

import pytest

from p2p_ledger.core.bundle import decode_bundle
from p2p_ledger.core.context_log import ARRAY_NAME, ContextLog
from p2p_ledger.core.errors import LedgerError
from p2p_ledger.core.identity import Identity
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.core.yjs import appended_values, decode_state_vector
from p2p_ledger.sim import byzantine
from p2p_ledger.testing import counter_ns, deleting_update

from .helpers import append, append_after_last, open_ledger, sync

CONTEXTS = ("c1", "c2")


def _doc_first(ledger: Ledger) -> Ledger:
    """``ledger`` with every context holding its Doc from the start, loads included (each
    stored row applied to it in turn): what every loaded context did before."""
    new_log = ledger._new_log

    def with_doc(name: str, lazy: bool = True) -> ContextLog:
        ctx = new_log(name, lazy=False)
        ctx.make_doc()
        return ctx

    ledger._new_log = with_doc  # type: ignore[method-assign]
    return ledger


def _docs_made(ledger: Ledger) -> int:
    return sum(ledger.contexts[name].docs_made for name in ledger.live_contexts())


def _same(lazy: Ledger, eager: Ledger) -> None:
    """Everything a peer or a reader can see of the two ledgers is the same."""
    assert lazy.root() == eager.root()
    assert lazy.storage.load() == eager.storage.load()  # the very same rows
    assert lazy.forks() == eager.forks()
    for name in CONTEXTS:
        assert lazy.context_root(name) == eager.context_root(name)
        assert decode_state_vector(lazy.state_vector(name)) == \
            decode_state_vector(eager.state_vector(name))
        assert lazy.get(name) == eager.get(name)
        assert lazy.get(name, limit=3) == eager.get(name, limit=3)
        if name in lazy.contexts:
            a, b = lazy.contexts[name], eager.contexts[name]
            assert a.item_count() == b.item_count()
            assert a.contiguous == b.contiguous and a.max_lamport == b.max_lamport
            assert a.heads == b.heads


def _answer(ledger: Ledger, name: str, state_vector: bytes | None) -> object:
    """What ``bundle_diff`` sends, as what it means: the records, heads and vouchers."""
    blob = ledger.bundle_diff(name, state_vector)
    if blob is None:
        return None
    bundle = decode_bundle(blob)
    return (sorted(appended_values(bundle.update, ARRAY_NAME)),
            sorted(head.encode() for head in bundle.heads), sorted(bundle.vouchers))


def _outcome(apply, *args):
    """The entries new here (as a set: a Doc's observer reports them in the array's order,
    integrated without one they come in the update's), or the refusal."""
    try:
        return sorted(e.id for e in apply(*args)), None
    except LedgerError as exc:
        return None, (type(exc), str(exc))


def _records_only(ledger: Ledger) -> Ledger:
    """``ledger`` with every context indexing our appends as any records
    (``EntryIndex.add_records``), not as a writer's next entries (``add_next``): what
    ``append_local`` did before."""
    new_log = ledger._new_log

    def general(name: str, lazy: bool = True) -> ContextLog:
        ctx = new_log(name, lazy=lazy)
        ctx.index.add_next = lambda records, fields: None  # type: ignore[method-assign]
        ctx.index.add_next_one = lambda record, fields: None  # type: ignore[method-assign]
        return ctx

    ledger._new_log = general  # type: ignore[method-assign]
    return ledger


def _batch_steps(ledger: Ledger) -> Ledger:
    """``ledger`` with every context inserting our one-entry appends through the steps of
    any batch (``ContextLog._insert_many``), not ``_insert_one``: what ``append_local`` did
    before."""
    new_log = ledger._new_log

    def general(name: str, lazy: bool = True) -> ContextLog:
        ctx = new_log(name, lazy=lazy)
        ctx._insert_one = lambda record, fields, heads: ctx._insert_many(  # type: ignore
            (), heads, ([record], [fields]))
        return ctx

    ledger._new_log = general  # type: ignore[method-assign]
    return ledger


@pytest.mark.parametrize("seed", range(6))
def test_a_ledger_without_docs_answers_as_one_with_them(seed: int) -> None:
    _fed_the_same(seed, _doc_first)


@pytest.mark.parametrize("seed", range(6))
def test_our_appends_as_a_writers_next_entries_answer_as_any_records(seed: int) -> None:
    """``add_next`` (our appends, one entry or many, after cold loads whose ids wait to be
    placed, after peers' entries, forks and hostile updates) leaves every context as
    ``add_records`` does: the same rows, reads, roots, state vectors and answers."""
    _fed_the_same(seed, _records_only)


@pytest.mark.parametrize("seed", range(6))
def test_our_one_entry_appends_answer_as_a_batch_of_one(seed: int) -> None:
    """``_insert_one`` (a commit's one entry in a context without a Doc, as spread appends
    are) leaves every context as the steps of any batch leave it: the same rows, heads,
    reads, roots, state vectors and answers, across reopens, peers' entries, forks and
    hostile updates."""
    _fed_the_same(seed, _batch_steps)


def _fed_the_same(seed: int, twin_of: Callable[[Ledger], Ledger]) -> None:
    """Feed a ledger and its twin (``twin_of``) the same seeded operations, reopened now
    and then (cold loads), comparing them after each."""
    print("seed", seed)
    rng = random.Random(seed)
    writers = [open_ledger(MemoryStorage(), f"w{i}") for i in range(3)]
    stores = (MemoryStorage(), MemoryStorage())
    opens = 0

    def twins() -> tuple[Ledger, Ledger]:
        nonlocal opens
        opens += 1
        budget = rng.choice([None, 1, 40_000])
        lazy, eager = (open_ledger(store, "t", instance=f"t-{opens}", now_ns=counter_ns(),
                                   memory_budget=budget) for store in stores)
        lazy.defer_commits = eager.defer_commits = opens % 2 == 0
        return lazy, twin_of(eager)

    lazy, eager = twins()
    queued: list[tuple[str, bytes]] = []  # pushes not delivered yet: delivered in any order
    attacker = Identity.from_seed("mallory")
    for step in range(160):
        op = rng.random()
        name = rng.choice(CONTEXTS)
        writer = rng.choice(writers)
        if op < 0.3:
            if name in writer.contexts and rng.random() < 0.6:
                # an item placed after the array's last item, whoever's: held pending by a
                # peer that lacks that one
                queued.append((name, append_after_last(writer, name, f"after {step}")))
            else:
                pushed = append(writer, name, *[f"{step}.{i}" for i in range(rng.randint(1, 4))])
                queued += pushed.updates
        elif op < 0.55 and queued:
            context, blob = queued.pop(rng.randrange(len(queued)))
            assert _outcome(lazy.apply_remote, context, blob) == \
                _outcome(eager.apply_remote, context, blob)
        elif op < 0.62:
            sync(writer, rng.choice(writers), name)
        elif op < 0.7:
            # (20 at once: a row a load reads as a run, its ids placed on first lookup)
            payloads = [f"mine {step:03d}.{i:02d}" for i in range(rng.choice((1, 1, 2, 20)))]
            assert [e.id for e in append(lazy, name, *payloads).entries] == \
                [e.id for e in append(eager, name, *payloads).entries]
        elif op < 0.76:
            state = lazy.state_vector(name) if name in lazy.contexts else None
            blob = writer.bundle_diff(name, state)
            if blob is not None:
                assert _outcome(lazy.apply_remote, name, blob) == \
                    _outcome(eager.apply_remote, name, blob)
        elif op < 0.82:
            if name in writer.contexts:
                state = writer.state_vector(name)
                assert _answer(lazy, name, state) == _answer(eager, name, state)
                assert _answer(lazy, name, None) == _answer(eager, name, None)
        elif op < 0.88:
            now = 10**18 + step
            hostile = [
                byzantine.forge(attacker, lazy, lazy, name, rng, now),
                byzantine.poison_lamport(attacker, lazy, name, 2**40, rng, now),
            ]
            if name in lazy.contexts:
                hostile.append(byzantine.squat(attacker, lazy, lazy, name, rng, now))
                rows = [decode_bundle(b).update for b in lazy.storage.iter_context(name)]
                if rows:
                    from pycrdt import merge_updates

                    from p2p_ledger.core.bundle import encode_bundle
                    hostile.append(encode_bundle((), deleting_update(merge_updates(*rows))))
            for blob in hostile:
                assert _outcome(lazy.apply_remote, name, blob) == \
                    _outcome(eager.apply_remote, name, blob)
        elif op < 0.96:
            lazy.flush()
            eager.flush()
            lazy, eager = twins()
        else:
            lazy.flush()
            eager.flush()
        _same(lazy, eager)
    assert lazy.entry_count() > 20


def test_a_cold_context_is_read_without_a_doc() -> None:
    storage = MemoryStorage()
    ledger = open_ledger(storage, "a")
    for i in range(5):
        append(ledger, "c1", *[f"{i}.{j}" for j in range(30)])
    root, state, page = ledger.context_root("c1"), ledger.state_vector("c1"), ledger.get("c1")
    cold = open_ledger(storage, "a", instance="a-2")
    assert cold.get("c1") == page and cold.loads == 1
    ctx = cold.contexts["c1"]
    assert not ctx.has_doc and ctx.docs_made == 0
    assert (ctx.root(), ctx.state_vector()) == (root, state)
    append(cold, "c1", "more")  # an append needs none either
    assert not ctx.has_doc
    # A Yjs diff of the loaded context makes one, once, from the rows and holds every item.
    peer = open_ledger(MemoryStorage(), "b")
    sync(cold, peer, "c1")
    assert ctx.docs_made == 0  # (a fresh peer gets the stored rows)
    append(cold, "c1", "newer")
    sync(cold, peer, "c1")
    assert ctx.has_doc and ctx.docs_made == 1
    append(cold, "c1", "newest")
    sync(cold, peer, "c1")
    assert ctx.docs_made == 1
    assert peer.get("c1")[0] == cold.get("c1")[0] and len(cold.get("c1")[0]) == 153


def test_a_catch_up_is_taken_without_a_doc() -> None:
    source = open_ledger(MemoryStorage(), "a")
    for i in range(4):
        append(source, "c1", *[f"{i}.{j}" for j in range(20)])
    fresh = open_ledger(MemoryStorage(), "b")
    fresh.part_bytes = 2000  # in parts
    while sync(source, fresh, "c1"):
        pass
    ctx = fresh.contexts["c1"]
    assert len(ctx) == 80 and ctx.docs_made == 0
    assert fresh.context_root("c1") == source.context_root("c1")
    append(source, "c1", "pushed")
    sync(source, fresh, "c1")
    assert ctx.docs_made == 0 and len(ctx) == 81


def test_a_struct_yrs_holds_pending_makes_a_doc_and_waits_as_before() -> None:
    """An item placed after one the receiver lacks waits (yrs holds it pending): only a Doc
    says what yrs makes of it, so one is made, from the stored rows and the updates not
    stored yet; once what it waits for arrives, both are there."""
    a, b, c = (open_ledger(MemoryStorage(), name) for name in "abc")
    append(a, "c1", "one")
    sync(a, b, "c1")
    first = append(c, "c1", "two").updates[0][1]
    a.apply_remote("c1", first)
    pending = append_after_last(a, "c1", "three")  # (after c's "two", which b lacks)
    b.defer_commits = True  # (the Doc is made while a row is staged, not stored)
    append(b, "c1", "b's own")
    ctx = b.contexts["c1"]
    assert not ctx.has_doc
    assert b.apply_remote("c1", pending) == []
    assert ctx.docs_made == 1 and len(ctx) == 2
    b.flush()
    # Rows whose structs wait at the end of a load: loaded again, into a Doc, row by row.
    early = open_ledger(copy.deepcopy(b.storage), "b", instance="b-early")
    assert early.get("c1") == b.get("c1") and early.state_vector("c1") == b.state_vector("c1")
    assert early.contexts["c1"].has_doc
    assert sorted(e.payload for e in early.apply_remote("c1", first)) == [b"three", b"two"]
    assert sorted(e.payload for e in b.apply_remote("c1", first)) == [b"three", b"two"]
    b.flush()
    assert ctx.docs_made == 1
    reopened = open_ledger(b.storage, "b", instance="b-2")
    assert reopened.get("c1") == b.get("c1") and len(reopened.get("c1")[0]) == 4
    assert reopened.contexts["c1"].docs_made == 0  # (its rows all integrate, in order)
