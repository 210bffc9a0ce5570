"""Sync benchmarks: our root/Merkle-tree gossip against the plain Yjs sync protocol.

Three ways to run the same cases, and every row says which one it comes from:

* ``mem``: two ``PeerSession``s (or two Yjs endpoints) wired together in memory. Frames are
  counted exactly (messages, bytes); round trips are counted as half trips / 2, where a half
  trip delivers every frame that is in flight, both ways at once.
* ``ws``: the same two endpoints on the two ends of a real loopback websocket (our transport's
  ``PeerLink``, with its flow control), both in this process and trio run; wall-clock time from
  the first frame of the round until every frame has been handled.
* ``node``: two ``open_node``s (SQLite, synchronous=FULL) on loopback, measured only through
  ``node.core.counters``, the sessions' ``sent_by_type`` and their ledgers.

The baseline ("Yjs") keeps one bare pycrdt ``Doc`` per context and, per round, does what
y-websocket / pycrdt-websocket do on (re)connect: each side sends SYNC_STEP1 (its state vector)
for every document and answers each SYNC_STEP1 with SYNC_STEP2 (the diff), applied without any
check. Documents are multiplexed over one link by prefixing each message with the document name
(y-websocket would open one websocket per document instead).

Big ledgers are built in memory (``MemoryStorage``) as "twins": two ledgers with the same node
identity and a deterministic clock, fed the same appends, hold byte-identical documents; only
their sessions get different node ids. That costs one build per side instead of a rebuild.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio
from pycrdt import Decoder, Doc, create_sync_message, handle_sync_message, write_var_uint

from ..core.bundle import decode_bundle
from ..core.ledger import Ledger
from ..core.protocol import LocalInfo, PeerSession, State
from ..core.storage import HeadChange, MemoryStorage
from ..core.wire import MAX_FRAME, NAMES, Root, encode
from ..core.yjs import decode_state_vector
from ..trio.runtime import Node, open_node
from ..trio.store import SqliteStore
from ..trio.transport import (
    API_MAX_SIZE,
    PeerLink,
    dial,
    open_listeners,
    port_of,
    serve_websockets,
)
from .bench_common import (
    PAYLOAD,
    Sample,
    Scale,
    Table,
    discard,
    gc_pause,
    gc_paused,
    met,
    ratio,
    say,
    tempdir,
)

ROOT_ROUND = len(encode(Root(False, bytes(16)))) + len(encode(Root(True)))  # request + reply
GOSSIP = 0.1  # seconds between anti-entropy rounds in the open_node cases ("short")


class Endpoint(Protocol):
    def receive(self, frame: bytes) -> None: ...

    def take_output(self) -> list[bytes]: ...


# ---- building ledgers ----------------------------------------------------------------------


def _clock() -> Callable[[], int]:
    ticks = itertools.count(1_700_000_000_000_000_000, 1000)
    return lambda: next(ticks)


def new_ledger(node_id: str = "bench-a") -> Ledger:
    return Ledger.open(MemoryStorage(), node_id, f"{node_id}-instance", now_ns=_clock())


def fill(ledgers: Sequence[Ledger], names: Sequence[str], per_context: int, size: int,
         seed: int) -> int:
    """Append the same entries to every ledger (≤ 100 per context per call keeps pycrdt fast)."""
    rng = random.Random(seed)
    n = 0
    with gc_paused():
        for start in range(0, per_context, 100):
            count = min(100, per_context - start)
            for name in names:
                requests = [ledgers[0].prepare(name, "k", rng.randbytes(size))
                            for _ in range(count)]
                for ledger in ledgers:
                    ledger.append(requests)
                n += count
    return n


def twins(names: Sequence[str], per_context: int, size: int = PAYLOAD) -> tuple[Ledger, Ledger]:
    """Two nodes holding the same entries: ``a`` wrote them, ``b`` (another key: a node does
    not link to itself) took them in whole."""
    a, b = new_ledger(), new_ledger("bench-b")
    fill((a,), names, per_context, size, seed=1)
    for name in a.contexts:
        bundle = a.bundle_diff(name, None)
        if bundle is not None:
            b.apply_remote(name, bundle)
    if a.root() != b.root():
        raise RuntimeError("twin ledgers differ after the same appends")
    return a, b


def context_names(n: int) -> list[str]:
    return [f"ctx-{i:05d}" for i in range(n)]


def docs_of(ledger: Ledger) -> dict[str, Doc[Any]]:
    """Bare pycrdt copies of every context: what the Yjs baseline syncs."""
    out: dict[str, Doc[Any]] = {}
    for name, ctx in ledger.contexts.items():
        doc: Doc[Any] = Doc()
        doc.apply_update(ctx.doc.get_update())
        out[name] = doc
    return out


def diverge(ledger: Ledger, names: Sequence[str], per_context: int, docs: dict[str, Doc[Any]],
            seed: int, *more_docs: dict[str, Doc[Any]]) -> int:
    """Append new entries to ``names`` on one side (and its baselines' docs); returns their
    bytes."""
    rng = random.Random(seed)
    requests = [ledger.prepare(name, "k", rng.randbytes(PAYLOAD))
                for name in names for _ in range(per_context)]
    appended = ledger.append(requests)
    for name, update in appended.updates:
        for each in (docs, *more_docs):
            doc = each.get(name)
            if doc is None:
                doc = each[name] = Doc()
            doc.apply_update(decode_bundle(update).update)
    return sum(len(e.record) for e in appended.entries)


# ---- endpoints -----------------------------------------------------------------------------


def sessions(a: Ledger, b: Ledger) -> tuple[PeerSession, PeerSession]:
    sa = PeerSession(LocalInfo("bench-a"), a, b"\x01" * 16)
    sb = PeerSession(LocalInfo("bench-b"), b, b"\x02" * 16)
    return sa, sb


def both(*calls: Callable[[], None]) -> Callable[[], None]:
    """One kick that starts several things at the same moment (e.g. both sides' rounds)."""
    def run() -> None:
        for call in calls:
            call()
    return run


def check_open(*endpoints: Endpoint) -> None:
    for ep in endpoints:
        if isinstance(ep, PeerSession):
            ep.take_events()  # nobody else drains them here
            if ep.state is not State.OPEN:
                raise RuntimeError(f"session closed during the bench: {ep.close_reason}")


def _name_prefix(name: str) -> bytes:
    raw = name.encode()
    return write_var_uint(len(raw)) + raw


class YjsEndpoint:
    """The baseline: plain Yjs sync per document, no gate, no index, no Merkle tree."""

    def __init__(self, docs: dict[str, Doc[Any]], names: Iterable[str] | None = None) -> None:
        self.docs = docs
        # A cold side must be told the documents' names (y-websocket has no discovery).
        self.names = sorted(set(docs) | set(names or ()))
        self._out: list[bytes] = []

    def start_round(self) -> None:
        for name in self.names:
            self._out.append(_name_prefix(name) + create_sync_message(self._doc(name)))

    def _doc(self, name: str) -> Doc[Any]:
        doc = self.docs.get(name)
        if doc is None:
            doc = self.docs[name] = Doc()
        return doc

    def receive(self, frame: bytes) -> None:
        dec = Decoder(frame)
        name = dec.read_var_string()
        msg = frame[dec.i0:]
        # msg = [YMessageType.SYNC][sync type][payload]; handle_sync_message wants it w/o the 1st
        reply = handle_sync_message(msg[1:], self._doc(name))
        if reply is not None:
            self._out.append(_name_prefix(name) + reply)

    def take_output(self) -> list[bytes]:
        out, self._out = self._out, []
        return out


class YjsBatched:
    """The strong baseline: what a competent Yjs user does for many documents on one link.

    A round starts with one digest of every (document, state vector) pair (sha256, 32 B). The
    peer answers OK (one byte) when its own digest is equal; otherwise it sends every state
    vector, batched into frames of at most MAX_FRAME. The starter then sends, batched, the diff
    of every document the peer lacks something of, and its own state vector for every document
    where the peer holds something it lacks (or that it does not know); the peer answers those
    with their diffs. No gate, no index, no Merkle tree; frames are ``u8 type | body`` with
    varuint-prefixed names and blobs.
    """

    HASH, OK, VECTORS, LAST_VECTORS, DIFFS, ASK = range(1, 7)

    def __init__(self, docs: dict[str, Doc[Any]], names: Iterable[str] | None = None) -> None:
        self.docs = docs
        self._listed: set[str] = set()  # documents the peer's VECTORS named so far
        for name in names or ():
            self._doc(name)
        self._out: list[bytes] = []

    def _doc(self, name: str) -> Doc[Any]:
        doc = self.docs.get(name)
        if doc is None:
            doc = self.docs[name] = Doc()
        return doc

    def _vectors(self) -> list[tuple[str, bytes]]:
        return [(name, self.docs[name].get_state()) for name in sorted(self.docs)]

    def _digest(self) -> bytes:
        h = hashlib.sha256()
        for name, sv in self._vectors():
            h.update(_name_prefix(name) + write_var_uint(len(sv)) + sv)
        return h.digest()

    def start_round(self) -> None:
        self._out.append(bytes([self.HASH]) + self._digest())

    def _batched(self, kind: int, pairs: Iterable[tuple[str, bytes]], last: int = 0) -> None:
        """Frames of ``kind`` holding the pairs; the final one is marked ``last`` if given."""
        frame = bytearray([kind])
        for name, blob in pairs:
            part = _name_prefix(name) + write_var_uint(len(blob)) + blob
            if len(frame) > 1 and len(frame) + len(part) > MAX_FRAME:
                self._out.append(bytes(frame))
                frame = bytearray([kind])
            frame += part
        if len(frame) > 1 or last:
            if last:
                frame[0] = last
            self._out.append(bytes(frame))

    @staticmethod
    def _pairs(frame: bytes) -> Iterator[tuple[str, bytes]]:
        dec = Decoder(frame[1:])
        while dec.i0 < len(frame) - 1:
            name = dec.read_var_string()
            yield name, bytes(dec.read_message() or b"")

    def receive(self, frame: bytes) -> None:
        kind = frame[0]
        if kind == self.HASH:
            if frame[1:] == self._digest():
                self._out.append(bytes([self.OK]))
            else:
                self._listed = set()
                self._batched(self.VECTORS, self._vectors(), last=self.LAST_VECTORS)
        elif kind in (self.VECTORS, self.LAST_VECTORS):
            theirs = dict(self._pairs(frame))
            self._listed |= theirs.keys()
            diffs, asks = [], []
            for name, sv in theirs.items():
                mine = decode_state_vector(self._doc(name).get_state())
                their = decode_state_vector(sv)
                if any(c > their.get(k, 0) for k, c in mine.items()):
                    diffs.append((name, self.docs[name].get_update(sv)))
                if any(c > mine.get(k, 0) for k, c in their.items()):
                    asks.append((name, self.docs[name].get_state()))
            if kind == self.LAST_VECTORS:  # documents the peer did not list: send them whole
                diffs += [(name, self.docs[name].get_update())
                          for name in sorted(self.docs.keys() - self._listed)]
                self._listed = set()
            self._batched(self.DIFFS, diffs)
            self._batched(self.ASK, asks)
        elif kind == self.ASK:
            self._batched(self.DIFFS, [(name, self._doc(name).get_update(sv))
                                       for name, sv in self._pairs(frame)])
        elif kind == self.DIFFS:
            for name, update in self._pairs(frame):
                self._doc(name).apply_update(update)

    def take_output(self) -> list[bytes]:
        out, self._out = self._out, []
        return out


# ---- in-memory pair ------------------------------------------------------------------------


@dataclass
class Traffic:
    messages: int = 0
    bytes: int = 0
    half_trips: int = 0
    seconds: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)

    @property
    def round_trips(self) -> float:
        return self.half_trips / 2


def pump(a: Endpoint, b: Endpoint, typed: bool = False) -> Traffic:
    """Move frames until both sides are quiet; every frame in flight travels in one half trip."""
    tr = Traffic()
    t0 = time.perf_counter()
    out_a, out_b = a.take_output(), b.take_output()
    while out_a or out_b:
        tr.half_trips += 1
        for frames, dst in ((out_a, b), (out_b, a)):
            for f in frames:
                tr.messages += 1
                tr.bytes += len(f)
                if typed:
                    name = NAMES.get(f[1], "?")
                    tr.by_type[name] = tr.by_type.get(name, 0) + len(f)
                dst.receive(f)
        out_a, out_b = a.take_output(), b.take_output()
    tr.seconds = time.perf_counter() - t0
    check_open(a, b)
    return tr


def mem_sessions(a: Ledger, b: Ledger) -> tuple[PeerSession, PeerSession]:
    sa, sb = sessions(a, b)
    sa.start()
    sb.start()
    pump(sa, sb)
    return sa, sb


def mem_round(sa: PeerSession, sb: PeerSession) -> Traffic:
    """One anti-entropy round started by ``sa`` (what its gossip timer does)."""
    sa.send_root()
    return pump(sa, sb, typed=True)


def yjs_round(ya: YjsEndpoint, yb: YjsEndpoint) -> Traffic:
    ya.start_round()
    yb.start_round()
    return pump(ya, yb)


def batched_round(starter: YjsBatched, other: YjsBatched) -> Traffic:
    """One round of the strong baseline started by ``starter``; round trips are measured."""
    starter.start_round()
    return pump(starter, other)


# ---- real websocket pair -------------------------------------------------------------------


@dataclass
class _Side:
    endpoint: Endpoint
    link: PeerLink
    send: trio.MemorySendChannel[bytes]
    recv: trio.MemoryReceiveChannel[bytes]
    bytes: int = 0
    messages: int = 0


class WsDriver:
    """Runs rounds over a real websocket and knows when every frame has been handled."""

    def __init__(self) -> None:
        self.sides: list[_Side] = []
        self.enqueued = 0
        self.processed = 0
        self.quiet = trio.Event()

    def attach(self, endpoint: Endpoint, link: PeerLink) -> _Side:
        send, recv = trio.open_memory_channel[bytes](float("inf"))
        side = _Side(endpoint, link, send, recv)
        self.sides.append(side)
        return side

    def _flush(self, side: _Side) -> None:
        for f in side.endpoint.take_output():
            side.bytes += len(f)
            side.messages += 1
            self.enqueued += 1
            side.send.send_nowait(f)

    def _check(self) -> None:
        if self.processed == self.enqueued:
            self.quiet.set()

    async def reader(self, side: _Side) -> None:
        while True:
            frame = await side.link.recv()
            side.endpoint.receive(frame)
            self._flush(side)  # replies are queued before the frame counts as handled
            self.processed += 1
            self._check()

    @staticmethod
    async def writer(side: _Side) -> None:
        # A separate writer: a reader blocked on send credit could never read the credit back.
        async for frame in side.recv:
            await side.link.send(frame)

    async def run(self, kick: Callable[[], None], timeout: float = 600) -> Traffic:
        """Seconds (and frames) from ``kick`` until every frame sent was handled."""
        self.quiet = trio.Event()
        before = [(s.messages, s.bytes) for s in self.sides]
        t0 = time.perf_counter()
        kick()
        for side in self.sides:
            self._flush(side)
        self._check()
        with trio.fail_after(timeout):
            await self.quiet.wait()
        tr = Traffic(seconds=time.perf_counter() - t0)
        for side, (m, b) in zip(self.sides, before, strict=True):
            tr.messages += side.messages - m
            tr.bytes += side.bytes - b
        check_open(*(s.endpoint for s in self.sides))
        return tr


@asynccontextmanager
async def ws_pair(a: Endpoint, b: Endpoint) -> AsyncIterator[WsDriver]:
    """``a`` dials, ``b`` accepts, on 127.0.0.1 with our PeerLink (flow control, no deflate)."""
    driver = WsDriver()
    async with trio.open_nursery() as nursery:
        ready = trio.Event()

        async def handler(ws: Any) -> None:
            side = driver.attach(b, PeerLink(ws))
            async with trio.open_nursery() as inner:
                inner.start_soon(driver.writer, side)
                inner.start_soon(driver.reader, side)
                ready.set()

        # The baseline's SYNC_STEP2 carries a whole document in one message: large messages
        # both ways (API_MAX_SIZE here, api=True on the dialing side).
        server = await nursery.start(functools.partial(
            serve_websockets, handler, await open_listeners("127.0.0.1", 0),
            max_size=API_MAX_SIZE))
        async with dial(f"ws://127.0.0.1:{port_of(server)}", api=True) as ws:
            side = driver.attach(a, PeerLink(ws))
            nursery.start_soon(driver.writer, side)
            nursery.start_soon(driver.reader, side)
            await ready.wait()
            # The server side is attached second: keep sides in (a, b) order for the reports.
            driver.sides.sort(key=lambda s: s.endpoint is not a)
            try:
                yield driver
            finally:
                nursery.cancel_scope.cancel()


async def ws_compare(
    a: Ledger, b: Ledger, ya: YjsEndpoint | None, yb: YjsEndpoint | None, repeats: int,
    before: Callable[[int], None] | None = None,
) -> tuple[list[Traffic], list[Traffic]]:
    """Rounds over real websockets: ours (started by ``a``) then the baseline's, alternately.

    ``before(i)`` sets up repeat i (e.g. diverges both the ledger and the baseline's docs), so
    each repeat of ours and of the baseline sees the same difference.
    """
    sa, sb = sessions(a, b)
    ours: list[Traffic] = []
    base: list[Traffic] = []
    async with ws_pair(sa, sb) as driver:
        await driver.run(both(sa.start, sb.start))
        if ya is None or yb is None:
            for i in range(repeats):
                if before is not None:
                    before(i)
                ours.append(await driver.run(sa.send_root))
            return ours, base
        async with ws_pair(ya, yb) as ydriver:
            for i in range(repeats):
                if before is not None:
                    before(i)
                ours.append(await driver.run(sa.send_root))
                base.append(await ydriver.run(both(ya.start_round, yb.start_round)))
    return ours, base


async def ws_yjs_rounds(ya: YjsEndpoint, yb: YjsEndpoint, repeats: int) -> list[Traffic]:
    async with ws_pair(ya, yb) as driver:
        return [await driver.run(both(ya.start_round, yb.start_round))
                for _ in range(repeats)]


# ---- (a) in-sync rounds --------------------------------------------------------------------


@dataclass
class Pair:
    """Two ledgers, their sessions, and the baseline's documents, kept in step."""

    a: Ledger
    b: Ledger
    sa: PeerSession
    sb: PeerSession
    docs_a: dict[str, Doc[Any]]
    docs_b: dict[str, Doc[Any]]
    entries: int
    # the batched baseline's own copies (a round of one baseline syncs its documents)
    batch_a: dict[str, Doc[Any]] = field(default_factory=dict)
    batch_b: dict[str, Doc[Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, contexts: int, per_context: int) -> Pair:
        t0 = time.perf_counter()
        a, b = twins(context_names(contexts), per_context)
        sa, sb = mem_sessions(a, b)
        with gc_paused():
            docs_a, docs_b = docs_of(a), docs_of(b)
            batch_a, batch_b = docs_of(a), docs_of(b)
        pair = cls(a, b, sa, sb, docs_a, docs_b, a.entry_count(), batch_a, batch_b)
        say(f"sync: built twin ledgers of {pair.entries:,} entries in {contexts:,} contexts"
            f" ({time.perf_counter() - t0:.1f}s)")
        return pair


IN_SYNC_COLUMNS = [
    "contexts", "entries", "ours B", "msgs", "RT", "mem ms", "ws ms",
    "batched Yjs B", "batched RT", "plain Yjs B", "plain RT", "plain ws ms",
    "B ours/strongest", "1 RT, fewer B",
]
# (the "Yjs RT" figures are counted from the baselines' own frames, like ours)


def in_sync_row(table: Table, pair: Pair, contexts: int, scale: Scale) -> None:
    repeats = scale.repeats
    ours_mem = [mem_round(pair.sa, pair.sb) for _ in range(repeats)]
    ya, yb = YjsEndpoint(pair.docs_a), YjsEndpoint(pair.docs_b)
    yjs_mem = [yjs_round(ya, yb) for _ in range(repeats)]
    ba, bb = YjsBatched(pair.batch_a), YjsBatched(pair.batch_b)
    batched = [batched_round(ba, bb) for _ in range(repeats)]
    ours_ws, yjs_ws = trio.run(ws_compare, pair.a, pair.b, ya, yb, repeats)
    o, y, bt = ours_mem[-1], yjs_mem[-1], batched[-1]  # the same every round: show the last
    o_ws = Sample([t.seconds for t in ours_ws]).median
    y_ws = Sample([t.seconds for t in yjs_ws]).median
    strongest = min(y.bytes, bt.bytes)
    table.add(contexts, pair.entries, o.bytes, o.messages, o.round_trips,
              Sample([t.seconds for t in ours_mem]).median * 1e3, o_ws * 1e3,
              bt.bytes, bt.round_trips, y.bytes, y.round_trips, y_ws * 1e3,
              ratio(o.bytes, strongest),
              met(scale, o.round_trips == 1 and o.bytes < strongest))


# ---- (b) reconcile after divergence, (c) one missing entry ---------------------------------


def reconcile_table(title: str) -> Table:
    return Table(title, ["measure", "from", "ours", "batched Yjs", "plain Yjs",
                         "ours/strongest", "goal", "met"])


@dataclass
class Reconcile:
    """Per starter ("holder": the side with the new entries starts the round; "other"; "fresh":
    the other side on a link opened after the change), ours and the batched baseline."""

    missing: Sample = field(default_factory=Sample)
    ours: dict[str, list[Traffic]] = field(default_factory=dict)
    batched: dict[str, list[Traffic]] = field(default_factory=dict)
    plain: list[Traffic] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)


def reconcile_runs(pair: Pair, scale: Scale, pick: Callable[[int], list[str]], per: int,
                   what: str) -> Reconcile:
    """Diverge ``pick(r)`` by ``per`` entries on side a, then reconcile: once per starter, for
    ours and for the batched baseline; the plain baseline (both sides start) once per repeat."""
    out = Reconcile()
    ya, yb = YjsEndpoint(pair.docs_a), YjsEndpoint(pair.docs_b)
    ba, bb = YjsBatched(pair.batch_a), YjsBatched(pair.batch_b)
    seed = 1000
    for _ in range(scale.repeats):
        for starter in ("holder", "other", "fresh"):
            seed += 1
            out.missing.add(diverge(pair.a, pick(seed), per, pair.docs_a, seed, pair.batch_a))
            if starter == "fresh":  # a reconnect: new sessions, HELLO, then the first round
                pair.sa, pair.sb = mem_sessions(pair.a, pair.b)
            tr = mem_round(pair.sa, pair.sb) if starter == "holder" else \
                mem_round(pair.sb, pair.sa)
            out.ours.setdefault(starter, []).append(tr)
            out.types = tr.by_type
            if pair.a.root() != pair.b.root():
                raise RuntimeError(f"{what}: ours did not converge in one round ({starter})")
            if starter != "fresh":  # the baseline is stateless: a new link changes nothing
                out.batched.setdefault(starter, []).append(
                    batched_round(ba, bb) if starter == "holder" else batched_round(bb, ba))
            else:
                out.plain.append(yjs_round(ya, yb))
    return out


def _med(trs: list[Traffic], attr: str) -> float:
    return Sample([float(getattr(t, attr)) for t in trs]).median


def reconcile_rows(table: Table, run: Reconcile, goal_rt: float | None,
                   goal_bytes: float | None, quick: bool) -> None:
    """Bytes and round trips per starter, then the worst case; goals only at full size."""
    def goal(text: str, ok: bool) -> tuple[str | None, bool | None]:
        return (f"{text} (full size only)", None) if quick else (text, ok)

    table.add("missing entries' records (bytes)", "-", run.missing.median, run.missing.median,
              run.missing.median, 1.0, None, None)
    plain_b, plain_rt = _med(run.plain, "bytes"), _med(run.plain, "round_trips")
    worst = {"bytes": 0.0, "round_trips": 0.0}
    worst_base = {"bytes": 0.0, "round_trips": 0.0}
    for starter, label in (("holder", "the side holding them starts"),
                           ("other", "the other side starts"),
                           ("fresh", "the other side, on a fresh link")):
        o_b, o_rt = _med(run.ours[starter], "bytes"), _med(run.ours[starter], "round_trips")
        base = run.batched.get(starter, run.batched["other"])
        b_b, b_rt = _med(base, "bytes"), _med(base, "round_trips")
        worst = {"bytes": max(worst["bytes"], o_b), "round_trips": max(worst["round_trips"], o_rt)}
        worst_base = {"bytes": max(worst_base["bytes"], b_b),
                      "round_trips": max(worst_base["round_trips"], b_rt)}
        table.add(f"bytes, {label}", "mem", o_b, b_b, plain_b, ratio(o_b, min(b_b, plain_b)),
                  None, None)
        table.add(f"round trips, {label}", "mem", o_rt, b_rt, plain_rt, None, None, None)
    strongest = min(worst_base["bytes"], plain_b)
    g, ok = goal(f"< {strongest:,.0f} B" + (f", ≤{goal_bytes:,.0f}" if goal_bytes else ""),
                 worst["bytes"] < strongest and (goal_bytes is None or
                                                 worst["bytes"] <= goal_bytes))
    table.add("bytes, worst case", "mem", worst["bytes"], worst_base["bytes"], plain_b,
              ratio(worst["bytes"], strongest), g, ok)
    if goal_rt is not None:
        g, ok = goal(f"≤{goal_rt:g}", worst["round_trips"] <= goal_rt)
    else:
        g, ok = None, None
    table.add("round trips, worst case", "mem", worst["round_trips"],
              worst_base["round_trips"], plain_rt, None, g, ok)
    table.notes += [
        "batched Yjs = the strong baseline (one digest of every state vector, then every state"
        " vector and the diffs batched in 64 KiB frames); plain Yjs = one SYNC_STEP1/STEP2"
        " exchange per document started by both sides at once (what y-websocket does on a"
        " reconnect). Round trips of every column are counted from the frames (half trips / 2).",
        "ours by message type (bytes, last round): "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(run.types.items())),
    ]


