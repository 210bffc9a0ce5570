"""wire.py: golden vectors, round trips, and garbage in ⇒ RemoteProtocolError only."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_ledger.core import wire
from p2p_ledger.core.errors import ProtocolMismatch, RemoteProtocolError
from p2p_ledger.core.wire import (
    CHUNK,
    DIGEST_PREFIX,
    EMPTY,
    INNER,
    ITEMS,
    LARGE_CHUNK,
    LARGE_FRAME,
    MAX_FRAME,
    Auth,
    Bye,
    Flow,
    Hello,
    Peers,
    Root,
    Sync1,
    UpdateChunk,
    View,
    Views,
    decode,
    encode,
)

from . import wire_vectors

VECTORS = wire_vectors.load()


def test_vectors_cover_every_message_type() -> None:
    doc = json.loads(wire_vectors.PATH.read_text())
    assert doc["wire_version"] == wire.WIRE_VERSION
    assert doc["protocol_version"] == wire.PROTOCOL_VERSION
    types = {bytes.fromhex(v["hex"])[1] for v in VECTORS}
    assert types == set(wire.NAMES)


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vector(case: dict) -> None:
    frame = bytes.fromhex(case["hex"])
    msg = wire_vectors.message_from(case)
    assert encode(msg) == frame
    assert decode(frame) == msg
    assert frame[0] == wire.WIRE_VERSION


@pytest.mark.parametrize("case", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_truncation_and_extension_of_a_vector_is_refused(case: dict) -> None:
    frame = bytes.fromhex(case["hex"])
    for cut in range(len(frame)):
        with pytest.raises(RemoteProtocolError):
            decode(frame[:cut])
    with pytest.raises(RemoteProtocolError, match="trailing"):
        decode(frame + b"\x00")


# ---- round trips of generated messages ----------------------------------------------------------

_text = st.text(max_size=40)
_digest = st.binary(min_size=DIGEST_PREFIX, max_size=DIGEST_PREFIX)
_prefix = st.lists(st.integers(0, 15), max_size=64).map(tuple)


@st.composite
def _views(draw: st.DrawFn) -> View:
    prefix = draw(_prefix)
    kind = draw(st.sampled_from([EMPTY, INNER, ITEMS]))
    if kind == INNER:
        return View(prefix, INNER, children=tuple(
            draw(st.lists(st.none() | _digest, min_size=16, max_size=16))))
    if kind == ITEMS:
        return View(prefix, ITEMS, items=tuple(draw(st.lists(st.tuples(_text, _digest),
                                                             max_size=5))))
    return View(prefix, EMPTY)


@st.composite
def _updates(draw: st.DrawFn) -> UpdateChunk:
    chunk = draw(st.binary(min_size=1, max_size=200))
    offset = draw(st.integers(0, 2**20))
    total = draw(st.integers(offset + len(chunk), 2**32 - 1))
    return UpdateChunk(draw(_text), draw(st.integers(0, 2**32 - 1)), total, offset, chunk,
                       draw(st.booleans()))


messages = st.one_of(
    st.builds(Hello, st.just(wire.PROTOCOL_VERSION), _text, _text, _text,
              st.binary(min_size=16, max_size=16), st.integers(0, 255),
              st.binary(min_size=16, max_size=16), st.binary(min_size=32, max_size=32)),
    st.builds(Auth, st.binary(min_size=64, max_size=64),
              st.just(b"") | st.binary(min_size=32, max_size=32)),
    st.builds(Peers, st.lists(st.tuples(st.binary(min_size=32, max_size=32), _text, _text),
                              max_size=5).map(tuple)),
    st.builds(Root, st.just(False), st.binary(min_size=16, max_size=16)),
    st.just(Root(True)),
    st.builds(Views, st.lists(_views(), max_size=4).map(tuple)),
    st.builds(Sync1, _text, st.booleans(), st.binary(max_size=100)),
    _updates(),
    st.builds(Flow, st.integers(0, 2**64 - 1)),
    st.builds(Bye, st.text(max_size=100)),
    st.just(wire.Prune()),
    st.binary(min_size=32, max_size=32).map(wire.Prune),
    st.builds(wire.Graft, st.lists(st.binary(min_size=16, max_size=16), max_size=5).map(tuple)),
    st.builds(wire.IHave, st.lists(st.binary(min_size=16, max_size=16), max_size=5).map(tuple)),
)


@given(messages)
def test_round_trip(msg: wire.Message) -> None:
    frame = encode(msg)
    assert len(frame) <= MAX_FRAME
    assert decode(frame) == msg


# ---- garbage in ⇒ RemoteProtocolError, never anything else -----------------------------------

def _decode_or_protocol_error(frame: bytes) -> None:
    try:
        msg = decode(frame)
    except RemoteProtocolError:
        return
    # What decodes must be exactly one valid message: encoding it gives the same bytes back
    # (a BYE reason is cut to 1000 characters on the way out, so compare the cut form).
    if isinstance(msg, Bye) and len(msg.reason) > 1000:
        msg = Bye(msg.reason)
        assert decode(encode(msg)) == Bye(msg.reason[:1000])
        return
    assert encode(msg) == frame


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes(frame: bytes) -> None:
    _decode_or_protocol_error(frame)


@settings(max_examples=500)
@given(st.integers(1, max(wire.NAMES)), st.binary(max_size=300))
def test_random_bodies_under_a_valid_header(kind: int, body: bytes) -> None:
    _decode_or_protocol_error(bytes([wire.WIRE_VERSION, kind]) + body)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VECTORS), st.data())
def test_mutated_vectors(case: dict, data: st.DataObject) -> None:
    frame = bytearray(bytes.fromhex(case["hex"]))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        pos = data.draw(st.integers(0, max(len(frame) - 1, 0)))
        if op == "flip" and frame:
            frame[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            frame.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and frame:
            del frame[pos]
        elif op == "set" and frame:
            frame[pos] = data.draw(st.sampled_from([0, 1, 2, 0x7F, 0x80, 0xFF]))
    _decode_or_protocol_error(bytes(frame))


@pytest.mark.parametrize("frame", [
    b"", b"\x01", "text frame", 12345, None,
    bytes([2, wire.ROOT, 0]) + b"\x00" * 32,  # wire version 2
    bytes([0, wire.ROOT, 0]) + b"\x00" * 32,
    bytes([1, 0]), bytes([1, 14]), bytes([1, 255]),  # unknown types
    bytes([1, wire.ROOT, 2]) + b"\x00" * 32,  # flag byte not 0/1
    bytes([1, wire.SYNC1]) + b"\x00\x02\xff\xfe" + b"\x00" + b"\x00\x00\x00\x00",  # not UTF-8
    bytes([1, wire.UPDATE]) + b"\x00\x01c" + (1).to_bytes(4, "big") + (10).to_bytes(4, "big")
    + (8).to_bytes(4, "big")
    + (4).to_bytes(4, "big") + b"abcd",  # chunk past its total
    bytes([1, wire.UPDATE]) + b"\x00\x01c" + (1).to_bytes(4, "big") + (10).to_bytes(4, "big")
    + (0).to_bytes(4, "big")
    + (0).to_bytes(4, "big"),  # empty chunk of a non-empty update
    bytes([1, wire.VIEWS]) + b"\x00\x01" + b"\x41" + b"\x00" * 65 + b"\x00",  # depth 65
    bytes([1, wire.VIEWS]) + b"\x00\x01" + b"\x01\x10\x00",  # prefix value 16
    bytes([1, wire.VIEWS]) + b"\x00\x01" + b"\x00\x03",  # view kind 3
    bytes([1, wire.BYE]) + b"\xff\xff" + b"x" * 10,  # string length past the end
    bytes([1, wire.SYNC1]) + b"\x00\x01c\x00" + b"\xff\xff\xff\xff",  # blob length past the end
], ids=lambda f: repr(f)[:40])
def test_named_malformed_frames(frame: object) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(frame)  # type: ignore[arg-type]


def test_wrong_version_names_both_versions() -> None:
    frame = bytearray(encode(Root(False, b"\x00" * 16)))
    frame[0] = 7
    with pytest.raises(RemoteProtocolError, match="wire version 7"):
        decode(bytes(frame))


# ---- size limits ------------------------------------------------------------------------------

def test_frames_over_max_frame_are_refused() -> None:
    biggest = encode(Bye(""))
    assert len(biggest) < MAX_FRAME
    # A syntactically valid BYE padded to exactly MAX_FRAME decodes; one byte more is refused.
    reason_len = MAX_FRAME - 4
    ok = bytes([1, wire.BYE]) + reason_len.to_bytes(2, "big") + b"r" * reason_len
    assert len(ok) == MAX_FRAME
    assert decode(ok) == Bye("r" * reason_len)
    too_big = bytes([1, wire.BYE]) + b"\x00" * (MAX_FRAME - 1)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decode(too_big)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decode(bytearray(MAX_FRAME + 1))
    # Only an UPDATE may be larger (to peers that said they take it), up to LARGE_FRAME.
    with pytest.raises(RemoteProtocolError, match=f"exceeds {LARGE_FRAME}"):
        decode(bytes([1, wire.UPDATE]) + b"\x00" * (LARGE_FRAME - 1))


def test_encode_refuses_to_build_an_oversized_frame() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode(UpdateChunk("c", 1, LARGE_FRAME, 0, b"x" * LARGE_FRAME))
    with pytest.raises(ValueError, match=f"exceeds {MAX_FRAME}"):
        encode(Sync1("c", False, b"x" * MAX_FRAME))
    with pytest.raises(ValueError, match="string too long"):
        encode(Sync1("c" * 70_000, False, b""))


@pytest.mark.parametrize(("chunk", "limit"), [(CHUNK, MAX_FRAME), (LARGE_CHUNK, LARGE_FRAME)])
def test_a_full_chunk_fits_in_a_frame(chunk: int, limit: int) -> None:
    longest_context = "c" * 128
    frame = encode(UpdateChunk(longest_context, 2**32 - 1, 2**32 - 1, 2**32 - 1 - chunk,
                               b"x" * chunk))
    assert len(frame) <= limit
    assert decode(frame).chunk == b"x" * chunk  # type: ignore[union-attr]


def test_bye_reason_is_truncated_not_refused() -> None:
    assert decode(encode(Bye("why " * 1000))) == Bye(("why " * 1000)[:1000])


# ---- boundaries (from the mutation run: each of these survived a changed comparison) ----------

def test_a_string_of_65535_bytes_has_a_length_prefix_and_65536_is_refused() -> None:
    assert wire._s("x" * 0xFFFF)[:2] == b"\xff\xff"
    with pytest.raises(ValueError, match="string too long for the wire"):
        wire._s("x" * 0x10000)


def test_a_state_vector_of_exactly_255_bytes_travels_in_a_view_and_256_does_not() -> None:
    kept, dropped = b"\x01" * wire.MAX_SV_IN_VIEW, b"\x01" * (wire.MAX_SV_IN_VIEW + 1)
    for sv, expected in ((kept, (kept,)), (dropped, ())):
        view = View((1,), wire.ITEMS, items=(("ctx", bytes(16)),), states=(sv,))
        msg = decode(encode(Views((view,))))
        assert isinstance(msg, Views) and msg.views[0].states == expected


def test_a_peers_frame_holds_exactly_max_peers_per_frame() -> None:
    full = wire.Peers(tuple((bytes([i]) * 32, f"n{i}", f"ws://h:{i}")
                            for i in range(wire.MAX_PEERS_PER_FRAME)))
    assert decode(encode(full)) == full
    with pytest.raises(ValueError, match="at most"):
        encode(wire.Peers(full.peers + ((bytes(32), "one", "ws://h:1"),)))


@pytest.mark.parametrize("protocol", [0, 6, wire.PROTOCOL_VERSION + 1, 0xFFFF])
def test_a_hello_of_another_protocol_is_refused_by_name_whatever_follows(protocol: int) -> None:
    """Whatever layout another version's HELLO has (protocol 6 had no origin), the refusal
    names both versions."""
    for rest in (b"", b"\x00" * 3, b"\xff" * 200):
        frame = bytes([wire.WIRE_VERSION, wire.HELLO]) + protocol.to_bytes(2, "big") + rest
        with pytest.raises(ProtocolMismatch, match=f"peer speaks protocol {protocol}, we "
                           f"speak {wire.PROTOCOL_VERSION}"):
            decode(frame)


@pytest.mark.parametrize(("signature", "mac"), [(b"\x00" * 63, b""), (b"\x00" * 64, b"m")])
def test_auth_fields_have_their_sizes(signature: bytes, mac: bytes) -> None:
    with pytest.raises(ValueError):
        encode(Auth(signature, mac))
    frame = bytes([wire.WIRE_VERSION, wire.AUTH]) + b"\x00" * 64 + bytes([len(mac)]) + mac
    if len(mac) not in (0, 32):
        with pytest.raises(RemoteProtocolError, match="MAC of 1 bytes"):
            decode(frame)


def test_a_frame_of_exactly_max_frame_bytes_is_encoded() -> None:
    overhead = len(encode(Sync1("c", False, b"")))
    exact = Sync1("c", False, b"\x00" * (MAX_FRAME - overhead))
    assert len(encode(exact)) == MAX_FRAME and decode(encode(exact)) == exact
    with pytest.raises(ValueError, match="exceeds"):
        encode(Sync1("c", False, b"\x00" * (MAX_FRAME - overhead + 1)))
