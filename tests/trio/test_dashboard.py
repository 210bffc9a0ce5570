"""The dashboard in a real browser, and the plain-HTTP endpoints on the node's port.

Two real nodes (websocket server, SQLite, peer links) run in this trio run; headless Chromium
(Debian's ``chromium``; ``.ci/run`` installs it), driven over its DevTools protocol, opens one
node's page, an entry is appended on
the *other* node, and the rendered DOM must show that entry (through the live tail, which reads
the JSON API over a websocket) and both nodes, within a few seconds. A screenshot is saved.
/metrics is scraped with prometheus_client's own parser and must move as the node works.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.trio.client import connect as ws_connect
from websockets.trio.connection import Connection

from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.entry import NO_PREV, make_entry
from p2p_ledger.core.identity import Identity
from p2p_ledger.testing import forged_update
from p2p_ledger.trio.http import metrics_token
from p2p_ledger.trio.metrics import BatchHistogram
from p2p_ledger.trio.runtime import open_node

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_DIR = os.environ.get("P2P_LEDGER_SCREENSHOT_DIR")  # keep the picture somewhere


def _http(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _Page:
    """One page of a headless Chromium, driven over the DevTools protocol (a websocket)."""

    def __init__(self, ws: Connection) -> None:
        self.ws, self.calls = ws, 0

    async def _call(self, method: str, **params: object) -> dict[str, Any]:
        self.calls += 1
        await self.ws.send(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:  # no domain is enabled, so only answers come; skip any other
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == self.calls:
                assert "error" not in reply, reply
                return dict(reply["result"])

    async def html(self) -> str:
        result = await self._call("Runtime.evaluate", returnByValue=True,
                                  expression="document.documentElement.outerHTML")
        # (no value while the document is not there yet: the evaluation threw; callers poll)
        return str(result["result"].get("value", ""))

    async def screenshot(self) -> bytes:
        return base64.b64decode((await self._call("Page.captureScreenshot"))["data"])


@asynccontextmanager
async def _browser(tmp_path: Path, url: str) -> AsyncIterator[_Page]:
    """Chromium showing ``url``; it writes its DevTools port to a file in its profile."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    proc = await trio.lowlevel.open_process(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", "--window-size=1280,860", "--remote-debugging-port=0",
         url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(30):
            while not (port_file := profile / "DevToolsActivePort").exists() \
                    or len(port_file.read_text().split()) < 2:
                assert proc.poll() is None, "chromium exited"
                await trio.sleep(0.05)
            port = port_file.read_text().split()[0]
            while not (pages := [t for t in json.loads(
                    (await get(f"http://127.0.0.1:{port}/json/list"))[1]) if t["type"] == "page"]):
                await trio.sleep(0.05)
        async with ws_connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            yield _Page(ws)
    finally:
        proc.kill()
        await proc.wait()


async def get(url: str, token: str | None = None) -> tuple[int, str]:
    return await trio.to_thread.run_sync(_http, url, token)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_health_readiness_and_metrics_move(tmp_path: Path) -> None:
    async with open_node(tmp_path / "a", listen="127.0.0.1:0", node_id="a") as a, \
            open_node(tmp_path / "b", listen="127.0.0.1:0", node_id="b", peers=[a.url]) as b:
        http_a = a.url.replace("ws://", "http://")
        assert await get(http_a + "/healthz") == (200, "ok\n")
        status, text = await get(http_a + "/metrics")
        before = _samples(text)
        assert status == 200 and before[("p2p_ledger_entries", ())] == 0
        for i in range(5):
            await a.append("ctx", f"entry {i}")
        await b.append("ctx", "from b")
        with trio.fail_after(20):
            while a.ledger.root() != b.ledger.root():
                await trio.sleep(0.05)
        with trio.fail_after(20):  # until a round tells a that b holds its root
            while (ready := await get(http_a + "/readyz"))[0] != 200:
                assert ready[1].startswith("not ready: not caught up")
                await trio.sleep(0.1)
        assert "caught up" in ready[1]
        after = _samples((await get(http_a + "/metrics"))[1])
        assert after[("p2p_ledger_entries", ())] == 6
        assert after[("p2p_ledger_contexts", ())] == 1
        assert after[("p2p_ledger_contexts_loaded", ())] == 1  # the one just written
        assert after[("p2p_ledger_context_loads_total", ())] == 0  # never evicted, so never loaded
        assert after[("p2p_ledger_peers", (("state", "connected"),))] >= 1
        assert after[("p2p_ledger_append_latency_seconds_count", ())] == 5
        assert after[("p2p_ledger_commit_batch_entries_sum", ())] == 5
        assert after[("p2p_ledger_frames_sent_total", (("type", "UPDATE"),))] >= 1
        assert after[("p2p_ledger_received_bytes_total", (("type", "UPDATE"),))] > 0
        assert after[("p2p_ledger_reconcile_rounds_total", ())] >= 1
        assert after[("p2p_ledger_forks_seen_total", ())] == 0
        assert ("p2p_ledger_heal_duration_seconds_count", ()) in after
        assert "entry 0" not in text and "from b" not in text  # no entry contents
        assert (await get(http_a + "/nope"))[0] == 404


