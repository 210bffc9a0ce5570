"""Entries: the immutable records of the ledger, their canonical encoding and content id.

Canonical encoding, version 2 (all integers big-endian; ``str`` is UTF-8 with a u32 length):

    b"P2PL" u8(version=2)
    str context | str key | u32 len + payload bytes
    u32 n_meta, then n_meta × (str name | str value), sorted by the name's UTF-8 bytes
    u64 lamport | 32 B origin (Ed25519 public key) | u64 chain | u64 seq | u64 appended_at_ns
    32 B prev (id of the writer's entry seq - 1; zeros for seq 1)

``id`` = sha256(encoding) in hex. What the ledger stores and ships (a *record*) is the 32 raw id
bytes followed by the encoding, so a record whose claimed id lies is caught by re-hashing.
Every field is covered by the id: an entry can never change without becoming another entry.

A *writer* is one chain of one origin (``origin.chain``, see ``identity``): its entries are
numbered 1, 2, 3… and each names its predecessor, so one signed head vouches for the whole chain.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, cast

from .errors import (
    IntegrityError,
    InvalidContextName,
    InvalidKey,
    InvalidMeta,
    InvalidNodeId,
    InvalidPayload,
    KeyTooLarge,
    LamportOutOfRange,
    LocalInputError,
    MetaTooLarge,
    PayloadTooLarge,
)

MAGIC = b"P2PL"
ENCODING_VERSION = 2
ID_SIZE = 32
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U64_MAX = 2**64 - 1
# why: Lamport times travel through JSON clients (exact up to 2^53) and a byzantine entry must not
# drive the clock to where appends fail: entries above this are refused (LamportOutOfRange) and
# the local clock saturates here (ties then break by id), so no value can stop writes.
MAX_LAMPORT = 2**53 - 1
NO_PREV = bytes(32)

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
    origin: str  # hex of the author's Ed25519 public key
    chain: int
    seq: int
    appended_at_ns: int
    prev: bytes = field(repr=False)
    id: str
    body: bytes = field(repr=False, compare=False)
    writer: str = field(repr=False, compare=False)  # "origin.chain": cursors count per writer

    @property
    def order_key(self) -> tuple[int, str]:
        """Causal order: Lamport time, ties broken by id (unique, the same everywhere)."""
        return (self.lamport, self.id)

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
            "chain": f"{self.chain:016x}",
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


class _Unfrozen:
    """``Entry``'s exact slot layout without the frozen ``__setattr__``: an entry is built as
    one of these and then becomes an ``Entry`` (``__class__`` assignment, which CPython allows
    between classes of the same slot layout).

    why: the frozen dataclass ``__init__`` sets each of the 13 fields through
    ``object.__setattr__`` (~1.2 µs an entry) and the slot descriptors' ``__set__`` halve that;
    plain attribute stores then one class switch halve it again (0.7 against 1.5-2.2 µs,
    measured on the loaded 2-core machine), and an entry is built once per append and once per
    record received or rebuilt.
    """

    __slots__ = ("context", "key", "payload", "meta", "lamport", "origin", "chain", "seq",
                 "appended_at_ns", "prev", "id", "body", "writer")
    context: str
    key: str
    payload: bytes
    meta: Mapping[str, str]
    lamport: int
    origin: str
    chain: int
    seq: int
    appended_at_ns: int
    prev: bytes
    id: str
    body: bytes
    writer: str


if _Unfrozen.__slots__ != tuple(f.name for f in fields(Entry)):
    raise ImportError("entry.py: _Unfrozen.__slots__ must list Entry's fields in order")


def _new_entry(
    context: str, key: str, payload: bytes, meta: Mapping[str, str], lamport: int,
    origin: str, chain: int, seq: int, appended_at_ns: int, prev: bytes, id: str,
    body: bytes, writer: str | None = None,
) -> Entry:
    """The Entry of already checked fields (``writer``: ``origin.chain``'s shared name, if the
    caller has it)."""
    entry = _Unfrozen()
    entry.context = context
    entry.key = key
    entry.payload = payload
    entry.meta = meta
    entry.lamport = lamport
    entry.origin = origin
    entry.chain = chain
    entry.seq = seq
    entry.appended_at_ns = appended_at_ns
    entry.prev = prev
    entry.id = id
    entry.body = body
    if writer is None:
        writer = _writers.get((origin, chain))
        if writer is None:
            writer = _shared(_writers, (origin, chain), f"{origin}.{chain:016x}")
    entry.writer = writer
    entry.__class__ = Entry  # type: ignore[assignment]
    return cast(Entry, entry)



# why: every entry of one writer carries the same origin (64 hex characters) and writer string;
# built per entry they cost ~0.4 µs and ~250 bytes each (two str objects per entry held in
# memory). One shared object per writer instead: these caches map the raw public key to its
# hex and (origin, chain) to the writer name, and are emptied when they reach _SHARED_MAX so
# a peer sending many origins cannot grow them without bound.
_SHARED_MAX = 4096
_origins: dict[bytes, str] = {}
_origin_bytes: dict[str, bytes] = {}
_writers: dict[tuple[str, int], str] = {}


def _shared(cache: dict[Any, Any], key: Any, value: Any) -> Any:
    if len(cache) >= _SHARED_MAX:
        cache.clear()
    cache[key] = value
    return value


def check_context(name: object) -> str:
    if type(name) is str and name in _good_contexts:
        return name
    if not isinstance(name, str) or not CONTEXT_RE.fullmatch(name):
        raise InvalidContextName(
            f"invalid context name {name!r}: use 1-128 characters of A-Z a-z 0-9 . _ : / -"
        )
    if type(name) is str:
        if len(_good_contexts) >= _GOOD_CONTEXTS_MAX:
            _good_contexts.clear()
        _good_contexts.add(name)
    return name


# why: every append (and every entry received) checks its context's name; the names a node
# sees are few and repeat, and a set lookup is ~10x cheaper than the pattern (1.6% of the
# CPU of 128 appenders into one context, py-spy). Bounded like the caches above: a peer
# naming many contexts only makes the checks miss.
_GOOD_CONTEXTS_MAX = 16384
_good_contexts: set[str] = set()


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
    # why: called once per append; the ASCII key, bytes payload and absent meta of the common
    # case skip the encode, the copy and the Mapping ABC check (2.8-3.2 -> 0.4-0.5 µs, measured).
    if not meta and (meta is None or type(meta) is dict) and type(payload) is bytes \
            and key.isascii():
        if len(key) > limits.max_key:
            raise KeyTooLarge(f"key is {len(key)} bytes; the limit is {limits.max_key}")
        if len(payload) > limits.max_payload:
            raise PayloadTooLarge(
                f"payload is {len(payload)} bytes; the limit is {limits.max_payload}")
        return key, payload, {}
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


_MAGIC_VERSION = MAGIC + bytes([ENCODING_VERSION])
_NO_META = bytes(4)  # a meta part with no item
_HEAD = struct.Struct(">4sBI")  # magic, version, length of the context
_TAIL = struct.Struct(">Q32sQQQ32s")  # lamport, origin, chain, seq, appended_at_ns, prev
_u32_at = _U32.unpack_from
_pack_u32 = _U32.pack


def encode_body(
    context: str,
    key: str,
    payload: bytes,
    meta: Mapping[str, str],
    lamport: int,
    origin: str,
    chain: int,
    seq: int,
    appended_at_ns: int,
    prev: bytes,
) -> bytes:
    raw_context = context.encode("utf-8")
    raw_key = key.encode("utf-8")
    return b"".join((
        _MAGIC_VERSION, _pack_u32(len(raw_context)), raw_context, _pack_u32(len(raw_key)),
        raw_key, _pack_u32(len(payload)), payload, _meta_bytes(meta),
        _TAIL.pack(lamport, _raw_origin(origin), chain, seq, appended_at_ns, prev)))


def _meta_bytes(meta: Mapping[str, str]) -> bytes:
    """The encoding's meta part: the count, then each (name, value), sorted by name."""
    if not meta:
        return _NO_META
    parts = [_pack_u32(len(meta))]
    for name in sorted(meta, key=lambda k: k.encode("utf-8")):
        parts += [_str(name), _str(meta[name])]
    return b"".join(parts)


