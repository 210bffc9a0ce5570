"""Heal times of real node processes: how long after a partition heals every node agrees.

Three ``p2p-ledger node`` processes (``--no-discovery``), every directed link through its own
relay (``real.py``), split {a} | {b, c} for each given length in turn while both sides write,
then healed; the time from the heal until all three report the same root is one measurement.
The relays refuse connections during a cut, so the nodes see what a node sees when its peer is
unreachable, and their redial policy alone decides how long a heal takes. With
``network=NetnsNetwork`` the three are hosts in network namespaces instead and the kernel makes
the cut (separate bridges: packets vanish, connections go silent, dials time out). Convergence is
polled over one open API connection per node (directly, never through a relay). Used by the
heal benchmark (``p2p-ledger bench --only heal``) and the real-process heal test.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

import trio

from ..sim.scenario import load_scenario, partition_cuts
from ..trio.client import Client
from .real import NetworkFactory, RealRun, RelayNetwork

GROUPS = [["a"], ["b", "c"]]
HEAL_TIMEOUT = 120.0  # a heal slower than this is reported as None
POLL = 0.01  # why: a status over an open API connection costs ~1 ms; reconnecting per poll
# cost ~0.2 s of latency on a loaded 2-core machine, more than the heal being measured


async def _agreed(clients: Sequence[Client], timeout: float) -> float | None:
    """Seconds until every node reports the same root (polling open connections)."""
    start = trio.current_time()
    while trio.current_time() < start + timeout:
        roots = set()
        for client in clients:
            roots.add((await client.status())["root"])
        if len(roots) == 1:
            return trio.current_time() - start
        await trio.sleep(POLL)
    return None


async def real_heal_times(lengths: Sequence[float], seed: int = 1,
                          network: NetworkFactory = RelayNetwork) -> list[float | None]:
    """One cluster, one cut per length (in order); seconds from each heal to convergence.
    ``network``: relays on loopback, or ``netns.NetnsNetwork`` (cuts made by the kernel)."""
    scenario = load_scenario({"nodes": ["a", "b", "c"], "topology": "full",
                              "scenario": {"name": "heal", "seed": seed}})
    run = RealRun(scenario, time_scale=1.0, network_factory=network)
    heals: list[float | None] = []
    async with run.running(), AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(run.network.connect(node))
                   for node in run.nodes.values()]
        if await _agreed(clients, 30.0) is None:
            raise RuntimeError("the cluster did not converge before the first cut")
        for i, length in enumerate(lengths):
            run.set_cuts(partition_cuts(GROUPS))
            start = trio.current_time()
            for group in GROUPS:  # both sides write during the cut
                await run.append(group[0], [("heal", f"cut {i} {group[0]} {k}", "", None)
                                            for k in range(3)])
            await trio.sleep_until(start + length)
            run.set_cuts(set())
            heals.append(await _agreed(clients, HEAL_TIMEOUT))
    return heals


__all__ = ["real_heal_times"]
