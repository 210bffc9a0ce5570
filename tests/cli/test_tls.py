"""TLS between nodes and for API clients, against real node processes.

A node with ``--tls-cert/--tls-key`` serves ``wss://`` only; peers and clients that dial
``wss://`` verify its certificate (``--tls-ca``, else the system's trust store) and its name.
The tests make their own CA (``p2p_ledger.testing.make_tls_files``) and put a recording TCP
relay between two nodes to show the bytes on the wire carry no payload in the clear.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2p_ledger.testing import make_tls_files

from .conftest import NodeProc, Procs, assert_one_line_error, json_lines, ok, run

SECRET = "the-launch-code-is-0000"


class RecordingRelay:
    """Forwards TCP connections from its own port to ``target`` and keeps every byte."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pairs: dict[socket.socket, socket.socket] = {}
        while not self.stop.is_set():
            readable, _, _ = select.select([self.listener, *pairs], [], [], 0.1)
            for sock in readable:
                if sock is self.listener:
                    client, _ = self.listener.accept()
                    upstream = socket.create_connection(self.target)
                    pairs[client], pairs[upstream] = upstream, client
                    continue
                data = sock.recv(65536) if sock in pairs else b""
                if data:
                    self.seen += data
                    pairs[sock].sendall(data)
                elif sock in pairs:
                    other = pairs.pop(sock)
                    pairs.pop(other, None)
                    sock.close()
                    other.close()
        for sock in pairs:
            sock.close()
        self.listener.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def relay_factory() -> Iterator[list[RecordingRelay]]:
    relays: list[RecordingRelay] = []
    yield relays
    for relay in relays:
        relay.close()


def _tls_node(procs: Procs, name: str, tls: tuple[Path, Path, Path], *extra: str) -> NodeProc:
    ca, cert, key = tls
    return procs.node(name, "--node-id", name, "--tls-cert", str(cert), "--tls-key", str(key),
                      "--tls-ca", str(ca), *extra)


def _wait_for(url: str, ca: Path, context: str, payload: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lines = json_lines(ok(run("read", "--node", url, "--tls-ca", str(ca), context)).stdout)
        if any(line.get("payload") == payload for line in lines):
            return
        assert time.monotonic() < deadline, f"{payload!r} did not reach {url}"


def test_tls_cluster_is_confidential(procs: Procs, tls: tuple[Path, Path, Path],
                                     relay_factory: list[RecordingRelay]) -> None:
    ca = tls[0]
    a = _tls_node(procs, "a", tls)
    assert a.url.startswith("wss://127.0.0.1:")
    relay = RecordingRelay(int(a.url.rsplit(":", 1)[1]))
    relay_factory.append(relay)
    b = _tls_node(procs, "b", tls, "--peer", f"wss://127.0.0.1:{relay.port}", "--no-discovery")
    ok(run("append", "--node", a.url, "--tls-ca", str(ca), "secrets", SECRET))
    _wait_for(b.url, ca, "secrets", SECRET)
    ok(run("append", "--node", b.url, "--tls-ca", str(ca), "secrets", SECRET + "-back"))
    _wait_for(a.url, ca, "secrets", SECRET + "-back")
    assert len(relay.seen) > 1000  # the sync went through the relay ...
    assert SECRET.encode() not in relay.seen  # ... and not in the clear
    assert b"secrets" not in relay.seen


def test_clients_verify_the_node(procs: Procs, tls: tuple[Path, Path, Path],
                                 tmp_path: Path) -> None:
    a = _tls_node(procs, "a", tls)
    [status] = json_lines(ok(run("status", "--node", a.url, "--tls-ca", str(tls[0]))).stdout)
    assert status["url"] == a.url
    # Without our CA the system trust store does not know the node: refused, one line.
    result = run("status", "--node", a.url)
    assert_one_line_error(result, 1, "LinkBroken")
    assert "certificate" in result.stderr
    other_ca = make_tls_files(tmp_path / "other")[0]
    result = run("status", "--node", a.url, "--tls-ca", str(other_ca))
    assert_one_line_error(result, 1, "LinkBroken")
    # A plain ws:// client reaching a TLS port gets a one-line error too.
    plain = a.url.replace("wss://", "ws://")
    assert_one_line_error(run("status", "--node", plain, "--timeout", "5"), 1, "LinkBroken")


def test_peer_with_another_ca_does_not_connect(procs: Procs, tls: tuple[Path, Path, Path],
                                               tmp_path: Path) -> None:
    a = _tls_node(procs, "a", tls)
    other = make_tls_files(tmp_path / "other")
    c = _tls_node(procs, "c", other, "--peer", a.url, "--no-discovery")
    deadline = time.monotonic() + 20
    while True:
        [status] = json_lines(ok(run("status", "--node", c.url, "--tls-ca",
                                     str(other[0]))).stdout)
        errors = [p["last_error"] for p in status["peers"]]
        if any("certificate" in e for e in errors):
            break
        assert time.monotonic() < deadline, status
    assert all(p["state"] != "connected" for p in status["peers"])


def test_bad_tls_files_are_one_line_errors(tmp_path: Path, tls: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls
    missing = str(tmp_path / "nope.pem")
    for args in (["--tls-cert", str(cert)], ["--tls-cert", missing, "--tls-key", str(key)],
                 ["--tls-cert", str(ca), "--tls-key", str(key)]):
        result = run("node", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0", *args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
