"""The trio driver's own decisions: ``Node.watch`` with a key filter, and the slow-peer drop
(a link whose outbox passes ``MAX_QUEUE_BYTES`` is closed, the node keeps serving)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from p2p_ledger.core.identity import Identity
from p2p_ledger.testing import open_raw_peer, serve_raw_peer
from p2p_ledger.trio import runtime
from p2p_ledger.trio.runtime import Node, open_node


async def _when(node: Node, condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait until ``condition`` holds, checked each time the driver carries out the core's
    actions (after every frame, link loss and commit): no polling sleeps."""
    changed = trio.Event()
    inner = node._flush

    def flush() -> None:
        inner()
        changed.set()

    node._flush = flush  # type: ignore[method-assign]
    try:
        with trio.fail_after(timeout):
            while not condition():
                await changed.wait()
                changed = trio.Event()
    finally:
        node._flush = inner  # type: ignore[method-assign]


async def test_watch_with_a_key_yields_only_that_key_backlog_and_live(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", node_id="node-a", synchronous="OFF") as node:
        await node.append_many([("ctx", f"old-{k}", k, None) for k in ("a", "b", "a", "c")])
        seen: list[tuple[str, bytes]] = []
        done = trio.Event()

        async def watcher() -> None:
            async with aclosing(node.watch("ctx", key="a")) as stream:  # type: ignore[type-var]
                async for entry, _cursor in stream:
                    seen.append((entry.key, entry.payload))
                    if len(seen) == 4:
                        done.set()
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await node.append_many([("ctx", f"new-{k}", k, None) for k in ("b", "a", "c")])
            await node.append("other", b"new-a", key="a")  # another context: not watched
            await node.append("ctx", b"last-a", key="a")
            with trio.fail_after(10):
                await done.wait()
        assert seen == [("a", b"old-a"), ("a", b"old-a"), ("a", b"new-a"), ("a", b"last-a")]


async def test_watch_with_a_key_resumes_from_its_cursor(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", node_id="node-a", synchronous="OFF") as node:
        await node.append_many([("ctx", f"p{i}", "ab"[i % 2], None) for i in range(6)])
        got = []
        cursor = None
        async with aclosing(node.watch("ctx", key="b")) as stream:  # type: ignore[type-var]
            async for entry, at in stream:
                got.append(entry.payload)
                cursor = at
                if len(got) == 2:
                    break
        await node.append("ctx", b"p6", key="b")
        rest = []
        async with aclosing(node.watch("ctx", key="b", since=cursor)) as stream:  # type: ignore[type-var]
            async for entry, _ in stream:
                rest.append(entry.payload)
                if len(rest) == 2:
                    break
        assert got == [b"p1", b"p3"] and rest == [b"p5", b"p6"]


async def _silent_peer(ws, opened: list[str]) -> None:  # noqa: ANN001
    """Opens the link, then never sends again (no FLOW credit): the node's sends pile up."""
    await open_raw_peer(ws, "sloth")
    opened.append("open")
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await ws.aclose()


async def test_a_peer_that_reads_too_slowly_is_dropped(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The peer grants no flow credit, so past the transport's window every push stays queued;
    once the queue passes MAX_QUEUE_BYTES the node drops the link and keeps serving."""
    monkeypatch.setattr(runtime, "MAX_QUEUE_BYTES", 512 * 1024)
    caplog.set_level(logging.WARNING, logger="p2p_ledger")
    opened: list[str] = []
    async with trio.open_nursery() as nursery:
        url = await serve_raw_peer(nursery, functools.partial(_silent_peer, opened=opened))
        async with open_node(tmp_path / "n", peers=[url], synchronous="OFF") as node:
            sloth = Identity.from_seed("sloth").origin  # (open_raw_peer's key for "sloth")
            await _when(node, lambda: sloth in node.core.by_origin)
            conn = node.core.by_origin[sloth]
            # 8 appends of 128 KB each: 1 MB of pushes, far past the 128 KiB window.
            for i in range(8):
                await node.append("ctx", bytes([i]) * 128 * 1024)
            await _when(node, lambda: conn not in node.core.links)
            assert conn not in node._outboxes
            assert any("dropping the slow peer" in r.getMessage() for r in caplog.records)
            # The node still serves.
            entry = await node.append("ctx", b"still here")
            assert entry in node.get("ctx")[0]
        nursery.cancel_scope.cancel()
    assert opened
