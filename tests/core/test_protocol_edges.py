"""PeerSession paths the pair tests in ``test_protocol.py`` do not reach.

A mutation run of ``core/protocol.py`` (README "Mutation testing") showed which code no test
depended on; each test here pins one such behaviour: contexts whose state vectors are too long
to ride in an ITEMS view (the SYNC1 question), a squatted position in a context big enough that
its tree of entry ids has inner levels (CTREE descends only where digests differ), a CTREE or a
SYNC1 about a context we do not hold, which per-origin choice the bound forgets, a peer URL
with ``://`` in its query, the cluster key's bytes, an ITEMS or SYNC1 answer lost for two
rounds; and, from the sampled run of 2026-11-30, the prefix named when views overlap, an INNER
view where we hold nothing, a push of several chunks keeping its ``own`` flag; from the sample
of its 9 most-reached functions, a ROOT reply told from a round the peer started, a refused
HELLO's whole messages, the bytes sent per frame type.
"""

from __future__ import annotations

import pytest
from pycrdt import Array, Doc

from p2p_ledger.core import wire
from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.errors import InvalidClusterKey, RemoteProtocolError
from p2p_ledger.core.identity import Identity
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.protocol import (
    EMPTY_STATE_VECTOR,
    ITEMS_PER_VIEW,
    MAX_PRUNED,
    EntriesReceived,
    LocalInfo,
    PeerRoot,
    check_peer_url,
    cluster_key_bytes,
)
from p2p_ledger.core.wire import (
    CHUNK,
    EMPTY,
    IDS,
    INNER,
    ITEMS,
    MAX_SV_IN_VIEW,
    UPDATE,
    ContextTree,
    Root,
    Sync1,
    View,
    Views,
    Want,
    decode,
    encode,
)
from p2p_ledger.core.yjs import decode_state_vector
from p2p_ledger.testing import SessionPair, open_pair

from .helpers import append, new_ledger, ordered_ids, sync
from .test_trust import send, signed


def _wide(context: str, writers: int) -> tuple[Ledger, Ledger]:
    """Two ledgers holding one context written by ``writers`` Yjs clients (instances)."""
    a, b = new_ledger("a"), new_ledger("b")
    for i in range(writers):
        w = new_ledger(f"w{i}")
        append(w, context, f"from w{i}")
        for ledger in (a, b):
            ledger.apply_remote(context, w.bundle_diff(context, None))
    return a, b


@pytest.mark.parametrize("swapped", [False, True])
def test_a_context_whose_state_vector_is_too_long_for_a_view_is_asked_for(swapped: bool) -> None:
    """A view omits a state vector over MAX_SV_IN_VIEW bytes; the side that sees the context
    differ asks with a SYNC1 wanting a reply, and one round carries both sides' news."""
    a, b = _wide("wide", 40)
    assert len(a.state_vector("wide")) > MAX_SV_IN_VIEW
    append(a, "wide", "only on a")
    append(b, "wide", "only on b")
    before = {a.state_vector("wide"), b.state_vector("wide")}
    pair = open_pair(a, b, swapped=swapped)
    pair.first.session.send_root()
    pair.pump()
    assert ordered_ids(a, "wide") == ordered_ids(b, "wide")
    assert len(ordered_ids(a, "wide")) == 42
    sent = [decode(f) for f in pair.all_frames()]
    assert not any(any(v.states) for m in sent if isinstance(m, wire.Views) for v in m.views)
    # one question wanting a reply and its answer, each carrying its sender's state vector
    asked = [m for m in sent if isinstance(m, Sync1)]
    assert sorted((m.context, m.want_reply) for m in asked) == [("wide", False), ("wide", True)]
    assert {m.state_vector for m in asked} == before


def test_the_cluster_key_is_its_bytes_and_an_empty_one_is_refused_by_name() -> None:
    assert cluster_key_bytes(None) is None
    assert cluster_key_bytes("clé") == "clé".encode()
    assert cluster_key_bytes(b"\x00key") == b"\x00key"
    assert cluster_key_bytes(bytearray(b"k")) == b"k"
    for empty in ("", b"", bytearray()):
        with pytest.raises(InvalidClusterKey) as err:
            cluster_key_bytes(empty)
        assert str(err.value) == ("the cluster key is empty (an unset variable?): give a "
                                  "non-empty key, or none for an open cluster")


