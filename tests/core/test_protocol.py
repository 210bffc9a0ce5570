"""PeerSession in pairs: handshake, anti-entropy rounds, convergence, hostile input.

Every test drives two sessions over two in-memory ledgers with ``SessionPair`` (no I/O); the
``swapped`` fixture runs it again with the other session going first.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc

from p2p_ledger.core import wire
from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.errors import (
    ForbiddenUpdate,
    ForgedEntry,
    IntegrityError,
    RemoteProtocolError,
)
from p2p_ledger.core.identity import Identity, link_transcript
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.protocol import (
    Closed,
    EntriesReceived,
    Established,
    LocalInfo,
    PeerRoot,
    PeerSession,
    State,
    auth_mac,
)
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.core.wire import (
    CHUNK,
    FLAG_AUTH,
    LARGE_CHUNK,
    LARGE_FRAME,
    MAX_FRAME,
    UPDATE,
    Auth,
    Hello,
    Root,
    Sync1,
    UpdateChunk,
    View,
    Views,
    decode,
    encode,
)
from p2p_ledger.core.yjs import decode_state_vector, encode_state_vector
from p2p_ledger.testing import (
    HandPlayedPeer,
    SessionPair,
    Side,
    deleting_update,
    foreign_entry,
    forged_update,
    open_pair,
    self_deleting_update,
)

from .helpers import (
    append,
    id_sets,
    new_ledger,
    open_ledger,
    ordered_ids,
    snapshot_state,
    sync,
)

KEY = bytes.fromhex("5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7")


def _only_closed(side: Side) -> Closed:
    closed = side.closed
    assert len(closed) == 1, side.events
    return closed[0]


def _never_opened(side: Side) -> None:
    assert not any(isinstance(e, Established) for e in side.events)
    assert side.session.state is State.CLOSED
    assert not side.session.was_open


# ---- handshake ---------------------------------------------------------------------------------

def test_handshake_opens_both_sides(swapped: bool) -> None:
    a, b = new_ledger("a"), new_ledger("b")
    pair = SessionPair(a, b, LocalInfo("a", url="ws://a:1"), LocalInfo("b", url="ws://b:2"),
                       swapped=swapped).start()
    assert pair.a.events == [Established(b.origin, "b", "ws://b:2")]
    assert pair.b.events == [Established(a.origin, "a", "ws://a:1")]
    # HELLOs cross, then AUTHs (each proves its origin's key over the other's nonce)
    assert pair.messages == 4 and pair.round_trips == 2


def _refused_pair(a_info: LocalInfo, b_info: LocalInfo, swapped: bool,
                  mangle=None) -> SessionPair:  # noqa: ANN001
    pair = SessionPair(new_ledger("a"), new_ledger("b"), a_info, b_info, mangle=mangle,
                       swapped=swapped).start()
    _never_opened(pair.a)
    if mangle is None:
        _never_opened(pair.b)
    else:
        # Only b's HELLO was bent: b saw a good HELLO and opened, then got a's BYE.
        assert pair.b.session.state is State.CLOSED
    return pair


def _assert_named_on_both_sides(pair: SessionPair, fragment: str,
                                error: str = "RemoteProtocolError") -> None:
    """Each side closed once, with a reason naming the error class (its own or the peer's)."""
    for side in pair.sides():
        closed = _only_closed(side)
        assert error in closed.reason, closed
        if not closed.by_peer:
            assert closed.error
    assert any(fragment in _only_closed(side).reason for side in pair.sides())


def _with_hello(**changes: object):  # noqa: ANN202
    """A mangle that rewrites the HELLO sent by node "b"."""
    def mangle(frames: list[bytes]) -> list[bytes]:
        out = []
        for frame in frames:
            msg = decode(frame)
            if isinstance(msg, Hello) and msg.node_id == "b":
                fields = {**msg.__dict__, **changes}
                frame = encode(Hello(**fields))  # type: ignore[arg-type]
            out.append(frame)
        return out
    return mangle


def test_protocol_version_mismatch(swapped: bool) -> None:
    other = wire.PROTOCOL_VERSION + 1
    pair = _refused_pair(LocalInfo("a"), LocalInfo("b"), swapped, _with_hello(protocol=other))
    assert f"peer speaks protocol {other}" in _only_closed(pair.a).reason
    _assert_named_on_both_sides(pair, f"protocol {other}", "ProtocolMismatch")


def test_a_protocol_6_hello_is_refused_by_name() -> None:
    """A node of the previous version sends a HELLO without an origin: the refusal names the
    versions (ProtocolMismatch), not the layout ("truncated")."""
    session = _handshake_of(PeerSession(LocalInfo("a"), new_ledger("a"), b"N" * 16))
    v6 = bytes([wire.WIRE_VERSION, wire.HELLO]) + (6).to_bytes(2, "big") + b"".join(
        len(s).to_bytes(2, "big") + s for s in (b"default", b"old", b"")) + bytes(16 + 1 + 16)
    session.receive(v6)
    assert session.close_reason == (
        f"ProtocolMismatch: peer speaks protocol 6, we speak {wire.PROTOCOL_VERSION}")


def test_cluster_mismatch(swapped: bool) -> None:
    pair = _refused_pair(LocalInfo("a", cluster="red"), LocalInfo("b", cluster="blue"), swapped)
    _assert_named_on_both_sides(pair, "cluster")
    for side in pair.sides():
        assert "cluster" in _only_closed(side).reason


def test_self_connection(swapped: bool) -> None:
    """Ourselves is our own origin (one key in two ledgers), whatever the labels say."""
    a, b = new_ledger("a"), new_ledger("a", instance="another open")
    assert a.origin == b.origin
    pair = SessionPair(a, b, LocalInfo("a"), LocalInfo("renamed"), swapped=swapped).start()
    _assert_named_on_both_sides(pair, "connected to ourselves")
    assert pair.a.session.reached_self and pair.b.session.reached_self


def test_two_nodes_with_one_label_link(swapped: bool) -> None:
    """Two data directories under one label (a wiped one that came back, two laptops called
    "agent") are two origins: they link, and each knows the other by its origin."""
    a, b = new_ledger("agent"), new_ledger("agent-2")
    pair = SessionPair(a, b, LocalInfo("agent"), LocalInfo("agent"), swapped=swapped).start()
    assert pair.a.events == [Established(b.origin, "agent", "")]
    assert pair.b.events == [Established(a.origin, "agent", "")]


def _handshake_of(session: PeerSession) -> PeerSession:
    session.start()
    session.take_output()
    return session


@pytest.mark.parametrize("key", [None, KEY], ids=["open-cluster", "cluster-key"])
def test_a_peer_claiming_an_origin_without_its_key_is_refused(key: bytes | None) -> None:
    """Mallory names honest b's origin (a public key anyone can read) in its HELLO and signs
    with its own key: the proof does not check, the link never opens, nothing changes."""
    ledger, honest = new_ledger("a"), new_ledger("b")
    before = snapshot_state(ledger)
    victim = _handshake_of(PeerSession(LocalInfo("a", key=key), ledger, b"N" * 16))
    mallory = HandPlayedPeer(Identity.from_seed("mallory"), "b", key=key)
    claimed = decode(mallory.hello)
    assert isinstance(claimed, Hello)
    lying = encode(Hello(**{**claimed.__dict__, "origin": bytes.fromhex(honest.origin)}))
    victim.receive(lying)
    assert victim.state is State.AUTH_WAIT
    transcript = link_transcript(victim.nonce, lying, victim.hello)
    mac = auth_mac(key, transcript) if key else b""
    victim.receive(encode(Auth(Identity.from_seed("mallory").sign_link(transcript), mac)))
    assert victim.state is State.CLOSED and not victim.was_open
    assert "did not prove the key of origin" in (victim.close_reason or "")
    assert snapshot_state(ledger) == before


def test_a_garbage_signature_is_refused() -> None:
    victim = _handshake_of(PeerSession(LocalInfo("a"), new_ledger("a"), b"N" * 16))
    peer = HandPlayedPeer(Identity.from_seed("b"))
    victim.receive(peer.hello)
    victim.receive(encode(Auth(b"\x00" * 64)))
    assert "did not prove the key of origin" in (victim.close_reason or "")


def test_a_mac_without_a_cluster_key_is_refused() -> None:
    victim = _handshake_of(PeerSession(LocalInfo("a"), new_ledger("a"), b"N" * 16))
    peer = HandPlayedPeer(Identity.from_seed("b"), key=KEY)
    victim.receive(HandPlayedPeer(Identity.from_seed("b")).hello)
    forged = decode(peer.auth(victim.hello))
    assert isinstance(forged, Auth) and forged.mac
    victim.receive(encode(forged))
    assert "we have no key" in (victim.close_reason or "")


@pytest.mark.parametrize("key", [None, KEY], ids=["open-cluster", "cluster-key"])
def test_a_proof_replayed_from_another_link_is_refused(key: bytes | None) -> None:
    """A HELLO and AUTH recorded from b's handshake with one node, replayed to another (its
    nonce is fresh): the proof is over the first node's nonce and HELLO."""
    a, b = new_ledger("a"), new_ledger("b")
    first = SessionPair(a, b, LocalInfo("a", key=key), LocalInfo("b", key=key)).start()
    assert first.a.session.is_open
    hello_b, auth_b = [f for f in first.b.frames_sent if f[1] in (wire.HELLO, wire.AUTH)]
    victim = _handshake_of(PeerSession(LocalInfo("a", key=key), new_ledger("a2"), b"N" * 16))
    victim.receive(hello_b)
    victim.receive(auth_b)
    assert victim.state is State.CLOSED and not victim.was_open
    assert ("cluster key proof does not match" if key else "did not prove the key") in \
        (victim.close_reason or "")


def test_invalid_peer_node_id(swapped: bool) -> None:
    pair = _refused_pair(LocalInfo("a"), LocalInfo("b"), swapped, _with_hello(node_id="b ad/"))
    assert "invalid node id" in _only_closed(pair.a).reason


def test_cluster_key_right_key_opens(swapped: bool) -> None:
    a, b = new_ledger("a"), new_ledger("b")
    pair = SessionPair(a, b, LocalInfo("a", key=KEY), LocalInfo("b", key=KEY),
                       swapped=swapped).start()
    assert pair.a.session.is_open and pair.b.session.is_open
    assert [type(e) for e in pair.a.events] == [Established]
    types = sorted(wire.NAMES[f[1]] for f in pair.all_frames())
    assert types == ["AUTH", "AUTH", "HELLO", "HELLO"]
    _assert_key_never_sent(pair)


@pytest.mark.parametrize("a_key,b_key,fragment", [
    (KEY, b"another key", "cluster key proof does not match"),
    (KEY, None, "no cluster key"),
    (None, KEY, "requires a cluster key"),
], ids=["wrong-key", "b-missing-key", "a-missing-key"])
def test_cluster_key_refused(a_key: bytes | None, b_key: bytes | None, fragment: str,
                             swapped: bool) -> None:
    pair = _refused_pair(LocalInfo("a", key=a_key), LocalInfo("b", key=b_key), swapped)
    _assert_named_on_both_sides(pair, fragment)
    _assert_key_never_sent(pair)


def _assert_key_never_sent(pair: SessionPair) -> None:
    wire_bytes = b"".join(pair.all_frames())
    for key in (KEY, b"another key"):
        assert key not in wire_bytes
        assert key.hex().encode() not in wire_bytes
        assert key[:8] not in wire_bytes


@pytest.mark.parametrize("claim", ["another", "its-own"])
@pytest.mark.parametrize("key", [None, KEY], ids=["open-cluster", "cluster-key"])
def test_reflection_of_the_nodes_own_proof_is_refused(key: bytes | None, claim: str) -> None:
    """Reflection: an attacker without any key opens two connections to one node, echoes the
    node's nonce from the first in a HELLO on the second, and replays the node's AUTH answer on
    the first. The proof covers both HELLOs in order (the prover's first) and is by the node's
    key: claiming another origin, the signature is not that origin's; claiming the node's own
    origin (so the signature would be the right key's), the node refuses itself at HELLO."""
    ledger = new_ledger("a")
    before = snapshot_state(ledger)
    node = LocalInfo("a", key=key)
    first = _handshake_of(PeerSession(node, ledger, b"1" * 16))
    second = _handshake_of(PeerSession(node, ledger, b"2" * 16))
    origin = bytes.fromhex(new_ledger("x").origin if claim == "another" else ledger.origin)
    flags = FLAG_AUTH if key else 0
    # The same HELLO on both connections, but the second echoes the first connection's nonce.
    first.receive(encode(Hello(wire.PROTOCOL_VERSION, "default", "m", "", b"x" * 16, flags,
                               bytes(16), origin)))
    second.receive(encode(Hello(wire.PROTOCOL_VERSION, "default", "m", "", first.nonce, flags,
                                bytes(16), origin)))
    reflected = [f for f in second.take_output() if f[1] == wire.AUTH]
    if claim == "its-own":
        assert not reflected and "connected to ourselves" in (second.close_reason or "")
        assert "connected to ourselves" in (first.close_reason or "")
    else:
        assert len(reflected) == 1  # the node proved itself over the echoed nonce
        first.receive(reflected[0])
        assert first.state is State.CLOSED and not first.was_open
        assert ("cluster key proof does not match" if key else "did not prove the key") in \
            (first.close_reason or "")
    assert snapshot_state(ledger) == before


@pytest.mark.parametrize("msg", [
    Root(False, b"\x00" * 16), Sync1("c", True, b"\x00"), UpdateChunk("c", 1, 2, 0, b"\x00\x00"),
    Views(()), Auth(b"\x00" * 64),
], ids=lambda m: type(m).__name__)
def test_messages_before_the_handshake_are_refused(msg: wire.Message) -> None:
    ledger = new_ledger("a")
    before = snapshot_state(ledger)
    session = PeerSession(LocalInfo("a"), ledger, b"N" * 16)
    session.start()
    session.take_output()
    session.receive(encode(msg))
    (closed,) = session.take_events()
    assert isinstance(closed, Closed) and closed.error
    assert closed.reason.startswith("RemoteProtocolError: ")
    assert "not allowed in state hello-sent" in closed.reason
    assert [decode(f) for f in session.take_output()][0].reason == closed.reason  # type: ignore[union-attr]
    assert snapshot_state(ledger) == before


def test_bye_closes_quietly_and_later_frames_are_ignored(swapped: bool) -> None:
    pair = open_pair(new_ledger("a"), new_ledger("b"), swapped)
    pair.a.session.close("going away")
    pair.pump()
    assert _only_closed(pair.a) == Closed("going away", by_peer=False, error=False)
    assert _only_closed(pair.b) == Closed("peer said: going away", by_peer=True, error=False)
    pair.b.session.receive(b"garbage after close")
    pair.b.session.send_root()
    pair.b.session.push("c", b"\x01")
    assert pair.b.session.take_output() == [] and pair.b.session.take_events() == []


# ---- anti-entropy rounds ---------------------------------------------------------------------

def _twins(n_entries: int, payload_size: int = 100) -> tuple:
    """Two ledgers holding the same entries (b learned them from a)."""
    a, b = new_ledger("a"), new_ledger("b")
    rng = random.Random(n_entries)
    for i in range(n_entries):
        append(a, f"ctx-{i % 7}", rng.randbytes(payload_size))
    for name in a.contexts:
        b.apply_remote(name, a.bundle_diff(name, None))
    assert a.root() == b.root()
    return a, b


@pytest.mark.parametrize("n_entries,payload_size", [(0, 0), (1, 10), (200, 100), (300, 20_000)])
def test_root_round_between_equal_ledgers_is_one_small_round_trip(
        n_entries: int, payload_size: int, swapped: bool) -> None:
    a, b = _twins(n_entries, payload_size)
    pair = open_pair(a, b, swapped)
    pair.first.session.send_root()
    pair.pump()
    assert pair.round_trips == 1
    assert pair.messages == 2
    assert pair.bytes == 22, pair.bytes  # ROOT: 3 + 16 B root; its reply: 3 B
    for side in pair.sides():
        roots = [e for e in side.events if isinstance(e, PeerRoot)]
        assert len(roots) == 1 and roots[0].agrees


def test_one_differing_context_costs_little_more_than_its_entries(swapped: bool) -> None:
    a, b = _twins(300, 100)
    pair = open_pair(a, b, swapped)
    (new,) = append(a, "ctx-3", b"one more").entries
    pair.first.session.send_root()
    pair.pump()
    assert a.root() == b.root()
    assert [e.id for e in _received(pair.b)] == [new.id]
    # ROOT, VIEWS down to one context, SYNC1 both ways, one small UPDATE: a few hundred bytes,
    # nowhere near the ~30 KB that resending the data would cost.
    assert pair.bytes < 2_000, pair.bytes
    assert pair.round_trips <= 5


def _received(side: Side) -> list:
    return [entry for e in side.events if isinstance(e, EntriesReceived) for entry in e.entries]


def test_empty_side_gets_everything(swapped: bool) -> None:
    a, _ = _twins(120, 50)
    b = new_ledger("b")
    pair = open_pair(a, b, swapped)
    pair.first.session.send_root()
    pair.pump()
    assert a.root() == b.root()
    assert id_sets(a) == id_sets(b)


# Histories: a list of (where, context, payload size); "a"/"b" append on one side only,
# "ab" appends on a and gives the same entries to b (shared history), "ba" the other way.
# Up to 40 contexts, so the node-level tree grows inner nodes (a bucket holds 16) and the
# descent through VIEWS is exercised, not only the flat ITEMS case.
_contexts = st.one_of(st.sampled_from(["c0", "ns:deep/c1", "c2"]),
                      st.integers(0, 39).map(lambda i: f"ctx-{i}"))
_ops = st.lists(st.tuples(st.sampled_from(["a", "b", "ab", "ba"]), _contexts,
                          st.integers(0, 3000)), max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, swapped=st.booleans(), seed=st.integers(0, 2**32))
def test_divergent_histories_converge_in_one_round(ops: list, swapped: bool, seed: int) -> None:
    a, b = new_ledger("a"), new_ledger("b")
    ledgers = {"a": a, "b": b}
    rng = random.Random(seed)
    for where, context, size in ops:
        src, dst = ledgers[where[0]], ledgers[where[-1]]
        appended = src.append([src.prepare(context, "k", rng.randbytes(size))])
        if dst is not src:
            for name, update in appended.updates:
                dst.apply_remote(name, update)
    expected = {name: id_sets(a).get(name, set()) | id_sets(b).get(name, set())
                for name in set(a.contexts) | set(b.contexts)}
    expected = {k: v for k, v in expected.items() if v}
    pair = open_pair(a, b, swapped)
    pair.first.session.send_root()
    pair.pump()
    assert pair.a.session.is_open and pair.b.session.is_open
    assert a.root() == b.root()
    assert id_sets(a) == id_sets(b) == expected
    for name in expected:
        assert ordered_ids(a, name) == ordered_ids(b, name)  # one causal order everywhere
    # A second round finds nothing left to do: one round trip.
    pair.reset_counters()
    pair.second.session.send_root()
    pair.pump()
    assert pair.messages == 2


@pytest.mark.parametrize("seed", range(8))
def test_many_contexts_converge_through_inner_views(seed: int, swapped: bool) -> None:
    """Hundreds of contexts, most shared: the descent goes through INNER views and SYNC1s only
    the contexts that differ."""
    rng = random.Random(seed)
    print(f"seed={seed}")
    a, b = new_ledger("a"), new_ledger("b")
    names = [f"ctx-{i}" for i in range(rng.randint(50, 400))]
    for name in names:
        appended = a.append([a.prepare(name, "k", rng.randbytes(rng.randint(0, 50)))])
        b.apply_remote(name, appended.updates[0][1])
    differing = set(rng.sample(names, rng.randint(1, 6))) | {f"only-b-{i}" for i in range(2)}
    for name in sorted(differing):
        ledger = b if name.startswith("only-b") or rng.random() < 0.5 else a
        append(ledger, name, rng.randbytes(20))
    expected = {n: id_sets(a).get(n, set()) | id_sets(b).get(n, set())
                for n in set(a.contexts) | set(b.contexts)}
    pair = open_pair(a, b, swapped)
    pair.first.session.send_root()
    pair.pump()
    assert a.root() == b.root()
    assert id_sets(a) == id_sets(b) == expected
    views = [v for f in pair.all_frames() if f[1] == wire.VIEWS
             for v in decode(f).views]  # type: ignore[union-attr]
    # (the top view may ride in the ROOT: HELLO told the starter the roots differ)
    views += [m.view for f in pair.all_frames()
              if f[1] == wire.ROOT and (m := decode(f)).view is not None]  # type: ignore[union-attr]
    assert any(v.kind == wire.INNER for v in views)
    # A differing context is asked for (SYNC1) or, when the other side's state vector or its
    # absence is known from its ITEMS view, sent at once (UPDATE).
    asked = {decode(f).context for f in pair.all_frames()  # type: ignore[union-attr]
             if f[1] in (wire.SYNC1, wire.UPDATE)}
    assert differing <= asked
    assert len(asked) <= len(differing) + 32  # siblings in a differing bucket, not all of them


def _old_pair(a: Ledger, b: Ledger, swapped: bool = False, **kw: object) -> SessionPair:
    """An open pair of sessions that both play peers from before FLAG_LARGE_FRAMES: updates
    travel in CHUNK-sized pieces (what the tests of reassembly below need several of)."""
    return open_pair(a, b, swapped, a_info=LocalInfo(a.node_id, large_frames=False),
                     b_info=LocalInfo(b.node_id, large_frames=False), **kw)


def _big_histories() -> tuple:
    a, b = new_ledger("a"), new_ledger("b")
    rng = random.Random(7)
    for i in range(12):
        append(a, f"ctx{i % 3}", rng.randbytes(40_000))
        append(b, f"ctx{i % 4}", rng.randbytes(30_000))
    assert max(len(c.diff(None)) for c in a.contexts.values()) > 2 * CHUNK  # multi-chunk
    return a, b


@pytest.mark.parametrize("seed", range(6))
def test_duplicated_and_reordered_update_chunks_still_converge(seed: int, swapped: bool) -> None:
    rng = random.Random(seed)

    def mangle(frames: list[bytes]) -> list[bytes]:
        updates = [f for f in frames if f[1] == UPDATE]
        others = [f for f in frames if f[1] != UPDATE]
        updates += [f for f in updates if rng.random() < 0.3]  # duplicates
        rng.shuffle(updates)  # and any order, across contexts and within one
        return others + updates

    a, b = _big_histories()
    expected = {n: id_sets(a).get(n, set()) | id_sets(b).get(n, set())
                for n in set(a.contexts) | set(b.contexts)}
    pair = _old_pair(a, b, swapped, mangle=mangle)
    pair.first.session.send_root()
    pair.pump()
    assert pair.a.session.is_open and pair.b.session.is_open
    assert a.root() == b.root()
    assert id_sets(a) == id_sets(b) == expected


def test_a_late_duplicate_chunk_does_not_poison_the_next_transfer(swapped: bool) -> None:
    a, b = new_ledger("a"), new_ledger("b")
    pair = _old_pair(a, b, swapped)
    first = a.append([a.prepare("c", "k", b"x" * (CHUNK + 8_000))]).updates[0][1]
    pair.a.session.push("c", first)
    frames = pair.a.session.take_output()
    assert len(frames) == 2
    for frame in frames + frames[:1]:  # the first chunk arrives twice, the copy late
        pair.b.session.receive(frame)
    second = a.append([a.prepare("c", "k", b"y" * (CHUNK + 8_000))]).updates[0][1]
    assert len(second) == len(first)  # same-size entries make same-size updates
    pair.a.session.push("c", second)
    pair.pump()
    assert pair.b.session.is_open, pair.b.session.close_reason
    assert a.root() == b.root()


def test_interleaved_chunks_of_two_same_size_transfers_are_not_spliced(swapped: bool) -> None:
    a, b = new_ledger("a"), new_ledger("b")
    pair = _old_pair(a, b, swapped)
    first = a.append([a.prepare("c", "k", b"x" * (CHUNK + 8_000))]).updates[0][1]
    second = a.append([a.prepare("c", "k", b"y" * (CHUNK + 8_000))]).updates[0][1]
    assert len(first) == len(second)
    pair.a.session.push("c", first)
    one = pair.a.session.take_output()
    pair.a.session.push("c", second)
    two = pair.a.session.take_output()
    assert len(one) == len(two) == 2
    for frame in (one[0], two[1], one[1], two[0]):  # reordered across the two transfers
        pair.b.session.receive(frame)
    pair.pump()
    assert pair.b.session.is_open, pair.b.session.close_reason
    assert a.root() == b.root()


def test_each_update_sent_gets_the_next_transfer_id() -> None:
    a, b = new_ledger("a"), new_ledger("b")
    pair = _old_pair(a, b)
    big = a.append([a.prepare("c", "k", b"x" * (CHUNK + 8_000))]).updates[0][1]
    small = a.append([a.prepare("d", "k", b"y")]).updates[0][1]
    pair.a.session.push("c", big)
    pair.a.session.push("d", small)
    pair.a.session.push("c", big)
    chunks = [decode(f) for f in pair.a.session.take_output()]
    assert [(c.context, c.transfer, c.offset) for c in chunks] == [  # type: ignore[union-attr]
        ("c", 1, 0), ("c", 1, CHUNK), ("d", 2, 0), ("c", 3, 0), ("c", 3, CHUNK)]


def _update_frames(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f[1] == UPDATE]


def test_updates_travel_in_large_frames_between_peers_that_take_them(swapped: bool) -> None:
    """Both HELLOs carry FLAG_LARGE_FRAMES: an update goes in LARGE_CHUNK pieces."""
    a, b = new_ledger("a"), new_ledger("b")
    fresh = PeerSession(LocalInfo("a"), a, b"N" * 16)
    assert not fresh.takes_large_frames  # not before the peer's HELLO is accepted
    pair = open_pair(a, b, swapped)
    assert pair.a.session.takes_large_frames and pair.b.session.takes_large_frames
    update = a.append([a.prepare("c", "k", b"x" * (LARGE_CHUNK + 8_000))]).updates[0][1]
    pair.a.session.push("c", update)
    frames = _update_frames(pair.a.session.take_output())
    assert len(frames) == 2 and MAX_FRAME < len(frames[0]) <= LARGE_FRAME
    for frame in frames:
        pair.b.session.receive(frame)
    pair.pump()
    assert pair.b.session.is_open, pair.b.session.close_reason
    assert a.root() == b.root()


def test_a_peer_from_before_large_frames_gets_frames_it_takes(swapped: bool) -> None:
    """Interop: a peer whose HELLO lacks FLAG_LARGE_FRAMES (protocol 9 before it) gets no
    frame over MAX_FRAME, and its own small frames are taken; both converge."""
    a, b = new_ledger("a"), new_ledger("b")
    for i in range(3):
        append(a, f"a{i}", b"x" * (CHUNK + 9_000))
        append(b, f"b{i}", b"y" * (CHUNK + 9_000))
    pair = open_pair(a, b, swapped, b_info=LocalInfo("b", large_frames=False))
    assert not pair.b.session.takes_large_frames
    hello_a, hello_b = decode(pair.a.session.hello), decode(pair.b.session.hello)
    assert isinstance(hello_a, Hello) and isinstance(hello_b, Hello)
    assert hello_a.flags & wire.FLAG_LARGE_FRAMES and not hello_b.flags & wire.FLAG_LARGE_FRAMES
    pair.first.session.send_root()
    pair.pump()
    assert a.root() == b.root()
    for side in pair.sides():
        updates = _update_frames(side.frames_sent)
        assert len(updates) > 3 and max(map(len, updates)) <= MAX_FRAME


def test_a_large_frame_to_a_session_that_did_not_offer_them_closes_it() -> None:
    a, b = new_ledger("a"), new_ledger("b")
    pair = open_pair(a, b, b_info=LocalInfo("b", large_frames=False))
    big = encode(UpdateChunk("c", 1, LARGE_CHUNK, 0, b"x" * LARGE_CHUNK))
    pair.b.session.receive(big)
    assert not pair.b.session.is_open
    assert f"we take at most {MAX_FRAME}" in str(pair.b.session.close_reason)


def test_unfinished_transfers_are_bounded_and_the_oldest_is_abandoned() -> None:
    """A transfer that lost a chunk never finishes: it must not stay forever. Beyond
    MAX_ASSEMBLIES unfinished transfers the oldest is abandoned, and its late chunks ignored."""
    from p2p_ledger.core.protocol import MAX_ASSEMBLIES

    a, b = new_ledger("a"), new_ledger("b")
    pair = open_pair(a, b)
    update = a.append([a.prepare("c", "k", b"x" * (CHUNK + 8_000))]).updates[0][1]
    # (ids far above the ones a's session will use: this test plays a's part by hand)
    first, second = _chunk("c", update, transfer=1000)
    pair.b.session.receive(first)
    for t in range(1001, 1001 + MAX_ASSEMBLIES):  # transfers that lost their last chunk
        pair.b.session.receive(encode(UpdateChunk("c", t, 60_000, 0, b"z" * 30_000)))
    assert len(pair.b.session._assembly) == MAX_ASSEMBLIES
    assert pair.b.session._assembly_bytes == MAX_ASSEMBLIES * 30_000
    pair.b.session.receive(second)  # too late: transfer 1 was given up
    assert pair.b.session.is_open
    assert not _received(pair.b) and not pair.b.session.take_events()
    assert "c" not in b.contexts or not len(b.contexts["c"])
    pair.a.session.send_root()  # anti-entropy repairs what the abandoned transfer carried
    pair.pump()
    assert a.root() == b.root()


def test_live_push_delivers_once(swapped: bool) -> None:
    a, b = _twins(10)
    pair = open_pair(a, b, swapped)
    appended = a.append([a.prepare("ctx-1", "k", b"fresh"), a.prepare("new", "k", b"ctx")])
    for context, update in appended.updates:
        pair.a.session.push(context, update)
        pair.a.session.push(context, update)  # pushed twice: delivered once
    pair.pump()
    assert sorted(e.id for e in _received(pair.b)) == sorted(e.id for e in appended.entries)
    assert a.root() == b.root()


# ---- hostile input on an OPEN session ----------------------------------------------------------

def _victim() -> tuple:
    a, b = _twins(30, 50)
    return a, b


def _chunk(context: str, update: bytes, transfer: int = 1) -> list[bytes]:
    update = encode_bundle((), update)  # the Yjs update as a bundle, with no signatures
    return [encode(UpdateChunk(context, transfer, len(update), o, update[o:o + CHUNK]))
            for o in range(0, len(update), CHUNK)]


def _record_with_lying_id() -> bytes:
    entry = foreign_entry("ctx-1", b"honest")
    record = bytearray(entry.record)
    record[0] ^= 0xFF  # the claimed id no longer matches the content
    return bytes(record)


def _other_root_type_update() -> bytes:
    doc: Doc = Doc(client_id=999)
    doc.get("not-entries", type=Array).append(foreign_entry("ctx-1").record)
    return doc.get_update()


def _hostile_cases(victim) -> dict[str, tuple[list[bytes], str]]:  # noqa: ANN001
    """name → (frames the peer sends, error class the reason must start with)."""
    full = victim.contexts["ctx-1"].diff(None)
    records = [foreign_entry("ctx-1", bytes([i]) * 10, seq=i + 1).record for i in range(3)]
    rng = random.Random(1)
    root = encode(Root(False, b"\x00" * 16))
    return {
        "garbage": ([b"\x01\x07 this is not a frame"], "RemoteProtocolError"),
        "random-bytes": ([rng.randbytes(300)], "RemoteProtocolError"),
        "empty-frame": ([b""], "RemoteProtocolError"),
        "oversized-frame": ([bytes([1, wire.ROOT, 0]) + b"\x00" * MAX_FRAME],
                            "RemoteProtocolError"),
        "wrong-wire-version": ([bytes([2]) + root[1:]], "RemoteProtocolError"),
        "hello-again": ([encode(Hello(wire.PROTOCOL_VERSION, "default", "b", "", b"n" * 16, 0))],
                        "RemoteProtocolError"),
        "auth-when-open": ([encode(Auth(b"\x00" * 64))], "RemoteProtocolError"),
        "deleting-update": (_chunk("ctx-1", deleting_update(full, 0)), "ForbiddenUpdate"),
        "deleting-whole-doc": (_chunk("ctx-1", self_deleting_update(records)),
                               "ForbiddenUpdate"),
        "deleting-new-context": (_chunk("fresh", self_deleting_update(
            [foreign_entry("fresh", bytes([i]) * 10, seq=i + 1).record for i in range(3)])),
            "ForbiddenUpdate"),
        "entry-id-lies": (_chunk("ctx-1", forged_update([_record_with_lying_id()])),
                          "IntegrityError"),
        "entries-no-signature-vouches-for": (_chunk("ctx-1", forged_update(records)),
                                             "ForgedEntry"),
        "entry-of-another-context": (_chunk("ctx-1", forged_update(
            [foreign_entry("elsewhere").record])), "ForbiddenUpdate"),
        "entry-of-another-context-new": (_chunk("brand-new", forged_update(
            [foreign_entry("elsewhere").record])), "ForbiddenUpdate"),
        "other-root-type": (_chunk("ctx-1", _other_root_type_update()), "ForbiddenUpdate"),
        "not-a-yjs-update": (_chunk("ctx-1", b"\x07\x07\x07 not yjs"), "RemoteProtocolError"),
        "update-bad-context-name": (_chunk("bad name!", forged_update(records)),
                                    "RemoteProtocolError"),
        "overlapping-chunks": ([encode(UpdateChunk("ctx-1", 7, 15, 0, b"a" * 10)),
                                encode(UpdateChunk("ctx-1", 7, 15, 5, b"b" * 10))],
                               "RemoteProtocolError"),
        "transfer-changes-context": ([encode(UpdateChunk("ctx-1", 9, 20, 0, b"a" * 10)),
                                      encode(UpdateChunk("ctx-2", 9, 20, 10, b"b" * 10))],
                                     "RemoteProtocolError"),
        "transfer-changes-size": ([encode(UpdateChunk("ctx-1", 9, 20, 0, b"a" * 10)),
                                   encode(UpdateChunk("ctx-1", 9, 30, 10, b"b" * 10))],
                                  "RemoteProtocolError"),
        "update-over-max-bytes": ([encode(UpdateChunk("ctx-1", 1, 2**32 - 1, 0, b"x"))],
                                  "RemoteProtocolError"),
        "sync1-bad-context-name": ([encode(Sync1("no spaces allowed", True, b"\x00"))],
                                   "RemoteProtocolError"),
        "sync1-bad-state-vector": ([encode(Sync1("ctx-1", True, b"\xff\xff\xff"))],
                                   "RemoteProtocolError"),
        "views-bad-context-name": ([encode(Views((View((), wire.ITEMS,
                                                       items=(("no way!", b"\x00" * 16),)),)))],
                                   "RemoteProtocolError"),
        # 2^29 entries claimed in 5 bytes: refused before anything is sized by the count
        "views-state-vector-claims-too-much": (
            [encode(Views((View((), wire.ITEMS, items=(("ctx-1", b"\x00" * 16),),
                                states=(bytes.fromhex("8080808003"),)),)))],
            "RemoteProtocolError"),
    }


_CASE_NAMES = list(_hostile_cases(_twins(30, 50)[0]))


@pytest.mark.parametrize("case", _CASE_NAMES)
def test_hostile_input_closes_the_session_and_changes_nothing(case: str, swapped: bool) -> None:
    victim, honest = _victim()
    pair = open_pair(victim, honest, swapped)
    before = snapshot_state(victim)
    frames, error_class = _hostile_cases(victim)[case]
    for frame in frames:
        pair.a.session.receive(frame)
    pair.pump()  # the victim's BYE reaches the peer
    closed = _only_closed(pair.a)
    assert closed.error and not closed.by_peer
    assert closed.reason.startswith(f"{error_class}: "), closed.reason
    assert pair.a.session.state is State.CLOSED
    assert snapshot_state(victim) == before
    peer_closed = _only_closed(pair.b)
    assert peer_closed.by_peer and peer_closed.reason == f"peer said: {closed.reason}"[:1011]
    assert not any(isinstance(e, EntriesReceived) for e in pair.a.events)


def test_error_classes_in_reasons_are_real_error_classes() -> None:
    names = {"RemoteProtocolError": RemoteProtocolError, "ForbiddenUpdate": ForbiddenUpdate,
             "IntegrityError": IntegrityError, "ForgedEntry": ForgedEntry}
    assert all(issubclass(cls, Exception) for cls in names.values())
    assert {c for _, c in _hostile_cases(_twins(30, 50)[0]).values()} == set(names)


def test_hostile_update_split_across_chunks_is_refused_after_reassembly() -> None:
    victim, honest = _victim()
    pair = open_pair(victim, honest)
    before = snapshot_state(victim)
    big = [foreign_entry("ctx-1", bytes([i]) * CHUNK, seq=i + 1).record for i in range(5)]
    frames = _chunk("ctx-1", self_deleting_update(big))
    assert len(frames) >= 3
    for frame in frames[:-1]:
        pair.a.session.receive(frame)
    assert pair.a.session.is_open  # unfinished: nothing applied, nothing judged yet
    pair.a.session.receive(frames[-1])
    pair.pump()
    assert _only_closed(pair.a).reason.startswith("ForbiddenUpdate: ")
    assert snapshot_state(victim) == before


def _open_session_on_30_contexts() -> PeerSession:
    """An open session (peer "b" said HELLO) on a ledger of 30 contexts × 2 entries of 5 KB,
    with nothing left to send."""
    victim = new_ledger("a")
    for i in range(60):
        append(victim, f"ctx-{i % 30}", b"x" * 5_000)
    session = PeerSession(LocalInfo("a"), victim, b"N" * 16)
    session.start()
    HandPlayedPeer(Identity.from_seed("b")).open(session)
    session.take_output()
    return session


@pytest.mark.parametrize("prefixes", [
    [()] * 300,  # the same EMPTY view again and again
    [(), (0,), (1,), (0, 0)] * 2,
    [(), (3,)],  # nested: the whole tree, then part of it again
], ids=["repeated", "repeated-nested", "nested"])
def test_one_views_frame_cannot_make_us_send_the_ledger_many_times(prefixes: list) -> None:
    """An EMPTY view at p means "send me everything under p". A 604-byte frame of 300 EMPTY
    views at the root made the session build 300 copies of the ledger (303 MB from 1 MB) in one
    ``receive`` call, before any queue bound could act. Honest VIEWS hold disjoint prefixes."""
    session = _open_session_on_30_contexts()
    session.receive(encode(Views(tuple(View(p, wire.EMPTY) for p in prefixes))))
    sent = sum(map(len, session.take_output()))
    assert sent < 2 * 60 * 5_000, f"{sent} bytes sent for a {len(prefixes)}-view frame"
    assert session.state is State.CLOSED
    assert (session.close_reason or "").startswith("RemoteProtocolError: ")


def test_disjoint_empty_views_send_each_context_once() -> None:
    session = _open_session_on_30_contexts()
    session.receive(encode(Views(tuple(View((i,), wire.EMPTY) for i in range(16)))))
    assert session.is_open
    contexts = [decode(f).context for f in session.take_output()]  # type: ignore[union-attr]
    assert sorted(set(contexts)) == sorted(session.ledger.contexts)


_SV_PROBE = """
import resource, sys, time
from tests.core.helpers import append, new_ledger
from p2p_ledger.core.protocol import LocalInfo, PeerSession
from p2p_ledger.core import wire
from p2p_ledger.core.identity import Identity
from p2p_ledger.core.wire import Sync1, encode
from p2p_ledger.testing import HandPlayedPeer
ledger = new_ledger("a")
append(ledger, "ctx", b"x")
session = PeerSession(LocalInfo("a"), ledger, b"N" * 16)
session.start()
HandPlayedPeer(Identity.from_seed("b")).open(session)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
session.receive(encode(Sync1("ctx", True, bytes.fromhex(sys.argv[1]))))
print(session.close_reason.split(":")[0], time.monotonic() - started,
      (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("state_vector", ["8080808003", "ffffff7f0101", "ffffffff010101"])
def test_a_five_byte_state_vector_cannot_make_us_allocate_a_gigabyte(state_vector: str) -> None:
    """yrs sizes a map by the entry count a state vector claims before reading the entries:
    ``80 80 80 80 03`` (2^29 entries in 5 bytes) cost ~1 GB and ~0.6 s per SYNC1 frame. The
    count must be checked against the bytes first (each entry takes at least two)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _SV_PROBE, state_vector], cwd=root,
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    error, grown_mb = out[0], int(out[2])  # out[1], its time, is a bench figure
    assert error == "RemoteProtocolError"
    assert grown_mb < 100, f"refusing a {len(state_vector) // 2}-byte vector cost {grown_mb} MB"


