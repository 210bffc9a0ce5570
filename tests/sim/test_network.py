"""The simulated network on its own, with a recording host instead of node cores."""

from __future__ import annotations

import random

from p2p_ledger.sim.loop import NS, EventLoop, deadline_ns, to_ns
from p2p_ledger.sim.network import LinkProps, NetParams, Network


class RecordingHost:
    """Accepts every connection and records what each node is told."""

    def __init__(self, down: tuple[str, ...] = ()) -> None:
        self.down = set(down)
        self.calls: list[tuple[str, ...]] = []
        self.next_conn = 100

    def is_up(self, node: str) -> bool:
        return node not in self.down

    def accept(self, node: str) -> int:
        self.next_conn += 1
        self.calls.append(("accept", node, str(self.next_conn)))
        return self.next_conn

    def flush(self, node: str) -> None:
        pass

    def made(self, node: str, conn: int) -> None:
        self.calls.append(("made", node, str(conn)))

    def dial_failed(self, node: str, conn: int, reason: str) -> None:
        self.calls.append(("dial_failed", node, str(conn), reason))

    def frame(self, node: str, conn: int, frame: bytes) -> None:
        self.calls.append(("frame", node, str(conn), frame.decode()))

    def lost(self, node: str, conn: int, reason: str) -> None:
        self.calls.append(("lost", node, str(conn), reason))

    def of(self, kind: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == kind]


def _net(props: LinkProps | None = None, down: tuple[str, ...] = (),
         transport: str = "tcp") -> tuple[EventLoop, Network, RecordingHost]:
    loop = EventLoop()
    host = RecordingHost(down)
    net = Network(loop, random.Random(1), host, props or LinkProps(latency_ms=10),
                  NetParams(break_after_s=5, dial_timeout_s=2, transport=transport))
    for node in ("a", "b"):
        net.add_node(node, f"sim://{node}")
    return loop, net, host


def _connect(loop: EventLoop, net: Network, host: RecordingHost) -> int:
    net.dial("a", 1, "sim://b")
    loop.run_until(to_ns(1))
    assert host.of("made") == [("made", "a", "1")]
    return int(host.of("accept")[0][2])


def test_dial_takes_a_round_trip() -> None:
    loop, net, host = _net()
    net.dial("a", 1, "sim://b")
    loop.run_until(to_ns(0.015))
    assert host.calls == [("accept", "b", "101")]
    loop.run_until(to_ns(0.025))
    assert host.calls[-1] == ("made", "a", "1")


def test_dial_failures() -> None:
    loop, net, host = _net(down=("b",))
    net.dial("a", 1, "sim://b")
    net.dial("a", 2, "sim://nowhere")
    loop.run_until(to_ns(1))
    assert sorted(host.of("dial_failed")) == [("dial_failed", "a", "1", "connection refused"),
                                              ("dial_failed", "a", "2", "unknown host")]
    loop, net, host = _net()
    net.set_cuts({("b", "a")})  # even one way: TCP needs both
    net.dial("a", 1, "sim://b")
    loop.run_until(to_ns(1.9))
    assert host.calls == []
    loop.run_until(to_ns(2.1))
    assert host.calls == [("dial_failed", "a", "1", "connection timed out")]


def test_fifo_without_reorder_and_loss_counts() -> None:
    loop, net, host = _net(LinkProps(latency_ms=10, jitter_ms=30))
    target = _connect(loop, net, host)
    for i in range(50):
        net.send("a", 1, f"x{i:02d}".encode())
    loop.run_until(to_ns(2))
    frames = [c[3] for c in host.of("frame")]
    assert frames == [f"x{i:02d}" for i in range(50)]
    assert all(c[2] == str(target) for c in host.of("frame"))
    assert net.messages == 50


def test_datagram_loss_duplicate_reorder() -> None:
    loop, net, host = _net(LinkProps(latency_ms=10, jitter_ms=5, loss=0.2, duplicate=0.2,
                                     reorder=0.3), transport="datagram")
    _connect(loop, net, host)
    for i in range(300):
        net.send("a", 1, f"{i:03d}".encode())
    loop.run_until(to_ns(5))
    frames = [c[3] for c in host.of("frame")]
    unique = set(frames)
    assert 180 < len(unique) < 270  # ~20% lost
    assert len(frames) - len(unique) > 20  # duplicates
    assert frames != sorted(frames)  # some overtaken
    assert net.dropped == 300 - len(unique)