def _squatted(before: int) -> tuple[Ledger, Ledger, str]:
    """As test_trust's defect 2, in a context of ``before`` entries: mallory gives w an entry
    of hers at t's next Yjs position first, so w's Yjs ignores t's real entry there (equal
    state vectors, different roots). Returns t, w and the hidden entry's id."""
    t, w = new_ledger("t"), new_ledger("w")
    t.append([t.prepare("c1", "k", f"t{i}") for i in range(before)])
    sync(t, w, "c1")
    client = t.contexts["c1"].doc.client_id
    real = append(t, "c1", "acknowledged on t").entries[0]
    squat, head = signed(Identity.from_seed("mallory"), "c1", [9], payload=b"squat")
    doc = Doc(client_id=client)
    doc.apply_update(w.contexts["c1"].doc.get_update())
    state = doc.get_state()
    doc.get("entries", type=Array).append(squat[0].record)
    w.apply_remote("c1", encode_bundle([head], doc.get_update(state)))
    sync(t, w, "c1")
    assert real.id not in w.contexts["c1"].by_id
    assert decode_state_vector(t.state_vector("c1")) == decode_state_vector(w.state_vector("c1"))
    return t, w, real.id


@pytest.mark.parametrize("swapped", [False, True])
def test_a_squatted_position_in_a_big_context_is_found_down_one_branch(swapped: bool) -> None:
    t, w, real = _squatted(300)
    pair = open_pair(t, w, swapped=swapped)
    for _ in range(2):
        pair.first.session.send_root()
        pair.pump()
    assert real in w.contexts["c1"].by_id and t.root() == w.root()
    views = [v for m in map(decode, pair.all_frames()) if isinstance(m, ContextTree)
             for v in m.views]
    assert any(v.kind == INNER for v in views)
    shown = sum(len(v.ids) for v in views if v.kind == IDS)
    print("ids shown in CTREE views:", shown, "of", len(t.contexts["c1"]))
    assert shown < 300 // 4


def test_a_sync1_or_a_ctree_about_a_context_we_do_not_hold_is_answered() -> None:
    """Equal (empty) state vectors for a context we lack: we show our (empty) tree of ids; a
    tree of ids for a context we lack: we ask for every id; their tree branching where ours is
    a leaf: we show the leaf. The link stays open."""
    a, b = new_ledger("a"), new_ledger("b")
    append(b, "held", "x")
    pair = open_pair(a, b)
    pair.a.session.send_root()
    pair.pump()  # (both hold it now)
    session = pair.b.session
    session.receive(encode(Sync1("ghost", True, EMPTY_STATE_VECTOR)))
    assert [decode(f) for f in session.take_output()] == [
        ContextTree("ghost", (View((), EMPTY),))]
    ids = (bytes(range(32)), bytes(range(1, 33)))
    session.receive(encode(ContextTree("ghost", (View((), IDS, ids=ids[::-1]),))))
    assert [decode(f) for f in session.take_output()] == [Want("ghost", ids)]
    # their tree branches where ours is one leaf (or nothing): we show that leaf
    inner = View((), INNER, children=(bytes(16),) + (None,) * 15)
    for name, answer in (("ghost", View((), EMPTY)),
                         ("held", View((), IDS, ids=tuple(bytes.fromhex(e.id) for e in
                                                          b.get("held")[0])))):
        session.receive(encode(ContextTree(name, (inner,))))
        assert [decode(f) for f in session.take_output()] == [ContextTree(name, (answer,))]
    assert session.is_open and not session.take_events()


def test_the_bound_on_per_origin_choices_forgets_the_least_recently_set() -> None:
    """At MAX_PRUNED origins a link forgets one to name another: the one set longest ago, so
    naming an origin again keeps it (a forgotten origin falls back to the link's default)."""
    a, b = new_ledger("a"), new_ledger("b")
    session = open_pair(a, b).a.session
    origins = [i.to_bytes(32, "big") for i in range(MAX_PRUNED + 1)]
    for origin in origins[:MAX_PRUNED]:
        session.prune(origin)
    session.prune(origins[0])  # named again: now the most recent
    session.prune(origins[MAX_PRUNED])
    assert not session.eager_for(origins[0]) and not session.eager_for(origins[MAX_PRUNED])
    assert session.eager_for(origins[1])  # the least recently set was forgotten
    assert sum(not session.eager_for(o) for o in origins) == MAX_PRUNED


def test_a_peer_url_splits_at_its_first_scheme_separator_and_is_quoted_cut() -> None:
    with_url_in_query = "wss://relay.example:8443/join?next=ws://other:1"
    assert check_peer_url(with_url_in_query) == with_url_in_query
    with pytest.raises(RemoteProtocolError) as err:
        check_peer_url("ws://h " + "x" * 200)
    assert str(err.value) == f"peer named an invalid URL {('ws://h ' + 'x' * 200)[:80]!r}"


