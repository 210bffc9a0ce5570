"""Edges of ``core/index.py`` found by its mutation sample (README "Mutation testing")."""

from __future__ import annotations

from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.testing import forged_update

from .helpers import HEADS, chain_entries, open_ledger


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
