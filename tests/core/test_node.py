"""NodeCore on a fake clock: dialing and backoff, duplicate links, peer exchange, gossip timers,
idle and handshake timeouts, dropping learned peers. Cores are wired by ``CoreNet`` (Send →
frame_received on the other end); time is a plain float that jumps from deadline to deadline."""

from __future__ import annotations

import hashlib
import random

import pytest

from p2p_ledger.core import wire
from p2p_ledger.core.ledger import SUMMARY_LAG
from p2p_ledger.core.node import (
    MAX_MISSING_PER_LINK,
    MAX_PRUNED,
    PRUNE_AFTER,
    PRUNE_ALL_AFTER,
    Dial,
    NodeConfig,
    NodeCore,
    PeerState,
    Send,
)
from p2p_ledger.core.protocol import LocalInfo, PeerSession
from p2p_ledger.core.wire import MAX_DIGESTS, Root, decode

from .helpers import CoreNet, new_ledger, ordered_ids

A, B, C = "ws://h/a", "ws://h/b", "ws://h/c"
DEAD = "ws://h/dead"


def _dial_times(net: CoreNet, src: str, dst: str) -> list[float]:
    return [t for t, s, d in net.dials if s == src and d == dst]


def _roots_sent(net: CoreNet, src: str, dst: str) -> list[float]:
    """Times at which ``src`` started an anti-entropy round towards ``dst``."""
    out = []
    for t, s, d, frame in net.sent:
        if s == src and d == dst and frame[1] == wire.ROOT:
            msg = decode(frame)
            assert isinstance(msg, Root)
            if not msg.is_reply:
                out.append(t)
    return out


# ---- dialing and backoff -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_unreachable_peer_is_probed_at_least_every_probe_interval(seed: int) -> None:
    net = CoreNet(seed)
    net.add(A, seeds=(DEAD,), backoff_base=0.2, probe_interval=1.0, backoff_max=5.0,
            drop_after=30.0)
    net.run_until(200.0)
    times = _dial_times(net, A, DEAD)
    assert times[0] == 0.0  # a seed is dialed at once
    delays = [b - a for a, b in zip(times, times[1:], strict=False)]
    nominal = [min(1.0, 0.2 * 2 ** i) for i in range(len(delays))]
    for got, want in zip(delays, nominal, strict=True):
        # jitter only shortens a delay: the cap is a bound on how long a healed peer waits
        assert 0.8 * want - 1e-9 <= got <= want + 1e-9, (delays, nominal)
    assert len({round(d / n, 6) for d, n in zip(delays, nominal, strict=True)}) > len(delays) // 2
    # A seed is never dropped: it was still being dialed at the end, long after drop_after.
    assert times[-1] > 199.0
    peer = net.cores[A].peers[DEAD]
    assert peer.state == "backoff" and peer.seed and not peer.refused
    assert "cannot connect" in peer.last_error


def test_a_peer_that_refuses_us_backs_off_up_to_backoff_max() -> None:
    net = CoreNet(8)
    net.add(A, seeds=(B,), backoff_base=0.2, probe_interval=1.0, backoff_max=5.0)
    net.add(B, cluster="other")
    net.run_until(120.0)
    times = _dial_times(net, A, B)
    delays = [b - a for a, b in zip(times, times[1:], strict=False)]
    nominal = [min(5.0, 0.2 * 2 ** i) for i in range(len(delays))]
    for got, want in zip(delays, nominal, strict=True):
        assert 0.8 * want - 1e-9 <= got <= want + 1e-9, (delays, nominal)
    assert len(times) < 35  # mostly at the 5 s cap, not the 1 s probe
    peer = net.cores[A].peers[B]
    assert peer.refused and "cluster" in peer.last_error


def test_a_dial_lost_in_a_cut_is_abandoned_and_retried_at_once() -> None:
    net = CoreNet(9)
    a = net.add(A, seeds=(B,), dial_timeout=2.0, probe_interval=1.0)
    net.add(B)
    net.black.add(B)  # dials to B are never answered (a cut that drops SYNs)
    net.run_until(10.0)
    times = _dial_times(net, A, B)
    gaps = [y - x for x, y in zip(times, times[1:], strict=False)]
    assert gaps and all(g == pytest.approx(2.0) for g in gaps), gaps
    assert len(net.abandoned) == len(times) - 1
    net.black.clear()
    net.run_until(times[-1] + 2.0)
    assert net.connected(A) == {B}
    assert a.peers[B].state == "connected"


def test_a_handshake_on_any_link_retries_unreachable_peers_at_once() -> None:
    net = CoreNet(10)
    a = net.add(A, seeds=(B, C), probe_interval=1.0, discovery=False)
    net.add(B)
    net.add(C)
    net.up -= {B, C}
    net.run_until(600.0)  # a long cut: both at the probe cap
    net.up |= {B, C}
    net.run_until(602.0)
    b, c = ([t for t in _dial_times(net, A, url) if t > 600.0][0] for url in (B, C))
    # The first peer back answers a probe; the other is dialed in the same instant (or, if its
    # own probe started under backoff_base ago, backoff_base after that), not at its next probe.
    assert abs(b - c) <= 0.2 + 1e-9
    assert len([t for t in _dial_times(net, A, B) + _dial_times(net, A, C) if t > 600.0]) == 2
    assert net.connected(A) == {B, C}
    assert {p.state for p in a.peers.values()} == {"connected"}


def test_being_dialed_by_a_peer_in_backoff_marks_it_connected() -> None:
    net = CoreNet(13)
    a = net.add(A, seeds=(B,), probe_interval=1.0)
    net.run_until(30.0)  # B does not exist yet: A's dials fail
    assert a.peers[B].state == "backoff" and a.peers[B].failures > 10
    net.add(B, seeds=(A,))
    net.black.add(B)  # and A cannot reach B: only B's own dial can link them
    net.run_until(30.5)
    assert net.connected(A) == {B}
    assert a.peers[B].state == "connected" and a.peers[B].failures == 0
    net.run_until(40.0)
    assert net.connected(A) == {B} and not net.pending  # no dial to B while linked


def test_peer_exchange_naming_a_peer_in_backoff_retries_it_at_once() -> None:
    net = CoreNet(14)
    a = net.add(A, seeds=(B, C), probe_interval=30.0)  # a long cap: only the rule helps
    net.add(B, seeds=(C,))
    net.add(C)
    net.run_until(2.0)
    assert net.connected(A) == {B, C}
    net.kill(C)
    net.run_until(100.0)  # A's retry delay for C has grown to 30 s
    assert a.peers[C].state == "backoff"
    net.add(C)
    net.kill(B)
    net.add(B, seeds=(C,))  # B restarts, reconnects to C and tells A about C
    back = net.now
    net.run_until(back + 2.0)
    assert net.connected(A) == {B, C}
    assert min(t for t in _dial_times(net, A, C) if t >= back) - back < 1.0


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    def schedule(seed: int) -> list[float]:
        net = CoreNet(seed)
        net.add(A, seeds=(DEAD,))
        net.run_until(60.0)
        return _dial_times(net, A, DEAD)

    assert schedule(5) == schedule(5)
    assert schedule(5) != schedule(6)