def _raw_origin(origin: str) -> bytes:
    raw = _origin_bytes.get(origin)
    if raw is None:
        raw = _shared(_origin_bytes, origin, bytes.fromhex(origin))
    return raw


def make_entry(
    context: str,
    key: str,
    payload: bytes,
    meta: Mapping[str, str],
    lamport: int,
    origin: str,
    chain: int,
    seq: int,
    appended_at_ns: int,
    prev: bytes = NO_PREV,
) -> Entry:
    """Build an entry from already validated fields and compute its content id."""
    if not (0 <= lamport <= _U64_MAX and 0 <= seq <= _U64_MAX and 0 <= chain <= _U64_MAX
            and 0 <= appended_at_ns <= _U64_MAX):
        for name, value in (("lamport", lamport), ("seq", seq), ("chain", chain),
                            ("appended_at_ns", appended_at_ns)):
            if not 0 <= value <= _U64_MAX:
                raise ValueError(f"{name} out of range: {value}")
    body = encode_body(context, key, payload, meta, lamport, origin, chain, seq,
                       appended_at_ns, prev)
    return _new_entry(
        context, key, payload, dict(meta), lamport, origin, chain, seq, appended_at_ns, prev,
        hashlib.sha256(body).hexdigest(), body,
    )


# (raw id, lamport, seq, prev, raw writer): a checked record's fields, as the index takes them
RecordFields = tuple[bytes, int, int, bytes, bytes]


