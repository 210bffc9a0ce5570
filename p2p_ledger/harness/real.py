"""Real mode: run a scenario file against real ``p2p-ledger node`` processes.

``RealRun`` is the runner: processes, steps, writers, checks and the report. Where the processes
live and how faults reach their links is its ``Network``: ``RelayNetwork`` here (loopback, one
relay per link, described below; ``scenario run --real``) or ``netns.NetnsNetwork`` (one
network namespace per node, faults made by the kernel; ``scenario run --netns``).

Each scenario node is ``python -m p2p_ledger node --no-discovery`` on a temporary data
directory, listening on ``127.0.0.1:0``. Every directed link a→b of the scenario's topology (a
seeds b) goes through its own ``Relay`` (``relay.py``): a's ``--peer`` is the relay's URL, so
cuts, delays and breaks apply to exactly that link, and with discovery off no node can learn a
direct address that bypasses the relays. The runner talks to the nodes' API directly (never
through a relay). The price: a scenario that needs peer exchange cannot pass here — in
``star_hub_loss`` the spokes only meet through addresses the hub gives them, so with the hub
down its ``wait_converged`` times out (measured: every other check passes, at time scale 0.1
and 1); it passes with ``--netns``, where discovery is on and the kernel makes the faults.

Steps map to:

* ``append`` / ``writers`` — ``api.Client`` appends; an id counts as acknowledged once the
  call returned. Writers skip nodes that are down (an agent cannot write to them).
* ``partition`` / ``cut`` / ``heal`` — the set of cut directed links, as in the simulator; a
  relay whose link is cut closes its connections and refuses new ones. A TCP connection carries
  both directions, so a one-way cut a→b only stops the connections a dials to b: if b also
  seeds a, b's own connection still links them (a partition cuts both directions).
* ``crash`` — SIGKILL; ``restart`` — the same data directory on a new port; the relays into
  that node are pointed at the new port.
* ``link`` — ``latency_ms`` becomes the relay's per-chunk delay, ``loss`` its per-chunk
  probability of breaking the connection (see ``relay.py``); ``jitter_ms``, ``duplicate`` and
  ``reorder`` have no TCP equivalent and are ignored. ``[links]`` sets the starting values.
* ``wait_converged`` — later steps wait until every live node reports the same root, or until
  ``timeout_s`` wall seconds passed.

Time: step times (``at``, ``every_s``) and writers' durations are multiplied by ``time_scale``
(default 0.1: a 70 s scenario runs in about 7 s) and writers' rates divided by it, so a run
writes as many entries as the simulated one. The nodes' own timers (gossip every 0.2 s, redial
delays, timeouts) run in real time, so a scaled-down partition is also short on the nodes'
clocks: a heal that is slow after a long cut can look fast at a small scale. The report
therefore states convergence twice: ``converged_after_s`` in scenario seconds (wall seconds /
``time_scale``) and ``converged_after_node_s`` on the nodes' clocks (wall seconds), and
``converged_within_s`` must hold for both. A ``wait_converged`` ``timeout_s`` is in wall
seconds. Without ``converged_within_s`` the final wait is ``final_wait_s`` (wall) capped at
``FINAL_WAIT_CAP``. ``[config]`` is ignored.

Checks (the simulator's names): ``converged_within_s`` (all live nodes report one root, measured
from the later of the last heal/restart and the last acknowledged write), ``no_acknowledged_loss``
(every acknowledged id is readable via ``Client.get`` on every live node, when its origin is
live; ids from nodes left down are only counted), ``same_order``, ``same_root``,
``wait_converged`` and ``no_errors``. ``watchers_exactly_once`` is not run (no watcher processes)
and reports so. ``messages``/``bytes`` are the chunks and bytes the relays forwarded;
``trace_digest`` is the sha256 of the executed step log (timing in a real run is not
reproducible, the step sequence is).
"""

from __future__ import annotations

import hashlib
import math
import random
import shutil
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from ..core.entry import Entry
from ..core.errors import LedgerError
from ..sim.runner import CheckResult, Report
from ..sim.scenario import CUT_STEPS, Scenario, ScenarioError, Step, cuts_after, load_scenario
from ..trio.client import Client
from .process import NodeFailedToStart, NodeProcess
from .relay import Relay