def test_unfinished_update_bytes_are_bounded() -> None:
    victim, honest = _victim()
    a_info = LocalInfo("a")
    session = PeerSession(a_info, victim, b"N" * 16, max_update_bytes=100_000)
    session.start()
    HandPlayedPeer(Identity.from_seed("b")).open(session)
    assert session.is_open
    for i in range(3):  # three contexts, each 40 KB into a 90 KB transfer
        session.receive(encode(UpdateChunk(f"x{i}", i + 1, 90_000, 0, b"z" * 40_000)))
    assert session.state is State.CLOSED
    assert "too many unfinished update bytes" in (session.close_reason or "")


@pytest.mark.parametrize("fresh", [False, True], ids=["same-link", "fresh-link"])
@pytest.mark.parametrize("holder", ["starter", "answerer"])
def test_one_missing_entry_below_two_inner_levels_takes_few_half_trips(
        holder: str, fresh: bool) -> None:
    """The round starter that knows (from the peer's last ROOT) that the roots differ sends its
    top view with its ROOT, and ITEMS views carry state vectors, so whoever compares the items
    sends the missing entry (or a SYNC1 asking for it) at once."""
    a, b = new_ledger("a"), new_ledger("b")
    names = [f"ctx-{i}" for i in range(600)]  # inner views at depths 0 and 1, buckets at 2
    for name in names:
        appended = a.append([a.prepare(name, "k", b"x")])
        b.apply_remote(name, appended.updates[0][1])
    assert a.tree.node((0,)) is not None and a.tree.node((0,)).children is not None  # type: ignore[union-attr]
    pair = open_pair(a, b)
    pair.first.session.send_root()  # in sync: the starter learns the peer's root
    pair.pump()
    assert pair.messages == 2
    append(a if holder == "starter" else b, "ctx-7", b"late")
    if fresh:  # a reconnect: HELLO carries the roots, so the starter knows they differ
        pair = open_pair(a, b)
    pair.reset_counters()
    pair.first.session.send_root()
    pair.pump()
    assert a.root() == b.root()
    assert pair.bytes < 1536, pair.bytes
    roots = [decode(f) for f in pair.first.frames_sent if f[1] == wire.ROOT]
    if holder == "starter" or fresh:  # it knows the roots differ: the top view goes along
        assert roots[-1].view is not None and roots[-1].view.kind == wire.INNER  # type: ignore[union-attr]
    else:  # a bare ROOT (the starter's root did not move); the answerer shows its top
        assert roots[-1].view is None  # type: ignore[union-attr]
    # The starter holding the entry: 2.5 RT; the other: its ITEMS land on the holder's side
    # (fresh) or the holder's ITEMS on it, and it asks once: 3 RT at most either way.
    assert pair.flights <= (5 if holder == "starter" else 6), pair.flights
    # The next round finds the roots equal: one ROOT each way.
    pair.reset_counters()
    pair.first.session.send_root()
    pair.pump()
    assert pair.messages == 2


