"""Entries: the immutable records of the ledger, their canonical encoding and content id.

Canonical encoding, version 1 (all integers big-endian; ``str`` is UTF-8 with a u32 length):

    b"P2PL" u8(version=1)
    str context | str key | u32 len + payload bytes
    u32 n_meta, then n_meta × (str name | str value), sorted by the name's UTF-8 bytes
    u64 lamport | str origin | u64 seq | u64 appended_at_ns

``id`` = sha256(encoding) in hex. What the ledger stores and ships (a *record*) is the 32 raw id
bytes followed by the encoding, so a record whose claimed id lies is caught by re-hashing.
Every field is covered by the id: an entry can never change without becoming another entry.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    IntegrityError,
    InvalidContextName,
    InvalidKey,
    InvalidMeta,
    InvalidNodeId,
    InvalidPayload,
    KeyTooLarge,
    LocalInputError,
    MetaTooLarge,
    PayloadTooLarge,
)

MAGIC = b"P2PL"
ENCODING_VERSION = 1
ID_SIZE = 32
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U64_MAX = 2**64 - 1

CONTEXT_RE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
NODE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Limits:
    """Size limits on what may be appended (and accepted from peers)."""

    max_payload: int = 4 * 1024 * 1024
    max_key: int = 256
    max_meta: int = 64 * 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Entry:
    context: str
    key: str
    payload: bytes
    meta: Mapping[str, str]
    lamport: int
    origin: str
    seq: int
    appended_at_ns: int
    id: str
    body: bytes = field(repr=False, compare=False)

    @property
    def order_key(self) -> tuple[int, str, int]:
        """Causal order: Lamport time, then origin and seq to break ties the same way everywhere."""
        return (self.lamport, self.origin, self.seq)

    @property
    def record(self) -> bytes:
        return bytes.fromhex(self.id) + self.body

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; the payload as text when it is UTF-8, else base64 in ``payload_b64``."""
        out: dict[str, Any] = {
            "id": self.id,
            "context": self.context,
            "key": self.key,
            "lamport": self.lamport,
            "origin": self.origin,
            "seq": self.seq,
            "appended_at_ns": self.appended_at_ns,
            "meta": dict(self.meta),
        }
        try:
            out["payload"] = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            out["payload_b64"] = base64.b64encode(self.payload).decode("ascii")
        return out


def check_context(name: object) -> str:
    if not isinstance(name, str) or not CONTEXT_RE.fullmatch(name):
        raise InvalidContextName(
            f"invalid context name {name!r}: use 1-128 characters of A-Z a-z 0-9 . _ : / -"
        )
    return name


def check_node_id(node_id: object) -> str:
    if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
        raise InvalidNodeId(
            f"invalid node id {node_id!r}: use 1-64 characters of A-Z a-z 0-9 . _ -"
        )
    return node_id


