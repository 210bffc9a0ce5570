"""Helpers for the core tests: storages, ledgers, syncing two ledgers, a network of NodeCores.

Everything that tests, benchmarks and users share (SessionPair, forged Yjs updates, LocalCluster)
lives in ``p2p_ledger.testing``. Everything here is deterministic: no clock, no sockets, no sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from pycrdt import Array, Doc

from p2p_ledger.core.bundle import decode_bundle, encode_bundle
from p2p_ledger.core.context_log import ARRAY_NAME
from p2p_ledger.core.entry import NO_PREV, Entry, make_entry
from p2p_ledger.core.errors import IntegrityError
from p2p_ledger.core.identity import Head, Identity
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.node import Close, Dial, NodeConfig, NodeCore, Send
from p2p_ledger.core.storage import MemoryStorage
from p2p_ledger.sim import load_scenario
from p2p_ledger.sim.runner import ScenarioRun
from p2p_ledger.testing import counter_ns, forged_update
from p2p_ledger.trio.store import SqliteStore


class Backend:
    """Creates storages of one kind and reopens them (closing SQLite stores first)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.open_stores: list[SqliteStore] = []
        self._n = 0

    def new(self) -> MemoryStorage | SqliteStore:
        self._n += 1
        if self.kind == "memory":
            return MemoryStorage()
        store = SqliteStore(self.tmp_path / f"node{self._n}", synchronous="OFF")
        self.open_stores.append(store)
        return store

    def reopen(self, storage):
        if self.kind == "memory":
            return storage
        storage.close()
        self.open_stores.remove(storage)
        store = SqliteStore(storage.path, synchronous="OFF")
        self.open_stores.append(store)
        return store

    def close(self) -> None:
        for store in self.open_stores:
            store.close()
        self.open_stores.clear()


def open_ledger(storage, node_id: str, instance: str | None = None, verify: bool = False,
                **kw) -> Ledger:
    """Ledger.open; with ``verify``, then ``Ledger.verify`` (IntegrityError on a problem)."""
    kw.setdefault("now_ns", counter_ns())
    ledger = Ledger.open(storage, node_id, instance or f"{node_id}-1", **kw)
    if verify:
        problems = ledger.verify()
        if problems:
            raise IntegrityError("; ".join(problems))
    return ledger


def new_ledger(node_id: str, instance: str | None = None) -> Ledger:
    """A ledger on MemoryStorage with a deterministic clock."""
    return open_ledger(MemoryStorage(), node_id, instance or f"{node_id}-inst")


def append(ledger: Ledger, context: str, *payloads: str | bytes, key: str = "k"):
    return ledger.append([ledger.prepare(context, key, p) for p in payloads])


def append_after_last(ledger: Ledger, context: str, payload: str | bytes) -> bytes:
    """Append ``payload`` and return its pushed bundle with the Yjs item written as a Doc
    writes it (origin: the array's last item, whoever's) rather than as the ledger does (origin:
    its own previous item). A peer lacking that last item holds the item pending: the way
    other Yjs writers (or a member crafting it) make structs wait for another client's item."""
    ctx = ledger.contexts[context]
    before = ctx.doc.get_update()  # (the Doc without the new entry)
    appended = append(ledger, context, payload)
    (entry,) = appended.entries
    doc: Doc = Doc(client_id=ctx.client_id)
    array = doc.get(ARRAY_NAME, type=Array)
    doc.apply_update(before)
    state = doc.get_state()
    array.append(entry.record)
    bundle = decode_bundle(appended.updates[0][1])
    return encode_bundle(bundle.heads, doc.get_update(state))


def sync(src: Ledger, dst: Ledger, context: str) -> list[Entry]:
    """Send dst what it lacks of src's context, computed from dst's state vector."""
    if context not in src.contexts:
        return []
    have = dst.contexts.get(context)
    bundle = src.bundle_diff(context, have.state_vector() if have is not None else None)
    return dst.apply_remote(context, bundle) if bundle is not None else []


def sync_all(ledgers: Iterable[Ledger]) -> None:
    ledgers = list(ledgers)
    while True:
        moved = 0
        for src in ledgers:
            for dst in ledgers:
                if src is not dst:
                    for name in list(src.contexts):
                        moved += len(sync(src, dst, name))
        if not moved:
            return


def ids(entries: Iterable[Entry]) -> list[str]:
    return [e.id for e in entries]


def ordered_ids(ledger: Ledger, context: str) -> list[str]:
    """Every entry id of a context in causal order (the read model, gaps included)."""
    ctx = ledger.contexts.get(context)
    return [e.id for e in ctx.ordered] if ctx else []


def id_sets(ledger: Ledger) -> dict[str, set[str]]:
    return {name: set(ordered_ids(ledger, name)) for name in ledger.contexts
            if len(ledger.contexts[name])}


def snapshot_state(ledger: Ledger) -> tuple[bytes, dict[str, list[bytes]], int]:
    """What must not change when a hostile frame is refused: root, stored updates, entry count."""
    assert isinstance(ledger.storage, MemoryStorage)
    stored = {k: list(v) for k, v in ledger.storage.updates.items()}
    return ledger.root(), stored, ledger.entry_count()


def read_ids(ledger: Ledger, context: str, **kw) -> list[str]:
    return ids(ledger.get(context, **kw)[0])


def page_all(ledger: Ledger, context: str, limit: int, after=None, key=None) -> list[list[Entry]]:
    pages = []
    while True:
        page, after = ledger.get(context, key=key, after=after, limit=limit)
        if not page:
            return pages
        assert len(page) <= limit
        pages.append(page)


