"""Edges of ``core/context_log.py`` found by its mutation runs (README "Mutation testing")."""

from __future__ import annotations

import pytest
from pycrdt import Array

from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.context_log import ANCHOR_EVERY, ContextLog, client_id_for
from p2p_ledger.core.entry import Limits, make_entry
from p2p_ledger.core.errors import IntegrityError
from p2p_ledger.core.identity import Head, Identity
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.testing import forged_update

from .helpers import HEADS, chain_entries, fork_branches_into, heads_for, open_ledger


def test_client_ids_keep_their_format_and_fit_a_js_number() -> None:
    """Golden vector: a (node incarnation, context)'s Yjs client id is in every update it
    writes; it is the top 53 bits of a SHA-256, so it survives JS numbers and uses their range."""
    assert client_id_for("a-1", "notes") == 2299785071953147
    ids = [client_id_for(f"node-{i}", "ctx") for i in range(64)]
    assert max(ids) < 2**53 and max(i.bit_length() for i in ids) == 53
    assert len(set(ids)) == len(ids) and client_id_for("node-0", "other") != ids[0]


def test_compaction_keeps_the_tip_and_an_anchor_every_anchor_every_seqs() -> None:
    """A chain of one-entry commits stores the heads of seqs ANCHOR_EVERY, 2 x ANCHOR_EVERY and
    its tip; compaction (``trim_heads``) keeps exactly those, counting the first anchor from
    seq 0 like the commits did (mutation sample: counted from 1, the first anchor was lost)."""
    storage = MemoryStorage()
    ledger = open_ledger(storage, "a")
    last = 2 * ANCHOR_EVERY + 22
    for i in range(last):
        ledger.append([ledger.prepare("c", "k", f"p{i}")])
    stored = sorted(Head.from_bytes(h).seq for h in storage.heads("c"))
    assert stored == [ANCHOR_EVERY, 2 * ANCHOR_EVERY, last]
    ledger.compact("c")
    assert sorted(Head.from_bytes(h).seq for h in storage.heads("c")) == stored
    assert open_ledger(storage, "a", "a-2").verify() == []


def test_the_proof_for_one_branch_of_a_fork_walks_up_its_own_branch() -> None:
    """Mallory signed two branches (seqs 1 and 2 each, a head on each top). Asked for seq 1 of
    the left branch with seq 2 of the right one, the right top does not vouch for the left
    seq 1: the proof brings the left top and its head (mutation sample: taken as vouched for
    by the sibling in the batch, the left seq 1 came without a proof and was refused)."""
    b = open_ledger(MemoryStorage(), "b")
    branches = fork_branches_into(b, "c1")
    (left1, left2), (_, right2) = branches
    blob = b.bundle_records("c1", [bytes.fromhex(left1.id), bytes.fromhex(right2.id)])
    assert blob is not None
    fresh = open_ledger(MemoryStorage(), "f")
    got = {e.id for e in fresh.apply_remote("c1", blob)}
    assert {left1.id, left2.id, right2.id} <= got


def test_a_hostile_entry_naming_another_writers_entry_stops_no_head_from_going() -> None:
    """An update holds mallory's seq 2 naming bob's seq 1 as prev, then bob's own seq 2: bob's
    seq 2 vouches for his seq 1 from then on, so its head goes; mallory's entry, at another
    position, vouches for nothing (mutation sample: it ended the pass, bob's seq 1 kept its
    head)."""
    e1, e2 = chain_entries("bob", [1, 2], "c1")
    mallory = Identity.from_seed("mallory")
    hostile = make_entry("c1", "k", b"m2", {}, 2, mallory.origin, 5, 2, 0, bytes.fromhex(e1.id))
    storage = MemoryStorage()
    b = open_ledger(storage, "b")
    b.apply_remote("c1", encode_bundle(heads_for([e1]), forged_update([e1.record], 4242)))
    assert [Head.from_bytes(h).entry_id.hex() for h in storage.heads("c1")] == [e1.id]
    hostile_head = mallory.sign_head("c1", 5, 2, bytes.fromhex(hostile.id))
    b.apply_remote("c1", encode_bundle((hostile_head, *heads_for([e2])),
                                       forged_update([hostile.record, e2.record], 4343)))
    held = sorted(Head.from_bytes(h).entry_id.hex() for h in storage.heads("c1"))
    assert held == sorted([hostile.id, e2.id])


def test_the_usual_update_is_indexed_from_the_observer_without_reading_the_array(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An append and a peer's update are indexed from what the Array observer reported; the
    whole Array is read only when its count disagrees with the reports (mutation sample: the
    observer dropped, or its inserts ignored, read the whole Array on every update, the same
    entries at O(n) per update)."""
    [x1, x2] = chain_entries("x", [1, 2], "ctx")
    sender, receiver = ContextLog("ctx", 1), ContextLog("ctx", 2)
    sender.heads = receiver.heads = dict(HEADS)

    def whole_array_read(_self: object) -> None:
        raise AssertionError("the whole Array was read")

    monkeypatch.setattr(Array, "__iter__", whole_array_read)
    assert [e.id for e in sender.append_local([x1, x2])[0]] == [x1.id, x2.id]
    new, _, applied, _ = receiver.receive(sender.diff())
    assert applied is not None and [e.id for e in new] == [x1.id, x2.id]


def test_a_proof_for_an_entry_nothing_vouches_for_names_it() -> None:
    """Every entry held is authentic, so its proof's path exists; if a damaged state breaks
    that, the IntegrityError names the entry and the context (mutation sample: no message)."""
    ledger = open_ledger(MemoryStorage(), "a")
    [entry] = ledger.append([ledger.prepare("c", "k", "x")]).entries
    ctx = ledger._context("c")
    ctx.heads.clear()
    with pytest.raises(IntegrityError, match=f"entry {entry.id} of c has no head and no successor"):
        ctx.proof_for_ids([bytes.fromhex(entry.id)])


def test_compaction_counts_anchors_per_writer() -> None:
    """Two chains (a reopen starts a new one) of one-entry commits in one context: compaction
    keeps each chain's own anchors (mutation sample: counted over both chains' heads together,
    the second chain's anchors at the same seqs as the first's were dropped)."""
    storage = MemoryStorage()
    last = ANCHOR_EVERY + 10
    for instance in ("a-1", "a-2"):
        ledger = open_ledger(storage, "a", instance)
        for i in range(last):
            ledger.append([ledger.prepare("c", "k", f"{instance} {i}")])

    def seqs_by_chain() -> list[list[int]]:
        chains: dict[int, list[int]] = {}
        for head in map(Head.from_bytes, storage.heads("c")):
            chains.setdefault(head.chain, []).append(head.seq)
        return sorted(sorted(seqs) for seqs in chains.values())

    assert seqs_by_chain() == [[ANCHOR_EVERY, last]] * 2
    ledger.compact("c")
    assert seqs_by_chain() == [[ANCHOR_EVERY, last]] * 2


def test_a_peers_update_is_checked_against_the_contexts_own_limits() -> None:
    """A context opened with smaller limits refuses a peer's entry over them, before the Doc
    changes (mutation sample: the receive path checked the records against the default
    limits)."""
    [entry] = chain_entries("x", [1], "ctx")
    ctx = ContextLog("ctx", 1, limits=Limits(max_payload=1))
    with pytest.raises(IntegrityError, match="payload"):
        ctx.receive(forged_update([entry.record]), heads_for([entry]))
    assert len(ctx) == 0