async def test_forks_seen_counts_the_positions_a_writer_signed_twice(tmp_path: Path) -> None:
    mallory = Identity.from_seed("mallory")

    def branch(payload: bytes) -> bytes:
        entry = make_entry("c1", "k", payload, {}, 1, mallory.origin, 5, 1, 0, NO_PREV)
        head = mallory.sign_head("c1", 5, 1, bytes.fromhex(entry.id))
        return encode_bundle([head], forged_update([entry.record], 4242 + len(payload)))

    async with open_node(tmp_path / "f", listen="127.0.0.1:0") as node:
        url = node.url.replace("ws://", "http://") + "/metrics"
        # (received updates wait for the committer, which a frame from a link would wake; a
        # read such as /metrics commits nothing: commit them as it would)
        node.ledger.apply_remote("c1", branch(b"left"))
        node.ledger.flush()
        assert _samples((await get(url))[1])[("p2p_ledger_forks_seen_total", ())] == 0
        node.ledger.apply_remote("c1", branch(b"right!"))
        node.ledger.flush()
        assert _samples((await get(url))[1])[("p2p_ledger_forks_seen_total", ())] == 1


async def test_a_cluster_key_guards_metrics_and_readiness(tmp_path: Path) -> None:
    async with open_node(tmp_path / "k", listen="127.0.0.1:0", cluster_key="s3cret") as node:
        base = node.url.replace("ws://", "http://")
        assert (await get(base + "/healthz"))[0] == 200
        assert (await get(base + "/metrics"))[0] == 401
        assert (await get(base + "/readyz"))[0] == 401
        assert (await get(base + "/metrics", "wrong"))[0] == 401
        token = metrics_token(b"s3cret")
        assert (await get(base + "/metrics", token))[0] == 200
        assert (await get(base + "/readyz", token))[0] == 200
    async with open_node(tmp_path / "p", listen="127.0.0.1:0", cluster_key="s3cret",
                         public_metrics=True) as node:
        assert (await get(node.url.replace("ws://", "http://") + "/metrics"))[0] == 200


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
async def test_the_dashboard_shows_peers_and_a_remote_entry_in_a_browser(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    async with open_node(tmp_path / "a", listen="127.0.0.1:0", node_id="alpha") as a, \
            open_node(tmp_path / "b", listen="127.0.0.1:0", node_id="beta", peers=[a.url]) as b:
        await b.append("agent/notes", "warming up", key="boot")
        with trio.fail_after(20):
            while a.ledger.root() != b.ledger.root():
                await trio.sleep(0.05)
        page = a.url.replace("ws://", "http://") + "/"

        async def later() -> None:  # while the page is open: an entry on the *other* node
            await trio.sleep(1.5)
            await b.append("agent/notes", "hello from beta", key="greeting")

        async with trio.open_nursery() as nursery, _browser(tmp_path, page) as browser:
            nursery.start_soon(later)
            # A bounded poll of the live page (it runs in real time: a reply the loaded machine
            # delays is waited for, where a --dump-dom under a virtual-time budget raced it).
            # why: "agrees" needs a gossip round after b's second append, and the counts come
            # from a status poll (once a second) that may predate the tail's entry.
            with trio.fail_after(45):
                while not ("hello from beta" in (html := await browser.html())
                           and "agrees" in html and re.search(r'id="entries"[^>]*>2<', html)):
                    await trio.sleep(0.2)
            assert "alpha" in html and "<td>beta</td>" in html
            shot = Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path
            shot.mkdir(parents=True, exist_ok=True)
            (shot / "dashboard.png").write_bytes(await browser.screenshot())
        assert (shot / "dashboard.png").stat().st_size > 10_000


def test_batch_histogram_reads_as_prometheus_histogram_would() -> None:
    """A commit's latencies observed as one batch give the samples (every bucket, count, sum)
    that one ``Histogram.observe`` per append gives, values on a bound included."""
    bounds = (0.001, 0.01, 0.1, 1.0)
    values = [0.0, 0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 7.5]
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("lat_seconds", "latency", bounds, ours_registry)
    theirs = Histogram("lat_seconds", "latency", buckets=bounds, registry=theirs_registry)
    ours.observe_since([-v for v in values[:4]], 0.0)  # (started v before 0: exactly v)
    ours.observe_since([-v for v in values[4:]], 0.0)
    for value in values:
        theirs.observe(value)

    def read(registry: CollectorRegistry) -> dict[Any, float]:
        samples = _samples(generate_latest(registry).decode())
        return {k: round(v, 9) for k, v in samples.items() if not k[0].endswith("_created")}

    assert read(ours_registry) == read(theirs_registry)
    assert read(ours_registry)[("lat_seconds_count", ())] == len(values)