def test_items_with_state_vectors_send_what_is_missing_without_asking() -> None:
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "notes", b"one")
    for name in ("notes",):
        b.apply_remote(name, a.bundle_diff(name, None))
    append(a, "notes", b"two")
    pair = open_pair(a, b)
    sv_b = b.contexts["notes"].state_vector()
    view = wire.View((), wire.ITEMS, items=(("notes", b.contexts["notes"].root()),),
                     states=(sv_b,))
    pair.a.session.receive(encode(Views((view,))))
    sent = [decode(f) for f in pair.a.session.take_output()]
    assert [type(m).__name__ for m in sent] == ["UpdateChunk"]  # b lacks, has nothing more


@pytest.mark.parametrize("frame", [
    bytes([wire.WIRE_VERSION, wire.ROOT, 3]) + bytes(32),  # a reply with a view
    bytes([wire.WIRE_VERSION, wire.ROOT, 4]) + bytes(32),
])
def test_bad_root_flags_are_refused(frame: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(frame)


def test_a_root_with_a_view_below_the_top_closes_the_link() -> None:
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "x", b"1")
    pair = open_pair(a, b)
    frame = encode(Root(False, bytes(16), View((3,), wire.EMPTY)))
    pair.a.session.receive(frame)
    assert pair.a.session.close_reason is not None
    assert "top" in pair.a.session.close_reason


