"""What users of etcdctl, sqlite3 or y-websocket tools reach for: contexts, append --file,
read --tail, a text format, verify --node, node --config, and the terminal-only stderr lines
(progress, what watch waits for). Real node processes; terminals are real ptys.
"""

from __future__ import annotations

import base64
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import (
    ROOT,
    NodeProc,
    Procs,
    _env,
    assert_one_line_error,
    cli,
    json_lines,
    ok,
    read_line,
    run,
)


def _with_terminal_stderr(*args: str, stdin: bytes = b"",
                          timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); returns the exit status,
    stdout and what the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "p2p_ledger", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=slave, env=_env(), cwd=ROOT)
    os.close(slave)
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
        shown = b""
        while select.select([master], [], [], 0)[0]:  # the child is gone: drain what it wrote
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return proc.returncode, out.decode(), shown.decode(errors="replace")


# ---- contexts, verify --node --------------------------------------------------------------------

def test_contexts_lists_names_counts_and_roots(procs: Procs) -> None:
    node = procs.node("ctx", "--node-id", "ctx")
    assert json_lines(ok(run("contexts", "--node", node.url)).stdout) == []
    ok(run("append", "--node", node.url, "b/two", "-", stdin="1\n2\n"))
    ok(run("append", "--node", node.url, "a/one", "x"))
    rows = json_lines(ok(run("contexts", "--node", node.url)).stdout)
    assert [(r["context"], r["entries"]) for r in rows] == [("a/one", 1), ("b/two", 2)]
    assert all(len(bytes.fromhex(r["root"])) == 32 for r in rows)
    assert rows[0]["root"] != rows[1]["root"]
    text = ok(run("contexts", "--node", node.url, "--format", "text")).stdout.splitlines()
    assert text[0].split() == ["CONTEXT", "ENTRIES", "ROOT"]
    assert text[2].split() == ["b/two", "2", rows[1]["root"][:16]]


def test_verify_a_running_node(shared_node: NodeProc) -> None:
    ok(run("append", "--node", shared_node.url, "verified", "-", stdin="a\nb\nc\n"))
    [row] = json_lines(ok(run("verify", "--node", shared_node.url)).stdout)
    assert row["ok"] is True and row["node_id"] == "shared" and row["entries"] >= 3
    [status] = json_lines(ok(run("status", "--node", shared_node.url)).stdout)
    assert row["root"] == status["root"]
    text = ok(run("verify", "--node", shared_node.url, "--format", "text")).stdout
    assert text.startswith("ok: node shared: ")


def test_verify_wants_data_or_node() -> None:
    assert_one_line_error(run("verify"), 2, "UsageError")


# ---- snapshot of a context that does not exist -----------------------------------------------

def test_snapshot_of_an_unknown_context_suggests_near_names(shared_node: NodeProc,
                                                            tmp_path: Path) -> None:
    ok(run("append", "--node", shared_node.url, "agent/notes", "x"))
    out = tmp_path / "n.snap"
    result = run("snapshot", "--node", shared_node.url, "agent/note", "--out", str(out))
    assert_one_line_error(result, 2, "UnknownContext")
    assert "did you mean 'agent/notes'?" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    far = run("snapshot", "--node", shared_node.url, "zzzzzzzz", "--out", str(out))
    assert_one_line_error(far, 2, "UnknownContext")
    assert "p2p-ledger contexts --node" in far.stderr and not out.exists()


# ---- append --file, read --tail, --format text --------------------------------------------------

def test_append_file_with_newlines_and_binary_beyond_the_argv_limit(shared_node: NodeProc,
                                                                    tmp_path: Path) -> None:
    text = tmp_path / "plan.md"
    text.write_text("# plan\n\n" + "step\n" * 60_000)  # 300 KB: more than one argv string
    [entry] = json_lines(ok(cli("append", "--node", shared_node.url, "files", "--file",
                                str(text), "--key", "plan")).stdout)
    assert entry["payload"] == text.read_text() and entry["key"] == "plan"
    binary = bytes(range(256)) * 4096  # 1 MiB, not UTF-8
    [piped] = json_lines(ok(cli("append", "--node", shared_node.url, "files", "--file", "-",
                                stdin=binary)).stdout)
    assert base64.b64decode(piped["payload_b64"]) == binary
    read = json_lines(ok(run("read", "--node", shared_node.url, "files")).stdout)
    assert [r["id"] for r in read] == [entry["id"], piped["id"]]


def test_append_file_over_the_payload_limit(shared_node: NodeProc, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (4 * 1024 * 1024 + 1))
    result = run("append", "--node", shared_node.url, "files", "--file", str(big))
    assert_one_line_error(result, 2, "PayloadTooLarge")
    missing = run("append", "--node", shared_node.url, "files", "--file", str(tmp_path / "no"))
    assert_one_line_error(missing, 2, "UsageError")
    both = run("append", "--node", shared_node.url, "files", "x", "--file", str(big))
    assert_one_line_error(both, 2, "UsageError")


