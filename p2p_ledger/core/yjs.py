"""A strict pure-Python reader of Yjs **v1 updates**, and the ledger's grow-only gate.

Why this exists: pycrdt exposes no delete set and its observers run only *after* an update is
applied, so they cannot veto it. The ledger must refuse any update that would delete or rewrite
anything *before* ``Doc.apply_update`` sees it, so we read the update ourselves.

Format (v1: what ``pycrdt.Doc.get_update()``, yrs ``encode_v1`` and yjs ``encodeStateAsUpdate``
write)::

    update     = structs delete_set         (nothing may follow; yrs would ignore trailing bytes)
    structs    = varuint n_clients, n_clients × client_section
    client_section = varuint n_structs, varuint client, varuint clock, n_structs × struct
    struct     = uint8 info, then by ``info``:
        0      GC    : varuint len                    (garbage-collected range)
        10     Skip  : varuint len                    (a hole, in merged updates)
        other  Item  : low 5 bits = content ref, 0x80 origin, 0x40 right origin, 0x20 parentSub
            [0x80] origin       = varuint client, varuint clock
            [0x40] right origin = varuint client, varuint clock
            if neither origin bit (parent cannot be copied from a neighbour):
                varuint parent_info: 1 → varstring root type name, 0 → parent item id
                [0x20] varstring parentSub (map key)
            content, by ref:
                1 Deleted: varuint len            2 JSON: varuint n, n × varstring (JSON text)
                3 Binary: varuint8array           4 String: varstring (len = UTF-16 code units)
                5 Embed: varstring JSON           6 Format: varstring key, varstring JSON
                7 Type: uint8 type ref (+ varstring name for 3 XmlElement / 5 XmlHook)
                8 Any: varuint n, n × any         9 Doc: varstring guid, any options
        The clock of each struct is the previous clock + the previous length (1 for Binary, Embed,
        Format, Type, Doc; the count for Deleted, JSON, Any; UTF-16 length for String).
    delete_set = varuint n_clients, n × (varuint client, varuint n_ranges, n_ranges × (clock, len))
    varuint    = little-endian base-128, high bit = "more"; varstring = varuint len + UTF-8;
    varuint8array = varuint len + bytes
    state vector = varuint n, n × (varuint client, varuint clock)   (what a peer holds)
    any (lib0) = uint8 tag: 127 undefined, 126 null, 125 varint, 124 float32 BE, 123 float64 BE,
                 122 int64 BE, 121 false, 120 true, 119 varstring, 118 object (varuint n, n × (key
                 varstring, any)), 117 array (varuint n, n × any), 116 varuint8array
    varint (lib0) = first byte: 0x80 more, 0x40 sign, 6 value bits; then 7 bits per byte.

pycrdt (yrs) encodes a Python ``bytes`` appended to an Array as **ContentAny** (ref 8) holding
buffer values (tag 116); one transaction's appends are one item with n values. JS yjs writes a
Uint8Array in an Array as **ContentBinary** (ref 3). pycrdt reads both back as ``bytearray``, so
the gate admits both and returns ``bytes``.

Strictness: where yjs and yrs disagree or are lenient, this reader refuses. It rejects
varuints wider than their yrs type (yrs *wraps* oversized u32 varuints instead of failing), an
``info`` whose low bits are 0/10 with flag bits set, content refs outside 1..9 (yrs masks the
ref to 4 bits), parent_info other than 0/1, zero-length structs, empty delete ranges lists,
clock overflow past 2**32 - 1, any claimed length beyond the remaining bytes, and trailing bytes.
pycrdt and yjs never write these, so refusing them costs nothing and removes the places where
this reader and yrs could read the same bytes differently.

Known yjs/yrs divergences, all after a content ref the gate refuses anyway (so they cannot
smuggle anything past it); this reader follows yjs:
- ContentJSON: yrs (as bundled in pycrdt 0.14.13) reads n + 1 strings for a count of n.
- XmlHook type ref: yjs reads a hook name, yrs reads nothing.

Origins and parents: an item with an origin (or right origin) carries no parent; Yjs copies the
parent (and parentSub) from the origin item. The gate accepts that: every item it ever admitted
lives directly in the root array (no nested types, no map entries, no other root types, no
deletes, hence no GC), so an origin can only resolve into that array. An origin that is not yet
known leaves the item pending in yrs until the missing item arrives, and that one passes the
gate too. This assumes the gated Doc holds nothing but the one root array.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, cast

from .errors import ForbiddenUpdate, RemoteProtocolError

__all__ = [
    "UNDEFINED",
    "InsertedItem",
    "UpdateInfo",
    "appended_values",
    "decode_state_vector",
    "encode_state_vector",
    "gate_ranges",
    "gate_structs",
    "gate_update",
    "integrate",
    "parse_update",
    "ranges_of",
]

# Content refs (low 5 bits of ``info``) and flag bits.
GC_REF = 0
DELETED_REF = 1
JSON_REF = 2
BINARY_REF = 3
STRING_REF = 4
EMBED_REF = 5
FORMAT_REF = 6
TYPE_REF = 7
ANY_REF = 8
DOC_REF = 9
SKIP_REF = 10
_BUFFER = 116  # lib0 any tag: varuint8array
HAS_ORIGIN = 0x80
HAS_RIGHT_ORIGIN = 0x40
HAS_PARENT_SUB = 0x20

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_MAX_STRUCTS = 1_000_000  # structs in one update the gate reads (more: malformed)
_MAX_ANY_DEPTH = 64  # nested lib0 any values; deeper is refused rather than risking recursion
# array, map, text, xml fragment, xml text, subdoc, undefined: no payload
_TYPE_REFS_PLAIN = frozenset({0, 1, 2, 4, 6, 9, 15})
_TYPE_REFS_NAMED = frozenset({3, 5})  # XmlElement node name / XmlHook name (yjs reads a key)

_F32 = struct.Struct(">f").unpack_from
_F64 = struct.Struct(">d").unpack_from
_I64 = struct.Struct(">q").unpack_from


class _Undefined:
    """lib0/JSON ``undefined`` (distinct from ``null`` → ``None``)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


