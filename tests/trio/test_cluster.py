"""Real node processes on loopback: formation, replication, watch, join, crash, offline agent,
cluster key. Every wait polls a condition with a deadline (``LocalCluster.wait_for``)."""

from __future__ import annotations

import random
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import Entry
from p2p_ledger.core.errors import LinkBroken, RemoteProtocolError
from p2p_ledger.testing import LocalCluster
from p2p_ledger.trio.client import Client
from p2p_ledger.trio.runtime import open_node

pytestmark = pytest.mark.slow


async def _connected_ids(cluster: LocalCluster, i: int) -> set[str]:
    return {p["node_id"] for p in (await cluster.status(i))["peers"] if p["state"] == "connected"}


async def test_chain_of_seeds_forms_a_full_mesh(cluster: LocalCluster) -> None:
    n1, n2, n3 = await cluster.start(3, chain=True)  # n2 → n1, n3 → n2
    for i, others in ((n1, (n2, n3)), (n2, (n1, n3)), (n3, (n1, n2))):
        await cluster.wait_connected(i, others)
    for i in (n1, n2, n3):
        peers = (await cluster.status(i))["peers"]
        by_id = {p["node_id"]: p for p in peers}
        others = {cluster.nodes[j].name for j in (n1, n2, n3) if j != i}
        assert {k: by_id[k]["state"] for k in others} == dict.fromkeys(others, "connected")
        # One link per pair: no node appears twice as connected.
        connected = [p["node_id"] for p in peers if p["state"] == "connected"]
        assert sorted(connected) == sorted(others), peers


async def test_replication_and_one_causal_order(cluster: LocalCluster) -> None:
    a, b, c = await cluster.start(3)
    for i in (a, b, c):
        await cluster.wait_connected(i, [j for j in (a, b, c) if j != i])
    entry = await cluster.append(a, "notes", "written on A", key="k1")

    async def everywhere(context: str, wanted: set[str]) -> bool:
        for i in (a, b, c):
            if not wanted <= set(await cluster.read_ids(i, context)):
                return False
        return True

    await cluster.wait_for(lambda: everywhere("notes", {entry.id}), 15, "A's entry on B and C")
    (on_b,) = await cluster.read(b, "notes")
    assert on_b == entry and on_b.payload == b"written on A" and len(on_b.origin) == 64

    created = await cluster.append(c, "made-on-c", b"\x00\x01binary")
    await cluster.wait_for(lambda: everywhere("made-on-c", {created.id}), 15, "C's context on A")

    # Concurrent writers on every node, one context.
    acked: list[str] = []

    async def writer(i: int) -> None:
        async with cluster.client(i) as client:
            for n in range(15):
                e = await client.append("shared", f"{cluster.nodes[i].name}-{n}")
                acked.append(e.id)

    async with trio.open_nursery() as nursery:
        for i in (a, b, c):
            nursery.start_soon(writer, i)
    await cluster.wait_converged(30)
    orders = [await cluster.read_ids(i, "shared") for i in (a, b, c)]
    assert orders[0] == orders[1] == orders[2]
    assert sorted(orders[0]) == sorted(acked) and len(acked) == 45


async def test_watch_resumes_after_restart_without_gap_or_duplicate(
        cluster: LocalCluster) -> None:
    a, b = await cluster.start(2)
    await cluster.wait_connected(b, [a])
    written: list[str] = []
    seen: list[str] = []
    cursor: Cursor | None = None

    async def write(n: int, tag: str) -> None:
        async with cluster.client(a) as client:
            for k in range(n):
                written.append((await client.append("feed", f"{tag}-{k}")).id)

    async def watch_until(count: int) -> None:
        nonlocal cursor
        async with cluster.client(b) as client:
            with trio.fail_after(30):
                # aclosing: the generator holds a websocket (a nursery); it must be closed in
                # this task, inside this cancel scope, not later by the garbage collector.
                async with aclosing(client.watch("feed", since=cursor)) as stream:
                    async for entry, cur in stream:
                        seen.append(entry.id)
                        cursor = cur
                        if len(seen) >= count:
                            return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_until, 5)
        await write(5, "before")
    assert seen == written

    cluster.kill(b)
    await write(5, "while-b-down")
    await cluster.restart(b)
    await cluster.wait_connected(b, [a])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_until, 13)
        await write(3, "after")
    assert seen == written  # same entries, same order: no gap, no duplicate
    assert len(set(seen)) == 13


async def test_a_late_node_receives_every_context(cluster: LocalCluster) -> None:
    a, b = await cluster.start(2)
    rng = random.Random(3)
    contexts = [f"ctx-{i}" for i in range(12)]
    async with cluster.client(a) as ca, cluster.client(b) as cb:
        for n, context in enumerate(contexts):
            client = ca if n % 2 else cb
            await client.append_many([(context, rng.randbytes(200), "k", None)
                                      for _ in range(5)])
    root = await cluster.wait_converged(20)
    late = await cluster.add("late", peers=[b])
    assert await cluster.wait_converged(30) == root
    status = await cluster.status(late)
    assert status["contexts"] == len(contexts) and status["entries"] == 5 * len(contexts)
    for context in contexts:
        assert await cluster.read_ids(late, context) == await cluster.read_ids(a, context)


