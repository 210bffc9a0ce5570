"""``p2p-ledger demo``: a live local cluster that a newcomer can watch converge, crash and recover.

Real ``p2p-ledger node`` processes (``sys.executable -m p2p_ledger node``, so no PATH needed) on
127.0.0.1 with temporary data directories. Every node runs with ``--no-discovery`` and dials
every other node through a relay of its own (``harness/relay.py``, one per directed link), so the
demo can cut links. The run is a list of phases (``Demo.PHASES``), each bounded by a timeout
that fails with a message saying what did not happen:

1. start      the relays, then N nodes, each seeded with its relays to every other node;
2. write      every node appends ``entries`` entries at once; a live status table runs until
              every root agrees;
3. crash      SIGKILL the middle node; keep writing to the others, which converge without it;
4. recover    restart it on the same data directory (a new port: its relays follow it) and
              watch it catch up;
5. partition  cut n1 off from the rest (every relay between the sides), write on both sides,
              show the two roots, heal and watch them converge;
6. verify     every acknowledged entry id is on every node.

Whatever happens (error, Ctrl-C), every process is stopped and the temporary directory removed
(``run_demo``'s ``finally``); the relays live in the run's nursery and stop with it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import trio

from ..core.errors import LedgerError
from ..harness.process import NodeFailedToStart, NodeProcess, stop_all
from ..harness.relay import Relay
from ..trio.client import Client

READY_TIMEOUT = 15.0  # a node process to print its ready line (Python start-up included)
CONVERGE_TIMEOUT = 20.0  # all roots to agree after a write or a restart
REQUEST_TIMEOUT = 5.0  # one API call
TICK = 0.5  # status table refresh
GOSSIP_INTERVAL = 0.25  # faster than the default 1 s, so the demo is brisk
WRITE_CHUNK = 100
ARGS = ("--no-discovery", "--gossip-interval", str(GOSSIP_INTERVAL))
CONTEXTS = ("demo/shared", "demo/{name}")  # one context everyone writes, one per node

Print = Callable[[str], None]


class DemoError(Exception):
    """A phase did not happen within its timeout; the message says which and why."""


@dataclass
class Row:
    name: str
    url: str
    entries: int | None = None
    root: str = ""
    connected: int = 0
    known: int = 0


@dataclass
class Demo:
    nodes_wanted: int
    entries: int
    tmp: Path
    out: Print
    nodes: list[NodeProcess] = field(default_factory=list)
    acked: dict[str, set[str]] = field(default_factory=dict)  # context -> acknowledged ids
    timings: dict[str, float] = field(default_factory=dict)
    rounds: int = 0
    victim: NodeProcess | None = None
    missed: int = 0  # entries written while the victim was down
    relays: dict[tuple[str, str], Relay] = field(default_factory=dict)  # (from, to) -> relay
    split: tuple[str, str] = ("", "")  # the two roots seen during the partition

    PHASES: ClassVar[Sequence[str]] = ("start", "write", "crash", "recover", "partition",
                                       "verify")

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.acked.values())

    async def run(self) -> None:
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery  # the relays run here until the demo ends
            for number, phase in enumerate(self.PHASES, 1):
                method: Callable[[], Awaitable[None]] = getattr(self, f"phase_{phase}")
                self.out(f"\n== {number}. {(method.__doc__ or phase).strip()}")
                await method()
            nursery.cancel_scope.cancel()
        self.timings["total"] = time.monotonic() - started
        self.summary()

    # ---- phases ------------------------------------------------------------------------------

    async def phase_start(self) -> None:
        """start the nodes (each dials every other one through a relay we can cut)"""
        names = [f"n{i}" for i in range(1, self.nodes_wanted + 1)]
        for a in names:
            for b in names:
                if a != b:
                    relay = self.relays[(a, b)] = Relay(f"{a}>{b}")
                    await self.nursery.start(relay.run)
        self.out(f"  {len(self.relays)} relays on 127.0.0.1, one per direction of every link")
        for name in names:
            seeds = [self.relays[(name, b)].url for b in names if b != name]
            node = NodeProcess(name, self.tmp / name, self.tmp / "logs", seeds, ARGS)
            self.nodes.append(node)
            await self.start_node(node, "127.0.0.1:0")
            self.out(f"  {name} ready at {node.url}  pid {node.proc.pid if node.proc else '?'}, "
                     f"dials {len(seeds)} peers through relays (--no-discovery); "
                     f"dashboard {node.url.replace('ws://', 'http://')}/")

    async def phase_write(self) -> None:
        """write from every node at once, watch the roots converge"""
        await self.write(self.nodes)
        self.timings["converge"] = await self.converge(self.nodes, "converged")

    async def phase_crash(self) -> None:
        """SIGKILL a node, keep writing to the others"""
        victim = self.victim = self.nodes[len(self.nodes) // 2]
        victim.kill()
        self.retarget(victim)
        self.out(f"  {victim.name} killed with SIGKILL (no clean shutdown); the others stay linked "
                 "to each other")
        others = [n for n in self.nodes if n is not victim]
        self.missed = self.total
        await self.write(others)
        self.missed = self.total - self.missed
        self.timings["converge_without"] = await self.converge(
            others, f"converged without {victim.name}")

    async def phase_recover(self) -> None:
        """restart the killed node on its data directory, watch it catch up"""
        victim = self.victim
        assert victim is not None
        # A new port is fine: the others reach it through relays, which now point there.
        await self.start_node(victim, "127.0.0.1:0")
        self.retarget(victim)
        self.out(f"  {victim.name} restarted at {victim.url} (its relays follow it); it missed "
                 f"{self.missed} entries")
        self.timings["catch_up"] = await self.converge(self.nodes, f"{victim.name} caught up")

    async def phase_partition(self) -> None:
        """partition n1 | the rest, write on both sides, heal"""
        alone, rest = self.nodes[0], self.nodes[1:]
        cut = [r for (a, b), r in self.relays.items() if (a == alone.name) != (b == alone.name)]
        for relay in cut:
            relay.cut()
        names = ", ".join(n.name for n in rest)
        self.out(f"  cut {len(cut)} relays: {alone.name} | {names} (every connection between "
                 "the sides closed, new ones refused)")
        before = self.total
        await self.write([alone])
        alone_wrote = self.total - before
        await self.write(rest)
        rest_wrote = self.total - before - alone_wrote
        await self.converge(rest, f"{names} agree among themselves",
                            expect=self.total - alone_wrote)
        rows = await self.poll()
        lone, other = rows[alone.name], rows[rest[0].name]
        if lone.root == other.root or lone.entries != self.total - rest_wrote:
            raise DemoError(f"{alone.name} was not cut off: root {lone.root[:12]} with "
                            f"{lone.entries} entries")
        self.split = (lone.root, other.root)
        self.out(f"  roots differ: {alone.name} {lone.root[:12]} ({lone.entries} entries) vs "
                 f"{names} {other.root[:12]} ({other.entries} entries)")
        for relay in cut:
            relay.heal()
        self.out(f"  healed: {alone.name} and {names} redial each other")
        self.timings["heal"] = await self.converge(self.nodes, "converged after the heal")

    async def phase_verify(self) -> None:
        """check every acknowledged entry is on every node"""
        for node in self.nodes:
            held: dict[str, set[str]] = {}
            async with Client.connect(node.url, timeout=REQUEST_TIMEOUT) as client:
                for context in self.acked:
                    held[context] = await read_ids(client, context)
            missing = sum(len(ids - held[c]) for c, ids in self.acked.items())
            count = sum(len(ids) for ids in held.values())
            if missing:
                raise DemoError(f"{node.name} lacks {missing} of {self.total} acknowledged entries")
            self.out(f"  {node.name}: all {self.total} acknowledged entries present "
                     f"({count} held, {len(held)} contexts)")

    # ---- helpers -----------------------------------------------------------------------------

    def retarget(self, node: NodeProcess) -> None:
        """Point the relays into ``node`` at its current port (none while it is down)."""
        port = int(node.url.rsplit(":", 1)[1]) if node.alive else None
        for (_, b), relay in self.relays.items():
            if b == node.name:
                relay.set_target(None if port is None else ("127.0.0.1", port))

    async def start_node(self, node: NodeProcess, listen: str) -> None:
        try:
            await node.start(listen, timeout=READY_TIMEOUT)
        except NodeFailedToStart as exc:
            raise DemoError(str(exc)) from None
        self.retarget(node)

    async def write(self, writers: Sequence[NodeProcess]) -> None:
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for node in writers:
                nursery.start_soon(self.write_from, node)
        elapsed = time.monotonic() - started
        each = " each" if len(writers) > 1 else ""
        self.out(f"  {', '.join(n.name for n in writers)}{each} appended {self.entries} entries "
                 f"(acknowledged = durable on that node) in {elapsed:.2f}s; "
                 f"{self.total} acknowledged so far")

    async def write_from(self, node: NodeProcess) -> None:
        self.rounds += 1
        round_ = self.rounds
        contexts = [c.format(name=node.name) for c in CONTEXTS]
        async with Client.connect(node.url, timeout=REQUEST_TIMEOUT) as client:
            for start in range(0, self.entries, WRITE_CHUNK):
                items = []
                for i in range(start, min(start + WRITE_CHUNK, self.entries)):
                    context = contexts[i % len(contexts)]
                    text = f"{node.name} note {i} (batch {round_}): the demo is going fine"
                    items.append((context, text, node.name, {"writer": node.name}))
                with trio.fail_after(REQUEST_TIMEOUT):
                    entries = await client.append_many(items)
                for entry in entries:
                    self.acked.setdefault(entry.context, set()).add(entry.id)

    async def converge(self, members: Sequence[NodeProcess], label: str,
                       expect: int | None = None) -> float:
        """Show the table every TICK until the members hold the same root and every acked entry
        (or ``expect`` entries: what their side of a partition holds)."""
        want = self.total if expect is None else expect
        started = time.monotonic()
        table = Table(self.out)
        deadline = started + CONVERGE_TIMEOUT
        while True:
            rows = await self.poll()
            now = time.monotonic()
            live = [rows[n.name] for n in members]
            roots = {r.root for r in live}
            done = len(roots) == 1 and "" not in roots and all(
                r.entries is not None and r.entries >= want for r in live)
            table.show(now - started, [rows[n.name] for n in self.nodes], done)
            if done:
                elapsed = now - started
                names = ", ".join(n.name for n in members)
                self.out(f"  {label} in {elapsed:.2f}s: {names} agree on root "
                         f"{live[0].root[:12]} ({want} entries each)")
                return elapsed
            if now > deadline:
                raise DemoError(f"not {label} after {CONVERGE_TIMEOUT:g}s: expected the same root "
                                f"and {want} entries on {len(members)} nodes")
            await trio.sleep(TICK)

    async def poll(self) -> dict[str, Row]:
        rows = {n.name: Row(n.name, n.url if n.alive else "(down)") for n in self.nodes}

        async def one(node: NodeProcess) -> None:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    async with Client.connect(node.url, timeout=REQUEST_TIMEOUT) as client:
                        status = await client.status()
            except (LedgerError, OSError, trio.TooSlowError):
                return  # shown as down/unknown; the deadline decides if it matters
            row = rows[node.name]
            row.entries = int(status["entries"])
            row.root = str(status["root"])
            peers = status.get("peers") or []
            row.known = len(peers)
            row.connected = sum(1 for p in peers if p.get("state") == "connected")

        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                if node.alive:
                    nursery.start_soon(one, node)
        return rows

    def summary(self) -> None:
        t = self.timings
        victim = self.victim.name if self.victim else "?"
        contexts = len(self.acked)
        self.out("\n== summary")
        self.out(f"  {len(self.nodes)} nodes, {self.total} acknowledged entries in {contexts} "
                 "contexts, every one on every node")
        self.out(f"  converged {t['converge']:.2f}s after concurrent writes from all nodes")
        self.out(f"  with {victim} SIGKILLed, the others converged in {t['converge_without']:.2f}s")
        self.out(f"  {victim} restarted and caught up on {self.missed} missed entries "
                 f"in {t['catch_up']:.2f}s")
        self.out(f"  partitioned, both sides wrote (roots {self.split[0][:12]} and "
                 f"{self.split[1][:12]}), healed and converged in {t['heal']:.2f}s")
        self.out(f"  demo finished in {t['total']:.1f}s")


class Table:
    """The live status table: redrawn in place on a terminal, printed on change otherwise."""

    HEADER = f"  {'node':<5} {'url':<24} {'entries':>7}  {'root':<12} {'peers':>5}  agrees"

    def __init__(self, out: Print) -> None:
        self.out = out
        self.tty = out is print and sys.stdout.isatty()
        self.drawn = 0
        self.last: list[str] = []

    def show(self, elapsed: float, rows: Sequence[Row], done: bool) -> None:
        roots = Counter(r.root for r in rows if r.root)
        majority = roots.most_common(1)[0][0] if roots else ""
        lines = []
        for r in rows:
            if r.entries is None:
                agrees = "down" if r.url == "(down)" else "?"
                lines.append(f"  {r.name:<5} {r.url:<24} {'-':>7}  {'-':<12} {'-':>5}  {agrees}")
                continue
            agrees = "yes" if r.root == majority else "no"
            peers = f"{r.connected}/{r.known}"
            lines.append(f"  {r.name:<5} {r.url:<24} {r.entries:>7}  {r.root[:12]:<12} "
                         f"{peers:>5}  {agrees}")
        if not self.tty and lines == self.last and not done:
            return  # a log or a pipe: print only what changed
        self.last = lines
        block = [f"  t={elapsed:4.1f}s", self.HEADER, *lines]
        if self.tty and self.drawn:
            sys.stdout.write(f"\x1b[{self.drawn}F\x1b[J")  # back up over the previous table
        for line in block:
            self.out(line)
        self.drawn = len(block)


async def read_ids(client: Client, context: str) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        with trio.fail_after(REQUEST_TIMEOUT):
            entries, cursor = await client.get(context, after=cursor, limit=1000)
        if not entries:
            return ids
        ids.update(e.id for e in entries)


def run_demo(nodes: int = 3, entries: int = 100, out: Print = print) -> int:
    """Run the demo; 0 when every phase passed, 1 (with the reason) when one did not."""
    tmp = Path(tempfile.mkdtemp(prefix="p2p-ledger-demo-"))
    demo = Demo(nodes, entries, tmp, out)
    out(f"p2p-ledger demo: {nodes} node processes on 127.0.0.1, data under {tmp}")
    try:
        trio.run(demo.run)
        return 0
    except (DemoError, LedgerError, OSError, trio.TooSlowError, BaseExceptionGroup) as exc:
        failure = _failure(exc)
        if failure is None:
            raise  # a bug (or Ctrl-C): the traceback / the CLI's "interrupted" says it best
        out(f"\ndemo FAILED: {failure}")
        for node in demo.nodes:
            out(f"  last log lines of {node.name}:\n{node.log_tail(5) or '    (empty log)'}")
        return 1
    finally:
        stop_all(demo.nodes)
        shutil.rmtree(tmp, ignore_errors=True)
        out(f"\nstopped {len(demo.nodes)} nodes, removed {tmp}")


def _failure(exc: BaseException) -> str | None:
    """The reason to show for an expected failure (possibly inside a nursery's group)."""
    if isinstance(exc, BaseExceptionGroup):
        reasons = [_failure(e) for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        return None if not reasons or None in reasons else "; ".join(filter(None, reasons))
    if isinstance(exc, DemoError):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return f"a node did not answer within {REQUEST_TIMEOUT:g}s"
    if isinstance(exc, (LedgerError, OSError)):
        return f"{type(exc).__name__}: {exc}"
    return None
