"""Bad input gives one stderr line, the right exit status (2 input, 1 runtime) and no traceback."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from p2p_ledger.cli.main import main

from .conftest import NodeProc, assert_one_line_error, cli, json_lines, ok, run

BIG = 4 * 1024 * 1024 + 1


def _dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def _truncated_snapshot(url: str, tmp: Path) -> str:
    ok(run("append", "--node", url, "to-cut", "x"))
    out = tmp / "cut.snap"
    ok(run("snapshot", "--node", url, "to-cut", "--out", str(out)))
    out.write_bytes(out.read_bytes()[:-7])
    return str(out)


# Cases marked * run as a real process (the console entry point, a pipe, a node that fails to
# start); the rest run cli.main in-process, the same code without the interpreter start.
CASES = {
    # name: (argv with {url}/{tmp}/{dead}/{cut} placeholders, stdin, exit status, error class)
    "bad context name": (["append", "--node", "{url}", "no spaces allowed", "x"], None, 2,
                         "InvalidContextName"),
    "bad context on read": (["read", "--node", "{url}", "a" * 129], None, 2,
                            "InvalidContextName"),
    "oversized payload (stdin) *": (["append", "--node", "{url}", "big", "-"], b"x" * BIG, 2,
                                  "PayloadTooLarge"),
    "oversized key": (["append", "--node", "{url}", "c", "x", "--key", "k" * 300], None, 2,
                      "KeyTooLarge"),
    "unreachable node *": (["status", "--node", "{dead}"], None, 1, "LinkBroken"),
    "unreachable node, append": (["append", "--node", "{dead}", "c", "x"], None, 1,
                                 "LinkBroken"),
    "malformed snapshot": (["load", "--node", "{url}", "{tmp}/garbage.snap"], None, 2,
                           "InvalidSnapshot"),
    "truncated snapshot": (["load", "--node", "{url}", "{cut}"], None, 2, "InvalidSnapshot"),
    "missing snapshot file": (["load", "--node", "{url}", "{tmp}/nope.snap"], None, 2,
                              "UsageError"),
    "bad cursor (read)": (["read", "--node", "{url}", "c", "--after", "not a cursor"], None, 2,
                          "InvalidCursor"),
    "bad cursor (watch)": (["watch", "--node", "{url}", "c", "--since", "n1:x"], None, 2,
                           "InvalidCursor"),
    "bad --meta": (["append", "--node", "{url}", "c", "x", "--meta", "novalue"], None, 2,
                   "InvalidMeta"),
    "negative --limit": (["read", "--node", "{url}", "c", "--limit", "-1"], None, 2,
                         "UsageError"),
    "not a ws URL": (["status", "--node", "http://127.0.0.1:1"], None, 2, "InvalidUrl"),
    "no --node": (["status"], None, 2, "UsageError"),
    "missing argument *": (["append", "--node", "{url}", "c"], None, 2, "UsageError"),
    "unknown command": (["frobnicate"], None, 2, "UsageError"),
    "bad --listen *": (["node", "--data", "{tmp}/d", "--listen", "nohost"], None, 2,
                     "UsageError"),
    "bad --node-id *": (["node", "--data", "{tmp}/d", "--node-id", "bad id!"], None, 2,
                      "InvalidNodeId"),
    "verify a non-data dir": (["verify", "--data", "{tmp}"], None, 2, "UsageError"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_error(case: str, shared_node: NodeProc, tmp_path: Path) -> None:
    argv, stdin, code, kind = CASES[case]
    (tmp_path / "garbage.snap").write_bytes(b"this is not a snapshot\n")
    fill = {"url": shared_node.url, "tmp": str(tmp_path), "dead": _dead_url()}
    if "{cut}" in argv:
        fill["cut"] = _truncated_snapshot(shared_node.url, tmp_path)
    runner = cli if case.endswith("*") else run
    result = runner(*(a.format(**fill) for a in argv), stdin=stdin)
    assert_one_line_error(result, code, kind)
    assert result.stdout == ""


def test_batch_error_says_which_lines_and_keeps_earlier_batches(shared_node: NodeProc) -> None:
    lines = b"".join(b"ok %d\n" % i for i in range(600)) + b"y" * BIG + b"\n"
    result = run("append", "--node", shared_node.url, "partial", "-", stdin=lines)
    assert_one_line_error(result, 2, "PayloadTooLarge")
    # Which batch failed depends on how stdin was chunked; the message says, and is right.
    found = re.search(r"\(stdin lines? (?:\d+-)?601; (\d+) entries appended before\)",
                      result.stderr)
    assert found, result.stderr
    # Whatever was acknowledged before the bad batch was printed, and is really there.
    printed = json_lines(result.stdout)
    assert len(printed) == int(found.group(1))
    stored = json_lines(ok(run("read", "--node", shared_node.url, "partial")).stdout)
    assert [p["id"] for p in printed] == [s["id"] for s in stored]


def test_main_returns_the_exit_status_in_process(capsys: pytest.CaptureFixture[str],
                                                 shared_node: NodeProc) -> None:
    assert main(["append", "--node", shared_node.url, "bad name", "x"]) == 2
    assert main(["status", "--node", _dead_url(), "--timeout", "2"]) == 1
    assert main(["status", "--node", shared_node.url]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[2].strip() for line in err] == ["InvalidContextName", "LinkBroken"]
