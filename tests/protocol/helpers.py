"""Shared helpers for the protocol tests: ledgers, a SessionPair, forged Yjs updates, a core net.

Everything here is sans-I/O and deterministic: no clock, no sockets, no sleeps.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pycrdt import Array, Doc

from p2p_ledger.core.entry import Entry, make_entry
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.node import Close, Dial, NodeConfig, NodeCore, Send
from p2p_ledger.core.protocol import Closed, Event, LocalInfo, PeerSession
from p2p_ledger.core.storage import MemoryStorage


def counter_ns() -> Callable[[], int]:
    """A deterministic wall clock for ``Ledger(now_ns=...)``."""
    ticks = itertools.count(1_700_000_000_000_000_000, 1000)
    return lambda: next(ticks)


def new_ledger(node_id: str, instance: str | None = None) -> Ledger:
    return Ledger.open(MemoryStorage(), node_id, instance or f"{node_id}-inst",
                       now_ns=counter_ns())


def append(ledger: Ledger, context: str, *payloads: bytes | str, key: str = "k") -> list[Entry]:
    return ledger.append([ledger.prepare(context, key, p) for p in payloads]).entries


def ids(ledger: Ledger, context: str) -> list[str]:
    """Every entry id of a context in causal order (the read model)."""
    ctx = ledger.contexts.get(context)
    return [e.id for e in ctx.ordered] if ctx else []


def id_sets(ledger: Ledger) -> dict[str, set[str]]:
    return {name: set(ids(ledger, name)) for name in ledger.contexts if len(ledger.contexts[name])}


def snapshot_state(ledger: Ledger) -> tuple[bytes, dict[str, list[bytes]], int]:
    """What must not change when a hostile frame is refused: root, stored updates, entry count."""
    assert isinstance(ledger.storage, MemoryStorage)
    stored = {k: list(v) for k, v in ledger.storage.updates.items()}
    return ledger.root(), stored, ledger.entry_count()


# ---- a pair of sessions ------------------------------------------------------------------------

@dataclass
class Side:
    session: PeerSession
    events: list[Event] = field(default_factory=list)
    frames_sent: list[bytes] = field(default_factory=list)

    @property
    def closed(self) -> list[Closed]:
        return [e for e in self.events if isinstance(e, Closed)]


class SessionPair:
    """Two PeerSessions on two ledgers; ``pump()`` moves frames between them until quiet.

    Delivery is in *flights*: every frame one side has queued is delivered to the other, then the
    other's replies form the next flight. ``round_trips`` is ``ceil(flights / 2)``. ``mangle`` may
    rewrite a flight (duplicate, reorder, drop) to test what the protocol tolerates.
    """

    def __init__(
        self,
        a: Ledger,
        b: Ledger,
        a_info: LocalInfo | None = None,
        b_info: LocalInfo | None = None,
        mangle: Callable[[list[bytes]], list[bytes]] | None = None,
        swapped: bool = False,
    ) -> None:
        self.a = Side(PeerSession(a_info or LocalInfo(a.node_id), a, b"A" * 16))
        self.b = Side(PeerSession(b_info or LocalInfo(b.node_id), b, b"B" * 16))
        # Roles: ``first`` starts and is pumped first; ``second`` answers. Swapped: b goes first.
        self.first, self.second = (self.b, self.a) if swapped else (self.a, self.b)
        self.mangle = mangle
        self.messages = 0
        self.bytes = 0
        self.flights = 0

    def sides(self) -> tuple[Side, Side]:
        return self.a, self.b

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def start(self) -> SessionPair:
        self.first.session.start()
        self.second.session.start()
        return self.pump()

    def reset_counters(self) -> None:
        self.messages = self.bytes = self.flights = 0

    @property
    def round_trips(self) -> int:
        return (self.flights + 1) // 2

    def pump(self, max_flights: int = 10_000) -> SessionPair:
        """Deliver until neither side has anything to send; events are collected per side."""
        for _ in range(max_flights):
            moved = False
            for src in (self.first, self.second):
                src.events += src.session.take_events()
                out = src.session.take_output()
                if not out:
                    continue
                moved = True
                self.flights += 1
                src.frames_sent += out
                self.messages += len(out)
                self.bytes += sum(map(len, out))
                if self.mangle is not None:
                    out = self.mangle(out)
                dst = self.other(src)
                for frame in out:
                    dst.session.receive(frame)
                dst.events += dst.session.take_events()
            if not moved:
                return self
        raise AssertionError("sessions never went quiet")

    def all_frames(self) -> list[bytes]:
        return self.a.frames_sent + self.b.frames_sent


def open_pair(a: Ledger, b: Ledger, swapped: bool = False, **kw: object) -> SessionPair:
    """An OPEN pair with its counters reset; ``pair.a`` is on ``a`` and ``pair.first`` is the
    side that starts things (``a``, or ``b`` when swapped)."""
    pair = SessionPair(a, b, swapped=swapped, **kw)  # type: ignore[arg-type]
    pair.start()
    assert pair.a.session.is_open and pair.b.session.is_open
    pair.reset_counters()
    return pair


# ---- forged Yjs updates ------------------------------------------------------------------------

def forged_update(records: Iterable[bytes], client_id: int = 4242) -> bytes:
    """A Yjs update from a foreign doc appending ``records`` to the "entries" array."""
    doc: Doc = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    arr.extend(list(records))
    return doc.get_update()


def deleting_update(full_state: bytes, index: int = 0, client_id: int = 4343) -> bytes:
    """Only a delete set: removes item ``index`` of a doc holding ``full_state``."""
    doc: Doc = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    doc.apply_update(full_state)
    before = doc.get_state()
    del arr[index]
    return doc.get_update(before)


def self_deleting_update(records: list[bytes], client_id: int = 4444) -> bytes:
    """A whole doc whose history appends records and then deletes the first one."""
    doc: Doc = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    arr.extend(records)
    del arr[0]
    return doc.get_update()


def foreign_entry(context: str, payload: bytes = b"x", origin: str = "mallory",
                  seq: int = 1) -> Entry:
    return make_entry(context, "k", payload, {}, seq, origin, seq, 1_700_000_000_000_000_000)


# ---- a network of NodeCores on a fake clock --------------------------------------------------

class CoreNet:
    """NodeCores wired by ``Send`` → ``frame_received`` on the other end, with a float clock.

    ``up`` says which URLs accept dials; ``mute`` holds (src_url, dst_url) pairs whose frames
    are silently lost (a hung peer); ``run_until`` jumps the clock from deadline to deadline.
    """

    def __init__(self, seed: int = 0) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.cores: dict[str, NodeCore] = {}
        self.up: set[str] = set()
        self.mute: set[tuple[str, str]] = set()
        self.wires: dict[tuple[str, int], tuple[str, int]] = {}
        self.dials: list[tuple[float, str, str]] = []  # (time, from url, to url)
        self.sent: list[tuple[float, str, str, bytes]] = []  # (time, from, to, frame)

    def add(self, url: str, seeds: tuple[str, ...] = (), **config: object) -> NodeCore:
        node_id = url.rsplit("/", 1)[-1]
        cfg = NodeConfig(node_id=node_id, url=url, seeds=seeds, **config)  # type: ignore[arg-type]
        core = self.cores[url] = NodeCore(new_ledger(node_id), cfg,
                                          random.Random(self.rng.getrandbits(64)))
        self.up.add(url)
        return core

    def flush(self) -> None:
        """Carry out every pending action of every core, until none is left."""
        while True:
            busy = False
            for url, core in list(self.cores.items()):
                for action in core.take_actions():
                    busy = True
                    self._do(url, core, action)
            if not busy:
                return

    def _do(self, url: str, core: NodeCore, action: object) -> None:
        if isinstance(action, Dial):
            self.dials.append((self.now, url, action.url))
            target = self.cores.get(action.url)
            if target is None or action.url not in self.up or url not in self.up:
                core.dial_failed(action.conn, self.now, f"cannot connect to {action.url}")
                return
            tconn = target.connection_accepted(self.now)
            self.wires[(url, action.conn)] = (action.url, tconn)
            self.wires[(action.url, tconn)] = (url, action.conn)
            core.connection_made(action.conn, self.now)
        elif isinstance(action, Send):
            peer = self.wires.get((url, action.conn))
            if peer is None or (url, peer[0]) in self.mute:
                return
            self.sent.append((self.now, url, peer[0], action.frame))
            self.cores[peer[0]].frame_received(peer[1], action.frame, self.now)
        elif isinstance(action, Close):
            peer = self.wires.pop((url, action.conn), None)
            if peer is not None:
                self.wires.pop(peer, None)
                self.cores[peer[0]].connection_lost(peer[1], self.now, "peer closed")

    def kill(self, url: str) -> None:
        """The process at ``url`` vanishes: its peers see their connections drop."""
        self.up.discard(url)
        for (src, conn), (dst, tconn) in list(self.wires.items()):
            if src == url:
                self.wires.pop((src, conn), None)
                self.wires.pop((dst, tconn), None)
                self.cores[dst].connection_lost(tconn, self.now, "connection broken")
        del self.cores[url]

    def step(self) -> None:
        """Advance to the earliest deadline of any core and tick every core that is due."""
        self.flush()
        deadline = min(core.next_deadline() for core in self.cores.values())
        assert deadline != float("inf"), "nothing left to do"
        self.now = max(self.now, deadline)
        for core in list(self.cores.values()):
            if core.next_deadline() <= self.now:
                core.tick(self.now)
        self.flush()

    def run_until(self, t: float) -> None:
        while True:
            self.flush()
            deadline = min([core.next_deadline() for core in self.cores.values()] + [t])
            if deadline >= t:
                self.now = max(self.now, t)
                for core in self.cores.values():
                    core.tick(self.now)
                self.flush()
                return
            self.step()

    def connected(self, url: str) -> set[str]:
        """URLs of the peers ``url`` has an open link to."""
        core = self.cores[url]
        return {link.url for link in core.links.values()
                if link.session.is_open and link.node_id in core.by_node
                and core.by_node[link.node_id] in core.links}
