"""NodeCore behaviour that the mutation runs of node.py found untested (README "Mutation
testing"): the peer event lines, the log, shutdown, mDNS bookkeeping, the IHAVE/GRAFT repair;
from the sample of seed 1421, the peer events' urls and origins, backoff and drop bounds, the
per-origin forwarding bounds, the IHAVE wait after a GRAFT, the Close actions."""

from __future__ import annotations

import hashlib

import pytest

from p2p_ledger.core import node, wire
from p2p_ledger.core.discovery import Announcement
from p2p_ledger.core.identity import Identity
from p2p_ledger.core.node import (
    MAX_DISCOVERED,
    MAX_MISSING,
    MAX_MISSING_PER_LINK,
    PUSH_CACHE_BYTES,
    SERVED_MEMORY,
    Close,
    NodeConfig,
    NodeCore,
    PeerEvent,
    PeerState,
)
from p2p_ledger.core.wire import MAX_DIGESTS, PROTOCOL_VERSION, Bye, decode

from .helpers import CoreNet, fork_into, new_ledger, origin_of

A, B, C = "ws://h/a", "ws://h/b", "ws://h/c"


def _ann(node_id: str, *urls: str, protocol: int = PROTOCOL_VERSION) -> Announcement:
    return Announcement(node_id, "default", protocol, urls, Identity.from_seed(node_id).origin)


# ---- the lines a driver logs ---------------------------------------------------------------------

@pytest.mark.parametrize(("event", "line"), [
    (PeerEvent("connected", B, "b"), "peer b (ws://h/b) connected"),
    (PeerEvent("unreachable", B, reason="refused by the OS", retry_in=1.25),
     "peer ws://h/b unreachable: refused by the OS; next try in 1.2s"),
    (PeerEvent("lost", "", "b", "peer closed"), "peer b lost: peer closed"),
    (PeerEvent("refused", "inbound", "b", "bad key", 30.0),
     "peer b (inbound) refused: bad key; next try in 30.0s"),
])
def test_a_peer_event_is_one_line_naming_the_peer(event: PeerEvent, line: str) -> None:
    assert event.text() == line


def test_take_log_returns_the_node_s_lines_then_the_ledger_s_fork_lines_once() -> None:
    net = CoreNet(1)
    a = net.add(A)
    a.peer_discovered("b", _ann("b", B), 0.0)
    second = fork_into(a.ledger, "c1")[1].id
    lines = a.take_log()
    assert lines[0] == "mdns: discovered b at ws://h/b"
    assert len(lines) == 2 and lines[1].startswith("fork in c1: writer ") and second in lines[1]
    assert a.take_log() == [] and a.ledger.fork_log == []