DEFAULT_TIME_SCALE = 0.1
GOSSIP_INTERVAL = 0.2
REQUEST_TIMEOUT = 5.0
POLL = 0.05
FINAL_WAIT_CAP = 60.0
ARGS = ("--gossip-interval", str(GOSSIP_INTERVAL))  # the network adds the rest


class RealRunError(Exception):
    """A node process misbehaved (did not start, died on its own)."""


@dataclass
class RealNode(NodeProcess):
    up: bool = False  # what the scenario says; a process dying on its own is an error
    network: Network | None = None  # where it lives: it says where to listen and whom to dial

    def command(self, listen: str) -> list[str]:
        assert self.network is not None
        return self.network.node_command(self.name, self.base_command())


class Network(Protocol):
    """Where a run's node processes live and how the scenario's faults reach their links: the
    part of a real run that differs between loopback relays (``RelayNetwork``) and hosts in
    network namespaces (``netns.NetnsNetwork``). Every method but ``start`` is synchronous."""

    mode: str  # the report's "mode"

    async def start(self, nursery: trio.Nursery) -> None:
        """Set up (relays, a test bed); anything long-lived runs in ``nursery``."""

    def node_command(self, name: str, argv: list[str]) -> list[str]:
        """The full command line of node ``name``: ``argv`` (``p2p-ledger node --data ...``)
        plus where it listens and whom it dials, wrapped as the network needs."""

    def started(self, node: RealNode) -> None:
        """``node`` printed its ready line (``node.url`` is set)."""

    def stopped(self, node: RealNode) -> None:
        """``node`` was killed."""

    def set_cuts(self, cuts: set[tuple[str, str]]) -> None:
        """Exactly these directed links are cut from now on."""

    def set_links(self, pairs: list[tuple[str, str]] | None, changes: Mapping[str, float]) -> None:
        """A ``link`` step (``pairs`` None: every link)."""

    def connect(self, node: RealNode) -> AbstractAsyncContextManager[Client]:
        """An API client of ``node``, never through a fault."""

    def traffic(self) -> tuple[int, int, dict[str, int]]:
        """(messages, bytes, other counters) for the report."""

    def close(self) -> None:
        """Tear down; called whatever happened, after every node was killed."""


@dataclass
class _LinkState:
    latency_ms: float = 0.0
    loss: float = 0.0


class RelayNetwork:
    """Loopback: one fault-injecting relay per directed link of the topology (see the module
    doc); nodes run with ``--no-discovery`` so no direct address bypasses the relays."""

    mode = "real"

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.scenario = scenario
        self.relays: dict[tuple[str, str], Relay] = {}
        for a in scenario.nodes:
            for b in scenario.seeds[a]:
                self.relays[(a, b)] = Relay(f"{a}>{b}", seed=rng.getrandbits(32))
        self.link_state = {pair: _LinkState(scenario.links.latency_ms, scenario.links.loss)
                           for pair in self.relays}

    async def start(self, nursery: trio.Nursery) -> None:
        for relay in self.relays.values():
            await nursery.start(relay.run)
        self._apply_links(list(self.relays))

    def node_command(self, name: str, argv: list[str]) -> list[str]:
        argv = [*argv, "--listen", "127.0.0.1:0", "--no-discovery"]
        for b in self.scenario.seeds[name]:
            argv += ["--peer", self.relays[(name, b)].url]
        return argv

    def started(self, node: RealNode) -> None:
        self._retarget(node.name, ("127.0.0.1", node.port))

    def stopped(self, node: RealNode) -> None:
        self._retarget(node.name, None)

    def _retarget(self, name: str, target: tuple[str, int] | None) -> None:
        for (_, b), relay in self.relays.items():
            if b == name:
                relay.set_target(target)

    def set_cuts(self, cuts: set[tuple[str, str]]) -> None:
        for pair, relay in self.relays.items():
            if pair in cuts:
                if not relay.is_cut:
                    relay.cut()
            else:
                relay.heal()

    def set_links(self, pairs: list[tuple[str, str]] | None, changes: Mapping[str, float]) -> None:
        chosen = [p for p in (pairs if pairs is not None else self.relays) if p in self.relays]
        for pair in chosen:  # (links the topology does not dial have no relay)
            state = self.link_state[pair]
            state.latency_ms = changes.get("latency_ms", state.latency_ms)
            state.loss = changes.get("loss", state.loss)
        self._apply_links(chosen)

    def _apply_links(self, pairs: list[tuple[str, str]]) -> None:
        for pair in pairs:
            state = self.link_state[pair]
            self.relays[pair].set_delay(state.latency_ms / 1000)
            self.relays[pair].set_drop(state.loss)

    def connect(self, node: RealNode) -> AbstractAsyncContextManager[Client]:
        return Client.connect(node.url, timeout=REQUEST_TIMEOUT)

    def traffic(self) -> tuple[int, int, dict[str, int]]:
        counters = [r.counters for r in self.relays.values()]
        return (sum(c.chunks for c in counters), sum(c.bytes for c in counters),
                {"connections": sum(c.connections for c in counters),
                 "refused": sum(c.refused for c in counters),
                 "broken": sum(c.broken for c in counters)})

    def close(self) -> None:
        pass  # the relays stop with the nursery they run in


