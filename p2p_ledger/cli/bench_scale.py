"""``p2p-ledger bench --scale [--entries N]``: the ledger at 1M (or 10M) entries.

Each phase runs in a child process of its own, so its memory figures (VmRSS, VmHWM) are its
own and a start is a real cold start of the interpreter; each is set next to a baseline measured
in the same run on the same disk: raw SQLite holding the same entry records (id + canonical
encoding, one row each) written with the same commit batch sizes the node chose.

| phase    | ours                                              | baseline                       |
|----------|---------------------------------------------------|--------------------------------|
| ingest   | ``open_node``, 128 trio tasks appending 100 B     | raw SQLite, same batches; the  |
|          |                                                   | floor (``_Floor``)             |
| start    | ``open_node`` until ready (fresh process); RSS    | open the raw file, count rows  |
| crash    | appends, kill -9 within a second, start again: ready, then settled | as start |
| verify   | ``p2p-ledger verify --data`` (wall, peak RSS)     | read + sha256 every raw record |
| catch-up | a fresh ``p2p-ledger node`` syncing from a full one | copy the raw rows to a new file |
| disk     | data dir bytes per entry                          | raw file bytes per entry       |

for one context and for the same entries spread over 10,000 contexts. Progress goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.context_log import client_id_for
from ..core.entry import NO_PREV, make_chain, make_entry
from ..core.identity import chain_for, writer_key
from ..core.ledger import Appended
from ..core.yjs import encode_appended, varuint_bytes
from .bench_common import Table

PAYLOAD = 100
TASKS = 128
# Appended before the kill -9 of the crash phase: a few commits, well within SUMMARY_LAG (1 s).
CRASH_ENTRIES = 20 * TASKS
SPREAD_CONTEXTS = 10_000
CATCH_UP_TIMEOUT = 1800  # s; past it the row says the catch-up did not finish
STOP_TIMEOUT = 60  # s a node gets to stop after SIGTERM before it is killed


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _progress(msg: str) -> None:
    if not sys.stderr.isatty():  # progress is for a person watching
        return
    print(f"[bench --scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _context_names(contexts: int) -> list[str]:
    return ["bench"] if contexts == 1 else [f"ctx-{c:05d}" for c in range(contexts)]


# ---- child phases (each prints one JSON object) --------------------------------------------


class _Floor:
    """The ingest floor: what the design cannot do without per commit, standing in for
    ``Ledger.append`` under the real runtime (``open_node``'s group commit, the same tasks):
    each context's entries built and hashed (``make_chain``), one Ed25519 signature over the
    tree of the commit's heads (``Identity.sign_heads``), a Yjs update per context
    (``encode_appended``), and, in one SQLite transaction (WAL, synchronous=FULL) on the
    store's own schema, a row per update, each context's head row rewritten in place and one
    crown row. No index, no Merkle trees, no summaries, no memory budget: what the ledger adds
    over this is what reads, gossip and proofs need. A lower bound, not a ledger: nothing reads
    what it writes."""

    def __init__(self, ledger: Any, path: Path) -> None:
        from ..trio.store import SCHEMA_STATEMENTS

        self.identity, self.origin, self.instance = ledger.identity, ledger.origin, ledger.instance
        self.tick, self.now_ns = ledger.clock.tick, ledger.now_ns
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA_STATEMENTS:
            self.db.execute(statement)
        # context → [context id, chain, writer, seq, last entry id, Yjs client, its varuint]
        self.chains: dict[str, list[Any]] = {}

    def append(self, requests: Sequence[Any]) -> Appended:
        groups: dict[str, list[tuple[str, bytes, Any, int, int]]] = {}
        for req in requests:
            groups.setdefault(req.context, []).append(
                (req.key, req.payload, req.meta, self.tick(), self.now_ns()))
        built, signing = [], []
        for name, items in groups.items():
            known = self.chains.get(name)
            if known is None:
                chain, client = chain_for(self.instance, name), client_id_for(self.instance, name)
                known = self.chains[name] = [len(self.chains) + 1, chain,
                                             writer_key(self.origin, chain), 0, NO_PREV, client,
                                             varuint_bytes(client)]
            entries, records, fields = make_chain(name, self.origin, known[1], known[3],
                                                  known[4], items, known[2])
            built.append((known, entries, records, fields[-1][0]))
            signing.append((name, known[1], known[3] + len(items), fields[-1][0]))
        heads = self.identity.sign_heads(signing)
        crown = heads[0].signature
        rows, moved, added, out = [], [], [], []
        for (known, entries, records, last), head in zip(built, heads, strict=True):
            rows.append((known[0], encode_appended(known[5], known[3], records, "entries",
                                                   known[6])))
            stored = head.path or b""  # (the head's own part; the crown holds the shared one)
            if known[3]:
                moved.append((last, stored, known[0], known[4]))
            else:
                added.append((known[0], last, stored))
            known[3] += len(records)
            known[4] = last
            out += entries
        db = self.db
        db.execute("BEGIN")
        db.executemany("INSERT INTO updates (ctx, blob, bare) VALUES (?, ?, 1)", rows)
        db.executemany("UPDATE heads SET id = ?, head = ? WHERE ctx = ? AND id = ?", moved)
        db.executemany("INSERT INTO heads (ctx, id, head) VALUES (?, ?, ?)", added)
        db.execute("INSERT INTO crowns (crown, live) VALUES (?, ?)", (crown, len(heads)))
        db.execute("COMMIT")
        return Appended(out, [])


async def _ingest(data: Path, total: int, contexts: int, batches_out: Path | None,
                  floor: bool = False) -> dict[str, Any]:
    """The ingest phase: ``total`` appends of PAYLOAD bytes by TASKS tasks through
    ``open_node``, round-robin over ``contexts``; the commit batch sizes go to
    ``batches_out``. With ``floor``, ``Ledger.append`` is ``_Floor``'s instead."""
    import gc

    import trio

    from ..trio.runtime import open_node
    from .config import GC_THRESHOLDS, tune_malloc

    # The phase measures what a `p2p-ledger node` does, so it sets what that command sets.
    # why: 100k appends in 1 context, load ~5: 7.57 CPU-s with the default thresholds, 7.24
    # with these (gc.freeze() after the start changes nothing more: with these thresholds the
    # oldest generation is collected about once per 10^8 allocations)
    gc.set_threshold(*GC_THRESHOLDS)
    tune_malloc()

    names = _context_names(contexts)
    rng = random.Random(1)
    batches: list[int] = []
    done = 0
    async with open_node(data, node_id="bench-node", synchronous="FULL") as node:
        ledger = node.ledger
        inner = _Floor(ledger, data / "floor.sqlite3").append if floor else ledger.append

        def counting_append(requests: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
            batches.append(len(requests))  # instrumentation: the committer's batch sizes
            return inner(requests, *args, **kwargs)

        ledger.append = counting_append  # type: ignore[method-assign]

        async def writer(task: int) -> None:
            nonlocal done
            i = task
            while i < total:
                await node.append(names[i % len(names)], rng.randbytes(PAYLOAD), key="k")
                done += 1
                i += TASKS

        async def progress() -> None:
            while True:
                await trio.sleep(5)
                _progress(f"ingest: {done:,}/{total:,} ({_status_kib('VmRSS') // 1024} MiB)")

        t0, cpu0 = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress)
            async with trio.open_nursery() as writers:
                for task in range(TASKS):
                    writers.start_soon(writer, task)
            nursery.cancel_scope.cancel()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rss = _status_kib("VmRSS")
        # (contexts read back from the store after the memory budget evicted them)
        loads = ledger.loads
    if batches_out is not None:
        batches_out.write_text(json.dumps(batches))
    return {"seconds": seconds, "cpu_seconds": cpu, "rss_kib": rss,
            "hwm_kib": _status_kib("VmHWM"), "commits": len(batches), "loads": loads}


async def _start(data: Path) -> dict[str, Any]:
    from ..trio.runtime import open_node

    t0 = time.perf_counter()
    async with open_node(data, node_id="bench-node") as node:
        ready = time.perf_counter() - t0
        entries = node.ledger.entry_count()
        rss = _status_kib("VmRSS")
        loaded = len(node.ledger.live_contexts())
        # The cost a lazy start moves to the first use: read 100 entries of the largest context.
        largest = max(node.ledger.context_names(), key=node.ledger.context_entries)
        t0 = time.perf_counter()
        node.get(largest, limit=100)
        first_read = time.perf_counter() - t0
    return {"seconds": ready, "entries": entries, "rss_kib": rss, "hwm_kib": _status_kib("VmHWM"),
            "loaded": loaded, "first_read": first_read,
            "largest": node.ledger.summaries[largest].entries}


async def _crash(data: Path, contexts: int) -> None:
    """Append ``CRASH_ENTRIES`` through ``open_node`` from ``TASKS`` tasks, then SIGKILL this
    process at once: the summaries of what it committed last lag their rows."""
    import trio

    from ..trio.runtime import open_node

    names = _context_names(contexts)
    async with open_node(data, node_id="bench-node", synchronous="FULL") as node:
        async def writer(task: int) -> None:
            for i in range(task, CRASH_ENTRIES, TASKS):
                await node.append(names[i % len(names)], b"c" * PAYLOAD, key="k")

        async with trio.open_nursery() as writers:
            for task in range(TASKS):
                writers.start_soon(writer, task)
        os.kill(os.getpid(), signal.SIGKILL)


async def _start_crashed(data: Path) -> dict[str, Any]:
    """``open_node`` until ready after a kill -9, then until no context settles (polled)."""
    import trio

    from ..trio.runtime import open_node

    t0 = time.perf_counter()
    async with open_node(data, node_id="bench-node") as node:
        ready = time.perf_counter() - t0
        settling = node.ledger.settling()
        while node.ledger.settling():
            await trio.sleep(0.01)
        settled = time.perf_counter() - t0
    return {"seconds": ready, "settling": settling, "settled": settled}


def _raw(path: Path, batches: Sequence[int], contexts: int) -> dict[str, Any]:
    """The baseline: the same records, one row each, the same commit batch sizes."""
    names = _context_names(contexts)
    rng = random.Random(1)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, context TEXT NOT NULL,"
               " record BLOB NOT NULL)")
    base, i, spent = time.time_ns(), 0, 0.0
    for size in batches:
        rows = []
        for _ in range(size):
            name = names[i % len(names)]
            seq = i // len(names) + 1
            prev = NO_PREV if seq == 1 else rng.randbytes(32)  # the same shape as the ledger's
            rows.append((name, make_entry(name, "k", rng.randbytes(PAYLOAD), {}, i + 1,
                                          "ab" * 32, 1, seq, base + i, prev).record))
            i += 1
        t0 = time.perf_counter()
        db.execute("BEGIN")
        db.executemany("INSERT INTO records (context, record) VALUES (?, ?)", rows)
        db.execute("COMMIT")
        spent += time.perf_counter() - t0
    db.close()
    return {"seconds": spent, "entries": i}


