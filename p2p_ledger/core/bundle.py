"""Bundles: a Yjs update plus the signatures that vouch for its entries — the unit the ledger
stores (one row per commit) and ships (one UPDATE transfer).

Format version 1 (big-endian)::

    b"P2PB" u8(version) | u32 n_heads | n_heads × signed head (identity.HEAD_SIZE bytes)
    u32 n_vouchers | n_vouchers × (u32 len + record)          | the Yjs v1 update (the rest)

*Heads* are signed statements (identity.Head). *Vouchers* are records that are not part of the
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
from .identity import HEAD_SIZE, Head

MAGIC = b"P2PB"
VERSION = 1
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class Bundle:
    heads: tuple[Head, ...]
    vouchers: tuple[bytes, ...]
    update: bytes


def encode_bundle(heads: Sequence[Head], update: bytes, vouchers: Sequence[bytes] = ()) -> bytes:
    parts = [MAGIC, bytes([VERSION]), _U32.pack(len(heads))]
    parts += [h.encode() for h in heads]
    parts.append(_U32.pack(len(vouchers)))
    for record in vouchers:
        parts += [_U32.pack(len(record)), record]
    parts.append(update)
    return b"".join(parts)


def decode_bundle(blob: bytes) -> Bundle:
    """RemoteProtocolError if ``blob`` is not one well-formed bundle (signatures are checked
    later, only where they are needed)."""
    if blob[:4] != MAGIC:
        raise RemoteProtocolError("not a p2p-ledger bundle (bad magic)")
    if len(blob) < 13:
        raise RemoteProtocolError("bundle truncated")
    if blob[4] != VERSION:
        raise RemoteProtocolError(f"bundle version {blob[4]}; this build reads {VERSION}")
    (n,) = _U32.unpack_from(blob, 5)
    pos = 9
    if pos + n * HEAD_SIZE + 4 > len(blob):
        raise RemoteProtocolError(f"bundle claims {n} heads in {len(blob)} bytes")
    heads = tuple(Head.decode(blob[pos + i * HEAD_SIZE:pos + (i + 1) * HEAD_SIZE])
                  for i in range(n))
    pos += n * HEAD_SIZE
    (n,) = _U32.unpack_from(blob, pos)
    pos += 4
    vouchers = []
    for _ in range(n):
        if pos + 4 > len(blob):
            raise RemoteProtocolError("bundle truncated in its vouchers")
        (size,) = _U32.unpack_from(blob, pos)
        pos += 4
        if pos + size > len(blob):
            raise RemoteProtocolError("bundle truncated in its vouchers")
        vouchers.append(blob[pos:pos + size])
        pos += size
    return Bundle(heads, tuple(vouchers), blob[pos:])
