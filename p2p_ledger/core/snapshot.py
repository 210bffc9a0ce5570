"""Snapshot files: one context, self-verifying.

Format version 1 (big-endian):

    b"P2PLSNAP" u8(version) | u32 len + context (UTF-8) | 32-byte Merkle root
    u64 count | count × (u32 len + record)        record = 32-byte id + canonical entry encoding

Loading checks every record's content id, that it belongs to the context, and that the ids
rebuild exactly the stated root; any failure refuses the whole file.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .entry import Entry, Limits, check_context, decode_record
from .errors import IntegrityError, InvalidContextName, InvalidSnapshot, UnsupportedVersion
from .merkle import MerkleTree
from .reader import Reader

MAGIC = b"P2PLSNAP"
VERSION = 1
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encode_snapshot(context: str, root: bytes, entries: Sequence[Entry]) -> bytes:
    parts = [MAGIC, bytes([VERSION])]
    raw = context.encode()
    parts += [_U32.pack(len(raw)), raw, root, _U64.pack(len(entries))]
    for entry in entries:
        record = entry.record
        parts += [_U32.pack(len(record)), record]
    return b"".join(parts)


def decode_snapshot(blob: bytes, limits: Limits) -> tuple[str, bytes, list[Entry]]:
    """Returns (context, root, entries), every entry verified and the root recomputed."""
    if not blob.startswith(MAGIC):
        raise InvalidSnapshot("not a p2p-ledger snapshot (bad magic)")
    r = Reader(bytes(blob), InvalidSnapshot, "snapshot", pos=len(MAGIC))
    version = r.u8()
    if version != VERSION:
        raise UnsupportedVersion(f"snapshot format version {version}; this build reads {VERSION}")
    try:
        context = check_context(r.take(r.u32()).decode("utf-8"))
    except (UnicodeDecodeError, InvalidContextName) as exc:
        raise InvalidSnapshot(f"snapshot names no valid context: {exc}") from None
    root = r.take(32)
    count = r.u64()
    if count > len(blob):  # each record takes more than one byte: a lie about the count
        raise InvalidSnapshot(f"snapshot claims {count} entries in {len(blob)} bytes")
    tree = MerkleTree()
    entries = []
    for _ in range(count):
        entry = decode_record(r.take(r.u32()), limits)
        if entry.context != context:
            raise IntegrityError(f"entry {entry.id} belongs to {entry.context!r}, not {context!r}")
        tree.set(bytes.fromhex(entry.id))
        entries.append(entry)
    if r.remaining:
        raise InvalidSnapshot(f"{r.remaining} unexpected bytes after the last entry")
    if tree.root() != root:
        raise IntegrityError(
            f"snapshot of {context}: entries give root {tree.root().hex()}, file says {root.hex()}"
        )
    return context, root, entries