def test_the_same_items_view_twice_is_answered_once() -> None:
    """A context bigger than a round's worth of transfer must not be sent again by every round
    that sees it still missing (the first answer is on its way), like a repeated SYNC1."""
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "notes", b"one")
    pair = open_pair(a, b)
    absent = wire.View((), wire.ITEMS, items=())  # a whole list without "notes"
    behind = wire.View((), wire.ITEMS, items=(("notes", bytes(16)),), states=(b"\x00",))
    for view in (absent, behind):
        pair.a.session.receive(encode(Root(False, bytes(16))))  # a new round each time
        pair.a.session.receive(encode(Root(False, bytes(16))))
        pair.a.session.take_output()
        pair.a.session.receive(encode(Views((view,))))
        assert [f[1] for f in pair.a.session.take_output()] == [UPDATE]
        pair.a.session.receive(encode(Views((view,))))
        assert pair.a.session.take_output() == []
        pair.a.session.receive(encode(Root(False, bytes(16))))  # the next round: still on its way
        pair.a.session.take_output()
        pair.a.session.receive(encode(Views((view,))))
        assert pair.a.session.take_output() == []


def _new_round_then(session: PeerSession, view: wire.View) -> list[bytes]:
    """The peer starts a round, then shows ``view``: what ``session`` sends for the view."""
    session.receive(encode(Root(False, bytes(16))))
    session.take_output()
    session.receive(encode(Views((view,))))
    return session.take_output()