def test_shutdown_says_bye_on_every_link_and_grafts_nothing() -> None:
    """A - B - C - D: A's pushes reach C through B. When C shuts down, losing B (A's path) must
    not make it ask D to forward A's pushes again (a GRAFT on a link about to close)."""
    net = CoreNet(2)
    a = net.add(A, discovery=False, gossip_interval=30.0)
    net.add(B, seeds=(A,), discovery=False, gossip_interval=30.0)
    c = net.add(C, seeds=(B, "ws://h/d"), discovery=False, gossip_interval=30.0)
    net.add("ws://h/d", discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    assert net.connected(C) == {B, "ws://h/d"} and net.connected(A) == {B}
    a.append([a.ledger.prepare("ctx", "k", b"x")], now=net.now)
    net.flush()
    assert c.ledger.context_entries("ctx") == 1
    for core in net.cores.values():
        core.take_events()
    sent = len(net.sent)
    c.shutdown(net.now)
    net.flush()
    frames = [decode(f) for _, src, _, f in net.sent[sent:] if src == C]
    assert frames == [Bye("node shutting down")] * 2 and c.links == {}
    lost = [e.text() for url in (B, "ws://h/d") for e in net.cores[url].take_events()]
    assert lost == ["peer c (ws://h/c) lost: peer said: node shutting down"] * 2


# ---- mDNS bookkeeping ----------------------------------------------------------------------------

def test_the_discovered_and_ignored_bounds_log_each_instance_exactly() -> None:
    net = CoreNet(3)
    a = net.add(A)
    for i in range(MAX_DISCOVERED + 1):
        a.peer_discovered(f"n{i}", _ann(f"n{i}", f"ws://h/n{i}"), 0.0)
    assert a.take_log()[-1] == f"mdns: ignoring n{MAX_DISCOVERED} (default): too many " \
        "discovered peers"
    other = net.add(B)
    for i in range(MAX_DISCOVERED + 1):
        other.peer_discovered(f"o{i}", _ann(f"o{i}", f"ws://h/o{i}", protocol=1), 0.0)
    assert len(other.take_log()) == MAX_DISCOVERED, "the ignored instances are bounded too"


def test_an_instance_ignored_then_accepted_is_ignored_again_with_a_new_line() -> None:
    net = CoreNet(4)
    a = net.add(A)
    old = _ann("b", B, protocol=PROTOCOL_VERSION - 1)
    ignored = f"mdns: ignoring b (default): protocol {PROTOCOL_VERSION - 1}"
    a.peer_discovered("b", old, 0.0)
    a.peer_discovered("b", _ann("b", B), 0.0)
    a.peer_discovered("b", old, 0.0)
    assert a.take_log() == [ignored, "mdns: discovered b at ws://h/b", ignored]
    a.peer_lost("b", 0.0)
    a.peer_discovered("b", old, 0.0)  # it went away and came back: told again
    assert a.take_log() == ["mdns: b is no longer advertised", ignored]


def test_a_re_announcement_logs_nothing_and_keeps_the_peer_as_it_is() -> None:
    net = CoreNet(5)
    a = net.add(A, seeds=(B,))
    net.add(B)
    a.peer_discovered("b", _ann("b", B, "ws://h/b2"), 0.0)
    assert a.take_log() == ["mdns: discovered b at ws://h/b ws://h/b2"]
    assert a.peers["ws://h/b2"].label == "b"
    net.run_until(1.0)
    dials = len(net.dials)
    a.peer_discovered("b", _ann("b", B, "ws://h/b2"), net.now)
    net.run_until(2.0)
    assert a.take_log() == [] and len(net.dials) == dials
    assert a.peers[B].state is PeerState.CONNECTED and a.peers[B].seed


def test_a_rediscovered_seed_in_backoff_stays_a_seed_with_its_failures_reset() -> None:
    net = CoreNet(6)
    a = net.add(A, seeds=(B,), backoff_base=5.0)
    net.run_until(1.0)  # B is not up: a's dials fail
    assert a.peers[B].state is PeerState.BACKOFF and a.peers[B].failures >= 1
    a.peer_discovered("b", _ann("b", B), net.now)
    peer = a.peers[B]
    assert peer.seed and peer.state is PeerState.NEW and peer.failures == 0
    assert peer.retry_at == net.now and peer.failing_since is None


def test_our_own_url_and_self_urls_in_a_record_are_skipped_not_the_rest() -> None:
    net = CoreNet(7)
    alias = "ws://h/alias-of-a"
    a = net.add(A, seeds=(alias,))
    net.cores[alias] = a  # another URL that reaches the same node
    net.up.add(alias)
    net.add(C)
    net.run_until(1.0)
    assert a.peers[alias].state is PeerState.SELF
    del net.cores[alias]  # (CoreNet wires by URL: one core under two URLs only for the dial)
    dials = len(net.dials)
    a.peer_discovered("c", _ann("c", A, alias, C), net.now)
    net.run_until(2.0)
    assert [d for t, s, d in net.dials[dials:] if s == A] == [C]
    assert a.peers[alias].state is PeerState.SELF and A not in a.peers


# ---- IHAVE / GRAFT: waiting for announced updates, answering GRAFTs ----------------------------

def _hub(seed: int, members: int, **config: object) -> tuple[CoreNet, NodeCore, list[int]]:
    """B linked to members m1..mN (no links between them); returns B and its conns to them."""
    net = CoreNet(seed)
    b = net.add(B, discovery=False, gossip_interval=30.0, **config)
    for i in range(1, members + 1):
        net.add(f"ws://h/m{i}", seeds=(B,), discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    conns = [next(cn for cn, lk in b.links.items() if lk.label == f"m{i}")
             for i in range(1, members + 1)]
    return net, b, conns


def _grafts(net: CoreNet, src: str) -> list[tuple[float, str, tuple[bytes, ...]]]:
    return [(t, d, decode(f).digests) for t, s, d, f in net.sent  # type: ignore[union-attr]
            if s == src and f[1] == wire.GRAFT]


def test_announcers_of_one_update_are_asked_in_turn_each_after_graft_timeout() -> None:
    """Four links announce an update that never comes (one of them twice): B waits
    graft_timeout, asks the first, then the second, then the third, never the fourth, and
    none twice; then it forgets the update."""
    net, b, conns = _hub(51, 4)
    wait = b.config.graft_timeout
    digest = bytes(range(16))
    for conn in (conns[0], *conns):
        b.frame_received(conn, wire.encode(wire.IHave((digest,))), 1.0)
    net.run_until(1.0 + wait * 0.5)
    assert _grafts(net, B) == []
    net.run_until(1.0 + wait * 10)
    assert [(round(t - 1.0, 6), d, ds) for t, d, ds in _grafts(net, B)] == [
        (round(wait * n, 6), f"ws://h/m{n}", (digest,)) for n in (1, 2, 3)]
    assert b._missing == {} and all(b.links[cn].pending == 0 for cn in conns)


def test_an_ihave_naming_an_update_we_hold_still_counts_the_others() -> None:
    net, b, conns = _hub(52, 1)
    appended = b.append([b.ledger.prepare("ctx", "k", b"mine")], now=1.0)
    net.flush()
    (_, update), = appended.updates
    known, unknown = hashlib.sha256(update).digest()[:16], bytes(16)
    b.frame_received(conns[0], wire.encode(wire.IHave((known, unknown))), 1.0)
    net.run_until(2.0)
    assert [ds for _, _, ds in _grafts(net, B)] == [(unknown,)]


def test_all_links_together_wait_for_at_most_max_missing_updates() -> None:
    net, b, conns = _hub(53, MAX_MISSING // MAX_MISSING_PER_LINK + 1)
    for i, conn in enumerate(conns):
        digests = tuple(bytes([i, j // 256, j % 256]) * 5 + b"!" for j in range(MAX_DIGESTS))
        b.frame_received(conn, wire.encode(wire.IHave(digests)), 1.0)
    assert len(b._missing) == MAX_MISSING


def test_a_graft_naming_an_unknown_update_first_still_gets_the_known_one() -> None:
    net, b, conns = _hub(54, 1)
    appended = b.append([b.ledger.prepare("ctx", "k", b"mine")], now=1.0)
    net.flush()
    (_, update), = appended.updates
    known = hashlib.sha256(update).digest()[:16]
    before = len(net.sent)
    b.frame_received(conns[0], wire.encode(wire.Graft((bytes(16), known))), 1.0)
    net.flush()
    pushed = [decode(f) for _, s, _, f in net.sent[before:] if s == B and f[1] == wire.UPDATE]
    assert len(pushed) == 1 and pushed[0].pushed  # type: ignore[union-attr]


def _graft_answers(net: CoreNet, b: NodeCore, conn: int, digest: bytes) -> int:
    """The UPDATE frames B sends for one GRAFT asking for ``digest``."""
    before = b.counters.frames_sent.get("UPDATE", 0)
    b.frame_received(conn, wire.encode(wire.Graft((digest,))), net.now)
    net.flush()
    return b.counters.frames_sent.get("UPDATE", 0) - before


def test_a_graft_is_answered_once_per_update_within_served_memory() -> None:
    """A link's GRAFTs get each recent update once; the memory of what it got is bounded at
    SERVED_MEMORY digests, the oldest forgotten first (then asking again gets it again)."""
    net, b, conns = _hub(55, 1)
    net.mute.add((B, "ws://h/m1"))  # (m1 need not apply them: count what B sends)
    appended = b.append([b.ledger.prepare(f"c{i}", "k", b"x")
                         for i in range(SERVED_MEMORY + 1)], now=1.0)
    net.flush()
    digests = [hashlib.sha256(update).digest()[:16] for _, update in appended.updates]
    for start in range(0, len(digests), MAX_DIGESTS):
        batch = tuple(digests[start:start + MAX_DIGESTS])
        b.frame_received(conns[0], wire.encode(wire.Graft(batch)), 1.0)
    net.flush()

    def pushed_for(digest: bytes) -> int:
        return _graft_answers(net, b, conns[0], digest)

    assert pushed_for(digests[1]) == 0 and pushed_for(digests[-1]) == 0
    assert pushed_for(digests[0]) == 1, "the oldest was forgotten"


def test_status_shows_the_node_and_every_peer_but_itself() -> None:
    """A linked to B (also announced by mDNS) and to a listenerless agent, failing to reach a
    dead seed, with an alias of itself among its seeds (not shown)."""
    net = CoreNet(60)
    alias, dead, agent_at = "ws://h/alias-of-a", "ws://h/dead", "ws://h/agent-never-listens"
    a = net.add(A, seeds=(B, dead, alias))
    net.cores[alias] = a
    net.up.add(alias)
    net.add(B)
    net.run_until(1.0)
    del net.cores[alias]
    net.cores[agent_at] = NodeCore(new_ledger("agent"), NodeConfig("agent", seeds=(A,)), net.rng)
    net.up.add(agent_at)
    a.peer_discovered("b", _ann("b", B), net.now)
    a.append([a.ledger.prepare("ctx", "k", b"x")], now=net.now)
    net.run_until(5.0)
    status = a.status()
    failures = a.peers[dead].failures
    assert failures > 1
    assert status.pop("peers") == [
        {"node_id": "b", "origin": origin_of("b"), "url": B, "state": "connected",
         "root_agrees": True, "failures": 0, "last_error": "", "mdns": True},
        {"node_id": "", "origin": "", "url": dead, "state": "backoff", "root_agrees": None,
         "failures": failures, "last_error": f"cannot connect to {dead}", "mdns": False},
        {"node_id": "agent", "origin": origin_of("agent"), "url": "", "state": "connected",
         "root_agrees": True, "failures": 0, "last_error": "", "mdns": False},
    ]
    agreed_since = status.pop("agreed_since")
    assert isinstance(agreed_since, float) and 1.0 < agreed_since <= net.now
    assert 0 < status.pop("messages_sent") < status.pop("bytes_sent")  # type: ignore[operator]
    assert status == {"node_id": "a", "origin": origin_of("a"), "url": A,
                      "root": a.ledger.root().hex(), "contexts": 1, "entries": 1, "settling": 0,
                      "forks": []}


def test_recent_updates_kept_for_grafts_are_bounded_by_push_cache_bytes() -> None:
    net, b, conns = _hub(56, 3)
    net.mute |= {(B, f"ws://h/m{i}") for i in (1, 2, 3)}
    big = bytes(PUSH_CACHE_BYTES // 3 + 1)  # three of them exceed the cache
    digests = [_digest_of(b.append([b.ledger.prepare(f"big{i}", "k", big)], now=1.0))
               for i in range(3)]
    # (a big update goes out in several UPDATE frames)
    assert [_graft_answers(net, b, conns[0], d) > 0 for d in digests] == [False, True, True]
    huge = _digest_of(b.append([b.ledger.prepare("huge", "k", big)] * 3, now=1.0))
    assert _graft_answers(net, b, conns[0], huge) == 0, "an update over the cache is not kept"
    assert _graft_answers(net, b, conns[1], digests[1]) > 0, "and evicts nothing"
    digests.append(_digest_of(b.append([b.ledger.prepare("big3", "k", big)], now=1.0)))
    assert [_graft_answers(net, b, conns[2], d) > 0 for d in digests[1:]] == [False, True, True]


def _digest_of(appended) -> bytes:
    (_, update), = appended.updates
    return hashlib.sha256(update).digest()[:16]


def test_an_announced_update_that_comes_by_push_in_time_is_not_asked_for() -> None:
    net, b, conns = _hub(57, 2)
    m2 = net.cores["ws://h/m2"]
    digest = _digest_of(m2.append([m2.ledger.prepare("ctx", "k", b"x")], now=1.0))
    b.frame_received(conns[0], wire.encode(wire.IHave((digest,))), 1.0)  # before the push
    assert b.links[conns[0]].pending == 1
    net.flush()  # m2's push arrives
    assert b._missing == {} and b.links[conns[0]].pending == 0
    net.run_until(2.0)
    assert _grafts(net, B) == []


def test_each_missing_update_is_asked_for_at_its_own_deadline() -> None:
    """An update waiting for its second announcer does not hold back a later one due before."""
    net, b, conns = _hub(58, 2, graft_timeout=0.25)  # (sums of it are exact floats)
    wait = b.config.graft_timeout
    first, second = bytes(16), bytes(15) + b"\x01"
    for conn in conns:
        b.frame_received(conn, wire.encode(wire.IHave((first,))), 1.0)
    b.frame_received(conns[0], wire.encode(wire.IHave((second,))), 1.0 + wait / 2)
    for t in (1.0 + wait, 1.0 + wait * 1.5, 1.0 + wait * 2):
        net.now = t
        b.tick(t)
        net.flush()
    assert _grafts(net, B) == [(1.0 + wait, "ws://h/m1", (first,)),
                               (1.0 + wait * 1.5, "ws://h/m1", (second,)),
                               (1.0 + wait * 2, "ws://h/m2", (first,))]


# ---- from the sampled run of 2026-11-30 ----------------------------------------------------------

def test_a_frame_too_short_to_name_its_type_is_counted_under_a_question_mark() -> None:
    net = CoreNet(1)
    a = net.add(A)
    conn = a.connection_accepted(0.0)
    a.frame_received(conn, b"\x01", 0.0)
    assert a.counters.frames_received == {"?": 1}
    assert a.counters.bytes_received_by_type == {"?": 1}


@pytest.mark.parametrize("seed", range(3))
def test_the_link_given_up_for_a_duplicate_says_why_in_its_bye(seed: int) -> None:
    net = CoreNet(seed)
    net.add(A, seeds=(B,))
    net.add(B, seeds=(A,))
    net.run_until(0.0)  # both dial at once: each end closes one of the two links
    byes = [decode(f) for _, _, _, f in net.sent if f[1] == wire.BYE]
    assert byes and all(isinstance(m, Bye) and m.reason == "duplicate connection" for m in byes)


def test_an_inbound_refusal_says_why() -> None:
    net = CoreNet(42)
    net.add(A, seeds=(B,))
    b = net.add(B, cluster="other")
    net.run_until(30.0)
    inbound = b.take_events()
    assert inbound and all(
        (e.kind, e.url) == ("refused", "inbound")
        and e.reason.endswith("peer is in cluster 'default', we are in 'other'")
        and e.origin == ""  # (refused before AUTH proved an origin: it names none)
        for e in inbound)


def test_a_push_from_its_origin_is_announced_on_no_lazy_link_of_a_dense_neighbourhood() -> None:
    """Z - M1 - B - {M2, M3}, B's links to M2 and M3 lazy, ihave_fanout 1: Z's update, which
    M1 forwards, is announced to one of them; M1's own update, which its origin pushed on all
    its links (M2 and M3 would have it in a full mesh), to none."""
    net, b, conns = _hub(59, 3, ihave_fanout=1)
    z = net.add("ws://h/z", seeds=("ws://h/m1",), discovery=False, gossip_interval=30.0)
    net.run_until(2.0)
    m1 = net.cores["ws://h/m1"]
    for conn in conns[1:]:
        session = b.links[conn].session
        session.eager = False  # lazy for every origin's direct pushes ...
        session.prune(bytes.fromhex(z.ledger.origin))  # ... and for Z's forwarded ones
    for t, core in ((3.0, z), (6.0, m1)):
        net.now = t
        digest = _digest_of(core.append([core.ledger.prepare("ctx", "k", str(t).encode())],
                                        now=t))
        net.run_until(t + 1.0)
        announced = [d for _, s, d, f in net.sent
                     if s == B and f[1] == wire.IHAVE and digest in decode(f).digests]  # type: ignore[union-attr]
        assert len(announced) == (1 if core is z else 0), t
        assert b.ledger.context_entries("ctx") == (1 if core is z else 2)


def test_an_inbound_link_s_events_name_the_peer_s_origin() -> None:
    net = CoreNet(43)
    a = net.add(A)
    agent = NodeCore(new_ledger("agent"), NodeConfig("agent", seeds=(A,)), net.rng)
    net.cores["ws://h/agent-never-listens"] = agent  # (no URL of its own: the link is inbound)
    net.up.add("ws://h/agent-never-listens")
    net.run_until(1.0)
    (connected,) = a.take_events()
    assert (connected.kind, connected.url, connected.node_id, connected.origin) == (
        "connected", "inbound", "agent", agent.ledger.origin)
    net.kill("ws://h/agent-never-listens")
    net.flush()
    (lost,) = a.take_events()
    assert (lost.kind, lost.url, lost.node_id, lost.origin) == (
        "lost", "inbound", "agent", agent.ledger.origin)


def test_losing_a_link_takes_every_url_of_its_node_out_of_connected() -> None:
    """B announced two URLs; the link to one made both "connected" (no dial to the other):
    when it breaks, both are dialed again (backoff), none stays "connected" with no link."""
    net = CoreNet(45)
    a = net.add(A)
    net.add(B)
    a.peer_discovered("b", _ann("b", B, "ws://h/b2"), 0.0)
    net.run_until(1.0)
    assert {u: p.state for u, p in a.peers.items()} == {
        B: PeerState.CONNECTED, "ws://h/b2": PeerState.CONNECTED}
    net.kill(B)
    net.flush()
    assert {u: p.state for u, p in a.peers.items()} == {
        B: PeerState.BACKOFF, "ws://h/b2": PeerState.BACKOFF}


def test_a_learned_peer_failing_for_exactly_drop_after_is_dropped() -> None:
    net = CoreNet(46)
    a = net.add(A, drop_after=4.0)
    a.peer_discovered("b", _ann("b", B), 0.0)  # B is not up: every dial fails at once
    net.run_until(0.0)
    assert a.peers[B].failing_since == 0.0 and a.peers[B].state is PeerState.BACKOFF
    a.peers[B].retry_at = 4.0  # (the next dial, at failing_since + drop_after exactly)
    net.run_until(4.0)
    assert a.peers[B].state is PeerState.DROPPED


def test_a_graft_brings_the_ihave_batching_wait_back_to_ihave_delay() -> None:
    """Each IHAVE batch the peer asks nothing from doubles the wait before the next one; a
    GRAFT from the peer (it wanted something we announced) resets it."""
    net, b, conns = _hub(60, 1, ihave_delay=0.25, ihave_max=2.0)
    link = b.links[conns[0]]
    digests = [_digest_of(b.append([b.ledger.prepare("ctx", "k", bytes([i]))], now=1.0))
               for i in range(3)]
    net.flush()
    link.ihave_wait = 0.25

    def batch(digest: bytes, t: float) -> None:
        link.ihave[digest], link.ihave_due = None, t
        net.now = t
        b.tick(t)
        net.flush()

    batch(digests[0], 2.0)
    assert link.ihave_wait == 0.5  # nobody asked: doubled
    b.frame_received(conns[0], wire.encode(wire.Graft((digests[0],))), 2.1)
    batch(digests[1], 3.0)
    assert link.ihave_wait == 0.25  # asked since the last batch: back to ihave_delay
    batch(digests[2], 4.0)
    assert link.ihave_wait == 0.5


def test_a_link_counts_copies_of_at_most_max_pruned_origins_and_forgets_the_oldest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """M1 and M2 both forward pushes of three origins to B; B counts the copies each link sends
    of origins it no longer forwards to it, and remembers which link brings each origin's pushes,
    for at most MAX_PRUNED origins (2 here) each, the oldest forgotten first."""
    monkeypatch.setattr(node, "MAX_PRUNED", 2)
    net, b, (m1, m2) = _hub(61, 2)
    origins = []
    for i, name in enumerate(("o1", "o2", "o3")):
        ledger = new_ledger(name)
        origins.append(bytes.fromhex(ledger.origin))
        for j in range(2):  # the first copy prunes M2's link for the origin, the second counts
            (_, update), = ledger.append([ledger.prepare("ctx", "k", bytes([i, j]))]).updates
            for conn in (m1, m2):
                frame = wire.UpdateChunk("ctx", 100 + 2 * i + j, len(update), 0, update, True)
                b.frame_received(conn, wire.encode(frame), 2.0)
    net.flush()
    assert b.links[m2].copies == {origins[1]: 1, origins[2]: 1}
    assert b._via == {origins[1]: m1, origins[2]: m1}


def test_a_peer_in_backoff_named_by_a_live_peer_is_dialed_again_soon() -> None:
    net = CoreNet(47)
    a = net.add(A, seeds=(B, C))
    net.add(B)
    net.run_until(1.0)  # C is down: in backoff
    c = a.peers[C]
    assert c.state is PeerState.BACKOFF and net.connected(A) == {B}
    c.retry_at = 50.0  # (as after many failures)
    conn = next(cn for cn, lk in a.links.items() if lk.url == B)
    origin_c = bytes.fromhex(Identity.from_seed("c").origin)
    a.frame_received(conn, wire.encode(wire.Peers(((origin_c, "c", C),))), 1.0)
    assert c.retry_at == max(1.0, c.attempt_at + a.config.backoff_base)
    assert a.peers[B].state is PeerState.CONNECTED


@pytest.mark.parametrize("seed", range(3))
def test_an_unreachable_event_says_when_the_next_dial_is_to_the_millisecond(seed: int) -> None:
    net = CoreNet(seed)
    a = net.add(A)
    net.now = 2.0
    a.peer_discovered("b", _ann("b", B), 2.0)
    net.run_until(2.0)  # B is down: the first dial fails at once
    (event,) = a.take_events()
    assert event.kind == "unreachable"
    assert event.retry_in == round(a.peers[B].retry_at - 2.0, 3) and 0 < event.retry_in < 1


def test_a_link_closed_by_the_node_is_closed_by_its_connection_id() -> None:
    net, b, conns = _hub(62, 2)
    b.close(conns[0], "cut", 2.0)
    closes = [action for action in b.take_actions() if isinstance(action, Close)]
    assert [c.conn for c in closes] == [conns[0]] and "cut" in closes[0].reason


def test_a_dial_with_no_answer_is_closed_as_timed_out_after_dial_timeout() -> None:
    net = CoreNet(48)
    a = net.add(A, seeds=(B,))
    net.add(B)
    net.black.add(B)  # the dial is never answered
    net.run_until(0.0)
    ((_, conn),) = net.pending
    a.tick(a.config.dial_timeout)
    closes = [action for action in a.take_actions() if isinstance(action, Close)]
    assert closes == [Close(conn, "dial timed out")]
    assert a.peers[B].last_error == f"no answer from {B} within {a.config.dial_timeout:g}s"
