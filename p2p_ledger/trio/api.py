"""The client API over websockets: JSON text messages, one request → one response.

Any websocket client can speak it. First message ``{"op": "hello"}``; the answer carries
``node_id``, a ``nonce`` and ``auth_required``. With a cluster key the client then sends
``{"op": "auth", "mac": hex(HMAC-SHA256(key, "p2p-ledger-api" + nonce))}``. Requests carry an
``id`` echoed by the response, which is ``{"ok": true, ...}`` or
``{"ok": false, "error": "<ErrorClass>", "message": "..."}``.

| op          | request fields                              | response fields               |
|-------------|---------------------------------------------|-------------------------------|
| append      | context, payload or payload_b64, key, meta  | entry                         |
| append_many | items: list of append requests              | entries                       |
| get         | context, key, after, limit                  | entries, cursor               |
| watch       | context, key, since                         | then a stream: entry, cursor  |
| status      |                                             | the node's status object      |
| contexts    |                                             | contexts: [{context, entries, root}] |
| snapshot    | context                                     | snapshot_b64                  |
| load        | snapshot_b64, fail_if_exists                | context, added                |
| verify      |                                             | problems ([] = all sound)     |
| prove       | context, entry_id                           | inclusion (see core/proof.py) |

Entries travel as ``{"record": base64(id + canonical encoding)}``: the client (``client.py``)
re-checks each content id, so a reader trusts the bytes, not the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from ..core import errors
from ..core.cursor import Cursor
from ..core.entry import Entry
from ..core.errors import LedgerError, LocalInputError, RemoteProtocolError
from .transport import Connection, ConnectionClosed, allow_large_messages

log = logging.getLogger("p2p_ledger.api")


class ServedNode(Protocol):
    """What the API server needs of a node (``runtime.Node`` is one): it serves these calls."""

    @property
    def node_id(self) -> str: ...
    @property
    def api_key(self) -> bytes | None: ...
    async def append_many(
        self, items: Sequence[tuple[str, bytes | str, str, Mapping[str, str] | None]]
    ) -> list[Entry]: ...
    def get(self, context: str, key: str | None = None, after: Cursor | str | None = None,
            limit: int | None = None) -> tuple[list[Entry], Cursor]: ...
    def watch(self, context: str, key: str | None = None, since: Cursor | str | None = None
              ) -> AsyncIterator[tuple[Entry, Cursor]]: ...
    def status(self) -> dict[str, Any]: ...
    def contexts(self) -> list[dict[str, Any]]: ...
    def snapshot(self, context: str) -> bytes: ...
    async def load(self, blob: bytes, fail_if_exists: bool = False) -> tuple[str, int]: ...
    async def verify(self) -> list[str]: ...
    def prove(self, context: str, entry_id: str) -> dict[str, Any]: ...


def api_mac(key: bytes, nonce: bytes) -> str:
    return hmac.new(key, b"p2p-ledger-api" + nonce, hashlib.sha256).hexdigest()


def _entry_out(entry: Entry) -> dict[str, str]:
    return {"record": base64.b64encode(entry.record).decode("ascii")}


def _payload_in(req: Mapping[str, Any]) -> bytes | str:
    if "payload_b64" in req:
        try:
            return base64.b64decode(req["payload_b64"], validate=True)
        except (ValueError, TypeError):
            raise LocalInputError("payload_b64 is not valid base64") from None
    payload = req.get("payload", "")
    if not isinstance(payload, str):
        raise LocalInputError("payload must be a string (or use payload_b64)")
    return payload


def _context(req: Mapping[str, Any]) -> str:
    context = req.get("context")
    if not isinstance(context, str):
        raise errors.InvalidContextName(f"context must be a string, got {context!r}")
    return context


def _append_item(req: Mapping[str, Any]) -> tuple[str, bytes | str, str, Mapping[str, str]]:
    return (_context(req), _payload_in(req), req.get("key") or "", req.get("meta") or {})


async def serve_client(node: ServedNode, ws: Connection, first: str) -> None:
    """Serve one API connection until the client leaves."""
    nonce = secrets.token_bytes(16)
    key = node.api_key
    try:
        hello = parse_message(first)
        if hello.get("op") != "hello":
            await _reply(ws, hello, error=RemoteProtocolError("first message must be op=hello"))
            return
        # Identified (and, with a key, authenticated): requests may be large from now on. The
        # limit rises before the answer that lets the client go on, never after it.
        # why: raised after the reply, a client's first large request raced the change and got
        # close 1009 (seen once: a 360 KB append --file in a full test run under load).
        if key is None:
            allow_large_messages(ws)
        await _reply(ws, hello, node_id=node.node_id, nonce=nonce.hex(),
                     auth_required=key is not None)
        if key is not None:
            auth = parse_message(await ws.recv())
            if auth.get("op") != "auth" or not hmac.compare_digest(
                    str(auth.get("mac", "")), api_mac(key, nonce)):
                await _reply(ws, auth, error=RemoteProtocolError("bad or missing cluster key"))
                return
            allow_large_messages(ws)
            await _reply(ws, auth)
        while True:
            req = parse_message(await ws.recv())
            if req.get("op") == "watch":
                await _stream_watch(node, ws, req)
                return
            try:
                result = await _dispatch(node, req)
            except LedgerError as exc:
                await _reply(ws, req, error=exc)
            else:
                await _reply(ws, req, **result)
    except ConnectionClosed:
        return
    except RemoteProtocolError as exc:
        log.info("API client sent garbage: %s", exc)
        try:
            await ws.send(json.dumps({"ok": False, "error": "RemoteProtocolError",
                                      "message": str(exc)}))
        except ConnectionClosed:
            pass  # it left; nothing more to tell it


def parse_message(message: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        raise RemoteProtocolError("API messages are JSON objects") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("API messages are JSON objects")
    return obj


async def _reply(ws: Connection, req: Mapping[str, Any], error: BaseException | None = None,
                 **fields: Any) -> None:
    out: dict[str, Any] = {"id": req.get("id"), "ok": error is None}
    if error is not None:
        out.update(error=type(error).__name__, message=str(error))
    out.update(fields)
    await ws.send(json.dumps(out))


async def _dispatch(node: ServedNode, req: Mapping[str, Any]) -> dict[str, Any]:
    op = req.get("op")
    try:
        if op == "append":
            return {"entry": _entry_out((await node.append_many([_append_item(req)]))[0])}
        if op == "append_many":
            items = req.get("items")
            if not isinstance(items, list):
                raise LocalInputError("items must be a list")
            entries = await node.append_many([_append_item(i) for i in items])
            return {"entries": [_entry_out(e) for e in entries]}
        if op == "get":
            limit = req.get("limit")
            if limit is not None and (not isinstance(limit, int) or limit < 0):
                raise LocalInputError("limit must be a non-negative integer")
            entries, cursor = node.get(_context(req), req.get("key"), req.get("after"), limit)
            return {"entries": [_entry_out(e) for e in entries], "cursor": str(cursor)}
        if op == "status":
            return dict(node.status())
        if op == "contexts":
            return {"contexts": node.contexts()}
        if op == "snapshot":
            return {"snapshot_b64": base64.b64encode(node.snapshot(_context(req))).decode()}
        if op == "load":
            try:
                blob = base64.b64decode(req.get("snapshot_b64", ""), validate=True)
            except (ValueError, TypeError):
                raise errors.InvalidSnapshot("snapshot_b64 is not valid base64") from None
            context, added = await node.load(blob, bool(req.get("fail_if_exists")))
            return {"context": context, "added": added}
        if op == "verify":
            return {"problems": await node.verify()}
        if op == "prove":
            entry_id = req.get("entry_id")
            if not isinstance(entry_id, str):
                raise LocalInputError("entry_id must be a string (hex)")
            return {"inclusion": node.prove(_context(req), entry_id)}
    except (TypeError, AttributeError) as exc:  # a field of the wrong JSON type
        raise LocalInputError(f"bad request for {op}: {exc}") from None
    raise RemoteProtocolError(f"unknown op {op!r}")


async def _stream_watch(node: ServedNode, ws: Connection, req: Mapping[str, Any]) -> None:
    try:
        stream = node.watch(_context(req), req.get("key"), req.get("since"))
        await _reply(ws, req, watching=True)
        async for entry, cursor in stream:
            await ws.send(json.dumps({"id": req.get("id"), "ok": True, **_entry_out(entry),
                                      "cursor": str(cursor)}))
    except LedgerError as exc:
        await _reply(ws, req, error=exc)