def test_contexts_sent_for_an_empty_view_are_not_sent_again_by_the_next_rounds_view() -> None:
    """Regression: a fresh peer (an EMPTY view) got every context at once, and a view of the
    next round still lacking one that was on its way (a catch-up longer than a round) got it
    a second time: the EMPTY view's answers were not noted as offered."""
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "notes", b"one")
    pair = open_pair(a, b)
    assert [f[1] for f in _new_round_then(pair.a.session, wire.View((), wire.EMPTY))] == [UPDATE]
    assert _new_round_then(pair.a.session, wire.View((), wire.ITEMS, items=())) == []


def test_paced_answers_wait_for_room_and_leave_one_context_at_a_time() -> None:
    """With ``LocalInfo.paced`` an answer is built only when the driver says the link has
    room (``send_waiting``), one context at a time, oldest question first; a question asked
    again while its answer waits or is on its way is not answered twice; what leaves
    converges the peer."""
    a, b = new_ledger("a"), new_ledger("b")
    for name in ("c0", "c1", "c2"):
        append(a, name, name.encode())
    pair = open_pair(a, b, a_info=LocalInfo(a.node_id, paced=True))
    session = pair.a.session
    assert _new_round_then(session, wire.View((), wire.EMPTY)) == []
    assert session.answers_waiting
    session.receive(encode(Sync1("c1", False, b"\x00")))  # asked again while waiting
    sent: list[str] = []
    for _ in range(6):  # (bounded: an answer sent twice shows in ``sent``)
        if not session.answers_waiting:
            break
        session.send_waiting()
        frames = session.take_output()
        assert {decode(f).context for f in frames} == {c := decode(frames[0]).context}
        sent.append(c)
        for frame in frames:
            pair.b.session.receive(frame)
        if session.answers_waiting:
            # rounds go by while the answers leave (a long catch-up): none is sent twice
            for _ in range(2):
                assert _new_round_then(session, wire.View((), wire.ITEMS, items=())) == []
    assert sorted(sent) == ["c0", "c1", "c2"]
    # and for a round after the last left
    assert _new_round_then(session, wire.View((), wire.ITEMS, items=())) == []
    assert not session.answers_waiting
    assert b.root() == a.root()


