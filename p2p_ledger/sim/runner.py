"""Run a scenario on a simulated cluster and check what must hold; returns a ``Report``.

The run has two phases. First the timeline: steps run in order of ``at`` (a ``wait_converged``
step holds back the ones after it until the live nodes agree or its timeout passes), and
writers append at their rate. Then the final wait: from the *reference time* (the later of the
last heal/restart and the last acknowledged write) the cluster runs until every live node has
the same root, or until ``converged_within_s`` (else ``final_wait_s``) has passed.

Checks, on the state at the end, about the honest nodes (a ``byzantine`` step's node is
hostile: its own data, links and acknowledged entries are not checked):

* ``converged_within_s``: the live nodes reached one root within that many simulated seconds of
  the reference time.
* ``no_acknowledged_loss``: every acknowledged entry is in its origin's durable storage (rebuilt
  from disk, as after a crash) and, if the origin is up, in every live node's storage. After a
  ``tail_loss``, an entry another node still held must come back (to every live node, the
  origin included); one that only the lossy disk held is gone for good and counted apart
  (``disk_lost``), as no protocol can bring it back.
* ``durable_at_every_commit`` (with ``no_acknowledged_loss``): after every event that committed
  anything, the ledger rebuilt from each such node's storage (kept up to date commit by commit)
  holds every entry its live ledger holds, so a crash at any moment loses nothing acknowledged;
  and at the end every honest node's storage passes ``verify`` (content ids, the stored heads
  and rows authenticating every entry, summaries).
* ``same_order``: every live node lists every context in the same causal order.
* ``same_root``: every live node has the same node-level Merkle root.
* ``watchers_exactly_once``: each node's watcher (reading with cursors whenever entries arrive)
  saw no entry twice and, by the end, every entry its node holds (but a forked position's
  second branch, which a cursor already past it reports as a fork instead).
* ``no_stuck_timers``: every tick at a node's ``next_deadline()`` moved that deadline (else a
  real driver would spin at one instant).
* ``same_forks``: every live honest node reports the same forks, and each is by a byzantine
  member (an honest node never signs two entries for one position, not even after a tail loss).
* ``wait_converged`` (when the timeline has such steps) and ``no_errors`` (no exception escaped
  a node core or the simulator).
"""

from __future__ import annotations

import math
import random
import re
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.ledger import Ledger
from .cluster import Cluster
from .loop import NS, EventLoop, to_ns
from .scenario import CUT_STEPS, Scenario, Step, cut_groups, cuts_after, load_scenario


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


FINAL_SAMPLE_S = 0.1  # timeline sampling once every step ran (what converges, and how fast)


@dataclass
class Timeline:
    """What the plot draws: samples of each node's missing-entry count, crashes, partitions."""

    nodes: list[str]
    description: str = ""
    times: list[float] = field(default_factory=list)
    missing: dict[str, list[float]] = field(default_factory=dict)  # nan while down
    crashes: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # (start, stop, what is cut: describe_cuts' text), one per stretch with the same cuts
    partitions: list[tuple[float, float, str]] = field(default_factory=list)
    reference_s: float = 0.0
    converged_s: float | None = None


@dataclass
class Report:
    scenario: str
    seed: int
    source: str
    passed: bool
    checks: list[CheckResult]
    converged_after_s: float | None
    messages: int
    bytes: int
    acknowledged: int
    lost: int
    trace_digest: str
    wall_s: float
    sim_s: float
    events: int
    nodes: int
    by_type: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    # The same convergence time on the nodes' own timers (their clocks run in real time in real
    # mode, where converged_after_s is in scenario seconds: wall / time_scale). A time scale
    # shortens a partition on the nodes' clocks too, so a report states both.
    converged_after_node_s: float | None = None
    time_scale: float = 1.0
    disk_lost: int = 0  # acknowledged entries a tail loss took before any other node held them
    attacks: int = 0  # hostile bundles byzantine members sent
    timeline: Timeline | None = None
    trace: list[str] | None = None

    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "seed": self.seed, "source": self.source,
            "passed": self.passed, "checks": [asdict(c) for c in self.checks],
            "converged_after_s": self.converged_after_s,
            "converged_after_node_s": self.converged_after_node_s,
            "time_scale": self.time_scale, "messages": self.messages,
            "bytes": self.bytes, "acknowledged": self.acknowledged, "lost": self.lost,
            "trace_digest": self.trace_digest, "wall_s": round(self.wall_s, 4),
            "sim_s": round(self.sim_s, 3), "events": self.events, "nodes": self.nodes,
            "by_type": self.by_type, "error": self.error, "disk_lost": self.disk_lost,
            "attacks": self.attacks,
        }


