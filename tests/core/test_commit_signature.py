"""One signature per commit (identity format 2) against a hostile member.

A commit that extends chains in many contexts signs them once: each context's head carries the
signature and its path to the commit's signed root. A receiver of one context checks its head
with nothing from the others; every way to move a signature somewhere else — an edited head
list, a path for another context, a signature reused across origins — is a ForgedEntry, and
nothing is stored. Stores and snapshots of format 1 (a signature per head) still read.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from p2p_ledger.core.bundle import decode_bundle, encode_bundle
from p2p_ledger.core.context_log import ANCHOR_EVERY
from p2p_ledger.core.entry import NO_PREV, make_entry
from p2p_ledger.core.errors import ForgedEntry
from p2p_ledger.core.identity import (
    HEAD_SIZE,
    Head,
    Identity,
    check_fork_proof,
    head_leaf,
    head_message,
)
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.testing import forged_update

from .helpers import open_ledger, read_ids, sync, sync_all

CONTEXTS = ["c1", "c2", "c3", "c4", "c5"]


def spread_commit():
    """A ledger that appended one entry to each of CONTEXTS in one commit, and the commit's
    bundles by context."""
    a = open_ledger(MemoryStorage(), "a")
    done = a.append([a.prepare(name, "k", f"in {name}") for name in CONTEXTS])
    return a, dict(done.updates)


def refused(bundle: bytes, context: str) -> None:
    b = open_ledger(MemoryStorage(), "b")
    with pytest.raises(ForgedEntry):
        b.apply_remote(context, bundle)
    assert b.entry_count() == 0 and b.storage.updates == {}


def edit_head(bundle: bytes, **fields) -> bytes:
    parsed = decode_bundle(bundle)
    (head,) = parsed.heads
    values = {name: getattr(head, name)
              for name in ("origin", "chain", "seq", "entry_id", "signature", "path")}
    values.update(fields)
    return encode_bundle((Head(**values),), parsed.update, parsed.vouchers)


def test_a_commit_over_many_contexts_signs_once_and_each_context_checks_alone(monkeypatch):
    signs = []
    original = Identity.sign
    monkeypatch.setattr(Identity, "sign", lambda self, m: signs.append(m) or original(self, m))
    a, bundles = spread_commit()
    assert len(signs) == 1
    heads = [decode_bundle(bundles[name]).heads[0] for name in CONTEXTS]
    assert len({h.signature for h in heads}) == 1
    # ⌈log2 5⌉ = 3 levels; the odd fifth leaf rises unpaired twice: its path is one hash
    assert sorted(len(h.path) // 32 for h in heads) == [1, 3, 3, 3, 3]
    for name in CONTEXTS:  # a receiver of one context needs nothing from the others
        b = open_ledger(MemoryStorage(), "b")
        assert len(b.apply_remote(name, bundles[name])) == 1
        assert b.verify() == []
    b = open_ledger(MemoryStorage(), "b")
    sync_all([a, b])
    assert b.root() == a.root() and b.verify() == []


def test_an_edited_head_list_is_forged():
    """Any field the statement covers, edited, leads to another root: the signature fails."""
    _, bundles = spread_commit()
    (head,) = decode_bundle(bundles["c2"]).heads
    flipped = bytes([head.path[0] ^ 1]) + head.path[1:]
    refused(edit_head(bundles["c2"], path=flipped), "c2")
    refused(edit_head(bundles["c2"], path=head.path[32:]), "c2")  # a level dropped
    refused(edit_head(bundles["c2"], path=head.path + head.path[:32]), "c2")  # one added
    refused(edit_head(bundles["c2"], signature=bytes(64)), "c2")


def test_a_path_for_another_context_is_forged():
    _, bundles = spread_commit()
    (h1,) = decode_bundle(bundles["c1"]).heads
    (h2,) = decode_bundle(bundles["c2"]).heads
    # c2's entry with c1's path (the signature is the same: one commit)
    refused(edit_head(bundles["c2"], path=h1.path), "c2")
    # c1's whole head and update, presented as context c2's: the leaf names c1
    assert h1.root("c1") == h2.root("c2")
    assert h1.root("c2") != h1.root("c1")
    with pytest.raises(ForgedEntry):
        h1.verify("c2")


def test_a_signature_reused_for_another_entry_chain_or_seq_is_forged():
    """A member holding a genuine commit of alice's tries to make it vouch for an entry of its
    own making in alice's name."""
    a, bundles = spread_commit()
    (head,) = decode_bundle(bundles["c3"]).heads
    fake = make_entry("c3", "k", b"not alice's", {}, 1, a.origin, head.chain, head.seq, 0,
                      NO_PREV)
    update = forged_update([fake.record], 4242)
    refused(encode_bundle((Head(head.origin, head.chain, head.seq, bytes.fromhex(fake.id),
                                head.signature, head.path),), update), "c3")
    for chain, seq in ((head.chain + 1, head.seq), (head.chain, head.seq + 1)):
        fake = make_entry("c3", "k", b"x", {}, 1, a.origin, chain, seq, 0, NO_PREV
                          if seq == 1 else bytes(31) + b"\x01")
        refused(encode_bundle((Head(head.origin, chain, seq, bytes.fromhex(fake.id),
                                    head.signature, head.path),),
                              forged_update([fake.record], 4242)), "c3")