def make_chain(
    context: str, origin: str, chain: int, seq: int, prev: bytes,
    items: Iterable[tuple[str, bytes, Mapping[str, str], int, int]], writer: str | None = None,
) -> tuple[list[Entry], list[bytes], list[RecordFields]]:
    """``make_entry`` for the next entries of one writer chain: seq + 1, seq + 2, ... of
    ``origin.chain`` in ``context``, the first naming ``prev``, each the one before. ``items``
    are validated (key, payload, meta, lamport, appended_at_ns); ``meta`` is kept as given (a
    dict the caller no longer changes). ``writer``: ``origin.chain``'s name, if the caller
    holds it. Returns the entries, their records and their fields as ``fresh_record_fields``
    gives them, with no record parsed again.

    why: a commit builds its entries a context at a time (the ledger's append path): the
    context's part of the encoding, the raw origin and the writer are made once, and each
    record and its fields come out of building it, where ``make_entry`` then ``Entry.record``
    (the hex id decoded again) and ``known_record_fields`` (the record parsed again) cost
    ~1.5 µs more per entry (1 context, 128 per commit). The ledger gives the writer: spread
    over 10,000 contexts (a chain each) the shared names (``_SHARED_MAX``) missed every time,
    each call formatting the name again."""
    raw_context = context.encode("utf-8")
    start = _MAGIC_VERSION + _pack_u32(len(raw_context)) + raw_context
    raw_origin = _raw_origin(origin)
    raw_writer = raw_origin + _U64.pack(chain)
    if writer is None:
        writer = _writers.get((origin, chain))
        if writer is None:
            writer = _shared(_writers, (origin, chain), f"{origin}.{chain:016x}")
    pack_tail, pack_u32, sha, join = _TAIL.pack, _pack_u32, hashlib.sha256, b"".join
    entries: list[Entry] = []
    records: list[bytes] = []
    fields: list[RecordFields] = []
    add_entry, add_record, add_fields = entries.append, records.append, fields.append
    for key, payload, meta, lamport, at_ns in items:
        seq += 1
        raw_key = key.encode("utf-8")
        body = join((start, pack_u32(len(raw_key)), raw_key, pack_u32(len(payload)), payload,
                     _meta_bytes(meta) if meta else _NO_META,
                     pack_tail(lamport, raw_origin, chain, seq, at_ns, prev)))
        raw_id = sha(body).digest()
        add_entry(_new_entry(context, key, payload, meta, lamport, origin, chain, seq, at_ns,
                             prev, raw_id.hex(), body, writer))
        add_record(raw_id + body)
        add_fields((raw_id, lamport, seq, prev, raw_writer))
        prev = raw_id
    return entries, records, fields


