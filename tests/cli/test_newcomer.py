"""The command line as a new user tries it: each case was a traceback, a silent acceptance or a
raw exception text before, and is now a one-line named error (or a refusal) that says what to do.

Cases that need a real process (a node that must fail to start, the console entry point) use
``cli``/``procs``; the others run ``cli.main`` in-process (``run``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from p2p_ledger.cli.demo import Demo
from p2p_ledger.cli.main import build_parser

from .conftest import NodeProc, assert_one_line_error, cli, json_lines, ok, run

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


# ---- --help ------------------------------------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser,
                 path: str = "") -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[f"{path}{name}"] = sub
                found.update(_subcommands(sub, f"{path}{name} "))
    return found


def test_every_subcommand_has_a_description_and_an_example() -> None:
    commands: dict[str, argparse.ArgumentParser] = {}
    for plugin in ("scenario", "bench", None):  # plugins load only when asked for
        commands |= {k: v for k, v in _subcommands(build_parser(plugin)).items()
                     if k not in commands and (plugin is None or k.startswith(plugin))}
    assert {"node", "append", "read", "watch", "status", "verify", "snapshot", "load", "demo",
            "scenario run", "scenario fuzz", "scenario bench", "bench"} <= commands.keys()
    missing = [name for name, p in commands.items() if len((p.description or "").split()) < 8]
    assert not missing, f"no real description: {missing}"
    no_example = [name for name, p in commands.items() if "example" not in (p.epilog or "")]
    assert not no_example, f"no example: {no_example}"


@pytest.mark.parametrize("command", [["scenario", "run"], ["scenario", "fuzz"]])
def test_scenario_help_describes_the_command(command: list[str]) -> None:
    out = ok(cli(*command, "--help")).stdout
    assert {"run": "invariants", "fuzz": "reproduces"}[command[1]] in out
    assert "examples:" in out


def test_demo_help_says_what_the_demo_does() -> None:
    text = " ".join(ok(run("demo", "--help")).stdout.split())
    # Each phase the demo runs, in the words the help uses for it.
    words = {"start": "relay", "write": "converge", "crash": "SIGKILL", "recover": "restart",
             "partition": "partition", "verify": "acknowledged entry"}
    assert set(words) == set(Demo.PHASES)
    assert all(word in text for word in words.values()), text
    assert "chain" not in text and "peer exchange" not in text  # what it used to claim


# ---- tracebacks that are now one line ----------------------------------------------------------

def test_wss_against_a_plain_node(shared_node: NodeProc) -> None:
    wss = shared_node.url.replace("ws://", "wss://")
    result = cli("status", "--node", wss, "--timeout", "5")
    assert_one_line_error(result, 1, "LinkBroken")
    assert "TLS" in result.stderr and wss in result.stderr


def _not_sqlite(tmp: Path) -> Path:
    data = tmp / "not-sqlite"
    data.mkdir()
    (data / "ledger.sqlite3").write_bytes(b"this is not a database, just text\n" * 100)
    return data


def test_verify_a_store_that_is_not_sqlite(tmp_path: Path) -> None:
    result = run("verify", "--data", str(_not_sqlite(tmp_path)))
    assert_one_line_error(result, 1, "StoreError")
    assert "ledger.sqlite3 is not" in result.stderr


def test_node_on_a_store_that_is_not_sqlite(tmp_path: Path) -> None:
    result = cli("node", "--data", str(_not_sqlite(tmp_path)))
    assert_one_line_error(result, 1, "StoreError")


def test_node_data_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    result = cli("node", "--data", str(tmp_path / "afile"))
    assert_one_line_error(result, 1, "StoreError")
    assert "is a file, not a directory" in result.stderr


@pytest.mark.parametrize("duration", ["-5", "0", "nan"])
def test_fuzz_refuses_a_duration_that_tests_nothing(duration: str) -> None:
    result = run("scenario", "fuzz", "--runs", "5", "--duration", duration)
    assert_one_line_error(result, 2, "UsageError")
    assert "--duration" in result.stderr and result.stdout == ""


def test_fuzz_json_prints_a_summary_when_all_pass(tmp_path: Path) -> None:
    result = ok(run("scenario", "fuzz", "--runs", "2", "--duration", "5", "--json",
                    "--out", str(tmp_path)))
    [summary] = json_lines(result.stdout)
    assert summary["summary"] is True and summary["runs"] == 2 and summary["failed"] == 0
    assert summary["base_seed"] == 0 and summary["duration_s"] == 5.0


# ---- refusals before anything is created -------------------------------------------------------

@pytest.mark.parametrize("peer", ["garbage", "http://127.0.0.1:7070", "ws://", "ws://h:99999"])
def test_node_refuses_a_bad_peer_url(peer: str, tmp_path: Path) -> None:
    data = tmp_path / "d"
    result = cli("node", "--data", str(data), "--peer", peer, timeout=20)
    assert_one_line_error(result, 2, "InvalidUrl")
    assert repr(peer) in result.stderr and result.stdout == ""
    assert not data.exists()


def test_port_in_use_names_the_address_and_creates_nothing(node: NodeProc,
                                                          tmp_path: Path) -> None:
    address = node.url.removeprefix("ws://")
    data = tmp_path / "second"
    result = cli("node", "--data", str(data), "--listen", address)
    assert_one_line_error(result, 1, "ListenError")
    assert f"cannot listen on {address}: " in result.stderr
    assert not data.exists()


def test_snapshot_out_is_an_existing_directory(shared_node: NodeProc, tmp_path: Path) -> None:
    ok(run("append", "--node", shared_node.url, "snapdir", "x"))
    result = run("snapshot", "--node", shared_node.url, "snapdir", "--out", str(tmp_path))
    assert_one_line_error(result, 2, "UsageError")
    assert "is a directory" in result.stderr and ".tmp-" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_plot_dir_is_checked_before_the_run(tmp_path: Path) -> None:
    afile = tmp_path / "plots"
    afile.write_text("")
    result = run("scenario", "run", str(SCENARIOS / "offline_agent_day.toml"), "--plot",
                 str(afile))
    assert_one_line_error(result, 2, "UsageError")
    assert result.stdout == ""  # nothing ran


# ---- the README's command-line section ---------------------------------------------------------

def test_readme_usage_lists_every_command_and_only_real_flags() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The command line"):]
    usage = section[section.index("```") + 3:]
    usage = usage[:usage.index("```")]
    commands: dict[str, argparse.ArgumentParser] = {}
    for plugin in ("scenario", "bench", None):
        commands |= {k: v for k, v in _subcommands(build_parser(plugin)).items()
                     if k not in commands and (plugin is None or k.startswith(plugin))}
    listed = {" ".join(line.split()[1:3]) if line.split()[1] == "scenario" else line.split()[1]
              for line in usage.splitlines() if line.startswith("p2p-ledger ")}
    assert listed == set(commands) - {"scenario"}, "README usage and parser differ"
    for line in usage.splitlines():
        if not line.startswith("p2p-ledger "):
            continue
        words = line.split()
        name = " ".join(words[1:3]) if words[1] == "scenario" else words[1]
        known = {s for a in commands[name]._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line.split("(")[0]):
            assert flag in known, f"README shows {name} {flag}, which the parser lacks"
