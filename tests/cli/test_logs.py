"""Node log lines: one line per peer state change (never one per retry), text or JSON.

Regression: an unreachable seed, a garbage ``--peer`` and a peer killed with SIGKILL used to
leave nothing in the log (and a connection a relay cut at once left a traceback).
"""

from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any

from .conftest import NodeProc, Procs, run


def _refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{sock.getsockname()[1]}"


def _json_lines(node: NodeProc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in node.log_text().splitlines() if line.strip()]


def _failures(node: NodeProc, url: str) -> int:
    status = json.loads(run("status", "--node", node.url).stdout)
    return int(next(p["failures"] for p in status["peers"] if p["url"] == url))


def _wait(node: NodeProc, what: str, pred: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _json_lines(node)
        if pred(lines):
            return lines
        assert time.monotonic() < deadline, f"no {what} in:\n{node.log_text()}"
        time.sleep(0.1)


def test_json_lines_for_unreachable_connected_and_killed_peers(procs: Procs) -> None:
    dead = _refused_url()
    a = procs.node("a", "--node-id", "a", "--log-format", "json", "--peer", dead)
    b = procs.node("b", "--node-id", "b", "--log-format", "json", "--peer", a.url)

    def events(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
        return [line for line in lines if line.get("event") == kind]

    lines = _wait(a, "connected b", lambda ls: any(e["peer"] == "b"
                                                   for e in events(ls, "connected")))
    for line in lines:  # every line one JSON object with the stable fields
        assert {"ts", "level", "logger", "msg"} <= line.keys()
    b.stop(signal.SIGKILL)
    lines = _wait(a, "lost b", lambda ls: any(e["peer"] == "b" for e in events(ls, "lost")))
    # The dead seed: reported once, with a reason and the next try, though dialed every second.
    deadline = time.monotonic() + 20
    while _failures(a, dead) < 4:
        assert time.monotonic() < deadline, "the dead seed was not redialed"
        time.sleep(0.2)
    lines = _json_lines(a)
    unreachable = [e for e in events(lines, "unreachable") if e["url"] == dead]
    assert len(unreachable) == 1, unreachable
    assert unreachable[0]["reason"] and unreachable[0]["retry_in_s"] is not None
    assert unreachable[0]["level"] == "info" and "unreachable" in unreachable[0]["msg"]
    assert not any("Traceback" in line.get("exc", "") for line in lines)


def test_text_lines_name_the_peer_and_the_reason(procs: Procs) -> None:
    dead = _refused_url()
    a = procs.node("a", "--node-id", "a", "--peer", dead)
    deadline = time.monotonic() + 20
    while "unreachable" not in a.log_text():
        assert time.monotonic() < deadline, a.log_text()
        time.sleep(0.1)
    line = next(x for x in a.log_text().splitlines() if "unreachable" in x)
    assert f"peer {dead} unreachable: cannot connect" in line and "next try in" in line