def test_tcp_loss_duplicate_reorder_only_delay() -> None:
    # What TCP hands the application: every frame once, in order; loss costs a retransmission.
    loop, net, host = _net(LinkProps(latency_ms=10, jitter_ms=5, loss=0.2, duplicate=0.2,
                                     reorder=0.3))
    target = _connect(loop, net, host)
    for i in range(300):
        net.send("a", 1, f"{i:03d}".encode())
    loop.run_until(to_ns(0.5))
    early = len(host.of("frame"))
    loop.run_until(to_ns(60))
    frames = [c[3] for c in host.of("frame")]
    assert frames == [f"{i:03d}" for i in range(300)]
    assert all(c[2] == str(target) for c in host.of("frame"))
    assert early < 300  # ~60 retransmissions of >= 200 ms each hold the stream back
    assert net.dropped == 0


def test_tcp_frames_wait_at_a_short_cut_and_arrive_in_order() -> None:
    loop, net, host = _net()
    target = _connect(loop, net, host)
    net.send("a", 1, b"before")
    loop.run_until(to_ns(1.001))  # "before" is in flight
    net.set_cuts({("a", "b")})
    net.send("a", 1, b"during")
    net.close("a", 1, "done")  # its FIN waits behind the frames
    loop.run_until(to_ns(3))
    assert host.of("frame") == []
    net.set_cuts(set())
    loop.run_until(to_ns(3.005))
    assert host.of("frame") == []  # retransmitted one latency after the heal
    loop.run_until(to_ns(4))
    assert host.calls[-3:] == [("frame", "b", str(target), "before"),
                               ("frame", "b", str(target), "during"),
                               ("lost", "b", str(target), "connection closed by peer")]


def test_tcp_frames_held_at_a_cut_die_with_the_connection() -> None:
    loop, net, host = _net()
    target = _connect(loop, net, host)
    net.set_cuts({("a", "b")})
    net.send("a", 1, b"never")
    loop.run_until(to_ns(7))  # the cut lasted break_after_s: both ends see the break
    net.set_cuts(set())
    loop.run_until(to_ns(9))
    assert host.of("frame") == []
    assert ("lost", "b", str(target), "connection timed out (network partition)") in host.calls


def test_asymmetric_cut_then_break() -> None:
    loop, net, host = _net(transport="datagram")
    target = _connect(loop, net, host)
    net.set_cuts({("a", "b")})  # b no longer hears a; a still hears b
    net.send("a", 1, b"lost")
    net.send("b", target, b"heard")
    loop.run_until(to_ns(2))
    assert [c[1:] for c in host.of("frame")] == [("a", "1", "heard")]
    loop.run_until(to_ns(7))  # the cut lasted break_after_s: both ends see the break
    assert sorted(host.of("lost")) == [
        ("lost", "a", "1", "connection timed out (network partition)"),
        ("lost", "b", str(target), "connection timed out (network partition)")]


def test_short_cut_does_not_break() -> None:
    loop, net, host = _net()
    _connect(loop, net, host)
    net.set_cuts({("a", "b")})
    loop.run_until(to_ns(3))
    net.set_cuts(set())
    loop.run_until(to_ns(20))
    assert host.of("lost") == []


def test_close_and_crash_reach_the_peer() -> None:
    loop, net, host = _net()
    target = _connect(loop, net, host)
    net.send("a", 1, b"bye")
    net.close("a", 1, "done")
    loop.run_until(to_ns(2))
    assert host.calls[-2:] == [("frame", "b", str(target), "bye"),
                               ("lost", "b", str(target), "connection closed by peer")]
    net.dial("a", 2, "sim://b")
    loop.run_until(to_ns(3))
    second = int(host.of("accept")[-1][2])
    net.node_down("b")
    loop.run_until(to_ns(4))
    assert host.calls[-1] == ("lost", "a", "2", "connection closed by peer")
    assert second != target


def test_frame_to_a_closed_end_is_reset() -> None:
    loop, net, host = _net(transport="datagram")
    target = _connect(loop, net, host)
    net.set_cuts({("b", "a")})
    net.close("b", target, "bye")  # the FIN is lost in the cut
    net.set_cuts(set())
    net.send("a", 1, b"anyone?")
    loop.run_until(to_ns(2))
    assert host.calls[-1] == ("lost", "a", "1", "connection reset by peer")


def test_deadline_rounding_never_early() -> None:
    for seconds in (0.1, 1.0000000001, 12345.678901234, 86400.3):
        assert deadline_ns(seconds) / NS >= seconds
        assert deadline_ns(seconds) - seconds * NS < 2
