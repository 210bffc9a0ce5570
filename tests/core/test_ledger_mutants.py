"""Ledger behaviour that the mutation run of ledger.py found untested (README "Mutation
testing"): every read of a context holding staged rows commits them first, a refused or empty
snapshot load leaves no trace, a loaded snapshot keeps the signatures that vouch for it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pycrdt import Doc, Text

from p2p_ledger.core.bundle import decode_bundle, encode_bundle
from p2p_ledger.core.entry import Limits
from p2p_ledger.core.errors import (
    AlreadyExists,
    ForgedEntry,
    IntegrityError,
    RemoteProtocolError,
)
from p2p_ledger.core.ledger import EMPTY_STATE_VECTOR, Ledger
from p2p_ledger.core.merkle import MerkleTree
from p2p_ledger.core.snapshot import encode_snapshot
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.core.yjs import appended_values
from p2p_ledger.testing import forged_update

from .helpers import append, chain_entries, fork_into, open_ledger, read_ids, sync

STAGED = "staged"


def _staged_ledger() -> tuple[Ledger, Ledger, MemoryStorage]:
    """``a`` (defer_commits) holding rows received from ``peer`` for STAGED, not committed."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    a.defer_commits = True
    peer = open_ledger(MemoryStorage(), "peer")
    append(peer, STAGED, "one", "two")
    assert len(a.apply_remote(STAGED, peer.bundle_diff(STAGED, None))) == 2
    assert a.has_staged() and STAGED not in storage.contexts()
    return a, peer, storage


READS: dict[str, Callable[[Ledger, Ledger], object]] = {
    "get": lambda a, peer: a.get(STAGED),
    "contexts[name]": lambda a, peer: a.contexts[STAGED],
    "context_root": lambda a, peer: a.context_root(STAGED),
    "state_vector": lambda a, peer: a.state_vector(STAGED),
    "bundle_diff": lambda a, peer: a.bundle_diff(STAGED, None),
    "bundle_records": lambda a, peer: a.bundle_records(
        STAGED, [bytes.fromhex(e.id) for e in peer.get(STAGED)[0]]),
    "snapshot": lambda a, peer: a.snapshot(STAGED),
    "compact": lambda a, peer: a.compact(STAGED),
    "verify_context": lambda a, peer: a.verify_context(STAGED),
    "fork_proof": lambda a, peer: pytest.raises(LookupError, a.fork_proof, STAGED, "w", 1),
    "drop_memory": lambda a, peer: a.drop_memory(),
}


@pytest.mark.parametrize("read", READS, ids=list(READS))
def test_every_read_of_a_context_with_staged_rows_commits_them_first(read):
    """What is read or shipped is durable: the read commits the staged rows before answering."""
    a, peer, storage = _staged_ledger()
    READS[read](a, peer)
    assert not a.has_staged()
    assert STAGED in storage.contexts()
    assert a.context_entries(STAGED) == 2 and a.root() == peer.root()


def test_compact_of_a_context_with_staged_rows_stores_one_state():
    a, peer, storage = _staged_ledger()
    a.compact(STAGED)
    a.flush()
    assert len(list(storage.iter_context(STAGED))) == 1, "the staged rows went into the state"
    assert read_ids(open_ledger(storage, "a", "a-2"), STAGED) == read_ids(peer, STAGED)


def test_load_snapshot_with_fail_if_exists_counts_staged_entries():
    a, peer, _ = _staged_ledger()
    with pytest.raises(AlreadyExists, match=f"context {STAGED} already holds 2 entries"):
        a.load_snapshot(peer.snapshot(STAGED), fail_if_exists=True)


def test_a_refused_or_empty_snapshot_load_leaves_no_context():
    src = open_ledger(MemoryStorage(), "src")
    forged = open_ledger(MemoryStorage(), "forger")
    forged_entries = chain_entries("someone-else", [1, 2], "c1")
    with pytest.raises(ForgedEntry):
        forged.load_snapshot(_snapshot_of(forged_entries))
    assert forged.context_names() == [] and forged.live_contexts() == []
    empty = open_ledger(MemoryStorage(), "empty")
    assert empty.load_snapshot(src.snapshot("nothing")) == ("nothing", 0)
    assert empty.context_names() == [] and empty.live_contexts() == []


def _snapshot_of(entries) -> bytes:
    tree = MerkleTree()
    for e in entries:
        tree.set(bytes.fromhex(e.id))
    return encode_snapshot("c1", tree.root(), entries)


def test_a_loaded_snapshot_keeps_its_signatures_and_tells_the_listeners():
    src = open_ledger(MemoryStorage(), "src")
    append(src, "c1", "x", "y", "z")
    storage = MemoryStorage()
    dst = open_ledger(storage, "dst")
    heard: list[tuple[str, list[str]]] = []
    dst.listeners.append(lambda context, entries: heard.append((context, [e.id for e in entries])))
    assert dst.load_snapshot(src.snapshot("c1")) == ("c1", 3)
    assert heard == [("c1", read_ids(src, "c1"))]
    # The heads that vouch for the entries were stored with them: a restart verifies them, and
    # a third node takes them from us.
    assert open_ledger(storage, "dst", "dst-2").verify() == []
    third = open_ledger(MemoryStorage(), "third")
    assert len(sync(dst, third, "c1")) == 3


