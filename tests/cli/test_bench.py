"""Smoke test of ``p2p-ledger bench --quick``: the tables come out, with sane numbers.

Never a timing threshold: machines are shared and noisy. Only shape and sanity are checked
(every number finite, every measurement positive, every table rendered and aligned).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_ledger.cli.bench import Table, add_bench_command, run_bench

EXPECTED = [
    "Storage: durable appends",
    "Storage: rebuild",
    "Storage: memory after rebuilding",
    "Storage: Merkle tree",
    "Storage: checking peer input",
    "Sync (a)",
    "Sync (b)",
    "Sync (c)",
    "Sync, end to end",
    "Sync (d)",
    "Heal (simulator)",
    "Heal: what a dead peer costs",
]
# Columns that may legitimately hold 0 (the spread of identical repeats).
MAY_BE_ZERO = {"±%"}


def check_numbers(table: Table) -> None:
    assert table.rows, f"{table.title}: no rows"
    for row in table.rows:
        assert len(row) == len(table.columns)
        for column, cell in zip(table.columns, row, strict=True):
            if isinstance(cell, bool) or not isinstance(cell, (int, float)):
                continue
            where = f"{table.title} / {row[0]} / {column}"
            assert math.isfinite(cell), f"{where}: {cell}"
            if column in MAY_BE_ZERO:
                assert cell >= 0, f"{where}: {cell}"
            else:
                assert cell > 0, f"{where}: {cell}"


def check_rendered(table: Table, text: str) -> None:
    rendered = table.render()
    assert rendered in text
    lines = rendered.splitlines()
    assert lines[0] == table.title and set(lines[1]) == {"="}
    header, rule = lines[2], lines[3]
    assert set(rule.replace(" ", "")) == {"-"}
    # Columns line up: every cell ends where its rule ends (cells are right-aligned).
    ends = [i + 1 for i, ch in enumerate(rule) if ch == "-" and (i + 1 == len(rule)
                                                                   or rule[i + 1] == " ")]
    for line in [header] + lines[4:4 + len(table.rows)]:
        for end in ends[1:]:
            assert end <= len(line) and line[end - 1] != " ", f"misaligned: {line!r}"


def test_quick_bench_prints_every_table_with_sane_numbers() -> None:
    out = io.StringIO()
    tables = run_bench(quick=True, out=out)
    text = out.getvalue()
    titles = [t.title for t in tables]
    for prefix in EXPECTED:
        assert any(t.startswith(prefix) for t in titles), f"missing table {prefix!r}: {titles}"
    for table in tables:
        check_numbers(table)
        check_rendered(table, text)
    assert "bench finished" in text


def test_json_output_and_cli_wiring() -> None:
    parser = argparse.ArgumentParser(prog="p2p-ledger")
    add_bench_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--quick", "--only", "storage", "--json", "--repeats", "1"])
    assert args.quick and args.only == "storage" and args.json and args.repeats == 1
    out = io.StringIO()
    tables = run_bench(quick=True, only="storage", as_json=True, repeats=1, out=out)
    doc = json.loads(out.getvalue())
    assert doc["quick"] is True and doc["repeats"] == 1
    assert [t["title"] for t in doc["tables"]] == [t.title for t in tables]
    assert all(t["title"].startswith("Storage") for t in doc["tables"])
    for t in doc["tables"]:
        assert t["rows"] and set(t["rows"][0]) == set(t["columns"])
    assert callable(args.func)


@pytest.mark.slow
def test_the_scale_bench_runs_every_phase_with_real_processes() -> None:
    """``bench --scale`` at its smallest size: every phase (child processes, a real node pair
    for the catch-up) gives a row with a measurement, and the catch-up finishes."""
    result = subprocess.run(
        [sys.executable, "-m", "p2p_ledger", "bench", "--scale", "--entries", "10000",
         "--contexts", "1", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    [table] = json.loads(result.stdout)["tables"]
    rows = {row["measure"]: row for row in table["rows"]}
    assert {"ingest", "RSS after ingest", "start until ready", "verify --data",
            "verify peak RSS", "cold catch-up", "catch-up peak RSS, source / fresh node",
            "disk per entry"} <= set(rows)
    for measure in ("ingest", "verify --data", "cold catch-up", "disk per entry"):
        assert rows[measure]["ours"] > 0 and rows[measure]["baseline"] > 0, rows[measure]
    assert rows["cold catch-up"]["met"] is True  # it finished
    assert rows["contexts loaded when ready"]["ours"] == 0
    assert rows["… contexts reloaded (evicted, then appended to)"]["ours"] == 0
    cpu = rows["… CPU per entry, ours / the floor's (the machine is shared)"]
    assert cpu["ours"] > 0 and cpu["baseline"] > 0
    assert rows["… the floor: the mandated work alone (see notes)"]["ours"] > 0
    crash = rows["start after kill -9"]
    assert crash["ours"] > 0 and rows["… until every one settled"]["ours"] >= crash["ours"]
    assert rows["… contexts settling when ready"]["ours"] <= 1  # (0 if the last commit stored them)


def test_the_ingest_floor_writes_real_rows_heads_and_yjs_updates(tmp_path: Path) -> None:
    """The floor's phase (``bench_scale._Floor``) is a lower bound only if it does the work
    it claims: per commit a Yjs update row per context holding that context's records, a
    head row per context rewritten in place, and one crown."""
    from pycrdt import Array, Doc

    from p2p_ledger.core.entry import decode_record

    data = tmp_path / "floor"
    result = subprocess.run(
        [sys.executable, "-m", "p2p_ledger.cli.bench_scale", "floor", str(data), "2000", "100"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    commits = json.loads(result.stdout.splitlines()[-1])["commits"]
    db = sqlite3.connect(data / "floor.sqlite3")
    assert db.execute("SELECT count(*) FROM crowns").fetchone()[0] == commits
    assert db.execute("SELECT count(DISTINCT ctx), count(*) FROM heads").fetchone() == (100, 100)
    assert db.execute("SELECT count(DISTINCT ctx) FROM updates").fetchone()[0] == 100
    doc = Doc()
    for (blob,) in db.execute("SELECT blob FROM updates WHERE ctx = 1 ORDER BY id"):
        doc.apply_update(blob)
    records = list(doc.get("entries", type=Array))
    assert len(records) == 20  # (2,000 appends round-robin over 100 contexts)
    entries = [decode_record(bytes(record)) for record in records]  # (each id checked)
    assert len({entry.context for entry in entries}) == 1
    assert [entry.seq for entry in entries] == list(range(1, 21))
    db.close()


def test_a_failed_scale_phase_is_a_row_and_a_note_not_a_lost_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At 10M entries the start phase's first read of the largest context may be killed for
    memory: its rows say it failed, and every other phase is still reported."""
    from p2p_ledger.cli import bench_scale

    def child(phase: str, *args: str) -> dict:
        if phase == "start":
            raise bench_scale.PhaseFailed("start failed (exit status -9)")
        if phase == "raw":
            Path(args[0]).write_bytes(bytes(100))  # the raw baseline's file
        return {"ingest": {"seconds": 2.0, "cpu_seconds": 1.5, "rss_kib": 1024, "hwm_kib": 1024,
                           "commits": 1, "loads": 0},
                "floor": {"seconds": 1.0, "cpu_seconds": 0.5, "rss_kib": 1024, "hwm_kib": 1024,
                          "commits": 1, "loads": 0},
                "raw": {"seconds": 1.0, "entries": 10},
                "raw-read": {"open_seconds": 0.1, "verify_seconds": 0.1, "entries": 10,
                             "bad": 0, "hwm_kib": 1024},
                "raw-copy": {"seconds": 0.5},
                "start-crashed": {"seconds": 0.2, "settling": 1, "settled": 3.0}}[phase]

    monkeypatch.setattr(bench_scale, "_child", child)
    monkeypatch.setattr(bench_scale, "_killed_child", lambda *args: None)
    monkeypatch.setattr(bench_scale, "_timed_command", lambda cmd: (1.0, 0, 2048))
    monkeypatch.setattr(bench_scale, "_catch_up", lambda *args: (1.0, 4096, 4096))
    monkeypatch.setattr(bench_scale, "_dir_bytes", lambda path: 100)
    tables: list = []
    bench_scale.run_scale(10, tables, spreads=(1,))
    rows = {row[0]: row for row in tables[0].rows}
    assert rows["start until ready (failed, see the notes)"][2] is None
    assert rows["verify --data"][2] == 10.0 and rows["cold catch-up"][2] == 10.0
    assert rows["start after kill -9"][2:4] == [0.2, 0.1]
    assert rows["… contexts settling when ready"][2] == 1
    assert any("start failed (exit status -9)" in note for note in tables[0].notes)


def test_a_node_that_ignores_sigterm_is_killed_and_the_run_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The 10M run lost 40 minutes of results when the source node of the catch-up did not
    stop within 30 s of SIGTERM (the wait raised out of the bench): now it is killed."""
    from p2p_ledger.cli import bench_scale

    monkeypatch.setattr(bench_scale, "STOP_TIMEOUT", 0.2)
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    assert bench_scale._stopped(stubborn) is False
    assert stubborn.returncode == -signal.SIGKILL
    willing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert bench_scale._stopped(willing) is True
