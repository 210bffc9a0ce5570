"""Simulated links between node cores: latency, jitter, loss, duplication, reordering, cuts.

A connection is modelled on TCP as far as the node can tell, but its frames travel over a path
that may misbehave the way the scenario asks:

* **dial**: a ``Dial`` reaches the target after one link latency (the target's core sees
  ``connection_accepted``) and the answer comes back one latency later (``connection_made``).
  A dial fails with "connection refused" when the target is down and "unknown host" for a URL
  no node owns. A SYN lost in a cut is sent again as a kernel does (Linux: 1 s after the
  dial, then 2 s, 4 s... later), so a dial that is still waiting when the cut heals gets
  through at its next retransmission; it fails "timed out" ``dial_timeout_s`` after it started
  (unless the node abandons it first: NodeConfig.dial_timeout).
* **frames**: each ``Send`` arrives after ``latency_ms`` plus up to ``jitter_ms``. What
  ``loss``, ``reorder``, ``duplicate`` and cuts do depends on the transport (``[links]
  transport``, network-wide):

  - ``"tcp"`` (the default) is what a node sees through TCP: every frame arrives once, in the
    order sent, or the connection breaks. A lost segment is retransmitted (the frame, and every
    frame behind it, arrives one retransmission timeout later: max(200 ms, 3 latencies)); a
    reordered one waits in the receiver's buffer (up to two latencies more, behind it too); a
    duplicate is discarded by TCP. Frames that reach a cut direction wait, in order, and are
    delivered one latency after the heal, unless the connection breaks first.
  - ``"datagram"`` is a misbehaving path or peer, beyond what TCP allows: a frame is dropped
    when its direction is cut (at send or at arrival) or with probability ``loss`` while the
    connection stays up, picked for reordering (probability ``reorder``: an extra delay of up
    to two latencies, outside the FIFO) and delivered twice with probability ``duplicate``. A
    node must still lose no acknowledged entry and skip no watcher delivery.
* **close**: a ``Close`` (or a crash: the kernel closes the sockets) sends a FIN after the last
  frame (with TCP, a FIN waits behind frames held by a cut); the other end sees
  ``connection_lost``. A frame arriving at a closed end is answered
  with a reset, so a peer that missed the FIN learns on its next frame.
* **cuts**: a set of one-way cuts (src, dst); a partition is the set of cuts between groups.
  When a pair stays cut (in either direction) for ``break_after_s``, its connections break and
  both ends see ``connection_lost`` (what a TCP user timeout does); the nodes then redial with
  their own backoff, and dials fail while the cut lasts.

Randomness comes only from the rng passed in (the run's single generator), and sets are never
iterated unsorted, so the same inputs give the same event order.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Protocol

from ..core.wire import NAMES
from .loop import EventLoop, to_ns

DIALING, OPEN, CLOSED = 0, 1, 2  # per-end connection states; the target's end starts CLOSED


@dataclass(frozen=True)
class LinkProps:
    """What one direction of a link does to frames."""

    latency_ms: float = 10.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0

    def updated(self, changes: dict[str, float]) -> LinkProps:
        return replace(self, **changes)


LINK_FIELDS = tuple(f.name for f in fields(LinkProps))


TRANSPORTS = ("tcp", "datagram")
MIN_RTO_NS = 200_000_000  # Linux's minimum TCP retransmission timeout


@dataclass(frozen=True)
class NetParams:
    break_after_s: float = 30.0  # a cut this long breaks the connections across it
    dial_timeout_s: float = 3.0  # the kernel gives up a dial whose SYNs a cut drops
    transport: str = "tcp"  # "tcp": in order, once, or broken; "datagram": loss/dup/reorder


class Host(Protocol):
    """The cluster side: where the network delivers what happened to a node's connections."""

    def is_up(self, node: str) -> bool: ...

    def accept(self, node: str) -> int: ...

    def flush(self, node: str) -> None: ...

    def made(self, node: str, conn: int) -> None: ...

    def dial_failed(self, node: str, conn: int, reason: str) -> None: ...

    def frame(self, node: str, conn: int, frame: bytes) -> None: ...

    def lost(self, node: str, conn: int, reason: str) -> None: ...