def test_a_signature_reused_across_origins_is_forged():
    """Alice's commit signature (and path) claimed for mallory's own entry, and mallory's
    commit claimed in alice's name: a signature is its origin's only."""
    _, bundles = spread_commit()
    (alice,) = decode_bundle(bundles["c4"]).heads
    mallory = Identity.from_seed("mallory")
    entry = make_entry("c4", "k", b"m", {}, 1, mallory.origin, alice.chain, 1, 0, NO_PREV)
    update = forged_update([entry.record], 4242)
    refused(encode_bundle((Head(mallory.public, alice.chain, 1, bytes.fromhex(entry.id),
                                alice.signature, alice.path),), update), "c4")
    own = mallory.sign_heads([("c4", alice.chain, 1, bytes.fromhex(entry.id)),
                              ("c9", 1, 1, bytes(32))])[0]
    in_alice = make_entry("c4", "k", b"m", {}, 1, alice.origin.hex(), alice.chain, 1, 0,
                          NO_PREV)
    refused(encode_bundle((Head(alice.origin, alice.chain, 1, bytes.fromhex(in_alice.id),
                                own.signature, own.path),),
                          forged_update([in_alice.record], 4242)), "c4")


def test_a_checked_signature_vouches_for_nothing_else():
    """Checked signatures are remembered (one verification per commit however many contexts
    it reaches); the memory is keyed by origin, root and signature, so a head checked once
    does not let an edited one through."""
    _, bundles = spread_commit()
    b = open_ledger(MemoryStorage(), "b")
    b.apply_remote("c5", bundles["c5"])  # checked and remembered
    (head,) = decode_bundle(bundles["c5"]).heads
    refused(edit_head(bundles["c5"], path=bytes(len(head.path))), "c5")