def test_read_tail(shared_node: NodeProc) -> None:
    url = shared_node.url
    ok(run("append", "--node", url, "tail", "-", stdin="".join(f"t{i}\n" for i in range(1234))))
    full = json_lines(ok(run("read", "--node", url, "tail")).stdout)
    last = json_lines(ok(run("read", "--node", url, "tail", "--tail", "3")).stdout)
    assert last == full[-3:]  # same entries, same cursors
    after = json_lines(ok(run("read", "--node", url, "tail", "--after", full[-5]["cursor"],
                              "--tail", "10")).stdout)
    assert after == full[-4:]
    assert ok(run("read", "--node", url, "tail", "--tail", "0")).stdout == ""
    both = run("read", "--node", url, "tail", "--tail", "1", "--limit", "1")
    assert_one_line_error(both, 2, "UsageError")


def test_text_format_for_people(shared_node: NodeProc) -> None:
    url = shared_node.url
    ok(run("append", "--node", url, "people", "line one\nline two \x1b[31mred",
           "--key", "k", "--meta", "by=me"))
    [line] = ok(run("read", "--node", url, "people", "--format", "text")).stdout.splitlines()
    [entry] = json_lines(ok(run("read", "--node", url, "people")).stdout)
    writer = f"{entry['origin']}.{entry['chain']}"
    assert line.endswith(rf"{entry['origin'][:12]}:1 [k] line one\nline two \x1b[31mred "
                         rf"{{by=me}} (cursor {writer}:1)")
    assert "\x1b" not in line  # a payload cannot drive the terminal
    env = ok(run("read", "--node", url, "people", env={"P2P_LEDGER_FORMAT": "text"})).stdout
    assert env.splitlines() == [line]
    assert_one_line_error(run("read", "--node", url, "people", env={"P2P_LEDGER_FORMAT": "xml"}),
                          2, "UsageError")
    status = ok(run("status", "--node", url, "--format", "text")).stdout
    assert status.startswith(f"node shared [{entry['origin'][:8]}] at {url}\n")
    assert "no peers" in status


# ---- terminal-only stderr -----------------------------------------------------------------------

def test_bulk_append_shows_progress_only_on_a_terminal(shared_node: NodeProc) -> None:
    lines = "".join(f"p{i}\n" for i in range(3000)).encode()
    code, out, shown = _with_terminal_stderr("append", "--node", shared_node.url, "prog", "-",
                                             stdin=lines)
    assert code == 0 and len(out.splitlines()) == 3000
    assert "appended 3,000 entries in " in shown
    piped = ok(cli("append", "--node", shared_node.url, "prog", "-", stdin=lines))
    assert piped.stderr == ""


def test_watch_says_what_it_watches_on_a_terminal(shared_node: NodeProc) -> None:
    url = shared_node.url
    ok(run("append", "--node", url, "watched", "x"))
    code, out, shown = _with_terminal_stderr("watch", "--node", url, "watched", "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 1
    assert f"watching watched on {url} (node shared), from the start" in shown
    assert ok(run("watch", "--node", url, "watched", "--limit", "1")).stderr == ""


def test_scenario_run_progress_only_on_a_terminal(tmp_path: Path) -> None:
    scenario = ROOT / "scenarios" / "three_way_partition.toml"
    code, out, shown = _with_terminal_stderr("scenario", "run", str(scenario))
    assert code == 0 and out.startswith("PASS three_way_partition")
    assert "[1/1]" in shown


# ---- node --config ------------------------------------------------------------------------------

def test_node_config_file_with_command_line_overrides(procs: Procs, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'data = "{tmp_path / "from-file"}"\nlisten = "127.0.0.1:0"\n'
                      f'node-id = "filed"\npeer = ["garbage"]\nno-discovery = true\n'
                      f'gossip-interval = 0.5\nlog-level = "warning"\n')
    # --peer on the command line replaces the file's (bad) list; --node-id overrides.
    node = procs.node("cfg", "--config", str(config), "--node-id", "cli", "--peer",
                      "ws://127.0.0.1:9", data=tmp_path / "ignored", listen=None)
    assert node.node_id == "cli" and node.url.startswith("ws://127.0.0.1:")
    assert (tmp_path / "ignored").is_dir() and not (tmp_path / "from-file").exists()
    [status] = json_lines(ok(run("status", "--node", node.url)).stdout)
    assert [p["url"] for p in status["peers"]] == ["ws://127.0.0.1:9"]
    assert node.stop() == 0


def test_node_config_file_alone(procs: Procs, tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'data = "{tmp_path / "d"}"\nlisten = "127.0.0.1:0"\nnode-id = "filed"\n')
    proc = procs.popen("node", "--config", str(config))
    line = read_line(proc.stdout, time.monotonic() + 20, "node --config")
    assert line.startswith("ready ws://127.0.0.1:") and line.split()[2] == "filed"


@pytest.mark.parametrize("body, kind, words", [
    ('data = "{d}"\nbogus = 1\n', "ConfigError", "unknown key 'bogus'"),
    ('data = "{d}"\nno-discovery = "yes"\n', "ConfigError", "switch"),
    ('data = "{d}"\npeer = [1, true]\n', "ConfigError", "peer wants"),
    ('data = "{d}"\nlisten = "nohost"\n', "UsageError", "--listen"),
    ('data = "{d}"\n[[', "ConfigError", "not valid TOML"),
])
def test_node_config_errors(body: str, kind: str, words: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(body.format(d=tmp_path / "d"))
    result = run("node", "--config", str(config))
    assert_one_line_error(result, 2, kind)
    assert words in result.stderr and not (tmp_path / "d").exists()
