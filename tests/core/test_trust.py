"""Trust: identities, signed chains, forks and the clock, against a hostile member.

Each test reproduces one defect of the trust issue (#8) at the ledger level with a hostile peer
that knows everything on the wire (Yjs client ids and clocks, entry ids) but not the other
nodes' keys.
"""

from __future__ import annotations

import pytest
from pycrdt import Array, Doc

from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.entry import MAX_LAMPORT, NO_PREV, make_entry
from p2p_ledger.core.errors import ForgedEntry, IntegrityError, LamportOutOfRange
from p2p_ledger.core.identity import Identity, check_fork_proof
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.core.yjs import decode_state_vector
from p2p_ledger.testing import bundled, forged_update, open_pair

from .helpers import append, open_ledger, read_ids, sync, sync_all


def signed(identity: Identity, context: str, lamports, chain: int = 9, payload: bytes = b"m"):
    """A chain of entries by ``identity`` with the given Lamport times, and its signed head."""
    prev, out = NO_PREV, []
    for seq, lamport in enumerate(lamports, 1):
        entry = make_entry(context, "k", payload + b"%d" % seq, {}, lamport, identity.origin,
                           chain, seq, 0, prev)
        prev = bytes.fromhex(entry.id)
        out.append(entry)
    head = identity.sign_head(context, chain, len(out), prev)
    return out, head


def send(ledger, context, entries, heads, client_id=4242):
    return ledger.apply_remote(context, encode_bundle(
        heads, forged_update([e.record for e in entries], client_id)))


# ---- defect 1: one entry stops every write ------------------------------------------------------


def test_an_entry_beyond_max_lamport_is_refused_and_changes_nothing():
    victim = open_ledger(MemoryStorage(), "a")
    append(victim, "c1", "before")
    mallory = Identity.from_seed("mallory")
    entries, head = signed(mallory, "c1", [2**64 - 1])
    root = victim.root()
    with pytest.raises(LamportOutOfRange):
        send(victim, "c1", entries, [head])
    assert victim.root() == root and victim.clock.time == 1


def test_an_entry_at_the_limit_cannot_stop_writes():
    """The highest accepted time saturates the clock; appends go on (ordered by id among
    themselves), survive a restart and replicate."""
    storage = MemoryStorage()
    victim = open_ledger(storage, "a")
    entries, head = signed(Identity.from_seed("mallory"), "c1", [MAX_LAMPORT])
    assert len(send(victim, "c1", entries, [head])) == 1
    mine = append(victim, "c1", "still writing", "and again").entries
    assert [e.lamport for e in mine] == [MAX_LAMPORT, MAX_LAMPORT]
    reopened = open_ledger(storage, "a", "a-2")
    assert append(reopened, "c1", "after restart").entries[0].lamport == MAX_LAMPORT
    peer = open_ledger(MemoryStorage(), "b")
    sync_all([reopened, peer])
    assert peer.root() == reopened.root()
    assert read_ids(peer, "c1") == read_ids(reopened, "c1")
    assert len(read_ids(peer, "c1")) == 4


# ---- defect 4: entries bound to their author ---------------------------------------------


def test_an_entry_under_another_origin_is_refused():
    """Mallory writes an entry with origin = a's key and a's next position: no signature of a's
    key vouches for it, so it is refused, stored nowhere, and a's next append is unaffected."""
    a, b = open_ledger(MemoryStorage(), "a"), open_ledger(MemoryStorage(), "b")
    first = append(a, "c1", "real").entries[0]
    sync(a, b, "c1")
    fake = make_entry("c1", "k", b"forged", {}, 5, a.origin, first.chain, 2, 0,
                      bytes.fromhex(first.id))
    mallory = Identity.from_seed("mallory")
    wrong_key = mallory.sign_head("c1", first.chain, 2, bytes.fromhex(fake.id))
    for heads in ([], [wrong_key]):
        root = b.root()
        with pytest.raises(ForgedEntry):
            send(b, "c1", [fake], heads)
        assert b.root() == root and fake.id not in b.contexts["c1"].by_id
    assert append(a, "c1", "next").entries[0].seq == 2
    sync_all([a, b])
    assert a.root() == b.root() and fake.id not in read_ids(b, "c1")


def test_a_head_signed_for_another_context_does_not_vouch():
    b = open_ledger(MemoryStorage(), "b")
    entries, _ = signed(Identity.from_seed("m"), "c1", [1])
    elsewhere = Identity.from_seed("m").sign_head("c2", 9, 1, bytes.fromhex(entries[0].id))
    with pytest.raises(ForgedEntry):
        send(b, "c1", entries, [elsewhere])