def _raw_read(path: Path) -> dict[str, Any]:
    import hashlib

    t0 = time.perf_counter()
    db = sqlite3.connect(path)
    count = db.execute("SELECT count(*) FROM records").fetchone()[0]
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    bad = 0
    for (record,) in db.execute("SELECT record FROM records"):
        if hashlib.sha256(record[32:]).digest() != record[:32]:
            bad += 1
    verify = time.perf_counter() - t0
    db.close()
    return {"open_seconds": opened, "verify_seconds": verify, "entries": count, "bad": bad,
            "hwm_kib": _status_kib("VmHWM")}


def _raw_copy(src: Path, dst: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    a = sqlite3.connect(src)
    b = sqlite3.connect(dst, isolation_level=None)
    b.execute("PRAGMA journal_mode=WAL")
    b.execute("PRAGMA synchronous=FULL")
    b.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, context TEXT NOT NULL,"
              " record BLOB NOT NULL)")
    cur = a.execute("SELECT context, record FROM records ORDER BY id")
    while rows := cur.fetchmany(10_000):
        b.execute("BEGIN")
        b.executemany("INSERT INTO records (context, record) VALUES (?, ?)", rows)
        b.execute("COMMIT")
    a.close()
    b.close()
    return {"seconds": time.perf_counter() - t0}


