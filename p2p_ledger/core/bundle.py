"""Bundles: a Yjs update plus the signatures that vouch for its entries — the unit the ledger
stores (one row per commit) and ships (one UPDATE transfer).

Format version 2 (big-endian)::

    b"P2PB" u8(version) | u32 n_heads | n_heads × signed head (``Head.encode``: the 144 bytes
    of format 1, u8 depth, depth × 32 path bytes)
    u32 n_vouchers | n_vouchers × (u32 len + record)          | the Yjs v1 update (the rest)

Version 1 (stores written before one signature per commit) is still read: its heads are
``identity.HEAD_SIZE`` bytes each, no depth byte, each signed alone.

*Heads* are signed statements (identity.Head: one signature per commit, each head with its path
to the commit's signed root). *Vouchers* are records that are not part of the
update but link one of its entries to a head: the sender's path from an entry whose own head it
does not hold up to the nearest one it does (each voucher names the one below as ``prev``). The
receiver uses vouchers only to authenticate; entries reach its log only through the update (or a
re-insert of entries it fetched by id).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import RemoteProtocolError
from .identity import HEAD_SIZE, KEY_SIZE, Head
from .reader import Reader

MAGIC = b"P2PB"
VERSION = 2
READS = (1, 2)
_U32 = struct.Struct(">I")
BARE = MAGIC + bytes([VERSION]) + bytes(8)  # no heads, no vouchers: the update follows


@dataclass(frozen=True)
class Bundle:
    heads: tuple[Head, ...]
    vouchers: tuple[bytes, ...]
    update: bytes


def encode_bundle(heads: Sequence[Head], update: bytes, vouchers: Sequence[bytes] = ()) -> bytes:
    """A bundle of format VERSION."""
    parts = [MAGIC, bytes([VERSION]), _U32.pack(len(heads))]
    parts += [h.encode() for h in heads]
    parts.append(_U32.pack(len(vouchers)))
    for record in vouchers:
        parts += [_U32.pack(len(record)), record]
    parts.append(update)
    return b"".join(parts)


def decode_bundle(blob: bytes) -> Bundle:
    """RemoteProtocolError if ``blob`` is not one well-formed bundle (signatures are checked
    later, only where they are needed). Read through ``reader.Reader``, the bounds-checked
    reader of every binary format."""
    if blob.startswith(BARE):
        # why: a stored row has no heads and no vouchers (see ledger "Stored heads"); spread
        # over 10,000 contexts each row holds one entry, and the general read below was ~8%
        # of ``verify``'s profile there
        return Bundle((), (), blob[len(BARE):])
    if blob[:4] != MAGIC:
        raise RemoteProtocolError("not a p2p-ledger bundle (bad magic)")
    if len(blob) < 13:
        raise RemoteProtocolError("bundle truncated")
    r = Reader(blob, _truncated, "its header", 4)
    version = r.u8()
    if version not in READS:
        raise RemoteProtocolError(f"bundle version {version}; this build reads "
                                  f"{' and '.join(map(str, READS))}")
    n = r.u32()
    if n * (HEAD_SIZE + (version > 1)) + 4 > r.remaining:
        raise RemoteProtocolError(f"bundle claims {n} heads in {len(blob)} bytes")
    r.what = "its heads"
    if version == 1:
        heads = tuple(Head.decode(r.take(HEAD_SIZE)) for _ in range(n))
    else:
        heads = tuple(Head.read(r) for _ in range(n))
    r.what = "its vouchers"
    vouchers = tuple(r.take(r.u32()) for _ in range(r.u32()))
    return Bundle(heads, vouchers, blob[r.pos:])


def update_start(blob: bytes) -> int:
    """Where the Yjs update of a well-formed bundle starts (``decode_bundle(blob).update`` is
    ``blob[update_start(blob):]``), without copying it out when the bundle is bare (a stored
    row: an update of 10 MB is not copied to find where it starts)."""
    if blob.startswith(BARE):
        return len(BARE)
    return len(blob) - len(decode_bundle(blob).update)


def first_origin(blob: bytes) -> bytes:
    """The origin (32-byte public key) of a bundle's first signed head, read without decoding
    the rest; b"" when it has none or is malformed (the bundle's own checks report that). A
    pushed update is one append's bundle, so this names the node that wrote it: epidemic
    forwarding keeps one tree per origin (``core/node.py``)."""
    if blob[:4] != MAGIC or blob[4:5] not in (b"\x01", b"\x02") or len(blob) < 9 + HEAD_SIZE \
            or _U32.unpack_from(blob, 5)[0] == 0:
        return b""
    return blob[9:9 + KEY_SIZE]


def _truncated(message: str) -> RemoteProtocolError:
    # the reader says "truncated <what>: wanted n bytes at p"; a bundle says where it ends
    if not message.startswith("truncated "):
        return RemoteProtocolError(f"bad bundle: {message}")
    what = message.split(":", 1)[0].removeprefix("truncated ")
    return RemoteProtocolError(f"bundle truncated in {what}")