class ScenarioRun:
    """One execution of a scenario; ``run()`` once, then read the report."""

    def __init__(
        self, scenario: Scenario, timeline: bool = False, keep_trace: bool = False,
        memory_budget: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.loop = EventLoop(keep_trace=keep_trace)
        self.cluster = Cluster(self.loop, self.rng, scenario.node_configs(), scenario.links,
                               scenario.net, memory_budget, scenario.byzantine)
        self.next_step = 0
        self.writers_active = 0
        self.last_recovery = 0  # ns: the last heal or restart
        self.last_write = 0  # ns: the last acknowledged write
        self.waiting: tuple[Step, int] | None = None  # a wait_converged step and its deadline
        self.wait_failures: list[str] = []
        self.timeline = Timeline(list(scenario.nodes), scenario.description) if timeline \
            else None
        self._sample_every = to_ns(_sample_interval(scenario))
        self._next_sample = 0
        self._crashed_at: dict[str, float] = {}
        self._cut_since: tuple[float, str] | None = None
        self.converged_at: int | None = None
        self.reference = 0
        self.disk_lost: set[str] = set()  # see Report.disk_lost (found by the checks)

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> Report:
        started = time.perf_counter()
        error = None
        try:
            for name in self.scenario.nodes:
                self.cluster.start(name)
            self._schedule_next_step()
            self._run(lambda: self.next_step >= len(self.scenario.steps)
                      and self.writers_active == 0 and self.waiting is None, None)
            self.reference = max(self.last_recovery, self.last_write)
            if self.timeline is not None:
                # The final catch-up is what a plot zooms into: sample it finely.
                last = self._next_sample - self._sample_every  # the latest sample's time
                self._sample_every = min(self._sample_every, to_ns(FINAL_SAMPLE_S))
                self._next_sample = max(self.loop.now, last + self._sample_every)
            limit = self.scenario.checks.converged_within_s or self.scenario.final_wait_s
            horizon = self.reference + to_ns(limit)
            if self.cluster.check_converged():
                self.converged_at = self.loop.now
            else:
                self._run(self._final_converged, horizon)
        except Exception as exc:  # a core or simulator bug: report it, never hide it
            frames = traceback.format_exception(exc)
            error = f"{type(exc).__name__}: {exc} at t={self.loop.now / NS:.6f}s\n" + \
                "".join(frames[-6:])
        wall = time.perf_counter() - started
        return self._report(wall, error)

    def _final_converged(self) -> bool:
        if self.cluster.check_converged():
            self.converged_at = self.loop.now
            return True
        return False

    def _run(self, done: Any, horizon: int | None) -> None:
        loop, cluster = self.loop, self.cluster
        sampling = self.timeline is not None
        while not done():
            when = loop.next_time()
            if when is None:
                return
            if horizon is not None and when > horizon:
                loop.now = max(loop.now, horizon)
                return
            while sampling and when >= self._next_sample:
                self._sample(self._next_sample)
                self._next_sample += self._sample_every
            loop.step()
            if self.waiting is not None and cluster.check_converged():
                step, _ = self.waiting
                self.waiting = None
                loop.record("waited", f"{step.index}")
                self._schedule_next_step()

    # ---- steps -------------------------------------------------------------------------------

    def _schedule_next_step(self) -> None:
        steps = self.scenario.steps
        if self.next_step < len(steps):
            step = steps[self.next_step]
            self.loop.at(max(to_ns(step.at), self.loop.now), self._do_step, step)

    def _do_step(self, step: Step) -> None:
        self.next_step += 1
        args = step.args
        net, cluster, now = self.cluster.net, self.cluster, self.loop.now
        self.loop.record("step", f"{step.index} {step.kind} {_canon(args)}")
        if step.kind == "append":
            count, size = args["count"], args["payload_bytes"]
            items = [(args["key"], _payload(f"s{step.index}.{i}", size)) for i in range(count)]
            if cluster.nodes[args["node"]].up:
                cluster.append(args["node"], args["context"], items)
                self.last_write = now
        elif step.kind == "writers":
            end = now + to_ns(args["duration_s"])
            for node in args["nodes"]:
                self.writers_active += 1
                self._schedule_write((step, node, end, 0))
        elif step.kind in CUT_STEPS:
            net.set_cuts(cuts_after(step.kind, args, net.cuts))
            if step.kind == "heal":
                self.last_recovery = now
        elif step.kind == "crash":
            for node in args["nodes"]:
                cluster.crash(node)
                self._crashed_at[node] = now / NS
        elif step.kind == "restart":
            for node in args["nodes"]:
                cluster.start(node)
                self._end_crash(node, now / NS)
            self.last_recovery = now
        elif step.kind == "link":
            net.set_props(args["pairs"], args["changes"])
        elif step.kind == "tail_loss":
            if cluster.nodes[args["node"]].up:
                self._crashed_at[args["node"]] = now / NS
            cluster.lose_tail(args["node"], args["commits"])
        elif step.kind == "byzantine":
            if cluster.attack(args["node"], args["attack"], args["context"], args["victim"],
                              args["to"], args["lamport"]):
                self.last_write = now  # what it sent may be accepted data: converge after it
        elif step.kind == "wait_converged":
            if not cluster.check_converged():
                deadline = now + to_ns(args["timeout_s"])
                self.waiting = (step, deadline)
                self.loop.at(deadline, self._wait_timeout, (step, deadline))
                self._note_cuts(now / NS)
                return
        self._note_cuts(now / NS)
        self._schedule_next_step()

    def _wait_timeout(self, arg: tuple[Step, int]) -> None:
        if self.waiting != arg:
            return
        step = arg[0]
        self.waiting = None
        self.loop.record("wait_timeout", f"{step.index}")
        self.wait_failures.append(f"{step.describe()} timed out after "
                                  f"{step.args['timeout_s']:g}s")
        self._schedule_next_step()

    def _schedule_write(self, arg: tuple[Step, str, int, int]) -> None:
        step, _, end, _ = arg
        when = self.loop.now + max(1, to_ns(self.rng.expovariate(step.args["rate_per_s"])))
        if when >= end:
            self.writers_active -= 1  # this agent is done
            return
        self.loop.at(when, self._write, arg)

    def _write(self, arg: tuple[Step, str, int, int]) -> None:
        step, node, end, k = arg
        if self.cluster.nodes[node].up:  # an agent cannot write to a node that is down
            args = step.args
            payload = _payload(f"w{step.index}.{node}.{k}", args["payload_bytes"])
            self.cluster.append(node, args["context"], [(args["key"], payload)])
            self.last_write = self.loop.now
        self._schedule_write((step, node, end, k + 1))

    # ---- timeline ----------------------------------------------------------------------------

    def _sample(self, when: int) -> None:
        timeline = self.timeline
        assert timeline is not None
        timeline.times.append(when / NS)
        for name, missing in self.cluster.missing().items():
            timeline.missing.setdefault(name, []).append(math.nan if missing is None
                                                         else float(missing))

    def _end_crash(self, node: str, now: float) -> None:
        start = self._crashed_at.pop(node, None)
        if self.timeline is not None and start is not None:
            self.timeline.crashes.setdefault(node, []).append((start, now))

    def _note_cuts(self, now: float) -> None:
        if self.timeline is None:
            return
        cuts = self.cluster.net.cuts
        label = describe_cuts(cuts, self.timeline.nodes) if cuts else ""
        if self._cut_since is not None and self._cut_since[1] != label:
            self.timeline.partitions.append((self._cut_since[0], now, self._cut_since[1]))
            self._cut_since = None
        if label and self._cut_since is None:
            self._cut_since = (now, label)

    # ---- checks ------------------------------------------------------------------------------

    def _report(self, wall: float, error: str | None) -> Report:
        scenario, cluster, net = self.scenario, self.cluster, self.cluster.net
        now_s = self.loop.now / NS
        checks: list[CheckResult] = []
        converged_after = None
        if self.converged_at is not None:
            converged_after = round(max(0, self.converged_at - self.reference) / NS, 6)
        lost: list[str] = []
        if error is None:
            checks, lost = self._checks(converged_after)
        checks.append(CheckResult("no_errors", error is None, error or ""))
        if self.timeline is not None:
            for node in list(self._crashed_at):
                self._end_crash(node, now_s)
            self._note_cuts(now_s)
            if self._cut_since is not None:
                self.timeline.partitions.append((self._cut_since[0], now_s, self._cut_since[1]))
            if self.timeline.times and self.timeline.times[-1] < now_s:
                self._sample(self.loop.now)
            self.timeline.reference_s = self.reference / NS
            self.timeline.converged_s = None if self.converged_at is None else \
                self.converged_at / NS
        return Report(
            scenario=scenario.name, seed=scenario.seed, source=scenario.source,
            passed=all(c.passed for c in checks), checks=checks,
            converged_after_s=converged_after, converged_after_node_s=converged_after,
            messages=net.messages, bytes=net.bytes,
            acknowledged=len(cluster.acked), lost=len(lost), trace_digest=self.loop.digest,
            wall_s=wall, sim_s=now_s, events=self.loop.events, nodes=len(cluster.nodes),
            by_type=dict(sorted(net.by_type.items())), error=error, timeline=self.timeline,
            trace=self.loop.trace, disk_lost=len(self.disk_lost),
            attacks=cluster.attacks_sent,
        )

    def _checks(self, converged_after: float | None) -> tuple[list[CheckResult], list[str]]:
        spec = self.scenario.checks
        cluster = self.cluster
        live = cluster.up_nodes()
        out: list[CheckResult] = []
        if spec.converged_within_s is not None:
            if converged_after is None:
                roots = {n.name: n.ledger.root().hex()[:12] for n in live if n.ledger}
                out.append(CheckResult(
                    "converged_within_s", False,
                    f"not converged {spec.converged_within_s:g}s after t="
                    f"{self.reference / NS:g}s; roots: {_group_roots(roots)}"))
            else:
                ok = converged_after <= spec.converged_within_s
                out.append(CheckResult(
                    "converged_within_s", ok,
                    f"converged {converged_after:.3f}s after t={self.reference / NS:g}s "
                    f"(limit {spec.converged_within_s:g}s)"))
        lost: list[str] = []
        disk_lost = self.disk_lost
        if spec.no_acknowledged_loss:
            durable = {name: _durable_ids(node.storage, name) for name, node in
                       cluster.nodes.items()}
            live_names = [n.name for n in live]
            for eid, (origin, context) in cluster.acked.items():
                if origin in cluster.byzantine:
                    continue
                if eid in cluster.tail_lost and eid not in durable[origin]:
                    # a disk lost it: it must come back if another node still had it then
                    if not any(eid in ids for ids in durable.values()):
                        if cluster.tail_lost[eid]:
                            lost.append(f"{context}/{eid[:16]} (from {origin}, lost by its "
                                        "disk) is gone from every node")
                        else:
                            disk_lost.add(eid)
                    elif cluster.nodes[origin].up:
                        lost.append(f"{context}/{eid[:16]} (from {origin}) never came back "
                                    "after its disk lost it")
                elif eid not in durable[origin]:
                    lost.append(f"{context}/{eid[:16]} (from {origin}) is gone from its origin")
                elif cluster.nodes[origin].up:
                    lacking = [n for n in live_names if eid not in durable[n]]
                    if lacking:
                        lost.append(f"{context}/{eid[:16]} (from {origin}) is missing on "
                                    f"{', '.join(lacking)}")
            gone = cluster.not_durable
            # (rows carry no heads: a store whose heads went wrong would still rebuild)
            unsound = [f"{name}: {problem}" for name, node in cluster.nodes.items()
                       if name not in cluster.byzantine
                       for problem in Ledger.open(node.storage, name, "check").verify()]
            out.append(CheckResult(
                "durable_at_every_commit", not gone and not unsound,
                f"{len(gone)} times an entry held live or sent was missing from the ledger "
                f"rebuilt from storage; first: {'; '.join(gone[:3])}" if gone else
                f"{len(unsound)} problems in what verify finds in the stores; first: "
                f"{'; '.join(unsound[:3])}" if unsound else
                f"rebuilt ledger checked after {cluster.commits_checked} commits, every "
                f"store verified"))
            out.append(CheckResult(
                "no_acknowledged_loss", not lost,
                f"{len(cluster.acked)} acknowledged, {len(lost)} lost"
                + (f" ({len(disk_lost)} of them only on a disk that lost them: gone for good)"
                   if disk_lost else "")
                + (": " + "; ".join(lost[:3]) if lost else "")))
        if spec.same_order:
            out.append(_same_order(live))
        if spec.same_root:
            roots = {n.name: n.ledger.root().hex()[:12] for n in live if n.ledger}
            ok = len(set(roots.values())) <= 1
            out.append(CheckResult("same_root", ok, f"{len(live)} live nodes" if ok
                                   else f"roots: {_group_roots(roots)}"))
        if spec.watchers_exactly_once:
            # (a watcher may have delivered an entry whose last copy a disk lost since: a
            # hostile one too, which no acknowledgement tracks, fuzz-2062312898; disk_lost
            # is the acknowledged part of that set)
            out.append(_watchers(live, cluster.last_copy_lost))
        if spec.same_forks:
            out.append(_same_forks(live, cluster.names, cluster.byzantine))
        stuck = cluster.stuck_timers
        out.append(CheckResult("no_stuck_timers", not stuck,
                               f"{len(stuck)} ticks at a deadline the tick did not move, first: "
                               f"{stuck[0]}" if stuck else ""))
        if self.scenario.steps and any(s.kind == "wait_converged" for s in self.scenario.steps):
            out.append(CheckResult("wait_converged", not self.wait_failures,
                                   "; ".join(self.wait_failures)))
        return out, lost


def run_scenario(
    source: str | Path | Mapping[str, Any] | Scenario, seed: int | None = None,
    timeline: bool = False, keep_trace: bool = False,
) -> Report:
    """Load (unless given a Scenario), run and check one scenario. Raises ScenarioError only."""
    if isinstance(source, Scenario):
        scenario = source
        if seed is not None:
            scenario.seed = seed
    else:
        scenario = load_scenario(source, seed)
    return ScenarioRun(scenario, timeline=timeline, keep_trace=keep_trace).run()


# ---- helpers ---------------------------------------------------------------------------------

def _payload(tag: str, size: int) -> bytes:
    raw = tag.encode()
    return raw + b"." * max(0, size - len(raw))


def _canon(args: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(args.items()))


def _sample_interval(scenario: Scenario) -> float:
    end = max([s.at + (s.args.get("duration_s", 0) if s.kind == "writers" else 0)
               for s in scenario.steps] + [1.0])
    return max(0.01, (end + 30.0) / 600)


def describe_cuts(cuts: set[tuple[str, str]], nodes: Sequence[str]) -> str:
    """What a set of directed cuts does, for people: the groups a partition made
    (``a b c | d e f``), then the cuts inside groups (``a ⇄ b``, ``c → a``,
    ``n1–n12 → n13–n25``)."""
    order = {name: i for i, name in enumerate(nodes)}
    groups = cut_groups(nodes, cuts)
    where = {name: k for k, group in enumerate(groups) for name in group}
    parts = []
    if len(groups) > 1:
        parts.append(" | ".join(_names(g) for g in groups))
    inside = {(a, b) for a, b in cuts if where[a] == where[b]}
    if inside:
        both = {(a, b) for a, b in inside if (b, a) in inside and order[a] < order[b]}
        one_way = {(a, b) for a, b in inside if (b, a) not in inside}
        sources = sorted({a for a, _ in one_way}, key=order.__getitem__)
        targets = sorted({b for _, b in one_way}, key=order.__getitem__)
        if len(both) + len(one_way) <= 3:
            parts.append(", ".join([f"{a} ⇄ {b}" for a, b in sorted(both)]
                                   + [f"{a} → {b}" for a, b in sorted(one_way)]))
        elif not both and len(one_way) == len(sources) * len(targets):
            parts.append(f"{_names(sources)} → {_names(targets)}")  # every source to every target
        else:
            parts.append(f"{len(both) + len(one_way)} links cut")
    return "; ".join(parts)


def _names(names: Sequence[str]) -> str:
    """``a b c``; runs of numbered names as ranges (``n1–n5 n16–n25``); long lists shortened
    (``n1 n3 n5 … (13 nodes)``)."""
    runs: list[list[str]] = []
    last: tuple[str, int] | None = None
    for name in names:
        m = re.fullmatch(r"(.*?)(\d+)", name)
        key = (m.group(1), int(m.group(2))) if m else None
        if runs and key and last and key == (last[0], last[1] + 1):
            runs[-1].append(name)
        else:
            runs.append([name])
        last = key
    tokens = [r[0] if len(r) == 1 else f"{r[0]}–{r[-1]}" if len(r) > 2 else " ".join(r)
              for r in runs]
    if len(" ".join(tokens).split()) <= 5:
        return " ".join(tokens)
    return f"{' '.join(tokens[:3])} … ({len(names)} nodes)"


def _group_roots(roots: Mapping[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for name, root in roots.items():
        groups.setdefault(root, []).append(name)
    return "; ".join(f"{root}: {', '.join(names[:6])}{'...' if len(names) > 6 else ''}"
                     for root, names in groups.items())


def _durable_ids(storage: Any, name: str) -> set[str]:
    """Entry ids a node would have after a crash right now: rebuilt from its storage."""
    ledger = Ledger.open(storage, name, "check")
    return {eid for ctx in ledger.contexts.values() for eid in ctx.by_id}


def _same_order(live: list[Any]) -> CheckResult:
    if len(live) < 2:
        return CheckResult("same_order", True, "fewer than two live nodes")
    contexts = sorted({c for n in live for c in n.ledger.contexts})
    for context in contexts:
        first = None
        for node in live:
            ctx = node.ledger.contexts.get(context)
            ids = [e.id for e in ctx.ordered] if ctx else []
            if first is None:
                first = (node.name, ids)
                continue
            if ids != first[1]:
                pos = next((i for i, (a, b) in enumerate(zip(ids, first[1], strict=False))
                            if a != b), min(len(ids), len(first[1])))
                return CheckResult("same_order", False,
                                   f"context {context}: {node.name} ({len(ids)} entries) and "
                                   f"{first[0]} ({len(first[1])}) differ at position {pos}")
    return CheckResult("same_order", True, f"{len(contexts)} contexts on {len(live)} nodes")


def _same_forks(live: list[Any], names: Mapping[str, str], hostile: set[str]) -> CheckResult:
    reports = {node.name: node.ledger.forks() for node in live}
    first = next(iter(reports.values()), [])
    differ = [name for name, forks in reports.items() if forks != first]
    if differ:
        return CheckResult("same_forks", False, "; ".join(
            f"{name}: {len(forks)} forks" for name, forks in reports.items()))
    honest = [f for f in first if names.get(str(f["writer"]).split(".")[0]) not in hostile]
    if honest:
        fork = honest[0]
        return CheckResult("same_forks", False, f"{len(honest)} forks by honest writers, first: "
                           f"{fork['context']} {fork['writer']} seq {fork['seq']}")
    return CheckResult("same_forks", True, f"{len(first)} forks, the same on {len(live)} nodes")


def _fork_ids(ledger: Any) -> set[str]:
    return {str(i) for fork in ledger.forks() for i in fork["ids"]}


def _watchers(live: list[Any], gone: set[str]) -> CheckResult:
    problems: list[str] = []
    total = 0
    for node in live:
        watcher = node.watcher
        problems += watcher.duplicates
        forked = _fork_ids(node.ledger)
        for context, ctx in node.ledger.contexts.items():
            seen = watcher.seen.get(context, set())
            total += len(seen)
            missed = len(ctx.by_id.keys() - seen - forked)
            if missed:
                problems.append(f"{node.name}'s watcher missed {missed} of {context}")
            extra = len(seen - ctx.by_id.keys() - gone)
            if extra:
                problems.append(f"{node.name}'s watcher saw {extra} entries of {context} "
                                "that the node does not hold")
    return CheckResult("watchers_exactly_once", not problems,
                       "; ".join(problems[:4]) if problems else f"{total} deliveries, no repeats")