def bench_diverged(pair: Pair, scale: Scale, table: Table) -> None:
    n = len(pair.a.contexts)
    d = max(1, round(n * scale.diverged_fraction))
    names = sorted(pair.a.contexts)
    run = reconcile_runs(pair, scale, lambda seed: random.Random(seed).sample(names, d),
                         scale.diverged_entries, "(b)")
    digests = d * max(1, (n - 1).bit_length()) * 32
    reconcile_rows(table, run, None, 1.2 * run.missing.median + digests, scale.quick)
    table.notes.insert(0, f"{d} of {n:,} contexts ({scale.diverged_fraction:.0%}) each got"
                       f" {scale.diverged_entries} new entries of {PAYLOAD} B on one side;"
                       f" medians of {scale.repeats} rounds per starter; goal also ≤ 1.2 ×"
                       f" missing + d·⌈log2 N⌉ digests of 32 B ({digests:,} B).")


def bench_one_missing(pair: Pair, scale: Scale, table: Table) -> None:
    names = sorted(pair.a.contexts)
    run = reconcile_runs(pair, scale, lambda seed: [random.Random(seed).choice(names)], 1, "(c)")
    reconcile_rows(table, run, 3, 1536, scale.quick)


# ---- open_node: in-sync gossip and reconciliation ------------------------------------------


