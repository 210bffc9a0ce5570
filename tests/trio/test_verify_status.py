"""status()["verified"]: a start checks nothing; verify() and the background check report."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from p2p_ledger.trio.runtime import open_node


async def _fill(data: Path) -> None:
    async with open_node(data, node_id="n") as node:
        for i in range(30):
            await node.append(f"c{i % 3}", f"p{i}")


async def _wait_verified(node: object) -> dict:
    with trio.fail_after(30):
        while node.status()["verified"]["state"] in ("never", "running"):  # type: ignore
            await trio.sleep(0.01)  # a bounded poll of the background task
    return node.status()["verified"]  # type: ignore


async def test_a_start_checks_nothing_and_verify_reports(tmp_path: Path) -> None:
    await _fill(tmp_path / "n")
    async with open_node(tmp_path / "n", node_id="n") as node:
        assert node.status()["verified"]["state"] == "never"
        assert await node.verify() == []
        assert node.status()["verified"] == {"state": "ok", "contexts": 3, "entries": 30,
                                             "problems": 0}


async def test_the_background_check_passes_then_catches_a_lying_summary(tmp_path: Path) -> None:
    data = tmp_path / "n"
    await _fill(data)
    async with open_node(data, node_id="n", verify_in_background=True) as node:
        assert await _wait_verified(node) == {"state": "ok", "contexts": 3, "entries": 30,
                                              "problems": 0}
    db = sqlite3.connect(data / "ledger.sqlite3")
    db.execute("UPDATE contexts SET entries = entries + 1 WHERE name = 'c1'")
    db.commit()
    db.close()
    async with open_node(data, node_id="n", verify_in_background=True) as node:
        assert node.status()["entries"] == 31  # what the summaries say, unchecked at start
        verified = await _wait_verified(node)
        assert verified["state"] == "failed" and verified["problems"] == 1


async def test_the_background_check_serves_between_steps_and_reads_one_view(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A context is checked in steps with the node serving between them, from the store as it
    was when its check began: entries committed meanwhile are neither counted nor a problem."""
    from p2p_ledger.core import audit

    monkeypatch.setattr(audit, "CHECK_BATCH", 8)  # 10 rows of 20 entries: a step per row
    data = tmp_path / "n"
    async with open_node(data, node_id="n") as node:
        for row in range(10):
            await node.append_many([("big", f"p{row}-{i}", "", None) for i in range(20)])
    async with open_node(data, node_id="n", verify_in_background=True) as node:
        with trio.fail_after(30):
            while not 0 < node.status()["verified"]["entries"] < 200:
                await trio.sleep(0)  # a bounded poll of the background task, step by step
        for i in range(5):  # committed while the check is half way through "big"
            await node.append("big", f"late{i}")
        assert len(node.get("big", limit=1000)[0]) == 205
        assert await _wait_verified(node) == {"state": "ok", "contexts": 1, "entries": 200,
                                              "problems": 0}
        assert await node.verify() == []
        assert node.status()["verified"]["entries"] == 205


async def test_the_background_check_reports_a_damaged_head_and_the_node_serves_on(
        tmp_path: Path) -> None:
    data = tmp_path / "n"
    await _fill(data)
    db = sqlite3.connect(data / "ledger.sqlite3")
    assert db.execute("UPDATE heads SET head = x'00' WHERE ctx = "
                      "(SELECT id FROM contexts WHERE name = 'c2')").rowcount > 0
    db.commit()
    db.close()
    async with open_node(data, node_id="n", verify_in_background=True) as node:
        verified = await _wait_verified(node)
        assert verified["state"] == "failed" and verified["problems"] == 1
        assert verified["contexts"] == 3
        await node.append("c0", "still serving")


async def test_verify_serves_between_its_steps(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``await node.verify()`` (and the API's verify, ``verify --node``) checks in steps: the
    node appends and answers while it is half way through a context."""
    from p2p_ledger.core import audit as audit_module

    monkeypatch.setattr(audit_module, "CHECK_BATCH", 16)
    data = tmp_path / "n"
    async with open_node(data, node_id="n") as node:
        for row in range(10):
            await node.append_many([("big", f"p{row}-{i}", "", None) for i in range(20)])
    async with open_node(data, node_id="n") as node:
        found: list[list[str]] = []

        async def check() -> None:
            found.append(await node.verify())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check)
            with trio.fail_after(30):
                while not 0 < node.status()["verified"]["entries"] < 200:
                    await trio.sleep(0)  # a bounded poll of the check, step by step
            await node.append("big", "while verifying")  # (checked by the next run)
        assert found == [[]]
        assert node.status()["verified"] == {"state": "ok", "contexts": 1, "entries": 200,
                                             "problems": 0}
