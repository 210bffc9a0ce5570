"""PeerLink flow control and the connection under it, on a real loopback websocket: large
messages both ways at once.

websockets.trio 17.4 deadlocks when both ends send large messages at the same time: its reader
task waits for the send lock after every read, so a send blocked on a peer that is not reading
stops our reading too (ARCHITECTURE.md, "Transport"). The transport's connections never make
their reader wait to send. Here both ends push large messages at each other at the same moment,
the way a two-way bulk catch-up does; ``trio.fail_after`` turns a deadlock into a failure.
"""

from __future__ import annotations

import functools
import logging
import random

import pytest
import trio

from p2p_ledger.core.errors import LinkBroken
from p2p_ledger.core.wire import CHUNK, LARGE_CHUNK, LARGE_FRAME, MAX_FRAME
from p2p_ledger.trio.transport import (
    ACK_EVERY,
    LARGE_PEER_MAX_SIZE,
    WINDOW,
    PeerLink,
    dial,
    open_listeners,
    port_of,
    serve_websockets,
)

TOTAL = WINDOW + 4 * 1024 * 1024  # each way: more than a window
HOLD = 1024 * 1024  # what a busy end leaves unread (the kernel's buffers take it: 2 MiB of small
# frames each way did not fit them once, a hang at load ~8)


SIZES = {"small": [MAX_FRAME, CHUNK, 1000], "large": [LARGE_FRAME, LARGE_CHUNK, MAX_FRAME, 1000]}


def _frames(rng: random.Random, sizes: list[int]) -> list[bytes]:
    out, sent = [], 0
    while sent < TOTAL:
        frame = rng.randbytes(rng.choice(sizes))
        out.append(frame)
        sent += len(frame)
    return out


async def _exchange(link: PeerLink, frames: list[bytes], expected: int,
                    got: list[bytes], peak: list[int], hold: bool = False) -> None:
    """Send ``frames`` while reading ``expected`` frames; the reader keeps reading until our
    own sends are acknowledged too (FLOW frames are taken inside ``recv``), as a link's reader
    task does for as long as the link lives. ``hold``: the reader starts only once HOLD bytes
    are sent (a node busy applying a big update reads nothing for a while)."""
    received = trio.Event()
    held = trio.Event()

    async def reader() -> None:
        if hold:
            await held.wait()
        while True:
            got.append(await link.recv())
            if len(got) == expected:
                received.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for frame in frames:
            await link.send(frame)
            peak[0] = max(peak[0], link._sent - link._acked)
            if link._sent >= HOLD:
                held.set()
        await received.wait()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("frames", ["small", "large"])
@pytest.mark.parametrize("hold", [False, True], ids=["reading", "sending-before-reading"])
async def test_full_size_frames_both_ways_at_once_never_exceed_the_window(
        hold: bool, frames: str) -> None:
    """``hold``: neither end reads until it has sent HOLD bytes, so each direction's
    bytes in flight wait unread (in the kernel's buffers and websockets' queue of received
    messages, which its reader keeps filling). ``large``: both ends took large frames
    (``allow_large_frames``, as a node does once the peer's HELLO is accepted)."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    to_server, to_client = _frames(rng, SIZES[frames]), _frames(rng, SIZES[frames])
    got_server: list[bytes] = []
    got_client: list[bytes] = []
    peaks = [[0], [0]]
    server_done = trio.Event()
    assert ACK_EVERY <= WINDOW and CHUNK < MAX_FRAME

    def link_of(ws: object) -> PeerLink:
        link = PeerLink(ws)  # type: ignore[arg-type]
        if frames == "large":
            link.allow_large_frames()
        return link

    async def handler(ws: object) -> None:
        link = link_of(ws)
        await _exchange(link, to_client, len(to_server), got_server, peaks[0], hold)
        server_done.set()
        await trio.sleep_forever()  # the client closes once both sides have everything

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                serve_websockets, handler, await open_listeners("127.0.0.1", 0)))
            async with dial(f"ws://127.0.0.1:{port_of(server)}") as ws:
                await _exchange(link_of(ws), to_server, len(to_client), got_client,
                                peaks[1], hold)
                await server_done.wait()
            nursery.cancel_scope.cancel()
    assert got_server == to_server
    assert got_client == to_client
    # The sender waits for credit before a frame once WINDOW bytes are unacknowledged.
    assert all(0 < peak[0] <= WINDOW + max(SIZES[frames]) for peak in peaks), peaks


async def test_megabyte_messages_both_ways_at_once_do_not_deadlock() -> None:
    """The regression test of websockets.trio's two-way deadlock, on the connections ``dial``
    and ``serve_websockets`` make, without PeerLink's window: each end sends 16 messages of
    1 MiB while reading the other's in another task (upstream's connections hung every time
    at 8 × 1 MiB, and at 8 × 256 KiB: measured, 3 of 3). A ping's pong, which the reader
    queues for another task to write, comes back meanwhile."""
    size, count = 1 << 20, 16
    message = random.Random(5).randbytes(size)
    server_done = trio.Event()

    async def exchange(ws: object) -> None:
        async def reader() -> None:
            for _ in range(count):
                assert await ws.recv() == message  # type: ignore[attr-defined]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for _ in range(count):
                await ws.send(message)  # type: ignore[attr-defined]

    async def handler(ws: object) -> None:
        await exchange(ws)
        server_done.set()
        await trio.sleep_forever()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                serve_websockets, handler, await open_listeners("127.0.0.1", 0),
                max_size=LARGE_PEER_MAX_SIZE))
            async with dial(f"ws://127.0.0.1:{port_of(server)}", api=True) as ws:
                pong = await ws.ping()
                await exchange(ws)
                await server_done.wait()
                await pong.wait()
            nursery.cancel_scope.cancel()


async def test_a_flow_frame_on_a_closed_connection_is_link_broken() -> None:
    """PeerLink queues its FLOW frames without waiting (``send_nowait``); on a connection
    that is no longer open that is LinkBroken, as for any send."""
    frames = ACK_EVERY // MAX_FRAME

    async def handler(ws: object) -> None:
        for _ in range(frames):
            await PeerLink(ws).send(b"x" * MAX_FRAME)  # type: ignore[arg-type]
        await ws.aclose()  # type: ignore[attr-defined]

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                serve_websockets, handler, await open_listeners("127.0.0.1", 0)))
            async with dial(f"ws://127.0.0.1:{port_of(server)}") as ws:
                link = PeerLink(ws)
                await ws.wait_closed()  # the frames came before the close: still queued
                for _ in range(frames - 1):
                    await link.recv()
                with pytest.raises(LinkBroken, match="while sending"):
                    await link.recv()  # taking the last owes a FLOW, which cannot go out
            nursery.cancel_scope.cancel()


def test_a_keepalive_timeout_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    """websockets.trio logs a keepalive timeout as an ERROR with a traceback; the transport
    makes it one WARNING line naming the cause (what a node's log and a tool's stderr show)."""
    from websockets.exceptions import ConnectionClosedError
    from websockets.frames import Close

    logger = logging.getLogger("websockets.client")
    with caplog.at_level(logging.WARNING, logger="websockets"):
        try:
            raise ConnectionClosedError(None, Close(1011, "keepalive ping timeout"))
        except ConnectionClosedError:
            logger.error("keepalive ping failed", exc_info=True)
        logger.error("something else", exc_info=False)
    first, other = caplog.records
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert first.getMessage().startswith("keepalive ping failed: sent 1011 (internal error) "
                                         "keepalive ping timeout")
    assert other.levelno == logging.ERROR and other.getMessage() == "something else"