def test_an_entry_cannot_vouch_for_another_writers_entry():
    """A member's authentic entry that names someone else's (made up) entry as its prev does
    not make that entry authentic."""
    b = open_ledger(MemoryStorage(), "b")
    victim = Identity.from_seed("victim")
    made_up = make_entry("c1", "k", b"not mine", {}, 1, victim.origin, 3, 1, 0, NO_PREV)
    mallory = Identity.from_seed("mallory")
    cover = make_entry("c1", "k", b"cover", {}, 2, mallory.origin, 3, 2, 0,
                       bytes.fromhex(made_up.id))
    head = mallory.sign_head("c1", 3, 2, bytes.fromhex(cover.id))
    with pytest.raises(ForgedEntry):
        send(b, "c1", [made_up, cover], [head])


def test_unsigned_updates_are_refused_whole():
    b = open_ledger(MemoryStorage(), "b")
    entries, _ = signed(Identity.from_seed("m"), "c1", [1, 2])
    with pytest.raises(ForgedEntry):
        b.apply_remote("c1", bundled(forged_update([e.record for e in entries])))
    assert "c1" not in b.contexts or not len(b.contexts["c1"])


def test_one_head_vouches_for_a_whole_chain():
    """Catch-up verifies one signature per writer chain, not one per entry."""
    b = open_ledger(MemoryStorage(), "b")
    entries, head = signed(Identity.from_seed("m"), "c1", range(1, 501))
    assert len(send(b, "c1", entries, [head])) == 500
    assert b.verify() == []


# ---- defect 3: a node that loses the tail of its store -------------------------------------------


def test_a_node_that_lost_its_tail_starts_a_new_chain_and_nothing_is_skipped():
    """a's store loses its last commits (restored backup); it restarts under the same key. Its
    new appends take a new writer chain, so no position is signed twice; the lost entries come
    back from b; a cursor taken before the loss, resumed anywhere, delivers everything."""
    storage = MemoryStorage()
    a, b = open_ledger(storage, "a"), open_ledger(MemoryStorage(), "b")
    for i in range(4):
        append(a, "c1", f"a{i}")
    sync_all([a, b])
    cursor = a.get("c1", limit=2)[1]
    seen = read_ids(a, "c1")[:2]
    storage.updates["c1"] = storage.updates["c1"][:2]  # the last two commits are gone
    a2 = open_ledger(storage, "a", "a-after-loss")
    assert len(a2.contexts["c1"]) == 2
    new = append(a2, "c1", "after the loss").entries[0]
    assert new.origin == a.origin and new.writer != a.writer("c1") and new.seq == 1
    sync_all([a2, b])
    assert a2.root() == b.root() and a2.forks() == [] and b.forks() == []
    for node in (a2, b):
        rest = node.get("c1", after=cursor)[0]
        assert seen + [e.id for e in rest] == read_ids(node, "c1")
        assert new.id in [e.id for e in rest]


# ---- forks: one writer signs two entries for one position ---------------------------------------


def test_an_equivocating_writer_is_a_fork_reported_with_a_checkable_proof():
    mallory = Identity.from_seed("mallory")
    left, left_head = signed(mallory, "c1", [1, 2], chain=5, payload=b"left")
    right, right_head = signed(mallory, "c1", [1, 2], chain=5, payload=b"right")
    b, c = open_ledger(MemoryStorage(), "b"), open_ledger(MemoryStorage(), "c")
    send(b, "c1", left, [left_head], client_id=4242)
    send(c, "c1", right, [right_head], client_id=4343)
    append(b, "c1", "honest b")
    append(c, "c1", "honest c")
    sync_all([b, c])
    assert b.root() == c.root()
    assert read_ids(b, "c1") == read_ids(c, "c1")  # one total order, (lamport, id)
    assert len(read_ids(b, "c1")) == 6  # both branches are signed data: both are kept
    forks = b.forks()
    assert forks == c.forks() and [f["seq"] for f in forks] == [1, 2]
    assert b.fork_log and any(left[0].id in line and right[0].id in line for line in b.fork_log)
    writer = left[0].writer
    proof = b.fork_proof("c1", writer, 1)
    assert sorted(check_fork_proof(proof)) == sorted([left[0].id, right[0].id])
    proof["branches"][1]["head"]["signature"] = "00" * 64
    with pytest.raises(IntegrityError):
        check_fork_proof(proof)


