"""bundle.py: the stored and shipped unit (signed heads, vouchers, Yjs update) round-trips in
every shape, and every cut before its update is a RemoteProtocolError naming the problem."""

from __future__ import annotations

import pytest

from p2p_ledger.core.bundle import Bundle, decode_bundle, encode_bundle, update_start
from p2p_ledger.core.errors import RemoteProtocolError
from p2p_ledger.core.identity import Identity

_ME = Identity.from_seed("bundle")
HEADS = tuple(_ME.sign_head("c1", 1, seq, bytes([seq]) * 32) for seq in (1, 2))

SHAPES = [
    ((), (), b""),  # the smallest bundle: 13 bytes
    ((), (), b"\x01\x00yjs update"),  # a stored row: no heads, no vouchers (a fast path)
    (HEADS[:1], (), b""),  # a head and nothing after it
    (HEADS, (b"v1", b""), b""),  # the last voucher ends the bundle (empty update)
    (HEADS, (b"voucher",), b"\x01\x00yjs update"),
]


@pytest.mark.parametrize("heads, vouchers, update", SHAPES)
def test_every_shape_round_trips(heads, vouchers, update) -> None:
    blob = encode_bundle(heads, update, vouchers)
    assert decode_bundle(blob) == Bundle(heads, vouchers, update)
    assert blob[update_start(blob):] == update


@pytest.mark.parametrize("heads, vouchers, update", SHAPES)
def test_every_cut_before_the_update_is_refused_by_name(heads, vouchers, update) -> None:
    blob = encode_bundle(heads, update, vouchers)
    for cut in range(len(blob) - len(update)):
        with pytest.raises(RemoteProtocolError,
                           match="^(bundle truncated|bundle claims|not a p2p-ledger bundle)"):
            decode_bundle(blob[:cut])


def test_refusals_name_the_problem() -> None:
    good = encode_bundle(HEADS, b"", (b"v",))
    with pytest.raises(RemoteProtocolError, match=r"^not a p2p-ledger bundle \(bad magic\)$"):
        decode_bundle(b"P2PX" + good[4:])
    with pytest.raises(RemoteProtocolError, match="^bundle version 9; this build reads 1 and 2$"):
        decode_bundle(good[:4] + b"\x09" + good[5:])
    with pytest.raises(RemoteProtocolError, match="^bundle claims 2 heads in 100 bytes$"):
        decode_bundle(good[:100])
    with pytest.raises(RemoteProtocolError, match="^bundle truncated in its vouchers$"):
        decode_bundle(good[:-1])