def test_a_link_that_opened_resets_the_backoff() -> None:
    net = CoreNet(4)
    net.add(A, seeds=(B,), backoff_base=0.2, backoff_max=30.0)
    net.up.discard(B)
    net.add(B)
    net.up.discard(B)
    net.run_until(20.0)  # many failures: the delay has grown to several seconds
    assert net.cores[A].peers[B].failures >= 5
    net.up.add(B)
    net.run_until(net.cores[A].peers[B].retry_at + 0.001)
    assert net.connected(A) == {B}
    net.kill(B)
    lost_at = net.now
    net.add(B)
    net.run_until(lost_at + 2.0)
    # Redialed after ~0.2 s (count reset), not after the grown delay.
    assert net.connected(A) == {B}
    redials = [t for t in _dial_times(net, A, B) if t > lost_at]
    assert redials and redials[0] - lost_at <= 0.2 * 1.2 + 1e-9


def test_learned_peer_is_dropped_after_drop_after_but_a_seed_is_not() -> None:
    net = CoreNet(7)
    cfg = dict(backoff_base=0.2, probe_interval=4.0, drop_after=20.0)
    net.add(A, seeds=(B,), **cfg)
    net.add(B, **cfg)
    net.add(C, seeds=(B,), **cfg)
    net.run_until(3.0)
    assert net.connected(A) == {B, C}  # A learned C from B
    assert not net.cores[A].peers[C].seed
    net.kill(C)
    net.kill(B)
    killed_at = net.now
    net.run_until(killed_at + 60.0)
    core = net.cores[A]
    assert core.peers[C].state == "dropped"
    assert core.peers[B].state == "backoff"  # the seed is retried forever
    last_dial_c = max(_dial_times(net, A, C))
    assert killed_at + 20.0 <= last_dial_c <= killed_at + 20.0 + 4.0 + 1e-9
    assert max(_dial_times(net, A, B)) > killed_at + 55.0
    assert [(e.kind, e.url) for e in core.take_events() if e.kind == "dropped"] == [("dropped", C)]
    assert all(p["url"] != C or p["state"] == "dropped" for p in core.status()["peers"])


# ---- one link per pair -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", ["small-first", "big-first"])
def test_simultaneous_dials_resolve_to_one_link_on_both_ends(seed: int, order: str) -> None:
    net = CoreNet(seed)
    urls = [A, B] if order == "small-first" else [B, A]
    for url in urls:
        net.add(url, seeds=tuple(u for u in urls if u != url))
    net.run_until(0.0)  # both dial at t=0, before either has heard from the other
    assert len(_dial_times(net, A, B)) == 1 and len(_dial_times(net, B, A)) == 1
    a, b = net.cores[A], net.cores[B]
    for core, other in ((a, b), (b, a)):
        assert len(core.links) == 1, core.links
        (conn,) = core.links
        assert core.by_origin == {other.ledger.origin: conn}
        assert [p["state"] for p in core.status()["peers"]] == ["connected"]
    # Both ends kept the same connection: the one dialed by the smaller origin.
    small, big = sorted((a, b), key=lambda core: core.ledger.origin)
    assert next(iter(small.links.values())).dialed is True
    assert next(iter(big.links.values())).dialed is False
    assert next(iter(b.links.values())).dialed is False
    assert net.wires[(A, next(iter(a.links)))] == (B, next(iter(b.links)))
    net.run_until(30.0)  # and it stays that way: no churn, no redials
    assert len(net.dials) == 2
    assert len(a.links) == 1 and len(b.links) == 1


def test_a_peer_saying_ourselves_in_its_bye_is_not_taken_for_us() -> None:
    """Self-connection is what our own session saw (our node id in the peer's HELLO), never a
    word in a reason text: a peer whose BYE says "connected to ourselves" was once marked
    ``self`` and never dialed again."""
    core = NodeCore(new_ledger("a"), NodeConfig(node_id="a", url=A, seeds=(B,)),
                    random.Random(1))
    core.tick(0.0)
    (dial,) = [x for x in core.take_actions() if isinstance(x, Dial)]
    core.connection_made(dial.conn, 0.0)
    peer = PeerSession(LocalInfo("b", url=B), new_ledger("b"), b"B" * 16)
    peer.start()
    for _ in range(4):  # the handshake, both ways
        for frame in peer.take_output():
            core.frame_received(dial.conn, frame, 0.1)
        for action in core.take_actions():
            if isinstance(action, Send):
                peer.receive(action.frame)
    assert core.peers[B].state is PeerState.CONNECTED
    peer.close("connected to ourselves")
    for frame in peer.take_output():
        core.frame_received(dial.conn, frame, 0.2)
    assert core.peers[B].state is PeerState.BACKOFF
    core.tick(60.0)
    assert any(isinstance(x, Dial) and x.url == B for x in core.take_actions())


def test_self_dial_marks_the_peer_as_self_and_stops() -> None:
    net = CoreNet(3)
    net.add(A, seeds=("ws://h/alias-of-a",))
    net.cores["ws://h/alias-of-a"] = net.cores[A]  # another URL that reaches the same node
    net.up.add("ws://h/alias-of-a")
    net.run_until(30.0)
    assert net.cores[A].peers["ws://h/alias-of-a"].state is PeerState.SELF
    assert len(_dial_times(net, A, "ws://h/alias-of-a")) == 1
    assert net.cores[A].status()["peers"] == []


# ---- peer exchange ---------------------------------------------------------------------------

def test_chain_of_seeds_becomes_a_full_mesh() -> None:
    net = CoreNet(11)
    net.add(A)
    net.add(B, seeds=(A,))
    net.add(C, seeds=(B,))
    net.run_until(2.0)
    assert net.connected(A) == {B, C}
    assert net.connected(B) == {A, C}
    assert net.connected(C) == {A, B}
    for url in (A, B, C):
        states = {p["node_id"]: p["state"] for p in net.cores[url].status()["peers"]}
        assert set(states.values()) == {"connected"} and len(states) == 2, states


def test_a_listenerless_agent_is_reachable_only_through_its_own_link() -> None:
    net = CoreNet(12)
    net.add(A)
    agent = NodeCore(new_ledger("agent"), NodeConfig("agent", seeds=(A,)), net.rng)
    net.cores["ws://h/agent-never-listens"] = agent
    net.up.discard("ws://h/agent-never-listens")
    net.up.add("ws://h/agent-never-listens")  # it may dial out
    net.add(B, seeds=(A,))
    net.run_until(3.0)
    assert net.connected(A) == {"", B} or net.connected(A) == {B, ""}
    assert "agent" not in {p.label for p in net.cores[B].peers.values()}  # nothing to dial
    status = net.cores[A].status()
    assert {"node_id": "agent", "url": "", "state": "connected"}.items() <= next(
        p for p in status["peers"] if p["node_id"] == "agent").items()


# ---- gossip timing -----------------------------------------------------------------------------

def test_one_end_gossips_every_interval_with_jitter_and_at_once_on_open() -> None:
    net = CoreNet(21)
    net.add(A, seeds=(B,), gossip_interval=1.0, idle_timeout=1000.0)
    net.add(B, gossip_interval=1.0, idle_timeout=1000.0)
    net.run_until(100.0)
    # The pair's hash picks "a" to run the rounds of the a–b link; "b" only answers.
    assert net.cores[A].links[1].gossiper and not next(iter(net.cores[B].links.values())).gossiper
    assert _roots_sent(net, B, A) == []
    times = _roots_sent(net, A, B)
    assert times[0] == 0.0  # the first round starts as soon as the link opens
    times = [t for t in times if t > 0.0]  # (how many rounds at t=0: the next test)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert 85 <= len(gaps) <= 115
    assert all(0.9 - 1e-9 <= g <= 1.1 + 1e-9 for g in gaps), gaps
    assert max(gaps) - min(gaps) > 0.05  # jittered, so rounds of many nodes do not align


