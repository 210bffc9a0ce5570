"""Received updates are committed in groups, and nothing is read or shipped before its commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from p2p_ledger.core.bundle import decode_bundle
from p2p_ledger.core.context_log import ARRAY_NAME
from p2p_ledger.core.yjs import appended_values
from p2p_ledger.trio.runtime import open_node

CONTEXTS = [f"c{i}" for i in range(8)]
ENTRIES = 240


def _durable(store: Any, context: str) -> int:
    """Entries of ``context`` in the store's committed rows (its stored summary may lag them:
    ``Ledger.summary_lag_ns``)."""
    return sum(len(appended_values(decode_bundle(blob).update, ARRAY_NAME))
               for blob in store.iter_context(context))


async def test_a_watcher_and_a_forward_see_only_committed_received_entries(
        tmp_path: Path) -> None:
    async with open_node(tmp_path / "a", listen="127.0.0.1:0", node_id="a") as a, \
            open_node(tmp_path / "b", listen="127.0.0.1:0", node_id="b", peers=[a.url]) as b, \
            open_node(tmp_path / "c", node_id="c", peers=[b.url], discovery=False) as c:
        store: Any = b.ledger.storage
        rows: list[int] = []
        inner = store.commit

        def counting(updates: Any, summaries: Any = None, heads: Any = (),
                     lamport: Any = None) -> None:
            rows.append(len(updates))
            inner(updates, summaries, heads, lamport)

        store.commit = counting
        with trio.fail_after(60):
            while not (a.core.links and c.core.links):
                await trio.sleep(0.01)  # a bounded poll: both links open
        seen: dict[str, int] = {}
        late: list[str] = []

        async def watch(context: str, done: trio.Event) -> None:
            async for entry, _ in b.watch(context):
                seen[context] = seen.get(context, 0) + 1
                if _durable(store, context) < seen[context]:
                    late.append(f"{context}: entry {entry.id} read before its commit")
                if sum(seen.values()) == ENTRIES:
                    done.set()

        done = trio.Event()
        async with trio.open_nursery() as nursery:
            for name in CONTEXTS:
                nursery.start_soon(watch, name, done)

            async def writer(i: int) -> None:
                await a.append(CONTEXTS[i % len(CONTEXTS)], f"p{i}")

            async with trio.open_nursery() as writers:
                for i in range(ENTRIES):
                    writers.start_soon(writer, i)
            with trio.fail_after(120):
                await done.wait()
                # c gets them only through b (forwards and b's answers): it must converge
                while c.ledger.entry_count() < ENTRIES:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert not late, late[:3]
        assert sum(seen.values()) == ENTRIES
        assert b.ledger.root() == a.ledger.root() == c.ledger.root()
        print(f"b committed {sum(rows)} received rows in {len(rows)} transactions")