async def test_kill_9_while_writing_loses_no_acknowledged_entry(cluster: LocalCluster) -> None:
    a, b, c = await cluster.start(3)
    for i in (a, b, c):
        await cluster.wait_connected(i, [j for j in (a, b, c) if j != i])
    acked: dict[int, list[str]] = {a: [], b: [], c: []}
    stop = trio.Event()

    async def writer(i: int) -> None:
        try:
            async with cluster.client(i) as client:
                n = 0
                while not stop.is_set():
                    acked[i].append((await client.append("log", f"{i}-{n}")).id)
                    n += 1
        except (LinkBroken, OSError):
            pass  # its node was killed: what it acknowledged so far is what counts

    async with trio.open_nursery() as nursery:
        for i in (a, b, c):
            nursery.start_soon(writer, i)

        async def have(i: int, n: int) -> bool:
            return len(await cluster.read_ids(i, "log")) >= n

        await cluster.wait_for(lambda: have(a, 30), 20, "some writes")
        cluster.kill(c)
        killed_with = len(acked[c])
        # Writes keep flowing between the survivors.
        a_mark, b_mark = len(acked[a]), len(acked[b])

        async def survivors_flow() -> bool:
            ids_a = set(await cluster.read_ids(a, "log"))
            ids_b = set(await cluster.read_ids(b, "log"))
            return (len(acked[a]) > a_mark + 10 and len(acked[b]) > b_mark + 10
                    and set(acked[b][: b_mark + 10]) <= ids_a
                    and set(acked[a][: a_mark + 10]) <= ids_b)

        await cluster.wait_for(survivors_flow, 20, "writes flowing between survivors")
        await cluster.restart(c)
        await cluster.wait_connected(c, [a, b])
        stop.set()
    assert killed_with > 0
    await cluster.wait_converged(30)
    everything = set(acked[a]) | set(acked[b]) | set(acked[c])
    for i in (a, b, c):
        ids = await cluster.read_ids(i, "log")
        assert everything <= set(ids), f"node {i} lost {len(everything - set(ids))} entries"
        assert len(ids) == len(set(ids))
    assert (await cluster.read_ids(a, "log")) == (await cluster.read_ids(c, "log"))


async def test_offline_agent_syncs_both_ways_when_its_peer_returns(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """An embedded node whose only peer is B: it keeps appending while B is down; a node A that
    started meanwhile (seeded with B only) writes too; when B comes back on the same port,
    everything meets."""
    b = await cluster.add("b")
    url_b = cluster.nodes[b].url
    async with open_node(tmp_path / "agent", peers=[url_b], node_id="agent",
                         gossip_interval=0.2, synchronous="NORMAL") as agent:

        async def agent_linked(value: bool = True) -> bool:
            linked = any(p["state"] == "connected" for p in agent.status()["peers"])
            return linked == value

        await cluster.wait_for(agent_linked, 15, "agent connected to B")
        first = await agent.append("agent-notes", "online")
        await cluster.wait_for(lambda: _has(cluster, b, "agent-notes", first), 15,
                               "agent's entry on B")

        cluster.kill(b)
        await cluster.wait_for(lambda: agent_linked(False), 15, "agent noticing B is gone")
        offline = [await agent.append("agent-notes", f"offline-{k}") for k in range(5)]
        a = await cluster.add("a", peers=[url_b])  # B is down: A is alone for now
        from_a = await cluster.append(a, "team", "written on A while B was down")
        assert agent.get("agent-notes")[0][-1] == offline[-1]  # reads work offline

        await cluster.restart(b, same_port=True)
        assert cluster.nodes[b].url == url_b

        async def synced() -> bool:
            mine = {e.id for e in agent.get("team")[0]}
            return from_a.id in mine and all(
                [await _has(cluster, i, "agent-notes", first, *offline) for i in (a, b)])

        await cluster.wait_for(synced, 30, "agent and cluster synced both ways")
        root = await cluster.wait_converged(20)
        await cluster.wait_for(lambda: _async_true(agent.ledger.root().hex() == root), 10,
                               "agent root equals the cluster's")


async def _async_true(value: bool) -> bool:
    return value


async def _has(cluster: LocalCluster, i: int, context: str, *entries: Entry) -> bool:
    return {e.id for e in entries} <= set(await cluster.read_ids(i, context))


async def test_cluster_key_admits_members_and_refuses_others(cluster: LocalCluster) -> None:
    key = "s3cret-cluster-key"
    m1 = await cluster.add("m1", key=key)
    m2 = await cluster.add("m2", peers=[m1], key=key)
    await cluster.wait_connected(m1, [m2])
    entry = await cluster.append(m1, "private", "members only")
    await cluster.wait_for(lambda: _has(cluster, m2, "private", entry), 15, "m2 replicates")

    outsider = await cluster.add("outsider", peers=[m1, m2])

    async def refused_everywhere() -> bool:
        log_text = cluster.nodes[m1].log_text() + cluster.nodes[m2].log_text()
        return log_text.count("peer has no cluster key and ours requires one") >= 2

    await cluster.wait_for(refused_everywhere, 20, "members log why they refused the outsider")
    status = await cluster.status(outsider)
    assert [p for p in status["peers"] if p["state"] == "connected"] == []
    assert status["entries"] == 0
    assert any("requires a cluster key" in p["last_error"] or "cluster key" in p["last_error"]
               for p in status["peers"]), status["peers"]
    for i in (m1, m2):
        assert "outsider" not in await _connected_ids(cluster, i)

    # API clients: no key → a clear error; a wrong key → refused; the right key works.
    with pytest.raises(LinkBroken, match="requires a cluster key"):
        async with cluster.client(m1, key=None):
            pass
    with pytest.raises(RemoteProtocolError, match="cluster key"):
        async with Client.connect(cluster.nodes[m1].url, "wrong key"):
            pass
    async with cluster.client(m1) as client:
        assert (await client.get("private"))[0] == [entry]
    # The key itself never reaches a log.
    for node in cluster.nodes:
        assert key not in node.log_text()
