"""ContextLog: the pycrdt doc of one context, its index, contiguity and Merkle root."""

from __future__ import annotations

from collections import UserDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array

from p2p_ledger.core import context_log
from p2p_ledger.core.context_log import ARRAY_NAME, ContextLog, client_id_for
from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import Limits
from p2p_ledger.core.errors import (
    ForbiddenUpdate,
    IntegrityError,
    LedgerError,
    RemoteProtocolError,
)
from p2p_ledger.core.yjs import decode_state_vector, encode_state_vector
from p2p_ledger.testing import forged_update

from .helpers import HEADS, chain_entries, ids, writer_of

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None)


def entries_of(origin: str, seqs, context: str = "ctx", lamport0: int = 0, key: str = "k"):
    return chain_entries(origin, list(seqs), context, lamport0, key)


A, B = writer_of("a"), writer_of("b")


class _EveryHead(UserDict):  # type: ignore[type-arg]
    """``HEADS`` itself (entries made later are covered too), never dropped from."""

    def __init__(self) -> None:
        super().__init__()
        self.data = HEADS

    def __delitem__(self, key: bytes) -> None:
        pass


def log(client_id: int = 1, name: str = "ctx", **kw) -> ContextLog:
    """A context that already holds a head for every test entry (signatures are tested in
    test_trust.py; here the Doc, index and tree)."""
    ctx = ContextLog(name, client_id, **kw)
    ctx.heads = _EveryHead()  # type: ignore[assignment]
    return ctx


def test_client_id_for():
    a = client_id_for("inst", "ctx")
    assert a == client_id_for("inst", "ctx")
    assert 0 <= a < 2**53
    assert len({a, client_id_for("inst2", "ctx"), client_id_for("inst", "ctx2")}) == 3
    # the separator keeps ("ab", "c") and ("a", "bc") apart
    assert client_id_for("ab", "c") != client_id_for("a", "bc")


def test_append_local_indexes_and_replicates():
    source = log(1)
    batch = entries_of("a", range(1, 251))  # more than one transaction chunk
    indexed, update = source.append_local(batch)
    assert ids(indexed) == ids(batch)
    assert len(source) == 250 and source.max_seq(A) == 250 and source.max_seq(B) == 0
    assert source.max_lamport == 250
    replica = log(2)
    assert ids(replica.apply_remote(update)[0]) == ids(batch)
    assert replica.root() == source.root() and replica.root() != log(3).root()
    assert ids(replica.get()[0]) == ids(source.get()[0]) == ids(batch)
    assert replica.apply_remote(update) == ([], None)  # nothing new: nothing to persist
    assert replica.apply_remote(source.diff()) == ([], None)
    assert len(replica) == 250


def test_a_doc_made_late_gets_our_items_a_piece_at_a_time(monkeypatch):
    """Appends need no Doc; the one made later (here for a diff) is given them in pieces of
    FLUSH_CHUNK, and holds what pycrdt's own inserts would: every record, in order, with our
    client's clock counting them; the next append continues from there."""
    monkeypatch.setattr(context_log, "FLUSH_CHUNK", 3)
    source = log(1)
    for seqs in ([1, 2], [3, 4, 5, 6], [7]):
        source.append_local(entries_of("a", seqs))
    assert not source.has_doc and source.state_vector() == encode_state_vector({1: 7})
    full = source.diff()
    assert [bytes(v) for v in source.doc.get(ARRAY_NAME, type=Array)] == \
        [e.record for e in entries_of("a", range(1, 8))]
    assert decode_state_vector(source.doc.get_state()) == {1: 7}
    _, update = source.append_local(entries_of("a", [8]))
    replica = log(2)
    replica.apply_remote(full)
    assert [e.seq for e in replica.apply_remote(update)[0]] == [8]  # no gap at the seam
    assert replica.root() == source.root() and source.state_vector() == replica.state_vector()