def test_paced_answers_fill_the_room_the_driver_gives() -> None:
    """One ``send_waiting`` builds answers until they make the bytes the link has room for:
    the driver does not pass once per answer (2,000 small contexts cost the sender 26% more
    CPU that way)."""
    a, b = new_ledger("a"), new_ledger("b")
    for name in ("c0", "c1", "c2"):
        append(a, name, name.encode())
    pair = open_pair(a, b, a_info=LocalInfo(a.node_id, paced=True))
    session = pair.a.session
    _new_round_then(session, wire.View((), wire.EMPTY))
    session.send_waiting(1)
    first = session.take_output()
    assert len({decode(f).context for f in first}) == 1 and session.answers_waiting
    session.send_waiting(sum(map(len, first)) + 1)  # room for a little more than one
    assert len({decode(f).context for f in session.take_output()}) == 2
    assert not session.answers_waiting



def test_the_cluster_key_proof_keeps_its_format() -> None:
    """Golden vectors: nodes of different builds must compute the same proofs (computed apart
    with hmac and cryptography over nonce ‖ sha256(prover's HELLO) ‖ sha256(verifier's))."""
    transcript = link_transcript(bytes(16), b"hello of the prover", b"hello of the verifier")
    assert auth_mac(bytes(range(32)), transcript).hex() == (
        "bf66c9e15c4e9658ab67632a9669e700019dd533d3688a1eaac5f22a3bf303ee")
    assert Identity.from_private_bytes(bytes(range(32))).sign_link(transcript).hex() == (
        "976c0b0b556918f9364ecfaf29f7e8c0f8d364f0210a71d65ffc9b6f3a3143396"
        "06dee9d22965dfe531ef431c35dd8552c7cd53e1fa89d8e5c80831e1bbe8404")