NetworkFactory = Callable[[Scenario, random.Random], Network]


@dataclass
class RealRun:
    """One execution of a scenario on real processes; ``await run()`` once."""

    scenario: Scenario
    time_scale: float = DEFAULT_TIME_SCALE
    network_factory: NetworkFactory = RelayNetwork
    root: Path = Path()  # a fresh temporary directory per run, made by run()
    nodes: dict[str, RealNode] = field(default_factory=dict)
    cuts: set[tuple[str, str]] = field(default_factory=set)
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (origin, context)
    contexts: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)
    wait_failures: list[str] = field(default_factory=list)
    writes: int = 0
    t0: float = 0.0
    last_recovery: float = 0.0
    last_write: float = 0.0
    traffic: tuple[int, int, dict[str, int]] = (0, 0, {})  # the network's, read at teardown

    def __post_init__(self) -> None:
        if not self.time_scale > 0 or math.isinf(self.time_scale):
            raise ValueError(f"time_scale must be a positive number, got {self.time_scale}")
        self.rng = random.Random(self.scenario.seed)
        self.network = self.network_factory(self.scenario, self.rng)

    # ---- the run -------------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.perf_counter()
        error: str | None = None
        converged_after: float | None = None
        checks: list[CheckResult] = []
        lost = 0
        end = 0.0
        try:
            async with self.running():
                converged_after, reference = await self._timeline()
                end = trio.current_time()
                checks, lost = await self._checks(converged_after, reference)
        except Exception as exc:  # report it as a failed run, never hide it
            leaf = _leaf(exc)
            # A node that failed to start is named with its log; a bug shows where it was.
            frames = [] if isinstance(leaf, RealRunError) else traceback.format_exception(leaf)
            tails = "\n".join(t for n in self.nodes.values() if (t := n.log_tail(4)))
            error = f"{type(leaf).__name__}: {leaf}\n" + "".join(frames[-4:]) + tails
            end = trio.current_time()
        messages, size, counters = self.traffic
        checks.append(CheckResult("no_errors", error is None, error or ""))
        return Report(
            scenario=self.scenario.name, seed=self.scenario.seed, source=self.scenario.source,
            passed=all(c.passed for c in checks), checks=checks,
            converged_after_s=None if converged_after is None else
            round(converged_after / self.time_scale, 6),
            converged_after_node_s=None if converged_after is None else round(converged_after, 6),
            time_scale=self.time_scale, messages=messages, bytes=size,
            acknowledged=len(self.acked), lost=lost,
            trace_digest=hashlib.sha256("".join(self.log).encode()).hexdigest(),
            wall_s=time.perf_counter() - started,
            sim_s=max(0.0, end - self.t0) / self.time_scale if self.t0 else 0.0,
            events=len(self.log) + self.writes, nodes=len(self.scenario.nodes),
            by_type=counters | {"writes": self.writes},
            error=error,
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RealRun]:
        """The network and every node process up, in a fresh temporary directory; on exit
        every process is killed, the network torn down and the directory removed, whatever
        happened. ``run()`` uses it; a harness driving the cluster itself (``set_cuts``,
        ``append``, ``converged``) can too."""
        self.root = Path(tempfile.mkdtemp(prefix="p2p-ledger-real-"))
        try:
            async with trio.open_nursery() as network:
                try:
                    await self.network.start(network)
                    for name in self.scenario.nodes:
                        self.nodes[name] = RealNode(name, self.root / name, self.root / "logs",
                                                    (), ARGS, network=self.network)
                    async with trio.open_nursery() as starting:
                        for node in self.nodes.values():
                            starting.start_soon(self._spawn, node)
                    yield self
                finally:
                    network.cancel_scope.cancel()
        finally:
            self._stop_all()
            self.traffic = self.network.traffic()  # (a torn-down network counts nothing)
            self.network.close()
            shutil.rmtree(self.root, ignore_errors=True)

    async def _timeline(self) -> tuple[float | None, float]:
        """Run the steps and writers, wait for convergence.

        Returns (seconds from the reference time to convergence or None, the reference time)."""
        self.t0 = trio.current_time()
        async with trio.open_nursery() as writers:
            for step in self.scenario.steps:
                await trio.sleep_until(self.t0 + step.at * self.time_scale)
                self._check_processes()
                await self._do_step(step, writers)
        reference = max(self.last_recovery, self.last_write, self.t0)
        checks = self.scenario.checks
        limit = checks.converged_within_s or min(self.scenario.final_wait_s, FINAL_WAIT_CAP)
        while True:
            self._check_processes()
            now = trio.current_time()
            if await self.converged():
                return max(0.0, now - reference), reference
            if now > reference + limit:
                return None, reference
            await trio.sleep(POLL)

    # ---- steps ---------------------------------------------------------------------------------

    async def _do_step(self, step: Step, writers: trio.Nursery) -> None:
        args = step.args
        self.log.append(f"{step.index} {step.kind} "
                        f"{','.join(f'{k}={v}' for k, v in sorted(args.items()))}\n")
        now = trio.current_time()
        if step.kind == "append":
            self.contexts.add(args["context"])
            items: list[tuple[str, bytes | str, str, Mapping[str, str] | None]] = [
                (args["context"], _payload(f"s{step.index}.{i}", args["payload_bytes"]),
                 args["key"], None) for i in range(args["count"])]
            if self.nodes[args["node"]].up:
                await self.append(args["node"], items)
        elif step.kind == "writers":
            self.contexts.add(args["context"])
            end = now + args["duration_s"] * self.time_scale
            for name in args["nodes"]:
                writers.start_soon(self._writer, step, self.nodes[name], end,
                                   random.Random(self.rng.getrandbits(32)))
        elif step.kind in CUT_STEPS:
            self.set_cuts(cuts_after(step.kind, args, self.cuts))
            if step.kind == "heal":
                self.last_recovery = now
        elif step.kind == "crash":
            for name in args["nodes"]:
                self._crash(self.nodes[name])
        elif step.kind == "restart":
            async with trio.open_nursery() as starting:
                for name in args["nodes"]:
                    starting.start_soon(self._spawn, self.nodes[name])
            self.last_recovery = trio.current_time()
        elif step.kind == "link":
            self.network.set_links(args["pairs"], args["changes"])
        elif step.kind == "wait_converged":
            if await self.wait_converged(args["timeout_s"]) is None:
                self.wait_failures.append(f"{step.describe()} timed out after "
                                          f"{args['timeout_s']:g}s")

    def set_cuts(self, cuts: set[tuple[str, str]]) -> None:
        """Exactly these directed links are cut from now on; every other one is healed."""
        self.cuts = cuts
        self.network.set_cuts(cuts)

    async def append(
        self, name: str, items: list[tuple[str, bytes | str, str, Mapping[str, str] | None]],
    ) -> list[Entry]:
        """Append through node ``name``'s API; the entries count as acknowledged."""
        node = self.nodes[name]
        async with self.network.connect(node) as client:
            with trio.fail_after(REQUEST_TIMEOUT * 2):
                entries = await client.append_many(items)
        for entry in entries:
            self.acked[entry.id] = (node.name, entry.context)
            self.contexts.add(entry.context)
        self.writes += len(entries)
        self.last_write = trio.current_time()
        return entries

    async def wait_converged(self, timeout: float) -> float | None:
        """Seconds until every live node reports the same root, or None after ``timeout``."""
        start = trio.current_time()
        while not await self.converged():
            if trio.current_time() > start + timeout:
                return None
            await trio.sleep(POLL)
        return trio.current_time() - start

    async def _writer(self, step: Step, node: RealNode, end: float, rng: random.Random) -> None:
        """One agent: appends at the (scaled) rate until ``end``; skips while its node is down."""
        args = step.args
        rate = args["rate_per_s"] / self.time_scale
        k = 0
        when = trio.current_time() + rng.expovariate(rate)
        while when < end:
            if not node.up:
                await trio.sleep_until(when)
                when += rng.expovariate(rate)
                continue
            try:
                async with self.network.connect(node) as client:
                    while when < end and node.up:
                        await trio.sleep_until(when)
                        when += rng.expovariate(rate)
                        if not node.up:
                            break
                        payload = _payload(f"w{step.index}.{node.name}.{k}",
                                           args["payload_bytes"])
                        k += 1
                        with trio.fail_after(REQUEST_TIMEOUT):
                            entry = await client.append(args["context"], payload, args["key"])
                        self.acked[entry.id] = (node.name, entry.context)
                        self.writes += 1
                        self.last_write = trio.current_time()
            except (LedgerError, OSError, trio.TooSlowError):
                # Not acknowledged (a crash raced the call): the agent tries its next write.
                await trio.sleep(POLL)

    # ---- processes -----------------------------------------------------------------------------

    async def _spawn(self, node: RealNode) -> None:
        try:
            await node.start()
        except NodeFailedToStart as exc:
            raise RealRunError(f"node {exc}") from None
        node.up = True
        self.network.started(node)

    def _crash(self, node: RealNode) -> None:
        node.up = False
        node.kill()  # SIGKILL: no clean shutdown, only what was committed survives
        self.network.stopped(node)

    def _check_processes(self) -> None:
        for node in self.nodes.values():
            if node.up and not node.alive:
                code = node.proc.returncode if node.proc else None
                raise RealRunError(f"node {node.name} exited on its own (status {code}):\n"
                                   f"{node.log_tail()}")

    def _stop_all(self) -> None:
        for node in self.nodes.values():
            node.up = False
            node.kill()

    # ---- observation ---------------------------------------------------------------------------

    def _live(self) -> list[RealNode]:
        return [n for n in self.nodes.values() if n.up]

    async def _statuses(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}

        async def one(node: RealNode) -> None:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    async with self.network.connect(node) as client:
                        out[node.name] = await client.status()
            except (LedgerError, OSError, trio.TooSlowError):
                out[node.name] = None

        async with trio.open_nursery() as nursery:
            for node in self._live():
                nursery.start_soon(one, node)
        return out

    async def converged(self) -> bool:
        """Every live node reports the same root."""
        statuses = await self._statuses()
        roots = {s["root"] if s else None for s in statuses.values()}
        return len(roots) <= 1 and None not in roots

    async def _read_all(self, node: RealNode) -> dict[str, list[str]]:
        """Every context's ids on ``node``, in its causal order."""
        held: dict[str, list[str]] = {}
        async with self.network.connect(node) as client:
            for context in sorted(self.contexts):
                ids: list[str] = []
                cursor = None
                while True:
                    with trio.fail_after(REQUEST_TIMEOUT):
                        entries, cursor = await client.get(context, after=cursor, limit=1000)
                    if not entries:
                        break
                    ids += [e.id for e in entries]
                held[context] = ids
        return held

    # ---- checks --------------------------------------------------------------------------------

    async def _checks(self, converged_after: float | None,
                      reference: float) -> tuple[list[CheckResult], int]:
        spec = self.scenario.checks
        live = self._live()
        out: list[CheckResult] = []
        since = f"t={(reference - self.t0) / self.time_scale:g}s (scenario time)"
        if spec.converged_within_s is not None:
            limit = spec.converged_within_s
            if converged_after is None:
                statuses = await self._statuses()
                roots = {n: (s["root"][:12] if s else "?") for n, s in statuses.items()}
                out.append(CheckResult(
                    "converged_within_s", False,
                    f"not converged {limit:g}s after {since}; roots: {_group_roots(roots)}"))
            else:
                scenario_s = converged_after / self.time_scale
                out.append(CheckResult(
                    "converged_within_s", max(scenario_s, converged_after) <= limit,
                    f"converged {scenario_s:.3f}s of scenario time ({converged_after:.3f}s on "
                    f"the nodes' clocks, time scale {self.time_scale:g}) after {since} "
                    f"(limit {limit:g}s for both)"))
        held = {node.name: await self._read_all(node) for node in live}
        held_ids = {name: {i for ids in ctxs.values() for i in ids} for name, ctxs in held.items()}
        lost: list[str] = []
        unchecked = 0
        for eid, (origin, context) in self.acked.items():
            if origin not in held:
                unchecked += 1  # its origin is down: the entry may be only on its disk
                continue
            lacking = [n for n in held if eid not in held_ids[n]]
            if origin in lacking:
                lost.append(f"{context}/{eid[:16]} (from {origin}) is gone from its origin")
            elif lacking:
                lost.append(f"{context}/{eid[:16]} (from {origin}) is missing on "
                            f"{', '.join(lacking)}")
        if spec.no_acknowledged_loss:
            out.append(CheckResult(
                "no_acknowledged_loss", not lost,
                f"{len(self.acked)} acknowledged, {len(lost)} lost"
                + (f", {unchecked} from nodes left down not checked" if unchecked else "")
                + (": " + "; ".join(lost[:3]) if lost else "")))
        if spec.same_order:
            out.append(_same_order(held))
        if spec.same_root:
            statuses = await self._statuses()
            roots = {n: (s["root"][:12] if s else "?") for n, s in statuses.items()}
            ok = len(set(roots.values())) <= 1 and "?" not in roots.values()
            out.append(CheckResult("same_root", ok, f"{len(live)} live nodes" if ok
                                   else f"roots: {_group_roots(roots)}"))
        if spec.watchers_exactly_once:
            out.append(CheckResult("watchers_exactly_once", True,
                                   "skipped in real mode (no watcher per node)"))
        if any(s.kind == "wait_converged" for s in self.scenario.steps):
            out.append(CheckResult("wait_converged", not self.wait_failures,
                                   "; ".join(self.wait_failures)))
        return out, len(lost)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups: what the report should name."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if not inner:
            break
        exc = inner[0]
    return exc