def test_an_unknown_context_reads_as_empty_without_being_created():
    a = open_ledger(MemoryStorage(), "a")
    assert a.state_vector("unknown") == EMPTY_STATE_VECTOR
    assert a.context_root("unknown") == MerkleTree().root()
    assert a.context_names() == [] and a.live_contexts() == []


def test_a_reloaded_context_appends_as_the_same_yjs_client():
    """Eviction is invisible: a context reloaded from storage keeps this open's Yjs client
    (``client_id_for(instance, context)``), so its next updates are the ones it would have
    written had it stayed loaded (the simulator's runs stay reproducible)."""
    kept = open_ledger(MemoryStorage(), "a", "a-1")
    evicting = open_ledger(MemoryStorage(), "a", "a-1", memory_budget=1)
    for n in range(3):
        for name in ("one", "two"):  # each append to one evicts the other
            updates = [append(ledger, name, f"{name}{n}").updates for ledger in (kept, evicting)]
            assert updates[0] == updates[1]
    assert evicting.loads >= 4


def test_forks_lists_every_context_s_forks_and_fork_proof_refuses_by_name():
    a = open_ledger(MemoryStorage(), "a")
    writer = fork_into(a, "c1")[0].writer
    fork_into(a, "c2")
    append(a, "c3", "no fork here")
    assert [(f["context"], f["writer"], f["seq"]) for f in a.forks()] == [
        ("c1", writer, 1), ("c2", writer, 1)]
    assert a.fork_proof("c2", writer, 1)
    for context, seq in (("c3", 1), ("c1", 2), ("unknown", 1)):
        with pytest.raises(LookupError, match=f"^no fork of {writer} at seq {seq} in {context}$"):
            a.fork_proof(context, writer, seq)


def test_drop_memory_unloads_everything_and_reads_reload_it():
    a = open_ledger(MemoryStorage(), "a")
    append(a, "c1", "x")
    append(a, "c2", "y")
    before = read_ids(a, "c1") + read_ids(a, "c2")
    a.drop_memory()
    assert a.live_contexts() == []
    assert read_ids(a, "c1") + read_ids(a, "c2") == before


def test_verify_reports_progress_per_context_and_every_context_s_problems():
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    append(a, "c1", "x", "y")
    append(a, "c2", "z")
    append(a, "c3", "w")
    for name in ("c1", "c3"):  # an entry no signature vouches for, stored behind its back
        [entry] = chain_entries("z", [1], name)
        storage.updates[name].append(encode_bundle((), forged_update([entry.record])))
    calls: list[tuple[int, int, int]] = []
    problems = a.verify(lambda *args: calls.append(args))
    assert [p.split(":")[0] for p in problems] == ["context c1", "context c3"]
    assert calls == [(1, 3, 0), (2, 3, 1), (3, 3, 1)], "a broken context counts no entries"