# What a ledger has stored: its update rows and its stored heads (the heads are not in the rows)
Stored = tuple[list[tuple[str, bytes]], list[HeadChange]]


def rows_of(ledger: Ledger, names: Iterable[str] | None = None) -> Stored:
    storage = ledger.storage
    assert isinstance(storage, MemoryStorage)
    wanted = list(storage.updates.keys() if names is None else names)
    return ([(n, u) for n in wanted for u in storage.updates[n]],
            [(n, raw, head) for n in wanted
             for raw, head in storage.stored_heads.get(n, {}).items()])


def write_store(path: Path, stored: Stored) -> None:
    """Lay down a data directory holding exactly these committed updates and heads."""
    rows, heads = stored
    store = SqliteStore(path, synchronous="OFF")  # building the fixture is not measured
    try:
        for start in range(0, len(rows), 1000):
            store.commit(rows[start:start + 1000])
        store.commit([], None, heads)
    finally:
        store.close()


def _totals(*nodes: Node) -> tuple[int, int, int]:
    """(bytes, messages, ROOT bytes) sent so far by these nodes."""
    root = sum(link.session.sent_by_type.get("ROOT", 0)
               for node in nodes for link in node.core.links.values())
    return (sum(n.core.counters.bytes_sent for n in nodes),
            sum(n.core.counters.messages_sent for n in nodes), root)