@pytest.mark.parametrize("pair", [("a", "b"), ("b", "c"), ("a", "x"), ("c", "x")])
def test_both_ends_agree_on_which_one_gossips(pair: tuple[str, str]) -> None:
    net = CoreNet(26)
    one, two = (f"ws://h/{n}" for n in pair)
    net.add(one, seeds=(two,))
    net.add(two)
    net.run_until(0.1)
    (l1,), (l2,) = net.cores[one].links.values(), net.cores[two].links.values()
    assert l1.gossiper != l2.gossiper


def test_a_new_link_starts_one_round_not_two() -> None:
    net = CoreNet(24)
    net.add(A, seeds=(B,), gossip_interval=1.0)
    net.add(B, gossip_interval=1.0)
    net.run_until(0.5)
    assert _roots_sent(net, A, B) == [0.0]
    assert _roots_sent(net, B, A) == []


def test_a_node_starts_one_round_per_interval_on_its_least_recent_link() -> None:
    net = CoreNet(27)
    urls = [f"ws://h/n{i}" for i in range(6)]
    for url in urls:
        net.add(url, seeds=(urls[0],), gossip_interval=1.0, idle_timeout=1000.0)
    net.run_until(60.0)
    rounds = [(t, s, d) for s in urls for d in urls for t in _roots_sent(net, s, d) if t > 10.0]
    # One round per node and interval at most (fewer: a node a peer asked lately skips its own)
    assert 0.3 * 6 * 50 <= len(rounds) <= 6 * 50 * 1.12
    for src in urls:
        mine = sorted(t for t, s, _ in rounds if s == src)
        assert all(b - a >= 0.9 - 1e-9 for a, b in zip(mine, mine[1:], strict=False))
        targets = {d for _, s, d in rounds if s == src}
        gossiped = {link.url for link in net.cores[src].links.values() if link.gossiper}
        assert targets == gossiped  # every link it gossips on has its turn


@pytest.mark.parametrize("joiner", ["b", "x"], ids=["full-node-gossips", "joiner-gossips"])
def test_joining_moves_the_data_once(joiner: str) -> None:
    """Only one end of a link starts rounds, so a joiner's missing data crosses once; it used to
    cross twice (a round per end), and four times before that (two rounds per end)."""
    net = CoreNet(25)
    a = net.add(A, gossip_interval=1.0)
    rng = random.Random(25)
    for i in range(40):
        a.ledger.append([a.ledger.prepare(f"c{i % 4}", "k", rng.randbytes(20_000))])
    data = sum(len(ctx.diff(None)) for ctx in a.ledger.contexts.values())
    b = net.add(f"ws://h/{joiner}", seeds=(A,), gossip_interval=1.0)
    net.run_until(0.5)
    assert a.ledger.root() == b.ledger.root()
    moved = sum(len(f) for _, s, _, f in net.sent if s == A and f[1] == wire.UPDATE)
    assert moved <= 1.05 * data, moved / data


def test_append_pushes_at_once_and_needs_no_round_when_the_peer_agreed() -> None:
    net = CoreNet(22)
    a = net.add(A, seeds=(B,), gossip_interval=5.0, push_gossip_delay=0.5)
    b = net.add(B, gossip_interval=5.0)
    net.run_until(1.0)
    assert net.connected(A) == {B}
    appended = a.append([a.ledger.prepare("ctx", "k", b"hello")], now=1.0)
    assert a.next_deadline() > 4.0  # b agreed before: the push is the only change
    net.flush()
    # The UPDATE went out at t=1.0, before any timer fired, and B holds the entry.
    pushed = [t for t, s, _, f in net.sent if s == A and f[1] == wire.UPDATE]
    assert pushed == [1.0]
    assert ordered_ids(b.ledger, "ctx") == [appended.entries[0].id]
    net.run_until(4.0)
    assert [t for t in _roots_sent(net, A, B) if t > 0.5] == []
    assert a.ledger.root() == b.ledger.root()
    assert b.counters.entries_received == 1


def test_append_brings_the_next_round_forward_when_the_peer_differed() -> None:
    net = CoreNet(22)
    a = net.add(A, seeds=(B,), gossip_interval=5.0, push_gossip_delay=0.5)
    b = net.add(B, gossip_interval=5.0)
    net.run_until(1.0)
    net.mute.add((B, A))
    b.append([b.ledger.prepare("ctx", "k", b"theirs")], now=1.0)  # the push is lost
    net.flush()
    net.mute.clear()
    a.links[1].session.peer_root = b.ledger.root()  # as a heartbeat from b would tell
    a.append([a.ledger.prepare("ctx", "k", b"ours")], now=1.0)
    assert a.next_deadline() == pytest.approx(1.5)
    net.run_until(1.7)
    assert [t for t in _roots_sent(net, A, B) if t > 0.5] == [pytest.approx(1.5)]
    assert a.ledger.root() == b.ledger.root()


def test_frames_that_commit_nothing_do_not_hold_back_the_idle_summary_store() -> None:
    """Only a commit (an append, a received update staged) moves the idle store: a peer's
    rounds and probes, more often than SUMMARY_LAG, must not put it off for ever."""
    net = CoreNet(22)
    a = net.add(A, seeds=(B,), gossip_interval=SUMMARY_LAG / 5)
    net.add(B, gossip_interval=SUMMARY_LAG / 5)
    net.run_until(1.0)
    a.ledger.summary_lag_ns = 10**15  # (no later commit stores them: only the idle store)
    a.append([a.ledger.prepare("ctx", "k", b"x")], now=1.0)
    net.flush()
    net.run_until(1.0 + 3 * SUMMARY_LAG)
    assert [t for t, s, d, _ in net.sent if s == B and d == A and t > 1.0]  # (frames came)
    assert not a.ledger.lags()


def test_an_append_with_a_peer_linked_computes_no_lagging_summary(monkeypatch) -> None:
    """Summaries lag their rows (``summary_lag_ns``) with peers linked too: an append reads
    the node root only when no summary lags, and otherwise counts as a change."""
    import p2p_ledger.core.ledger as ledger_module

    net = CoreNet(22)
    a = net.add(A, seeds=(B,), gossip_interval=5.0, push_gossip_delay=0.5)
    net.add(B, gossip_interval=5.0)
    net.run_until(1.0)
    a.ledger.summary_lag_ns = 10**15  # (never due: only the idle store)
    computed = []
    real = ledger_module.summarize
    monkeypatch.setattr(ledger_module, "summarize",
                        lambda *args: computed.append(args[0].name) or real(*args))
    for i in range(3):
        a.append([a.ledger.prepare(f"ctx-{i}", "k", b"x")], now=1.0)
    assert computed == []
    assert a.next_deadline() == pytest.approx(1.5)  # (a change: the round comes forward)
    net.flush()
    net.run_until(1.7)
    assert a.ledger.root() == net.cores[B].ledger.root()