class SimConn:
    """One simulated connection; end 0 is the dialer, end 1 the target."""

    __slots__ = ("id", "nodes", "conns", "states", "floor", "open_at", "reset_sent", "started",
                 "syns", "held")

    def __init__(self, cid: int, dialer: str, conn: int, target: str) -> None:
        self.id = cid
        self.nodes = (dialer, target)
        self.conns = [conn, 0]
        self.states = [DIALING, CLOSED]
        self.floor = [0, 0]  # FIFO: earliest delivery time per direction (0: dialer → target)
        self.open_at = [0, 0]  # no frame may arrive at an end before it opened
        self.reset_sent = False
        self.started = 0  # when the dial began (ns)
        self.syns = 0  # SYNs sent so far
        # TCP: what reached a cut direction, in order (None = the FIN), per receiving end
        self.held: tuple[list[bytes | None], list[bytes | None]] = ([], [])

    def alive(self) -> bool:
        return self.states[0] != CLOSED or self.states[1] != CLOSED


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


class Network:
    def __init__(
        self, loop: EventLoop, rng: random.Random, host: Host, defaults: LinkProps,
        params: NetParams,
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.host = host
        self.defaults = defaults
        self.params = params
        self.props: dict[tuple[str, str], LinkProps] = {}  # per direction, overrides defaults
        self.urls: dict[str, str] = {}  # url → node
        self.cuts: set[tuple[str, str]] = set()
        self.cut_since: dict[tuple[str, str], int] = {}  # unordered pair → when it got cut
        self.ends: dict[str, dict[int, tuple[SimConn, int]]] = {}
        self.by_pair: dict[tuple[str, str], dict[int, SimConn]] = {}
        self._next_id = 1
        self.messages = 0
        self.bytes = 0
        self.by_type: dict[str, int] = {}
        self.dropped = 0

    def add_node(self, node: str, url: str) -> None:
        self.urls[url] = node
        self.ends[node] = {}

    # ---- link properties and cuts ------------------------------------------------------------

    def link(self, src: str, dst: str) -> LinkProps:
        return self.props.get((src, dst), self.defaults)

    def set_props(self, pairs: Iterable[tuple[str, str]] | None, changes: dict[str, float]) -> None:
        """Change link properties for the given directions, or everywhere (None)."""
        if pairs is None:
            self.defaults = self.defaults.updated(changes)
            for key in list(self.props):
                self.props[key] = self.props[key].updated(changes)
            return
        for key in pairs:
            self.props[key] = self.link(*key).updated(changes)

    def blocked(self, a: str, b: str) -> bool:
        """A TCP connection needs both directions."""
        return (a, b) in self.cuts or (b, a) in self.cuts

    def set_cuts(self, cuts: set[tuple[str, str]]) -> None:
        """Replace the set of one-way cuts; schedule connection breaks for newly cut pairs."""
        old_pairs = {_pair(a, b) for a, b in self.cuts}
        healed = sorted(self.cuts - cuts)
        self.cuts = set(cuts)
        new_pairs = {_pair(a, b) for a, b in self.cuts}
        for pair in sorted(old_pairs - new_pairs):
            del self.cut_since[pair]
        breaker = to_ns(self.params.break_after_s)
        for pair in sorted(new_pairs - old_pairs):
            self.cut_since[pair] = self.loop.now
            if self.by_pair.get(pair):
                self.loop.after(breaker, self._break, (pair, self.loop.now))
        for src, dst in healed:  # TCP: what waited at the cut is retransmitted
            for sc in self.by_pair.get(_pair(src, dst), {}).values():
                side = sc.nodes.index(dst)
                if sc.held[side]:
                    self.loop.after(self._latency(src, dst), self._release, (sc, side))

    def _break(self, arg: tuple[tuple[str, str], int]) -> None:
        pair, since = arg
        if self.cut_since.get(pair) != since:
            return  # healed (and maybe cut again) since
        conns = list(self.by_pair.get(pair, {}).values())
        if conns:
            self.loop.record("break", f"{pair[0]}|{pair[1]} {len(conns)}")
        for sc in conns:
            for side in (0, 1):
                self._end(sc, side, "connection timed out (network partition)")

    # ---- driver actions ----------------------------------------------------------------------

    def dial(self, node: str, conn: int, url: str) -> None:
        sc = SimConn(self._next_id, node, conn, self.urls.get(url, ""))
        self._next_id += 1
        self.ends[node][conn] = (sc, 0)
        target = sc.nodes[1]
        self.loop.record("dial", f"{node}#{conn} c{sc.id} {url}")
        if not target:
            self.loop.after(to_ns(0.001), self._dial_fail, (sc, "unknown host"))
            return
        self.by_pair.setdefault(_pair(node, target), {})[sc.id] = sc
        sc.started = self.loop.now
        self.loop.after(to_ns(self.params.dial_timeout_s), self._dial_fail,
                        (sc, "connection timed out"))
        self._send_syn(sc)

    def _send_syn(self, sc: SimConn) -> None:
        dialer, target = sc.nodes
        if sc.states[0] != DIALING:
            return
        sc.syns += 1
        if self.blocked(dialer, target):
            self._syn_lost(sc)
            return
        self.loop.after(self._latency(dialer, target), self._syn, sc)

    def _syn_lost(self, sc: SimConn) -> None:
        """Retransmit as the kernel does: 1 s after the dial, then 2 s, 4 s, ... after that."""
        again = sc.started + to_ns(float(2 ** sc.syns - 1))
        if again < sc.started + to_ns(self.params.dial_timeout_s):
            self.loop.at(max(again, self.loop.now), self._send_syn, sc)

    def _syn(self, sc: SimConn) -> None:
        dialer, target = sc.nodes
        if sc.states[0] != DIALING:
            return
        if self.blocked(dialer, target):
            self._syn_lost(sc)
            return
        if not self.host.is_up(target):
            self.loop.after(self._latency(target, dialer), self._dial_fail,
                            (sc, "connection refused"))
            return
        conn = self.host.accept(target)
        sc.conns[1] = conn
        sc.states[1] = OPEN
        self.ends[target][conn] = (sc, 1)
        self.loop.record("accept", f"{target}#{conn} c{sc.id} from {dialer}")
        synack = self.loop.now + self._latency(target, dialer)
        sc.floor[1] = sc.open_at[0] = synack
        self.loop.at(synack, self._synack, sc)
        self.host.flush(target)  # after the SYN-ACK is queued, so it precedes the HELLO

    def _synack(self, sc: SimConn) -> None:
        dialer = sc.nodes[0]
        if sc.states[0] != DIALING:
            self._reset(sc, 1)  # the dialer gave up or crashed meanwhile
            return
        sc.states[0] = OPEN
        sc.floor[0] = max(sc.floor[0], self.loop.now)
        self.loop.record("made", f"{dialer}#{sc.conns[0]} c{sc.id}")
        self.host.made(dialer, sc.conns[0])

    def _dial_fail(self, arg: tuple[SimConn, str]) -> None:
        sc, reason = arg
        if sc.states[0] != DIALING:
            return
        sc.states[0] = CLOSED
        node, conn = sc.nodes[0], sc.conns[0]
        self.ends[node].pop(conn, None)
        self._forget(sc)
        self.loop.record("dial_failed", f"{node}#{conn} c{sc.id} {reason}")
        self.host.dial_failed(node, conn, reason)

    def send(self, node: str, conn: int, frame: bytes) -> None:
        sc, side = self.ends[node][conn]
        self.messages += 1
        self.bytes += len(frame)
        kind = NAMES.get(frame[1], "?") if len(frame) > 1 else "?"
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        dst_side = 1 - side
        src, dst = sc.nodes[side], sc.nodes[dst_side]
        props = self.props.get((src, dst), self.defaults)
        rng = self.rng
        if self.params.transport == "tcp":
            # In order and once: loss and reordering only delay this frame and those behind it
            # (a cut holds them at arrival); TCP discards duplicates.
            base = self._latency_props(props)
            when = max(self.loop.now + base, sc.floor[side])
            if props.loss and rng.random() < props.loss:
                when += max(MIN_RTO_NS, 3 * base)
            elif props.reorder and rng.random() < props.reorder:
                when += int(rng.uniform(0, 2 * base))
            sc.floor[side] = when
            self.loop.at(when, self._deliver, (sc, dst_side, frame))
            return
        if (src, dst) in self.cuts or (props.loss and rng.random() < props.loss):
            self.dropped += 1
            return
        base = self._latency_props(props)
        when = self.loop.now + base
        if props.reorder and rng.random() < props.reorder:
            # Outside the FIFO: later frames may overtake this one.
            when = max(when + int(rng.uniform(0, 2 * base)), sc.open_at[dst_side])
        else:
            when = max(when, sc.floor[side])
            sc.floor[side] = when
        self.loop.at(when, self._deliver, (sc, dst_side, frame))
        if props.duplicate and rng.random() < props.duplicate:
            extra = int(rng.uniform(0, base)) + 1
            self.loop.at(when + extra, self._deliver, (sc, dst_side, frame))

    def close(self, node: str, conn: int, reason: str) -> None:
        entry = self.ends[node].pop(conn, None)
        if entry is None:
            return
        sc, side = entry
        sc.states[side] = CLOSED
        self._fin(sc, 1 - side)

    def node_down(self, node: str) -> None:
        """A crash: the kernel closes every socket of the process (FIN to each peer)."""
        ends, self.ends[node] = self.ends[node], {}
        for sc, side in ends.values():
            was = sc.states[side]
            sc.states[side] = CLOSED
            if was == OPEN:
                self._fin(sc, 1 - side)
            else:
                self._forget(sc)

    # ---- internals ---------------------------------------------------------------------------

    def _latency_props(self, props: LinkProps) -> int:
        ms = props.latency_ms
        if props.jitter_ms:
            ms += self.rng.uniform(0, props.jitter_ms)
        return max(1, int(ms * 1_000_000))

    def _latency(self, src: str, dst: str) -> int:
        return self._latency_props(self.props.get((src, dst), self.defaults))

    def _deliver(self, arg: tuple[SimConn, int, bytes]) -> None:
        sc, side, frame = arg
        src, dst = sc.nodes[1 - side], sc.nodes[side]
        if self.params.transport == "tcp":
            if (src, dst) in self.cuts or sc.held[side]:
                sc.held[side].append(frame)  # waits for the heal, behind what already waits
                return
        elif (src, dst) in self.cuts:
            self.dropped += 1
            return
        self._arrive(sc, side, frame)

    def _release(self, arg: tuple[SimConn, int]) -> None:
        """TCP, one latency after a heal: deliver what waited at the cut, in order."""
        sc, side = arg
        if (sc.nodes[1 - side], sc.nodes[side]) in self.cuts:
            return  # cut again meanwhile: the next heal releases them
        held = list(sc.held[side])
        sc.held[side].clear()
        for frame in held:
            if frame is None:
                self._end(sc, side, "connection closed by peer")
                return
            self._arrive(sc, side, frame)

    def _arrive(self, sc: SimConn, side: int, frame: bytes) -> None:
        src, dst = sc.nodes[1 - side], sc.nodes[side]
        if sc.states[side] == OPEN:
            conn = sc.conns[side]
            self.loop.record("recv", f"{dst}#{conn}<{src} c{sc.id} {NAMES.get(frame[1], '?')} "
                                     f"{len(frame)} {zlib.crc32(frame):08x}")
            self.host.frame(dst, conn, frame)
        elif sc.states[1 - side] == OPEN:
            self._reset(sc, 1 - side)  # nobody listens here any more: RST the sender

    def _fin(self, sc: SimConn, side: int) -> None:
        """Tell end ``side`` that its peer closed, after the frames already in flight."""
        if sc.states[side] != OPEN:
            self._forget(sc)
            return
        src, dst = sc.nodes[1 - side], sc.nodes[side]
        if (src, dst) in self.cuts and self.params.transport != "tcp":
            return  # lost: the reset on the next frame or the cut's break will tell
        when = max(self.loop.now + self._latency(src, dst), sc.floor[1 - side])
        self.loop.at(when, self._fin_arrives, (sc, side))

    def _fin_arrives(self, arg: tuple[SimConn, int]) -> None:
        sc, side = arg
        if self.params.transport == "tcp":
            if (sc.nodes[1 - side], sc.nodes[side]) in self.cuts or sc.held[side]:
                sc.held[side].append(None)  # after the frames that wait, like them
                return
        elif (sc.nodes[1 - side], sc.nodes[side]) in self.cuts:
            return
        self._end(sc, side, "connection closed by peer")

    def _reset(self, sc: SimConn, side: int) -> None:
        if sc.reset_sent or sc.states[side] != OPEN:
            return
        sc.reset_sent = True
        src, dst = sc.nodes[1 - side], sc.nodes[side]
        if (src, dst) in self.cuts:
            return
        self.loop.after(self._latency(src, dst), self._reset_arrives, (sc, side))

    def _reset_arrives(self, arg: tuple[SimConn, int]) -> None:
        sc, side = arg
        self._end(sc, side, "connection reset by peer")

    def _end(self, sc: SimConn, side: int, reason: str) -> None:
        """End ``side`` of a connection learns it is over."""
        state = sc.states[side]
        if state == CLOSED:
            return
        if state == DIALING:
            self._dial_fail((sc, reason))
            return
        sc.states[side] = CLOSED
        sc.held[side].clear()
        node, conn = sc.nodes[side], sc.conns[side]
        self.ends[node].pop(conn, None)
        self._forget(sc)
        self.loop.record("lost", f"{node}#{conn} c{sc.id} {reason}")
        self.host.lost(node, conn, reason)

    def _forget(self, sc: SimConn) -> None:
        if not sc.alive() and sc.nodes[1]:
            conns = self.by_pair.get(_pair(*sc.nodes))
            if conns is not None:
                conns.pop(sc.id, None)
