"""Prometheus metrics of one node (``GET /metrics``), written with ``prometheus_client``.

Each node has its own ``CollectorRegistry`` (never the global one: several nodes in one process,
as in tests, must not mix). Gauges and the per-type frame counters are read from the node at
scrape time (``NodeCollector``); histograms and event counters are updated by the runtime as
things happen. Names follow the Prometheus conventions: ``p2p_ledger_`` prefix, ``_total`` for
counters, base units (``_seconds``, ``_bytes``). Nothing here exposes entry contents.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..core.node import PeerEvent, PeerState

Node = Any  # runtime.Node (imported by name only: runtime imports this module)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECONCILE_TYPES = ("ROOT", "VIEWS", "SYNC1")  # what a round costs besides the updates it moves


class NodeCollector(Collector):
    """What is read from the node at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        core = self.node.core
        ledger = self.node.ledger
        yield GaugeMetricFamily("p2p_ledger_entries", "Entries held", ledger.entry_count())
        yield GaugeMetricFamily("p2p_ledger_contexts", "Contexts held", len(ledger.contexts))
        yield GaugeMetricFamily("p2p_ledger_contexts_loaded", "Contexts loaded in memory now "
                                "(the others live in the store: --memory-budget)",
                                len(ledger.live_contexts()))
        yield CounterMetricFamily("p2p_ledger_context_loads", "Contexts loaded from the store "
                                  "since start (each a replay of its rows)", value=ledger.loads)
        peers = GaugeMetricFamily("p2p_ledger_peers", "Known peers by state", labels=["state"])
        states = {state.value: 0 for state in PeerState}
        for peer in core.status()["peers"]:
            states[peer["state"]] = states.get(peer["state"], 0) + 1
        for state, count in states.items():
            peers.add_metric([state], count)
        yield peers
        counters = core.counters
        for name, what, counts in (
                ("p2p_ledger_frames_sent", "Peer frames sent", counters.frames_sent),
                ("p2p_ledger_frames_received", "Peer frames received", counters.frames_received),
                ("p2p_ledger_sent_bytes", "Peer frame bytes sent", counters.bytes_sent_by_type),
                ("p2p_ledger_received_bytes", "Peer frame bytes received",
                 counters.bytes_received_by_type)):
            family = CounterMetricFamily(name, f"{what}, by message type", labels=["type"])
            for kind, value in sorted(counts.items()):
                family.add_metric([kind], value)
            yield family
        yield CounterMetricFamily("p2p_ledger_reconcile_rounds", "Anti-entropy rounds started "
                                  "or answered", value=counters.rounds)
        moved = sum(counts.get(kind, 0) for counts in (counters.bytes_sent_by_type,
                                                        counters.bytes_received_by_type)
                    for kind in RECONCILE_TYPES)
        yield CounterMetricFamily("p2p_ledger_reconcile_bytes", "Bytes of ROOT, VIEWS and "
                                  "SYNC1 frames, both ways (rounds' cost beyond the updates)",
                                  value=moved)
        yield CounterMetricFamily("p2p_ledger_entries_received", "Entries received from peers",
                                  value=counters.entries_received)
        yield CounterMetricFamily("p2p_ledger_forks_seen", "Positions for which one writer "
                                  "signed two different entries (kept, reported, provable)",
                                  value=ledger.fork_count())


class BatchHistogram(Collector):
    """A histogram fed a group commit at a time: ``observe_since(starts, now)`` adds
    ``now - start`` for each start, with one bisect per value and no lock (the trio thread is
    its only writer); read at scrape time like ``Histogram`` (buckets, count, sum).

    why: ``prometheus_client.Histogram.observe`` (a lock and a Python loop over the bounds) cost
    ~5 µs per append on this 2-core machine, and each append read the clock a second time to
    feed it: ~10% of an append's CPU with 128 appenders (~70 µs per entry).
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        registry.register(self)

    def observe_since(self, starts: Iterable[float], now: float) -> None:
        counts, bounds, total = self.counts, self.bounds, 0.0
        for start in starts:
            value = now - start
            counts[bisect_left(bounds, value)] += 1  # (le: the first bound ≥ value)
            total += value
        self.sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation)
        buckets, cumulative = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)),
                            cumulative))
        family.add_metric([], buckets, sum_value=self.sum)
        yield family


class NodeMetrics:
    """The registry of one node and the instruments the runtime updates."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(NodeCollector(node))
        r = self.registry
        self.append_latency = BatchHistogram(
            "p2p_ledger_append_latency_seconds", "From an append call to its durable commit",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), r)
        self.commit_batch = Histogram(
            "p2p_ledger_commit_batch_entries", "Entries per group commit", registry=r,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))
        self.heal = Histogram(
            "p2p_ledger_heal_duration_seconds", "From a peer's root differing from ours to every "
            "linked peer agreeing again", registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0))
        self.refused = Counter(
            "p2p_ledger_refused_total", "Links refused in the handshake or closed for a "
            "protocol violation, by reason class", ["reason"], registry=r)
        self.peer_events = Counter(
            "p2p_ledger_peer_events_total", "Peer state changes (the log lines)", ["event"],
            registry=r)

    def on_event(self, event: PeerEvent) -> None:
        self.peer_events.labels(event.kind).inc()
        if event.kind == "refused" or (event.kind == "lost" and "Error" in event.reason):
            self.refused.labels(reason_class(event.reason)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def reason_class(reason: str) -> str:
    """A bounded label for a free-text reason: its error class, or its first words."""
    text = reason.removeprefix("peer said: ")
    head = text.split(":", 1)[0].strip()
    if head.endswith("Error") and head.isidentifier():
        return head
    return "_".join(head.split()[:3]).lower()[:40] or "other"
