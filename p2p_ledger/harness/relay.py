"""A fault-injecting TCP relay for one directed link A→B of a real cluster (loopback only).

A listens on ``relay.url`` instead of B's own address: the relay accepts each connection A
dials, opens one to B's current target address and copies bytes both ways, unchanged. Controls:

* ``cut()`` closes every open connection and closes new ones at once until ``heal()`` (a node
  dialing sees the connection drop, as with a peer that is down);
* ``set_delay(seconds)`` holds each chunk that long before forwarding it (both directions; a
  pipeline, so latency does not add up per chunk and order is kept);
* ``set_drop(p)`` breaks a connection with probability ``p`` per forwarded chunk. TCP cannot
  lose bytes without corrupting the stream, so on a relay "loss" means a broken connection:
  the nodes see it closed and redial, as after a real network failure;
* ``set_target(host, port)`` points the relay at B's new address after B restarted (``None``
  while B is down: connections are closed at once).

Counters: ``bytes`` and ``chunks`` forwarded, ``connections`` accepted, ``refused`` (closed at
once: cut or no target), ``broken`` (closed by ``cut`` or a drop). ``run`` lives in a nursery
(``await nursery.start(relay.run)``) and stops, with every connection, when it is cancelled.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import trio

CHUNK = 64 * 1024
PIPELINE = 16  # chunks in flight per direction: bounded memory, backpressure beyond it
CONNECT_TIMEOUT = 3.0


@dataclass
class RelayCounters:
    bytes: int = 0
    chunks: int = 0
    connections: int = 0
    refused: int = 0
    broken: int = 0


class Relay:
    """One directed link's proxy: listens on 127.0.0.1, forwards to ``target``."""

    def __init__(self, name: str, target: tuple[str, int] | None = None,
                 seed: int | None = None) -> None:
        self.name = name
        self.target = target
        self.port = 0
        self.counters = RelayCounters()
        self.delay = 0.0
        self.drop = 0.0
        self.is_cut = False
        self._rng = random.Random(seed)
        self._live: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # ---- controls ------------------------------------------------------------------------------

    def cut(self) -> None:
        self.is_cut = True
        self._break_all()

    def heal(self) -> None:
        self.is_cut = False

    def set_delay(self, seconds: float) -> None:
        self.delay = max(0.0, seconds)

    def set_drop(self, probability: float) -> None:
        self.drop = min(1.0, max(0.0, probability))

    def set_target(self, target: tuple[str, int] | None) -> None:
        """Forward new connections to ``target``; open ones (to the old address) are closed."""
        self.target = target
        self._break_all()

    def _break_all(self) -> None:
        for scope in list(self._live):
            scope.cancel()
            self.counters.broken += 1
        self._live.clear()

    # ---- serving -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                # serve_listeners runs until cancelled; each connection is a task in `nursery`.
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.counters.connections += 1
        upstream: trio.SocketStream | None = None
        try:
            target = self.target
            if self.is_cut or target is None:
                self.counters.refused += 1
                return
            with trio.move_on_after(CONNECT_TIMEOUT):
                try:
                    upstream = await trio.open_tcp_stream(*target)
                except OSError:
                    upstream = None  # B is down: counted as refused just below
            if upstream is None or self.is_cut or self.target != target:
                self.counters.refused += 1  # B is down, or a cut/restart happened meanwhile
                return
            scope = trio.CancelScope()
            self._live.add(scope)
            try:
                with scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._direction, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._direction, upstream, client, nursery.cancel_scope)
            finally:
                self._live.discard(scope)
        finally:
            await trio.aclose_forcefully(client)
            if upstream is not None:
                await trio.aclose_forcefully(upstream)

    async def _direction(self, src: trio.SocketStream, dst: trio.SocketStream,
                         connection: trio.CancelScope) -> None:
        """Copy src → dst through a delay pipeline; either end closing ends the connection."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](PIPELINE)

        async def reader() -> None:
            async with send:
                while True:
                    try:
                        data = await src.receive_some(CHUNK)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        return
                    if self.drop and self._rng.random() < self.drop:
                        self.counters.broken += 1
                        connection.cancel()  # "loss": the connection breaks
                        return
                    await send.send((trio.current_time() + self.delay, data))

        async def writer() -> None:
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    try:
                        await dst.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    self.counters.bytes += len(data)
                    self.counters.chunks += 1
            connection.cancel()  # one side is gone (after what it sent was delivered)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(writer)


__all__ = ["Relay", "RelayCounters"]
