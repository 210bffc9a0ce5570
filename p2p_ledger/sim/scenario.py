"""Scenario files: load, validate and normalise a TOML (or an equivalent dict) into a ``Scenario``.

Format (times in simulated seconds; every table but ``[scenario]`` and the nodes is optional)::

    nodes = ["a", "b", "c"]          # or nodes = 25 (n1..n25), or [[nodes]] name=, seeds=[...]
    topology = "full"                # full | chain | ring | star (hub = first, or hub = "x") | none

    [scenario]
    name = "split_brain"             # default: the file name
    seed = 1
    description = "..."
    final_wait_s = 600               # how long to wait for convergence when no check bounds it

    [links]                          # defaults for every direction of every link
    latency_ms = 10
    jitter_ms = 2
    loss = 0.0                       # probabilities, 0..1
    duplicate = 0.0
    reorder = 0.0
    transport = "tcp"                # network-wide: "tcp" (in order, once, or broken: loss and
                                     # reorder only delay) or "datagram" (frames dropped,
                                     # duplicated, reordered inside a connection; see network.py)
    break_after_s = 30               # network-wide: a cut this long breaks connections across it
    dial_timeout_s = 3               # network-wide: the kernel gives up a dial across a cut
                                     # (SYNs resent 1 s, 3 s, ... after the dial) after this

    [config]                         # NodeConfig overrides for every node (seconds)
    gossip_interval = 1.0

    [[steps]]                        # one action per step; steps run in order of `at`
    at = 5
    partition = [["a", "b"], ["c"]]  # nodes not listed form one more group together
    # append = {node = "a", context = "c", count = 10, key = "k", payload_bytes = 64}
    # writers = {nodes = ["a", "b"] | "all", context = "c", rate_per_s = 2, duration_s = 60}
    # cut = {from = "a", to = ["b", "c"], both = false}      (one-way unless both = true)
    # heal = true                    (every cut) or heal = {from = ..., to = ..., both = ...}
    # crash = "a" | ["a", "b"]       restart = "a" | ["a", "b"]
    # link = {loss = 0.2, between = ["a", "b"] | node = "a" | from/to = ..., (none: all)}
    # wait_converged = {timeout_s = 60}   (later steps wait for it)
    # tail_loss = {node = "a", commits = 3}   crash a (if up) and drop its last 3 commits from
    #                                         its storage; a stays down until a restart step
    # byzantine = {node = "m", attack = "forge" | "squat" | "lamport" | "equivocate",
    #              context = "c", victim = "a", to = ["b"] | "all",
    #              lamport = "overflow" | "above" | "max"}
    #                                  m sends hostile bundles on its open links to `to`
    #                                  (default all); victim: whose origin (forge) or Yjs
    #                                  position (squat), default the first other node. Every
    #                                  node named here is byzantine: checks skip it.
    repeat = 3                       # optional: run this step 3 times, every_s apart
    every_s = 10

    [checks]                         # all default on, converged_within_s defaults to none
    converged_within_s = 60          # after max(last heal/restart, last acknowledged write)
    no_acknowledged_loss = true
    same_order = true
    same_root = true
    watchers_exactly_once = true
    same_forks = true                # honest nodes report the same forks, all by byzantine nodes

Errors raise ``ScenarioError`` with a message naming the file, the step and the field.
``to_toml`` writes a dict in this format back out (the fuzzer's reproduction files).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.entry import CONTEXT_RE, NODE_ID_RE
from ..core.node import NodeConfig
from .byzantine import ATTACKS, LAMPORTS
from .network import LINK_FIELDS, TRANSPORTS, LinkProps, NetParams

TOPOLOGIES = ("full", "chain", "ring", "star", "none")
def partition_cuts(groups: list[list[str]]) -> set[tuple[str, str]]:
    """Every directed (from, to) pair that a partition into ``groups`` cuts."""
    return {(a, b) for g in groups for h in groups if g is not h for a in g for b in h}


def cut_groups(nodes: Sequence[str], cuts: set[tuple[str, str]]) -> list[list[str]]:
    """The partition a set of directed cuts makes (the inverse of ``partition_cuts``): two
    nodes share a group when a chain of pairs, each open in at least one direction, joins
    them, so between groups every pair is cut both ways. Groups and their members are in the
    order of ``nodes``."""
    group = {name: name for name in nodes}

    def find(name: str) -> str:
        while group[name] != name:
            name = group[name]
        return name

    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if (a, b) not in cuts or (b, a) not in cuts:
                group[find(b)] = find(a)
    groups: dict[str, list[str]] = {}
    for name in nodes:
        groups.setdefault(find(name), []).append(name)
    return list(groups.values())


CUT_STEPS = ("partition", "cut", "heal")


def cuts_after(kind: str, args: Mapping[str, Any], cuts: set[tuple[str, str]],
               ) -> set[tuple[str, str]]:
    """The directed (from, to) links cut after a ``partition``, ``cut`` or ``heal`` step, given
    those cut before: a partition replaces every cut, a cut adds its pairs, a heal removes its
    pairs (all of them when it names none). One rule for the simulator and the real runners."""
    if kind == "partition":
        return partition_cuts(args["groups"])
    if kind == "cut":
        return cuts | set(args["pairs"])
    if kind == "heal":
        return cuts - set(args["pairs"]) if args else set()
    raise ValueError(f"{kind!r} is not one of {CUT_STEPS}")


STEP_KINDS = ("append", "writers", "partition", "cut", "heal", "crash", "restart", "link",
              "wait_converged", "tail_loss", "byzantine")
CONFIG_FIELDS = ("gossip_interval", "push_gossip_delay", "handshake_timeout", "idle_timeout",
                 "backoff_base", "probe_interval", "backoff_max", "dial_timeout", "drop_after")
CHECK_FLAGS = ("no_acknowledged_loss", "same_order", "same_root", "watchers_exactly_once",
               "same_forks")
NET_FIELDS = ("break_after_s", "dial_timeout_s")


class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file, step and field."""