def child_main(argv: Sequence[str]) -> int:
    import trio

    phase, *args = argv
    if phase == "ingest":
        out = trio.run(_ingest, Path(args[0]), int(args[1]), int(args[2]), Path(args[3]))
    elif phase == "floor":
        out = trio.run(_ingest, Path(args[0]), int(args[1]), int(args[2]), None, True)
    elif phase == "start":
        out = trio.run(_start, Path(args[0]))
    elif phase == "crash":
        trio.run(_crash, Path(args[0]), int(args[1]))
        out = {}  # (not reached: it kills itself)
    elif phase == "start-crashed":
        out = trio.run(_start_crashed, Path(args[0]))
    elif phase == "raw":
        out = _raw(Path(args[0]), json.loads(Path(args[1]).read_text()), int(args[2]))
    elif phase == "raw-read":
        out = _raw_read(Path(args[0]))
    elif phase == "raw-copy":
        out = _raw_copy(Path(args[0]), Path(args[1]))
    else:
        raise SystemExit(f"unknown phase {phase}")
    print(json.dumps(out))
    return 0


# ---- the orchestration (parent) ------------------------------------------------------------


class PhaseFailed(RuntimeError):
    """A phase's child process failed (at 10M entries: killed for memory, say)."""


def _child_stderr() -> int | None:
    """A child's stderr: ours when it is a terminal (the child's progress lines are shown only
    on one: a captured stderr hid ingest's progress for the whole phase), else captured."""
    return None if sys.stderr.isatty() else subprocess.PIPE


