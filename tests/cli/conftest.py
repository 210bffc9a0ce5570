"""Real ``p2p-ledger node`` processes for the CLI tests, and a way to run the CLI itself.

Nothing here sleeps to wait for another process: a node is ready when it prints its ready line
(read with a deadline), and every process a test starts is killed in the fixture's finalizer.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from p2p_ledger.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("P2P_LEDGER_CLUSTER_KEY", None)
    env.pop("P2P_LEDGER_NODE", None)
    return env


def cli(*args: str, stdin: bytes | str | None = None, env: dict[str, str] | None = None,
        timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m p2p_ledger ARGS`` to completion (text out; stdin as given)."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        [sys.executable, "-m", "p2p_ledger", *args], input=data, capture_output=True,
        env={**_env(), **(env or {})}, timeout=timeout, cwd=ROOT,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"))


def run(*args: str, stdin: bytes | str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cli.main(ARGS)`` in this process, stdio captured: the same code path as ``cli`` without
    the ~0.4 s interpreter start (tests that need a real process, signals or a traceback check
    on the real entry point use ``cli``)."""
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
               for name in ("stdout", "stderr")}
    fake_in = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    saved = (sys.stdin, sys.stdout, sys.stderr)
    saved_env = dict(os.environ)
    try:
        for name in ("P2P_LEDGER_CLUSTER_KEY", "P2P_LEDGER_NODE"):
            os.environ.pop(name, None)
        os.environ.update(env or {})
        sys.stdin, sys.stdout, sys.stderr = fake_in, streams["stdout"], streams["stderr"]
        code = main(list(args))
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        os.environ.clear()
        os.environ.update(saved_env)
    out, err = (_captured(s) for s in streams.values())
    return subprocess.CompletedProcess(["p2p-ledger", *args], code, out, err)


def _captured(stream: io.TextIOWrapper) -> str:
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode(errors="replace")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args} -> {result.returncode}\n{result.stderr}"
    return result


def read_line(stream: Any, deadline: float, what: str) -> str:
    """One line from a child's stdout, or fail at the deadline (select, never sleep)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{what}: no line within the deadline")
        readable, _, _ = select.select([stream], [], [], remaining)
        if readable:
            return str(stream.readline().decode(errors="replace"))


@dataclass
class NodeProc:
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path
    url: str = ""
    node_id: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


class Procs:
    """Starts node (and other long-running CLI) processes; kills them all at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []
        self._count = 0

    def popen(self, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        self._count += 1
        with open(log or self.tmp / f"proc{self._count}.err", "ab") as err:  # child keeps a copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "p2p_ledger", *args], stdout=subprocess.PIPE,
                stderr=err, stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT)
        self.started.append(proc)
        return proc

    def node(self, name: str = "n1", *extra: str, data: Path | None = None,
             listen: str | None = "127.0.0.1:0") -> NodeProc:
        data = data or self.tmp / name
        log = self.tmp / f"{name}.{self._count}.log"
        args = ["node", "--data", str(data), *(["--listen", listen] if listen else []), *extra]
        proc = self.popen(*args, log=log)
        node = NodeProc(proc, data, log)
        line = read_line(proc.stdout, time.monotonic() + READY_TIMEOUT, f"node {name}")
        parts = line.split()
        assert len(parts) == 3 and parts[0] == "ready", \
            f"bad ready line {line!r}; log:\n{node.log_text()}"
        node.url, node.node_id = parts[1], parts[2]
        return node

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def node(procs: Procs) -> NodeProc:
    return procs.node("n1", "--node-id", "n1")


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, kind: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == code, f"exit {result.returncode}, want {code}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, f"want one stderr line, got:\n{result.stderr}"
    assert lines[0].startswith(f"p2p-ledger: error: {kind}: "), lines[0]


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    """One node for a module's many short checks (starting one per case costs ~0.5 s)."""
    p = Procs(tmp_path_factory.mktemp("shared"))
    try:
        yield p.node("shared", "--node-id", "shared")
    finally:
        p.close()
