"""``Client`` against a real node served in this trio run: the watch stream's lifetime.

Regression (issue 8, item 9): ``Client.watch`` was an async generator that held its own
websocket connection (a nursery) across ``yield``; leaving the ``async for`` with ``break``
inside ``trio.move_on_after`` (wrapped in ``aclosing`` as documented) raised ``RuntimeError:
Cancel scope stack corrupted``. The stream's connection now lives in the client's own nursery.
"""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path

import pytest
import trio

from p2p_ledger.core.errors import InvalidContextName, LinkBroken
from p2p_ledger.trio.client import Client
from p2p_ledger.trio.runtime import open_node


async def test_break_inside_move_on_after(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", listen="127.0.0.1:0", discovery=False) as node:
        await node.append("c", "one")
        await node.append("c", "two")
        async with Client.connect(node.url) as client:
            got = []
            async with aclosing(client.watch("c")) as stream:
                with trio.move_on_after(10) as scope:
                    async for entry, _cursor in stream:
                        got.append(entry.payload)
                        break
            assert got == [b"one"] and not scope.cancelled_caught
            # The scope the other way round, and a deadline that expires while waiting.
            with trio.move_on_after(0.5) as scope:
                async with aclosing(client.watch("c")) as stream:
                    async for entry, _cursor in stream:
                        got.append(entry.payload)
            assert got == [b"one", b"one", b"two"] and scope.cancelled_caught
            # Without aclosing: break, and the client still closes cleanly.
            cursors = []
            with trio.move_on_after(10):
                async for _entry, cursor in client.watch("c"):
                    cursors.append(cursor)
                    break
            assert len(cursors) == 1 and str(cursors[0]).endswith(":1")
            # The client's own connection still works after all of that.
            assert (await client.status())["entries"] == 2


async def test_watch_delivers_new_entries_and_errors(tmp_path: Path) -> None:
    async with open_node(tmp_path / "n", listen="127.0.0.1:0", discovery=False) as node:
        async with Client.connect(node.url) as client:
            with pytest.raises(InvalidContextName):
                async with aclosing(client.watch("no spaces allowed")) as stream:
                    async for _ in stream:
                        pass
            seen = []
            async with trio.open_nursery() as nursery:
                ready = trio.Event()

                async def watcher() -> None:
                    with trio.fail_after(20):
                        async with aclosing(client.watch("live")) as stream:
                            ready.set()
                            async for entry, _cursor in stream:
                                seen.append(entry.payload)
                                if len(seen) == 3:
                                    break

                nursery.start_soon(watcher)
                await ready.wait()
                for payload in ("a", "b", "c"):
                    await node.append("live", payload)
            assert seen == [b"a", b"b", b"c"]


async def test_an_error_in_the_clients_block_comes_out_as_itself(tmp_path: Path) -> None:
    """Regression: the client's nursery wrapped whatever its ``async with`` block raised in an
    ExceptionGroup, so callers catching ``LedgerError`` (the real-mode runner's writers, when a
    node was killed mid-call) missed the ``LinkBroken`` and the run died."""
    async with open_node(tmp_path / "n", listen="127.0.0.1:0", discovery=False) as node:
        with pytest.raises(LinkBroken, match="node went away"):
            async with Client.connect(node.url):
                raise LinkBroken("node went away")