def test_a_node_holding_both_branches_of_a_fork_ships_them_to_a_newcomer():
    """Found by the fuzzer (byzantine member, equivocating to one node): b held both branches,
    and its bundle to c carried a head for only one branch's top (the proof was built per
    position), so c refused the whole context for good and the two never converged."""
    mallory = Identity.from_seed("mallory")
    left, left_head = signed(mallory, "c1", [1, 2], chain=5, payload=b"left")
    right, right_head = signed(mallory, "c1", [1, 2], chain=5, payload=b"right")
    b, c = open_ledger(MemoryStorage(), "b"), open_ledger(MemoryStorage(), "c")
    send(b, "c1", left, [left_head], client_id=4242)
    send(b, "c1", right, [right_head], client_id=4343)
    append(b, "c1", "honest b")
    assert len(b.forks()) == 2
    sync_all([b, c])
    assert b.root() == c.root() and read_ids(b, "c1") == read_ids(c, "c1")
    assert c.forks() == b.forks()


def test_reading_the_forks_commits_nothing_and_shows_only_committed_ones():
    """The runtime's status (polled by every client) lists the forks: while received updates
    wait for their group commit, that read must not commit them (it did: every poll was a
    transaction and an fsync during a catch-up), nor show a fork that is not durable yet."""
    mallory = Identity.from_seed("mallory")
    left, left_head = signed(mallory, "c1", [1, 2], chain=5, payload=b"left")
    right, right_head = signed(mallory, "c1", [1, 2], chain=5, payload=b"right")
    late, late_head = signed(mallory, "c1", [1, 2], chain=5, payload=b"late")
    storage = MemoryStorage()
    b = open_ledger(storage, "b")
    b.defer_commits = True
    send(b, "c1", left, [left_head], client_id=4242)
    send(b, "c1", right, [right_head], client_id=4343)
    b.flush()
    committed = b.forks()
    assert [f["seq"] for f in committed] == [1, 2]
    commits = storage.commits
    send(b, "c1", late, [late_head], client_id=4444)  # a third branch: staged
    assert b.has_staged()
    assert b.forks() == committed, "what is not committed is not shown"
    assert b.fork_count() == 2 and b.entry_count() == 4
    assert storage.commits == commits and b.has_staged(), "a read committed the staged rows"
    b.flush()
    assert storage.commits == commits + 1
    assert [(f["seq"], len(f["ids"])) for f in committed] == [(1, 2), (2, 2)]
    assert [(f["seq"], len(f["ids"])) for f in b.forks()] == [(1, 3), (2, 3)]


def test_a_chain_with_falling_lamport_times_reads_in_seq_order_and_never_hangs():
    """Found by the byzantine_member scenario: seq 2 sorting before seq 1 (a member may sign any
    times) made every read of the context loop forever once seq 3 sorted after seq 1."""
    b = open_ledger(MemoryStorage(), "b")
    entries, head = signed(Identity.from_seed("mallory"), "c1", [5, 3, 6])
    send(b, "c1", entries, [head])
    assert [e.seq for e in b.get("c1")[0]] == [1, 2, 3]
    first, cursor = b.get("c1", limit=1)
    assert [e.seq for e in first + b.get("c1", after=cursor)[0]] == [1, 2, 3]


def test_a_saturated_writer_is_read_whole_whatever_its_ids():
    """Found by the fuzzer (a member's MAX_LAMPORT entry saturated every clock): entries with
    equal times are ordered by id, so seq 2 could sort before seq 1, where the read's tail
    starts; the read left it out although it was deliverable, and a watcher saw it only when
    something else arrived (never, at the end of a run)."""
    mallory = Identity.from_seed("mallory")
    for attempt in range(64):
        entries, head = signed(mallory, "c1", [MAX_LAMPORT] * 2, payload=b"%d" % attempt)
        if entries[1].id < entries[0].id:
            break
    b = open_ledger(MemoryStorage(), "b")
    send(b, "c1", entries, [head])
    assert [e.seq for e in b.get("c1")[0]] == [1, 2]
    first, cursor = b.get("c1", limit=1)
    assert [e.seq for e in first + b.get("c1", after=cursor)[0]] == [1, 2]


# ---- defect 2: a squatted Yjs position hides an entry -------------------------------------------