def test_diff_sends_only_what_is_missing():
    source = log(1)
    source.append_local(entries_of("a", [1, 2]))
    replica = log(2)
    replica.apply_remote(source.diff())
    source.append_local(entries_of("a", [3]))
    delta = source.diff(replica.state_vector())
    assert len(delta) < len(source.diff())
    assert [e.seq for e in replica.apply_remote(delta)[0]] == [3]
    assert source.diff(replica.state_vector()) == source.diff(source.state_vector())


@SETTINGS
@given(garbage=st.binary(min_size=1, max_size=40))
def test_bad_state_vectors_raise_remote_protocol_error_only(garbage):
    ctx = log(1)
    (entry,), _ = ctx.append_local(entries_of("a", [1]))
    root, state, whole = ctx.root(), ctx.state_vector(), ctx.diff(None)
    try:
        update = ctx.diff(garbage)
    except RemoteProtocolError:
        update = None
    # A vector that parses gives a real update: what a peer at that vector lacks, at most our
    # one entry; and asking changes nothing.
    if update is not None:
        replica = log(2)
        got, _ = replica.apply_remote(update)
        assert ids(got) in ([], [entry.id])
    assert (ctx.root(), ctx.state_vector(), ctx.diff(None)) == (root, state, whole)


@SETTINGS
@given(garbage=st.binary(max_size=60))
def test_garbage_updates_change_nothing(garbage):
    ctx = log(1)
    ctx.append_local(entries_of("a", [1]))
    root, state = ctx.root(), ctx.state_vector()
    try:
        ctx.apply_remote(garbage)
    except LedgerError:
        pass
    assert ctx.root() == root and ctx.state_vector() == state and len(ctx) == 1


def test_gap_in_an_origin_hides_later_entries_until_filled():
    # Origin "a" restarted: seqs 1-2 came from one incarnation (client id), 3-4 from the next.
    # The next incarnation appended after b:1, so Yjs can integrate a:3-4 without a:1-2.
    first, other, second = log(11), log(20), log(12)
    _, early = first.append_local(entries_of("a", [1, 2]))
    b_entries, b_update = other.append_local(entries_of("b", [1], lamport0=2))
    second.apply_remote(early)
    second.apply_remote(b_update)
    second.append_local(entries_of("a", [3, 4], lamport0=1))
    reader = log(13)
    reader.apply_remote(second.diff(first.state_vector()))  # b:1, a:3, a:4 but not a:1-2
    assert len(reader) == 3 and reader.contiguous[A] == 0 and reader.max_seq(A) == 4
    got, cursor = reader.get()
    assert ids(got) == ids(b_entries), "a:3 and a:4 must wait for a:1 and a:2"
    assert str(cursor) == f"{B}:1"
    assert reader.get(limit=1)[0] == got
    reader.apply_remote(early)
    got, cursor = reader.get(after=cursor)
    assert [(e.writer, e.seq) for e in got] == [(A, 1), (A, 2), (A, 3), (A, 4)]
    assert cursor == {A: 4, B: 1}
    assert reader.get(after=cursor) == ([], cursor)
    assert reader.root() == second.root()


def test_get_limits_and_key_filter():
    ctx = log(1)
    batch = chain_entries("a", range(1, 7), key=lambda s: "k" if s % 2 else "even")
    ctx.append_local(batch)
    start = Cursor()
    assert ctx.get(limit=0) == ([], start)
    assert ctx.get(limit=-1) == ([], start)
    got, cursor = ctx.get(limit=2)
    assert [e.seq for e in got] == [1, 2] and cursor == {A: 2}
    assert [e.seq for e in ctx.get(key="even")[0]] == [2, 4, 6]
    assert [e.seq for e in ctx.get(key="even", after=cursor)[0]] == [4, 6]
    assert ctx.get(key="missing") == ([], start)


def test_records_of_another_context_are_forbidden():
    ctx = log(1)
    before = ctx.state_vector()
    wrong = entries_of("a", [1], context="other")[0]
    with pytest.raises(ForbiddenUpdate, match=wrong.id):
        ctx.apply_remote(forged_update([wrong.record]))
    assert len(ctx) == 0 and ctx.state_vector() == before
    assert ctx.item_count() == 0


