"""The fault fuzzer (VOPR-style): random schedules of writes and faults on small clusters.

Each run draws a scenario from its own seed: a few nodes on a random topology, link quality and
node timer settings, then a timeline of appends, writer bursts, partitions, one-way cuts, heals,
crashes, restarts, link changes and tail losses (a crash whose disk forgets its last commits);
in about one run in three (of three nodes or more) one node is a byzantine member that attacks
the others (``byzantine.ATTACKS``: forged origins, squatted Yjs positions, poisoned Lamport
times, equivocation). The schedule always ends with a heal and a restart of every
node still down, so the invariants must hold afterwards for the honest nodes: the live ones
converge, no
acknowledged entry is lost, every node orders every context the same way, roots agree, and each
watcher saw every entry once, and forks (only a byzantine member's) are reported alike. A
failing run's scenario is written as a TOML file that
reproduces it byte for byte (``p2p-ledger scenario run FILE``), and its seed is printed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .byzantine import ATTACKS, LAMPORTS
from .runner import Report, run_scenario
from .scenario import to_toml

CONTEXTS = ("shared", "notes", "tasks/1")
# Node timer settings to explore (each keeps idle_timeout well above the gossip interval).
CONFIGS: tuple[dict[str, float], ...] = (
    {}, {}, {},
    {"gossip_interval": 0.3, "idle_timeout": 3.0, "push_gossip_delay": 0.01},
    {"gossip_interval": 3.0, "idle_timeout": 20.0, "drop_after": 15.0},
    {"backoff_base": 0.05, "backoff_max": 5.0, "handshake_timeout": 2.0},
)


def random_scenario(seed: int, max_nodes: int = 4, duration_s: float = 40.0) -> dict[str, Any]:
    """A random scenario dict (valid for ``load_scenario``) drawn from ``seed`` alone."""
    r = random.Random(seed)
    count = r.randint(2, max(2, max_nodes))
    names = [f"n{i}" for i in range(1, count + 1)]
    links = {
        "latency_ms": r.choice([1, 5, 20, 50]),
        "jitter_ms": r.choice([0, 2, 10]),
        "loss": r.choice([0.0, 0.0, 0.01, 0.05]),
        "duplicate": r.choice([0.0, 0.0, 0.02]),
        "reorder": r.choice([0.0, 0.0, 0.05]),
        # Mostly what TCP gives a node; one run in four lets frames be lost, duplicated and
        # reordered inside a connection (a misbehaving path or peer), which must cost no data.
        "transport": r.choice(["tcp", "tcp", "tcp", "datagram"]),
    }
    steps: list[dict[str, Any]] = []
    down: list[str] = []
    at = 0.0
    hostile = r.choice(names) if count >= 3 and r.random() < 0.35 else None
    honest = [n for n in names if n != hostile]
    while True:
        at = round(at + r.expovariate(1 / 3.0), 3)
        if at >= duration_s:
            break
        up = [n for n in names if n not in down]
        kind = r.choices(
            ["append", "writers", "partition", "cut", "heal", "crash", "restart", "link",
             "tail_loss", "byzantine"],
            weights=[30, 8, 10, 8, 12, 8 if len(up) > 1 else 0, 12 if down else 0, 5,
                     3 if len(up) > 1 else 0, 10 if hostile in up else 0])[0]
        step: dict[str, Any] = {"at": at}
        if kind == "append" and up:
            step["append"] = {"node": r.choice(up), "context": r.choice(CONTEXTS),
                              "count": r.choice([1, 1, 2, 5, 20])}
        elif kind == "writers":
            step["writers"] = {"nodes": r.sample(names, r.randint(1, count)),
                               "context": r.choice(CONTEXTS),
                               "rate_per_s": r.choice([0.5, 2.0, 5.0]),
                               "duration_s": r.choice([2.0, 5.0, 10.0])}
        elif kind == "partition":
            shuffled = r.sample(names, count)
            cut = r.randint(1, count - 1)
            groups = [shuffled[:cut], shuffled[cut:]]
            if count > 2 and r.random() < 0.3:
                third = r.randint(1, len(groups[1]))
                groups = [groups[0], groups[1][:third], groups[1][third:]]
            step["partition"] = [g for g in groups if g]
        elif kind == "cut":
            src, dst = r.sample(names, 2)
            step["cut"] = {"from": src, "to": dst, "both": r.random() < 0.3}
        elif kind == "heal":
            step["heal"] = True
        elif kind == "crash":
            victim = r.choice(up)
            down.append(victim)
            step["crash"] = victim
        elif kind == "restart":
            back = r.choice(down)
            down.remove(back)
            step["restart"] = back
        elif kind == "tail_loss":
            victim = r.choice(honest)
            if victim not in down:
                down.append(victim)
            step["tail_loss"] = {"node": victim, "commits": r.choice([1, 2, 5, 20, 1000])}
        elif kind == "byzantine" and hostile is not None:
            attack = r.choice(ATTACKS)
            spec: dict[str, Any] = {"node": hostile, "attack": attack,
                                    "context": r.choice(CONTEXTS), "victim": r.choice(honest)}
            if r.random() < 0.5:
                spec["to"] = r.sample(honest, r.randint(1, len(honest)))
            if attack == "lamport":
                spec["lamport"] = r.choice(sorted(LAMPORTS))
            step["byzantine"] = spec
        elif kind == "link":
            change: dict[str, Any] = {r.choice(["loss", "duplicate", "reorder"]):
                                      r.choice([0.0, 0.02, 0.1]),
                                      "latency_ms": r.choice([1, 10, 50, 200])}
            if r.random() < 0.5:
                change["between"] = r.sample(names, 2)
            step["link"] = change
        else:
            continue
        steps.append(step)
    steps.append({"at": duration_s, "heal": True})
    steps.append({"at": duration_s, "link": {"loss": 0.0, "duplicate": 0.0, "reorder": 0.0}})
    if down:
        steps.append({"at": duration_s, "restart": sorted(down)})
    config = r.choice(CONFIGS)
    return {
        "nodes": names,
        "topology": r.choice(["full", "chain", "ring", "star"]),
        "scenario": {"name": f"fuzz-{seed}", "seed": seed,
                     "description": f"generated by the fuzzer from seed {seed}"},
        "links": links,
        **({"config": dict(config)} if config else {}),
        "steps": steps,
        "checks": {"converged_within_s": 90.0, "no_acknowledged_loss": True, "same_order": True,
                   "same_root": True, "watchers_exactly_once": True},
    }


@dataclass
class FuzzResult:
    runs: int
    failures: list[tuple[int, Report, Path | None]]
    wall_s: float

    @property
    def runs_per_minute(self) -> float:
        return self.runs * 60 / self.wall_s if self.wall_s else 0.0


def run_seeds(base_seed: int, runs: int) -> Iterator[int]:
    """The run seeds of a fuzz session: a pure function of its base seed."""
    r = random.Random(base_seed)
    for _ in range(runs):
        yield r.getrandbits(32)


def fuzz(
    runs: int, seed: int = 0, max_nodes: int = 4, duration_s: float = 40.0,
    out_dir: Path | None = None,
    on_run: Callable[[int, int, Report], None] | None = None,
    workers: int = 1,
) -> FuzzResult:
    """Run ``runs`` random scenarios; write each failing one to ``out_dir`` (if given).

    With ``workers`` > 1 the runs are spread over that many processes; every run still depends
    on its own seed alone, and ``on_run`` hears the runs in seed order.
    """
    failures: list[tuple[int, Report, Path | None]] = []
    started = time.perf_counter()
    seeds = list(run_seeds(seed, runs))
    jobs = [(run_seed, max_nodes, duration_s) for run_seed in seeds]
    if workers > 1:
        # why: one simulated run is pure CPU (~0.2 s at 7 nodes / 120 s), so a second core
        # halves a fuzz session; chunks keep the per-run pickling overhead small.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            outcomes = pool.map(_run_one, jobs, chunksize=max(1, min(16, runs // (4 * workers))))
            _collect(outcomes, out_dir, on_run, failures)
    else:
        _collect(map(_run_one, jobs), out_dir, on_run, failures)
    return FuzzResult(runs, failures, time.perf_counter() - started)


def _run_one(job: tuple[int, int, float]) -> tuple[int, dict[str, Any], Report]:
    run_seed, max_nodes, duration_s = job
    data = random_scenario(run_seed, max_nodes, duration_s)
    return run_seed, data, run_scenario(data)


def _collect(
    outcomes: Iterable[tuple[int, dict[str, Any], Report]], out_dir: Path | None,
    on_run: Callable[[int, int, Report], None] | None,
    failures: list[tuple[int, Report, Path | None]],
) -> None:
    for i, (run_seed, data, report) in enumerate(outcomes):
        if not report.passed:
            path = None
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                path = out_dir / f"fuzz-{run_seed}.toml"
                path.write_text(f"# {', '.join(report.failed_checks())} failed; reproduce with "
                                f"`p2p-ledger scenario run {path.name}`\n" + to_toml(data))
            failures.append((run_seed, report, path))
        if on_run is not None:
            on_run(i, run_seed, report)
