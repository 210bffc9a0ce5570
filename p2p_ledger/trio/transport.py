"""Websockets on trio: the only module that imports ``websockets``.

Peer links carry binary protocol frames with a credit window: a sender never has more than
``WINDOW`` unacknowledged bytes in flight, and the receiver returns a FLOW frame for every
``ACK_EVERY`` bytes it has taken. websockets.trio 17.4 deadlocks when both ends push large
messages at once (its reader task flushes output while holding the send lock, see FACTS.md);
with the bytes in flight bounded below the socket buffers, no send can block for long, so neither
reader gets stuck. Per-message deflate is off: sync frames are already compact binary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    WebSocketException,
)
from websockets.trio.client import connect as ws_connect
from websockets.trio.connection import Connection
from websockets.trio.server import Server, serve

from ..core.errors import LinkBroken, LinkClosed
from ..core.wire import FLOW, MAX_FRAME, Flow, encode

WINDOW = 128 * 1024
ACK_EVERY = 32 * 1024
PEER_MAX_SIZE = MAX_FRAME + 1024
API_MAX_SIZE = 512 * 1024 * 1024
_FLOW_TYPE = bytes([1, FLOW])  # wire version 1, type FLOW

__all__ = [
    "Connection", "ConnectionClosed", "PeerLink", "dial", "serve_websockets", "port_of",
    "API_MAX_SIZE",
]


class PeerLink:
    """Flow-controlled binary frames over one websocket connection."""

    def __init__(self, ws: Connection) -> None:
        self.ws = ws
        self._sent = 0
        self._acked = 0
        self._received = 0
        self._reported = 0
        self._credit = trio.Condition()
        self._send_lock = trio.Lock()

    async def send(self, frame: bytes) -> None:
        async with self._send_lock:
            async with self._credit:
                while self._sent - self._acked > WINDOW:
                    await self._credit.wait()
            self._sent += len(frame)
            await self._ws_send(frame)

    async def recv(self) -> bytes:
        """The next protocol frame; LinkClosed / LinkBroken when the connection ends."""
        while True:
            try:
                frame = await self.ws.recv()
            except ConnectionClosedOK:
                raise LinkClosed("peer closed the connection") from None
            except ConnectionClosed as exc:
                raise LinkBroken(f"connection broken: {exc}") from None
            if isinstance(frame, str):
                raise LinkBroken("peer sent a text frame on a peer link")
            if frame[:2] == _FLOW_TYPE and len(frame) == 10:
                async with self._credit:
                    self._acked = max(self._acked, int.from_bytes(frame[2:], "big"))
                    self._credit.notify_all()
                continue
            self._received += len(frame)
            if self._received - self._reported >= ACK_EVERY:
                self._reported = self._received
                await self._ws_send(encode(Flow(self._received)))
            return bytes(frame)

    async def _ws_send(self, frame: bytes) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed as exc:
            raise LinkBroken(f"connection broken while sending: {exc}") from None

    async def aclose(self, reason: str = "") -> None:
        with trio.move_on_after(2):
            await self.ws.aclose(reason=reason[:120])


@asynccontextmanager
async def dial(url: str, *, api: bool = False, timeout: float = 10.0) -> AsyncIterator[Connection]:
    """Open a websocket to ``url``; LinkBroken with a readable reason when that fails."""
    entered = False
    try:
        async with ws_connect(
            url, compression=None, proxy=None, open_timeout=timeout,
            max_size=API_MAX_SIZE if api else PEER_MAX_SIZE, ping_interval=10, ping_timeout=20,
        ) as ws:
            entered = True
            yield ws
    except (OSError, WebSocketException, TimeoutError, ValueError) as exc:
        if entered:
            raise
        raise LinkBroken(f"cannot connect to {url}: {exc or type(exc).__name__}") from None


async def serve_websockets(
    handler: Callable[[Connection], Awaitable[None]],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the Server (see ``port_of``)."""
    await serve(handler, port, host=host, compression=None, max_size=API_MAX_SIZE,
                ping_interval=10, ping_timeout=20, task_status=task_status)


def port_of(server: Server) -> int:
    return int(server.listeners[0].socket.getsockname()[1])