def _payload(tag: str, size: int) -> bytes:
    raw = tag.encode()
    return raw + b"." * max(0, size - len(raw))


def _group_roots(roots: Mapping[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for name, root in roots.items():
        groups.setdefault(root, []).append(name)
    return "; ".join(f"{root}: {', '.join(names)}" for root, names in groups.items())


def _same_order(held: Mapping[str, Mapping[str, list[str]]]) -> CheckResult:
    if len(held) < 2:
        return CheckResult("same_order", True, "fewer than two live nodes")
    (first, first_ctxs), *rest = held.items()
    for name, ctxs in rest:
        for context, ids in ctxs.items():
            want = first_ctxs.get(context, [])
            if ids != want:
                pos = next((i for i, (a, b) in enumerate(zip(ids, want, strict=False))
                            if a != b), min(len(ids), len(want)))
                return CheckResult("same_order", False,
                                   f"context {context}: {name} ({len(ids)} entries) and "
                                   f"{first} ({len(want)}) differ at position {pos}")
    contexts = len(first_ctxs)
    return CheckResult("same_order", True, f"{contexts} contexts on {len(held)} nodes")


async def run_real(scenario: Scenario, time_scale: float = DEFAULT_TIME_SCALE,
                   network: NetworkFactory = RelayNetwork) -> Report:
    """Run one scenario on real processes (inside a trio run). ScenarioError for the steps only
    the simulator has (a byzantine member's forged bundles, a storage that loses its tail: the
    real-process tests in tests/cli/test_trust_processes.py do those by hand)."""
    sim_only = sorted({s.kind for s in scenario.steps} & {"byzantine", "tail_loss"})
    if sim_only:
        raise ScenarioError(f"{scenario.source}: {', '.join(sim_only)} steps run only in the "
                            "simulator")
    return await RealRun(scenario, time_scale, network).run()


def run_real_scenario(source: str | Path | Mapping[str, Any] | Scenario, seed: int | None = None,
                      time_scale: float = DEFAULT_TIME_SCALE,
                      network: NetworkFactory = RelayNetwork) -> Report:
    """Load (unless given a Scenario) and run one scenario on real processes; blocking."""
    scenario = source if isinstance(source, Scenario) else load_scenario(source, seed)
    if isinstance(source, Scenario) and seed is not None:
        scenario.seed = seed
    return trio.run(run_real, scenario, time_scale, network)


__all__ = ["DEFAULT_TIME_SCALE", "Network", "RealNode", "RealRun", "RealRunError", "RelayNetwork",
           "run_real", "run_real_scenario"]