def test_a_quiet_link_carries_probes_and_stays_open() -> None:
    net = CoreNet(28)
    net.add(A, seeds=(B,), gossip_interval=100.0, idle_timeout=10.0)
    net.add(B, gossip_interval=100.0, idle_timeout=10.0)
    net.run_until(60.0)
    assert net.connected(A) == {B} and net.connected(B) == {A}
    for src, dst in ((A, B), (B, A)):
        heard = [t for t, s, d, _ in net.sent if s == src and d == dst]
        gaps = [y - x for x, y in zip(heard, heard[1:], strict=False)]
        # one end asks after idle_timeout / 2 of silence and the other answers at once
        assert gaps and all(g <= 10.0 / 2 + 0.5 for g in gaps), gaps
    # one question and its answer per idle_timeout / 2 (the old heartbeats sent 2 per 1/3)
    late = [f for t, s, d, f in net.sent if t > 10.0]
    assert len(late) <= 2 * (50 / 5 + 1), len(late)
    assert all(f[1] == wire.ROOT for f in late)
    assert len(net.dials) == 1


def test_a_probe_is_asked_again_when_lost_and_the_link_survives() -> None:
    net = CoreNet(29)
    net.add(A, seeds=(B,), gossip_interval=100.0, idle_timeout=10.0)
    net.add(B, gossip_interval=100.0, idle_timeout=10.0)
    net.run_until(12.0)
    net.mute.add((A, B))  # A's next question is lost
    net.mute.add((B, A))  # and so would be an answer
    start = max(t for t, *_ in net.sent)
    net.run_until(start + 10.0 * 2 / 3 + 0.1)
    net.mute.clear()
    net.run_until(start + 30.0)
    assert net.connected(A) == {B} and net.connected(B) == {A}
    assert len(net.dials) == 1


def test_one_way_traffic_still_tells_the_sender_the_peer_is_alive() -> None:
    net = CoreNet(30)
    a = net.add(A, seeds=(B,), gossip_interval=100.0, idle_timeout=10.0)
    net.add(B, gossip_interval=100.0, idle_timeout=10.0)
    net.run_until(1.0)
    for i in range(60):  # A pushes every second; B has nothing to push back
        a.append([a.ledger.prepare("ctx", "k", str(i).encode())], now=net.now)
        net.run_until(net.now + 1.0)
    assert net.connected(A) == {B} and net.connected(B) == {A}
    assert len(net.dials) == 1


def test_gossip_repairs_what_a_lost_push_missed() -> None:
    net = CoreNet(23)
    a = net.add(A, seeds=(B,), gossip_interval=1.0)
    b = net.add(B, gossip_interval=1.0)
    net.run_until(0.5)
    net.mute.add((A, B))  # the push is lost
    a.append([a.ledger.prepare("ctx", "k", b"x")], now=0.5)
    net.flush()
    assert "ctx" not in b.ledger.contexts
    net.mute.clear()
    net.run_until(2.0)
    assert a.ledger.root() == b.ledger.root()


# ---- timeouts ----------------------------------------------------------------------------------

def test_silent_peer_is_closed_after_idle_timeout_then_redialed() -> None:
    net = CoreNet(31)
    a = net.add(A, seeds=(B,), gossip_interval=1.0, idle_timeout=10.0)
    net.add(B, gossip_interval=1.0, idle_timeout=1000.0)
    net.run_until(5.0)
    assert net.connected(A) == {B}
    net.mute.add((B, A))  # B hangs: A hears nothing more
    heard = max(t for t, s, d, _ in net.sent if s == B and d == A)
    net.run_until(heard + 10.0 - 0.001)
    assert net.connected(A) == {B}
    net.run_until(heard + 10.0)
    assert net.connected(A) == set()
    assert [(e.kind, e.reason) for e in a.take_events() if e.kind == "lost"] == [
        ("lost", "peer silent for 10s")]
    assert a.peers[B].state == "backoff" and a.peers[B].failures == 1
    net.mute.clear()
    net.run_until(heard + 11.0)
    assert net.connected(A) == {B}


def test_handshake_that_never_finishes_times_out() -> None:
    net = CoreNet(32)
    a = net.add(A, seeds=(B,), handshake_timeout=3.0)
    net.add(B)
    net.mute.add((B, A))
    net.run_until(2.999)
    assert len(a.links) == 1 and not next(iter(a.links.values())).session.is_open
    (first,) = a.links
    net.run_until(3.0)
    assert first not in a.links
    assert any(e.kind == "unreachable" and e.reason == "handshake timed out"
               for e in a.take_events())
    # The delay counts from when that dial started (3 s ago): the next one goes out at once.
    assert _dial_times(net, A, B) == [0.0, 3.0]


def test_next_deadline_is_the_earliest_timer() -> None:
    core = NodeCore(new_ledger("a"), NodeConfig("a", url=A, seeds=(B,)), random.Random(1))
    assert core.next_deadline() == 0.0  # the seed is due at once
    core.tick(0.0)
    (dial,) = core.take_actions()
    assert isinstance(dial, Dial) and dial.url == B
    # dialing: nothing to do until it resolves or is abandoned
    assert core.next_deadline() == core.config.dial_timeout
    core.connection_made(dial.conn, now=1.0)
    assert core.next_deadline() == 1.0 + core.config.handshake_timeout


def test_settling_contexts_are_settled_by_ticks_a_few_steps_at_a_time() -> None:
    """After a crash with summaries lagging, the core settles the contexts in its ticks
    (``SETTLE_STEPS`` audit steps each, ``SETTLE_PAUSE`` apart), so either driver serves
    between them; each tick moves the deadline, and none is left once all have settled."""
    from p2p_ledger.core.node import SETTLE_PAUSE, SETTLE_STEPS
    from p2p_ledger.core.storage import MemoryStorage

    from .helpers import append, open_ledger

    storage = MemoryStorage()
    writer = open_ledger(storage, "a")
    writer.summary_lag_ns = 10**15  # (never due: every summary lags, as at a crash)
    for i in range(40):
        append(writer, f"ctx-{i % 3}", *(f"entry {i}.{j}" for j in range(40)))
    steps = []
    ledger = open_ledger(storage, "a", "a-2")
    real = ledger.settle_step
    ledger.settle_step = lambda: steps.append(1) or real()  # type: ignore[method-assign]
    core = NodeCore(ledger, NodeConfig("a"), random.Random(1))
    assert ledger.settling() == 3 and core.next_deadline() == 0.0
    now, ticks = 0.0, 0
    while ledger.settling():
        deadline = core.next_deadline()
        assert deadline == now  # (the first at once, then one pause after each tick)
        before = len(steps)
        core.tick(now)
        assert 0 < len(steps) - before <= SETTLE_STEPS
        now, ticks = now + SETTLE_PAUSE, ticks + 1  # (the core's own float sum)
    assert ticks >= 1600 / (256 * SETTLE_STEPS)  # (1,600 entries, 256 a step)
    # what settled is stored once the node has been idle for SUMMARY_LAG; then nothing is due
    idle_at = now - SETTLE_PAUSE + SUMMARY_LAG  # (the last tick's time + SUMMARY_LAG)
    assert storage.lagging_summaries()[1] and core.next_deadline() == idle_at
    core.tick(core.next_deadline())
    assert storage.lagging_summaries()[1] == [] and not ledger.lags()
    assert core.next_deadline() == float("inf")  # (nothing else to do: no seeds)
    assert ledger.root() == writer.root() and ledger.entry_count() == 1600