def _child(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "p2p_ledger.cli.bench_scale", *args]
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=_child_stderr(), text=True)
    if result.returncode != 0:
        raise PhaseFailed(f"{' '.join(args[:1])} failed (exit status {result.returncode})"
                          f"{': ' + result.stderr[-2000:] if result.stderr else ''}")
    out: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return out


def _record_size(contexts: int) -> int:
    """Bytes of one entry's canonical record as the phases write them (the issue's "payload +
    fixed fields": id 32, payload, the lengths of context, key, payload and meta, the context
    name and key, and the 96-byte tail of Lamport time, origin, chain, seq, wall time, prev).

    why: the goal's 1.5x was first taken of payload + 92 B, the record before the trust fields
    (origin, chain, prev: +80 B); a record of the 10,000-context spread is 259 B now."""
    from ..core.entry import make_entry

    name = _context_names(contexts)[-1]
    return len(make_entry(name, "k", bytes(PAYLOAD), {}, 1, "ab" * 32, 1, 1, 1).record)


def _killed_child(*args: str) -> None:
    """Run a phase that ends by killing itself with SIGKILL (``crash``)."""
    cmd = [sys.executable, "-m", "p2p_ledger.cli.bench_scale", *args]
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=_child_stderr(), text=True)
    if result.returncode != -signal.SIGKILL:
        raise PhaseFailed(f"{args[0]} ended with exit status {result.returncode}, not SIGKILL"
                          f"{': ' + result.stderr[-2000:] if result.stderr else ''}")


