"""PeerLink flow control on a real loopback websocket: full-size chunks both ways at once.

websockets.trio 17.4 deadlocks when both ends send large messages at the same time
(ARCHITECTURE.md, "Transport"); PeerLink keeps frames ≤ MAX_FRAME and at most WINDOW bytes
unacknowledged per direction. Here both ends push 4 MB of MAX_FRAME-sized frames at each other
at the same moment, the way a two-way bulk catch-up does; ``trio.fail_after`` turns a deadlock
into a failure.
"""

from __future__ import annotations

import functools
import logging
import random

import pytest
import trio

from p2p_ledger.core.wire import CHUNK, MAX_FRAME
from p2p_ledger.trio.transport import (
    ACK_EVERY,
    WINDOW,
    PeerLink,
    dial,
    open_listeners,
    port_of,
    serve_websockets,
)

TOTAL = 4 * 1024 * 1024


def _frames(rng: random.Random) -> list[bytes]:
    out, sent = [], 0
    while sent < TOTAL:
        frame = rng.randbytes(rng.choice([MAX_FRAME, CHUNK, 1000]))
        out.append(frame)
        sent += len(frame)
    return out


async def _exchange(link: PeerLink, frames: list[bytes], expected: int,
                    got: list[bytes], peak: list[int], hold: bool = False) -> None:
    """Send ``frames`` while reading ``expected`` frames; the reader keeps reading until our
    own sends are acknowledged too (FLOW frames are taken inside ``recv``), as a link's reader
    task does for as long as the link lives. ``hold``: the reader starts only once a whole
    window is sent (a node busy applying a big update reads nothing for a while)."""
    received = trio.Event()
    window_sent = trio.Event()

    async def reader() -> None:
        if hold:
            await window_sent.wait()
        while True:
            got.append(await link.recv())
            if len(got) == expected:
                received.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for frame in frames:
            await link.send(frame)
            peak[0] = max(peak[0], link._sent - link._acked)
            if link._sent >= WINDOW:
                window_sent.set()
        await received.wait()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("hold", [False, True], ids=["reading", "window-before-reading"])
async def test_full_size_frames_both_ways_at_once_never_exceed_the_window(hold: bool) -> None:
    """``hold``: neither end reads until it has sent a whole window, so each direction's
    kernel buffers must take a window with nobody reading; were it larger than they take, the
    writers would block holding websockets' send lock and neither reader could start."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    to_server, to_client = _frames(rng), _frames(rng)
    got_server: list[bytes] = []
    got_client: list[bytes] = []
    peaks = [[0], [0]]
    server_done = trio.Event()
    assert ACK_EVERY <= WINDOW and CHUNK < MAX_FRAME

    async def handler(ws: object) -> None:
        link = PeerLink(ws)  # type: ignore[arg-type]
        await _exchange(link, to_client, len(to_server), got_server, peaks[0], hold)
        server_done.set()
        await trio.sleep_forever()  # the client closes once both sides have everything

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                serve_websockets, handler, await open_listeners("127.0.0.1", 0)))
            async with dial(f"ws://127.0.0.1:{port_of(server)}") as ws:
                await _exchange(PeerLink(ws), to_server, len(to_client), got_client,
                                peaks[1], hold)
                await server_done.wait()
            nursery.cancel_scope.cancel()
    assert got_server == to_server
    assert got_client == to_client
    # The sender waits for credit before a frame once WINDOW bytes are unacknowledged.
    assert all(0 < peak[0] <= WINDOW + MAX_FRAME for peak in peaks), peaks


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
