"""Snapshot files: one context, self-verifying.

Format version 3 (big-endian):

    b"P2PLSNAP" u8(version) | u32 len + context (UTF-8) | 32-byte Merkle root
    u64 count | count × (u32 len + record)        record = 32-byte id + canonical entry encoding
    u32 n_heads | n_heads × signed head (``Head.encode``: with its path to the commit's root)

Version 2 files (heads of identity.HEAD_SIZE bytes, each signed alone) are still read.

Loading checks every record's content id, that it belongs to the context, and that the ids
rebuild exactly the stated root; any failure refuses the whole file. The heads let the loading
ledger check every entry's signature (``ContextLog.authenticate``) before it keeps any.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .entry import Entry, Limits, check_context, decode_record
from .errors import IntegrityError, InvalidContextName, InvalidSnapshot, UnsupportedVersion
from .identity import HEAD_SIZE, Head
from .merkle import MerkleTree
from .reader import Reader

MAGIC = b"P2PLSNAP"
VERSION = 3
READS = (2, 3)
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encode_snapshot(context: str, root: bytes, entries: Sequence[Entry],
                    heads: Sequence[Head] = ()) -> bytes:
    parts = [MAGIC, bytes([VERSION])]
    raw = context.encode()
    parts += [_U32.pack(len(raw)), raw, root, _U64.pack(len(entries))]
    for entry in entries:
        record = entry.record
        parts += [_U32.pack(len(record)), record]
    parts.append(_U32.pack(len(heads)))
    parts += [h.encode() for h in heads]
    return b"".join(parts)


def decode_snapshot(blob: bytes, limits: Limits) -> tuple[str, bytes, list[Entry], list[Head]]:
    """Returns (context, root, entries, heads), every entry's content id verified and the root
    recomputed (signatures are the loading ledger's job)."""
    if not blob.startswith(MAGIC):
        raise InvalidSnapshot("not a p2p-ledger snapshot (bad magic)")
    r = Reader(bytes(blob), InvalidSnapshot, "snapshot", pos=len(MAGIC))
    version = r.u8()
    if version not in READS:
        raise UnsupportedVersion(f"snapshot format version {version}; this build reads "
                                 f"{' and '.join(map(str, READS))}")
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
    n_heads = r.u32()
    if n_heads * (HEAD_SIZE + (version > 2)) > r.remaining:
        raise InvalidSnapshot(f"snapshot claims {n_heads} heads in {r.remaining} bytes")
    if version == 2:
        heads = [Head.decode(r.take(HEAD_SIZE)) for _ in range(n_heads)]
    else:
        heads = [Head.read(r) for _ in range(n_heads)]
    if r.remaining:
        raise InvalidSnapshot(f"{r.remaining} unexpected bytes after the last entry")
    if tree.root() != root:
        raise IntegrityError(
            f"snapshot of {context}: entries give root {tree.root().hex()}, file says {root.hex()}"
        )
    return context, root, entries, heads