def test_an_items_answer_still_missing_two_rounds_later_is_sent_again() -> None:
    """The same ITEMS view is not answered again in the round after (the answer is on its
    way), but two rounds on it was lost: it is sent again."""
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "notes", b"one")
    session = open_pair(a, b).a.session
    behind = View((), ITEMS, items=(("notes", bytes(16)),), states=(b"\x00",))

    def next_round_then_view() -> list[int]:
        session.receive(encode(Root(False, bytes(16))))
        session.take_output()
        session.receive(encode(Views((behind,))))
        return [frame[1] for frame in session.take_output()]

    assert next_round_then_view() == [UPDATE]
    assert next_round_then_view() == []
    assert next_round_then_view() == [UPDATE]


def test_a_sync1_asked_again_in_the_next_round_waits_and_two_rounds_on_is_answered() -> None:
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "notes", b"one")
    session = open_pair(a, b).a.session
    question = encode(Sync1("notes", False, b"\x00"))

    def next_round_then_ask() -> list[int]:
        session.receive(encode(Root(False, bytes(16))))
        session.take_output()
        session.receive(question)
        return [frame[1] for frame in session.take_output()]

    assert next_round_then_ask() == [UPDATE]
    assert next_round_then_ask() == []  # our answer is still on its way
    assert next_round_then_ask() == [UPDATE]  # lost: sent again


def test_overlapping_views_are_refused_naming_the_prefix() -> None:
    session = open_pair(new_ledger("a"), new_ledger("b")).a.session
    session.receive(encode(Views((View((3,), EMPTY), View((3, 1), EMPTY)))))
    assert session.close_reason == "RemoteProtocolError: views overlap at prefix [3]"


def test_a_branch_of_theirs_where_we_hold_nothing_is_answered_with_an_empty_view() -> None:
    """Their view is INNER where we have no node (here: an empty ledger): we answer EMPTY,
    which asks for everything under that prefix."""
    session = open_pair(new_ledger("a"), new_ledger("b")).a.session
    session.receive(encode(Views((View((), INNER, children=(bytes(16),) + (None,) * 15),))))
    assert [decode(f) for f in session.take_output()] == [Views((View((), EMPTY),))]
    assert session.is_open


@pytest.mark.parametrize("own", [True, False])
def test_a_push_of_several_chunks_says_whether_it_comes_from_its_origin(own: bool) -> None:
    """Reassembled from its chunks, a push still tells its origin's own push from a forward
    (the node's dense-neighbourhood rule counts only the former)."""
    a, b = new_ledger("a"), new_ledger("b")
    pair = open_pair(a, b, b_info=LocalInfo("b", large_frames=False))  # CHUNK-sized pieces
    update = append(a, "big", b"z" * (2 * CHUNK)).updates[0][1]
    pair.a.session.push("big", update, own=own)
    pair.pump()
    assert sum(f[1] == UPDATE for f in pair.a.frames_sent) == 3
    got = [e for e in pair.b.events if isinstance(e, EntriesReceived)]
    assert [(e.context, e.update, e.pushed, e.own) for e in got] == [("big", update, True, own)]


def test_what_we_offer_from_an_items_view_is_remembered_per_context() -> None:
    """Two contexts with equal state vectors (one Yjs client wrote both): an ITEMS view showing
    a peer that lacks both gets both sent in the same round."""
    a = new_ledger("a")
    writer = Identity.from_seed("w")
    for name in ("c1", "c2"):
        entries, head = signed(writer, name, [1])
        send(a, name, entries, [head])
    assert a.state_vector("c1") == a.state_vector("c2")
    session = open_pair(a, new_ledger("b")).a.session
    lacking = (EMPTY_STATE_VECTOR,) * 2
    session.receive(encode(Views((View((), ITEMS, items=(("c1", bytes(16)), ("c2", bytes(16))),
                                       states=lacking),))))
    assert [(decode(f).context, f[1]) for f in session.take_output()] == [  # type: ignore[union-attr]
        ("c1", UPDATE), ("c2", UPDATE)]


def test_a_context_the_peer_is_ahead_in_is_asked_for_without_a_reply() -> None:
    """Their ITEMS view shows a state vector ahead of ours and nothing we hold that they lack:
    one SYNC1 with our state vector, wanting no reply (they lack nothing of ours)."""
    a, b = new_ledger("a"), new_ledger("b")
    append(b, "notes", b"one")
    sync(b, a, "notes")
    append(b, "notes", b"two")
    session = open_pair(a, b).a.session
    view = View((), ITEMS, items=(("notes", bytes(16)),), states=(b.state_vector("notes"),))
    session.receive(encode(Views((view,))))
    assert [decode(f) for f in session.take_output()] == [
        Sync1("notes", False, a.state_vector("notes"))]