@dataclass(frozen=True)
class InsertedItem:
    """One Item struct of an update.

    ``values``: the decoded values for Any/JSON (one per element), String (the string), Binary
    (the bytes); Embed → (json,), Format → (key, json), Type → (type_ref,) or (type_ref, name),
    Doc → (guid, options), Deleted → ().
    The last three fields are extras: ``origin``/``right_origin`` ids and the raw ``info`` byte
    (the gate needs it: an item with an origin carries no parentSub but may carry its flag).
    """

    client: int
    clock: int
    length: int
    parent: str | tuple[int, int] | None  # root type name, parent item id, or None (from origin)
    parent_sub: str | None
    content_ref: int
    values: tuple[object, ...]
    origin: tuple[int, int] | None = None
    right_origin: tuple[int, int] | None = None
    info: int = 0


@dataclass(frozen=True)
class UpdateInfo:
    items: tuple[InsertedItem, ...]
    deletes: tuple[tuple[int, int, int], ...]  # (client, clock, length)
    gc_ranges: tuple[tuple[int, int, int], ...]  # GC structs (client, clock, length)


def _bad(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed Yjs update: {msg}")


# ---- primitive readers -------------------------------------------------------------------------
# Each takes (data, pos) and returns (value, new_pos). Reading past the end raises IndexError,
# which parse_update turns into RemoteProtocolError("truncated"); slices are bounds-checked
# explicitly because Python slicing never raises.


def _varuint(data: bytes, pos: int, max_bytes: int, limit: int) -> tuple[int, int]:
    # Bounded both in bytes and value so yrs (which wraps oversized u32s) reads the same number.
    b = data[pos]
    result = b & 0x7F
    shift = 7
    pos += 1
    stop = pos + max_bytes - 1
    while b >= 0x80:
        if pos >= stop:
            raise _bad("varuint too long")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
    if result > limit:
        raise _bad("varuint out of range")
    return result, pos


def _u32(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    return _varuint(data, pos, 5, _U32)


def _u64(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    return _varuint(data, pos, 10, _U64)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    # lib0 writeVarInt: sign in bit 6 of the first byte, 6 value bits, then 7 bits per byte.
    b = data[pos]
    pos += 1
    result = b & 0x3F
    negative = b & 0x40
    shift = 6
    n = 1
    while b & 0x80:
        if n >= 10:
            raise _bad("varint too long")
        b = data[pos]
        pos += 1
        n += 1
        result |= (b & 0x7F) << shift
        shift += 7
    if result > 0x7FFFFFFFFFFFFFFF:
        raise _bad("varint out of range")
    return (-result if negative else result), pos


def _buf(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _u32(data, pos)
    stop = pos + n
    if stop > len(data):
        raise _bad("byte string runs past the end")
    return data[pos:stop], stop


def _str(data: bytes, pos: int) -> tuple[str, int]:
    raw, pos = _buf(data, pos)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        raise _bad("string is not valid UTF-8") from None


def _json(text: str) -> object:
    if text == "undefined":  # yjs writes undefined this way in JSON content
        return UNDEFINED
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise _bad("invalid JSON content") from None


def _any(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    tag = data[pos]
    pos += 1
    if tag == 116:
        return _buf(data, pos)
    if tag == 119:
        return _str(data, pos)
    if tag == 125:
        return _varint(data, pos)
    if tag == 126:
        return None, pos
    if tag == 127:
        return UNDEFINED, pos
    if tag == 120:
        return True, pos
    if tag == 121:
        return False, pos
    if tag == 123:
        if pos + 8 > len(data):
            raise _bad("truncated float64")
        return _F64(data, pos)[0], pos + 8
    if tag == 124:
        if pos + 4 > len(data):
            raise _bad("truncated float32")
        return _F32(data, pos)[0], pos + 4
    if tag == 122:
        if pos + 8 > len(data):
            raise _bad("truncated bigint")
        return _I64(data, pos)[0], pos + 8
    if tag == 117 or tag == 118:
        if depth >= _MAX_ANY_DEPTH:
            raise _bad("any value nested too deeply")
        n, pos = _u32(data, pos)
        if n > len(data) - pos:  # every element takes at least one byte
            raise _bad("any collection length exceeds the update")
        if tag == 117:
            arr: list[object] = []
            for _ in range(n):
                v, pos = _any(data, pos, depth + 1)
                arr.append(v)
            return arr, pos
        obj: dict[str, object] = {}
        for _ in range(n):
            k, pos = _str(data, pos)
            obj[k], pos = _any(data, pos, depth + 1)
        return obj, pos
    raise _bad(f"unknown any tag {tag}")


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


# ---- the parser --------------------------------------------------------------------------------


def parse_update(update: bytes, *, max_structs: int = 1_000_000) -> UpdateInfo:
    """Decode a Yjs v1 update without applying it.

    Raises RemoteProtocolError (and nothing else) for malformed, truncated or oversized input,
    trailing bytes, or more than ``max_structs`` structs in total.
    """
    items, deletes, gcs = _parse_raw(update, max_structs)
    return UpdateInfo(tuple(InsertedItem(*it) for it in items), tuple(deletes), tuple(gcs))


# InsertedItem's fields as a plain tuple: a frozen dataclass costs ~1 µs per struct to build,
# which the gate does not need to pay.
_RawItem = tuple[
    int,
    int,
    int,
    "str | tuple[int, int] | None",
    "str | None",
    int,
    "tuple[object, ...]",
    "tuple[int, int] | None",
    "tuple[int, int] | None",
    int,
]
_Raw = tuple[list[_RawItem], list[tuple[int, int, int]], list[tuple[int, int, int]]]


def _parse_raw(update: bytes, max_structs: int) -> _Raw:
    if not isinstance(update, bytes):
        if not isinstance(update, (bytearray, memoryview)):
            raise TypeError(f"update must be bytes-like, not {type(update).__name__}")
        update = bytes(update)
    try:
        return _parse(update, max_structs)
    except IndexError:
        raise _bad("truncated") from None
    except RecursionError:  # defensive: depth is bounded, but never leak it
        raise _bad("nested too deeply") from None


def _parse(data: bytes, max_structs: int) -> _Raw:
    end = len(data)
    items: list[_RawItem] = []
    gcs: list[tuple[int, int, int]] = []
    total_structs = 0

    n_clients, pos = _u32(data, 0)
    if n_clients > end - pos:
        raise _bad("client count exceeds the update")
    for _ in range(n_clients):
        n_structs, pos = _u32(data, pos)
        if n_structs > end - pos:  # every struct takes at least one byte
            raise _bad("struct count exceeds the update")
        total_structs += n_structs
        if total_structs > max_structs:
            raise _bad(f"more than {max_structs} structs")
        client, pos = _u64(data, pos)
        clock, pos = _u32(data, pos)
        for _ in range(n_structs):
            info = data[pos]
            pos += 1
            if info == GC_REF or info == SKIP_REF:
                length, pos = _u32(data, pos)
                if length == 0:
                    raise _bad("zero-length GC/Skip")
                if clock + length > _U32:
                    raise _bad("clock overflow")
                if info == GC_REF:
                    gcs.append((client, clock, length))
                clock += length
                continue
            ref = info & 0x1F
            # yjs treats low bits 0/10 as GC/Skip whatever the flags; yrs only the exact byte.
            if ref == GC_REF or ref > DOC_REF:
                raise _bad(f"bad struct info 0x{info:02x}")
            origin: tuple[int, int] | None = None
            right_origin: tuple[int, int] | None = None
            parent: str | tuple[int, int] | None = None
            parent_sub: str | None = None
            if info & HAS_ORIGIN:
                # inlined varuint fast paths: this runs once per struct
                oc = data[pos]
                if oc < 0x80:
                    pos += 1
                else:
                    oc, pos = _varuint(data, pos, 10, _U64)
                ok = data[pos]
                if ok < 0x80:
                    pos += 1
                else:
                    ok, pos = _varuint(data, pos, 5, _U32)
                origin = (oc, ok)
            if info & HAS_RIGHT_ORIGIN:
                rc, pos = _u64(data, pos)
                rk, pos = _u32(data, pos)
                right_origin = (rc, rk)
            if not info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN):
                parent_info, pos = _u32(data, pos)
                if parent_info == 1:
                    parent, pos = _str(data, pos)
                elif parent_info == 0:
                    pc, pos = _u64(data, pos)
                    pk, pos = _u32(data, pos)
                    parent = (pc, pk)
                else:
                    raise _bad(f"bad parent info {parent_info}")
                if info & HAS_PARENT_SUB:
                    parent_sub, pos = _str(data, pos)

            values: tuple[object, ...]
            if ref == ANY_REF:
                n, pos = _u32(data, pos)
                if n > end - pos:
                    raise _bad("any count exceeds the update")
                vals: list[object] = []
                append = vals.append
                for _ in range(n):
                    # Hot path: a buffer (tag 116) with a one-byte length, inline.
                    if data[pos] == 116:
                        ln = data[pos + 1]
                        if ln < 0x80:
                            pos += 2
                        elif data[pos + 2] < 0x80:  # two bytes: a record of 128 B-16 KiB
                            ln = (ln & 0x7F) | data[pos + 2] << 7
                            pos += 3
                        else:
                            ln, pos = _varuint(data, pos + 1, 5, _U32)
                        stop = pos + ln
                        if stop > end:
                            raise _bad("buffer runs past the end")
                        append(data[pos:stop])
                        pos = stop
                    else:
                        v, pos = _any(data, pos, 0)
                        append(v)
                values = tuple(vals)
                length = n
            elif ref == BINARY_REF:
                b, pos = _buf(data, pos)
                values = (b,)
                length = 1
            elif ref == STRING_REF:
                s, pos = _str(data, pos)
                values = (s,)
                length = _utf16_len(s)
            elif ref == DELETED_REF:
                length, pos = _u32(data, pos)
                values = ()
            elif ref == JSON_REF:
                n, pos = _u32(data, pos)
                if n > end - pos:
                    raise _bad("JSON count exceeds the update")
                jvals: list[object] = []
                for _ in range(n):
                    s, pos = _str(data, pos)
                    jvals.append(_json(s))
                values = tuple(jvals)
                length = n
            elif ref == EMBED_REF:
                s, pos = _str(data, pos)
                values = (_json(s),)
                length = 1
            elif ref == FORMAT_REF:
                key, pos = _str(data, pos)
                s, pos = _str(data, pos)
                values = (key, _json(s))
                length = 1
            elif ref == TYPE_REF:
                type_ref = data[pos]  # yrs reads one byte (yjs a varuint; same below 128)
                pos += 1
                if type_ref in _TYPE_REFS_PLAIN:
                    values = (type_ref,)
                elif type_ref in _TYPE_REFS_NAMED:
                    name, pos = _str(data, pos)
                    values = (type_ref, name)
                else:  # 7 = yrs weak link (feature-gated), others unknown
                    raise _bad(f"unsupported type ref {type_ref}")
                length = 1
            else:  # DOC_REF
                guid, pos = _str(data, pos)
                opts, pos = _any(data, pos, 0)
                values = (guid, opts)
                length = 1
            if length == 0:
                raise _bad("zero-length item")
            if clock + length > _U32:
                raise _bad("clock overflow")
            items.append(
                (client, clock, length, parent, parent_sub, ref, values, origin, right_origin, info)
            )
            clock += length

    deletes: list[tuple[int, int, int]] = []
    n_ds, pos = _u32(data, pos)
    if n_ds > end - pos:
        raise _bad("delete set client count exceeds the update")
    for _ in range(n_ds):
        client, pos = _u64(data, pos)
        n_ranges, pos = _u32(data, pos)
        if n_ranges == 0:
            raise _bad("empty delete set entry")
        if n_ranges > end - pos:
            raise _bad("delete range count exceeds the update")
        for _ in range(n_ranges):
            dclock, pos = _u32(data, pos)
            dlen, pos = _u32(data, pos)
            deletes.append((client, dclock, dlen))
    if pos != end:
        raise _bad(f"{end - pos} trailing bytes")
    return items, deletes, gcs


# ---- the gate ----------------------------------------------------------------------------------


def appended_values(update: bytes, array_name: str = "entries") -> list[bytes]:
    """The grow-only gate alone: ``gate_update`` without a state to compare with."""
    return gate_update(update, {}, array_name)[0]


def gate_update(
    update: bytes, state: Mapping[int, int], array_name: str = "entries"
) -> tuple[list[bytes], set[int]]:
    """The grow-only gate (``gate_ranges`` without the clock ranges)."""
    values, holes, _ = gate_ranges(update, state, array_name)
    return values, holes


def gate_ranges(
    update: bytes, state: Mapping[int, int], array_name: str = "entries"
) -> tuple[list[bytes], set[int], dict[int, tuple[int, int]]]:
    """The grow-only gate: every bytes value ``update`` inserts, in update order.

    Update order is per client section as encoded (yrs writes higher client ids first), not
    the order the values will have in the array.

    Also returns the clients whose structs would leave a hole after ``state`` (a decoded state
    vector, client → next clock): a struct that starts beyond both ``state`` and the end of the
    client's previous struct in the update (a section that starts late, or a Skip). Such a
    struct must not reach yrs, see ``ContextLog.apply_remote``.

    And, per client, the clock range ``(first, end)`` its structs cover in the update: what a
    Doc must hold to have taken all of it (``end``), and whether it already held any of it
    (``first`` below its state), without asking pycrdt.

    Raises what ``gate_structs`` raises.
    """
    return ranges_of(gate_structs(update, array_name), state)


def ranges_of(structs: Sequence[GatedStruct], state: Mapping[int, int],
              ) -> tuple[list[bytes], set[int], dict[int, tuple[int, int]]]:
    """``gate_ranges`` of an update whose structs the gate gave (``gate_structs``)."""
    out: list[bytes] = []
    extend = out.extend
    holes: set[int] = set()
    reach: dict[int, int] = {}  # per client: the clock up to which nothing is missing
    ranges: dict[int, tuple[int, int]] = {}
    for client, clock, length, _origin, _right, values in structs:
        start = reach.get(client)
        if start is None:
            start = state.get(client, 0)
            ranges[client] = (clock, clock + length)
        else:
            first, end = ranges[client]
            ranges[client] = (min(first, clock), max(end, clock + length))
        if clock > start:
            holes.add(client)
        reach[client] = max(start, clock + length)
        extend(values)
    return out, holes, ranges


# One gated Item: client, clock, length, origin, right origin, its bytes values.
GatedStruct = tuple[int, int, int, "tuple[int, int] | None", "tuple[int, int] | None",
                    "tuple[bytes, ...]"]


def gate_structs(update: bytes, array_name: str = "entries") -> list[GatedStruct]:
    """The grow-only gate's checks: the update's Item structs, in update order, each with
    the bytes values it inserts.

    Raises RemoteProtocolError when malformed, ForbiddenUpdate when the update is well formed
    but is not a pure insertion of bytes values into the root Array ``array_name``: a delete
    set, a GC struct, a map entry (parentSub, or the parentSub flag on an item with an origin),
    an explicit parent that is not that root (parent item ids included: no nested types), or any
    content other than bytes (Any buffers or Binary). Skip structs are allowed (and left out).
    """
    if type(update) is bytes:
        one = _one_item(array_name).fullmatch(update)
        if one is not None:
            item = _gate_one(one)
            if item is not None:
                return [item]
        usual = _gate_usual(update, array_name.encode("utf-8"))
        if usual is not None:
            return usual
    return _gate_general(update, array_name)


# Varuints as a pattern: up to 10 (a u64) or 5 (a u32) bytes, the last one below 0x80.
_V64 = rb"([\x80-\xff]{0,9}[\x00-\x7f])"
_V32 = rb"([\x80-\xff]{0,4}[\x00-\x7f])"


@lru_cache(maxsize=8)
def _one_item(array_name: str) -> re.Pattern[bytes]:
    """The update of one client's one ContentAny struct of one buffer: by origin and/or
    right origin, or in the root array ``array_name`` by its name; an empty delete set."""
    name = array_name.encode("utf-8")
    parent = b"\x08\x01" + bytes([len(name)]) + re.escape(name) if len(name) < 0x80 else b"(?!)"
    return re.compile(
        rb"\x01\x01" + _V64 + _V32 + rb"(?:" + parent + rb"|\x88" + _V64 + _V32 +
        rb"|\x48" + _V64 + _V32 + rb"|\xc8" + _V64 + _V32 + _V64 + _V32 +
        rb")\x01\x74" + _V32 + rb"(.*)\x00", re.DOTALL)


@lru_cache(maxsize=1 << 12)
def _client(raw: bytes) -> int:
    """A client id's varuint bytes (a writer's few, over and over), -1 past a u64."""
    value = _number(raw)
    return value if value <= _U64 else -1


def _number(raw: bytes) -> int:
    """The value of a varuint's bytes, as ``_varuint`` reads it."""
    if len(raw) == 1:
        return raw[0]
    value = shift = 0
    for b in raw:
        value |= (b & 0x7F) << shift
        shift += 7
    return value


def _gate_one(match: re.Match[bytes]) -> GatedStruct | None:
    """``gate_structs`` of an update ``_one_item`` matched, or None when a number is out of
    range (the general reader then names it).

    why: spread over 10,000 contexts a stored row holds one struct of one entry, and reading
    its ~8-byte client ids a byte at a time was most of ``_gate_usual``'s ~5 us per row; one
    pattern and client ids read once per writer take ~2.5 (``verify``, 100k entries over
    10,000 contexts, rows in a context's order).
    """
    client, clock, oc, ok, rc, rk, bc, bk, bc2, bk2, size, value = match.groups()
    at = clock[0] if len(clock) == 1 else _number(clock)
    by = _client(client)
    if at >= _U32 or by < 0 or (size[0] if len(size) == 1 else _number(size)) != len(value):
        return None
    origin: tuple[int, int] | None = None
    right: tuple[int, int] | None = None
    if oc is not None:
        origin = (_client(oc), _number(ok))
    elif rc is not None:
        right = (_client(rc), _number(rk))
    elif bc is not None:
        origin, right = (_client(bc), _number(bk)), (_client(bc2), _number(bk2))
    for other in origin, right:
        if other is not None and (other[0] < 0 or other[1] > _U32):
            return None
    return by, at, 1, origin, right, (value,)


@lru_cache(maxsize=8)
def usual_row(prefix: bytes, array_name: str) -> re.Pattern[bytes]:
    """A stored row of ``prefix`` and then an update of one client's one ContentAny struct of
    one buffer placed by its origin alone, with an empty delete set: an append after the
    array's last item, nearly every row of a log (``integrate_usual`` reads it). Only the
    first item of an array is placed by the array's name, and only concurrent writers' items
    have a right origin: those rows take ``gate_structs`` and ``integrate``."""
    if array_name != "entries":
        raise ValueError("usual_row reads rows of the entries array")  # (the one there is)
    return re.compile(re.escape(prefix) + rb"\x01\x01" + _V64 + _V32 + rb"\x88" + _V64 + _V32
                      + rb"\x01\x74" + _V32 + rb"(.*)\x00", re.DOTALL)


def integrate_usual(match: re.Match[bytes], state: dict[int, int],
                    clients: dict[bytes, int]) -> bytes | None:
    """``gate_structs`` then ``integrate`` of the row ``usual_row`` matched, into ``state``
    with no struct waiting: its value when it is integrated now; None when anything else
    happens (a number out of range, a struct that would wait or is already held), and then
    the caller gives the row to ``gate_structs`` and ``integrate``, which decide. ``clients``
    caches client ids by their varuint bytes (the caller's, one per context).

    why: spread over 10,000 contexts every stored row is one such struct, and reading it
    through ``gate_structs`` (its pattern, ``_gate_one``'s tuples, two cached client reads)
    and ``integrate`` (lists in and out) was ~3.5 of ``verify``'s ~9 us per row."""
    client, clock, origin, known, size, value = match.groups()
    by = clients.get(client)
    if by is None:
        by = clients[client] = _client(client)
    of = clients.get(origin)
    if of is None:
        of = clients[origin] = _client(origin)
    at = clock[0] if len(clock) == 1 else _number(clock)
    below = known[0] if len(known) == 1 else _number(known)
    # (a record of a 100 B payload is ~220-260 B: its size takes two bytes, read inline)
    length = size[0] if len(size) == 1 else size[0] & 0x7F | size[1] << 7 if len(size) == 2 \
        else _number(size)
    if by < 0 or of < 0 or at >= _U32 or below > _U32 or length != len(value) or \
            at != state.get(by, 0) or below >= state.get(of, 0):
        return None
    state[by] = at + 1
    return value


# One client's one ContentAny struct placed by its origin alone (or, a client's first, in the
# root array "entries" by its name), its first value a buffer: the head of a row ``even_run``
# reads (client, clock, origin's client and clock, values, the first value's size).
_RUN_HEAD = re.compile(rb"\x01\x01" + _V64 + _V32 + rb"(?:\x88" + _V64 + _V32 +
                       rb"|\x08\x01\x07entries)" + _V32 + rb"\x74" + _V32)


class EvenRun(NamedTuple):
    """A stored update ``even_run`` read: ``length`` buffers of ``size`` bytes, the first at
    ``at`` in the blob and each ``stride`` bytes after the one before, items ``clock`` on of
    ``client`` placed after item ``origin_clock`` of ``origin`` (None: in the root array)."""

    client: int
    clock: int
    origin: int | None
    origin_clock: int
    length: int
    at: int
    stride: int
    size: int


def even_run(blob: bytes, start: int) -> EvenRun | None:
    """The update at ``start`` of ``blob`` (a stored row: it passed the gate when it came)
    when it is one client's one ContentAny struct of buffers all of one size, placed by its
    origin alone (or in the root array ``entries`` by its name), with an empty delete set:
    where its values lie, without reading them one by one. None for any other update (items
    of several clients, of several sizes, with a right origin), which ``gate_structs`` reads.

    why: nearly every row of a context appended by one node is such a run (128 records a row
    at 128 appends per commit), and a load read each value and its fields in Python: ~4 us
    per entry, 4.1 CPU-s for the first read of a cold context of 1M (``EntryIndex.add_run``
    slices the run's columns out instead)."""
    head = _RUN_HEAD.match(blob, start)
    if head is None:
        return None
    client, clock, origin, below, count, size = head.groups()
    by = _client(client)
    of = None if origin is None else _client(origin)
    origin_clock = 0 if below is None else _number(below)
    at, n, length = _number(clock), _number(count), _number(size)
    prefix = 1 + len(size)  # (the buffer's tag and its size)
    first = head.end() - prefix
    stride = prefix + length
    end = first + n * stride
    if by < 0 or (of is not None and of < 0) or at + n > _U32 or origin_clock >= _U32 or \
            not n or (of is None and at) or \
            end + 1 != len(blob) or blob[end] != 0:
        return None
    tag = blob[first : first + prefix]
    for j in range(prefix):  # (every value: a buffer of the first one's size)
        if blob[first + j : end : stride] != tag[j : j + 1] * n:
            return None
    return EvenRun(by, at, of, origin_clock, n, first + prefix, stride, length)


def _gate_general(update: bytes, array_name: str) -> list[GatedStruct]:
    """``gate_structs`` of any update, through the general reader."""
    items, deletes, gcs = _parse_raw(update, _MAX_STRUCTS)
    if deletes:
        raise ForbiddenUpdate("update deletes (non-empty delete set)")
    if gcs:
        raise ForbiddenUpdate("update carries garbage-collected (GC) structs")
    out: list[GatedStruct] = []
    append = out.append
    for client, clock, length, parent, parent_sub, ref, values, origin, right, info in items:
        if parent_sub is not None or info & HAS_PARENT_SUB:
            raise ForbiddenUpdate(f"item ({client}, {clock}) is a map entry (parentSub)")
        if parent is not None and parent != array_name:
            if isinstance(parent, tuple):
                raise ForbiddenUpdate(f"item ({client}, {clock}) targets a nested type {parent}")
            raise ForbiddenUpdate(
                f"item ({client}, {clock}) targets root type {parent!r}, not {array_name!r}"
            )
        if ref == ANY_REF:
            for v in values:
                if type(v) is not bytes:
                    raise ForbiddenUpdate(
                        f"item ({client}, {clock}) inserts a non-bytes value ({type(v).__name__})"
                    )
        elif ref != BINARY_REF:  # ContentBinary holds one bytes value
            raise ForbiddenUpdate(f"item ({client}, {clock}) has forbidden content ref {ref}")
        append((client, clock, length, origin, right,
                cast("tuple[bytes, ...]", values)))  # checked just above
    return out


def _gate_usual(data: bytes, name: bytes) -> list[GatedStruct] | None:
    """``gate_structs`` of an update of the shape ours and pycrdt's appends have, or None for
    any other (``gate_structs`` then reads it the general way, which admits it or names what
    is wrong): ContentAny structs of buffers, each with an origin and/or right origin or the
    root array ``name`` (UTF-8) as parent by its canonical name, Skip structs, an empty delete
    set. It reads what ``_parse`` reads with the same bounds and gives up, never raising, at
    the first byte it would read otherwise.

    why: spread over 10,000 contexts a stored row holds one struct of one entry, and the
    general reader (a call per varuint, a 10-tuple per struct, then the gate's own loop) was
    ~1/3 of ``verify``'s CPU there (8.2 of ~39 us per row); this path reads a row in ~2 us.
    """
    try:
        varuint = _varuint
        end = len(data)
        out: list[GatedStruct] = []
        append = out.append
        n_clients = data[0]
        if n_clients >= 0x80:
            return None
        pos = 1
        total = 0
        for _ in range(n_clients):
            n_structs = data[pos]
            if n_structs < 0x80:
                pos += 1
            else:
                n_structs, pos = varuint(data, pos, 5, _U32)
            total += n_structs
            if n_structs > end - pos or total > _MAX_STRUCTS:
                return None
            client = data[pos]
            if client < 0x80:
                pos += 1
            else:
                client, pos = varuint(data, pos, 10, _U64)
            clock = data[pos]
            if clock < 0x80:
                pos += 1
            else:
                clock, pos = varuint(data, pos, 5, _U32)
            for _ in range(n_structs):
                info = data[pos]
                pos += 1
                origin: tuple[int, int] | None = None
                right: tuple[int, int] | None = None
                if info == ANY_REF | HAS_ORIGIN or info == ANY_REF | HAS_ORIGIN | \
                        HAS_RIGHT_ORIGIN or info == ANY_REF | HAS_RIGHT_ORIGIN:
                    if info & HAS_ORIGIN:
                        oc = data[pos]
                        if oc < 0x80:
                            pos += 1
                        else:
                            oc, pos = varuint(data, pos, 10, _U64)
                        ok = data[pos]
                        if ok < 0x80:
                            pos += 1
                        else:
                            ok, pos = varuint(data, pos, 5, _U32)
                        origin = (oc, ok)
                    if info & HAS_RIGHT_ORIGIN:
                        rc = data[pos]
                        if rc < 0x80:
                            pos += 1
                        else:
                            rc, pos = varuint(data, pos, 10, _U64)
                        rk = data[pos]
                        if rk < 0x80:
                            pos += 1
                        else:
                            rk, pos = varuint(data, pos, 5, _U32)
                        right = (rc, rk)
                elif info == ANY_REF:  # parent info 1: a root type by name, ours
                    size = data[pos + 1]
                    stop = pos + 2 + size
                    if data[pos] != 1 or size >= 0x80 or data[pos + 2 : stop] != name:
                        return None
                    pos = stop
                elif info == SKIP_REF:
                    length = data[pos]
                    if length < 0x80:
                        pos += 1
                    else:
                        length, pos = varuint(data, pos, 5, _U32)
                    if length == 0 or clock + length > _U32:
                        return None
                    clock += length
                    continue
                else:
                    return None
                count = data[pos]
                if count < 0x80:
                    pos += 1
                else:
                    count, pos = varuint(data, pos, 5, _U32)
                if count == 0 or count > end - pos or clock + count > _U32:
                    return None
                values: list[bytes] = []
                for _ in range(count):
                    if data[pos] != _BUFFER:
                        return None
                    size = data[pos + 1]
                    if size < 0x80:
                        pos += 2
                    elif data[pos + 2] < 0x80:
                        size = (size & 0x7F) | data[pos + 2] << 7
                        pos += 3
                    else:
                        size, pos = varuint(data, pos + 1, 5, _U32)
                    stop = pos + size
                    if stop > end:
                        return None
                    values.append(data[pos:stop])
                    pos = stop
                append((client, clock, count, origin, right, tuple(values)))
                clock += count
        if data[pos] != 0 or pos + 1 != end:  # an empty delete set, then nothing
            return None
        return out
    except (IndexError, RemoteProtocolError):
        return None


def integrate(structs: Sequence[GatedStruct], state: dict[int, int],
              ) -> tuple[list[bytes], list[GatedStruct]]:
    """Yjs integration of gated structs without yrs, into ``state`` (client → the clock below
    which everything is integrated: a state vector, updated in place): the values integrated,
    in the order they are, and the structs left waiting.

    The log is grow-only (every struct passed the gate: items of bytes in the root array, no
    deletes, no GC), so an Item is integrated exactly when its client's earlier clocks are
    and its origin and right origin (if any) are; the part of an item already held is
    skipped, as Yjs skips a struct whose (client, clock) it has seen whatever its content.
    Structs that wait are ones yrs holds pending; callers that meet any fall back to a Doc,
    so a corner of yrs's pending rules can never make this reading differ from yrs's."""
    taken: list[bytes] = []
    queue = structs
    progressed = True
    waiting: list[GatedStruct] = []
    while progressed and queue:
        progressed = False
        waiting = []
        for item in queue:
            client, clock, length, origin, right, values = item
            end = state.get(client, 0)
            if clock > end or (origin is not None and origin[1] >= state.get(origin[0], 0)) \
                    or (right is not None and right[1] >= state.get(right[0], 0)):
                waiting.append(item)
                continue
            if clock + length > end:
                taken.extend(values[end - clock:] if end > clock else values)
                state[client] = clock + length
                progressed = True
        queue = waiting
    return taken, waiting


def clock_spans(update: bytes, array_name: str = "entries") -> dict[int, tuple[int, int]]:
    """Per client, the clock range ``(first, end)`` the structs of ``update`` cover: the
    ranges of ``gate_ranges``. ``update`` passed the gate before (a stored row): one struct
    of buffers, the usual row, is read from its header without touching its values; any other
    goes through the gate.

    why: answering a peer from the stored rows (``Ledger._bundle_of_rows``) looks at every
    row a peer may lack; the gate parses every value of it."""
    try:
        if update[0] == 1 and update[1] == 1:  # one client, one struct
            client, pos = _u64(update, 2)
            clock, pos = _u32(update, pos)
            info = update[pos]
            pos += 1
            if info & 0x1F == ANY_REF and not info & (HAS_RIGHT_ORIGIN | HAS_PARENT_SUB):
                if info & HAS_ORIGIN:
                    pos = _u32(update, _u64(update, pos)[1])[1]
                    count = _u32(update, pos)[0]
                    return {client: (clock, clock + count)}
                if update[pos] == 1:  # the parent named: the root array
                    name_size, pos = _u32(update, pos + 1)
                    count = _u32(update, pos + name_size)[0]
                    return {client: (clock, clock + count)}
    except (IndexError, RemoteProtocolError):
        pass  # the gate names what is wrong
    return gate_ranges(update, {}, array_name)[2]


def squash(update: bytes, array_name: str = "entries") -> bytes:
    """``update`` (one the gate admits) with every run of a client's items that continue one
    another as one ContentAny struct: the same items at the same places (an item continues
    the one before it when it starts at its end, its origin is that item's last element and
    its right origin is the same, which is what Yjs itself requires to merge two items; yrs
    splits such a struct again wherever another item names a place inside it). Skipped clock
    ranges stay Skip structs.

    why: yrs integrates an update's structs one at a time, and a merge of a context's stored
    rows holds one struct per commit: applying the 782 structs of 100k × 100 B entries (128
    per commit) took 3.6 CPU-s, the same entries squashed into one struct 0.008 s (pycrdt
    0.14, here)."""
    runs: dict[int, list[list[Any]]] = {}
    for client, clock, length, origin, right, values in gate_structs(update, array_name):
        run = runs.setdefault(client, [])
        if run:
            last = run[-1]
            if clock < last[1] + last[2]:
                return update  # sections out of clock order: nothing a merge writes; as is
            if clock == last[1] + last[2] and origin == (client, clock - 1) and right == last[4]:
                last[2] += length
                last[5] += values
                continue
        run.append([client, clock, length, origin, right, list(values)])
    name = array_name.encode("utf-8")
    out = bytearray()
    _write_varuint(out, len(runs))
    for client, items in runs.items():
        structs = bytearray()
        count, at = 0, items[0][1]
        for _, clock, length, origin, right, values in items:
            if clock > at:  # a Skip keeps the section's clocks contiguous
                structs.append(SKIP_REF)
                _write_varuint(structs, clock - at)
                count += 1
            structs.append(ANY_REF | (HAS_ORIGIN if origin else 0)
                           | (HAS_RIGHT_ORIGIN if right else 0))
            for ref in (origin, right):
                if ref is not None:
                    _write_varuint(structs, ref[0])
                    _write_varuint(structs, ref[1])
            if origin is None and right is None:
                structs.append(1)  # parent_info 1: the root type, by name
                _write_varuint(structs, len(name))
                structs += name
            _write_varuint(structs, len(values))
            for value in values:
                structs.append(_BUFFER)
                _write_varuint(structs, len(value))
                structs += value
            count += 1
            at = clock + length
        _write_varuint(out, count)
        _write_varuint(out, client)
        _write_varuint(out, items[0][1])
        out += structs
    out.append(0)  # no deletes
    return bytes(out)


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """A Yjs state vector ``{client: clock}``: what a peer says it holds of a document.

    The one decoder of the format: the protocol reads peers' vectors with it, and every vector a
    peer sends passes it before pycrdt sees it. Raises RemoteProtocolError (and nothing else)
    for malformed or truncated input, trailing bytes, or a count the bytes cannot hold.
    """
    # why: yrs sizes a map by the entry count a state vector claims before reading any entry:
    # 5 bytes claiming 2^29 entries cost ~1 GB and ~0.6 s per SYNC1 (measured, yrs in pycrdt
    # 0.14.13). Each entry (client, clock) takes at least 2 bytes, so a count the bytes cannot
    # hold is refused first.
    sv = state_vector
    try:
        n, pos = _u32(sv, 0)
        if n > (len(sv) - pos) // 2:
            raise _bad_sv(f"{n} entries cannot fit in {len(sv)} bytes")
        out: dict[int, int] = {}
        for _ in range(n):
            client, pos = _u64(sv, pos)
            out[client], pos = _u32(sv, pos)
    except IndexError:
        raise _bad_sv("truncated") from None
    except RemoteProtocolError as exc:
        raise _bad_sv(str(exc).removeprefix("malformed Yjs update: ")) from None
    if pos != len(sv):
        raise _bad_sv(f"{len(sv) - pos} trailing bytes")
    return out


def _bad_sv(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed Yjs state vector: {msg}")


def encode_state_vector(state: Mapping[int, int]) -> bytes:
    """The Yjs encoding of client → clock (clients in ascending order)."""
    out = bytearray()
    _write_varuint(out, len(state))
    for client in sorted(state):
        _write_varuint(out, client)
        _write_varuint(out, state[client])
    return bytes(out)


def _write_varuint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


_ANY_AFTER_ORIGIN = bytes((ANY_REF | HAS_ORIGIN,))  # a ContentAny item with an origin
_ANY_IN_ROOT = bytes((ANY_REF, 1))  # one without: parent_info 1, a root type named next


def varuint_bytes(n: int) -> bytes:
    """``n`` as a lib0 varuint (7 bits a byte, the low ones first)."""
    out = bytearray()
    _write_varuint(out, n)
    return bytes(out)


_varuint_bytes = lru_cache(maxsize=1024)(varuint_bytes)


@lru_cache(maxsize=1024)
def _buffer_prefix(size: int) -> bytes:
    """lib0 any: the tag of a varuint8array (116) and the buffer's length."""
    return bytes((_BUFFER,)) + _varuint_bytes(size)


def encode_appended(client: int, clock: int, values: Sequence[bytes],
                    array_name: str = "entries", who: bytes = b"") -> bytes:
    """The Yjs v1 update in which ``client`` appends ``values`` (each a buffer) to the root array
    ``array_name`` as its items ``clock, clock + 1, ...``: one ContentAny struct whose origin is
    the client's item ``clock - 1`` (none for clock 0: then the struct names its parent).

    It is what yrs writes for a transaction appending to an array whose last item is the
    client's own previous one (tests/core/test_yjs.py compares the bytes); after other clients'
    items it differs only in the origin, which places the item in the array but changes nothing
    the ledger reads (reads follow the index, not the array order). ``who``: ``client`` as a
    varuint (``varuint_bytes``), when the caller keeps it.
    why: an append through a pycrdt Doc cost ~6 pycrdt transactions per context touched (state
    before, insert, update since, state after), the largest single part of an ingest spread
    over 10,000 contexts; this writes the same struct in one pass with no Doc at all.
    """
    if not values:
        raise ValueError("nothing to append")
    who = who or _varuint_bytes(client)
    if clock and len(values) == 1:  # (a spread commit's one append to a context: no lists)
        value = values[0]
        return b"".join((b"\x01\x01", who, _varuint_bytes(clock), _ANY_AFTER_ORIGIN, who,
                         _varuint_bytes(clock - 1), b"\x01", _buffer_prefix(len(value)), value,
                         b"\x00"))
    if clock:  # our previous item is the origin
        head = [b"\x01\x01", who, _varuint_bytes(clock), _ANY_AFTER_ORIGIN, who,
                _varuint_bytes(clock - 1)]
    else:
        name = array_name.encode("utf-8")
        head = [b"\x01\x01", who, b"\x00", _ANY_IN_ROOT, _varuint_bytes(len(name)), name]
    # (one client, one struct; then the values, then an empty delete set)
    return b"".join([*head, _varuint_bytes(len(values)),
                     *[part for value in values for part in (_buffer_prefix(len(value)), value)],
                     b"\x00"])
