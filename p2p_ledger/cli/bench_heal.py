"""Heal benchmarks (``p2p-ledger bench --only heal``): how long after a partition heals the
cluster agrees again, and what an unreachable peer costs while it is away.

* **simulator**: three nodes split {a} | {b, c} for 10 s to 1 h while both sides write, then
  healed; the simulated seconds from the heal until all roots agree, p50/p95/max over seeds.
  Beside it, the same runs with the redial delay of an unreachable peer capped at 30 s
  instead of ``probe_interval`` (the policy before the heal work) as the baseline.
* **real processes** (full run only): the same split on three ``p2p-ledger node`` processes
  through fault-injecting relays (``harness/heal.py``), one cluster per seed, all seeds at once.
* **dead peer**: the CPU a running node spends probing a seed that refuses every connection,
  against the same node without that seed, over the same wall time.
"""

from __future__ import annotations

import math
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from ..sim.runner import run_scenario
from .bench_common import Scale, Table, say

SIM_LENGTHS = (10.0, 20.0, 45.0, 60.0, 90.0, 600.0, 3600.0)
REAL_LENGTHS = (10.0, 20.0, 45.0, 60.0, 90.0)
BEFORE = {"probe_interval": 30.0, "dial_timeout": 1e9}  # the old policy: 30 s cap, no abandon


def heal_scenario(length: float, seed: int, config: dict[str, float] | None = None,
                  ) -> dict[str, Any]:
    """{a} | {b, c} for ``length`` seconds, writes on both sides just after the cut and just
    before the heal (so a 1 h cut costs no more to simulate than a 10 s one)."""
    start = 5.0
    burst = min(3.0, length / 4)
    writers = {"nodes": "all", "context": "shared", "rate_per_s": 2, "duration_s": burst}
    return {"nodes": ["a", "b", "c"], "topology": "full",
            "scenario": {"name": f"heal_{length:g}s", "seed": seed},
            "links": {"latency_ms": 15, "jitter_ms": 5}, "config": dict(config or {}),
            "steps": [{"at": start, "partition": [["a"], ["b", "c"]]},
                      {"at": start + 0.5, "writers": writers},
                      {"at": start + length - burst - 0.5, "writers": writers},
                      {"at": start + length, "heal": True}],
            "checks": {"converged_within_s": 120}}


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 (nearest rank) and max; an unconverged run counts as infinity."""
    ordered = sorted(values)
    rank = max(0, math.ceil(0.95 * len(ordered)) - 1)
    return statistics.median(ordered), ordered[rank], ordered[-1]


def sim_heals(length: float, seeds: int, config: dict[str, float] | None = None) -> list[float]:
    out = []
    for seed in range(1, seeds + 1):
        report = run_scenario(heal_scenario(length, seed, config))
        after = report.converged_after_s
        out.append(math.inf if after is None or not report.passed else after)
    return out


def bench_heal_sim(lengths: Sequence[float], seeds: int) -> Table:
    table = Table(f"Heal (simulator): {{a}} | {{b, c}}, writes on both sides, {seeds} seeds; "
                  "seconds from the heal until every root agrees",
                  ["partition", "p50", "p95", "max", "cap30 p50", "cap30 p95", "cap30 max",
                   "goal max", "met"])
    for length in lengths:
        say(f"heal: simulator, {length:g} s cut")
        ours = percentiles(sim_heals(length, seeds))
        before = percentiles(sim_heals(length, seeds, BEFORE))
        table.add(f"{length:g} s", *ours, *before, 2.0, ours[2] <= 2.0)
    table.notes.append("links 15 ms + up to 5 ms jitter; a cut drops SYNs (resent 1 s, 3 s "
                       "after the dial) and frames; goal: 2 s + transfer time")
    table.notes.append("cap30: the redial delay of an unreachable peer capped at 30 s and no "
                       "dial_timeout (the policy before), with the rest of today's code")
    return table


def bench_heal_real(lengths: Sequence[float], seeds: int) -> Table:
    from ..harness.heal import real_heal_times  # starts processes: only when asked for

    say(f"heal: real processes, cuts of {', '.join(f'{x:g}' for x in lengths)} s, "
        f"{seeds} clusters at once (~{sum(lengths) + 5 * len(lengths):.0f} s)")
    results: dict[int, list[float | None]] = {}

    async def one(seed: int) -> None:
        results[seed] = await real_heal_times(lengths, seed)

    async def all_seeds() -> None:
        async with trio.open_nursery() as nursery:
            for seed in range(1, seeds + 1):
                nursery.start_soon(one, seed)

    trio.run(all_seeds)
    table = Table(f"Heal (real processes): {{a}} | {{b, c}} through relays, {seeds} clusters; "
                  "wall seconds from the heal until every root agrees",
                  ["partition", "p50", "p95", "max", "goal max", "met"])
    for i, length in enumerate(lengths):
        heals = [math.inf if r[i] is None else float(r[i]) for r in results.values()]
        p50, p95, top = percentiles(heals)
        table.add(f"{length:g} s", p50, p95, top, 2.0, top <= 2.0)
    table.notes.append("each node a `p2p-ledger node --no-discovery` process; the relays refuse "
                       "connections during the cut; convergence polled every 10 ms over an open "
                       "API connection per node")
    return table


def _refused_url() -> str:
    """A loopback URL nothing listens on (bound, then closed: connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def bench_dead_peer(seconds: float) -> Table:
    from ..trio.runtime import open_node

    async def run(peers: Sequence[str]) -> tuple[float, int]:
        with tempfile.TemporaryDirectory(prefix="p2p-ledger-bench-") as tmp:
            async with open_node(Path(tmp), peers=peers) as node:
                cpu = time.process_time()
                await trio.sleep(seconds)
                cpu = time.process_time() - cpu
                failures = sum(p.failures for p in node.core.peers.values())
        return cpu, failures

    say(f"heal: dead peer, 2 x {seconds:g} s")
    idle_cpu, _ = trio.run(run, [])
    dead_cpu, dials = trio.run(run, [_refused_url()])
    table = Table(f"Heal: what a dead peer costs (a seed refusing every connection, {seconds:g} s)",
                  ["node", "dials", "dials/h", "CPU ms", "CPU %", "ms per dial"])
    table.add("no peers (baseline)", None, None, idle_cpu * 1000, 100 * idle_cpu / seconds, None)
    extra = dead_cpu - idle_cpu
    table.add("one dead seed", dials, round(dials * 3600 / seconds), dead_cpu * 1000,
              100 * dead_cpu / seconds, 1000 * extra / dials if dials and extra > 0 else None)
    table.notes.append("an unreachable peer is probed every probe_interval (1 s) at most; a "
                       "refused loopback connect is what a probe of a dead host costs")
    if extra <= 0:  # (a busy machine: the baseline's run took more CPU than this one)
        table.notes.append("ms per dial: none measured, the dead seed's run took no more CPU "
                           "than the baseline's")
    return table


def bench_heal(scale: Scale) -> list[Table]:
    if scale.quick:
        return [bench_heal_sim((10.0, 60.0), 3), bench_dead_peer(2.0)]
    return [bench_heal_sim(SIM_LENGTHS, 20), bench_heal_real(REAL_LENGTHS, 3),
            bench_dead_peer(20.0)]
