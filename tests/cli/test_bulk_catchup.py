"""Large entries between two node processes: a fresh node catches up on 100 KB entries from
another over a real loopback websocket, with more bytes than the flow-control window in every
context (``bench --only sync``, table "Sync (e)", measures how fast; this checks what arrives).
"""

from __future__ import annotations

import hashlib
import random
import time

import trio

from p2p_ledger.trio.client import Client

from .conftest import Procs

SIZE = 100 * 1024


async def _contents(url: str) -> dict[str, list[tuple[str, str, str]]]:
    """Every context's entries (id, key, payload digest) in causal order."""
    async with Client.connect(url) as client:
        out = {}
        for row in await client.contexts():
            entries, _ = await client.get(row["context"])
            out[row["context"]] = [(e.id, e.key, hashlib.sha256(e.payload).hexdigest())
                                   for e in entries]
        return out


async def _caught_up(url: str, entries: int, seconds: float) -> None:
    """Wait until the node at ``url`` holds ``entries`` (a bounded poll of another process)."""
    deadline = time.monotonic() + seconds
    async with Client.connect(url) as client:
        while (await client.status())["entries"] < entries:
            assert time.monotonic() < deadline, f"catch-up did not finish within {seconds} s"
            await trio.sleep(0.05)


async def test_a_fresh_node_takes_large_entries_intact(procs: Procs) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    full = procs.node("full", "--no-discovery")
    async with Client.connect(full.url) as client:
        # one context written in one commit (one stored row, sent as stored), another in
        # several (rows merged into one bundle): each more than a window (1 MiB) in all
        await client.append_many([("one-row", rng.randbytes(SIZE), f"k{i}", None)
                                  for i in range(14)])
        for i in range(14):
            await client.append_many([("rows", rng.randbytes(SIZE), f"k{i}", None)])
    fresh = procs.node("fresh", "--no-discovery", "--peer", full.url)
    await _caught_up(fresh.url, 28, 60)
    ours, theirs = await _contents(full.url), await _contents(fresh.url)
    assert sorted(ours) == ["one-row", "rows"] and all(len(v) == 14 for v in ours.values())
    assert theirs == ours


async def test_a_context_larger_than_a_part_arrives_in_parts_intact(procs: Procs) -> None:
    """One context of 15.4 MB (140 × 110 KB in 28 commits): more than one answer's part
    (``ledger.PART_BYTES``, 8 MiB; an answer stops at the first head past it, an anchor every
    64 seqs: here after 130 entries), so the fresh node takes it in two answers, asking for
    the second with its state vector after the first."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    full = procs.node("full", "--no-discovery")
    async with Client.connect(full.url) as client:
        for i in range(28):
            await client.append_many([("big", rng.randbytes(110 * 1024), f"k{i}.{j}", None)
                                      for j in range(5)])
    fresh = procs.node("fresh", "--no-discovery", "--peer", full.url)
    await _caught_up(fresh.url, 140, 90)
    ours, theirs = await _contents(full.url), await _contents(fresh.url)
    assert len(ours["big"]) == 140 and theirs == ours
