"""NodeProcess: the one controller of real node processes (demo, real mode, LocalCluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_ledger.harness.process import NodeFailedToStart, NodeProcess, child_env, stop_all
from p2p_ledger.trio.client import Client

pytestmark = pytest.mark.slow


async def test_start_kill_restart_on_the_same_port_and_stop(tmp_path: Path) -> None:
    node = NodeProcess("p1", tmp_path / "p1", tmp_path / "logs", args=["--no-discovery"])
    try:
        await node.start()
        assert node.alive and node.url == f"ws://127.0.0.1:{node.port}"
        async with Client.connect(node.url) as client:
            await client.append("ctx", "kept")
        node.kill()
        assert not node.alive and node.returncode == -9
        await node.restart(same_port=True)
        async with Client.connect(node.url) as client:
            assert [e.payload for e in (await client.get("ctx"))[0]] == [b"kept"]
        assert node.runs == 2 and len(node.logs) == 2
        assert node.stop() == 0  # SIGTERM is the clean way down
        assert node.log_text().count(" ready at ") == 2  # both runs' stderr, in order
        assert node.log_tail(1) == "  p1| " + node.log_text().splitlines()[-1]
    finally:
        node.kill()


async def test_a_node_that_cannot_start_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    node = NodeProcess("bad", tmp_path / "file", tmp_path / "logs")
    with pytest.raises(NodeFailedToStart, match=r"bad exited with status [1-9]"):
        await node.start(timeout=30)
    assert not node.alive
    stop_all([node])  # nothing left to stop: a no-op


def test_children_inherit_no_ledger_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2P_LEDGER_CLUSTER_KEY", "secret")
    monkeypatch.setenv("P2P_LEDGER_NODE", "ws://elsewhere")
    env = child_env()
    assert not [k for k in env if k.startswith("P2P_LEDGER_")]
    assert str(Path(__file__).resolve().parents[2]) in env["PYTHONPATH"]
