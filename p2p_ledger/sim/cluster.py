"""Simulated nodes: a real ``Ledger`` + ``NodeCore`` each, driven exactly as the runtime does.

A ``SimNode`` owns a ``MemoryStorage`` (its disk) and, while up, a ledger and a node core built on
it. The ``Cluster`` is the driver: it reports connection events and frames to the core, calls
``tick`` when ``next_deadline()`` passes, and turns the core's actions into network operations.
There is no second implementation of any sync logic here.

A crash drops the ledger and core (everything in memory) and closes the node's sockets; a
restart rebuilds both with ``Ledger.open`` from the same storage under a fresh incarnation, so
exactly what was committed survives. Each node's storage also keeps, commit by commit, what
``Ledger.open`` would rebuild from it (``CheckedStorage``), and after every event the cluster
checks that this rebuilt ledger holds every entry the live one holds: a crash at any moment would
lose nothing. Each node also has a watcher: an agent that reads every
context with a cursor (``ledger.get(context, after=cursor)``) whenever the node gets entries,
and keeps its cursors across crashes; it records any entry it sees twice.

Two faults go beyond a crash. A *tail loss* (``lose_tail``) crashes a node and drops its last
N commits from its storage, as a disk that lied about fsync or a restored backup does; what
only it held is gone for good, the rest must come back from its peers. A *byzantine member*
(``attack``) is a node that runs the real core but also puts hostile bundles (``byzantine.py``:
forged origins, squatted Yjs positions, poisoned Lamport times, equivocation) on its open
links; the checks cover only the honest nodes (``up_nodes``).

Everything random (incarnation ids, each core's rng) is drawn from the run's one generator.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pycrdt import Array, Doc

from ..core.bundle import decode_bundle
from ..core.context_log import ARRAY_NAME, ContextLog
from ..core.cursor import Cursor
from ..core.entry import Entry
from ..core.identity import Identity
from ..core.ledger import GATHER_WAIT, SUMMARY_LAG, Ledger
from ..core.node import Close, Dial, NodeConfig, NodeCore, PeerEvent, Send
from ..core.storage import HeadChange, MemoryStorage, Summary
from ..core.yjs import decode_state_vector
from .byzantine import LAMPORTS, equivocate, forge, poison_lamport, squat
from .loop import NS, EventLoop, deadline_ns
from .network import LinkProps, NetParams, Network

EPOCH_NS = 1_767_225_600 * NS  # entries' wall-clock stamps: 2026-01-01 + virtual time
WATCH_AFTER_START = 10_000_000  # ns: a restarted node's agent reads its contexts this late


@dataclass
class Watcher:
    """An agent reading one node with cursors; survives the node's crashes."""

    cursors: dict[str, Cursor] = field(default_factory=dict)
    seen: dict[str, set[str]] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    pending: dict[str, None] = field(default_factory=dict)  # contexts to read (ordered set)