def test_a_big_tree_is_built_by_ticks_a_step_at_a_time_and_the_node_answers_between() -> None:
    """After a start, the first summary of a big context needs its Merkle tree from every id:
    built by ticks a step at a time (``MerkleTree.add_packed_steps``: at most BUILD_STEP ids
    each; at 1M ~2.5 CPU-s in one piece), one every SETTLE_PAUSE, the node served between
    them (pages read and appends committed leave the steps where they are; after an append
    the steps go on, and the store waits SUMMARY_LAG after it); the root stored is the one
    built at once."""
    from p2p_ledger.core.merkle import BUILD_STEP, MerkleTree, root_of_keys
    from p2p_ledger.core.node import SETTLE_PAUSE
    from p2p_ledger.core.storage import MemoryStorage

    from .helpers import append, open_ledger

    storage = MemoryStorage()
    writer = open_ledger(storage, "a")
    for i in range(0, 3 * BUILD_STEP, 128):
        append(writer, "big", *(f"entry {j}" for j in range(i, i + 128)))
    ledger = open_ledger(storage, "a", "a-2")  # (a start: nothing loaded)
    ledger.summary_lag_ns = 10**15  # (only the idle store)
    core = NodeCore(ledger, NodeConfig("a"), random.Random(1))
    core.append([ledger.prepare("big", payload="after the start")], now=1.0)  # (loads it)
    steps: list[bool] = []
    real = ledger.tree_step
    ledger.tree_step = lambda: steps.append(real()) or steps[-1]  # type: ignore[method-assign]
    now, ticks = core.next_deadline(), 0
    assert now == 1.0 + SUMMARY_LAG
    while storage.lagging_summaries()[1]:
        core.tick(now)
        ticks, ticked = ticks + 1, now
        assert ticks < 10_000
        assert len(ledger.get("big", limit=10)[0]) == 10  # (answered between steps)
        if ticks == 5:
            core.append([ledger.prepare("big", payload="meanwhile")], now=now)
            appended_at = now
        if ledger.building():
            assert core.next_deadline() == now + SETTLE_PAUSE  # (the core's own float sum)
        now = core.next_deadline()
    assert ticked == appended_at + SUMMARY_LAG  # (stored once idle for the lag after it)
    # (the reads and the append between ticks left steps to take: none finished them at once)
    assert steps[:6] == [True] * 6 and steps.count(False) == 1 and steps.count(True) >= 3
    entries, _ = ledger.get("big")
    ids = [bytes.fromhex(entry.id) for entry in entries]
    at_once = MerkleTree()
    at_once.add_keys(ids)
    assert len(ids) == 3 * BUILD_STEP + 2
    assert ledger.summaries["big"].root == at_once.root() == root_of_keys(ids)


