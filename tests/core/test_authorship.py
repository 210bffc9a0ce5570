"""The authorship rule (``core/authorship.py``): the one place that decides which entries heads
and prev links vouch for. ``ContextLog.authenticate`` and ``audit`` both use it; here it is
checked on its own: the same decision in every order of offering, and what a hostile member
can try (a head at another position, a chain of another writer, a broken signature)."""

from __future__ import annotations

import itertools
import random

import pytest

from p2p_ledger.core.authorship import Authorship, raw_writer
from p2p_ledger.core.entry import make_entry
from p2p_ledger.core.errors import ForgedEntry
from p2p_ledger.core.identity import Identity

from .helpers import HEADS, chain_entries

SEED = 20261130


def _raw(entry) -> tuple[bytes, bytes, int, bytes]:  # noqa: ANN001
    return (bytes.fromhex(entry.id), bytes.fromhex(entry.origin) + entry.chain.to_bytes(8, "big"),
            entry.seq, entry.prev)


def _decide(offers, held=None) -> list[bytes] | str:  # noqa: ANN001
    """Offer heads and entries in the given order; the ids of the heads needed, or the error."""
    rule: Authorship[bytes] = Authorship("ctx", raw_writer, held)
    for kind, item in offers:
        if kind == "head":
            rule.head(item)
        else:
            rule.entry(*_raw(item))
    try:
        return sorted(h.entry_id for h in rule.finish())
    except ForgedEntry:
        return "forged"


def test_one_head_vouches_for_its_chain_in_every_order() -> None:
    entries = chain_entries("alice", [1, 2, 3, 4])
    top = HEADS[bytes.fromhex(entries[-1].id)]
    items = [("head", top), *(("entry", e) for e in entries)]
    for order in itertools.permutations(items):
        assert _decide(order) == [top.entry_id]


def test_an_unvouched_entry_is_forged_in_every_order() -> None:
    entries = chain_entries("alice", [1, 2, 3])
    mid = HEADS[bytes.fromhex(entries[1].id)]  # vouches for 1 and 2, not 3
    items = [("head", mid), *(("entry", e) for e in entries)]
    for order in itertools.permutations(items):
        assert _decide(order) == "forged"


def test_a_head_at_another_position_or_of_another_writer_vouches_for_nothing() -> None:
    (entry,) = chain_entries("alice", [1])
    good = HEADS[bytes.fromhex(entry.id)]
    mallory = Identity.from_seed("mallory")
    shifted = Identity.from_seed("alice").sign_head("ctx", good.chain, 2, good.entry_id)
    other = mallory.sign_head("ctx", good.chain, 1, good.entry_id)
    for head in (shifted, other):
        assert _decide([("head", head), ("entry", entry)]) == "forged"
    # a chain of another writer does not vouch across writers, even naming the right prev
    (bob,) = chain_entries("bob", [1])
    assert _decide([("head", good), ("entry", entry), ("entry", bob)]) == "forged"


def test_a_pending_entry_of_another_writer_or_position_is_not_vouched_by_prev() -> None:
    """An authentic entry names ``prev`` one seq below in its own chain: naming another
    writer's entry at that seq, or its own writer's two seqs below, vouches for nothing (in
    either order of offering, so the named entry is found waiting in ``pending``)."""
    (bob,) = chain_entries("bob", [1])  # unsigned here: nothing vouches for it
    (alice1,) = chain_entries("alice", [1])
    mallory = Identity.from_seed("mallory")
    for namer, named, seq in ((mallory, bob, 2), (Identity.from_seed("alice"), alice1, 3)):
        top = make_entry("ctx", "k", b"top", {}, 9, namer.origin, 1, seq, 0,
                         bytes.fromhex(named.id))
        head = namer.sign_head("ctx", 1, seq, bytes.fromhex(top.id))
        for order in itertools.permutations([("entry", named), ("head", head), ("entry", top)]):
            assert _decide(order) == "forged", (namer.origin[:8], order)


