"""Bulk catch-up across processes: a fresh ``p2p-ledger node`` fetching a full one's data, next to
a raw websocket copy of the same bytes between two processes in the same run.

The in-process rows of "Sync (d)" run both ends on one core; here each end is its own process
(as Hypercore's reader and writer were when it moved 1,000 × 100 KB at 120 MB/s on this kind of
machine), so the figure is what two nodes on one host reach. Each row also gives each process's
CPU seconds for the transfer: on a shared machine wall time follows the load, CPU time follows
the code.

Ours: ``p2p-ledger node`` with SQLite (synchronous=FULL) dialing a full node, until it holds every
entry (its status polled). Baseline: a process sending the same number of bytes in 1 MiB
websocket messages to a reader process (no parsing, no disk): what the transport alone does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bench_common import Sample, Scale, Table, discard, met, ratio, say, tempdir
from .bench_sync import context_names, fill, new_ledger, rows_of, write_store

_RAW_MESSAGE = 1 << 20
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _ready_line(proc: subprocess.Popen[bytes], what: str) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if not line or line[0] != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} did not start")
    return line


def _node(data: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "p2p_ledger", "node", "--data", str(data),
                             "--listen", "127.0.0.1:0", "--no-discovery", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return proc, _ready_line(proc, f"node on {data}")[1]


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=60)


def node_catchup(source: Path, target: Path, entries: int,
                 timeout: float) -> tuple[float, float, float]:
    """Seconds from a fresh node process's ready line (it dials the node serving ``source``
    as it starts) until it holds all ``entries``, and the CPU seconds the sender and the
    receiver spent meanwhile."""
    import trio

    from ..trio.client import Client

    src, url = _node(source)
    try:
        dst, dst_url = _node(target, "--peer", url)
        try:
            t0 = time.perf_counter()
            sender0, receiver0 = _cpu_seconds(src.pid), _cpu_seconds(dst.pid)

            async def wait() -> float:
                async with Client.connect(dst_url) as client:
                    while time.perf_counter() - t0 < timeout:
                        status = await client.status()
                        if int(status.get("entries", 0)) >= entries:  # type: ignore[call-overload]
                            return time.perf_counter() - t0
                        await trio.sleep(0.02)  # a bounded poll of another process
                raise RuntimeError(f"catch-up did not finish within {timeout:.0f}s")

            seconds = trio.run(wait)
            return (seconds, _cpu_seconds(src.pid) - sender0,
                    _cpu_seconds(dst.pid) - receiver0)
        finally:
            _stop(dst)
    finally:
        _stop(src)


def raw_copy(nbytes: int, timeout: float) -> tuple[float, float, float]:
    """The baseline: seconds to move ``nbytes`` from one process to another over a loopback
    websocket (1 MiB messages, compression off), and the two processes' CPU seconds."""
    import trio

    from ..trio.transport import dial

    server = subprocess.Popen([sys.executable, "-m", "p2p_ledger.cli.bench_bulk", "serve",
                               str(nbytes)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = int(_ready_line(server, "raw websocket sender")[1])
        sender0 = _cpu_seconds(server.pid)
        cpu0 = time.process_time()

        async def read() -> float:
            t0 = time.perf_counter()
            got = 0
            with trio.fail_after(timeout):
                async with dial(f"ws://127.0.0.1:{port}", api=True) as ws:
                    while got < nbytes:
                        got += len(await ws.recv())
            return time.perf_counter() - t0

        seconds = trio.run(read)
        return seconds, _cpu_seconds(server.pid) - sender0, time.process_time() - cpu0
    finally:
        _stop(server)


async def _serve(nbytes: int) -> None:
    import functools

    import trio

    from ..trio.transport import open_listeners, port_of, serve_websockets

    message = os.urandom(_RAW_MESSAGE)
    done = trio.Event()

    async def handler(ws: Any) -> None:
        sent = 0
        while sent < nbytes:
            part = message[: min(_RAW_MESSAGE, nbytes - sent)]
            await ws.send(part)
            sent += len(part)
        done.set()
        await trio.sleep(60)  # the reader closes

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(
            serve_websockets, handler, await open_listeners("127.0.0.1", 0)))
        print(f"ready {port_of(server)}", flush=True)
        await done.wait()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()


def bench_bulk(scale: Scale) -> Table:
    table = Table(
        "Sync (e): bulk catch-up between two processes vs a raw websocket copy (same run)",
        ["case", "seconds", "entries/s", "MB/s", "raw copy MB/s", "ours/raw", "sender CPU s",
         "receiver CPU s", "overlap", "raw CPU s (send/recv)", "goal", "met"])
    cases = [
        (scale.catchup_small, scale.catchup_small_contexts, 100, "≥50k entries/s"),
        (scale.catchup_large, scale.catchup_large_contexts, 100 * 1024, "≥120 MB/s"),
    ]
    loads: list[float] = []
    for total, contexts, size, goal in cases:
        names = context_names(contexts)
        src = new_ledger()
        fill((src,), names, total // contexts, size, seed=17)
        n = src.entry_count()
        data = sum(len(e.record) for ctx in src.contexts.values() for e in ctx.ordered)
        label = f"{n:,} × {size:,} B in {contexts} contexts"
        say(f"sync (e): {label}, two processes")
        ours, base = Sample(), Sample()
        cpu: list[tuple[float, float]] = []
        raw_cpu: list[tuple[float, float]] = []
        loads.append(os.getloadavg()[0])
        with tempdir("bulk") as d:
            write_store(d / "full", rows_of(src))
            discard(src)
            for i in range(scale.repeats):
                seconds, sender, receiver = node_catchup(d / "full", d / f"fresh{i}", n, 600)
                ours.add(seconds)
                cpu.append((sender, receiver))
                raw_seconds, raw_sender, raw_receiver = raw_copy(data, 600)
                base.add(raw_seconds)
                raw_cpu.append((raw_sender, raw_receiver))
        rate, raw_rate = data / ours.median / 1e6, data / base.median / 1e6
        reached = n / ours.median >= 50_000 if size < 1000 else rate >= 120
        s_cpu = Sample([c[0] for c in cpu]).median
        r_cpu = Sample([c[1] for c in cpu]).median
        overlap = Sample([(s + r) / t for (s, r), t in zip(cpu, ours.values, strict=True)]).median
        raw_s = Sample([c[0] for c in raw_cpu]).median
        raw_r = Sample([c[1] for c in raw_cpu]).median
        table.add(label, ours.median, n / ours.median, rate, raw_rate, ratio(rate, raw_rate),
                  s_cpu, r_cpu, overlap, f"{raw_s:.2f}/{raw_r:.2f}", goal, met(scale, reached))
    table.notes += [
        "seconds: from the fresh node's ready line (it dials the full one as it starts; SQLite "
        "synchronous=FULL on both) until it holds every entry. MB/s counts entry records (id + "
        "encoding).",
        "raw copy: the same number of bytes, one process sending 1 MiB websocket messages to "
        "another (compression off, no parsing, no disk). CPU s: per process during the "
        "transfer (medians); on a loaded machine compare these rather than wall time.",
        "overlap: both processes' CPU seconds over the wall seconds (median): 1.0 when one "
        "waits while the other works, up to 2.0 when both work all the time (on an idle "
        "machine; a loaded one lowers it).",
        "load average (1 min) before each case: "
        + ", ".join(f"{load:.1f}" for load in loads) + f" on {os.cpu_count()} CPUs",
    ]
    return table


def child_main(argv: Sequence[str]) -> int:
    import trio

    if len(argv) != 2 or argv[0] != "serve":
        raise SystemExit("usage: python -m p2p_ledger.cli.bench_bulk serve NBYTES")
    trio.run(_serve, int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