def test_verify_context_names_a_stale_summary_and_a_stale_loaded_context():
    """Another open appended behind this one's back: what this ledger believes (its summary,
    its loaded context) no longer matches the stored rows, and both are named."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    append(a, "c1", "x")
    append(open_ledger(storage, "a", "a-2"), "c1", "y")
    fresh = open_ledger(storage, "a", "a-3")
    stored_root = fresh.context_root("c1")
    entries, problems = a.verify_context("c1")
    assert entries == 2
    assert problems == [
        f"context c1: its stored summary (1 entries) does not match its rows (2 entries, root "
        f"{stored_root.hex()[:16]})",
        f"context c1: root {a.context_root('c1').hex()} in memory does not match the stored "
        f"entries",
    ]
    assert fresh.verify_context("c1") == (2, [])


def test_bundle_diff_from_summaries_sends_what_a_peer_lacks_of_a_one_struct_client():
    """Decided without loading the context: a peer whose state vector lacks one of our Yjs
    clients lacks its structs, even when that client wrote only one."""
    a, b = open_ledger(MemoryStorage(), "a"), open_ledger(MemoryStorage(), "b")
    append(a, "c1", "only one")
    append(b, "c1", "b's own")
    a.drop_memory()
    bundle = a.bundle_diff("c1", b.state_vector("c1"))
    assert bundle is not None and a.live_contexts() == ["c1"]
    assert [e.id for e in b.apply_remote("c1", bundle)] == read_ids(a, "c1")
    a.drop_memory()  # the summary's answer names the context too
    with pytest.raises(RemoteProtocolError, match="^bad state vector for c1: "):
        a.bundle_diff("c1", b"\xff")
    assert a.live_contexts() == []


def test_bundle_diff_ships_only_what_the_peer_lacks():
    a, b = open_ledger(MemoryStorage(), "a"), open_ledger(MemoryStorage(), "b")
    append(a, "c1", "one", "two")
    sync(a, b, "c1")
    append(a, "c1", "three")
    bundle = a.bundle_diff("c1", b.state_vector("c1"))
    assert bundle is not None
    assert appended_values(decode_bundle(bundle).update) == [a.get("c1")[0][2].record]


def test_a_duplicate_or_refused_update_keeps_the_staged_rows_of_its_context():
    a, peer, storage = _staged_ledger()
    again = peer.bundle_diff(STAGED, None)
    assert a.apply_remote(STAGED, again) == []  # nothing new: no rows
    with pytest.raises(ForgedEntry):
        a.apply_remote(STAGED, encode_bundle((), forged_update(
            [e.record for e in chain_entries("z", [1], STAGED)])))
    a.flush()
    assert read_ids(a, STAGED) == read_ids(peer, STAGED)
    assert read_ids(open_ledger(storage, "a", "a-2"), STAGED) == read_ids(peer, STAGED)


def test_verify_checks_a_context_whose_rows_are_gone():
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    append(a, "c1", "x")
    append(a, "c2", "y")
    del storage.updates["c1"]  # lost behind the ledger's back; its summary says 1 entry
    problems = a.verify()
    assert [p.split(":")[0] for p in problems] == ["context c1"] * 2  # (and the loaded one)
    assert problems[0].startswith("context c1: its stored summary (1 entries) does not match "
                                  "its rows (0 entries")


def test_a_load_re_hashes_ids_but_leaves_the_full_checks_to_verify():
    """Limits apply to what is appended or received: a ledger opened with smaller ones still
    loads and reads what it stored (``verify`` reports such entries)."""
    storage = MemoryStorage()
    append(open_ledger(storage, "a"), "c1", "twelve bytes")
    small = open_ledger(storage, "a", "a-2", limits=Limits(max_payload=4))
    assert [e.payload for e in small.get("c1")[0]] == [b"twelve bytes"]
    assert len(small.verify()) == 1


def test_prepare_defaults_to_an_empty_key_payload_and_meta():
    a = open_ledger(MemoryStorage(), "a")
    request = a.prepare("c1")
    assert (request.key, request.payload, dict(request.meta)) == ("", b"", {})
    (entry,) = a.append([request]).entries
    assert (entry.key, entry.payload) == ("", b"")


def test_a_fresh_peer_gets_both_stored_rows_of_a_two_commit_context():
    """``bundle_diff`` from stored rows: only a single row goes as it is; two are merged."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    append(a, "big", b"x" * 100)
    append(a, "big", b"y" * 100)
    assert len(storage.updates["big"]) == 2
    fresh = open_ledger(MemoryStorage(), "fresh")
    assert len(fresh.apply_remote("big", a.bundle_diff("big", None))) == 2
    assert fresh.context_root("big") == a.context_root("big")


def test_stored_rows_the_squash_cannot_read_are_the_stores_damage():
    """A fresh peer's answer is built from our rows; a row that no longer passes the gate (here
    one holding a Text item) is an IntegrityError of ours, never blamed on the peer."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    append(a, "c1", "one")
    append(a, "c1", "two")
    doc = Doc()
    doc.get("entries", type=Text).insert(0, "not bytes")
    storage.updates["c1"][1] = encode_bundle([], doc.get_update())
    with pytest.raises(IntegrityError, match="^context c1: item .* forbidden content"):
        open_ledger(storage, "a", "a-2").bundle_diff("c1", None)


def test_last_update_took_says_whether_the_doc_took_anything():
    """What the protocol reads to decide whether a push is worth forwarding."""
    a, b = open_ledger(MemoryStorage(), "a"), open_ledger(MemoryStorage(), "b")
    bundle = append(a, "c1", "one").updates[0][1]
    assert len(b.apply_remote("c1", bundle)) == 1 and b.last_update_took
    assert b.apply_remote("c1", bundle) == [] and not b.last_update_took


def test_a_fork_is_logged_once_with_both_ids():
    a = open_ledger(MemoryStorage(), "a")
    left, right = fork_into(a, "c1")
    [fork] = a.forks()
    assert sorted(fork["ids"]) == sorted([left.id, right.id])
    assert a.fork_log == [f"fork in c1: writer {left.writer} signed {' and '.join(fork['ids'])}"
                          f" for seq 1"]


def test_a_seed_string_is_the_label_unless_one_is_given():
    assert Ledger.open(MemoryStorage(), "alice", "alice-1").node_id == "alice"
    assert Ledger.open(MemoryStorage(), "alice", "alice-1", label="al").node_id == "al"


def test_open_reads_no_rows_when_the_summaries_are_stored(monkeypatch):
    storage = MemoryStorage()
    append(open_ledger(storage, "a"), "c1", "x")

    def refuse(context):
        raise AssertionError(f"open read the rows of {context}")

    monkeypatch.setattr(storage, "iter_context", refuse)
    assert open_ledger(storage, "a", "a-2").context_entries("c1") == 1