@dataclass(frozen=True)
class Step:
    index: int  # position in the file's [[steps]], for messages
    at: float
    kind: str
    args: Mapping[str, Any]

    def describe(self) -> str:
        return f"steps[{self.index}] (at = {self.at:g}) {self.kind}"


@dataclass(frozen=True)
class Checks:
    converged_within_s: float | None = None
    no_acknowledged_loss: bool = True
    same_order: bool = True
    same_root: bool = True
    watchers_exactly_once: bool = True
    same_forks: bool = True


@dataclass
class Scenario:
    name: str
    seed: int
    source: str
    nodes: list[str]
    seeds: dict[str, list[str]]
    description: str = ""
    links: LinkProps = field(default_factory=LinkProps)
    net: NetParams = field(default_factory=NetParams)
    config: dict[str, float] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    checks: Checks = field(default_factory=Checks)
    final_wait_s: float = 600.0
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def byzantine(self) -> list[str]:
        """The hostile members: every node that a ``byzantine`` step names as its ``node``."""
        return sorted({s.args["node"] for s in self.steps if s.kind == "byzantine"})

    def url(self, node: str) -> str:
        return f"sim://{node}"

    def node_configs(self) -> list[NodeConfig]:
        overrides: dict[str, Any] = dict(self.config)  # validated: CONFIG_FIELDS, numbers
        return [NodeConfig(node_id=n, url=self.url(n),
                           seeds=tuple(self.url(s) for s in self.seeds[n]), **overrides)
                for n in self.nodes]


# ---- loading -------------------------------------------------------------------------------

def load_scenario(source: str | Path | Mapping[str, Any], seed: int | None = None) -> Scenario:
    """Read and validate a scenario from a TOML file path or an already parsed dict."""
    if isinstance(source, Mapping):
        data, origin = dict(source), "<scenario>"
        default_name = "scenario"
    else:
        path = Path(source)
        origin = str(path)
        default_name = path.stem
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{origin}: cannot read: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{origin}: invalid TOML: {exc}") from None
    scenario = _Validator(origin).scenario(data, default_name)
    if seed is not None:
        scenario.seed = seed
    return scenario