class _NotCanonical(ValueError):
    pass


def _parse(body: bytes, entry_id: str) -> tuple[Entry, int, int]:
    """Decode ``body``; returns the entry and the UTF-8 sizes of its key and meta.

    Raises ValueError (or UnicodeDecodeError) when malformed or not canonical. Canonical form
    is checked directly instead of by re-encoding: every field is fixed-width or
    length-prefixed, so the bytes are the only encoding of what they decode to once the lengths
    consume the body exactly and every string is valid UTF-8 (which also rules out lone
    surrogates); the one free choice, meta order, must be strictly increasing by the names'
    UTF-8 bytes (sorted, no duplicate names).
    """
    size = len(body)
    if size < 9:
        raise ValueError("truncated")
    magic, version, n = _HEAD.unpack_from(body)
    if magic != MAGIC:
        raise ValueError("bad magic")
    if version != ENCODING_VERSION:
        raise ValueError(f"unsupported entry encoding version {version}")
    # Each string or blob below is followed by a fixed-width field, so a length that runs past
    # the body makes the next unpack_from raise struct.error (reported as truncated).
    pos = 9
    end = pos + n
    context = body[pos:end].decode("utf-8")
    (n,) = _u32_at(body, end)
    pos = end + 4
    end = pos + n
    key_size = n
    key = body[pos:end].decode("utf-8")
    (n,) = _u32_at(body, end)
    pos = end + 4
    end = pos + n
    payload = body[pos:end]
    (n_meta,) = _u32_at(body, end)
    pos = end + 4
    meta: dict[str, str] = {}
    meta_size = 0
    prev = b""
    for i in range(n_meta):
        (n,) = _u32_at(body, pos)
        pos += 4
        end = pos + n
        raw = body[pos:end]
        if i and raw <= prev:
            raise _NotCanonical("meta names not strictly increasing by UTF-8 bytes")
        prev = raw
        (n,) = _u32_at(body, end)
        pos = end + 4
        meta_size += len(raw) + n
        end = pos + n
        meta[raw.decode("utf-8")] = body[pos:end].decode("utf-8")
        pos = end
    lamport, raw_origin, chain, seq, at, prev = _TAIL.unpack_from(body, pos)
    if pos + _TAIL.size != size:
        raise ValueError("trailing bytes")
    origin = _origins.get(raw_origin)
    if origin is None:
        origin = _shared(_origins, raw_origin, raw_origin.hex())
    entry = _new_entry(context, key, payload, meta, lamport, origin, chain, seq, at,
                       prev, entry_id, body)
    return entry, key_size, meta_size


def decode_body(body: bytes, entry_id: str | None = None) -> Entry:
    """Decode a canonical encoding; IntegrityError if it is malformed or not canonical."""
    entry_id = entry_id or hashlib.sha256(body).hexdigest()
    return _decode(body, entry_id)[0]


