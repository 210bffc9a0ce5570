"""Damaged stores (issue 8, item 8), against real node processes.

Regressions: a truncated database gave a raw traceback from ``verify`` and ``node``; a 0-byte
database passed ``verify`` and the node started silently as a brand-new node with a new id. Now
each is one named line (``StoreDamagedError``), a store that vanished next to its WAL files is
refused as well, and ``p2p-ledger repair`` drops what fails verification so the node starts and
fetches it again from its peers.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from .conftest import NodeProc, Procs, assert_one_line_error, json_lines, ok, run

CONTEXTS = ("alpha", "beta", "gamma", "delta")
BATCHES = 8  # per context: one stored update (row) per batch
PER_BATCH = 40


def _payload(context: str, batch: int, i: int) -> str:
    return f"payload-{context}-{batch:02d}-{i:03d}-" + "p" * 80


def _fill(node: NodeProc) -> None:
    for batch in range(BATCHES):
        for context in CONTEXTS:
            lines = "\n".join(_payload(context, batch, i) for i in range(PER_BATCH))
            ok(run("append", "--node", node.url, context, "-", stdin=lines))


def _stopped_node(procs: Procs, name: str) -> Path:
    node = procs.node(name, "--node-id", name)
    _fill(node)
    assert node.stop() == 0
    return node.data


def _db(data: Path) -> Path:
    return data / "ledger.sqlite3"


def _refused(data: Path, fragment: str) -> None:
    for args in (["node", "--data", str(data), "--listen", "127.0.0.1:0"],
                 ["verify", "--data", str(data)]):
        result = run(*args)
        assert_one_line_error(result, 1, "StoreDamagedError")
        assert fragment in result.stderr, result.stderr


def test_truncated_store_is_a_named_error(procs: Procs) -> None:
    data = _stopped_node(procs, "t")
    db = _db(data)
    db.write_bytes(db.read_bytes()[: db.stat().st_size * 6 // 10])
    _refused(data, "repair --data")


def test_empty_store_is_refused_not_replaced(procs: Procs) -> None:
    data = _stopped_node(procs, "z")
    _db(data).write_bytes(b"")
    _refused(data, "0 bytes")
    assert _db(data).stat().st_size == 0  # nothing was created in its place


def test_vanished_store_next_to_its_wal_is_refused(procs: Procs) -> None:
    node = procs.node("v", "--node-id", "v")
    ok(run("append", "--node", node.url, "c", "x"))
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL  # leaves the WAL files behind
    assert (node.data / "ledger.sqlite3-wal").exists()
    _db(node.data).unlink()
    _refused(node.data, "vanished")
    assert not _db(node.data).exists()


def test_repair_keeps_what_verifies_and_peers_fill_the_rest(procs: Procs) -> None:
    a = procs.node("a", "--node-id", "a")
    _fill(a)
    b = procs.node("b", "--node-id", "b", "--peer", a.url)
    _wait_same_root(a, b)
    assert b.stop() == 0
    db = _db(b.data)
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big")  # (the header's page size)

    def row_end(context: str) -> int:
        last = raw.find(_payload(context, BATCHES - 1, PER_BATCH - 1).encode())
        return len(raw) if last < 0 else last

    # One flipped byte inside an early record of the context whose row ends first in the file
    # (a row starts in a leaf page and goes on in overflow pages: with 16 KiB pages the starts
    # of every row share one), in every copy the file holds (free pages may keep old ones):
    # its content id no longer matches ...
    first, second, *_ = sorted(CONTEXTS, key=row_end)
    needle = _payload(first, 0, 3).encode()
    at = raw.find(needle)
    assert at >= 0
    while at >= 0:
        raw[at + 40] = ord("q")
        at = raw.find(needle, at + 1)
    # ... and the file cut after the page where the next row ends (the others go on past it).
    cut = (row_end(second) // page + 1) * page
    assert cut < len(raw) * 9 // 10
    db.write_bytes(bytes(raw[:cut]))
    _refused(b.data, "repair --data")

    [report] = json_lines(ok(run("repair", "--data", str(b.data))).stdout)
    print(f"repair report: {report}")
    assert report["dropped_updates"] >= 2 and report["kept_updates"] >= 1
    assert any("IntegrityError" in p for p in report["problems"])
    assert Path(report["damaged_copy"]).is_dir()  # the damaged bytes are kept aside
    assert json_lines(ok(run("verify", "--data", str(b.data))).stdout)[0]["ok"] is True
    # The node starts again (same id) and fetches what was dropped from its peer.
    b2 = procs.node("b", "--node-id", "b", "--peer", a.url, data=b.data)
    assert b2.node_id == "b"
    _wait_same_root(a, b2)
    for context in CONTEXTS:
        ids_a = [e["id"] for e in json_lines(ok(run("read", "--node", a.url, context)).stdout)]
        ids_b = [e["id"] for e in json_lines(ok(run("read", "--node", b2.url, context)).stdout)]
        assert ids_a == ids_b and len(ids_a) == BATCHES * PER_BATCH


def test_repair_refuses_politely(tmp_path: Path) -> None:
    result = run("repair", "--data", str(tmp_path / "nothing"))
    assert_one_line_error(result, 1, "StoreDamagedError")
    empty = tmp_path / "empty"
    empty.mkdir()
    _db(empty).write_bytes(b"")
    assert_one_line_error(run("repair", "--data", str(empty)), 1, "StoreDamagedError")


def _wait_same_root(a: NodeProc, b: NodeProc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        [sa] = json_lines(ok(run("status", "--node", a.url)).stdout)
        [sb] = json_lines(ok(run("status", "--node", b.url)).stdout)
        if sa["root"] == sb["root"]:
            return
        assert time.monotonic() < deadline, f"roots differ after {timeout}s: {sa} {sb}"



def test_a_store_of_a_newer_format_is_refused_by_every_command(procs: Procs) -> None:
    data = _stopped_node(procs, "n")
    conn = sqlite3.connect(_db(data))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = _db(data).read_bytes()
    for args in (["node", "--data", str(data), "--listen", "127.0.0.1:0"],
                 ["verify", "--data", str(data)], ["repair", "--data", str(data)]):
        result = run(*args)
        assert_one_line_error(result, 1, "StoreError")
        assert "store format 99, written by a newer p2p-ledger" in result.stderr
    assert _db(data).read_bytes() == before and not list(data.glob("damaged-*"))