class CheckedStorage(MemoryStorage):
    """A node's disk, plus the Yjs Docs ``Ledger.open`` would rebuild from it right now.

    Each committed update is replayed into its context's rebuilt Doc as it is committed (what a
    rebuild does, row by row, in commit order); a compaction rebuilds that context from its new
    state. ``touched`` names the contexts committed since the cluster last compared. Bare Docs,
    not ledgers: comparing array lengths and state vectors costs nothing, and only a mismatch
    needs the full rebuild (``rebuilt_ids``) to name what is missing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rebuilt: dict[str, tuple[Doc[Any], Array[Any]]] = {}
        self.touched: set[str] = set()
        self.commit_log: list[list[str]] = []  # per commit, the context of each row it added
        # per commit, what undoes its head changes: (context, raw id, the head before or None)
        self.heads_undo: list[list[HeadChange]] = []

    def commit(self, updates: Sequence[tuple[str, bytes]],
               summaries: Mapping[str, Summary] | None = None,
               heads: Sequence[HeadChange] = (), lamport: int | None = None) -> None:
        self.heads_undo.append([(context, raw, self.stored_heads.get(context, {}).get(raw))
                                for context, raw, _ in heads])
        super().commit(updates, summaries, heads, lamport)
        self.commit_log.append([context for context, _ in updates])
        for context, blob in updates:
            doc = (self.rebuilt.get(context) or self.fresh_doc(context))[0]
            doc.apply_update(decode_bundle(blob).update)
            self.touched.add(context)

    def replace_context(self, context: str, state: bytes,
                        heads: Sequence[tuple[bytes, bytes]]) -> None:
        super().replace_context(context, state, heads)
        # a compaction folds the context's rows into one: no later tail loss splits it again
        self.commit_log = [[c for c in rows if c != context] for rows in self.commit_log]
        self.heads_undo = [[h for h in undo if h[0] != context] for undo in self.heads_undo]
        self.fresh_doc(context)[0].apply_update(decode_bundle(state).update)
        self.touched.add(context)

    def lose_tail(self, commits: int) -> int:
        """Forget the last ``commits`` commits, as a disk that lied about fsync (or a restored
        backup) does; the rebuilt Docs follow. Returns how many commits were lost."""
        lost = self.commit_log[len(self.commit_log) - commits:] if commits else []
        del self.commit_log[len(self.commit_log) - len(lost):]
        undone = self.heads_undo[len(self.heads_undo) - len(lost):] if lost else []
        del self.heads_undo[len(self.heads_undo) - len(undone):]
        for rows, undo in zip(reversed(lost), reversed(undone), strict=True):
            for context in reversed(rows):
                self.updates[context].pop()
                if not self.updates[context]:
                    del self.updates[context]
            for context, raw, head in reversed(undo):
                held = self.stored_heads.setdefault(context, {})
                if head is None:
                    held.pop(raw, None)
                else:
                    held[raw] = head
        if lost:
            self.summary = None  # stale: the next open recomputes them from the rows left
        for context in {c for rows in lost for c in rows}:
            doc = self.fresh_doc(context)[0]
            for blob in self.updates.get(context, []):
                doc.apply_update(decode_bundle(blob).update)
        return len(lost)

    def fresh_doc(self, context: str) -> tuple[Doc[Any], Array[Any]]:
        doc: Doc[Any] = Doc()
        pair = self.rebuilt[context] = (doc, doc.get(ARRAY_NAME, type=Array))
        return pair

    def rebuilt_ids(self, context: str) -> set[str]:
        log = ContextLog(context, 0)
        log.make_doc()  # (the rows replayed into a Doc, one by one, as yrs takes them)
        for blob in self.updates.get(context, []):
            bundle = decode_bundle(blob)
            log.load_stored(bundle.update, bundle.heads)
        return set(log.by_id)


def _same_doc(doc: Doc[Any], array: Array[Any], live: ContextLog) -> bool:
    if len(array) != live.item_count():
        return False
    mine, theirs = doc.get_state(), live.state_vector()
    # yrs may encode the same state vector in another order: decode only when bytes differ
    return mine == theirs or decode_state_vector(mine) == decode_state_vector(theirs)


class SimNode:
    def __init__(self, name: str, url: str, config: NodeConfig) -> None:
        self.name = name
        self.url = url
        self.config = replace(config, paced_answers=True)  # (as the runtime runs a node)
        self.storage = CheckedStorage()
        self.ledger: Ledger | None = None
        self.core: NodeCore | None = None
        self.incarnation = 0
        self.tick_at: int | None = None
        self.gathering = False  # a commit of staged received updates is scheduled
        self.watcher = Watcher()

    @property
    def up(self) -> bool:
        return self.core is not None


class Cluster:
    """The nodes and the driver glue; implements the network's ``Host`` interface."""

    def __init__(
        self, loop: EventLoop, rng: random.Random, configs: Sequence[NodeConfig],
        links: LinkProps, params: NetParams, memory_budget: int | None = None,
        byzantine_nodes: Sequence[str] = (),
    ) -> None:
        self.loop = loop
        self.memory_budget = memory_budget  # each ledger's (1: only the context in use loaded)
        self.rng = rng
        self.nodes: dict[str, SimNode] = {c.node_id: SimNode(c.node_id, c.url, c) for c in configs}
        self.net = Network(loop, rng, self, links, params)
        for node in self.nodes.values():
            self.net.add_node(node.name, node.url)
        self.acked: dict[str, tuple[str, str]] = {}  # entry id → (origin, context)
        self.dirty = True  # some node's data changed since the last convergence check
        self.converged = False
        self.stuck_timers: list[str] = []  # ticks at a deadline that the tick did not move
        self.not_durable: list[str] = []  # live entries a rebuild from storage would lack
        self.commits_checked = 0
        self._reported: set[tuple[str, str]] = set()
        self.peer_events: list[tuple[int, str, PeerEvent]] = []  # (ns, node, event), logged
        self.track_arrivals = False
        self.arrivals: dict[str, list[int]] = {}
        # Hostile members (their own data and links are not checked) and the name behind each
        # origin (every simulated node's key derives from its name: Identity.from_seed).
        self.byzantine = set(byzantine_nodes)
        self.names = {Identity.from_seed(n).origin: n for n in self.nodes}
        self.attacks_sent = 0  # hostile bundles a byzantine member put on a link
        # Tail losses: acknowledged entries whose origin's disk lost them → whether another node
        # held them then (they must come back) or not (only frames still in flight may bring
        # them back: if none did, they are gone for good, as no protocol can help).
        self.tail_lost: dict[str, bool] = {}
        # entries whose last copy a disk lost (a watcher may have seen them: see lose_tail)
        self.last_copy_lost: set[str] = set()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, name: str) -> None:
        node = self.nodes[name]
        assert node.core is None, f"{name} is already up"
        node.incarnation += 1
        instance = f"{self.rng.getrandbits(64):016x}"
        core_rng = random.Random(self.rng.getrandbits(64))
        loop = self.loop
        ledger = Ledger.open(node.storage, name, instance, now_ns=lambda: EPOCH_NS + loop.now,
                             memory_budget=self.memory_budget)
        ledger.listeners.append(lambda context, entries: self._on_entries(node, context, entries))
        ledger.defer_commits = True  # received updates are group-committed, as in the runtime
        ledger.summary_lag_ns = int(SUMMARY_LAG * NS)  # summaries lag their rows, as there too
        node.ledger = ledger
        node.core = NodeCore(ledger, node.config, core_rng)
        node.tick_at = None
        node.gathering = False
        self.loop.record("start", f"{name} {node.incarnation} {instance} {ledger.root().hex()}")
        # (its agent reads a moment later: what a crash left settling settles in ticks first)
        self.loop.at(self.loop.now + WATCH_AFTER_START, self._watch_all, (name, node.incarnation))
        self.dirty = True
        self.flush(name)

    def _watch_all(self, arg: tuple[str, int]) -> None:
        name, incarnation = arg
        node = self.nodes[name]
        if node.ledger is None or node.incarnation != incarnation:
            return
        node.watcher.pending.update(dict.fromkeys(sorted(node.ledger.contexts)))
        self.flush(name)

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        self.loop.record("crash", name)
        node.core = None
        node.ledger = None
        node.tick_at = None
        node.watcher.pending.clear()
        self.net.node_down(name)
        self.dirty = True

    def lose_tail(self, name: str, commits: int) -> int:
        """The node's disk loses its last ``commits`` commits (crashing the node first if it is
        up); it stays down until restarted. An acknowledged entry of its own that the disk lost
        goes to ``tail_lost`` as True when another node held it then (it must come back), and
        any acknowledged entry whose last copy the disk lost goes there as False (gone for
        good, but for frames still in flight); every entry whose last copy it lost, hostile
        ones included, goes to ``last_copy_lost``. Returns the number of commits lost."""
        node = self.nodes[name]
        if node.up:
            self.crash(name)
        storage = node.storage
        contexts = {c for rows in storage.commit_log[len(storage.commit_log) - commits:]
                    for c in rows} if commits else set()
        before = {c: storage.rebuilt_ids(c) for c in sorted(contexts)}
        lost = storage.lose_tail(commits)
        self.loop.record("tail_loss", f"{name} {lost}")
        for context, ids in before.items():
            gone = ids - storage.rebuilt_ids(context)
            if gone:
                held = set().union(*(self._held(other, context) for other in
                                     self.nodes.values() if other is not node))
                for eid in sorted(gone):
                    if eid not in held:  # this disk had the last copy (maybe the origin's
                        # own disk lost it before); a hostile entry too (never acknowledged)
                        self.last_copy_lost.add(eid)
                        if eid in self.acked:
                            self.tail_lost[eid] = False
                    elif eid in self.acked and self.acked[eid][0] == name:
                        self.tail_lost[eid] = True
        self.dirty = True
        return lost

    def _held(self, node: SimNode, context: str) -> set[str]:
        if node.ledger is not None:
            ctx = node.ledger.contexts.get(context)
            return set(ctx.by_id) if ctx is not None else set()
        return node.storage.rebuilt_ids(context)

    def attack(self, name: str, kind: str, context: str, victim: str | None,
               to: Sequence[str], lamport: str = "overflow") -> int:
        """Byzantine member ``name`` sends hostile bundles (``byzantine.ATTACKS``) on its open
        links to the nodes ``to`` (those it is linked with, and that are up). Returns how many
        bundles went out (none when no such link is open, or the victim is down)."""
        node = self.nodes[name]
        core, ledger = node.core, node.ledger
        links = {link.label: (conn, link) for conn, link in core.links.items()
                 if link.session.is_open} if core is not None else {}
        targets = [t for t in to if t in links and self.nodes[t].ledger is not None]
        victim_ledger = self.nodes[victim].ledger if victim is not None else None
        if ledger is None or not targets or (kind in ("forge", "squat")
                                             and victim_ledger is None):
            self.loop.record("byzantine", f"{name} {kind}: no target")
            return 0
        rng, now_ns = self.rng, EPOCH_NS + self.loop.now
        ledgers = [self.nodes[t].ledger for t in targets]
        sends: list[tuple[str, bytes]] = []
        if kind == "equivocate":
            blobs = equivocate(ledger, [t for t in ledgers if t], context, rng, now_ns)
            sends = list(zip(targets * 2 if len(targets) == 1 else targets, blobs, strict=True))
        for target, target_ledger in zip(targets, ledgers, strict=True):
            assert target_ledger is not None
            if kind == "forge":
                assert victim_ledger is not None
                sends.append((target, forge(ledger.identity, victim_ledger, target_ledger,
                                            context, rng, now_ns)))
            elif kind == "squat":
                assert victim_ledger is not None
                sends.append((target, squat(ledger.identity, victim_ledger, target_ledger,
                                            context, rng, now_ns)))
            elif kind == "lamport":
                sends.append((target, poison_lamport(ledger.identity, target_ledger, context,
                                                    LAMPORTS[lamport], rng, now_ns)))
        for target, blob in sends:
            conn, link = links[target]
            link.session.push(context, blob)
            for frame in link.session.take_output():
                self.net.send(name, conn, frame)
            self.loop.record("byzantine", f"{name} {kind} {context} -> {target} "
                                          f"{len(blob)} bytes")
        self.attacks_sent += len(sends)
        return len(sends)

    def append(self, name: str, context: str, items: Sequence[tuple[str, bytes]]) -> list[Entry]:
        """A local write; returns the acknowledged (committed) entries."""
        node = self.nodes[name]
        assert node.core is not None and node.ledger is not None
        ledger = node.ledger
        requests = [ledger.prepare(context, key, payload) for key, payload in items]
        appended = node.core.append(requests, self.loop.now / NS)
        node.core.commit_ended(self.loop.now / NS)  # (as the runtime; no time passes here)
        for entry in appended.entries:
            self.acked[entry.id] = (name, context)
        self.loop.record("append", f"{name} {context} {len(appended.entries)} "
                                   f"{appended.entries[-1].id[:16] if appended.entries else ''}")
        self.flush(name)
        return appended.entries

    # ---- Host interface (called by the network) ----------------------------------------------

    def is_up(self, node: str) -> bool:
        return self.nodes[node].core is not None

    def accept(self, node: str) -> int:
        core = self.nodes[node].core
        assert core is not None
        return core.connection_accepted(self.loop.now / NS)

    def made(self, node: str, conn: int) -> None:
        core = self.nodes[node].core
        assert core is not None
        core.connection_made(conn, self.loop.now / NS)
        self.flush(node)

    def dial_failed(self, node: str, conn: int, reason: str) -> None:
        core = self.nodes[node].core
        assert core is not None
        core.dial_failed(conn, self.loop.now / NS, reason)
        self.flush(node)

    def frame(self, node: str, conn: int, frame: bytes) -> None:
        sim = self.nodes[node]
        assert sim.core is not None and sim.ledger is not None
        sim.core.frame_received(conn, frame, self.loop.now / NS)
        if not sim.ledger.has_staged():
            self.flush(node)
        elif not sim.gathering:
            # As the runtime's committer: the frame's answer and forwards wait for the group
            # commit; a crash meanwhile loses the staged updates and what they would have sent.
            sim.gathering = True
            self._gather((node, sim.incarnation, 0, -1))

    def _gather(self, arg: tuple[str, int, int, int]) -> None:
        """Commit staged received updates once they stop coming (``Ledger.gathering``)."""
        name, incarnation, waits, seen = arg
        node = self.nodes[name]
        if node.ledger is None or node.incarnation != incarnation:
            return  # crashed meanwhile: the staged rows are gone with its memory
        if node.ledger.gathering(waits, seen):
            self.loop.at(self.loop.now + int(GATHER_WAIT * NS), self._gather,
                         (name, incarnation, waits + 1, node.ledger.staged_rows()))
            return
        node.gathering = False
        self.flush(name)

    def lost(self, node: str, conn: int, reason: str) -> None:
        core = self.nodes[node].core
        assert core is not None
        core.connection_lost(conn, self.loop.now / NS, reason)
        self.flush(node)

    def flush(self, name: str) -> None:
        """After any call into a core: carry out its actions, run the watcher, re-arm its timer."""
        node = self.nodes[name]
        core = node.core
        if core is None:
            return
        net = self.net
        actions = core.take_actions()
        assert node.ledger is not None
        if node.ledger.has_staged():  # take_actions commits first: what is sent is durable
            self.not_durable.append(f"t={self.loop.now / NS:.6f}s {name}: actions released "
                                    f"with {node.ledger.staged_rows()} rows uncommitted")
        while True:
            for action in actions:
                if isinstance(action, Send):
                    net.send(name, action.conn, action.frame)
                elif isinstance(action, Close):
                    net.close(name, action.conn, action.reason)
                elif isinstance(action, Dial):
                    net.dial(name, action.conn, action.url)
            # Answers are paced as the runtime paces them (NodeConfig.paced_answers); the
            # simulated network queues nothing, so every link always has room.
            waiting = core.answers_waiting()
            if not waiting:
                break
            for conn in waiting:
                core.send_room(conn, self.loop.now / NS)
            actions = core.take_actions()
        core.take_log()  # info lines for a human; the trace has the events
        for event in core.take_events():  # what a real node would log, in the trace
            self.peer_events.append((self.loop.now, name, event))
            self.loop.record("peer", f"{name} {event.kind} {event.node_id or event.url}")
        if node.storage.touched:
            self._check_durable(node)
        if node.watcher.pending:
            self._watch(node)
        deadline = core.next_deadline()
        if deadline != float("inf"):
            when = deadline_ns(deadline)
            if node.tick_at is None or when < node.tick_at:
                node.tick_at = when
                self.loop.at(when, self._tick, (name, node.incarnation, when))

    def _tick(self, arg: tuple[str, int, int]) -> None:
        name, incarnation, when = arg
        node = self.nodes[name]
        if node.core is None or node.incarnation != incarnation or node.tick_at != when:
            return  # stale: superseded by an earlier tick, or the node restarted
        node.tick_at = None
        self.loop.record("tick", name)
        if node.ledger is not None and node.ledger.settling():
            self.dirty = True  # (a context may settle: its root then changes)
        node.core.tick(self.loop.now / NS)
        self.flush(name)
        if node.tick_at is not None and node.tick_at <= when:
            # A deadline that its own tick did not move would spin a driver at one instant (a
            # core bug): note it and retry a millisecond later.
            self.stuck_timers.append(f"{name} at t={when / NS:.9f}s")
            node.tick_at = when + 1_000_000
            self.loop.at(node.tick_at, self._tick, (name, node.incarnation, node.tick_at))

    def _check_durable(self, node: SimNode) -> None:
        """The ledger rebuilt from storage holds what the live one holds, in every context
        committed since the last check. Equal Docs (array length and state vector) are enough;
        otherwise the rebuilt ids are compared with the live ones."""
        storage, ledger = node.storage, node.ledger
        assert ledger is not None
        for context in sorted(storage.touched):
            self.commits_checked += 1
            live = ledger.contexts.get(context)
            doc, array = storage.rebuilt.get(context) or storage.fresh_doc(context)
            if live is None or _same_doc(doc, array, live):
                continue
            for eid in sorted(live.by_id.keys() - storage.rebuilt_ids(context)):
                if (node.name, eid) in self._reported:
                    continue
                self._reported.add((node.name, eid))
                entry = live.by_id[eid]
                self.not_durable.append(
                    f"t={self.loop.now / NS:.6f}s {node.name}: {context}/{eid[:16]} "
                    f"({entry.origin}:{entry.seq}) would be gone after a crash")
        storage.touched.clear()

    # ---- watchers and convergence ------------------------------------------------------------

    def _on_entries(self, node: SimNode, context: str, entries: Sequence[Entry]) -> None:
        node.watcher.pending[context] = None
        node.storage.touched.add(context)  # new entries: check them even if nothing was stored
        self.dirty = True
        if self.track_arrivals:
            now = self.loop.now
            for entry in entries:
                self.arrivals.setdefault(entry.id, []).append(now)

    def _watch(self, node: SimNode) -> None:
        watcher, ledger = node.watcher, node.ledger
        assert ledger is not None
        pending, watcher.pending = watcher.pending, {}
        for context in pending:
            entries, cursor = ledger.get(context, after=watcher.cursors.get(context))
            watcher.cursors[context] = cursor
            seen = watcher.seen.setdefault(context, set())
            for entry in entries:
                if entry.id in seen:
                    watcher.duplicates.append(f"{node.name} saw {context}/{entry.id[:16]} again")
                seen.add(entry.id)

    def up_nodes(self) -> list[SimNode]:
        """The live honest nodes (what every check is about)."""
        return [n for n in self.nodes.values() if n.core is not None
                and n.name not in self.byzantine]

    def check_converged(self) -> bool:
        """All live honest nodes hold the same data (equal roots) and none has received rows
        waiting for their commit (a gather scheduled: the commit will change its root) or
        contexts settling after a crash (its root shows them as last stored); cached until
        something changes.

        why: fuzz seed 2480014448 (6 nodes) ended its run as converged while n5 held a
        hostile member's 11 entries staged, and the checks, reading n5, committed them: roots
        then differed, and no node had sent them on."""
        if any(n.gathering or (n.ledger is not None and n.ledger.settling())
               for n in self.up_nodes()):
            return False  # (a settling node's root shows what it last stored)
        if self.dirty:
            self.dirty = False
            roots = {n.ledger.root() for n in self.up_nodes() if n.ledger is not None}
            self.converged = len(roots) <= 1
        return self.converged

    def missing(self) -> dict[str, int | None]:
        """Acknowledged entries each node lacks (None while it is down)."""
        total = len(self.acked)
        return {n.name: max(0, total - n.ledger.entry_count()) if n.ledger is not None else None
                for n in self.nodes.values()}