def test_commit_statements_keep_their_format():
    """Golden vector of format 2: the leaf, the root of a three-context commit and its
    (deterministic Ed25519) signature are part of the format."""
    me = Identity.from_seed("vector")
    heads = me.sign_heads([("notes", 0xBEEF, 7, bytes(range(32))), ("todo", 1, 1, bytes(32)),
                           ("log", 2, 3, b"\xff" * 32)])
    assert head_leaf("notes", 0xBEEF, 7, bytes(range(32))).hex() == (
        "0cf31af6ae3877cea8b27cc00c168e8f92d4b28ce060aaa2a9153e081c1a1203")
    assert {h.root(c) for h, c in zip(heads, ["notes", "todo", "log"], strict=True)} == {
        bytes.fromhex("f0fc1d43b2a1721bb1fbabf3064c8fe03bef6122a1754cc911552f08d4d1ac3a")}
    assert heads[0].signature.hex() == (
        "c0c71bd0f67a4f30c9579bd3f26857cb0fb4b7416182c49a1578ffb5264de05b"
        "ae34e5a9721b30d162af0ea2dc14e2cfc1a3fe63fd772b7b5b34d878c8d9cd01")
    assert [len(h.path) // 32 for h in heads] == [2, 1, 2]  # three leaves: one rises unpaired
    assert heads[0].encode()[HEAD_SIZE] == 2


@pytest.mark.parametrize(("n", "root", "encoded"), [
    (2, "83b3c3919ef1eab5d39e286a5eee9a9e793479db53fba66935a668033c8b4c18",
     "c6b3fc2c4ca7a3558571f542ce8be5408f038f41fe40c549c8f1019bfd1ea55c"),
    (7, "9c637a0330287756c3ac3a471600c9f622196735e6e793c2672ba7aba2e7c3b8",
     "c04fc9ab58e6094e4a797eff605a4e6fc7efd369f02a495b7ee5cca8b0f796b6"),
    (128, "6ce59c613f71a4d6b67cb96bf73077ec1ca995ca47e3f4aa77a76fe33ebc6a1c",
     "8092c701b303fb8684bb8a27e0000eea34f52c0131a7ec7c936a4e3b9870e40c"),
    (129, "9d0b4fa7a518b0b354163ae2286b304c5306c0dc7d577171f14e602b5fdd59b0",
     "141acc8461f452c4d9926adf419f87993eda011b3083f5a4d1ad0679d15ca1e4"),
])
def test_commit_trees_of_every_shape_keep_their_format(n, root, encoded):
    """Golden vectors of larger commits (full levels, odd nodes rising at several levels): the
    root every head's path leads to, and every head's bytes (sha256 of them all)."""
    me = Identity.from_seed("vector")
    heads = me.sign_heads([(f"c{i}", i, i + 1, hashlib.sha256(b"%d" % i).digest())
                           for i in range(n)])
    assert {h.root(f"c{i}").hex() for i, h in enumerate(heads)} == {root}
    assert hashlib.sha256(b"".join(h.encode() for h in heads)).hexdigest() == encoded
    assert heads == [Head(*(getattr(h, f) for f in ("origin", "chain", "seq", "entry_id",
                                                    "signature", "path"))) for h in heads]
    for h, i in zip(heads, range(n), strict=True):
        h.verify(f"c{i}")


def test_a_commit_signs_each_chain_once():
    me = Identity.from_seed("vector")
    with pytest.raises(ValueError, match="once"):
        me.sign_heads([("c", 1, 1, bytes(32)), ("c", 1, 1, bytes(32))])
    with pytest.raises(ValueError, match="at least one"):
        me.sign_heads([])


def test_a_fork_across_contexts_is_proven_with_paths():
    """Mallory equivocates in c1 inside commits that also extend c2: both branches' heads
    carry paths, and the proof checks with nothing else."""
    mallory = Identity.from_seed("mallory")
    b = open_ledger(MemoryStorage(), "b")
    ids = []
    for side in (b"left", b"right"):
        entry = make_entry("c1", "k", side, {}, 1, mallory.origin, 7, 1, 0, NO_PREV)
        other = make_entry("c2", "k", side, {}, 1, mallory.origin, 8, 1, 0, NO_PREV)
        h1, h2 = mallory.sign_heads([("c1", 7, 1, bytes.fromhex(entry.id)),
                                     ("c2", 8, 1, bytes.fromhex(other.id))])
        assert h1.path and h1.signature == h2.signature
        client = 4242 if side == b"left" else 4343
        b.apply_remote("c1", encode_bundle((h1,), forged_update([entry.record], client)))
        b.apply_remote("c2", encode_bundle((h2,), forged_update([other.record], client)))
        ids.append(entry.id)
    proof = b.fork_proof("c1", f"{mallory.origin}.{7:016x}", 1)
    assert sorted(check_fork_proof(proof)) == sorted(ids)
    assert all(branch["head"]["path"] for branch in proof["branches"])
    edited = dict(proof, context="c2")
    with pytest.raises(ForgedEntry):  # the leaves name c1
        check_fork_proof(edited)


def _format_1(ledger, context: str, blobs: list[bytes]) -> list[bytes]:
    """The bundles a context's commits pushed, rewritten as a store of format 1 wrote them:
    bundles of version 1 whose heads are each signed alone (``head_message``)."""
    rows = []
    identity = ledger.identity
    for blob in blobs:
        bundle = decode_bundle(blob)
        heads = b"".join(
            Head(h.origin, h.chain, h.seq, h.entry_id, identity.sign(head_message(
                context, h.origin, h.chain, h.seq, h.entry_id)), None).encode()[:HEAD_SIZE]
            for h in bundle.heads)
        rows.append(b"P2PB\x01" + struct.pack(">I", len(bundle.heads)) + heads
                    + struct.pack(">I", 0) + bundle.update)
    return rows


def test_a_store_of_format_1_still_reads_verifies_and_serves():
    a = open_ledger(MemoryStorage(), "a")
    pushed = [a.append([a.prepare("c1", "k", f"{i}")]).updates[0][1] for i in range(3)]
    old = MemoryStorage()
    old.updates["c1"] = _format_1(a, "c1", pushed)  # no summaries: the open recomputes them
    reopened = open_ledger(old, "a", "a-2")
    assert read_ids(reopened, "c1") == read_ids(a, "c1")
    assert reopened.verify() == []
    reopened.append([reopened.prepare("c1", "k", "new")])  # a new chain, signed in format 2
    c = open_ledger(MemoryStorage(), "c")
    sync(reopened, c, "c1")  # format-1 heads travel in format-2 bundles (depth 0xFF)
    assert c.root() == reopened.root() and c.verify() == []
    rows = old.updates["c1"]
    forged = bytearray(rows[2])
    forged[9 + HEAD_SIZE - 1] ^= 1  # the old chain's top head (the one it needs): signature
    broken = MemoryStorage()
    broken.updates["c1"] = [*rows[:2], bytes(forged), *rows[3:]]
    broken.stored_heads = old.stored_heads  # (the new chain's head, stored apart)
    assert any("not valid" in p for p in open_ledger(broken, "a", "a-3").verify())


def test_only_the_heads_still_needed_are_stored():
    """Ten spread commits each sign a head (with its path) for c1; its rows carry none, and
    only the chain tip's head stays stored (each commit deletes the head its first entry
    vouches for); compacted, c1 keeps that head, and everything still reads, verifies and
    syncs."""
    a = open_ledger(MemoryStorage(), "a")
    for i in range(10):
        a.append([a.prepare(name, "k", f"{name} {i}") for name in CONTEXTS])
    before = read_ids(a, "c1")
    assert all(decode_bundle(row).heads == () for row in a.storage.updates["c1"])
    (head,) = map(Head.from_bytes, a.storage.heads("c1"))
    assert head.seq == 10 and len(head.path)
    assert a.verify() == [] and open_ledger(a.storage, "a", "a-1").verify() == []
    a.compact("c1")
    (row,) = a.storage.updates["c1"]
    assert decode_bundle(row).heads == () and a.storage.heads("c1") == [head.encode()]
    reopened = open_ledger(a.storage, "a", "a-2")
    assert read_ids(reopened, "c1") == before and reopened.verify() == []
    c = open_ledger(MemoryStorage(), "c")
    sync(reopened, c, "c1")
    assert c.context_root("c1") == a.context_root("c1") and c.verify() == []
    assert a.bundle_diff("c1", None) == reopened.bundle_diff("c1", None)  # loaded or not


def test_anchors_bound_the_records_a_proof_walks_before_and_after_a_reload():
    """A chain of one-entry commits keeps a head every ANCHOR_EVERY seqs (or a few more), the
    same after a reload (the anchor is found again among the stored heads): the proof for an
    entry deep in the chain (a WANT's answer) walks to the nearest one, not to the tip."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    for i in range(3 * ANCHOR_EVERY):
        a.append([a.prepare("c1", "k", f"{i}")])
    a = open_ledger(storage, "a", "a-1")  # a new open: a new chain, whose context is...
    for i in range(2 * ANCHOR_EVERY):
        a.append([a.prepare("c1", "k", f"more {i}")])
        a.drop_memory()  # ... reloaded before every commit, as a load spread wide does
    seqs = {}
    for head in map(Head.from_bytes, storage.heads("c1")):
        seqs.setdefault(head.writer, []).append(head.seq)
    for chain in seqs.values():
        ordered = sorted(chain)
        gaps = [high - low for low, high in zip([0, *ordered[:-1]], ordered, strict=True)]
        assert max(gaps) <= 2 * ANCHOR_EVERY and len(chain) >= 2, chain
    assert a.verify() == []
    deep = a.get("c1", limit=5)[0][-1]  # seq 5 of the first chain
    blob = a.bundle_records("c1", [bytes.fromhex(deep.id)])
    assert blob is not None
    bundle = decode_bundle(blob)
    assert len(bundle.vouchers) < 2 * ANCHOR_EVERY and len(bundle.heads) == 1
    fresh = open_ledger(MemoryStorage(), "f")
    assert deep.id in {e.id for e in fresh.apply_remote("c1", blob)}
