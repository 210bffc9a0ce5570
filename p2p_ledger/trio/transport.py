"""Websockets on trio: the only module that imports ``websockets``.

Peer links carry binary protocol frames with a credit window: a sender never has more than
``WINDOW`` unacknowledged bytes in flight, and the receiver returns a FLOW frame for every
``ACK_EVERY`` bytes it has taken. websockets.trio 17.4 deadlocks when both ends push large
messages at once (measured: 1 MB each way hangs every time, >= ~60 KB often): its reader task
waits for the send lock after every read, so a send blocked on a peer that is not reading stops
our reading too (see ARCHITECTURE.md, "Transport"). Every connection made here is a
``_ReaderNeverWaitsToSend``: its reader never waits to send, and PeerLink queues its FLOW frames
without waiting, so both ends keep reading whatever the other sends. Per-message deflate is off:
sync frames are already compact binary.

Message size limits: websockets holds a whole message in memory before ``recv`` returns it, so
the limit is what a connection can make us allocate. Every accepted connection starts with
``PEER_MAX_SIZE`` (a peer frame is at most ``MAX_FRAME``): a stranger cannot make the node hold
more than that before it has identified itself. A peer link takes ``LARGE_PEER_MAX_SIZE`` once
the core accepted the peer's HELLO (``PeerLink.allow_large_frames``: UPDATE frames up to
``LARGE_FRAME`` from peers that said they send them). An API client is raised to ``API_MAX_SIZE``
(``allow_large_messages``) only once it said hello and, with a cluster key, proved the key.
why: with 512 MiB for every connection, one 150 MiB first frame raised a node's peak RSS by
300 MiB (measured: VmHWM +307 MB); with the small limit, +0 (the frame is refused, close 1009, as
soon as its header arrives).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    WebSocketException,
)
from websockets.protocol import OPEN
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from websockets.trio.connection import Connection
from websockets.trio.server import Server, ServerConnection, serve

from ..core.errors import InvalidUrl, LinkBroken, LinkClosed, ListenError, TlsError
from ..core.wire import FLOW, LARGE_FRAME, MAX_FRAME, Flow, encode

# why: the window was 128 KiB (FLOW every 32 KiB): about two frames in flight, so both ends
# woke for every frame. Moving 100 MB in 63 KiB frames between two processes (PeerLink alone,
# load ~9 on 2 cores) cost each end 0.55-0.66 CPU-s with it and 0.26-0.32 with 1 MiB (FLOW every
# 256 KiB); two node processes catching up 1,000 x 100 KB, alternated 3 pairs: sender 0.89-1.17
# -> 0.73-0.74 CPU-s, receiver 1.82-2.10 -> 1.43-1.56. With 1 MiB frames (LARGE_FRAME) a 4 MiB
# window (FLOW every MiB) did no better than 1 MiB: 12.6 against 14.8 MB/s, receiver 1.31
# against 1.23 CPU-s (3 alternated rounds, load 10). Then, with the node's CPU per part lower,
# the timeline of a 1,000 x 100 KB catch-up (load ~2) showed the two ends taking turns: the
# receiver applies and commits a 10 MB part (~65 ms, reading nothing), while the sender, after
# 1-2 MiB, waits for credit; then the receiver waits ~25 ms for the next part's frames. A
# window larger than what one such pause leaves unread lets the sender fill the kernel's
# buffers meanwhile. Measured with the pauses as sleeps, so the load cannot blur them (PeerLink
# between two processes, 100 x 1 MiB in parts of 10, receiver 60 ms after each part, sender
# 40 ms before each; 6 alternated rounds, load 10): 1 MiB window 1.86-2.25 s, 4 MiB 1.75-1.76,
# 8 MiB 1.68-1.84, 16 MiB 1.33-1.75, 64 MiB 1.42-1.56 (the kernel's buffers are the bound).
WINDOW = 16 * 1024 * 1024
ACK_EVERY = 1024 * 1024
PEER_MAX_SIZE = MAX_FRAME + 1024
LARGE_PEER_MAX_SIZE = LARGE_FRAME + 1024  # once the peer's HELLO is accepted (large frames)
API_MAX_SIZE = 512 * 1024 * 1024
_FLOW_TYPE = bytes([1, FLOW])  # wire version 1, type FLOW

__all__ = [
    "Connection", "ConnectionClosed", "PeerLink", "dial", "serve_websockets", "port_of",
    "API_MAX_SIZE", "allow_large_messages", "check_url", "client_tls", "open_listeners",
    "server_tls",
]


class _ReaderNeverWaitsToSend(Connection):
    """A websockets.trio connection whose reader task never waits to send.

    Upstream's reader (``recv_events``), after every read, calls ``send_data``, which takes the
    send lock and writes whatever the protocol queued (a pong, a close frame), even when that is
    nothing. While a ``send`` holds that lock, blocked in ``send_all`` because the peer is not
    reading, the reader waits for the lock and stops reading; when both ends do it, neither ever
    reads again (measured: 1 MiB messages both ways at once hung every time). Here, while the
    connection is open, the reader only queues: nothing to write costs nothing, and something
    to write (a pong) is written by a task of its own (``_flush``). ``send_nowait`` queues a
    message the same way, so a caller never waits either (PeerLink's FLOW frames). Opening and
    closing keep upstream's behaviour (the handshake, the close frame and EOF are written inline).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._reader: trio.lowlevel.Task | None = None
        self._flushing = False
        super().__init__(*args, **kwargs)  # starts recv_events

    async def recv_events(self) -> None:
        self._reader = trio.lowlevel.current_task()
        await super().recv_events()

    async def send_data(self) -> None:
        if self.protocol.state is OPEN and trio.lowlevel.current_task() is self._reader:
            if self.protocol.writes:
                self._flush_soon()
            return
        await super().send_data()

    def send_nowait(self, message: bytes) -> None:
        """Queue one binary message; a task of the connection's writes it. ConnectionClosed
        once the connection is no longer open."""
        p = self.protocol
        if p.state is not OPEN:
            raise ConnectionClosed(p.close_rcvd, p.close_sent, p.close_rcvd_then_sent)
        assert self.send_in_progress is None, "not inside a fragmented message"
        p.send_binary(message)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flushing:
            self._flushing = True
            self.nursery.start_soon(self._flush)

    async def _flush(self) -> None:
        try:
            while self.protocol.writes:  # what was queued while we waited for the lock too
                await super().send_data()
        except Exception as exc:  # what upstream's reader does when its write fails
            self.set_connection_exc(exc)
            await self.close_stream()
        finally:
            self._flushing = False


class _ClientConnection(_ReaderNeverWaitsToSend, ClientConnection):
    pass


class _ServerConnection(_ReaderNeverWaitsToSend, ServerConnection):
    pass


def check_url(url: str, what: str = "URL") -> str:
    """``url`` if it is a ws:// or wss:// URL with a host (and a valid port, if any); else
    InvalidUrl naming ``what`` (e.g. "--peer"). Checked before anything is dialed or created,
    so a typo is an error at once, not a peer retried forever."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise InvalidUrl(f"{what} {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidUrl(f"{what} {url!r} is not a ws:// or wss:// URL "
                         f"(e.g. ws://10.0.0.5:7070)")
    if not parts.hostname:
        raise InvalidUrl(f"{what} {url!r} has no host (e.g. ws://10.0.0.5:7070)")
    return url


class PeerLink:
    """Flow-controlled binary frames over one websocket connection."""

    def __init__(self, ws: Connection) -> None:
        assert isinstance(ws, _ReaderNeverWaitsToSend), "a connection from dial or serve_websockets"
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
                try:  # why: never wait to send here, or this reader could stop reading
                    self.ws.send_nowait(encode(Flow(self._received)))
                except ConnectionClosed as exc:
                    raise LinkBroken(f"connection broken while sending: {exc}") from None
            return bytes(frame)

    def allow_large_frames(self) -> None:
        """Take messages up to LARGE_FRAME from now on (``NodeCore.takes_large_frames``)."""
        self.ws.protocol.max_message_size = LARGE_PEER_MAX_SIZE

    async def _ws_send(self, frame: bytes) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed as exc:
            raise LinkBroken(f"connection broken while sending: {exc}") from None

    async def aclose(self, reason: str = "") -> None:
        with trio.move_on_after(2):
            await self.ws.aclose(reason=reason[:120])


@asynccontextmanager
async def dial(url: str, *, api: bool = False, timeout: float = 10.0,
               stream: trio.abc.Stream | None = None,
               tls: ssl.SSLContext | None = None) -> AsyncIterator[Connection]:
    """Open a websocket to ``url`` (over ``stream`` if given: an already connected TCP stream,
    e.g. from another network namespace); LinkBroken with a readable reason when that fails.
    A ``wss://`` URL verifies the server's certificate and name with ``tls`` (``client_tls``),
    or the system's trust store."""
    entered = False
    try:
        async with ws_connect(
            url, stream=stream, compression=None, proxy=None, open_timeout=timeout,
            ssl=tls if url.startswith("wss://") else None,
            max_size=API_MAX_SIZE if api else PEER_MAX_SIZE, ping_interval=10, ping_timeout=20,
            create_connection=_ClientConnection,
        ) as ws:
            entered = True
            yield ws
    except (OSError, WebSocketException, TimeoutError, ValueError,
            trio.BrokenResourceError) as exc:
        if entered:
            raise
        reason = str(exc) or type(exc).__name__
        untrusted = next((e for e in (exc, exc.__cause__)
                          if isinstance(e, ssl.SSLCertVerificationError)), None)
        if untrusted is not None:
            reason = (f"its TLS certificate is not trusted ({untrusted.verify_message}); give "
                      f"its CA with --tls-ca")
        elif url.startswith("wss://") and isinstance(exc, (trio.BrokenResourceError,
                                                           ssl.SSLError)):
            # What a TLS client sees from a plain-text server: the bytes are not TLS.
            reason = f"TLS handshake failed ({reason}); is it a plain ws:// node?"
        raise LinkBroken(f"cannot connect to {url}: {reason}") from None


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind ``host:port`` (0 = any free port); ListenError naming the address on failure."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def serve_websockets(
    handler: Callable[[Connection], Awaitable[None]],
    listeners: list[trio.SocketListener],
    *,
    max_size: int = PEER_MAX_SIZE,
    tls: ssl.SSLContext | None = None,
    process_request: Callable[[Any, Any], Any] | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on ``listeners`` (see ``open_listeners``) until cancelled; ``task_status.started``
    gets the Server (see ``port_of``). ``max_size`` bounds every message until
    ``allow_large_messages`` raises it."""
    await serve(handler, listeners=listeners, compression=None, max_size=max_size, ssl=tls,
                ping_interval=10, ping_timeout=20, process_request=process_request,
                create_connection=_ServerConnection, task_status=task_status)


def server_tls(cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ssl.SSLContext:
    """The TLS context of a node serving ``wss://`` (TLS 1.2 or later); TlsError, one line, for
    files that cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"cannot use --tls-cert {cert} with --tls-key {key}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    return context


def client_tls(ca: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """The TLS context for dialing ``wss://``: verifies the certificate (against ``ca``, a PEM
    bundle, else the system's trust store) and the host name."""
    try:
        return ssl.create_default_context(cafile=None if ca is None else os.fspath(ca))
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"cannot use --tls-ca {ca}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None


def allow_large_messages(ws: Connection) -> None:
    """Let an identified API client send messages up to ``API_MAX_SIZE`` (from its next one)."""
    ws.protocol.max_message_size = API_MAX_SIZE


def port_of(server: Server) -> int:
    return int(server.listeners[0].socket.getsockname()[1])



class _OneLineKeepaliveFailure(logging.Filter):
    """websockets.trio 17.4 logs a keepalive timeout as an ERROR with a traceback ("keepalive
    ping failed": closing the connection it has just failed raises in its own send context).
    A peer or client going quiet is ordinary: one WARNING line naming the cause instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "keepalive ping failed" and record.exc_info:
            exc = record.exc_info[1]
            record.msg, record.args = f"keepalive ping failed: {exc}", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


for _name in ("websockets.client", "websockets.server"):  # the loggers connections log to
    logging.getLogger(_name).addFilter(_OneLineKeepaliveFailure())