async def _wait(cond: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.perf_counter()
    with trio.move_on_after(timeout):
        while not cond():
            await trio.sleep(0.001)
        return time.perf_counter() - t0
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def _agree(a: Node, b: Node) -> bool:
    return bool(a.core.links) and bool(b.core.links) and a.ledger.root() == b.ledger.root()


@asynccontextmanager
async def node_pair(dir_a: Path, dir_b: Path, gossip: float) -> AsyncIterator[tuple[Node, Node]]:
    async with open_node(dir_a, listen="127.0.0.1:0", node_id="bench-a",
                         gossip_interval=gossip) as a:
        async with open_node(dir_b, peers=[a.url], node_id="bench-b",
                             gossip_interval=gossip) as b:
            yield a, b


async def node_in_sync(dir_a: Path, dir_b: Path,
                       window: float) -> tuple[float | None, float | None, int]:
    """Bytes and messages per in-sync gossip round between two running nodes."""
    async with node_pair(dir_a, dir_b, GOSSIP) as (a, b):
        await _wait(lambda: _agree(a, b), 60, "the nodes to connect")
        await trio.sleep(2 * GOSSIP)  # let the first rounds (peer exchange) pass
        b0, m0, r0 = _totals(a, b)
        await trio.sleep(window)
        b1, m1, r1 = _totals(a, b)
    discard(a.ledger, b.ledger)
    rounds = (r1 - r0) // ROOT_ROUND  # an in-sync round is a ROOT and its ROOT reply
    if rounds == 0:
        return None, None, 0  # no round fell in the window: nothing measured, nothing passes
    return (b1 - b0) / rounds, (m1 - m0) / rounds, rounds


async def node_reconcile(dir_a: Path, dir_b: Path) -> tuple[float, int, int]:
    """Seconds, bytes and messages from B's start until both roots agree."""
    async with open_node(dir_a, listen="127.0.0.1:0", node_id="bench-a",
                         gossip_interval=GOSSIP) as a:
        b0, m0, _ = _totals(a)
        t0 = time.perf_counter()
        async with open_node(dir_b, peers=[a.url], node_id="bench-b",
                             gossip_interval=GOSSIP) as b:
            t_open = time.perf_counter() - t0
            seconds = await _wait(lambda: _agree(a, b), 120, "the nodes to agree")
            b1, m1, _ = _totals(a, b)
        discard(b.ledger)
    discard(a.ledger)
    say(f"node reconcile: B rebuilt in {t_open:.2f}s, agreed {seconds:.3f}s later")
    return seconds, b1 - b0, m1 - m0


def bench_nodes(scale: Scale) -> Table:
    table = Table(
        f"Sync, end to end: two open_node on loopback (SQLite FULL, gossip every {GOSSIP:g} s)",
        ["case", "contexts", "bytes", "messages", "seconds", "vs Yjs bytes x", "goal", "met"])
    n = scale.node_contexts
    names = context_names(n)
    base = new_ledger()
    fill((base,), names, 1, PAYLOAD, seed=9)
    base_rows = rows_of(base)
    docs = docs_of(base)
    sizes = sorted({1, min(1000, n), n})
    with tempdir("nodes") as d:
        for size in sizes:
            wanted = set(names[:size])
            rows = ([r for r in base_rows[0] if r[0] in wanted],
                    [h for h in base_rows[1] if h[0] in wanted])
            write_store(d / f"a{size}", rows)
            write_store(d / f"b{size}", rows)
            per_round, msgs, rounds = trio.run(node_in_sync, d / f"a{size}", d / f"b{size}",
                                               1.0 if not scale.quick else 0.3)
            subset = {k: v for k, v in docs.items() if k in set(names[:size])}
            y = batched_round(YjsBatched(subset), YjsBatched(dict(docs_of_copy(subset))))
            table.add(f"(a) in-sync round ({rounds} observed)", size, per_round, msgs, None,
                      None if per_round is None else ratio(per_round, y.bytes),
                      f"< {y.bytes} B (batched Yjs)",
                      met(scale, None if per_round is None else per_round < y.bytes))
        # (b) B was offline while A took d × k new entries.
        dcount = max(1, round(n * scale.diverged_fraction))
        docs_a = docs_of(base)
        docs_b = docs_of(base)
        missing = diverge(base, names[::max(1, n // dcount)][:dcount], scale.diverged_entries,
                          docs_a, seed=11)
        write_store(d / "a-div", rows_of(base))
        write_store(d / "b-div", base_rows)
        seconds, wire, msgs_b = trio.run(node_reconcile, d / "a-div", d / "b-div")
        y = yjs_round(YjsEndpoint(docs_a), YjsEndpoint(docs_b))
        table.add(f"(b) reconcile {dcount}×{scale.diverged_entries} missing", n, wire, msgs_b,
                  seconds, ratio(wire, y.bytes), f"≤{1.2 * missing:,.0f} B (1.2× data)",
                  met(scale, wire <= 1.2 * missing))
    discard(base)
    table.notes += [
        "(a): counters over a window after the nodes agree; per round = bytes / (ROOT frames /"
        " 2); both nodes start rounds. Contexts hold 1 entry each.",
        f"(b): from B's open (its store lacks {dcount * scale.diverged_entries} entries,"
        f" {missing:,} B of records) until both roots agree, including connect and HELLO.",
        "vs Yjs bytes: (a) the batched baseline's in-sync round (digest + OK); (b) the plain"
        " one (a state-vector exchange per document, as on a reconnect).",
    ]
    return table


def docs_of_copy(docs: dict[str, Doc[Any]]) -> Iterable[tuple[str, Doc[Any]]]:
    for name, doc in docs.items():
        copy: Doc[Any] = Doc()
        copy.apply_update(doc.get_update())
        yield name, copy


# ---- (d) cold catch-up ---------------------------------------------------------------------


async def node_catchup(dir_a: Path, cold_dirs: Sequence[Path], expected: int,
                       gossip: float) -> list[tuple[float, int, int]]:
    """Per cold node: seconds from its start until it holds every entry; bytes; UPDATE bytes."""
    out = []
    async with open_node(dir_a, listen="127.0.0.1:0", node_id="bench-a",
                         gossip_interval=gossip) as a:
        for i, cold in enumerate(cold_dirs):
            b0, _, _ = _totals(a)
            t0 = time.perf_counter()
            async with open_node(cold, peers=[a.url], node_id=f"bench-cold{i}",
                                 gossip_interval=gossip) as b:
                def caught_up(b: Node = b) -> bool:
                    return b.ledger.entry_count() >= expected

                await _wait(caught_up, 300, "the cold node to catch up")
                seconds = time.perf_counter() - t0
                b1, _, _ = _totals(a, b)
                upd = sum(link.session.sent_by_type.get("UPDATE", 0)
                          for link in a.core.links.values())
            discard(b.ledger)
            out.append((seconds, b1 - b0, upd))
    discard(a.ledger)
    return out


def bench_catchup(scale: Scale) -> Table:
    table = Table(
        "Sync (d): a cold node catching up",
        ["case", "from", "seconds", "entries/s", "MB/s", "wire MB", "wire/data", "vs Yjs time x",
         "goal", "met"])
    cases = [
        (scale.catchup_small, scale.catchup_small_contexts, 100, "≥50k entries/s"),
        (scale.catchup_large, scale.catchup_large_contexts, 100 * 1024, "≥20 MB/s"),
    ]
    for total, contexts, size, goal in cases:
        names = context_names(contexts)
        src = new_ledger()
        fill((src,), names, total // contexts, size, seed=13)
        n = src.entry_count()
        data = sum(len(e.record) for ctx in src.contexts.values() for e in ctx.ordered)
        label = f"{n:,} × {size:,} B"

        def reached(seconds: float, size: int = size, n: int = n, data: int = data) -> bool:
            return n / seconds >= 50_000 if size < 1000 else data / seconds / 1e6 >= 20

        # Baseline first: plain Yjs, the cold side knows the names and starts empty.
        y_ws: list[Traffic] = []
        for _ in range(scale.repeats):
            ya = YjsEndpoint(docs_of(src))
            yb = YjsEndpoint({}, names)
            y_ws += trio.run(ws_yjs_rounds, ya, yb, 1)
        y_s = Sample([t.seconds for t in y_ws]).median
        y_bytes = y_ws[-1].bytes
        # ws: our sessions over a real websocket, memory storage (no fsync): protocol + CPU.
        o_ws: list[Traffic] = []
        mem_tr = Traffic()
        for _ in range(scale.repeats):
            cold = new_ledger("bench-b")
            # The cold side starts the round.
            o_ws += trio.run(ws_compare, cold, src, None, None, 1)[0]
            if cold.root() != src.root():
                raise RuntimeError("(d) ws: the cold ledger did not catch up in one round")
            discard(cold)
        cold = new_ledger("bench-b")
        sc, ss = mem_sessions(cold, src)
        mem_tr = mem_round(sc, ss)
        discard(cold)
        with tempdir("catchup") as d:
            write_store(d / "a", rows_of(src))
            node = trio.run(node_catchup, d / "a", [d / f"cold{i}" for i in range(scale.repeats)],
                            n, GOSSIP)
        o_s = Sample([t.seconds for t in o_ws]).median
        nd_s = Sample([t[0] for t in node]).median
        nd_bytes = Sample([float(t[1]) for t in node]).median
        nd_upd = Sample([float(t[2]) for t in node]).median
        table.add(f"{label}: open_node, SQLite", "node", nd_s, n / nd_s, data / nd_s / 1e6,
                  nd_bytes / 1e6, nd_bytes / data, ratio(nd_s, y_s), goal,
                  met(scale, reached(nd_s)))
        table.add(f"{label}: sessions, memory store", "ws", o_s, n / o_s, data / o_s / 1e6,
                  o_ws[-1].bytes / 1e6, o_ws[-1].bytes / data, ratio(o_s, y_s), goal,
                  met(scale, reached(o_s)))
        table.add(f"{label}: sessions ({mem_tr.round_trips:g} RT)", "mem", mem_tr.seconds,
                  n / mem_tr.seconds, data / mem_tr.seconds / 1e6, mem_tr.bytes / 1e6,
                  mem_tr.bytes / data, None, None, None)
        table.add(f"{label}: Yjs baseline", "ws", y_s, n / y_s, data / y_s / 1e6,
                  y_bytes / 1e6, y_bytes / data, 1.0, None, None)
        table.notes.append(
            f"{label}: {contexts} contexts, {data / 1e6:.1f} MB of records; open_node UPDATE"
            f" bytes sent by the full node: {nd_upd / 1e6:.1f} MB ({nd_upd / data:.2f}× data)")
        discard(src)
    table.notes += [
        "node: from the cold node's open_node until it holds every entry (SQLite FULL on both"
        f" ends, gossip {GOSSIP:g} s); ws/mem: one round started by the cold side, memory"
        " storage; Yjs: both sides send SYNC_STEP1 for every document, SYNC_STEP2 applied"
        " unchecked.",
        "MB/s counts the entry records (id + encoding) delivered; wire/data = bytes sent / that.",
    ]
    return table


# ---- driver --------------------------------------------------------------------------------


def bench_sync(scale: Scale) -> list[Table]:
    tables: list[Table] = []
    repeats = scale.repeats
    in_sync = Table("Sync (a): one anti-entropy round when both sides already agree",
                    IN_SYNC_COLUMNS)
    for n in scale.sync_small_contexts:
        say(f"sync (a): {n} contexts")
        pair = Pair.build(n, scale.big_per_context)
        in_sync_row(in_sync, pair, n, scale)
        discard(pair.a, pair.b)
    say(f"sync: building the big pair ({scale.big_contexts:,} contexts)")
    big = Pair.build(scale.big_contexts, scale.big_per_context)
    pause, objects = gc_pause()
    say("sync (a): big pair")
    in_sync_row(in_sync, big, scale.big_contexts, scale)
    in_sync.notes += [
        "B = bytes of all frames both ways; msgs = frames; RT = round trips (half trips / 2).",
        "mem = two sessions wired in memory (CPU time of both sides); ws = the same over a real"
        " loopback websocket (PeerLink), both ends in this process.",
        f"Yjs = one SYNC_STEP1/SYNC_STEP2 exchange per document per round; {big.entries:,}"
        f" entries of {PAYLOAD} B in the biggest case; medians of {repeats} rounds.",
        f"with both {big.entries:,}-entry ledgers alive, one full gc.collect() took"
        f" {pause:.2f} s over {objects:,} tracked objects (a node pays that too, see report).",
    ]
    tables.append(in_sync)
    say("sync (b): diverged contexts")
    div = reconcile_table(
        f"Sync (b): reconcile {scale.diverged_fraction:.0%} of {scale.big_contexts:,} contexts"
        f" diverged by {scale.diverged_entries} entries ({big.entries:,} entries)")
    bench_diverged(big, scale, div)
    tables.append(div)
    say("sync (c): one missing entry")
    one = reconcile_table(
        f"Sync (c): one entry missing among {big.a.entry_count():,} entries in"
        f" {scale.big_contexts:,} contexts")
    bench_one_missing(big, scale, one)
    if scale.big_contexts * scale.big_per_context < 1_000_000:
        one.notes.append(f"scaled down from 1M entries to {big.entries:,} (--quick).")
    tables.append(one)
    discard(big.a, big.b)
    del big
    say("sync: open_node pairs")
    tables.append(bench_nodes(scale))
    say("sync (d): cold catch-up")
    tables.append(bench_catchup(scale))
    return tables
