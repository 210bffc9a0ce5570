"""Edges of ``core/index.py`` found by its mutation sample (README "Mutation testing")."""

from __future__ import annotations

import hashlib

import pytest

from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.entry import NO_PREV, make_entry
from p2p_ledger.core.errors import ForgedEntry
from p2p_ledger.core.identity import Identity
from p2p_ledger.core.index import _FAR, EntryIndex
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.testing import forged_update

from .helpers import HEADS, chain_entries, fork_branches_into, heads_for, open_ledger


def test_an_entry_arriving_after_its_successor_is_vouched_for_by_it() -> None:
    """Seq 2 arrives first with its head (found by id, or from another Yjs client); seq 1 comes
    later with no head: the held seq 2 names it as prev, so it is authentic (mutation sample:
    ``vouched_by_held`` answering False there refused it as forged)."""
    e1, e2 = chain_entries("w", [1, 2], "c1")
    b = open_ledger(MemoryStorage(), "b")
    head = HEADS[bytes.fromhex(e2.id)]
    assert [e.id for e in b.apply_remote("c1", encode_bundle(
        (head,), forged_update([e2.record], 4242)))] == [e2.id]
    assert [e.id for e in b.apply_remote("c1", encode_bundle(
        (), forged_update([e1.record], 4343)))] == [e1.id]
    assert [e.seq for e in b.get("c1")[0]] == [1, 2]


def test_the_run_a_read_delivers_up_to_reaches_a_far_seq_once_the_gap_fills() -> None:
    """A seq more than ``_FAR`` beyond its writer's array is kept apart (a hostile seq of 2^60
    costs one dict item); once every seq below it is held, the contiguous run reaches it and
    goes on past it (mutation sample: the run looked one seq too far there and stopped)."""
    far = _FAR + 2
    writer = bytes(range(40))
    index = EntryIndex("ctx")

    def add(seqs: list[int]) -> None:
        # (records as long as real ones: the index reads their key field)
        records = [hashlib.sha256(b"%d" % s).digest() + bytes(64) for s in seqs]
        index.add_records(records, [(r[:32], s, s, bytes(32), writer)
                                    for r, s in zip(records, seqs, strict=True)])

    add([1, far])
    name = index.writers[0]
    assert index.contiguous[name] == 1 and index.max_seq(name) == far
    add(list(range(2, far)))
    assert index.contiguous[name] == far
    add([far + 1])
    assert index.contiguous[name] == far + 1


def test_entries_at_compare_as_the_list_of_their_entries() -> None:
    """``EntriesAt`` (a receive's new entries, decoded when read) equals a sequence of the same
    entries and nothing else, and shows them (mutation sample: equal to any sequence; a repr
    that no test made)."""
    e1, e2 = chain_entries("w", [1, 2], "c1")
    b = open_ledger(MemoryStorage(), "b")
    new = b.apply_remote("c1", encode_bundle(heads_for([e2]), forged_update(
        [e1.record, e2.record], 4242)))
    assert new == [e1, e2] and new == (e1, e2) and new != [e1] and new != [] and new != 5
    assert repr(new) == f"EntriesAt({[e1, e2]!r})"


def test_a_forked_position_above_vouches_only_for_the_entries_it_names() -> None:
    """Mallory forked seqs 1 and 2 (a head on each branch's top); a third seq 1 that no head
    names is vouched for by neither seq 2, so it is forged (mutation sample: ``!=`` in the
    forked siblings' check let any sibling naming something else vouch for it)."""
    mallory = Identity.from_seed("mallory")
    b = open_ledger(MemoryStorage(), "b")
    fork_branches_into(b, "c1")
    third = make_entry("c1", "k", b"third", {}, 1, mallory.origin, 5, 1, 0, NO_PREV)
    with pytest.raises(ForgedEntry):
        b.apply_remote("c1", encode_bundle((), forged_update([third.record], 4444)))