def test_peer_urls_at_their_edges() -> None:
    from p2p_ledger.core.protocol import MAX_URL, check_peer_url

    longest = "ws://" + "h" * (MAX_URL - 5)
    assert check_peer_url(longest) == longest
    for bad in (longest + "h", "ws://", "w-s://h", "ws://a\x01b", "ws://hé", "ws://a b"):
        with pytest.raises(RemoteProtocolError, match=r"^peer named an invalid URL "):
            check_peer_url(bad)


def test_a_fresh_session_does_not_know_whether_the_peer_agrees() -> None:
    session = PeerSession(LocalInfo("a"), new_ledger("a"), b"N" * 16)
    assert session.agrees_with(bytes(32)) is None


def _open_session(ledger_name: str = "a") -> PeerSession:
    session = PeerSession(LocalInfo(ledger_name), new_ledger(ledger_name), b"N" * 16)
    session.start()
    HandPlayedPeer(Identity.from_seed("b")).open(session)
    session.take_output()
    return session


def test_pushes_say_whether_they_come_from_their_origin() -> None:
    session = _open_session()
    session.push("ctx", b"u1", own=True)
    session.push("ctx", b"u2")
    own, forwarded = (decode(f) for f in session.take_output())
    assert isinstance(own, UpdateChunk) and own.pushed and own.own
    assert isinstance(forwarded, UpdateChunk) and forwarded.pushed and not forwarded.own


def test_asking_for_missing_data_happens_once_per_state_and_round_and_only_when_open() -> None:
    session = _open_session()
    append(session.ledger, "ctx", b"mine")
    session.ask_missing("ctx")
    session.ask_missing("ctx")  # the same state vector, the same round: not again
    (ask,) = (decode(f) for f in session.take_output())
    assert ask == Sync1("ctx", False, session.ledger.contexts["ctx"].state_vector())
    session.ask_missing("other")  # a context we do not have: ask for all of it
    assert [decode(f) for f in session.take_output()] == [Sync1("other", False, b"\x00")]
    session.send_root()  # a new round
    session.take_output()
    session.ask_missing("ctx")
    assert len(session.take_output()) == 1
    session.close("bye")
    session.take_output()
    session.ask_missing("fresh")
    assert session.take_output() == []


