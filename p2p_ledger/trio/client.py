"""``Client``: reach a running node over its websocket API (``api.py``) with a Node's calls.

Every entry the node sends is re-checked here (content id, canonical form), so a reader trusts
the bytes, not the server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..core import errors
from ..core.cursor import Cursor
from ..core.entry import Entry, decode_record
from ..core.errors import LedgerError, LinkBroken, RemoteProtocolError
from ..core.protocol import cluster_key_bytes
from .api import api_mac, parse_message
from .transport import Connection, ConnectionClosed, client_tls, dial

WATCH_BUFFER = 256  # entries a watch stream holds for a slow consumer (then the socket waits)


def _error_from(resp: Mapping[str, Any]) -> LedgerError:
    cls = getattr(errors, str(resp.get("error")), None)
    if not (isinstance(cls, type) and issubclass(cls, LedgerError)):
        cls = LedgerError
    return cls(resp.get("message", "request failed"))


def _entry_in(obj: Mapping[str, Any]) -> Entry:
    try:
        return decode_record(base64.b64decode(obj["record"], validate=True))
    except (KeyError, ValueError, TypeError):
        raise RemoteProtocolError("node sent an entry without a valid record") from None


class Client:
    """Reach a running node over its websocket API with the calls an embedded ``Node`` offers.

    Same names, arguments and results as ``Node``; every call is ``async`` here (each is a
    round trip), where ``Node.get``/``status``/``contexts``/``verify``/``snapshot`` are plain
    methods (they read local memory). Every entry received is re-checked (content id,
    canonical form): a reader trusts the bytes, not the node.

    Every call may also raise ``LinkBroken`` (the connection failed) or ``RemoteProtocolError``
    (the node's answer is not the API); an error the node reports is raised as the same
    ``LedgerError`` subclass it raised there (``InvalidContextName``, ``PayloadTooLarge``, ...).
    """

    def __init__(self, ws: Connection, url: str, key: bytes | None) -> None:
        self.ws = ws
        self.url = url
        self.key = key
        self.node_id = ""
        self._next_id = 1
        self._timeout = 10.0
        self._tls_ca: str | os.PathLike[str] | None = None
        self._nursery: trio.Nursery | None = None  # runs the watch streams (see watch)

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str, cluster_key: bytes | str | None = None,
                      timeout: float = 10.0, stream: trio.abc.Stream | None = None,
                      tls_ca: str | os.PathLike[str] | None = None,
                      ) -> AsyncIterator[Client]:
        """Connect to the node at ``url`` (``ws://`` or ``wss://``) for the ``async with`` block.

        Args: ``cluster_key`` the node's key when it has one (proved with an HMAC, never sent);
        ``timeout`` for connecting and the handshake; ``stream`` an already connected TCP
        stream to use instead of dialing ``url``; ``tls_ca`` the CA (PEM bundle) a ``wss://``
        node's certificate must chain to (default: the system's trust store; the host name is
        checked too).
        Raises ``LinkBroken`` when the node cannot be reached, needs a key we lack, or refuses
        ours (``RemoteProtocolError``: bad key).
        """
        key = cluster_key_bytes(cluster_key)
        tls = client_tls(tls_ca) if url.startswith("wss://") else None
        async with dial(url, api=True, timeout=timeout, stream=stream, tls=tls) as ws:
            client = cls(ws, url, key)
            client._timeout, client._tls_ca = timeout, tls_ca
            await client._hello()
            try:
                async with trio.open_nursery() as nursery:
                    client._nursery = nursery
                    try:
                        yield client
                    finally:
                        nursery.cancel_scope.cancel()  # ends the watch streams still running
            except BaseExceptionGroup as group:
                # why: the nursery wraps what the caller's block raised in a group; callers
                # catch LedgerError (a LinkBroken when the node goes away mid-call)
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise

    async def _hello(self) -> None:
        resp = await self._call("hello")
        self.node_id = str(resp.get("node_id", ""))
        if resp.get("auth_required"):
            if self.key is None:
                raise LinkBroken(f"{self.url} requires a cluster key (--cluster-key)")
            await self._call("auth", mac=api_mac(self.key, bytes.fromhex(resp["nonce"])))

    async def _send(self, op: str, **fields: Any) -> int:
        req_id = self._next_id
        self._next_id += 1
        try:
            await self.ws.send(json.dumps({"id": req_id, "op": op, **fields}))
        except ConnectionClosed as exc:
            raise LinkBroken(f"connection to {self.url} lost: {exc}") from None
        return req_id

    async def _recv(self) -> dict[str, Any]:
        try:
            resp = parse_message(await self.ws.recv())
        except ConnectionClosed as exc:
            raise LinkBroken(f"connection to {self.url} lost: {exc}") from None
        if not resp.get("ok"):
            raise _error_from(resp)
        return resp

    async def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        await self._send(op, **fields)
        return await self._recv()

    async def append(self, context: str, payload: bytes | str, key: str = "",
                     meta: Mapping[str, str] | None = None) -> Entry:
        """As ``Node.append``: returns the entry once it is durable on that node."""
        resp = await self._call("append", context=context, key=key, meta=dict(meta or {}),
                                **_payload_fields(payload))
        return _entry_in(resp["entry"])

    async def append_many(
        self, items: Sequence[tuple[str, bytes | str, str, Mapping[str, str] | None]]
    ) -> list[Entry]:
        """As ``Node.append_many``: all items validated, then committed together."""
        reqs = [{"context": c, "key": k, "meta": dict(m or {}), **_payload_fields(p)}
                for c, p, k, m in items]
        resp = await self._call("append_many", items=reqs)
        return [_entry_in(e) for e in resp["entries"]]

    async def get(self, context: str, key: str | None = None,
                  after: Cursor | str | None = None, limit: int | None = None,
                  ) -> tuple[list[Entry], Cursor]:
        """As ``Node.get`` (awaited here): ``(entries, cursor)`` in causal order."""
        resp = await self._call("get", context=context, key=key,
                                after=None if after is None else str(after), limit=limit)
        return [_entry_in(e) for e in resp["entries"]], Cursor.parse(resp["cursor"])

    async def watch(self, context: str, key: str | None = None,
                    since: Cursor | str | None = None) -> AsyncIterator[tuple[Entry, Cursor]]:
        """The backlog after ``since``, then every new entry, each with its resume cursor.

        The stream runs on a connection of its own, owned by a task in this client's nursery
        (not by the generator: a generator that holds a nursery across ``yield`` corrupts trio's
        cancel scopes when the loop is left inside ``move_on_after``). Leave the ``async for``
        whenever you like; ``contextlib.aclosing`` closes the connection at once, otherwise it
        closes when the generator is collected or the client closes::

            async with aclosing(client.watch("ctx")) as stream:
                async for entry, cursor in stream: ...
        """
        if self._nursery is None:
            raise RuntimeError("Client.watch needs a client from Client.connect")
        send, receive = trio.open_memory_channel[tuple[Entry, Cursor] | LedgerError](WATCH_BUFFER)
        scope = await self._nursery.start(self._watch_task, context, key, since, send)
        try:
            async with receive:
                async for item in receive:
                    if isinstance(item, LedgerError):
                        raise item
                    yield item
        finally:
            scope.cancel()  # synchronous: safe in aclose and in the garbage collector's hook

    async def _watch_task(
        self, context: str, key: str | None, since: Cursor | str | None,
        send: trio.MemorySendChannel[tuple[Entry, Cursor] | LedgerError],
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one watch; errors before it started go to ``start``'s caller, later ones down the
        channel (the consumer raises them)."""
        with trio.CancelScope() as scope:
            async with send, Client.connect(self.url, self.key, self._timeout,
                                            tls_ca=self._tls_ca) as other:
                await other._call("watch", context=context, key=key,
                                  since=None if since is None else str(since))
                task_status.started(scope)
                try:
                    while True:
                        resp = await other._recv()
                        await send.send((_entry_in(resp), Cursor.parse(resp["cursor"])))
                except LedgerError as exc:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await send.send(exc)
                except trio.BrokenResourceError:
                    pass  # the consumer left

    async def status(self) -> dict[str, Any]:
        """As ``Node.status``: the node's JSON summary (root, entries, peers...)."""
        resp = await self._call("status")
        return {k: v for k, v in resp.items() if k not in ("id", "ok")}

    async def contexts(self) -> list[dict[str, Any]]:
        """The node's contexts, sorted by name: ``{"context", "entries", "root"}`` each (root in
        hex). Raises LinkBroken when the connection fails."""
        return list((await self._call("contexts"))["contexts"])

    async def snapshot(self, context: str) -> bytes:
        """As ``Node.snapshot``: a self-verifying snapshot file of ``context``."""
        resp = await self._call("snapshot", context=context)
        return base64.b64decode(resp["snapshot_b64"])

    async def load(self, blob: bytes, fail_if_exists: bool = False) -> tuple[str, int]:
        """As ``Node.load``: ``(context, entries added)``; the file is refused as a whole."""
        resp = await self._call("load", snapshot_b64=base64.b64encode(blob).decode(),
                                fail_if_exists=fail_if_exists)
        return str(resp["context"]), int(resp["added"])

    async def verify(self) -> list[str]:
        """As ``Node.verify``: one line per problem; an empty list means every check passed."""
        return list((await self._call("verify"))["problems"])

    async def prove(self, context: str, entry_id: str) -> dict[str, Any]:
        """The node's inclusion proof of the entry; check it with ``core.proof.check_proof``
        (this client does not trust it either)."""
        resp = await self._call("prove", context=context, entry_id=entry_id)
        return dict(resp["inclusion"])


def _payload_fields(payload: bytes | str) -> dict[str, str]:
    if isinstance(payload, str):
        return {"payload": payload}
    return {"payload_b64": base64.b64encode(payload).decode("ascii")}