def _squatted():
    """t appends an entry; mallory, who saw t's Yjs client id and next clock go by, gives w a
    valid entry of her own at that very position first. w's Yjs then ignores t's real entry
    (it has "seen" that struct): equal state vectors, different roots."""
    t, w = open_ledger(MemoryStorage(), "t"), open_ledger(MemoryStorage(), "w")
    append(t, "c1", "t0")
    sync(t, w, "c1")
    client = t.contexts["c1"].doc.client_id
    clock = decode_state_vector(t.contexts["c1"].state_vector())[client]
    real = append(t, "c1", "acknowledged on t").entries[0]
    mallory = Identity.from_seed("mallory")
    squat, head = signed(mallory, "c1", [9], payload=b"squat")
    doc = Doc(client_id=client)
    doc.apply_update(w.contexts["c1"].doc.get_update())
    before = doc.get_state()
    doc.get("entries", type=Array).append(squat[0].record)
    update = doc.get_update(before)
    assert decode_state_vector(doc.get_state())[client] == clock + 1  # t's very next position
    w.apply_remote("c1", encode_bundle([head], update))
    sync(t, w, "c1")
    assert real.id not in w.contexts["c1"].by_id, "the squatted position hides t's entry"
    return t, w, real


def test_a_squatted_position_cannot_stop_convergence():
    t, w, real = _squatted()
    pair = open_pair(t, w)
    for _ in range(3):
        pair.first.session.send_root()
        pair.pump()
        pair.b.session.send_root()
        pair.pump()
    assert t.root() == w.root()
    assert real.id in w.contexts["c1"].by_id
    assert read_ids(t, "c1") == read_ids(w, "c1")
    assert w.verify() == [] and t.verify() == []
    reopened = open_ledger(w.storage, "w", "w-2")  # the re-inserted entry is durable
    assert real.id in reopened.contexts["c1"].by_id


# ---- identities and fork proofs at their edges (from the mutation run) ---------------------------

def test_signed_heads_keep_their_format() -> None:
    """Golden vector of format 1 (one signature per head, before one signature per commit): a
    seed's key and a head's message are part of the format (old stores and snapshots hold such
    heads, and they are still checked); Ed25519 signs deterministically, so the signature is
    fixed too. Format 2's vector is in test_commit_signature.py."""
    import hashlib

    from p2p_ledger.core.identity import Head, head_message

    me = Identity.from_seed("vector")
    assert Identity.from_seed(b"vector").origin == me.origin  # bytes and text seeds agree
    assert me.origin == "398a52cd2e434d26a66e5e717781ee5f719a9b3c3a8b49d2ce199f76937affa1"
    message = head_message("notes", me.public, 0xBEEF, 7, bytes(range(32)))
    assert hashlib.sha256(message).hexdigest() == (
        "2da92c81237f7a51d49175cf3357a84f60b3b47b12c078ea32d0aec9de6be4f8")
    signature = bytes.fromhex(
        "0cb515bf95ab4e181ce3c3125252ad82be8af69d3c2ef280c56e105c3288f924"
        "290a16c0a3981b686781e64d9085bb0721c3da2d21d7813f6ba681b8b5cef801")
    assert me.sign(message) == signature
    head = Head(me.public, 0xBEEF, 7, bytes(range(32)), signature, None)
    head.verify("notes")
    with pytest.raises(ForgedEntry, match="^signature of .* on seq 7 of other is not valid$"):
        head.verify("other")


def _fork(chain: int) -> tuple[dict, list[str]]:
    mallory = Identity.from_seed("mallory")
    left, left_head = signed(mallory, "c1", [1], chain=chain, payload=b"left")
    right, right_head = signed(mallory, "c1", [1], chain=chain, payload=b"right")
    b = open_ledger(MemoryStorage(), "b")
    send(b, "c1", left, [left_head], client_id=4242)
    send(b, "c1", right, [right_head], client_id=4343)
    return b.fork_proof("c1", left[0].writer, 1), sorted([left[0].id, right[0].id])


def test_a_fork_proof_with_hex_letters_in_the_chain_checks() -> None:
    proof, ids = _fork(chain=0xBEEF)  # the chain travels in hex: "000000000000beef"
    assert sorted(check_fork_proof(proof)) == ids


def test_a_fork_proof_must_show_two_different_entries_down_to_the_seq() -> None:
    proof, _ = _fork(chain=5)
    same = dict(proof, branches=[proof["branches"][0], proof["branches"][0]])
    with pytest.raises(IntegrityError, match="^a fork proof needs two different entries$"):
        check_fork_proof(same)
    empty = dict(proof, branches=[dict(proof["branches"][0], records=[]),
                                  proof["branches"][1]])
    with pytest.raises(IntegrityError, match="^a branch does not reach the forked seq$"):
        check_fork_proof(empty)