def test_a_big_tree_after_a_start_is_built_by_ticks_while_appends_keep_coming(monkeypatch) -> None:
    """After a start, appends that keep coming into a big stored context never build its tree
    in a commit: the commit that finds its summary due (SUMMARY_LAG after the first) takes
    the first step of the build and leaves the summary lagging while ticks take the others,
    one step a tick between the appends, then BUILD_STEP at a time the ids appended meanwhile
    (more than BUILD_STEP); the first commit due once the tree is built stores the summary,
    whose root is the one built at once.

    why: only the idle store waited for the steps; with appends every few ms the commit that
    stored the lagging summaries built the whole tree (~2.2 CPU-s at 1M) while every append
    waited."""
    from p2p_ledger.core.merkle import BUILD_STEP, MerkleTree, root_of_keys
    from p2p_ledger.core.storage import MemoryStorage

    from .helpers import append, open_ledger

    storage = MemoryStorage()
    writer = open_ledger(storage, "a")
    for i in range(0, 4 * BUILD_STEP, 128):
        append(writer, "big", *(f"entry {j}" for j in range(i, i + 128)))
    clock = [0.0]
    ledger = open_ledger(storage, "a", "a-2", now_ns=lambda: int(clock[0] * 1e9))
    ledger.summary_lag_ns = int(SUMMARY_LAG * 1e9)  # (as the runtime sets it)
    core = NodeCore(ledger, NodeConfig("a"), random.Random(1))
    where = ["append"]
    keys: list[tuple[str, int]] = []  # (where, keys taken into a tree in one piece)
    steps: list[str] = []  # where each step of a build from empty was taken

    real_add, real_steps = MerkleTree.add_packed, MerkleTree.add_packed_steps

    def add_packed(self: MerkleTree, packed: bytes | bytearray | memoryview) -> int:
        keys.append((where[0], len(packed) // 32))
        return real_add(self, packed)

    def add_packed_steps(self: MerkleTree, source, first: int, end: int):  # type: ignore[no-untyped-def]
        for _ in real_steps(self, source, first, end):
            steps.append(where[0])
            yield

    monkeypatch.setattr(MerkleTree, "add_packed", add_packed)
    monkeypatch.setattr(MerkleTree, "add_packed_steps", add_packed_steps)
    now, appends, ticks, lagged_past_due = 1.0, 0, 0, False
    while True:
        where[0], clock[0] = "append", now
        core.append([ledger.prepare("big", payload=f"after the start {appends}.{j}")
                     for j in range(32)], now=now)
        appends += 1
        assert appends < 2_000
        if not storage.lagging_summaries()[1]:
            break  # (stored by that commit)
        lagged_past_due |= now >= 1.0 + SUMMARY_LAG
        if core.next_deadline() <= now:  # (a tick between two appends, as a loop runs one)
            where[0] = f"tick {ticks}"
            core.tick(now)
            ticks += 1
        now += 0.005
    assert all(n <= BUILD_STEP for at, n in keys if at == "append")  # (no commit built it)
    assert lagged_past_due and now >= 1.0 + SUMMARY_LAG  # (a due commit left it lagging)
    # (the commit that found the summary due took the first step, the ticks the others)
    assert steps[0] == "append" and steps.count("append") == 1 and len(steps) > 3
    assert max(steps.count(at) for at in set(steps)) == 1  # (one step a tick)
    assert [n for at, n in keys if at.startswith("tick")].count(BUILD_STEP) >= 2  # (then ids)
    ledger.write_summaries()
    entries, _ = ledger.get("big")
    assert len(entries) == 4 * BUILD_STEP + 32 * appends
    assert ledger.summaries["big"].root == root_of_keys([bytes.fromhex(e.id) for e in entries])


def test_appends_faster_than_a_trees_steps_do_not_hold_its_summary_back(monkeypatch) -> None:
    """The ids appended while a tree was built in steps join it a piece a tick, but only
    those: commits of more ids than a tick takes (here 100 against 64) still let the summary
    be stored by the first commit due after them, as under any ingest.

    why: catching up while more than a piece waited never ended under such commits, and the
    summaries lagged for as long as the appends went on."""
    from p2p_ledger.core import context_log, merkle
    from p2p_ledger.core.storage import MemoryStorage

    from .helpers import append, open_ledger

    for module in (context_log, merkle):
        monkeypatch.setattr(module, "BUILD_STEP", 64)  # (pieces of 64 ids a tick)
    storage = MemoryStorage()
    writer = open_ledger(storage, "a")
    for i in range(0, 1024, 128):
        append(writer, "big", *(f"entry {j}" for j in range(i, i + 128)))
    clock = [0.0]
    ledger = open_ledger(storage, "a", "a-2", now_ns=lambda: int(clock[0] * 1e9))
    ledger.summary_lag_ns = int(SUMMARY_LAG * 1e9)
    core = NodeCore(ledger, NodeConfig("a"), random.Random(1))
    now, appends, built = 1.0, 0, False
    while storage.lagging_summaries()[1] or not appends:
        clock[0] = now
        core.append([ledger.prepare("big", payload=f"{appends}.{j}") for j in range(100)],
                    now=now)
        appends += 1
        built |= ledger.building()
        assert appends < 2_000  # (~260 steps and ~400 pieces: stored after ~700)
        if core.next_deadline() <= now:
            core.tick(now)
        now += 0.05
    assert built
    assert ledger.context_entries("big") == 1024 + 100 * appends


def test_summaries_that_lag_are_stored_by_a_tick_once_nothing_was_committed_for_the_lag():
    """With ``summary_lag_ns`` a commit leaves its contexts' summaries lagging; every commit
    (an append, a received update) puts the idle store SUMMARY_LAG after it, and a storage
    failure there is logged, not raised (the rows are durable; an open settles them)."""
    from p2p_ledger.core.storage import MemoryStorage

    from .helpers import open_ledger

    storage = MemoryStorage()
    ledger = open_ledger(storage, "a")
    ledger.summary_lag_ns = 10**15  # (no later commit stores them: only the idle store)
    core = NodeCore(ledger, NodeConfig("a"), random.Random(1))
    assert core.next_deadline() == float("inf")
    core.append([ledger.prepare("notes", payload="one")], now=5.0)
    assert core.next_deadline() == 5.0 + SUMMARY_LAG
    core.append([ledger.prepare("notes", payload="two")], now=5.5)  # (moves it)
    assert core.next_deadline() == 5.5 + SUMMARY_LAG
    core.tick(5.4 + SUMMARY_LAG)
    assert storage.lagging_summaries()[1] == ["notes"]
    core.tick(5.5 + SUMMARY_LAG)
    assert storage.lagging_summaries()[1] == [] and core.next_deadline() == float("inf")

    core.append([ledger.prepare("notes", payload="three")], now=10.0)
    real = storage.commit

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    storage.commit = failing  # type: ignore[method-assign]
    core.tick(10.0 + SUMMARY_LAG)
    assert core.take_log() == ["storing the contexts' summaries failed: disk full"]
    assert core.next_deadline() == float("inf") and ledger.lags()
    storage.commit = real  # type: ignore[method-assign]
    reopened = open_ledger(storage, "a", "a-2")  # (the rows were durable: nothing lost)
    assert reopened.context_entries("notes") == 3


# ---- peer events (what the driver logs) --------------------------------------------------------

def _events(core: NodeCore) -> list[tuple[str, str]]:
    return [(e.kind, e.node_id or e.url) for e in core.take_events()]


def test_a_dead_seed_is_reported_once_not_once_per_retry() -> None:
    net = CoreNet(40)
    a = net.add(A, seeds=(DEAD,))
    net.run_until(600.0)
    assert len(_dial_times(net, A, DEAD)) > 500
    (event,) = a.take_events()
    assert event.kind == "unreachable" and event.url == DEAD
    assert "cannot connect" in event.reason and event.retry_in is not None
    assert "next try in 0.2s" in event.text() or "next try in 0.1s" in event.text()


def test_lost_unreachable_connected_each_once() -> None:
    net = CoreNet(41)
    a = net.add(A, seeds=(B,))
    net.add(B)
    net.run_until(1.0)
    assert _events(a) == [("connected", "b")]
    net.kill(B)  # SIGKILL: the connection breaks
    net.run_until(100.0)
    assert _events(a) == [("lost", "b"), ("unreachable", "b")]
    net.add(B)
    net.run_until(102.0)
    assert _events(a) == [("connected", "b")]


def test_refusals_are_reported_on_both_sides() -> None:
    net = CoreNet(42)
    a = net.add(A, seeds=(B,))
    b = net.add(B, cluster="other")
    net.run_until(300.0)
    events = a.take_events()
    assert [e.kind for e in events] == ["refused"] and "cluster" in events[0].reason
    inbound = b.take_events()
    assert inbound and {(e.kind, e.url) for e in inbound} == {("refused", "inbound")}


# ---- epidemic forwarding -----------------------------------------------------------------------

def _updates_sent(net: CoreNet, src: str, after: float = 0.0) -> list[tuple[str, wire.Message]]:
    return [(d, decode(f)) for t, s, d, f in net.sent
            if s == src and t >= after and f[1] == wire.UPDATE]


def test_a_pushed_update_reaches_a_node_two_hops_away_without_a_round() -> None:
    """A - B - C (no link A - C): B forwards A's fresh push to C at once; no gossip round runs
    between the append and C holding the entry."""
    net = CoreNet(31)
    a = net.add(A, discovery=False, gossip_interval=30.0)
    net.add(B, seeds=(A,), discovery=False, gossip_interval=30.0)
    c = net.add(C, seeds=(B,), discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    assert net.connected(B) == {A, C} and net.connected(A) == {B}
    rounds_before = len([f for *_, f in net.sent if f[1] == wire.ROOT])
    appended = a.append([a.ledger.prepare("ctx", "k", b"far")], now=1.0)
    net.flush()  # deliver what is in flight; no timer fires
    assert ordered_ids(c.ledger, "ctx") == [appended.entries[0].id]
    assert len([f for *_, f in net.sent if f[1] == wire.ROOT]) == rounds_before
    forwarded = _updates_sent(net, B, after=1.0)
    assert [d for d, _ in forwarded] == [C]
    assert all(isinstance(m, wire.UpdateChunk) and m.pushed for _, m in forwarded)


def _link_to(core: NodeCore, node_id: str) -> PeerSession:
    return next(lk.session for lk in core.links.values() if lk.label == node_id)


def _origin(core: NodeCore) -> bytes:
    return bytes.fromhex(core.ledger.origin)


def _ring(seed: int, names: str = "abcde") -> tuple[CoreNet, dict[str, NodeCore]]:
    """Nodes on a ring (each dials the next), no discovery, rounds far away."""
    net = CoreNet(seed)
    urls = [f"ws://h/{n}" for n in names]
    cores = {n: net.add(urls[i], seeds=(urls[(i + 1) % len(urls)],), discovery=False,
                        gossip_interval=30.0) for i, n in enumerate(names)}
    net.run_until(1.0)
    assert all(len(net.connected(u)) == 2 for u in urls)
    return net, cores


def test_each_origin_s_eager_links_converge_to_a_tree() -> None:
    """A ring of 5: an origin's first push goes both ways round and the two fronts cross on
    one link, where each end gets the other's copy and stops forwarding that origin's pushes
    to it (no PRUNE frame needed). From the second append on, each push crosses exactly the
    4 links of a tree and nothing comes twice; another origin learns its own tree."""
    net, cores = _ring(32)
    for writer in ("a", "c"):
        sent = []
        for i in range(3):
            net.now += 1.0
            before = len(net.sent)
            core = cores[writer]
            core.append([core.ledger.prepare("ctx", "k", f"{writer}{i}".encode())], now=net.now)
            net.flush()
            sent.append(sum(1 for *_, f in net.sent[before:] if f[1] == wire.UPDATE))
        assert sent[0] == 6 and sent[1:] == [4, 4], sent  # 4 + the crossing copies, then a tree
        assert [f for *_, f in net.sent if f[1] == wire.PRUNE] == []
    roots = {core.ledger.root() for core in cores.values()}
    assert len(roots) == 1


def test_a_dense_neighbourhood_stops_forwarding_new_origins_direct_pushes() -> None:
    """A full mesh: every origin pushes its appends to every peer itself, so a neighbour
    forwarding them only sends copies. D and E see copies of A's, B's and C's first pushes
    (PRUNE_ALL_AFTER in a row) and send each other an empty PRUNE; when a new node F joins and
    appends, D and E forward its push to each other no more (each got it from F)."""
    assert PRUNE_ALL_AFTER == 3
    net = CoreNet(36)
    urls = [f"ws://h/{n}" for n in "abcdef"]
    cores = [net.add(u, seeds=tuple(urls[:i]), discovery=False, gossip_interval=30.0)
             for i, u in enumerate(urls[:5])]
    net.run_until(1.0)
    for i, core in enumerate(cores[:3]):
        net.now += 1.0
        core.append([core.ledger.prepare("ctx", "k", f"w{i}".encode())], now=net.now)
        net.flush()
    empty = {(s, d) for _, s, d, f in net.sent if f[1] == wire.PRUNE and decode(f) == wire.Prune()}
    assert {(urls[3], urls[4]), (urls[4], urls[3])} <= empty
    f = net.add(urls[5], seeds=tuple(urls[:5]), discovery=False, gossip_interval=30.0)
    net.run_until(net.now + 1.0)
    before = len(net.sent)
    f.append([f.ledger.prepare("ctx", "k", b"new")], now=net.now)
    net.flush()
    pairs = {(s, d) for _, s, d, fr in net.sent[before:] if fr[1] == wire.UPDATE}
    assert (urls[3], urls[4]) not in pairs and (urls[4], urls[3]) not in pairs
    assert len({core.ledger.root() for core in [*cores, f]}) == 1


def test_losing_an_origin_s_path_grafts_the_other_links() -> None:
    """A ring of 4: C gets A's pushes over one side (B or D). When that link closes, C asks
    its other peer to forward everything again (GRAFT, no digests), so A's next push reaches C
    at once, with no round and no IHAVE."""
    net, cores = _ring(37, "abcd")
    a, c = cores["a"], cores["c"]
    for i in range(2):
        net.now += 1.0
        a.append([a.ledger.prepare("ctx", "k", f"a{i}".encode())], now=net.now)
        net.flush()
    via = c._via[_origin(a)]
    parent = c.links[via].label
    other = "d" if parent == "b" else "b"
    assert not _link_to(cores[other], "c").eager_for(_origin(a))  # the ring's other side
    before = len(net.sent)
    c.close(via, "cut", net.now)
    net.flush()
    grafts = [(s, d) for _, s, d, f in net.sent[before:] if f[1] == wire.GRAFT]
    assert grafts == [(C, f"ws://h/{other}")]
    net.now += 1.0
    last = a.append([a.ledger.prepare("ctx", "k", b"after")], now=net.now)
    net.flush()
    assert last.entries[0].id in ordered_ids(c.ledger, "ctx")
    assert not any(f[1] in (wire.ROOT, wire.IHAVE) for *_, f in net.sent[before:])


def test_a_peer_that_keeps_sending_copies_is_asked_to_stop() -> None:
    """B no longer forwards A's pushes to C but C still forwards them to B (as after a
    reconnect on one side): after PRUNE_AFTER copies in a row B sends PRUNE naming A's origin,
    and C stops; the origin's own pushes are not affected."""
    net = CoreNet(38)
    a = net.add(A, discovery=False, gossip_interval=30.0)
    b = net.add(B, seeds=(A,), discovery=False, gossip_interval=30.0)
    c = net.add(C, seeds=(A, B), discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    origin = _origin(a)
    conn_b = next(cn for cn, lk in b.links.items() if lk.label == "c")
    for i in range(PRUNE_AFTER):
        net.now += 1.0
        a.append([a.ledger.prepare("ctx", "k", f"a{i}".encode())], now=net.now)
        _link_to(c, "b").unprune(origin)  # C keeps forwarding them to B
        b.links[conn_b].session.prune(origin)
        net.flush()
    prunes = [(s, d, decode(f)) for _, s, d, f in net.sent if f[1] == wire.PRUNE]
    assert prunes == [(B, C, wire.Prune(origin))]
    assert not _link_to(c, "b").eager_for(origin)
    net.now += 1.0
    a.append([a.ledger.prepare("ctx", "k", b"last")], now=net.now)
    net.flush()
    assert _updates_sent(net, C, after=net.now) == [] and _updates_sent(net, B, after=net.now) == []
    assert len({core.ledger.root() for core in (a, b, c)}) == 1


def test_hostile_prunes_and_grafts_only_change_the_sender_s_own_link() -> None:
    """A member M sends B PRUNEs naming 5,000 made-up origins and empty GRAFTs: B's state for
    M's link stays within MAX_PRUNED origins, B answers nothing, and its other links are
    untouched."""
    net = CoreNet(39)
    b = net.add(B, discovery=False, gossip_interval=30.0)
    net.add(A, seeds=(B,), discovery=False, gossip_interval=30.0)
    net.add("ws://h/m", seeds=(B,), discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    conn_m = next(cn for cn, lk in b.links.items() if lk.label == "m")
    rng = random.Random(39)
    print("seed 39")
    before = len(net.sent)
    for i in range(5000):
        b.frame_received(conn_m, wire.encode(wire.Prune(rng.randbytes(32))), 1.0)
        if i % 100 == 0:
            b.frame_received(conn_m, wire.encode(wire.Graft(())), 1.0)
    b.frame_received(conn_m, wire.encode(wire.Prune()), 1.0)
    net.flush()
    assert len(b.links[conn_m].session.per_origin) <= MAX_PRUNED
    assert not b.links[conn_m].session.eager
    assert [f for _, s, *_, f in net.sent[before:] if s == B] == []
    assert _link_to(b, "a").eager


def test_a_peer_repeating_a_push_cannot_make_us_amplify() -> None:
    """A hostile peer M sends B the same pushed update 50 times (fresh transfer ids): B
    forwards it to its other peers once; nothing else grows (and no link is pruned: the copies
    all came on M's own link, so they say nothing about cycles)."""
    net = CoreNet(34)
    b = net.add(B, discovery=False, gossip_interval=30.0)
    net.add(A, seeds=(B,), discovery=False, gossip_interval=30.0)
    net.add(C, seeds=(B,), discovery=False, gossip_interval=30.0)
    m = net.add("ws://h/m", seeds=(B,), discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    assert net.connected(B) == {A, C, "ws://h/m"}
    appended = m.append([m.ledger.prepare("ctx", "k", b"spam")], now=1.0)
    net.flush()
    (context, update), = appended.updates
    conn_at_b = next(c for c, lk in b.links.items() if lk.label == "m")
    for i in range(50):
        frame = wire.encode(wire.UpdateChunk(context, 1000 + i, len(update), 0, update, True))
        b.frame_received(conn_at_b, frame, 1.0)
    net.flush()
    forwarded = _updates_sent(net, B, after=1.0)
    assert sorted(d for d, _ in forwarded) == [A, C]  # the first push only, once per peer
    assert [f for *_, f in net.sent if f[1] in (wire.PRUNE, wire.GRAFT)] == []
    assert b.counters.entries_received == 1


def test_a_push_arriving_after_anti_entropy_delivered_it_does_not_prune() -> None:
    """A chain A - B: the push is late (anti-entropy delivered the entry first). Its copy is a
    duplicate, but not of another push: pruning the link would cut the chain's only path."""
    net = CoreNet(35)
    a = net.add(A, discovery=False, gossip_interval=1.0)
    b = net.add(B, seeds=(A,), discovery=False, gossip_interval=1.0)
    net.run_until(1.0)
    net.mute.add((A, B))
    appended = a.append([a.ledger.prepare("ctx", "k", b"late")], now=1.0)
    net.flush()
    net.mute.clear()
    net.run_until(5.0)  # a round delivers it
    assert ordered_ids(b.ledger, "ctx") == [appended.entries[0].id]
    (context, update), = appended.updates
    conn_at_b = next(iter(b.links))
    b.frame_received(conn_at_b, wire.encode(
        wire.UpdateChunk(context, 77, len(update), 0, update, True)), 5.0)
    net.flush()
    assert [f for *_, f in net.sent if f[1] == wire.PRUNE] == []
    assert _link_to(a, "b").eager  # A still forwards everything to B


# ---- lazy push: IHAVE and graft timers ---------------------------------------------------------

def _lazy_chain(seed: int, **config: object) -> tuple[CoreNet, NodeCore, NodeCore, NodeCore]:
    """A - B - C (no A - C), gossip rounds far away, the B - C link lazy on both ends (as if
    pruned earlier)."""
    net = CoreNet(seed)
    a = net.add(A, discovery=False, gossip_interval=30.0, **config)
    b = net.add(B, seeds=(A,), discovery=False, gossip_interval=30.0, **config)
    c = net.add(C, seeds=(B,), discovery=False, gossip_interval=30.0, **config)
    net.run_until(1.0)
    assert net.connected(B) == {A, C}
    for core, other in ((b, "c"), (c, "b")):
        next(lk for lk in core.links.values() if lk.label == other).session.eager = False
    return net, a, b, c


def test_an_announced_update_that_does_not_come_is_grafted_and_fetched() -> None:
    """The eager path to C is cut (B - C pruned): B announces A's push to C in an IHAVE; the
    push does not come, so when graft_timeout has passed C sends GRAFT with its digest, B
    pushes it, and the link is eager again, before any anti-entropy round."""
    net, a, b, c = _lazy_chain(41)
    rounds = len([f for *_, f in net.sent if f[1] == wire.ROOT])
    appended = a.append([a.ledger.prepare("ctx", "k", b"lazy")], now=1.0)
    net.flush()
    assert ordered_ids(b.ledger, "ctx") == [appended.entries[0].id]
    assert ordered_ids(c.ledger, "ctx") == []
    net.run_until(1.0 + b.config.ihave_delay + c.config.graft_timeout)
    ihaves = [(s, d, decode(f)) for _, s, d, f in net.sent if f[1] == wire.IHAVE]
    grafts = [(s, d, decode(f)) for _, s, d, f in net.sent if f[1] == wire.GRAFT]
    (context, update), = appended.updates
    digest = hashlib.sha256(update).digest()[:16]
    assert [(s, d, m.digests) for s, d, m in ihaves] == [(B, C, (digest,))]  # type: ignore[union-attr]
    assert [(s, d, m.digests) for s, d, m in grafts] == [(C, B, (digest,))]  # type: ignore[union-attr]
    assert ordered_ids(c.ledger, "ctx") == [appended.entries[0].id]
    assert len([f for *_, f in net.sent if f[1] == wire.ROOT]) == rounds
    assert _link_to(b, "c").eager_for(_origin(a))  # B forwards A's pushes to C again
    net.now = 5.0  # the next push takes the repaired eager path at once
    nxt = a.append([a.ledger.prepare("ctx", "k", b"next")], now=5.0)
    net.flush()
    assert nxt.entries[0].id in ordered_ids(c.ledger, "ctx")


def test_an_announced_update_that_came_by_push_is_not_asked_for() -> None:
    """The IHAVE arrives after the push (the normal case on a lazy link): no GRAFT."""
    net, a, b, c = _lazy_chain(42)
    for core, other in ((b, "c"), (c, "b")):  # eager again: C gets the push from B
        next(lk for lk in core.links.values() if lk.label == other).session.eager = True
    conn_at_c = next(cn for cn, lk in c.links.items() if lk.label == "b")
    appended = a.append([a.ledger.prepare("ctx", "k", b"both")], now=1.0)
    net.flush()
    (_, update), = appended.updates
    c.frame_received(conn_at_c, wire.encode(wire.IHave((hashlib.sha256(update).digest()[:16],))),
                     1.1)
    net.run_until(3.0)
    assert [f for *_, f in net.sent if f[1] == wire.GRAFT] == []
    assert c._missing == {}


def test_hostile_ihaves_cannot_make_a_node_spam_or_grow() -> None:
    """A member M floods B with IHAVEs of made-up digests (10 frames of MAX_DIGESTS): B waits
    for at most MAX_MISSING_PER_LINK of them, asks M for each once (GRAFT frames: no more than
    M's IHAVE frames, never to another peer), and forgets them once asked; a GRAFT asking for
    unknown digests, or asking twice for one update, gets nothing more than one push."""
    net = CoreNet(43)
    b = net.add(B, discovery=False, gossip_interval=30.0)
    a = net.add(A, seeds=(B,), discovery=False, gossip_interval=30.0)
    net.add("ws://h/m", seeds=(B,), discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    conn_m = next(cn for cn, lk in b.links.items() if lk.label == "m")
    rng = random.Random(43)
    print("seed 43")
    for _ in range(10):
        digests = tuple(rng.randbytes(16) for _ in range(MAX_DIGESTS))
        b.frame_received(conn_m, wire.encode(wire.IHave(digests)), 1.0)
    assert len(b._missing) == MAX_MISSING_PER_LINK
    net.flush()
    net.run_until(5.0)
    grafts = [(d, decode(f)) for _, s, d, f in net.sent if s == B and f[1] == wire.GRAFT]
    assert [d for d, _ in grafts] == ["ws://h/m"]
    assert len(grafts[0][1].digests) == MAX_MISSING_PER_LINK  # type: ignore[union-attr]
    assert b._missing == {} and b.links[conn_m].pending == 0
    # GRAFTs asking B for updates: unknown ones get nothing, a known one is pushed once.
    appended = a.append([a.ledger.prepare("ctx", "k", b"x")], now=5.0)
    net.flush()
    (_, update), = appended.updates
    known = hashlib.sha256(update).digest()[:16]
    before = len(_updates_sent(net, B))
    for _ in range(20):
        b.frame_received(conn_m, wire.encode(wire.Graft((known, rng.randbytes(16)))), 5.0)
    net.flush()
    assert len(_updates_sent(net, B)) - before == 1


def test_a_held_back_push_asks_its_sender_for_the_gap() -> None:
    """B gets A's second update without the first (lost on its way): Yjs holds it back, and
    B asks A at once (SYNC1) for what it lacks instead of waiting for a round."""
    net = CoreNet(44)
    a = net.add(A, discovery=False, gossip_interval=30.0)
    b = net.add(B, seeds=(A,), discovery=False, gossip_interval=30.0)
    net.run_until(1.0)
    net.mute.add((A, B))
    first = a.append([a.ledger.prepare("ctx", "k", b"one")], now=1.0)
    net.flush()
    net.mute.clear()
    second = a.append([a.ledger.prepare("ctx", "k", b"two")], now=1.1)
    net.flush()
    assert [s for _, s, d, f in net.sent if f[1] == wire.SYNC1] == [B]
    assert ordered_ids(b.ledger, "ctx") == [first.entries[0].id, second.entries[0].id]