class _Validator:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.nodes: list[str] = []

    def fail(self, where: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.origin}: {where}: {message}")

    # -- scalar helpers --

    def number(self, value: object, where: str, low: float = 0.0, high: float = math.inf,
               low_open: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise self.fail(where, f"expected a number, got {value!r}")
        if value < low or (low_open and value == low) or value > high:
            bounds = f"{'>' if low_open else '>='} {low:g}" + (
                f" and <= {high:g}" if high != math.inf else "")
            raise self.fail(where, f"must be {bounds}, got {value!r}")
        return float(value)

    def integer(self, value: object, where: str, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected an integer, got {value!r}")
        if value < low:
            raise self.fail(where, f"must be >= {low}, got {value}")
        return value

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"expected true or false, got {value!r}")
        return value

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {value!r}")
        return value

    def table(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a table, got {value!r}")
        return dict(value)

    def keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(where, f"unknown field {key!r} (allowed: {', '.join(allowed)})")

    def node(self, value: object, where: str) -> str:
        name = self.string(value, where)
        if name not in self.nodes:
            raise self.fail(where, f"unknown node {name!r} (nodes: {_short(self.nodes)})")
        return name

    def node_list(self, value: object, where: str) -> list[str]:
        """A node, a list of nodes, or "all"."""
        if value == "all":
            return list(self.nodes)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise self.fail(where, f"expected a node, a list of nodes or \"all\", got {value!r}")
        out = [self.node(item, where) for item in items]
        if len(set(out)) != len(out):
            raise self.fail(where, "a node is listed twice")
        return out

    def context(self, value: object, where: str) -> str:
        name = self.string(value, where)
        if not CONTEXT_RE.fullmatch(name):
            raise self.fail(where, f"invalid context name {name!r}: use 1-128 characters of "
                                   "A-Z a-z 0-9 . _ : / -")
        return name

    # -- sections --

    def scenario(self, data: dict[str, Any], default_name: str) -> Scenario:
        self.keys(data, ("scenario", "nodes", "topology", "hub", "links", "config", "steps",
                         "checks"), "top level")
        head = self.table(data.get("scenario", {}), "[scenario]")
        self.keys(head, ("name", "seed", "description", "nodes", "topology", "hub",
                         "final_wait_s"), "[scenario]")
        for key in ("nodes", "topology", "hub"):
            if key in head and key in data:
                raise self.fail("[scenario]", f"{key!r} is given both at the top level and here")
        nodes_value = data.get("nodes", head.get("nodes"))
        topology = data.get("topology", head.get("topology", "full"))
        hub = data.get("hub", head.get("hub"))
        name = self.string(head.get("name", default_name), "[scenario] name")
        seed = self.integer(head.get("seed", 0), "[scenario] seed")
        description = self.string(head.get("description", ""), "[scenario] description")
        final_wait = self.number(head.get("final_wait_s", 600.0), "[scenario] final_wait_s",
                                 low=0, low_open=True)
        nodes, seeds = self.parse_nodes(nodes_value, topology, hub)
        links, net = self.parse_links(data.get("links", {}))
        config = self.parse_config(data.get("config", {}))
        steps = self.parse_steps(data.get("steps", []))
        checks = self.parse_checks(data.get("checks", {}))
        return Scenario(name=name, seed=seed, source=self.origin, nodes=nodes, seeds=seeds,
                        description=description, links=links, net=net, config=config,
                        steps=steps, checks=checks, final_wait_s=final_wait, raw=data)

    def parse_nodes(
        self, value: object, topology: object, hub: object
    ) -> tuple[list[str], dict[str, list[str]]]:
        if value is None:
            raise self.fail("nodes", "missing: give nodes = [\"a\", \"b\"], nodes = N or "
                                     "[[nodes]] tables")
        explicit: dict[str, list[str] | None] = {}
        if isinstance(value, int) and not isinstance(value, bool):
            count = self.integer(value, "nodes", low=1)
            explicit = {f"n{i}": None for i in range(1, count + 1)}
        elif isinstance(value, list) and value:
            for i, item in enumerate(value):
                where = f"nodes[{i}]"
                if isinstance(item, str):
                    name, node_seeds = item, None
                elif isinstance(item, Mapping):
                    self.keys(item, ("name", "seeds"), where)
                    name = self.string(item.get("name"), f"{where} name")
                    node_seeds = item.get("seeds")
                else:
                    raise self.fail(where, f"expected a node name or a table, got {item!r}")
                if not NODE_ID_RE.fullmatch(name):
                    raise self.fail(where, f"invalid node name {name!r}: use 1-64 characters of "
                                           "A-Z a-z 0-9 . _ -")
                if name in explicit:
                    raise self.fail(where, f"node {name!r} is listed twice")
                explicit[name] = node_seeds
        else:
            raise self.fail("nodes", f"expected a non-empty list of names or a count, got "
                                     f"{value!r}")
        self.nodes = list(explicit)
        if topology not in TOPOLOGIES:
            raise self.fail("topology", f"expected one of {', '.join(TOPOLOGIES)}, got "
                                        f"{topology!r}")
        hub_name = self.node(hub, "hub") if hub is not None else self.nodes[0]
        seeds: dict[str, list[str]] = {}
        for i, name in enumerate(self.nodes):
            given = explicit[name]
            if given is not None:
                where = f"nodes[{i}] seeds"
                if not isinstance(given, list):
                    raise self.fail(where, f"expected a list of node names, got {given!r}")
                seeds[name] = [self.node(s, where) for s in given if s != name]
                continue
            if topology == "full":
                seeds[name] = [n for n in self.nodes if n != name]
            elif topology == "chain":
                seeds[name] = self.nodes[i - 1 : i] if i else []
            elif topology == "ring":
                ring = {self.nodes[i - 1], self.nodes[(i + 1) % len(self.nodes)]} - {name}
                seeds[name] = sorted(ring)
            elif topology == "star":
                seeds[name] = [] if name == hub_name else [hub_name]
            else:
                seeds[name] = []
        return self.nodes, seeds

    def parse_links(self, value: object) -> tuple[LinkProps, NetParams]:
        table = self.table(value, "[links]")
        self.keys(table, LINK_FIELDS + NET_FIELDS + ("transport",), "[links]")
        props = self.link_changes(table, "[links]")
        net: dict[str, Any] = {k: self.number(table[k], f"[links] {k}", low=0, low_open=True)
                               for k in NET_FIELDS if k in table}
        if "transport" in table:
            if table["transport"] not in TRANSPORTS:
                raise self.fail("[links] transport", f"expected one of {', '.join(TRANSPORTS)}, "
                                f"got {table['transport']!r}")
            net["transport"] = table["transport"]
        return LinkProps(**props), NetParams(**net)

    def link_changes(self, table: Mapping[str, Any], where: str) -> dict[str, float]:
        changes: dict[str, float] = {}
        for key in LINK_FIELDS:
            if key in table:
                high = 1.0 if key in ("loss", "duplicate", "reorder") else math.inf
                changes[key] = self.number(table[key], f"{where} {key}", high=high)
        return changes

    def parse_config(self, value: object) -> dict[str, float]:
        table = self.table(value, "[config]")
        self.keys(table, CONFIG_FIELDS, "[config]")
        return {k: self.number(v, f"[config] {k}", low=0, low_open=True) for k, v in table.items()}

    def parse_checks(self, value: object) -> Checks:
        table = self.table(value, "[checks]")
        self.keys(table, ("converged_within_s",) + CHECK_FLAGS, "[checks]")
        within = table.get("converged_within_s")
        flags = {k: self.boolean(table[k], f"[checks] {k}") for k in CHECK_FLAGS if k in table}
        return Checks(
            converged_within_s=None if within is None else self.number(
                within, "[checks] converged_within_s", low=0, low_open=True),
            **flags)

    def parse_steps(self, value: object) -> list[Step]:
        if not isinstance(value, list):
            raise self.fail("steps", "expected [[steps]] tables")
        steps: list[Step] = []
        for index, raw in enumerate(value):
            where = f"steps[{index}]"
            table = self.table(raw, where)
            if "at" not in table:
                raise self.fail(where, "missing field 'at' (simulated seconds)")
            at = self.number(table["at"], f"{where} at")
            where = f"steps[{index}] (at = {at:g})"
            actions = [k for k in table if k in STEP_KINDS]
            self.keys(table, ("at", "repeat", "every_s") + STEP_KINDS, where)
            if len(actions) != 1:
                raise self.fail(where, "give exactly one action of "
                                       f"{', '.join(STEP_KINDS)}; got {actions or 'none'}")
            kind = actions[0]
            args = self.step_args(kind, table[kind], f"{where} {kind}")
            repeat = self.integer(table.get("repeat", 1), f"{where} repeat", low=1)
            every = self.number(table.get("every_s", 0), f"{where} every_s")
            if repeat > 1 and every <= 0:
                raise self.fail(f"{where} every_s", "repeat needs every_s > 0")
            steps += [Step(index, at + k * every, kind, args) for k in range(repeat)]
        steps.sort(key=lambda s: s.at)  # stable: same-time steps keep file order
        self.check_liveness(steps)
        return steps

    def step_args(self, kind: str, value: object, where: str) -> dict[str, Any]:
        if kind in ("crash", "restart"):
            return {"nodes": self.node_list(value, where)}
        if kind == "heal":
            if value is True:
                return {}
            table = self.table(value, where)
            self.keys(table, ("from", "to", "both"), where)
            return self.direction(table, where)
        if kind == "partition":
            if not isinstance(value, list) or not value:
                raise self.fail(where, "expected a list of groups, e.g. [[\"a\", \"b\"], [\"c\"]]")
            groups = [self.node_list(g, f"{where}[{i}]") for i, g in enumerate(value)]
            listed = [n for g in groups for n in g]
            if len(set(listed)) != len(listed):
                dup = next(n for n in listed if listed.count(n) > 1)
                raise self.fail(where, f"node {dup!r} is in two groups")
            rest = [n for n in self.nodes if n not in listed]
            return {"groups": groups + ([rest] if rest else [])}
        table = self.table(value, where)
        if kind == "append":
            self.keys(table, ("node", "context", "count", "key", "payload_bytes"), where)
            return {"node": self.node(table.get("node"), f"{where} node"),
                    "context": self.context(table.get("context"), f"{where} context"),
                    "count": self.integer(table.get("count", 1), f"{where} count", low=1),
                    "key": self.string(table.get("key", ""), f"{where} key"),
                    "payload_bytes": self.integer(table.get("payload_bytes", 32),
                                                  f"{where} payload_bytes")}
        if kind == "writers":
            self.keys(table, ("nodes", "context", "rate_per_s", "duration_s", "key",
                              "payload_bytes"), where)
            return {"nodes": self.node_list(table.get("nodes", "all"), f"{where} nodes"),
                    "context": self.context(table.get("context"), f"{where} context"),
                    "rate_per_s": self.number(table.get("rate_per_s"), f"{where} rate_per_s",
                                              low=0, low_open=True),
                    "duration_s": self.number(table.get("duration_s"), f"{where} duration_s",
                                              low=0, low_open=True),
                    "key": self.string(table.get("key", ""), f"{where} key"),
                    "payload_bytes": self.integer(table.get("payload_bytes", 32),
                                                  f"{where} payload_bytes")}
        if kind == "cut":
            self.keys(table, ("from", "to", "both"), where)
            return self.direction(table, where)
        if kind == "link":
            self.keys(table, LINK_FIELDS + ("between", "node", "from", "to"), where)
            selectors = [k for k in ("between", "node", "from") if k in table]
            if len(selectors) > 1 or ("to" in table) != ("from" in table):
                raise self.fail(where, "select links with one of: between = [a, b], node = a, "
                                       "from = .. + to = .. (or none for every link)")
            changes = self.link_changes(table, where)
            if not changes:
                raise self.fail(where, f"nothing to change: give one of {', '.join(LINK_FIELDS)}")
            pairs: list[tuple[str, str]] | None = None
            if "between" in table:
                ends = self.node_list(table["between"], f"{where} between")
                if len(ends) != 2:
                    raise self.fail(f"{where} between", f"expected two nodes, got {ends}")
                pairs = [(ends[0], ends[1]), (ends[1], ends[0])]
            elif "node" in table:
                n = self.node(table["node"], f"{where} node")
                pairs = [p for o in self.nodes if o != n for p in ((n, o), (o, n))]
            elif "from" in table:
                pairs = self.direction(table, where)["pairs"]
            return {"pairs": pairs, "changes": changes}
        if kind == "tail_loss":
            self.keys(table, ("node", "commits"), where)
            return {"node": self.node(table.get("node"), f"{where} node"),
                    "commits": self.integer(table.get("commits", 1), f"{where} commits",
                                            low=1)}
        if kind == "byzantine":
            self.keys(table, ("node", "attack", "context", "victim", "to", "lamport"), where)
            node = self.node(table.get("node"), f"{where} node")
            attack = table.get("attack")
            if attack not in ATTACKS:
                raise self.fail(f"{where} attack", f"expected one of {', '.join(ATTACKS)}, got "
                                                   f"{attack!r}")
            others = [n for n in self.nodes if n != node]
            if not others:
                raise self.fail(where, "a byzantine member needs another node to attack")
            victim = self.node(table.get("victim", others[0]), f"{where} victim")
            to = [n for n in self.node_list(table.get("to", "all"), f"{where} to") if n != node]
            if victim == node or not to:
                raise self.fail(where, "the victim and the targets must be other nodes")
            lamport = table.get("lamport", "overflow")
            if lamport not in LAMPORTS or (attack != "lamport" and "lamport" in table):
                raise self.fail(f"{where} lamport", f"expected one of {', '.join(LAMPORTS)} "
                                f"(lamport attack only), got {lamport!r}")
            return {"node": node, "attack": attack,
                    "context": self.context(table.get("context"), f"{where} context"),
                    "victim": victim, "to": to, "lamport": lamport}
        if kind == "wait_converged":
            self.keys(table, ("timeout_s",), where)
            return {"timeout_s": self.number(table.get("timeout_s", 600), f"{where} timeout_s",
                                             low=0, low_open=True)}
        raise AssertionError(kind)  # pragma: no cover - STEP_KINDS is closed

    def direction(self, table: Mapping[str, Any], where: str) -> dict[str, Any]:
        if "from" not in table or "to" not in table:
            raise self.fail(where, "give both 'from' and 'to'")
        src = self.node_list(table["from"], f"{where} from")
        dst = self.node_list(table["to"], f"{where} to")
        both = self.boolean(table.get("both", False), f"{where} both")
        pairs = [(a, b) for a in src for b in dst if a != b]
        if both:
            pairs += [(b, a) for a, b in pairs]
        if not pairs:
            raise self.fail(where, "no link between distinct nodes is selected")
        return {"pairs": pairs}

    def check_liveness(self, steps: list[Step]) -> None:
        down: set[str] = set()
        for step in steps:
            where = step.describe()
            if step.kind == "crash":
                for n in step.args["nodes"]:
                    if n in down:
                        raise self.fail(where, f"node {n!r} is already down")
                    down.add(n)
            elif step.kind == "restart":
                for n in step.args["nodes"]:
                    if n not in down:
                        raise self.fail(where, f"node {n!r} is not down")
                    down.discard(n)
            elif step.kind in ("append", "byzantine") and step.args["node"] in down:
                raise self.fail(where, f"node {step.args['node']!r} is down then")
            elif step.kind == "tail_loss":
                down.add(step.args["node"])  # a crash first if it is up


def _short(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 8 else ", ".join(names[:8]) + ", ..."


# ---- writing -------------------------------------------------------------------------------

def to_toml(data: Mapping[str, Any]) -> str:
    """Serialise a scenario dict (scalars, lists, nested tables) as TOML that loads back equal."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not _is_table(v) and not _is_table_array(v)}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in data.items():
        if _is_table(value):
            lines += ["", f"[{_key(key)}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
    for key, value in data.items():
        if _is_table_array(value):
            for item in value:
                lines += ["", f"[[{_key(key)}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: object) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            raise ValueError(f"cannot write {value} to a scenario")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"cannot write {type(value).__name__} to a scenario")


__all__ = ["Checks", "Scenario", "ScenarioError", "Step", "load_scenario", "to_toml",
           "CONFIG_FIELDS", "STEP_KINDS", "TOPOLOGIES"]
