"""Real mode: the fault-injecting relay, and scenario files run on real node processes."""

from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from p2p_ledger.cli.scenario import main
from p2p_ledger.harness.real import RealRun
from p2p_ledger.harness.relay import Relay
from p2p_ledger.sim.scenario import load_scenario

DATA = Path(__file__).resolve().parent / "data"
REQUIRED = {"scenario", "seed", "passed", "checks", "converged_after_s", "messages", "bytes",
            "acknowledged", "lost", "trace_digest", "wall_s"}

pytestmark = pytest.mark.slow


# ---- the relay ---------------------------------------------------------------------------------

async def _echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def _closed(stream: trio.SocketStream) -> bool:
    """True once the relay has closed the connection (EOF or reset) within a deadline."""
    with trio.fail_after(3):
        try:
            await stream.send_all(b"x")
            while data := await stream.receive_some(100):
                assert data  # late echo of what was in flight; keep reading until EOF
        except trio.BrokenResourceError:
            pass
    return True


async def _roundtrip(stream: trio.SocketStream, payload: bytes, want: int = 0) -> bytes:
    """Send ``payload`` and read back ``want`` bytes (default: as many as sent)."""
    await stream.send_all(payload)
    got = b""
    with trio.fail_after(3):
        while len(got) < (want or len(payload)):
            got += await stream.receive_some(65536)
    return got


async def test_relay_forwards_cuts_refuses_and_heals() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, _echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        relay = Relay("a>b", target=("127.0.0.1", port), seed=1)
        await nursery.start(relay.run)
        assert relay.url.startswith("ws://127.0.0.1:") and relay.port != port

        stream = await trio.open_tcp_stream("127.0.0.1", relay.port)
        payload = bytes(range(256)) * 1000  # several chunks, byte for byte both ways
        assert await _roundtrip(stream, payload) == payload
        with trio.fail_after(2):  # the relay counts a chunk just after it was sent
            while relay.counters.bytes < 2 * len(payload):
                await trio.sleep(0.01)
        assert relay.counters.bytes == 2 * len(payload) and relay.counters.connections == 1

        relay.cut()  # the open connection breaks ...
        assert await _closed(stream)
        fresh = await trio.open_tcp_stream("127.0.0.1", relay.port)
        assert await _closed(fresh)  # ... and a new one is closed at once
        assert relay.counters.refused == 1 and relay.counters.broken == 1

        relay.heal()
        healed = await trio.open_tcp_stream("127.0.0.1", relay.port)
        assert await _roundtrip(healed, b"again") == b"again"

        relay.set_delay(0.2)  # latency per chunk, not cumulative, order kept
        started = trio.current_time()
        await healed.send_all(b"1")
        await healed.send_all(b"2")
        assert await _roundtrip(healed, b"3", want=3) == b"123"
        assert 0.35 <= trio.current_time() - started < 1.0  # there and back: 2 x 0.2 s
        relay.set_delay(0)

        relay.set_drop(1.0)  # "loss" on TCP: the connection breaks
        assert await _closed(healed)
        relay.set_drop(0)

        relay.set_target(None)  # the target is down: connections are refused
        assert await _closed(await trio.open_tcp_stream("127.0.0.1", relay.port))
        relay.set_target(("127.0.0.1", port))
        again = await trio.open_tcp_stream("127.0.0.1", relay.port)
        assert await _roundtrip(again, b"back") == b"back"
        for s in (stream, fresh, healed, again):
            await s.aclose()
        nursery.cancel_scope.cancel()


# ---- scenarios on real processes --------------------------------------------------------------

def _run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["run", "--real", "--json", *args])
    out = capsys.readouterr().out
    row: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return code, row


def test_real_split_brain_heals_and_keeps_every_entry(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, row = _run_json(capsys, "--time-scale", "0.2", str(DATA / "real_split.toml"))
    assert code == 0, row
    assert REQUIRED <= row.keys()
    assert row["passed"] is True and row["lost"] == 0 and row["mode"] == "real"
    assert isinstance(row["acknowledged"], int) and row["acknowledged"] > 25
    names = {c["name"] for c in row["checks"]}  # type: ignore[attr-defined]
    assert {"converged_within_s", "no_acknowledged_loss", "same_order", "same_root",
            "no_errors"} <= names
    assert isinstance(row["bytes"], int) and row["bytes"] > 0  # the links went through relays


async def test_real_crash_restart_catches_up_and_cleans_up() -> None:
    run = RealRun(load_scenario(DATA / "real_crash.toml"), time_scale=0.2)
    report = await trio.to_thread.run_sync(lambda: trio.run(run.run))  # a trio run of its own
    assert report.passed, "\n".join(f"{c.name}: {c.detail}" for c in report.checks)
    assert report.acknowledged >= 30 and report.lost == 0
    assert {c.name for c in report.checks} >= {"wait_converged", "converged_within_s"}
    # every process stopped and the temporary directory removed
    assert not run.root.exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(run.root) not in ps


def test_real_never_healed_partition_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, row = _run_json(capsys, "--time-scale", "0.2", str(DATA / "real_never_healed.toml"))
    assert code == 1 and row["passed"] is False
    failed = {c["name"] for c in row["checks"] if not c["passed"]}  # type: ignore[attr-defined]
    assert {"converged_within_s", "same_root"} <= failed
    assert "no_errors" not in failed  # a failed check, not a crashed runner


def test_time_scale_needs_real(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--time-scale", "0.5", str(DATA / "real_split.toml")]) == 2
    assert "--time-scale needs --real" in capsys.readouterr().err