def test_lying_record_refused_before_the_doc_changes():
    ctx = log(1)
    good = entries_of("a", [1])[0]
    liar = bytes.fromhex(entries_of("a", [2])[0].id) + good.body
    before = ctx.state_vector()
    with pytest.raises(IntegrityError):
        ctx.apply_remote(forged_update([good.record, liar]))
    assert len(ctx) == 0 and ctx.state_vector() == before


def test_a_second_copy_of_an_id_is_checked_too():
    # A record whose id is already in the update is the same entry only if its content
    # hashes to that id: the batch check skips repeated ids, receive must not.
    ctx = log(1)
    good, other = entries_of("a", [1, 2])
    liar = bytes.fromhex(good.id) + other.body
    before = ctx.state_vector()
    with pytest.raises(IntegrityError, match=good.id):
        ctx.apply_remote(forged_update([good.record, liar]))
    assert len(ctx) == 0 and ctx.state_vector() == before
    # an honest repeat is one entry
    new, applied = ctx.apply_remote(forged_update([good.record, good.record]))
    assert ids(new) == [good.id] and applied is not None and len(ctx) == 1


def test_load_stored_checks_ids_even_when_trusted():
    good = entries_of("a", [1])[0]
    liar = bytes.fromhex("00" * 32) + good.body
    with pytest.raises(IntegrityError):
        log(1).load_stored(forged_update([liar]))
    with pytest.raises(IntegrityError):
        log(1).load_stored(forged_update([liar]), verify=True)
    wrong_ctx = entries_of("a", [1], context="other")[0]
    with pytest.raises(IntegrityError):
        log(1).load_stored(forged_update([wrong_ctx.record]))


def test_load_stored_verify_applies_limits():
    big = entries_of("a", [1])[0]
    update = forged_update([big.record])
    assert log(1, limits=Limits(max_payload=1)).load_stored(update) == 1  # trusted
    with pytest.raises(IntegrityError):
        log(1, limits=Limits(max_payload=1)).load_stored(update, verify=True)


def test_entries_received_by_id_and_duplicates_are_indexed_once():
    source = log(1)
    batch = entries_of("a", [1, 2, 3])
    source.append_local(batch)
    loader = log(2)
    added, _, _, update = loader.receive(b"\x00\x00", (), [e.record for e in batch[:2] + batch[:1]])
    assert ids(added) == ids(batch[:2]) and update is not None
    assert loader.receive(b"\x00\x00", (), [e.record for e in batch[:2]])[0] == []
    # The same records now arrive again through Yjs under the source's client id.
    assert ids(loader.apply_remote(source.diff())[0]) == ids(batch[2:])
    assert len(loader) == 3 and loader.root() == source.root()
    assert loader.item_count() == 5  # the doc holds duplicates, the index not
    assert ids(loader.get()[0]) == ids(batch)


def test_compacted_state_rebuilds_the_same_log():
    ctx = log(1)
    ctx.append_local(entries_of("a", [1, 2]))
    other = log(2)
    other.append_local(entries_of("b", [1, 2], lamport0=1))
    ctx.apply_remote(other.diff())
    rebuilt = log(3)
    rebuilt.load_stored(ctx.compacted_state(), verify=True)
    assert rebuilt.root() == ctx.root()
    assert ids(rebuilt.get()[0]) == ids(ctx.get()[0])
    assert rebuilt.contiguous == ctx.contiguous and rebuilt.max_lamport == ctx.max_lamport


def test_a_context_log_and_its_index_keep_their_dicts_small() -> None:
    """A ContextLog and its index keep at most MAX_ATTRIBUTES attributes: one more made every
    loaded context's instance dict ~1.3 KB larger (CPython shares the keys of at most 30)."""
    import sys

    from p2p_ledger.core.context_log import MAX_ATTRIBUTES

    ctx = ContextLog("small", 1)
    assert len(vars(ctx)) <= MAX_ATTRIBUTES and len(vars(ctx.index)) <= MAX_ATTRIBUTES
    assert sys.getsizeof(vars(ctx)) < 600 and sys.getsizeof(vars(ctx.index)) < 600
