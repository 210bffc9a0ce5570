"""``p2p-ledger bench``: how fast and how big, each number next to a baseline from the same run.

Machines are shared and noisy, so nothing here passes or fails: every row is the median of a few
repeats, shown with its spread and with the ratio to a baseline measured in the same process
right beside it (same disk, same moment). The "goal" columns only say whether a stated target
was met on this run.

Groups (``--only``):

* ``storage`` (here): durable appends through ``Ledger.append`` on ``SqliteStore`` (WAL,
  synchronous=FULL), one per commit and grouped, and through ``open_node`` with concurrent trio
  tasks, against raw SQLite inserting the same entry records with the same commit pattern;
  rebuilding 100k entries (``Ledger.open`` and every context loaded) against its floors (read
  the rows, apply them to bare pycrdt docs, hash every record); the Merkle tree against a plain
  binary Merkle root; RSS.
* ``sync`` (``bench_sync``): two nodes, our root/tree gossip against the plain Yjs sync
  protocol (one state-vector exchange per document per round), in memory, over real loopback
  websockets, and end to end with ``open_node``; and (``bench_bulk``) a fresh node process
  catching up from a full one against a raw websocket copy of the same bytes between two
  processes (``--only bulk``: that table alone).
* ``heal`` (``bench_heal``): seconds from a partition's heal until every root agrees, in the
  simulator (10 s to 1 h cuts, against the old 30 s redial cap) and on real processes through
  relays, and the CPU a dead peer costs.
* ``trust`` (``bench_trust``): durable appends and cold catch-up with Ed25519-signed chain heads
  checked, against the same code with signing and checking turned into no-ops.

``--quick`` shrinks every size so the whole run takes seconds (the smoke test uses it).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ..core.bundle import decode_bundle
from ..core.entry import NO_PREV, make_entry
from ..core.ledger import AppendRequest, Ledger
from ..core.merkle import MerkleTree, verify_proof
from ..trio.runtime import open_node
from ..trio.store import SqliteStore
from .bench_common import (
    FULL,
    PAYLOAD,
    QUICK,
    Sample,
    Scale,
    Table,
    current_rss,
    discard,
    filesystem_of,
    gc_paused,
    max_rss,
    met,
    open_loaded,
    payloads,
    ratio,
    say,
    tempdir,
    timed,
)
from .bench_sync import bench_sync

# ---- raw SQLite baseline -------------------------------------------------------------------


class RawSqlite:
    """The floor for durable appends: one row per entry record, nothing else."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path / "raw.sqlite3", isolation_level=None)
        # The same durability as SqliteStore: WAL, and a commit is on disk when it returns.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, context TEXT NOT NULL,"
            " record BLOB NOT NULL)")

    def commit(self, rows: Sequence[tuple[str, bytes]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO records (context, record) VALUES (?, ?)", rows)
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


def entry_records(context: str, n: int, size: int, seed: int) -> list[bytes]:
    """Records (id + canonical encoding) shaped like the ledger's: the baseline's bytes."""
    base = time.time_ns()
    origin, prev, out = "ab" * 32, NO_PREV, []
    for i, p in enumerate(payloads(n, size, seed)):
        entry = make_entry(context, "k", p, {}, i + 1, origin, 1, i + 1, base + i, prev)
        prev = bytes.fromhex(entry.id)
        out.append(entry.record)
    return out


def raw_replay(path: Path, context: str, batches: Sequence[int], seed: int) -> float:
    """Seconds to commit the same records in the same batch sizes to raw SQLite."""
    records = entry_records(context, sum(batches) + 1, PAYLOAD, seed)
    raw = RawSqlite(path)
    try:
        raw.commit([(context, records[-1])])  # warm-up: file creation and WAL set-up
        pos = 0
        t0 = time.perf_counter()
        for size in batches:
            raw.commit([(context, r) for r in records[pos:pos + size]])
            pos += size
        return time.perf_counter() - t0
    finally:
        raw.close()


def ledger_run(path: Path, context: str, batches: Sequence[int], seed: int) -> float:
    """Seconds for ``Ledger.append`` of the given batch sizes, one durable commit each."""
    store = SqliteStore(path, synchronous="FULL")
    try:
        ledger = Ledger.open(store, "bench-node", "bench-instance")
        data = payloads(sum(batches) + 1, PAYLOAD, seed)
        ledger.append([ledger.prepare(context, "k", data[-1])])  # warm-up, as for the baseline
        requests = [ledger.prepare(context, "k", p) for p in data[:-1]]
        pos = 0
        t0 = time.perf_counter()
        for size in batches:
            ledger.append(requests[pos:pos + size])
            pos += size
        seconds = time.perf_counter() - t0
        discard(ledger)
        return seconds
    finally:
        store.close()


# ---- storage: durable appends --------------------------------------------------------------

MAX_RUNS = 4  # × scale.repeats: the most repeats a noisy row gets
STABLE = 0.25  # interquartile range / median under which a row's spread counts as known


def settled(scale: Scale, runs: int, *samples: Sample) -> bool:
    """Whether a row has enough repeats: at least ``scale.repeats``, then until every sample's
    interquartile range is within STABLE of its median (fsync-bound rows swung 20× between runs
    with 3 repeats), or MAX_RUNS × repeats."""
    if runs < scale.repeats:
        return False
    if runs >= MAX_RUNS * scale.repeats:
        return True
    for sample in samples:
        q = statistics.quantiles(sample.values, n=4) if len(sample.values) > 1 else [0, 0, 0]
        if sample.median and (q[2] - q[0]) / sample.median > STABLE:
            return False
    return True


def bench_appends(scale: Scale) -> Table:
    table = Table(
        "Storage: durable appends (SQLite WAL, synchronous=FULL)",
        ["case", "commits", "runs", "ours/s", "±%", "raw SQLite/s", "±%", "ours cost x",
         "goal ≤3x"],
    )
    cases: list[tuple[str, list[int]]] = [
        ("Ledger.append, 1 per commit", [1] * scale.single_appends),
        ("Ledger.append, 10 per commit", [10] * (scale.batched_entries // 10)),
        ("Ledger.append, 100 per commit", [100] * max(1, scale.batched_entries // 100)),
    ]
    for name, batches in cases:
        ours, base = Sample(), Sample()
        n = sum(batches)
        rep = 0
        while not settled(scale, rep, ours, base):
            rep += 1
            with tempdir("append") as d:
                # Alternate the order so neither side always runs on a warmer disk.
                runs = [("ours", ledger_run), ("base", raw_replay)]
                for which, fn in runs if rep % 2 == 0 else runs[::-1]:
                    seconds = fn(d / which, "bench", batches, rep)
                    (ours if which == "ours" else base).add(n / seconds)
        table.add(name, len(batches), rep, ours.median, ours.spread, base.median, base.spread,
                  ratio(base.median, ours.median), met(scale, ratio(base.median, ours.median) <= 3))
    for tasks in (1, 16, 128):
        ours, base = Sample(), Sample()
        mean_batch = Sample()
        # One task commits one entry at a time: as many as the single-append row, not more.
        total = scale.single_appends if tasks == 1 else scale.node_appends
        rep = 0
        while not settled(scale, rep, ours, base):
            rep += 1
            with tempdir("node") as d:
                seconds, batches = trio.run(node_appends, d / "node", total, tasks)
                ours.add(total / seconds)
                mean_batch.add(statistics.mean(batches))
                # The same commit pattern the node chose (its group-commit batches), raw.
                base.add(sum(batches) / raw_replay(d / "raw", "bench", batches, rep))
        table.add(f"open_node, {tasks} tasks (≈{mean_batch.median:.0f}/commit)",
                  round(total / mean_batch.median), rep, ours.median, ours.spread,
                  base.median, base.spread, ratio(base.median, ours.median),
                  met(scale, ratio(base.median, ours.median) <= 3))
    table.notes += [
        f"{PAYLOAD} B payloads, one context; medians over `runs` repeats, each in a fresh"
        f" temp dir; ±% = (max-min)/median over the repeats. fsync-bound rows swing: repeats go"
        f" on (at least {scale.repeats}, at most {MAX_RUNS * scale.repeats}) until the middle"
        f" half of either side's runs is within {STABLE:.0%} of its median.",
        f"data dir {tempfile.gettempdir()} is on {filesystem_of(Path(tempfile.gettempdir()))}"
        " (tmpfs would be RAM: no fsync cost, nothing durable).",
        "raw SQLite inserts the same entry records (id + canonical encoding), one row each, with"
        " the same commits (same batch sizes); ours stores one Yjs update row per context per"
        " commit and also maintains the CRDT doc, index and Merkle tree.",
        "open_node rows: N concurrent trio tasks each awaiting node.append in a loop; the node's"
        " committer groups whatever is pending into one commit; the baseline replays the batch"
        " sizes the node actually used.",
        "ours cost x = raw rate / our rate (1.0 = as fast as raw SQLite).",
    ]
    return table


async def node_appends(path: Path, total: int, tasks: int) -> tuple[float, list[int]]:
    """Seconds for ``tasks`` trio tasks to append ``total`` entries, and the commit batch sizes."""
    data = payloads(total, PAYLOAD, tasks)
    batches: list[int] = []
    async with open_node(path, node_id="bench-node", synchronous="FULL") as node:
        await node.append("bench", data[0])  # warm-up
        ledger = node.ledger
        inner = ledger.append

        def counting_append(requests: Sequence[AppendRequest]) -> Any:
            # Instrumentation only: record the group-commit batch sizes the committer picks.
            batches.append(len(requests))
            return inner(requests)

        ledger.append = counting_append  # type: ignore[method-assign]
        per_task = [data[i::tasks] for i in range(tasks)]

        async def writer(items: list[bytes]) -> None:
            for p in items:
                await node.append("bench", p)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for items in per_task:
                nursery.start_soon(writer, items)
        seconds = time.perf_counter() - t0
        ledger.append = inner  # type: ignore[method-assign]
    discard(ledger)
    return seconds, batches


# ---- storage: rebuild ----------------------------------------------------------------------


def fill_store(path: Path, contexts: int, per_context: int, size: int = PAYLOAD,
               batch: int = 100) -> int:
    """A store written the way a node writes it: batches of ≤ ``batch`` entries per commit."""
    store = SqliteStore(path, synchronous="OFF")  # building is not what we measure
    try:
        ledger = Ledger.open(store, "bench-node", "bench-instance")
        rng = random.Random(7)
        n = 0
        with gc_paused():
            for start in range(0, per_context, batch):
                for c in range(contexts):
                    count = min(batch, per_context - start)
                    ledger.append([ledger.prepare(f"ctx-{c:05d}", "k", rng.randbytes(size))
                                   for _ in range(count)])
                    n += count
        discard(ledger)
        return n
    finally:
        store.close()


def floors(store: SqliteStore) -> tuple[float, float, float]:
    """Seconds to read every row; to apply them to bare pycrdt docs; to sha256 every record."""
    from pycrdt import Array, Doc

    t0 = time.perf_counter()
    rows = store.load()
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    docs: list[Doc[Any]] = []
    for updates in rows.values():
        doc: Doc[Any] = Doc()
        doc.get("entries", type=Array)
        for u in updates:
            doc.apply_update(decode_bundle(u).update)
        docs.append(doc)
    t_apply = time.perf_counter() - t0
    records = [bytes(r) for doc in docs for r in doc.get("entries", type=Array)]
    t0 = time.perf_counter()
    for r in records:
        hashlib.sha256(r[32:]).digest()
    t_hash = time.perf_counter() - t0
    return t_read, t_apply, t_hash


RSS_PROBE = """
import gc, json, resource, sys, time
from p2p_ledger.cli.bench_common import current_rss, gc_pause, open_loaded, status_kib
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.trio.store import SqliteStore
before, objects_before = current_rss(), len(gc.get_objects())
store = SqliteStore(sys.argv[1])
t0 = time.perf_counter()
ledger = open_loaded(store, "bench-node", "bench-instance")
seconds = time.perf_counter() - t0
after = current_rss()
pause, objects = gc_pause()
print(json.dumps({"before": before, "after": after, "seconds": seconds,
                  "entries": ledger.entry_count(), "hwm": status_kib("VmHWM") * 1024,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "gc_pause": pause, "objects": objects - objects_before}))
"""


def drop_caches() -> bool:
    """Empty the OS page cache (root only); False where that is not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False  # not root, or /proc/sys read-only (a container): no cold-cache rows
    return True


def _rebuild_row(scale: Scale, path: Path, n: int, floor: float,
                 cold: bool) -> tuple[float, float, float, float, bool | None]:
    """Seconds (median, spread), entries/s, vs floor and the goal cell for Ledger.open."""
    runs = Sample()
    for _ in range(scale.repeats):
        store = SqliteStore(path)
        try:
            if cold:
                drop_caches()
            gc.collect()
            t0 = time.perf_counter()
            ledger = open_loaded(store, "bench-node", "bench-instance")
            runs.add(time.perf_counter() - t0)
            discard(ledger)
        finally:
            store.close()
    return (runs.median, runs.spread, n / runs.median, ratio(runs.median, floor),
            met(scale, runs.median < 2))


def bench_rebuild(scale: Scale) -> tuple[Table, Table]:
    n_target = scale.rebuild_contexts * scale.rebuild_per_context
    table = Table(
        f"Storage: rebuild {n_target:,} entries (Ledger.open on SqliteStore)",
        ["case", "seconds", "±%", "entries/s", "vs floor x", "goal <2 s"],
    )
    mem = Table(f"Storage: memory after rebuilding {n_target:,} entries",
                ["measure", "MiB", "per entry", "value"])
    with tempdir("rebuild") as d:
        t_fill = timed(lambda: fill_store(d / "store", scale.rebuild_contexts,
                                          scale.rebuild_per_context))
        n = n_target
        say(f"rebuild: wrote {n:,} entries in {t_fill:.1f}s")
        ours, verified = Sample(), Sample()
        read, apply_, hashing = Sample(), Sample(), Sample()
        store = SqliteStore(d / "store")
        try:
            for _ in range(scale.repeats):
                gc.collect()
                t0 = time.perf_counter()
                ledger = open_loaded(store, "bench-node", "bench-instance")
                ours.add(time.perf_counter() - t0)
                discard(ledger)
                t_read, t_apply, t_hash = floors(store)
                read.add(t_read)
                apply_.add(t_read + t_apply)
                hashing.add(t_read + t_apply + t_hash)
            t0 = time.perf_counter()
            ledger = Ledger.open(store, "bench-node", "bench-instance")
            assert not ledger.verify()
            verified.add(time.perf_counter() - t0)
            discard(ledger)
        finally:
            store.close()
        floor = hashing.median
        table.add("Ledger.open, 100 entries per row, warm cache", ours.median, ours.spread,
                  n / ours.median, ratio(ours.median, floor), met(scale, ours.median < 2))
        table.add("Ledger.verify (from the store), 1 run", verified.median, None,
                  n / verified.median, ratio(verified.median, floor),
                  met(scale, verified.median < 2))
        # Cold cache (the page cache dropped before each open) and a store written one append
        # per commit (one update row per entry: what a node taking single appends writes).
        dropped = not scale.quick and drop_caches()
        cold_note = ("cold = the OS page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches)"
                     " before each open" if dropped else
                     "cold cache not measured: " + ("--quick" if scale.quick else
                                                    "/proc/sys/vm/drop_caches not writable"))
        if dropped:
            table.add("Ledger.open, 100 entries per row, cold cache",
                      *_rebuild_row(scale, d / "store", n, floor, cold=True))
        t_fill = timed(lambda: fill_store(d / "store1", scale.rebuild_contexts,
                                          scale.rebuild_per_context, batch=1))
        say(f"rebuild: wrote {n:,} entries one append at a time in {t_fill:.1f}s")
        table.add("Ledger.open, 1 entry per row, warm cache",
                  *_rebuild_row(scale, d / "store1", n, floor, cold=False))
        if dropped:
            table.add("Ledger.open, 1 entry per row, cold cache",
                      *_rebuild_row(scale, d / "store1", n, floor, cold=True))
        table.add("floor: read rows", read.median, read.spread, n / read.median, None, None)
        table.add("floor: + apply to bare pycrdt docs", apply_.median, apply_.spread,
                  n / apply_.median, None, None)
        table.add("floor: + sha256 every record", hashing.median, hashing.spread,
                  n / hashing.median, 1.0, None)
        # Memory in a fresh process, so nothing else this bench built is counted.
        probe = subprocess.run([sys.executable, "-c", RSS_PROBE, str(d / "store")],
                               capture_output=True, text=True, check=True)
        got = json.loads(probe.stdout)
        grown = got["after"] - got["before"]
        mem.add("child: RSS before Ledger.open (interpreter + imports)", got["before"] / 2**20,
                None, None)
        mem.add("child: RSS after Ledger.open (VmRSS)", got["after"] / 2**20, None, None)
        mem.add("child: growth from the rebuild", grown / 2**20, grown / got["entries"], None)
        mem.add("child: peak RSS (VmHWM)", got["hwm"] / 2**20, None, None)
        mem.add("child: GC-tracked objects added", None, got["objects"] / got["entries"],
                got["objects"])
        mem.add("child: one full gc.collect() (ms)", None, None, got["gc_pause"] * 1e3)
        # The same rebuild in this process, as asked: getrusage and /proc/self/status.
        ledger = open_loaded(SqliteStore(d / "store"), "bench-node", "bench-instance")
        mem.add("bench process: VmRSS with the ledger alive", current_rss() / 2**20, None,
                None)
        mem.add("bench process: ru_maxrss so far", max_rss() / 2**20, None, None)
        ledger.storage.close()
        discard(ledger)
        table.add("Ledger.open in a fresh process, 1 run", got["seconds"], None,
                  n / got["seconds"], ratio(got["seconds"], floor),
                  met(scale, got["seconds"] < 2))
    table.notes += [
        f"{scale.rebuild_contexts} contexts × {scale.rebuild_per_context} entries of {PAYLOAD} B,"
        " committed in batches of 100 (one context per batch), or one append per commit (1 entry"
        " per row); the floor is the 100-per-row store's, warm.",
        cold_note + f"; data dir on {filesystem_of(Path(tempfile.gettempdir()))}.",
        "floors are cumulative: reading every row, then applying them to bare pycrdt docs (no"
        " gate, index or Merkle tree), then hashing every record: the least a verified rebuild"
        " must do. vs floor x = ours / that floor.",
    ]
    mem.notes += [
        "child = a fresh process that only opens the store and rebuilds it (its ru_maxrss would"
        " include the parent's RSS at fork time, so its peak is VmHWM).",
        "bench process: everything this run built so far is counted (ru_maxrss is a high-water"
        " mark over the whole run).",
    ]
    return table, mem


# ---- storage: Merkle tree ------------------------------------------------------------------


def binary_merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The textbook baseline: hash the leaves, then pairs, level by level."""
    level = [hashlib.sha256(b"\x00" + k).digest() for k in leaves]
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
                 for i in range(0, len(level), 2)]
    return level[0]


def bench_merkle(scale: Scale) -> Table:
    n = scale.merkle_items
    table = Table(f"Storage: Merkle tree over {n:,} entry ids",
                  ["case", "ours", "±%", "binary Merkle", "ours cost x", "unit"])
    keys = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]
    rng = random.Random(3)
    build, base, insert, prove, verify = Sample(), Sample(), Sample(), Sample(), Sample()
    sizes: list[int] = []
    for _ in range(scale.repeats):
        tree = MerkleTree()

        def full(t: MerkleTree = tree) -> None:
            t.update((k, b"") for k in keys)
            t.root()

        build.add(timed(full))
        base.add(timed(lambda: binary_merkle_root(keys)))
        extra = [hashlib.sha256(b"x" + i.to_bytes(8, "big")).digest()
                 for i in range(scale.proofs)]

        def inserts(t: MerkleTree = tree, extra: list[bytes] = extra) -> None:
            for k in extra:
                t.set(k)
                t.root()

        insert.add(timed(inserts) / len(extra))
        root = tree.root()
        picks = rng.sample(keys, scale.proofs)
        t0 = time.perf_counter()
        proofs = [tree.prove(k) for k in picks]
        prove.add((time.perf_counter() - t0) / len(picks))
        sizes = [len(p.encode()) for p in proofs]
        t0 = time.perf_counter()
        ok = all(verify_proof(root, k, b"", p) for k, p in zip(picks, proofs, strict=True))
        verify.add((time.perf_counter() - t0) / len(picks))
        if not ok:
            raise RuntimeError("a Merkle proof failed to verify")
    depth = math.ceil(math.log2(n))
    table.add("build + root, all ids", build.median * 1e3, build.spread, base.median * 1e3,
              ratio(build.median, base.median), "ms")
    table.add("insert 1 id + new root", insert.median * 1e6, insert.spread, None, None, "µs")
    table.add("prove 1 id", prove.median * 1e6, prove.spread, None, None, "µs")
    table.add("verify 1 proof", verify.median * 1e6, verify.spread, None, None, "µs")
    table.add("proof size (median)", statistics.median(sizes), None, 32 * depth,
              ratio(statistics.median(sizes), 32 * depth), "bytes")
    table.notes.append(
        "ours: 16-ary trie, buckets of ≤16, order-independent shape (what sync descends); binary"
        f" Merkle: sha256 of leaves then pairs; its proof is {depth} sibling digests.")
    return table


# ---- storage: the grow-only gate and hostile input ------------------------------------------


def bench_gate(scale: Scale) -> Table:
    """What checking a peer's update costs next to pycrdt applying it unchecked, and what
    refusing a hostile state vector costs next to answering an honest one."""
    from pycrdt import Array, Doc

    from ..core.context_log import ContextLog
    from ..core.errors import RemoteProtocolError
    from ..core.yjs import appended_values

    table = Table("Storage: checking peer input (grow-only gate, hostile state vector)",
                  ["case", "ours ms", "±%", "pycrdt ms", "ours cost x", "unit"])
    n_small, n_big = 1000, scale.merkle_items

    def update_of(n: int, one_struct_each: bool) -> bytes:
        doc: Doc[Any] = Doc(client_id=91)
        array = doc.get("entries", type=Array)
        values = payloads(n, PAYLOAD, n)
        if one_struct_each:  # each insert at the front: every item its own struct
            for start in range(0, n, 100):
                with doc.transaction():
                    for v in values[start:start + 100]:
                        array.insert(0, v)
        else:
            for start in range(0, n, 100):
                with doc.transaction():
                    array.extend(values[start:start + 100])
        return doc.get_update()

    cases = [(f"{n_small:,} entries, appended 100 at a time", update_of(n_small, False)),
             (f"{n_big:,} entries, appended 100 at a time", update_of(n_big, False)),
             (f"{n_big:,} entries, one struct each (worst)", update_of(n_big, True))]
    for name, update in cases:
        gate, apply_ = Sample(), Sample()
        for _ in range(scale.repeats):
            gate.add(timed(lambda u=update: appended_values(u)) * 1e3)  # type: ignore[misc]
            apply_.add(timed(lambda u=update: Doc().apply_update(u)) * 1e3)  # type: ignore[misc]
        table.add(f"gate: {name}", gate.median, gate.spread, apply_.median,
                  ratio(gate.median, apply_.median), "ms per update")
    ctx = ContextLog("ctx", 5)
    ctx.append_local([make_entry("ctx", "k", b"x", {}, 1, "ab" * 32, 1, 1, 0)])
    honest = ContextLog("ctx", 6).state_vector()
    refuse, answer = Sample(), Sample()
    for _ in range(max(scale.repeats, 5)):
        def hostile() -> None:
            try:
                ctx.diff(bytes.fromhex("8080808003"))  # claims 2^29 entries in 5 bytes
            except RemoteProtocolError:
                return
            raise RuntimeError("a 5-byte state vector claiming 2^29 entries was accepted")

        refuse.add(timed(hostile) * 1e3)
        answer.add(timed(lambda: ctx.diff(honest)) * 1e3)
    table.add("refuse a 5-byte vector claiming 2^29 entries", refuse.median, refuse.spread,
              answer.median, ratio(refuse.median, answer.median), "ms (pycrdt: honest diff)")
    table.notes += [
        f"gate = yjs.appended_values (parse every struct, refuse deletes and foreign types);"
        f" pycrdt = applying the same update to a fresh Doc with no check. {PAYLOAD} B values.",
        "unchecked, yrs sized a map by the claimed count: ~1 GB and ~0.6 s per SYNC1 frame.",
    ]
    return table


# ---- driver --------------------------------------------------------------------------------


def run_bench(
    quick: bool = False,
    only: str | None = None,
    as_json: bool = False,
    repeats: int | None = None,
    out: TextIO | None = None,
) -> list[Table]:
    """Run the benchmarks and print their tables (or one JSON document); returns the tables."""
    out = out or sys.stdout
    scale = QUICK if quick else FULL
    if repeats is not None:
        scale = Scale(**{**scale.__dict__, "repeats": max(1, repeats)})
    if only not in (None, "storage", "sync", "bulk", "heal", "trust"):
        raise ValueError(f"--only wants storage, sync, bulk, heal or trust, got {only!r}")
    t_start = time.perf_counter()
    tables: list[Table] = []

    def emit(table: Table) -> None:
        tables.append(table)
        if not as_json:
            print(table.render() + "\n", file=out, flush=True)

    if only in (None, "storage"):
        say("storage: durable appends")
        emit(bench_appends(scale))
        say("storage: rebuild")
        for t in bench_rebuild(scale):
            emit(t)
        say("storage: merkle")
        emit(bench_merkle(scale))
        say("storage: gate")
        emit(bench_gate(scale))
    if only in (None, "sync"):
        for t in bench_sync(scale):
            emit(t)
    if only in (None, "sync", "bulk"):
        from .bench_bulk import bench_bulk

        emit(bench_bulk(scale))
    if only in (None, "trust"):
        from .bench_trust import bench_trust

        say("trust: signing and verification")
        emit(bench_trust(scale))
    if only in (None, "heal"):
        from .bench_heal import bench_heal

        for t in bench_heal(scale):
            emit(t)
    total = time.perf_counter() - t_start
    if as_json:
        json.dump({"quick": quick, "repeats": scale.repeats, "seconds": total,
                   "tables": [t.as_dict() for t in tables]}, out, indent=1)
        print(file=out)
    else:
        print(f"bench finished in {total:.0f} s ({'quick' if quick else 'full'}, "
              f"{scale.repeats} repeats)", file=out)
    return tables


def add_bench_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on an argparse subparsers object; the handler is ``args.func``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="measure storage, sync and healing against same-run baselines",
        description=(__doc__ or "").split("\n\n")[0].replace("``", ""),
        epilog="examples:\n  p2p-ledger bench --quick\n  p2p-ledger bench --only sync --json\n"
               "  p2p-ledger bench --scale --entries 1000000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, a few seconds (what the smoke test runs)")
    parser.add_argument("--only", choices=("storage", "sync", "bulk", "heal", "trust"),
                        help="run one group (bulk: the two-process catch-up table of sync alone)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--repeats", type=int, help="repeats per measurement (median shown)")
    parser.add_argument("--scale", action="store_true",
                        help="only the scale run: ingest, RSS, start, verify, catch-up and disk "
                             "at --entries entries, 1 and 10,000 contexts (minutes; progress on "
                             "stderr)")
    parser.add_argument("--entries", type=int, default=1_000_000, metavar="N",
                        help="entries for --scale (default 1,000,000; 10,000,000 takes long)")
    parser.add_argument("--contexts", default="1,10000", metavar="N[,N]",
                        help="--scale: run with the entries in 1 context, spread over 10,000, "
                             "or both (default 1,10000)")
    parser.set_defaults(func=bench_main)


def bench_main(args: argparse.Namespace) -> int:
    if args.scale:
        from .bench_scale import run_scale

        if args.entries < 10_000:
            raise SystemExit("bench --scale: --entries must be at least 10,000")
        contexts = tuple(int(c) for c in args.contexts.split(",") if c.strip().isdigit())
        if not contexts or not set(contexts) <= {1, 10_000}:
            raise SystemExit("bench --scale: --contexts takes 1, 10000 or 1,10000")
        tables: list[Table] = []
        run_scale(args.entries, tables, contexts)
        if args.json:
            json.dump({"scale": args.entries, "tables": [t.as_dict() for t in tables]},
                      sys.stdout, indent=1)
            print()
        else:
            print("\n\n".join(t.render() for t in tables))
        return 0
    run_bench(quick=args.quick, only=args.only, as_json=args.json, repeats=args.repeats)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p2p-ledger bench")
    configure_parser(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