def state_of(ledger: Ledger) -> tuple:
    """Everything observable about a ledger, to check that a refused operation changed nothing."""
    reads = {name: read_ids(ledger, name) for name in sorted(ledger.contexts)}
    stored = {k: list(v) for k, v in ledger.storage.load().items()}
    return ledger.root(), reads, stored, ledger.clock.time, ledger.entry_count()


# ---- a network of NodeCores on a fake clock --------------------------------------------------

class CoreNet:
    """NodeCores wired by ``Send`` → ``frame_received`` on the other end, with a float clock.

    ``up`` says which URLs accept dials; ``mute`` holds (src_url, dst_url) pairs whose frames
    are silently lost (a hung peer); dials to a URL in ``black`` are never answered (a cut
    dropping SYNs; ``abandoned`` lists the dials the cores gave up on); ``run_until`` jumps the
    clock from deadline to deadline.
    """

    def __init__(self, seed: int = 0) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.cores: dict[str, NodeCore] = {}
        self.up: set[str] = set()
        self.mute: set[tuple[str, str]] = set()
        self.black: set[str] = set()
        self.pending: set[tuple[str, int]] = set()  # unanswered dials (into ``black``)
        self.abandoned: list[tuple[float, str, int]] = []
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
            if action.url in self.black:
                self.pending.add((url, action.conn))
                return
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
            if (url, action.conn) in self.pending:
                self.pending.discard((url, action.conn))
                self.abandoned.append((self.now, url, action.conn))
                return
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
                if link.session.is_open and link.origin in core.by_origin
                and core.by_origin[link.origin] in core.links}


def origin_of(name: str) -> str:
    """The origin (hex public key) of the test identity named ``name`` (Identity.from_seed)."""
    return Identity.from_seed(name).origin


def writer_of(name: str, chain: int = 1) -> str:
    return f"{origin_of(name)}.{chain:016x}"


HEADS: dict[bytes, Head] = {}  # raw entry id → a head for it, for every entry chain_entries made


def chain_entries(name: str, seqs, context: str = "ctx", lamport0: int = 0, key: str = "k",
                  chain: int = 1, payload=None) -> list[Entry]:
    """Entries ``seqs`` of the writer chain ``chain`` of identity ``name`` (the whole chain
    1..max is built so that prev links are right); each gets a signed head in ``HEADS``."""
    identity = Identity.from_seed(name)
    prev, out, wanted = NO_PREV, [], set(seqs)
    for s in range(1, max(wanted, default=0) + 1):
        data = payload(s) if payload else f"{name}{s}".encode()
        k = key(s) if callable(key) else key
        e = make_entry(context, k, data, {}, lamport0 + s, identity.origin, chain, s, 0, prev)
        prev = bytes.fromhex(e.id)
        HEADS[prev] = identity.sign_head(context, chain, s, prev)
        if s in wanted:
            out.append(e)
    order = {s: i for i, s in enumerate(seqs)}
    return sorted(out, key=lambda e: order[e.seq])


def heads_for(entries: Iterable[Entry]) -> list[Head]:
    return [HEADS[bytes.fromhex(e.id)] for e in entries if bytes.fromhex(e.id) in HEADS]


def fork_into(ledger: Ledger, context: str) -> list[Entry]:
    """Two entries that one writer ("mallory", chain 5) signed for seq 1 of ``context`` reach
    ``ledger`` from two Yjs clients: a fork. Returns both entries."""
    mallory = Identity.from_seed("mallory")
    entries = []
    for client_id, payload in ((4242, b"left"), (4343, b"right")):
        entry = make_entry(context, "k", payload, {}, 1, mallory.origin, 5, 1, 0, NO_PREV)
        head = mallory.sign_head(context, 5, 1, bytes.fromhex(entry.id))
        ledger.apply_remote(context, encode_bundle((head,), forged_update([entry.record],
                                                                          client_id)))
        entries.append(entry)
    return entries


def fork_branches_into(ledger: Ledger, context: str) -> list[tuple[Entry, Entry]]:
    """Mallory (chain 5) signs two branches of ``context``, seqs 1 and 2 each with a head on its
    top, and they reach ``ledger`` from two Yjs clients. Returns (seq 1, seq 2) per branch."""
    mallory = Identity.from_seed("mallory")
    branches = []
    for client_id, payload in ((4242, b"left"), (4343, b"right")):
        e1 = make_entry(context, "k", payload + b"1", {}, 1, mallory.origin, 5, 1, 0, NO_PREV)
        e2 = make_entry(context, "k", payload + b"2", {}, 2, mallory.origin, 5, 2, 0,
                        bytes.fromhex(e1.id))
        head = mallory.sign_head(context, 5, 2, bytes.fromhex(e2.id))
        ledger.apply_remote(context, encode_bundle((head,), forged_update(
            [e1.record, e2.record], client_id)))
        branches.append((e1, e2))
    return branches


def byzantine_run(writers: list[str], rate_per_s: float, duration_s: float) -> ScenarioRun:
    """A finished simulated run, converged: ``writers`` append to context "log" while member
    "m" squats and equivocates in it twice each (forks and entries stored twice)."""
    run = ScenarioRun(load_scenario({
        "nodes": [*writers, "m"], "scenario": {"name": "byz", "seed": 4},
        "links": {"latency_ms": 5, "jitter_ms": 2},
        "steps": [{"at": 1, "writers": {"nodes": writers, "context": "log",
                                        "rate_per_s": rate_per_s, "duration_s": duration_s}},
                  *[{"at": 3 + i, "byzantine": {"node": "m", "attack": kind, "context": "log",
                                                "to": ["a", "b"]}}
                    for i, kind in enumerate(["squat", "equivocate", "squat", "equivocate"])]],
        "checks": {"converged_within_s": 30}}))
    assert run.run().passed
    return run