def _decode(body: bytes, entry_id: str) -> tuple[Entry, int, int]:
    try:
        return _parse(body, entry_id)
    except struct.error:
        raise IntegrityError(f"entry {entry_id} is malformed: truncated") from None
    except _NotCanonical as exc:
        raise IntegrityError(f"entry {entry_id} is not in canonical form: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"entry {entry_id} is malformed: {exc}") from None


def decode_record(record: bytes, limits: Limits = DEFAULT_LIMITS, context: str = "") -> Entry:
    """Check a record (id + encoding) from disk or a peer: the id must be the content's hash.
    ``context``: a name the caller already checked and expects (a context log's own): an entry
    of exactly that context skips the name pattern (the caller refuses any other context)."""
    if len(record) < ID_SIZE + 5:
        raise IntegrityError(f"record of {len(record)} bytes is too short")
    claimed = record[:ID_SIZE].hex()
    body = record[ID_SIZE:]
    actual = hashlib.sha256(body).hexdigest()
    if actual != claimed:
        raise IntegrityError(f"entry {claimed} does not match its content (hash is {actual})")
    entry, key_size, meta_size = _decode(body, claimed)
    # The same checks as check_context, check_node_id and check_fields, on the sizes the
    # decoder already knows (decoded strings are valid UTF-8, the payload is bytes).
    problem = None
    # why: the pattern match was ~6% of a cold catch-up (py-spy, 100k × 100 B): every entry
    # of an update names the context it travels in, which was checked once.
    if entry.context != context and not CONTEXT_RE.fullmatch(entry.context):
        problem = f"invalid context name {entry.context!r}"
    elif key_size > limits.max_key:
        problem = f"key is {key_size} bytes; the limit is {limits.max_key}"
    elif len(entry.payload) > limits.max_payload:
        problem = f"payload is {len(entry.payload)} bytes; the limit is {limits.max_payload}"
    elif meta_size > limits.max_meta:
        problem = f"meta is {meta_size} bytes; the limit is {limits.max_meta}"
    if problem is not None:
        raise IntegrityError(f"entry {claimed} is invalid: {problem}")
    if entry.seq < 1 or entry.lamport < 1:
        raise IntegrityError(f"entry {claimed} has seq or lamport below 1")
    if (entry.seq == 1) != (entry.prev == NO_PREV):
        raise IntegrityError(f"entry {claimed}: only seq 1 (seq {entry.seq}) has no predecessor")
    if entry.lamport > MAX_LAMPORT:
        raise LamportOutOfRange(
            f"entry {claimed} has Lamport time {entry.lamport}; the limit is {MAX_LAMPORT}")
    return entry


WRITER_SIZE = 40  # a writer in raw form: 32 B origin + u64 chain, as the encoding holds them


def record_fields(record: bytes, context: bytes,
                  limits: Limits = DEFAULT_LIMITS) -> tuple[int, int, bytes, bytes]:
    """Check a record of context ``context`` (UTF-8) as ``decode_record`` does, and return only
    (lamport, seq, prev, writer) — ``writer`` raw: origin ‖ chain, 40 bytes — without building
    an ``Entry`` (``verify`` streams every stored record through this).

    why: ``decode_record`` builds an ``Entry`` and its meta dict per record, ~2/3 of a
    streamed ``verify``'s time (read + gate + sha256 alone ran 99k records/s, with
    ``decode_record`` 33k/s, on the loaded 2-core machine). The usual record (no meta, this
    context) is checked here in a few slices; any other, or any record that fails a check, goes
    through ``decode_record``, which raises the error that names the problem.
    """
    body = record[ID_SIZE:]
    size = len(body)
    if size >= 21 + _TAIL.size and hashlib.sha256(body).digest() == record[:ID_SIZE] \
            and body[:5] == _MAGIC_VERSION:
        try:
            at = 9 + _u32_at(body, 5)[0]
            if body[9:at] == context:
                (n,) = _u32_at(body, at)
                key = body[at + 4 : at + 4 + n]
                at += 4 + n
                (payload,) = _u32_at(body, at)
                at += 4 + payload
                tail = at + 4
                if n <= limits.max_key and payload <= limits.max_payload and \
                        tail + _TAIL.size == size and body[at:tail] == _NO_META and \
                        (key.isascii() or _valid_utf8(key)):
                    lamport, _, _, seq, _, prev = _TAIL.unpack_from(body, tail)
                    if 1 <= lamport <= MAX_LAMPORT and seq >= 1 and \
                            (seq == 1) == (prev == NO_PREV):
                        return lamport, seq, prev, body[tail + 8 : tail + 8 + WRITER_SIZE]
        except struct.error:
            pass  # truncated: decode_record says so
    entry = decode_record(record, limits)  # raises what is wrong, if anything is
    if entry.context.encode("utf-8") != context:
        raise IntegrityError(f"entry {entry.id} is stored under context "
                             f"{context.decode('utf-8', 'replace')}")
    raw_chain = entry.chain.to_bytes(8, "big")
    return entry.lamport, entry.seq, entry.prev, bytes.fromhex(entry.origin) + raw_chain


# lamport, writer (origin ‖ chain, as raw bytes), seq, prev; appended_at skipped
_TAIL_FIELDS = struct.Struct(">Q40sQ8x32s")


def fresh_record_fields(records: Iterable[bytes], context: bytes, seen: set[bytes],
                        limits: Limits = DEFAULT_LIMITS
                        ) -> list[tuple[bytes, int, int, bytes, bytes]]:
    """``record_fields`` of each record of ``records`` (of context ``context``, UTF-8) whose
    raw id is not in ``seen`` yet, adding the id there: (raw id, lamport, seq, prev, writer)
    per new record, in order (a record whose id is already in ``seen`` is the same entry
    again, and is skipped without a check). Raises what ``record_fields`` raises.

    why: ``verify`` streams every stored record through this; one loop with the context's
    prefix, the limits and the tail's layout bound once, and the writer read from the tail in
    one piece, costs about half the instructions of a ``record_fields`` call per record
    (callgrind, 20k records of 100 B).
    """
    prefix = _MAGIC_VERSION + _pack_u32(len(context)) + context
    start = len(prefix)
    max_key, max_payload = limits.max_key, limits.max_payload
    tail_size = _TAIL_FIELDS.size
    tail_of = _TAIL_FIELDS.unpack_from
    u32_at = _u32_at
    sha256 = hashlib.sha256
    out: list[tuple[bytes, int, int, bytes, bytes]] = []
    append = out.append
    add = seen.add
    for record in records:
        raw = record[:ID_SIZE]
        if raw in seen:
            continue  # the same entry inserted twice: one entry
        body = record[ID_SIZE:]
        try:
            if body.startswith(prefix) and sha256(body).digest() == raw:
                (n,) = u32_at(body, start)
                at = start + 4 + n
                (payload,) = u32_at(body, at)
                at += 4 + payload
                if n <= max_key and payload <= max_payload and \
                        at + 4 + tail_size == len(body) and body[at : at + 4] == _NO_META and \
                        (body[start + 4 : start + 4 + n].isascii()
                         or _valid_utf8(body[start + 4 : start + 4 + n])):
                    lamport, writer, seq, prev = tail_of(body, at + 4)
                    if 1 <= lamport <= MAX_LAMPORT and seq >= 1 and \
                            (seq == 1) == (prev == NO_PREV):
                        add(raw)
                        append((raw, lamport, seq, prev, writer))
                        continue
        except struct.error:
            pass  # truncated: record_fields says so
        add(raw)
        append((raw, *record_fields(record, context, limits)))
    return out


def known_record_fields(record: bytes) -> tuple[bytes, int, int, bytes, bytes]:
    """The fields ``fresh_record_fields`` gives, of a record checked already (an ``Entry``'s
    own ``record``): read from the fixed-layout tail, nothing checked."""
    lamport, writer, seq, prev = _TAIL_FIELDS.unpack_from(record, len(record) - _TAIL_FIELDS.size)
    return record[:ID_SIZE], lamport, seq, prev, writer


def _valid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
