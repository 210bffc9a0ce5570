"""The command line: summaries, JSON lines, exit codes, plots, fuzz and the main CLI's hook."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from p2p_ledger.cli.scenario import add_scenario_commands, main
from p2p_ledger.sim import to_toml

from ..sim.helpers import SCENARIOS, small_scenario

REQUIRED = {"scenario", "seed", "passed", "checks", "converged_after_s", "messages", "bytes",
            "acknowledged", "lost", "trace_digest", "wall_s"}


def _write(tmp_path: Path, data: dict[str, object], name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(to_toml(data))
    return path


def test_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, small_scenario(), "a.toml")
    b = _write(tmp_path, small_scenario(scenario={"name": "other", "seed": 5}), "b.toml")
    assert main(["run", "--json", str(a), str(b)]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["scenario"] for r in rows] == ["small", "other"]
    for row in rows:
        assert REQUIRED <= row.keys()
        assert row["passed"] is True and row["lost"] == 0
        assert all({"name", "passed", "detail"} == c.keys() for c in row["checks"])
    assert err == ""  # no progress line when stderr is not a terminal


def test_seed_flag_and_text_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, small_scenario())
    assert main(["run", "--seed", "7", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PASS small (seed 7): converged after ")
    assert "  ok   no_acknowledged_loss: " in out


def test_failing_scenario_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A partition that never heals cannot converge.
    data = small_scenario(steps=[{"at": 1, "partition": [["a"], ["b", "c"]]},
                                 {"at": 2, "append": {"node": "a", "context": "x"}}],
                          checks={"converged_within_s": 5})
    assert main(["run", str(_write(tmp_path, data))]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL small")
    assert "  FAIL converged_within_s: not converged 5s after" in out


def test_plot_writes_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_scenario(steps=small_scenario()["steps"] + [{"at": 13, "crash": "b"},
                                                             {"at": 15, "restart": "b"}])
    assert main(["run", "--plot", str(tmp_path / "plots"), str(_write(tmp_path, data))]) == 0
    png = tmp_path / "plots" / "small-11.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in capsys.readouterr().out


def test_trace_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--trace", str(tmp_path), str(_write(tmp_path, small_scenario()))]) == 0
    text = (tmp_path / "small-11.trace").read_text()
    assert text.startswith("0 start a 1 ")


def test_fuzz_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fuzz", "--runs", "5", "--seed", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "5 runs, 0 failed" in out
    assert list(tmp_path.iterdir()) == []


def test_plugs_into_a_main_parser() -> None:
    parser = argparse.ArgumentParser()
    add_scenario_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scenario", "run", "--json", str(SCENARIOS / "split_brain.toml")])
    assert args.func.__name__ == "cmd_run" and args.json
    args = parser.parse_args(["scenario", "fuzz", "--runs", "3", "--nodes", "5"])
    assert args.func.__name__ == "cmd_fuzz" and (args.runs, args.nodes) == (3, 5)