def test_a_hostile_prev_naming_an_entry_first_does_not_hide_its_real_successor() -> None:
    """Two authentic entries name one entry as ``prev`` at two positions before it arrives:
    mallory's (a squat: at mallory's own seq 1) first, then alice's real successor. The second
    position must be remembered too (``also``), so alice's entry is still vouched for."""
    alice1, alice2 = chain_entries("alice", [1, 2])
    mallory = Identity.from_seed("mallory")
    squat = make_entry("ctx", "k", b"squat", {}, 9, mallory.origin, 1, 2, 0,
                       bytes.fromhex(alice1.id))
    squat_head = mallory.sign_head("ctx", 1, 2, bytes.fromhex(squat.id))
    top = HEADS[bytes.fromhex(alice2.id)]
    offers = [("head", squat_head), ("entry", squat), ("head", top), ("entry", alice2),
              ("entry", alice1)]
    assert _decide(offers) == sorted([squat_head.entry_id, top.entry_id])
    # while that second position waits, an unrelated entry is still vouched for by nothing
    (bob,) = chain_entries("bob", [1])
    assert _decide([*offers[:4], ("entry", bob), offers[4]]) == "forged"


def test_a_bad_signature_is_caught_only_where_it_is_needed() -> None:
    entries = chain_entries("carol", [1, 2])
    low, high = (HEADS[bytes.fromhex(e.id)] for e in entries)
    broken = type(low)(low.origin, low.chain, low.seq, low.entry_id, bytes(64))
    # the top head vouches for the whole chain: the broken one below is not needed
    assert _decide([("head", broken), ("head", high), *(("entry", e) for e in entries)]) == [
        high.entry_id]
    rule: Authorship[bytes] = Authorship("ctx", raw_writer)
    rule.head(broken)
    rule.entry(*_raw(entries[0]))
    with pytest.raises(ForgedEntry, match="not valid"):
        rule.finish()


def test_held_state_vouches_and_random_orders_agree() -> None:
    rng = random.Random(SEED)
    print("seed", SEED)
    entries = chain_entries("dave", range(1, 9))
    top = HEADS[bytes.fromhex(entries[-1].id)]
    held_id = bytes.fromhex(entries[4].id)  # the caller holds seq 6, which names seq 5

    dave = _raw(entries[0])[1]

    def held(raw: bytes, writer: bytes, seq: int) -> bool:
        return raw == held_id and writer == dave and seq == 5

    lower = [("entry", e) for e in entries[:5]]
    for _ in range(50):
        order = lower[:]
        rng.shuffle(order)
        assert _decide(order, held) == []  # held seq 6 vouches for 5, 5 for the rest
    items = [("head", top), *(("entry", e) for e in entries)]
    for _ in range(50):
        rng.shuffle(items)
        assert _decide(items) == [top.entry_id]


def test_an_entry_offered_twice_is_one_entry() -> None:
    """An update can hold one record as two Yjs items (a squat's re-insert), or a voucher that
    is also in the update: the second copy must not find its vouch used up (a fuzzed schedule,
    seed 1894488586 of base 2026, refused an honest update as forged and never converged)."""
    from p2p_ledger.core.context_log import ContextLog

    entries = chain_entries("erin", [1, 2, 3])
    top = HEADS[bytes.fromhex(entries[-1].id)]
    for twice in (entries[0], entries[1], entries[2]):
        log = ContextLog("ctx", 1)
        assert log.authenticate([*entries, twice], [top]) == [top]


def test_forged_names_the_top_unvouched_entry_of_a_chain() -> None:
    """The error names the highest seq left unvouched (the one a missing head should name),
    whatever the ids' order (here seq 1 has the largest id)."""
    entries = chain_entries("alice", [1, 2, 3])
    assert max(entries, key=lambda e: e.id).seq == 1
    rule: Authorship[bytes] = Authorship("ctx", raw_writer)
    for entry in entries:
        rule.entry(*_raw(entry))
    with pytest.raises(ForgedEntry, match=f"^entry {entries[2].id} \\(seq 3 of "
                                          f"{entries[2].writer} in ctx\\): no signature"):
        rule.finish()