def test_announcements_are_split_into_frames_and_prune_is_sent_once() -> None:
    session = _open_session()
    digests = tuple(bytes([i % 256, i // 256]) * 8 for i in range(wire.MAX_DIGESTS + 1))
    session.announce(digests)
    frames = [decode(f) for f in session.take_output()]
    assert [len(f.digests) for f in frames] == [wire.MAX_DIGESTS, 1]  # type: ignore[union-attr]
    origin = b"\x07" * 32
    session.prune(origin)  # ours only: the peer is not told
    assert session.take_output() == [] and not session.eager_for(origin)
    session.prune(origin, tell=True)
    session.prune_all()
    session.prune_all()
    assert [decode(f) for f in session.take_output()] == [wire.Prune(origin), wire.Prune()]
    assert session.eager_for(b"\x08" * 32)  # an empty PRUNE we sent changes nothing of ours
    session.graft(())
    assert [decode(f) for f in session.take_output()] == [wire.Graft(())]
    session.prune_all()  # after a GRAFT the peer forwards everything again: ask again
    assert [decode(f) for f in session.take_output()] == [wire.Prune()]
    session.receive(encode(wire.Prune()))  # the peer's empty PRUNE: new origins' direct pushes
    assert not session.eager_for(b"\x08" * 32) and session.eager_for(b"\x08" * 32, False)
    session.unprune(b"\x08" * 32)
    assert session.eager_for(b"\x08" * 32)
    session.receive(encode(wire.Graft(())))
    assert session.eager
    session.close("bye")
    session.take_output()
    session.prune(origin, tell=True)
    session.prune_all()
    assert session.take_output() == [] and session.eager


def test_the_same_sync1_is_answered_once_per_round_and_a_different_one_at_once() -> None:
    session = _open_session()
    append(session.ledger, "ctx", b"mine")
    ask = Sync1("ctx", False, b"\x00")
    session.receive(encode(ask))
    assert [type(decode(f)) for f in session.take_output()] == [UpdateChunk]
    session.receive(encode(ask))  # the same question, nothing changed: the answer is on its way
    assert session.take_output() == []
    session.receive(encode(Sync1("ctx", True, b"\x00")))  # another question: answered at once
    assert [type(decode(f)) for f in session.take_output()] == [UpdateChunk, Sync1]
    session.send_root()
    session.send_root()  # two rounds later a lost answer is sent again
    session.take_output()
    session.receive(encode(ask))
    assert [type(decode(f)) for f in session.take_output()] == [UpdateChunk]


def test_views_carry_state_vectors_so_a_difference_needs_no_sync1() -> None:
    """The answering side's ITEMS carry its state vectors: the starter, holding more, sends
    what is missing at once, with no SYNC1 question."""
    a, b = new_ledger("a"), new_ledger("b")
    append(a, "shared", b"0")
    pair = open_pair(a, b)
    pair.a.session.send_root()
    pair.pump()
    assert ordered_ids(a, "shared") == ordered_ids(b, "shared")
    append(a, "shared", b"1")
    sent_a, sent_b = len(pair.a.frames_sent), len(pair.b.frames_sent)
    pair.a.session.send_root()
    pair.pump()
    assert ordered_ids(a, "shared") == ordered_ids(b, "shared")
    kinds = [f[1] for f in pair.a.frames_sent[sent_a:] + pair.b.frames_sent[sent_b:]]
    assert sorted(kinds) == sorted([wire.ROOT, wire.VIEWS, wire.UPDATE])


# ---- answers in parts --------------------------------------------------------------------------


def _updates_sent(side) -> list[UpdateChunk]:
    return [m for m in map(decode, side.frames_sent) if isinstance(m, UpdateChunk)]


@pytest.mark.parametrize("writers", [1, 3])
def test_a_context_larger_than_the_receivers_update_limit_arrives_in_parts(writers: int) -> None:
    """Regression: a fresh peer got a whole context as one answer, and a receiver refuses an
    update above its ``max_update_bytes`` (256 MiB: ~1.2M entries of 100 B), so a context past
    that could never be fetched. Here the limits are small: ~65 kB of entries, a 40 kB limit.
    The answer comes in parts from about ``part_bytes`` up to where every chain in it has a
    head (one entry per commit keeps a head every 64), each taken on its own, the receiver
    asking for the next one; other writers' entries in between too."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    others = [open_ledger(MemoryStorage(), f"w{i}") for i in range(1, writers)]
    for i in range(240):
        append(a, "big", f"entry {i:04} " + "x" * 200)
        for other in others:  # another writer's entry in between, its chain's tip (a head)
            if i == 50 * (others.index(other) + 1):
                sync(a, other, "big")
                append(other, "big", f"theirs {i}")
                sync(other, a, "big")
    cold = open_ledger(storage, "a", "a-2")  # nothing loaded: the answers come from the rows
    cold.part_bytes = 4_000
    fresh = open_ledger(MemoryStorage(), "fresh")
    pair = open_pair(cold, fresh)
    pair.b.session.max_update_bytes = 40_000
    pair.a.session.send_root()
    pair.pump()
    assert fresh.root() == cold.root() and pair.b.session.is_open
    transfers = {c.transfer: c.total for c in _updates_sent(pair.a)}
    assert len(transfers) > 2 and max(transfers.values()) <= 40_000
    assert cold.loads == 0


def test_interleaved_writers_get_bounded_parts_that_verify() -> None:
    """Regression: three writers appending at once, one entry per commit each, their anchors
    (a head every 64 seqs) out of phase, reach a head together only at their tips: a part
    grew until then, so the whole context went as one answer. A part now stops past twice
    ``part_bytes`` anyway and vouches for each open chain with its records up to the next
    head: every part is bounded, authentic on its own, and the receiver's store verifies."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    others = [open_ledger(MemoryStorage(), f"w{i}") for i in (1, 2)]
    for i in range(300):
        append(a, "big", f"entry {i:04} " + "x" * 200)
        for k, other in enumerate(others):  # each joins later: anchors out of phase
            if i >= 21 * (k + 1):
                sync(a, other, "big")
                append(other, "big", f"theirs {k} {i:04} " + "y" * 200)
                sync(other, a, "big")
    cold = open_ledger(storage, "a", "a-2")
    cold.part_bytes = 4_000
    store = MemoryStorage()
    fresh = open_ledger(store, "fresh")
    pair = open_pair(cold, fresh)
    pair.a.session.send_root()
    pair.pump()
    assert fresh.root() == cold.root() and pair.b.session.is_open
    totals = [c.total for c in _updates_sent(pair.a) if c.offset == 0]
    # 2 × part_bytes, then at most one row and the vouchers (≤ 64 records of ~300 B) per chain
    assert len(totals) > 10 and max(totals) <= 2 * 4_000 + 3 * 64 * 300, totals
    assert open_ledger(store, "fresh", "fresh-2", verify=True).verify() == []


def test_a_peer_lying_about_its_state_vector_gets_bounded_parts_and_no_loop() -> None:
    """A hostile peer names state vectors that hold part of a row, clocks beyond ours, a client
    we never saw, or asks again and again: each answer is one bounded part (the rows from the
    first one it lacks up to the first head past ``part_bytes``: 64 entries here), a repeated
    question is answered once per round, and an update flagged MORE
    that brings nothing makes us ask nothing (no loop between two nodes)."""
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    session = _open_session()
    ledger = session.ledger
    ledger.part_bytes = 3_000
    for i in range(120):
        append(ledger, "big", f"entry {i} " + "y" * rng.randrange(50, 400))
    (client, end), = decode_state_vector(ledger.state_vector("big")).items()
    bound = ledger.part_bytes + 64 * 700  # the rows (entries < 500 B) up to a head
    for _ in range(40):
        lie = {client: rng.choice([0, 1, rng.randrange(end), end - 1, end + 5, 2**31])}
        if rng.random() < 0.3:
            lie[rng.randrange(1, 2**32)] = rng.randrange(2**20)
        question = Sync1("big", False, encode_state_vector(lie))
        session.receive(encode(question))
        sent = [decode(f) for f in session.take_output()]
        assert all(isinstance(m, UpdateChunk) for m in sent), (lie, sent)
        totals = {m.transfer: m.total for m in sent}  # a part, and the next one ahead
        assert len(totals) <= 2 and max(totals.values(), default=0) <= bound
        if lie[client] >= end:
            assert not sent  # they hold all of it, they say
        session.receive(encode(question))  # again: its answer is on its way
        assert session.take_output() == []
        session.send_root()  # a new round
        session.take_output()
    # A peer sending parts flagged MORE that bring nothing new gets no question back.
    part = ledger.bundle_diff("big", None)
    assert part is not None and ledger.last_diff_partial
    for transfer in range(1, 4):
        session.receive(encode(UpdateChunk("big", transfer, len(part), 0, part, more=True)))
        assert [type(decode(f)) for f in session.take_output()] == []


def test_a_taken_part_asks_for_the_next_one() -> None:
    a, b = new_ledger("a"), _open_session("c")
    a.part_bytes = 2_000
    for i in range(150):  # (one entry per commit: a head every 64, where a part can stop)
        append(a, "big", f"entry {i} " + "z" * 100)
    part = a.bundle_diff("big", None)
    assert part is not None and a.last_diff_partial
    b.receive(encode(UpdateChunk("big", 1, len(part), 0, part, more=True)))
    (ask,) = map(decode, b.take_output())
    assert ask == Sync1("big", False, b.ledger.state_vector("big"))
    rest = a.bundle_diff("big", ask.state_vector)
    assert rest is not None
    b.receive(encode(UpdateChunk("big", 2, len(rest), 0, rest, more=a.last_diff_partial)))


def test_a_peer_from_before_answers_in_parts_gets_them_unflagged_and_asks_in_rounds() -> None:
    """A peer whose HELLO lacks FLAG_PARTS (it would refuse UPDATE flag 4) gets the parts
    without MORE, and its rounds ask for the rest: it still gets the whole context."""
    storage = MemoryStorage()
    a = open_ledger(storage, "a")
    for i in range(120):
        append(a, "big", f"entry {i:04} " + "x" * 200)
    cold = open_ledger(storage, "a", "a-2")
    cold.part_bytes = 4_000
    old = open_ledger(MemoryStorage(), "old")
    pair = SessionPair(cold, old, b_info=LocalInfo("old", parts=False))
    pair.start()
    for _ in range(40):
        pair.a.session.send_root()
        pair.pump()
        if old.root() == cold.root():
            break
    assert old.root() == cold.root()
    updates = _updates_sent(pair.a)
    assert len({m.transfer for m in updates}) > 1 and not any(m.more for m in updates)


def test_an_items_view_pairs_each_root_with_its_own_state_vector() -> None:
    """A receiver holding staged rows (group commit) built its ITEMS view from the roots of its
    last commit and then from state vectors that flushed them: equal state vectors, different
    roots, so the full peer descended the context's tree and loaded the whole context (7.7 s
    for 1M entries, 83 s for 10M, found as a node that did not stop within 60 s of SIGTERM)."""
    from p2p_ledger.core.protocol import _short_sv

    from .helpers import append

    a, peer = new_ledger("a"), new_ledger("p")
    append(a, "ctx", "ours")
    a.defer_commits = True
    assert len(a.apply_remote("ctx", append(peer, "ctx", "theirs").updates[0][1])) == 1
    assert a.has_staged()
    session = PeerSession(LocalInfo("a"), a, b"N" * 16)
    [view] = session._items_views(())
    [(name, root)] = view.items
    assert name == "ctx" and not a.has_staged()
    assert root == a.context_root("ctx")[:wire.DIGEST_PREFIX]
    assert view.states == (_short_sv(a.state_vector("ctx")),)


def test_a_view_received_while_rows_are_staged_asks_for_no_context_tree() -> None:
    """The other side of the same race: the receiver compared the peer's roots with those of
    its last commit, then read state vectors that committed its staged rows: equal vectors,
    different roots, and it sent a CTREE that made the full peer load the context whole."""
    from .helpers import append, sync_all

    a, peer = new_ledger("a"), new_ledger("p")
    append(a, "ctx", "ours")
    sync_all([a, peer])
    bundle = append(peer, "ctx", "theirs").updates[0][1]
    a.defer_commits = True
    assert len(a.apply_remote("ctx", bundle)) == 1 and a.has_staged()
    [view] = PeerSession(LocalInfo("p"), peer, b"P" * 16)._items_views(())
    session = PeerSession(LocalInfo("a"), a, b"N" * 16)
    session._on_view(view)
    assert "CTREE" not in session.sent_by_type and not session.take_output()
    assert a.context_root("ctx") == peer.context_root("ctx")
