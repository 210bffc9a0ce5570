"""Group commit in the trio driver and the timer's idleness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from p2p_ledger.trio.runtime import _Batch, open_node


async def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", node_id="node-a") as node:
        commits: list[int] = []
        store: Any = node.ledger.storage
        inner = store.commit

        def counting_commit(updates: Any, summaries: Any = None, heads: Any = (),
                            lamport: Any = None) -> None:
            commits.append(len(updates))
            inner(updates, summaries, heads, lamport)

        store.commit = counting_commit
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await node.append("ctx", f"p{i}", key=f"k{i}")

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
        # All 100 were pending before the committer ran: one commit, one update row.
        assert commits == [1]
        assert sorted(e.key for e in results.values()) == sorted(f"k{i}" for i in range(100))
        assert all(results[i].payload == f"p{i}".encode() for i in range(100))
        assert len({e.seq for e in results.values()}) == 100
        entries, _ = node.get("ctx")
        assert len(entries) == 100
        latency = node.metrics.append_latency  # (one observation per call, none negative)
        assert sum(latency.counts) == 100 and latency.sum >= 0


async def test_a_caller_cancelled_while_its_batch_waits_leaves_the_others_waiting() -> None:
    """Appenders park in their batch until the committer finishes it: a cancelled one leaves
    (and is not woken later), the others are all woken by one finish, and a wait on a batch
    already finished returns at once."""
    batch = _Batch()
    woken: list[int] = []

    async def waiter(i: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await batch.wait()
            woken.append(i)

    async with trio.open_nursery() as nursery:
        scopes = [await nursery.start(waiter, i) for i in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        scopes[1].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert len(batch.waiting) == 2 and woken == []
        batch.finish()
    assert sorted(woken) == [0, 2]
    with trio.fail_after(1):
        await batch.wait()


async def test_append_many_returns_its_own_entries_in_order(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", node_id="node-a") as node:
        async def many(tag: str) -> list[Any]:
            return await node.append_many([("ctx", f"{tag}{i}", tag, None) for i in range(5)])

        out: dict[str, list[Any]] = {}

        async def run(tag: str) -> None:
            out[tag] = await many(tag)

        async with trio.open_nursery() as nursery:
            for tag in "abc":
                nursery.start_soon(run, tag)
        for tag in "abc":
            assert [e.payload for e in out[tag]] == [f"{tag}{i}".encode() for i in range(5)]
        assert await node.append_many([]) == []


async def test_failed_commit_fails_every_caller_in_it(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", node_id="node-a") as node:
        store: Any = node.ledger.storage
        inner = store.commit

        def broken(updates: Any, summaries: Any = None, heads: Any = (),
                   lamport: Any = None) -> None:
            raise OSError("disk full")

        store.commit = broken
        errors: list[BaseException] = []

        async def one(i: int) -> None:
            try:
                await node.append("ctx", f"p{i}")
            except OSError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
        assert len(errors) == 10
        assert node.get("ctx")[0] == []
        store.commit = inner
        entry = await node.append("ctx", "after")
        assert [e.id for e in node.get("ctx")[0]] == [entry.id]


async def test_timer_does_not_spin_after_an_append(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", node_id="node-a") as node:
        ticks = 0
        inner = node.core.tick

        def counting_tick(now: float) -> None:
            nonlocal ticks
            ticks += 1
            inner(now)

        node.core.tick = counting_tick  # type: ignore[method-assign]
        await node.append("ctx", "x")
        await trio.sleep(0.2)
        assert ticks < 10  # it used to re-kick itself: tens of thousands per second


async def test_summaries_are_stored_once_the_node_has_been_idle_for_the_lag(
        tmp_path: Path) -> None:
    """A commit leaves its contexts' summaries lagging (SUMMARY_LAG); the timer stores them
    once the node has committed nothing for that long, so a kill -9 then leaves nothing to
    settle (``NodeCore._committed``)."""
    from p2p_ledger.core.ledger import SUMMARY_LAG

    async with open_node(tmp_path / "n", node_id="node-a") as node:
        store: Any = node.ledger.storage
        await node.append("ctx", "one")
        assert node.ledger.lags() and store.lagging_summaries()[1] == ["ctx"]
        with trio.fail_after(10 * SUMMARY_LAG):  # (bounded: a stuck timer fails the test)
            while store.lagging_summaries()[1]:
                await trio.sleep(SUMMARY_LAG / 10)
        assert not node.ledger.lags()


async def test_the_idle_summary_store_waits_the_lag_after_a_slow_commit_ends(
        tmp_path: Path) -> None:
    """The node is idle from when its last commit ended, not from when it began: a commit
    that takes longer than SUMMARY_LAG (the first append into a cold context of 1M entries
    loads it, ~1 s) left the summary store due at once, and the timer often ran it (~2.5 s
    at 1M, the context's Merkle tree built) before the appender was woken."""
    import time

    from p2p_ledger.core.ledger import SUMMARY_LAG

    async with open_node(tmp_path / "n", node_id="node-a") as node:
        inner = node.ledger.append
        ended: list[float] = []

        def slow_append(*args: Any, **kwargs: Any) -> Any:
            appended = inner(*args, **kwargs)
            time.sleep(1.2 * SUMMARY_LAG)  # (a commit that took that long)
            ended.append(trio.current_time())
            return appended

        node.ledger.append = slow_append  # type: ignore[method-assign]
        await node.append("ctx", "one")
        assert node.ledger.lags()  # (stored by no commit: the idle store waits)
        assert node.core._summaries_at >= ended[0] + SUMMARY_LAG
