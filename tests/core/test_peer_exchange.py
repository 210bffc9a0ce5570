"""Peer exchange against a hostile member: PEERS are bounded per frame and in the peer table,
and only an open (with a cluster key: authenticated) link's PEERS are heard.

Regression (issue 8, item 6): 2000 made-up URLs in PEERS frames gave a 2001-entry peer table
(+26 MB) and the node dialed every one of them.
"""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from p2p_ledger.core import wire
from p2p_ledger.core.identity import Identity
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.node import Dial, NodeConfig, NodeCore, PeerState, Send
from p2p_ledger.core.protocol import LocalInfo, PeerSession
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.core.wire import MAX_PEERS_PER_FRAME, Peers, decode, encode
from p2p_ledger.testing import HandPlayedPeer

SEED = 8
print(f"seed {SEED}")


def _ledger(node_id: str) -> Ledger:
    return Ledger.open(MemoryStorage(), node_id, f"{node_id}-instance", now_ns=lambda: 1)


def _peers_frame(peers: list[tuple[str, str, str]]) -> bytes:
    """A PEERS frame built by hand (``encode`` refuses more than the bound)."""
    body = struct.pack(">H", len(peers))
    for origin, node_id, url in peers:
        body += bytes.fromhex(origin)
        for text in (node_id.encode(), url.encode()):
            body += struct.pack(">H", len(text)) + text
    return bytes([wire.WIRE_VERSION, wire.PEERS]) + body


class Hostile:
    """A member that completes the handshake honestly, then sends whatever a test asks."""

    def __init__(self, key: bytes | None = None, **config: object) -> None:
        self.core = NodeCore(_ledger("victim"), NodeConfig(
            node_id="victim", url="ws://victim:1", key=key, **config),  # type: ignore[arg-type]
            random.Random(SEED))
        self.now = 0.0
        self.conn = self.core.connection_accepted(self.now)
        self.session = PeerSession(LocalInfo("mallory", url="ws://mallory:1", key=key),
                                   _ledger("mallory"), bytes(16))
        self.session.start()
        self.pump()

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            for frame in self.session.take_output():
                self.core.frame_received(self.conn, frame, self.now)
                moved = True
            for action in self.core.take_actions():
                if isinstance(action, Send) and action.conn == self.conn:
                    self.session.receive(action.frame)
                    moved = True
            if not moved:
                return

    def send(self, frame: bytes) -> None:
        self.core.frame_received(self.conn, frame, self.now)

    def dials(self) -> list[str]:
        self.now += 1.0
        self.core.tick(self.now)
        return [a.url for a in self.core.take_actions() if isinstance(a, Dial)]


def _made_up(n: int, start: int = 0) -> list[tuple[str, str, str]]:
    return [(_origin(f"fake{i}"), f"fake{i}", f"ws://127.0.0.1:9/fake{i}")
            for i in range(start, start + n)]