def _timed_command(cmd: list[str]) -> tuple[float, int, int]:
    """Wall seconds, exit status and peak RSS (KiB) of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=None if sys.stderr.isatty() else subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, proc.returncode, usage.ru_maxrss


def _peak_kib(pid: int) -> int:
    """VmHWM of a live child process (Linux /proc), KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _catch_up(source: Path, target: Path, entries: int, timeout: float,
              failed: list[str] | None = None) -> tuple[float | None, int, int]:
    """Seconds for a fresh node process to hold every entry of a full one (real processes;
    None when it did not within ``timeout``), and the peak RSS (KiB) of the source and of the
    fresh node. A node that does not stop within STOP_TIMEOUT of SIGTERM is killed, and said
    in ``failed``."""
    import trio

    from ..core.errors import LinkBroken
    from ..trio.client import Client

    def spawn(data: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
        proc = subprocess.Popen([sys.executable, "-m", "p2p_ledger", "node", "--data", str(data),
                                 "--listen", "127.0.0.1:0", "--no-discovery", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            proc.kill()
            raise RuntimeError(f"node on {data} did not start")
        return proc, line[1]

    # The poll reconnects when the busy node misses a keepalive (below): no warning line each time.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    procs = []
    try:
        src, url = spawn(source)
        procs.append(src)
        t0 = time.perf_counter()
        dst, dst_url = spawn(target, "--peer", url)
        procs.append(dst)

        async def wait() -> float | None:
            said = t0
            while time.perf_counter() - t0 < timeout:
                try:
                    async with Client.connect(dst_url) as client:
                        while time.perf_counter() - t0 < timeout:
                            if src.poll() is not None or dst.poll() is not None:
                                return None  # a node died (for memory, at 10M): not done
                            status = await client.status()
                            held = int(status.get("entries", 0))  # type: ignore[call-overload]
                            if held >= entries:
                                return time.perf_counter() - t0
                            if time.perf_counter() - said > 5:
                                said = time.perf_counter()
                                _progress(f"catch-up: {held:,}/{entries:,} entries")
                            await trio.sleep(0.05)  # a bounded poll of another process
                except LinkBroken:
                    if dst.poll() is not None:
                        return None
                    # why: applying one big bundle (a 100k-entry context arrives whole) keeps
                    # the node busy longer than the client's keepalive: connect again
                    await trio.sleep(0.2)
            return None

        seconds = trio.run(wait)
        return seconds, _peak_kib(src.pid), _peak_kib(dst.pid)
    finally:
        for proc, which in zip(procs, ("source", "fresh"), strict=False):
            if not _stopped(proc) and failed is not None:
                failed.append(f"catch-up: the {which} node did not stop within {STOP_TIMEOUT} "
                              f"s of SIGTERM (killed)")


def _stopped(proc: subprocess.Popen[bytes]) -> bool:
    """SIGTERM ``proc``; False if it had to be killed after STOP_TIMEOUT (a run of an hour is
    not lost for it: the notes say so)."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False
    return True


def run_scale(entries: int, tables: list[Any],
              spreads: Sequence[int] = (1, SPREAD_CONTEXTS)) -> None:
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="p2pl-scale-") as tmp_text:
        tmp = Path(tmp_text)
        for contexts in spreads:
            label = f"{contexts:,} context" + ("s" if contexts > 1 else "")
            data, raw = tmp / f"node-{contexts}", tmp / f"raw-{contexts}.sqlite3"
            batches = tmp / f"batches-{contexts}.json"
            _progress(f"{label}: ingest {entries:,} entries through open_node ({TASKS} tasks)")
            ingest = _child("ingest", str(data), str(entries), str(contexts), str(batches))
            _progress(f"{label}: the ingest floor (the same appends, the mandated work alone)")
            floor = _child("floor", str(tmp / f"floor-{contexts}"), str(entries), str(contexts))
            shutil.rmtree(tmp / f"floor-{contexts}", ignore_errors=True)  # (its disk is not ours)
            _progress(f"{label}: raw SQLite baseline, same batches")
            base = _child("raw", str(raw), str(batches), str(contexts))
            _progress(f"{label}: start (cold process), then a first read of the largest "
                      f"context")
            try:
                start: dict[str, Any] | None = _child("start", str(data))
            except PhaseFailed as exc:  # the rows say so; the other phases still run
                start = None
                failed.append(f"{label}: {exc}")
            raw_read = _child("raw-read", str(raw))
            _progress(f"{label}: verify --data")
            v_secs, v_status, v_hwm = _timed_command(
                [sys.executable, "-m", "p2p_ledger", "verify", "--data", str(data)])
            disk, raw_disk = _dir_bytes(data), raw.stat().st_size
            _progress(f"{label}: catch-up of a fresh node")
            catch = _catch_up(data, tmp / f"fresh-{contexts}", entries, CATCH_UP_TIMEOUT,
                              failed)
            copy = _child("raw-copy", str(raw), str(tmp / f"raw-copy-{contexts}.sqlite3"))
            _progress(f"{label}: {CRASH_ENTRIES:,} appends, kill -9, start again")
            try:
                _killed_child("crash", str(data), str(contexts))
                restart: dict[str, Any] | None = _child("start-crashed", str(data))
            except PhaseFailed as exc:
                restart = None
                failed.append(f"{label}: {exc}")
            loads.append(os.getloadavg()[0])
            results[label] = dict(ingest=ingest, floor=floor, base=base, start=start,
                                  raw_read=raw_read, verify=(v_secs, v_status, v_hwm), disk=disk,
                                  raw_disk=raw_disk, catch=catch, copy=copy["seconds"],
                                  restart=restart, contexts=contexts)

    table = Table(f"Scale: {entries:,} entries of {PAYLOAD} B (each phase a fresh process)",
                  ["measure", "contexts", "ours", "baseline", "ours/baseline", "unit", "goal",
                   "met"])
    per_entry_goal = 150 * 2**20 + 150 * entries
    for label, r in results.items():
        ing, base, start = r["ingest"], r["base"], r["start"]
        v_secs, v_status, v_hwm = r["verify"]
        rate, raw_rate = entries / ing["seconds"], entries / base["seconds"]
        goal_rate = 50_000 if label.startswith("1 ") else 40_000
        table.add("ingest", label, rate, raw_rate, rate / raw_rate, "entries/s",
                  f"≥{goal_rate:,}", rate >= goal_rate)
        floor = r["floor"]
        floor_rate = entries / floor["seconds"]
        table.add("… the floor: the mandated work alone (see notes)", label, floor_rate, None,
                  None, "entries/s", f"≥{goal_rate:,}", floor_rate >= goal_rate)
        cpu, floor_cpu = (x["cpu_seconds"] / entries * 1e6 for x in (ing, floor))
        table.add("… CPU per entry, ours / the floor's (the machine is shared)", label, cpu,
                  floor_cpu, cpu / floor_cpu, "µs", None, None)
        table.add("… contexts reloaded (evicted, then appended to)", label, ing["loads"], None,
                  None, "", None, None)
        table.add("RSS after ingest", label, ing["rss_kib"] / 1024, None, None, "MiB",
                  f"≤{per_entry_goal / 2**20:,.0f}", ing["rss_kib"] * 1024 <= per_entry_goal)
        table.add("RSS per entry", label, ing["rss_kib"] * 1024 / entries, None, None, "B",
                  None, None)
        if start is None:
            table.add("start until ready (failed, see the notes)", label, None,
                      r["raw_read"]["open_seconds"], None, "s", "≤1", False)
        else:
            table.add("start until ready", label, start["seconds"],
                      r["raw_read"]["open_seconds"], None, "s", "≤1", start["seconds"] <= 1.0)
            table.add("RSS when ready", label, start["rss_kib"] / 1024, None, None, "MiB", None,
                      None)
            table.add("contexts loaded when ready", label, start["loaded"], None, None, "", "0",
                      start["loaded"] == 0)
            table.add(f"first read of a cold context ({start['largest']:,} entries)", label,
                      start["first_read"], None, None, "s", None, None)
        restart = r["restart"]
        if restart is not None:
            table.add("start after kill -9", label, restart["seconds"],
                      r["raw_read"]["open_seconds"], None, "s", "≤1", restart["seconds"] <= 1.0)
            table.add("… contexts settling when ready", label, restart["settling"], None, None,
                      "", None, None)
            table.add("… until every one settled", label, restart["settled"], None, None, "s",
                      None, None)
        ok = v_status == 0
        table.add("verify --data", label, entries / v_secs if ok else None,
                  entries / r["raw_read"]["verify_seconds"], None, "entries/s", "≥100,000",
                  ok and entries / v_secs >= 100_000)
        table.add("verify peak RSS", label, v_hwm / 1024, r["raw_read"]["hwm_kib"] / 1024, None,
                  "MiB", "≤256", ok and v_hwm <= 256 * 1024)
        seconds, source_kib, fresh_kib = r["catch"]
        table.add("cold catch-up", label, seconds and entries / seconds, entries / r["copy"],
                  seconds and r["copy"] / seconds, "entries/s",
                  f"done in {CATCH_UP_TIMEOUT:,} s", seconds is not None)
        table.add("catch-up peak RSS, source / fresh node", label,
                  f"{source_kib / 1024:,.0f} / {fresh_kib / 1024:,.0f}", None, None, "MiB", None,
                  None)
        wire = _record_size(r["contexts"])
        table.add("disk per entry", label, r["disk"] / entries, r["raw_disk"] / entries,
                  r["disk"] / r["raw_disk"], "B", f"≤{1.5 * wire:.0f}",
                  r["disk"] / entries <= 1.5 * wire)
    table.notes.append(
        "baseline = raw SQLite (WAL, synchronous=FULL) holding the same records, one row each, "
        "committed in the batch sizes the node's group commit chose; start baseline = open the "
        "raw file and count its rows; verify baseline = read and sha256 every raw record; "
        "catch-up baseline = copy the raw rows into a new file (ours/baseline there: our rate "
        "over the copy rate). Nodes run with the default --memory-budget (256 MiB of loaded "
        "contexts, estimated).")
    table.notes.append(
        "the floor = the same appends through open_node with Ledger.append replaced by what "
        "the design cannot do without: entries built and hashed, one signature per commit "
        "over its heads' tree, a Yjs update per context, and one transaction writing a row "
        "per update, each context's head row and a crown; no index, Merkle trees or "
        "summaries (bench_scale._Floor). A goal above the floor's rate cannot be met by "
        "making the ledger's own work cheaper.")
    # On a shared machine our work (CPU) and the baseline's (mostly fsync) suffer differently
    # from other processes: say how busy the machine was.
    table.notes += [f"failed: {line}" for line in failed]
    table.notes.append("load average (1 min) at the start and after each spread: "
                       + ", ".join(f"{load:.1f}" for load in loads)
                       + f" on {os.cpu_count()} CPUs")
    tables.append(table)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