def check_fields(
    key: object, payload: object, meta: object, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, bytes, dict[str, str]]:
    """Validate user-supplied fields; each violation raises its own named error."""
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a string, got {type(key).__name__}")
    key_size = len(_utf8(key, InvalidKey, "key"))
    if key_size > limits.max_key:
        raise KeyTooLarge(f"key is {key_size} bytes; the limit is {limits.max_key}")
    if isinstance(payload, str):
        payload = _utf8(payload, InvalidPayload, "payload")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidPayload(f"payload must be bytes or str, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > limits.max_payload:
        raise PayloadTooLarge(
            f"payload is {len(payload)} bytes; the limit is {limits.max_payload}"
        )
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise InvalidMeta("meta must be a mapping of str to str")
    size = sum(len(_utf8(k, InvalidMeta, "meta name")) + len(_utf8(v, InvalidMeta, "meta value"))
               for k, v in meta.items())
    if size > limits.max_meta:
        raise MetaTooLarge(f"meta is {size} bytes; the limit is {limits.max_meta}")
    return key, payload, dict(meta)


def _utf8(text: str, error: type[LocalInputError], what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} is not encodable as UTF-8 (lone surrogate?)") from None


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def encode_body(
    context: str,
    key: str,
    payload: bytes,
    meta: Mapping[str, str],
    lamport: int,
    origin: str,
    seq: int,
    appended_at_ns: int,
) -> bytes:
    parts = [MAGIC, bytes([ENCODING_VERSION]), _str(context), _str(key)]
    parts += [_U32.pack(len(payload)), payload, _U32.pack(len(meta))]
    for name in sorted(meta, key=lambda k: k.encode("utf-8")):
        parts += [_str(name), _str(meta[name])]
    parts += [_U64.pack(lamport), _str(origin), _U64.pack(seq), _U64.pack(appended_at_ns)]
    return b"".join(parts)


def make_entry(
    context: str,
    key: str,
    payload: bytes,
    meta: Mapping[str, str],
    lamport: int,
    origin: str,
    seq: int,
    appended_at_ns: int,
) -> Entry:
    """Build an entry from already validated fields and compute its content id."""
    for name, value in (("lamport", lamport), ("seq", seq), ("appended_at_ns", appended_at_ns)):
        if not 0 <= value <= _U64_MAX:
            raise ValueError(f"{name} out of range: {value}")
    body = encode_body(context, key, payload, meta, lamport, origin, seq, appended_at_ns)
    return Entry(
        context, key, payload, dict(meta), lamport, origin, seq, appended_at_ns,
        hashlib.sha256(body).hexdigest(), body,
    )


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def str(self) -> str:
        return self.take(self.u32()).decode("utf-8")


def decode_body(body: bytes, entry_id: str | None = None) -> Entry:
    """Decode a canonical encoding; IntegrityError if it is malformed or not canonical."""
    entry_id = entry_id or hashlib.sha256(body).hexdigest()
    try:
        r = _Reader(body)
        if r.take(4) != MAGIC:
            raise ValueError("bad magic")
        version = r.take(1)[0]
        if version != ENCODING_VERSION:
            raise ValueError(f"unsupported entry encoding version {version}")
        context, key = r.str(), r.str()
        payload = r.take(r.u32())
        meta = {}
        for _ in range(r.u32()):
            name = r.str()
            meta[name] = r.str()
        lamport, origin, seq, at = r.u64(), r.str(), r.u64(), r.u64()
        if r.pos != len(body):
            raise ValueError("trailing bytes")
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"entry {entry_id} is malformed: {exc}") from None
    entry = Entry(context, key, payload, meta, lamport, origin, seq, at, entry_id, body)
    # Canonical means re-encoding gives the same bytes (e.g. meta sorted, no duplicate names).
    if encode_body(context, key, payload, meta, lamport, origin, seq, at) != body:
        raise IntegrityError(f"entry {entry_id} is not in canonical form")
    return entry


def decode_record(record: bytes, limits: Limits = DEFAULT_LIMITS) -> Entry:
    """Check a record (id + encoding) from disk or a peer: the id must be the content's hash."""
    if len(record) < ID_SIZE + 5:
        raise IntegrityError(f"record of {len(record)} bytes is too short")
    claimed = record[:ID_SIZE].hex()
    body = record[ID_SIZE:]
    actual = hashlib.sha256(body).hexdigest()
    if actual != claimed:
        raise IntegrityError(f"entry {claimed} does not match its content (hash is {actual})")
    entry = decode_body(body, claimed)
    try:
        check_context(entry.context)
        check_node_id(entry.origin)
        check_fields(entry.key, entry.payload, entry.meta, limits)
    except LocalInputError as exc:
        raise IntegrityError(f"entry {claimed} is invalid: {exc}") from None
    if entry.seq < 1 or entry.lamport < 1:
        raise IntegrityError(f"entry {claimed} has seq or lamport below 1")
    return entry