def _origin(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()  # (any 32 bytes name an origin here)


def test_2000_made_up_urls_fill_a_bounded_table() -> None:
    h = Hostile()
    assert h.core.links[h.conn].session.is_open
    for start in range(0, 2000, MAX_PEERS_PER_FRAME):
        h.send(_peers_frame(_made_up(MAX_PEERS_PER_FRAME, start)))
    learned = [p for p in h.core.peers.values() if not p.seed]
    config = h.core.config
    # mallory's own URL (from HELLO) and what its PEERS named: one link's share at most.
    assert len(learned) == config.max_learned_per_link
    assert len(set(h.dials())) <= config.max_learned_per_link
    assert h.core.links[h.conn].session.is_open  # well-formed hints are not a violation


def test_table_bound_holds_across_links_and_dropped_peers_make_room() -> None:
    h = Hostile(max_learned_per_link=1000, max_learned_peers=50)
    h.send(_peers_frame(_made_up(64)))
    learned = [p for p in h.core.peers.values() if not p.seed]
    assert len(learned) == 50
    learned[0].state = PeerState.DROPPED
    h.send(_peers_frame(_made_up(1, start=500)))
    assert "ws://127.0.0.1:9/fake500" in h.core.peers
    assert learned[0].url not in h.core.peers
    assert len([p for p in h.core.peers.values() if not p.seed]) == 50


def test_oversized_peers_frame_closes_the_link() -> None:
    h = Hostile()
    h.send(_peers_frame(_made_up(MAX_PEERS_PER_FRAME + 1)))
    assert h.conn not in h.core.links
    assert len(h.core.peers) <= 1
    with pytest.raises(ValueError):
        encode(Peers(tuple((bytes.fromhex(o), n, u)
                           for o, n, u in _made_up(MAX_PEERS_PER_FRAME + 1))))


@pytest.mark.parametrize("bad", [("not an id!", "ws://x:1/"), ("ok", "no-scheme"),
                                 ("ok", "ws://" + "x" * 300), ("ok", "ws://a b/")])
def test_malformed_peer_entries_close_the_link(bad: tuple[str, str]) -> None:
    h = Hostile()
    h.send(_peers_frame([(_origin("x"), *bad)]))
    assert h.conn not in h.core.links
    assert bad[1] not in h.core.peers


def test_a_peers_entry_with_a_short_origin_closes_the_link() -> None:
    h = Hostile()
    h.send(_peers_frame([(_origin("x"), "ok", "ws://x:1/")])[:-20])
    assert h.conn not in h.core.links and "ws://x:1/" not in h.core.peers


def test_a_peer_named_with_our_own_origin_is_not_learned() -> None:
    """PEERS naming the victim's own origin at another URL (a relay's, a lie): never dialed."""
    h = Hostile()
    h.send(_peers_frame([(h.core.ledger.origin, "victim", "ws://elsewhere:1/")]))
    assert h.core.links[h.conn].session.is_open
    assert "ws://elsewhere:1/" not in h.core.peers


@pytest.mark.parametrize("key", [None, b"cluster-secret"], ids=["open-cluster", "cluster-key"])
def test_peers_before_authentication_are_not_heard(key: bytes | None) -> None:
    """(since protocol 8 an open cluster's links prove their origin too: PEERS wait for it)"""
    core = NodeCore(_ledger("victim"), NodeConfig(node_id="victim", url="ws://victim:1",
                                                  key=key), random.Random(SEED))
    conn = core.connection_accepted(0.0)
    hello = PeerSession(LocalInfo("mallory", url="ws://mallory:1", key=key), _ledger("mallory"),
                        bytes(16))
    hello.start()
    [frame] = hello.take_output()
    core.frame_received(conn, frame, 0.0)  # HELLO, but no AUTH follows
    core.frame_received(conn, _peers_frame(_made_up(10)), 0.0)
    assert conn not in core.links  # PEERS in auth-wait is a violation
    assert not core.peers
    # A wrong key's AUTH fails before anything is learned, too.
    conn = core.connection_accepted(0.0)
    core.frame_received(conn, frame, 0.0)
    # (another key's AUTH: the wrong cluster key, or without one a signature of another key)
    wrong = HandPlayedPeer(Identity.from_seed("not mallory"), "mallory",
                           key=b"wrong" if key else None)
    core.frame_received(conn, wrong.auth(core.links[conn].session.hello), 0.0)
    core.frame_received(conn, _peers_frame(_made_up(10)), 0.0)
    assert conn not in core.links and not core.peers


def test_honest_peers_frames_stay_within_the_bound() -> None:
    session = PeerSession(LocalInfo("a"), _ledger("a"), bytes(16))
    session.start()
    HandPlayedPeer(Identity.from_seed("b")).open(session)
    session.take_output()
    session.send_peers(_made_up(150))
    frames = [decode(f) for f in session.take_output()]
    assert [len(f.peers) for f in frames if isinstance(f, Peers)] == [64, 64, 22]
