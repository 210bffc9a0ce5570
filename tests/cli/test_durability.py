"""Acknowledged means durable: SIGKILL after the last ack loses nothing; verify finds corruption."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from .conftest import NodeProc, Procs, assert_one_line_error, cli, json_lines, ok, run


def _append_acked(node: NodeProc, context: str, n_single: int, n_batch: int) -> list[str]:
    ids = []
    for i in range(n_single):
        [entry] = json_lines(ok(run("append", "--node", node.url, context, f"single {i}")).stdout)
        ids.append(entry["id"])
    # The last ack comes from a real process: exit 0 means durable, then the node is killed.
    batch = json_lines(ok(cli("append", "--node", node.url, context, "-",
                              stdin="".join(f"batch {i}\n" for i in range(n_batch)))).stdout)
    return ids + [b["id"] for b in batch]


def test_acknowledged_entries_survive_sigkill(procs: Procs) -> None:
    first = procs.node("d", "--node-id", "d")
    acked = _append_acked(first, "durable/ctx", n_single=5, n_batch=300)
    first.proc.kill()  # right after the last ack: no clean shutdown, no flush
    assert first.proc.wait(timeout=10) == -signal.SIGKILL

    again = procs.node("d", data=first.data)  # the stored id is reused
    assert again.node_id == "d"
    read = json_lines(ok(run("read", "--node", again.url, "durable/ctx")).stdout)
    assert [r["id"] for r in read] == acked  # all of them, in causal (= append) order
    [status] = json_lines(ok(run("status", "--node", again.url)).stdout)
    # (what the crash left lagging settled, at the read at the latest)
    assert (status["settling"], status["entries"]) == (0, 305)
    assert again.stop() == 0

    [verified] = json_lines(ok(cli("verify", "--data", str(first.data))).stdout)
    assert verified["ok"] is True and (verified["node_id"], verified["entries"]) == ("d", 305)
    text = ok(cli("verify", "--data", str(first.data), "--format", "text")).stdout
    assert text.startswith("ok: node d: 305 entries in 1 contexts"), text


def _corrupt_payload(data: Path, marker: bytes) -> None:
    db = sqlite3.connect(data / "ledger.sqlite3")
    try:
        for row_id, blob in db.execute("SELECT id, blob FROM updates").fetchall():
            at = bytes(blob).find(marker)
            if at >= 0:
                bad = bytearray(blob)
                bad[at] ^= 0x20  # same length: the update still parses, the record's hash breaks
                db.execute("UPDATE updates SET blob = ? WHERE id = ?", (bytes(bad), row_id))
                db.commit()
                return
    finally:
        db.close()
    raise AssertionError(f"{marker!r} not found in the store")


def test_verify_names_the_corrupted_context_and_entry(procs: Procs) -> None:
    node = procs.node("c", "--node-id", "c")
    ok(run("append", "--node", node.url, "fine/ctx", "untouched"))
    [victim] = json_lines(ok(run("append", "--node", node.url, "bad/ctx", "payload-to-corrupt"))
                          .stdout)
    assert node.stop() == 0
    ok(run("verify", "--data", str(node.data)))

    _corrupt_payload(node.data, b"payload-to-corrupt")
    result = cli("verify", "--data", str(node.data))
    assert_one_line_error(result, 1, "IntegrityError")
    assert "bad/ctx" in result.stderr and victim["id"] in result.stderr


def test_verify_refuses_a_running_node(node: NodeProc) -> None:
    assert_one_line_error(run("verify", "--data", str(node.data)), 1, "StoreLockedError")


def test_second_process_on_the_same_data_dir_is_refused(node: NodeProc) -> None:
    result = cli("node", "--data", str(node.data), "--listen", "127.0.0.1:0", timeout=20)
    assert_one_line_error(result, 1, "StoreLockedError")
    assert result.stdout == ""  # never claimed to be ready
    assert node.proc.poll() is None  # the first one is unharmed
    ok(run("status", "--node", node.url))