@pytest.mark.parametrize(("shown", "whole"), [(ITEMS_PER_VIEW // 2 - 1, True),
                                              (ITEMS_PER_VIEW // 2, False)])
def test_an_items_view_of_fewer_than_half_a_split_is_the_whole_list(shown: int,
                                                                      whole: bool) -> None:
    """A split list has at least ITEMS_PER_VIEW // 2 items per view, so a shorter view is all
    the peer holds under its prefix: a context of ours missing from it is sent at once; from a
    longer one (maybe a part) it is asked for (SYNC1 wanting a reply). (Our own views hold at
    most a leaf's 16 items: a longer view comes from another implementation.)"""
    a = new_ledger("a")
    append(a, "mine", b"x")
    session = open_pair(a, new_ledger("b")).a.session
    names = tuple(f"theirs-{i:03}" for i in range(shown))
    session.receive(encode(Views((View((), ITEMS, items=tuple((n, bytes(16)) for n in names),
                                       states=(b"",) * shown),))))
    sent = {decode(f).context: decode(f) for f in session.take_output()}  # type: ignore[union-attr]
    assert set(sent) == {"mine", *names}
    if whole:
        assert isinstance(sent["mine"], wire.UpdateChunk)
    else:
        assert sent["mine"] == Sync1("mine", True, a.state_vector("mine"))


def test_a_root_reply_is_reported_as_agreeing_not_as_a_round_the_peer_started() -> None:
    """The starter's ROOT is a round the peer started (``asks``: the node counts rounds by it);
    the reply (the roots agree) only says that the peer held the root we sent."""
    a, b = new_ledger("a"), new_ledger("b")
    pair = open_pair(a, b)
    pair.a.events.clear()
    pair.b.events.clear()
    pair.a.session.send_root()
    pair.pump()
    root = a.root()[:wire.DIGEST_PREFIX]
    assert [e for e in pair.b.events if isinstance(e, PeerRoot)] == [PeerRoot(root, True, True)]
    assert [e for e in pair.a.events if isinstance(e, PeerRoot)] == [PeerRoot(root, True, False)]


_KEY = b"k" * 32


@pytest.mark.parametrize(("a", "b", "reasons"), [
    (LocalInfo("a"), LocalInfo("renamed"), ["connected to ourselves"] * 2),
    (LocalInfo("a", key=_KEY), LocalInfo("b"), ["peer has no cluster key and ours requires one",
                                                "peer requires a cluster key and we have none"]),
    (LocalInfo("a", cluster="red"), LocalInfo("b", cluster="blue"),
     ["peer is in cluster 'blue', we are in 'red'", "peer is in cluster 'red', we are in 'blue'"]),
])
def test_a_refused_hello_closes_both_sides_with_exactly_their_messages(
        a: LocalInfo, b: LocalInfo, reasons: list[str]) -> None:
    """(The pair tests check fragments of messages; a node logs these whole.)"""
    self_link = b.node_id == "renamed"  # (the same key in another ledger)
    ledger_b = new_ledger("a", instance="another open") if self_link else new_ledger("b")
    pair = SessionPair(new_ledger("a"), ledger_b, a, b).start()
    assert [side.session.close_reason for side in pair.sides()] == [
        f"RemoteProtocolError: {reason}" for reason in reasons]


def test_a_root_reply_to_no_root_of_ours_agrees_with_nothing() -> None:
    a, b = new_ledger("a"), new_ledger("b")
    session = open_pair(a, b).a.session
    session.take_events()
    session.receive(encode(Root(True)))  # (a hostile peer: we sent no ROOT)
    assert session.take_events() == [PeerRoot(b"", False, False)] and session.is_open


def test_the_bytes_sent_per_frame_type_add_up_to_the_frames_sent() -> None:
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "notes", b"one")
    pair = open_pair(a, b)
    pair.a.session.send_root()
    pair.pump()
    assert "UPDATE" in pair.a.session.sent_by_type
    for side in pair.sides():
        want: dict[str, int] = {}
        for frame in side.frames_sent:
            want[wire.NAMES[frame[1]]] = want.get(wire.NAMES[frame[1]], 0) + len(frame)
        assert side.session.sent_by_type == want
