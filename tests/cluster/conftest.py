"""LocalCluster: real ``p2p-ledger node`` processes on loopback, driven through ``api.Client``.

Each node is ``python -m p2p_ledger node --data DIR --listen 127.0.0.1:PORT --node-id ID
--peer URL... --gossip-interval 0.2``; its stdout and stderr go to files in the test's tmp dir
(so no pipe can fill), the ``ready ws://HOST:PORT ID`` line is awaited with a deadline, and
every wait polls a condition under ``trio.fail_after``: no bare sleeps. The fixture's finalizer
SIGKILLs whatever is still running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import Entry
from p2p_ledger.trio.api import Client

REPO = Path(__file__).resolve().parents[2]
GOSSIP = "0.2"
READY_TIMEOUT = 20.0
POLL = 0.05


class NodeFailedToStart(RuntimeError):
    pass


@dataclass
class ProcNode:
    """One node process (and its data directory, kept across restarts)."""

    node_id: str
    data: Path
    peers: list[str]
    key: str | None
    extra: list[str]
    logdir: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    runs: int = 0
    port: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Everything this node logged (stderr), across every run."""
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


class LocalCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[ProcNode] = []

    # ---- processes ---------------------------------------------------------------------------

    async def add(
        self,
        node_id: str | None = None,
        peers: Sequence[str | int] = (),
        key: str | None = None,
        extra: Sequence[str] = (),
    ) -> int:
        """Start a new node; ``peers`` are URLs or indexes of running nodes. Returns its index."""
        node_id = node_id or f"n{len(self.nodes) + 1}"
        urls = [self.nodes[p].url if isinstance(p, int) else p for p in peers]
        node = ProcNode(node_id, self.root / node_id, urls, key, list(extra),
                        self.root / "logs")
        node.logdir.mkdir(parents=True, exist_ok=True)
        self.nodes.append(node)
        await self._spawn(node, "127.0.0.1:0")
        return len(self.nodes) - 1

    async def start(self, n: int, chain: bool = True, key: str | None = None) -> list[int]:
        """``n`` nodes; with ``chain`` each seeds the previous one (n2→n1, n3→n2, ...)."""
        out: list[int] = []
        for _ in range(n):
            peers = [out[-1]] if chain and out else []
            out.append(await self.add(peers=peers, key=key))
        return out

    async def _spawn(self, node: ProcNode, listen: str) -> None:
        node.runs += 1
        stdout = node.logdir / f"{node.node_id}.{node.runs}.out"
        stderr = node.logdir / f"{node.node_id}.{node.runs}.err"
        node.logs.append(stderr)
        cmd = [sys.executable, "-m", "p2p_ledger", "node", "--data", str(node.data),
               "--listen", listen, "--node-id", node.node_id, "--gossip-interval", GOSSIP]
        for url in node.peers:
            cmd += ["--peer", url]
        if node.key is not None:
            cmd += ["--cluster-key", node.key]
        cmd += node.extra
        env = {k: v for k, v in os.environ.items() if k != "P2P_LEDGER_CLUSTER_KEY"}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            node.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         cwd=self.root, env=env)
        deadline = trio.current_time() + READY_TIMEOUT
        while True:
            text = stdout.read_text(errors="replace")
            ready = [line for line in text.splitlines() if line.startswith("ready ")]
            if ready:
                _, url, node_id = ready[0].split()
                assert node_id == node.node_id, ready[0]
                node.url = url
                node.port = int(url.rsplit(":", 1)[1])
                return
            if node.proc.poll() is not None:
                raise NodeFailedToStart(f"{node.node_id} exited with {node.proc.returncode}:\n"
                                        + stderr.read_text(errors="replace")[-3000:])
            if trio.current_time() > deadline:
                self._kill(node)
                raise NodeFailedToStart(f"{node.node_id} not ready after {READY_TIMEOUT}s:\n"
                                        + stderr.read_text(errors="replace")[-3000:])
            await trio.sleep(POLL)

    def kill(self, i: int) -> None:
        """SIGKILL: no BYE, no clean shutdown; whatever was committed is on disk."""
        self._kill(self.nodes[i])

    def stop(self, i: int, timeout: float = 10.0) -> int:
        """SIGTERM and wait: the clean way down."""
        node = self.nodes[i]
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
        return node.proc.wait(timeout)

    @staticmethod
    def _kill(node: ProcNode) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)

    async def restart(self, i: int, same_port: bool = False, attempts: int = 10) -> None:
        """Start node ``i`` again on its data directory (killing it first if it runs).

        ``same_port`` listens on the old port again (retrying while it is still busy)."""
        node = self.nodes[i]
        self._kill(node)
        if not same_port:
            await self._spawn(node, "127.0.0.1:0")
            return
        for attempt in range(attempts):
            try:
                await self._spawn(node, f"127.0.0.1:{node.port}")
                return
            except NodeFailedToStart:
                if attempt == attempts - 1:
                    raise
                await trio.sleep(0.5)  # the port is still held: try again shortly

    def close(self) -> None:
        for node in self.nodes:
            self._kill(node)

    # ---- the API -----------------------------------------------------------------------------

    @asynccontextmanager
    async def client(self, i: int, key: str | None | bool = True) -> AsyncIterator[Client]:
        """A Client on node ``i``; ``key=True`` uses the node's own cluster key."""
        node = self.nodes[i]
        use = node.key if key is True else (key or None)
        async with Client.connect(node.url, use, timeout=10) as client:
            yield client

    async def append(self, i: int, context: str, payload: bytes | str, key: str = "") -> Entry:
        async with self.client(i) as c:
            return await c.append(context, payload, key)

    async def read(self, i: int, context: str, after: Cursor | str | None = None,
                   ) -> list[Entry]:
        async with self.client(i) as c:
            entries, _ = await c.get(context, after=after)
            return entries

    async def read_ids(self, i: int, context: str) -> list[str]:
        return [e.id for e in await self.read(i, context)]

    async def status(self, i: int) -> dict[str, Any]:
        async with self.client(i) as c:
            return await c.status()

    def running(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.alive]

    async def wait_for(self, condition: Callable[[], Awaitable[bool]], timeout: float,
                       what: str = "condition") -> None:
        """Poll an async condition until it holds; TooSlowError (naming ``what``) if it doesn't."""
        try:
            with trio.fail_after(timeout):
                while not await condition():
                    await trio.sleep(POLL * 2)
        except trio.TooSlowError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None

    async def roots(self, nodes: Sequence[int] | None = None) -> dict[int, str]:
        return {i: (await self.status(i))["root"] for i in (nodes or self.running())}

    async def wait_converged(self, timeout: float = 30.0,
                             nodes: Sequence[int] | None = None) -> str:
        """Wait until every running node (or ``nodes``) reports the same root; returns it."""
        roots: dict[int, str] = {}

        async def same() -> bool:
            nonlocal roots
            roots = await self.roots(nodes)
            return len(set(roots.values())) == 1

        try:
            await self.wait_for(same, timeout, "convergence")
        except AssertionError:
            raise AssertionError(f"not converged after {timeout}s: {roots}") from None
        return next(iter(roots.values()))

    async def wait_connected(self, i: int, others: Sequence[int], timeout: float = 20.0) -> None:
        want = {self.nodes[j].node_id for j in others}

        async def linked() -> bool:
            peers = (await self.status(i))["peers"]
            return want <= {p["node_id"] for p in peers if p["state"] == "connected"}

        await self.wait_for(linked, timeout, f"{self.nodes[i].node_id} connected to {want}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    started = time.monotonic()
    c = LocalCluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
        print(f"cluster of {len(c.nodes)} node(s) ran {time.monotonic() - started:.1f}s; "
              f"logs in {tmp_path / 'logs'}")
