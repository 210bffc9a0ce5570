"""Tests for the Yjs v1 update reader and the grow-only gate (p2p_ledger.yupdate)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from p2p_ledger.core import yjs
from p2p_ledger.core.errors import ForbiddenUpdate, LedgerError, RemoteProtocolError
from p2p_ledger.core.yjs import (
    UNDEFINED,
    InsertedItem,
    UpdateInfo,
    appended_values,
    clock_spans,
    decode_state_vector,
    encode_appended,
    encode_state_vector,
    gate_ranges,
    gate_update,
    parse_update,
    squash,
)

NAME = "entries"
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- helpers -----------------------------------------------------------------------------------


def new_doc(client_id: int) -> tuple[Doc[Any], Array[Any]]:
    doc: Doc[Any] = Doc(client_id=client_id)
    return doc, doc.get(NAME, type=Array)


def values_of(array: Array[Any]) -> list[bytes]:
    # pycrdt reads buffers back as bytearray
    return [bytes(v) for v in array]


def fresh_apply(*updates: bytes) -> list[bytes]:
    doc, array = new_doc(999_999)
    for u in updates:
        doc.apply_update(u)
    return values_of(array)


def gated_apply(doc: Doc[Any], update: bytes) -> list[bytes]:
    """What the ledger does: gate first, apply only if the gate passes."""
    values = appended_values(update, NAME)
    doc.apply_update(update)
    return values


def diff(doc: Doc[Any], action: Callable[[], object]) -> bytes:
    before = doc.get_state()
    action()
    return doc.get_update(before)


def rand_values(rng: random.Random, n: int, size: int = 100) -> list[bytes]:
    return [rng.randbytes(size) for _ in range(n)]


# ---- a tiny v1 encoder for crafted updates -----------------------------------------------------


def vu(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return vu(len(b)) + b


def any_bytes(values: Iterable[bytes]) -> bytes:
    vals = list(values)
    return vu(len(vals)) + b"".join(b"\x74" + vstr(v) for v in vals)


def root_item(ref: int, content: bytes, name: str = NAME, sub: str | None = None) -> bytes:
    info = ref | (0x20 if sub is not None else 0)
    return bytes([info]) + vu(1) + vstr(name) + (vstr(sub) if sub is not None else b"") + content


def origin_item(ref: int, content: bytes, origin: tuple[int, int], flags: int = 0) -> bytes:
    return bytes([ref | 0x80 | flags]) + vu(origin[0]) + vu(origin[1]) + content


def build(
    sections: Sequence[tuple[int, int, Sequence[bytes]]],
    deletes: Sequence[tuple[int, Sequence[tuple[int, int]]]] = (),
) -> bytes:
    out = vu(len(sections))
    for client, clock, structs in sections:
        out += vu(len(structs)) + vu(client) + vu(clock) + b"".join(structs)
    out += vu(len(deletes))
    for client, ranges in deletes:
        out += vu(client) + vu(len(ranges)) + b"".join(vu(c) + vu(n) for c, n in ranges)
    return out


def test_crafted_encoder_matches_pycrdt() -> None:
    doc, array = new_doc(7)
    with doc.transaction():
        array.extend([b"hello", b"x"])
    assert doc.get_update() == build([(7, 0, [root_item(8, any_bytes([b"hello", b"x"]))])])


@pytest.mark.parametrize("chunks", [[1], [100], [3, 50, 1, 46], [128, 128, 1], [1, 1, 1, 1]])
def test_own_appends_encode_as_pycrdt_writes_them(chunks: list[int]) -> None:
    """An append written without a Doc is, byte for byte, what pycrdt writes for the same
    transaction (the update since the state before it), and a Doc given them holds the values
    in order."""
    values = [bytes([i % 256]) * (i % 7 + 1) for i in range(sum(chunks))]
    doc, array = new_doc(2**53 - 1)
    other, other_array = new_doc(5)
    pos = 0
    for size in chunks:
        before = doc.get_state()
        with doc.transaction():
            array.extend(values[pos : pos + size])
        ours = encode_appended(2**53 - 1, pos, values[pos : pos + size], NAME)
        assert ours == doc.get_update(before)
        other.apply_update(ours)
        pos += size
    assert [bytes(v) for v in other_array] == values
    assert decode_state_vector(other.get_state()) == {2**53 - 1: pos}


def test_own_appends_after_other_clients_items_keep_every_value() -> None:
    """After a peer's items, our next item names our previous one as origin (not the array's
    last item, as pycrdt would): the Doc holds every value all the same."""
    doc, array = new_doc(9)
    with doc.transaction():
        array.extend([b"peer-1", b"peer-2"])
    doc.apply_update(encode_appended(3, 0, [b"a", b"b"], NAME))
    with doc.transaction():
        array.extend([b"peer-3"])
    doc.apply_update(encode_appended(3, 2, [b"c"], NAME))
    assert sorted(bytes(v) for v in array) == sorted(
        [b"peer-1", b"peer-2", b"peer-3", b"a", b"b", b"c"])
    gate_update(doc.get_update(), {}, NAME)  # (the whole Doc passes the gate)


# ---- how pycrdt encodes bytes ------------------------------------------------------------------


def test_pycrdt_encodes_bytes_as_content_any_buffers() -> None:
    doc, array = new_doc(7)
    array.append(b"hello")
    update = doc.get_update()
    # 1 client, 1 struct, client 7, clock 0, info 8 (ContentAny, no origin), parent "entries",
    # 1 value, tag 116 (Uint8Array) + varuint8array, empty delete set
    expected = "01010700080107" + b"entries".hex() + "017405" + b"hello".hex() + "00"
    assert update.hex() == expected
    info = parse_update(update)
    assert info == UpdateInfo(
        items=(InsertedItem(7, 0, 1, NAME, None, 8, (b"hello",), None, None, 8),),
        deletes=(),
        gc_ranges=(),
    )
    # and reads them back as bytearray
    assert type(array[0]) is bytearray


def test_content_binary_is_admitted_as_bytes() -> None:
    # What JS yjs writes for a Uint8Array in an Array; pycrdt reads it back like an Any buffer.
    update = build([(5, 0, [root_item(3, vstr(b"hi")), origin_item(3, vstr(b"yo"), (5, 0))])])
    assert appended_values(update) == [b"hi", b"yo"]
    assert all(type(v) is bytes for v in appended_values(update))
    doc, array = new_doc(1)
    gated_apply(doc, update)
    assert values_of(array) == [b"hi", b"yo"]


# ---- round trips with real pycrdt docs ---------------------------------------------------------


def test_single_appends_and_incremental_diffs() -> None:
    rng = random.Random(1)
    doc, array = new_doc(11)
    target, target_array = new_doc(12)
    appended: list[bytes] = []
    for _ in range(20):
        value = rng.randbytes(rng.randrange(0, 300))
        update = diff(doc, lambda v=value: array.append(v))  # type: ignore[misc]
        assert gated_apply(target, update) == [value]
        appended.append(value)
        assert values_of(target_array) == appended
    assert appended_values(doc.get_update()) == appended
    assert fresh_apply(doc.get_update()) == appended


def test_batched_transactions() -> None:
    rng = random.Random(2)
    doc, array = new_doc(21)
    appended: list[bytes] = []
    diffs: list[bytes] = []
    for batch in range(5):
        values = rand_values(rng, 10 + batch)

        def run(values: list[bytes] = values) -> None:
            with doc.transaction():
                for v in values:
                    array.append(v)

        update = diff(doc, run)
        assert appended_values(update) == values
        appended += values
        diffs.append(update)
    assert appended_values(doc.get_update()) == appended
    assert fresh_apply(doc.get_update()) == appended
    assert fresh_apply(*diffs) == appended
    # a diff against a partial state vector holds exactly what is missing
    partial, _ = new_doc(22)
    partial.apply_update(diffs[0])
    rest = doc.get_update(partial.get_state())
    assert appended_values(rest) == appended[len(appended_values(diffs[0])) :]


def test_empty_update_and_empty_diff() -> None:
    doc, array = new_doc(1)
    assert appended_values(doc.get_update()) == []
    array.append(b"a")
    assert appended_values(doc.get_update(doc.get_state())) == []


def test_concurrent_docs_merged() -> None:
    rng = random.Random(3)
    docs = [new_doc(cid) for cid in (101, 2**40 + 7, 5, 2**53 - 1)]
    inserted: list[bytes] = []
    for _round in range(4):
        for doc, array in docs:  # concurrent appends, no sync in between
            vals = rand_values(rng, rng.randrange(1, 4), size=rng.randrange(1, 120))
            with doc.transaction():
                array.extend(vals)
            inserted += vals
        # full mesh sync, every update through the gate
        for src, _ in docs:
            for dst, _ in docs:
                if src is not dst:
                    gated_apply(dst, src.get_update(dst.get_state()))
    finals = [values_of(a) for _, a in docs]
    assert all(f == finals[0] for f in finals)
    assert Counter(finals[0]) == Counter(inserted)
    full = docs[0][0].get_update()
    assert Counter(appended_values(full)) == Counter(inserted)
    assert fresh_apply(full) == finals[0]


def test_inserts_in_the_middle_are_admitted() -> None:
    # not a delete or rewrite: CRDT insert positions are the peers' business
    doc, array = new_doc(31)
    array.extend([b"a", b"c"])
    update = diff(doc, lambda: array.insert(1, b"b"))
    info = parse_update(update)
    assert info.items[0].parent is None and info.items[0].origin == (31, 0)
    assert info.items[0].right_origin == (31, 1)
    assert appended_values(update) == [b"b"]


@pytest.mark.skipif(not hasattr(pycrdt, "merge_updates"), reason="no pycrdt.merge_updates")
def test_merge_updates_and_skip_structs() -> None:
    rng = random.Random(4)
    doc, array = new_doc(41)
    other, other_array = new_doc(42)
    diffs: list[bytes] = []
    values: list[list[bytes]] = []
    for i in range(5):
        vals = rand_values(rng, 3)
        values.append(vals)
        target, target_array = (doc, array) if i % 2 == 0 else (other, other_array)
        diffs.append(diff(target, lambda a=target_array, v=vals: a.extend(v)))  # type: ignore[misc]
    merged = pycrdt.merge_updates(*diffs)
    assert Counter(appended_values(merged)) == Counter(v for vs in values for v in vs)
    assert Counter(fresh_apply(merged)) == Counter(fresh_apply(*diffs))
    # a hole between two diffs of one client becomes a Skip struct, which the gate allows
    d1 = diff(doc, lambda: array.append(b"first"))
    diff(doc, lambda: array.append(b"gap"))
    d3 = diff(doc, lambda: array.append(b"third"))
    holed = pycrdt.merge_updates(d1, d3)
    info = parse_update(holed)
    clocks = [it.clock for it in info.items]
    assert clocks[1] - clocks[0] == 2 and not info.gc_ranges
    assert bytes([10]) in holed
    assert appended_values(holed) == [b"first", b"third"]


def test_gate_names_clients_whose_structs_leave_a_hole() -> None:
    doc, array = new_doc(5)
    d1 = diff(doc, lambda: array.append(b"first"))
    diff(doc, lambda: array.append(b"gap"))
    d3 = diff(doc, lambda: array.append(b"third"))
    assert gate_update(d1, {}) == ([b"first"], set())
    assert gate_update(d3, {}) == ([b"third"], {5})  # starts at clock 2, nothing here
    assert gate_update(d3, {5: 1}) == ([b"third"], {5})
    assert gate_update(d3, {5: 2}) == ([b"third"], set())
    assert gate_update(d3, {5: 9}) == ([b"third"], set())  # already known: no hole
    holed = pycrdt.merge_updates(d1, d3)  # a Skip inside the section
    assert gate_update(holed, {}) == ([b"first", b"third"], {5})
    assert gate_update(holed, {5: 2})[1] == set()
    assert gate_update(holed, {7: 99})[1] == {5}


def test_gate_ranges_give_each_clients_clock_span_as_pycrdt_counts_it() -> None:
    rng = random.Random(6)
    doc, array = new_doc(5)
    other, other_array = new_doc(9)
    diffs = []
    for i in range(6):
        target, target_array = (doc, array) if i % 2 == 0 else (other, other_array)
        vals = rand_values(rng, rng.randint(1, 4))
        diffs.append(diff(target, lambda a=target_array, v=vals: a.extend(v)))  # type: ignore[misc]
    merged = pycrdt.merge_updates(*diffs)
    values, holes, ranges = gate_ranges(merged, {})
    assert (values, holes) == gate_update(merged, {})
    fresh = Doc()
    fresh.apply_update(merged)
    ends = decode_state_vector(fresh.get_state())  # what a Doc holding all of it reaches
    assert {c: end for c, (_, end) in ranges.items()} == ends
    assert all(first == 0 for first, _ in ranges.values())
    d_late = diffs[-2]  # doc's third diff: starts where its second ended
    _, holes, ranges = gate_ranges(d_late, decode_state_vector(doc.get_state()))
    first, end = ranges[5]
    assert 0 < first < end == decode_state_vector(doc.get_state())[5] and not holes
    assert gate_ranges(b"\x00\x00", {}) == ([], set(), {})


def test_state_vectors_round_trip_and_garbage_is_refused() -> None:
    doc, array = new_doc(1 << 40)
    array.append(b"x")
    other, other_array = new_doc(3)
    other.apply_update(doc.get_update())
    other_array.extend([b"y", b"z"])
    state = decode_state_vector(other.get_state())
    assert state == {1 << 40: 1, 3: 2}
    assert decode_state_vector(encode_state_vector(state)) == state
    assert pycrdt.get_update(other.get_update(), encode_state_vector(state)) == b"\x00\x00"
    assert decode_state_vector(b"\x00") == {}
    for bad in (b"", b"\x01", b"\x01\x05", b"\x05\x01\x01", b"\x01\x01\x01\x00"):
        with pytest.raises(RemoteProtocolError):
            decode_state_vector(bad)


def test_state_vectors_decode_as_pycrdt_writes_them() -> None:
    rng = random.Random(5)
    docs = [Doc(client_id=c) for c in (1, 300, 2**40, 2**53 - 1)]
    merged: Doc[Any] = Doc(client_id=9)
    assert decode_state_vector(merged.get_state()) == {}
    for doc in docs:
        arr = doc.get(NAME, type=Array)
        for _ in range(rng.randrange(1, 5)):
            arr.extend(rand_values(rng, rng.randrange(1, 200), 3))
        merged.apply_update(doc.get_update())
    expected = {doc.client_id: len(doc.get(NAME, type=Array)) for doc in docs}
    assert decode_state_vector(merged.get_state()) == expected


@pytest.mark.parametrize("sv, why", [
    (b"", "truncated"), (b"\x01\x05", "cannot fit"), (b"\x01\x05\x80", "truncated"),
    (b"\x00\x00", "trailing"), (b"\x01\x05\x03\x00", "trailing"),
    (bytes.fromhex("8080808003"), "cannot fit"),  # 2^29 entries claimed in 5 bytes
    (b"\x01\x05" + b"\xff" * 5 + b"\x7f", "too long"),  # a clock wider than u32
])
def test_malformed_state_vectors_are_refused(sv: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        decode_state_vector(sv)


def test_parsed_clocks_match_pycrdt_state_vector() -> None:
    # the clock bookkeeping (lengths per content kind, UTF-16 for strings) agrees with yrs
    doc: Doc[Any] = Doc(client_id=77)
    text = doc.get("t", type=Text)
    amap = doc.get("m", type=Map)
    arr = doc.get("a", type=Array)
    text += "héllo 😀 wörld"
    text.insert(3, "𝄞x", attrs={"bold": True})
    amap["k"] = "v"
    amap["n"] = {"deep": [1, 2, None]}
    arr.extend([1, "two", 3.5, None, True, b"\x00", [1], {"a": "b"}])
    arr.append(Map({"x": 1}))
    arr.append(Text("nested"))
    update = doc.get_update()
    info = parse_update(update)
    ends: dict[int, int] = {}
    for item in info.items:
        ends[item.client] = max(ends.get(item.client, 0), item.clock + item.length)
    for client, clock, length in info.gc_ranges:
        ends[client] = max(ends.get(client, 0), clock + length)
    assert ends == decode_state_vector(doc.get_state())
    decoded = [v for it in info.items if it.content_ref == 8 for v in it.values]
    assert 3.5 in decoded and "two" in decoded and {"a": "b"} in decoded and [1.0] in decoded


# ---- the gate refuses, before anything is applied ----------------------------------------------


def assert_refused_before_apply(update: bytes, exc: type[Exception] = ForbiddenUpdate) -> None:
    target, target_array = new_doc(5000)
    target_array.extend([b"keep-1", b"keep-2"])
    before_state = target.get_update()
    with pytest.raises(exc):
        gated_apply(target, update)
    assert target.get_update() == before_state
    assert values_of(target_array) == [b"keep-1", b"keep-2"]


def test_deleting_update_is_refused_and_target_unchanged() -> None:
    doc, array = new_doc(51)
    array.extend([b"a", b"b", b"c"])
    target, target_array = new_doc(52)
    gated_apply(target, doc.get_update())
    before_state = target.get_update()

    def delete() -> None:
        del array[1]

    deleting = diff(doc, delete)
    assert parse_update(deleting).deletes == ((51, 1, 1),)
    with pytest.raises(ForbiddenUpdate, match="delete"):
        gated_apply(target, deleting)
    assert target.get_update() == before_state
    assert values_of(target_array) == [b"a", b"b", b"c"]
    # the doc's full state after a delete carries both a delete set and Deleted content
    with pytest.raises(ForbiddenUpdate):
        appended_values(doc.get_update())
    # sanity: without the gate pycrdt would have applied the delete
    target.apply_update(deleting)
    assert values_of(target_array) == [b"a", b"c"]


def test_gc_structs_are_refused() -> None:
    doc, array = new_doc(53)
    array.append(Array([b"x", b"y"]))
    del array[0]  # children of a deleted nested type become GC structs
    info = parse_update(doc.get_update())
    assert info.gc_ranges == ((53, 1, 2),)
    assert_refused_before_apply(doc.get_update())
    # a GC struct alone, without a delete set
    assert_refused_before_apply(build([(53, 0, [bytes([0]) + vu(3)])]))


def _map_update() -> bytes:
    doc: Doc[Any] = Doc(client_id=61)
    doc.get("meta", type=Map)["k"] = b"v"
    return doc.get_update()


def _text_update() -> bytes:
    doc: Doc[Any] = Doc(client_id=62)
    doc.get("notes", type=Text).insert(0, "hi")
    return doc.get_update()


def _other_array_update() -> bytes:
    doc: Doc[Any] = Doc(client_id=63)
    doc.get("entries2", type=Array).append(b"v")
    return doc.get_update()


def _nested_update() -> bytes:
    doc, array = new_doc(64)
    array.append(Array([b"inner"]))
    return doc.get_update()


def _nested_map_update() -> bytes:
    doc, array = new_doc(65)
    array.append(Map({"k": b"v"}))
    return doc.get_update()


def _nested_incremental_update() -> bytes:
    doc, array = new_doc(66)
    array.append(Array())
    inner = array[0]
    return diff(doc, lambda: inner.append(b"into-nested"))


def _string_value_update() -> bytes:
    doc, array = new_doc(67)
    array.append(b"ok")
    array.append("a string")
    return doc.get_update()


@pytest.mark.parametrize(
    "make",
    [
        _map_update,
        _text_update,
        _other_array_update,
        _nested_update,
        _nested_map_update,
        _nested_incremental_update,
        _string_value_update,
    ],
)
def test_forbidden_pycrdt_updates(make: Callable[[], bytes]) -> None:
    update = make()
    parse_update(update)  # well formed
    assert_refused_before_apply(update)


@pytest.mark.parametrize("value", [1, 2.5, None, True, False, "s", [b"x"], {"k": b"v"}])
def test_non_bytes_any_values_are_refused(value: object) -> None:
    doc, array = new_doc(68)
    with doc.transaction():
        array.append(b"fine")
        array.append(value)
    assert_refused_before_apply(doc.get_update())


def test_map_entry_with_origin_but_no_delete_set_is_refused() -> None:
    # The second write of a map key has an origin (the first write) and keeps the parentSub flag
    # (0x20) without the key itself; strip its delete set and only the flag tells.
    doc: Doc[Any] = Doc(client_id=69)
    meta = doc.get("meta", type=Map)
    meta["k"] = b"1"
    second = diff(doc, lambda: meta.__setitem__("k", b"2"))
    info = parse_update(second)
    assert info.deletes and info.items[0].origin == (69, 0) and info.items[0].parent is None
    assert info.items[0].info & 0x20
    crafted = build([(69, 1, [origin_item(8, any_bytes([b"2"]), (69, 0), flags=0x20)])])
    assert_refused_before_apply(crafted)


@pytest.mark.parametrize(
    "struct",
    [
        root_item(8, any_bytes([b"v"]), sub="key"),  # map entry in a root
        bytes([8]) + vu(0) + vu(1) + vu(0) + any_bytes([b"v"]),  # explicit parent item id
        root_item(4, vstr("text")),  # ContentString
        root_item(1, vu(2)),  # ContentDeleted
        root_item(2, vu(1) + vstr('"json"')),  # ContentJSON
        root_item(5, vstr("{}")),  # ContentEmbed
        root_item(6, vstr("bold") + vstr("true")),  # ContentFormat
        root_item(7, bytes([0])),  # ContentType (nested Array)
        root_item(9, vstr("guid") + b"\x76\x00"),  # ContentDoc (subdocument)
        root_item(8, vu(2) + b"\x74" + vstr(b"ok") + b"\x7d\x01"),  # bytes, then an int
    ],
)
def test_crafted_forbidden_structs(struct: bytes) -> None:
    update = build([(70, 0, [struct])])
    parse_update(update)
    assert_refused_before_apply(update)


def test_forbidden_anywhere_refuses_everything() -> None:
    good = root_item(8, any_bytes([b"ok"]))
    bad = origin_item(4, vstr("s"), (71, 0))
    assert_refused_before_apply(build([(71, 0, [good, bad])]))
    assert_refused_before_apply(build([(71, 0, [good])], deletes=[(9, [(0, 1)])]))


def test_json_content_divergence_is_refused_either_way() -> None:
    # yrs (pycrdt 0.14.13) reads n + 1 strings for ContentJSON of count n; yjs (and this reader)
    # read n. Both shapes are refused by the gate, so the divergence cannot be exploited.
    yjs_shape = build([(70, 0, [root_item(2, vu(1) + vstr('"a"'))])])
    yrs_shape = build([(70, 0, [root_item(2, vu(1) + vstr('"a"') + vstr('"b"'))])])
    assert parse_update(yjs_shape).items[0].values == ("a",)
    with pytest.raises(ForbiddenUpdate):
        appended_values(yjs_shape)
    with pytest.raises(RemoteProtocolError):
        appended_values(yrs_shape)
    doc, array = new_doc(1)
    doc.apply_update(yrs_shape)  # pycrdt accepts the n + 1 shape ...
    assert list(array) == ['"a"', '"b"']
    with pytest.raises(ValueError):
        new_doc(2)[0].apply_update(yjs_shape)  # ... and refuses the yjs one


def test_values_of_all_any_kinds_decode() -> None:
    anys = (
        b"\x7f"  # undefined
        + b"\x7e"  # null
        + b"\x7d\x41"  # varint -1
        + b"\x7d\x80\x01"  # varint 64
        + b"\x7c\x3f\x80\x00\x00"  # float32 1.0
        + b"\x7b\x40\x09\x21\xfb\x54\x44\x2d\x18"  # float64 pi
        + b"\x7a\xff\xff\xff\xff\xff\xff\xff\xfe"  # bigint -2
        + b"\x79\x78"  # false, true
        + b"\x77\x02hi"  # string
        + b"\x76\x01\x01a\x75\x01\x74\x01z"  # {"a": [b"z"]}
    )
    update = build([(72, 0, [root_item(8, vu(11) + anys)])])
    (item,) = parse_update(update).items
    assert item.values == (
        UNDEFINED,
        None,
        -1,
        64,
        1.0,
        3.141592653589793,
        -2,
        False,
        True,
        "hi",
        {"a": [b"z"]},
    )
    assert item.length == 11


# ---- malformed input ---------------------------------------------------------------------------


def _sample_updates() -> list[bytes]:
    rng = random.Random(9)
    out: list[bytes] = []
    doc, array = new_doc(81)
    other, other_array = new_doc(2**33 + 5)
    for i in range(4):
        out.append(diff(doc, lambda: array.extend(rand_values(rng, 3, 20))))
        other_array.append(rng.randbytes(200))
        if i == 2:
            gated_apply(other, doc.get_update(other.get_state()))
            out.append(diff(other, lambda: other_array.insert(1, b"mid")))
    out.append(doc.get_update())
    out.append(other.get_update())
    out.append(_map_update())
    out.append(_text_update())
    out.append(_nested_update())
    return out


SAMPLES = _sample_updates()
BASE_STATE = SAMPLES[-5]  # full state of the doc of client 81


def test_every_truncation_is_malformed() -> None:
    for update in SAMPLES:
        for cut in range(len(update)):
            with pytest.raises(RemoteProtocolError) as err:
                parse_update(update[:cut])
            assert type(err.value) is RemoteProtocolError


def test_trailing_bytes_are_malformed() -> None:
    update = SAMPLES[0]
    for tail in (b"\x00", b"\x01", b"garbage"):
        with pytest.raises(RemoteProtocolError, match="trailing"):
            appended_values(update + tail)
    # pycrdt itself would accept them, so the gate is stricter than the consumer here
    doc, _ = new_doc(1)
    doc.apply_update(update + b"\x00")


def _ok_any(v: bytes = b"v") -> bytes:
    return root_item(8, any_bytes([v]))


BIG = vu(2**32 - 1)


@pytest.mark.parametrize(
    "update, message",
    [
        pytest.param(b"", "truncated", id="empty"),
        pytest.param(b"\x00", "truncated", id="no-delete-set"),
        pytest.param(b"\xff" * 11, "varuint too long", id="varuint-too-long"),
        pytest.param(vu(2**32) + b"\x00", "varuint out of range", id="u32-overflow"),
        pytest.param(
            b"\x80\x80\x80\x80\x80\x01\x00",
            "varuint too long", id="u32-that-yrs-would-wrap",
        ),
        pytest.param(BIG + b"\x00", "client count exceeds the update", id="absurd-client-count"),
        pytest.param(
            b"\x01" + BIG + b"\x01\x00",
            "struct count exceeds the update", id="absurd-struct-count",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01\x74" + BIG + b"ab")])]),
            "buffer runs past the end", id="absurd-buffer",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, BIG + b"\x74\x00")])]),
            "any count exceeds the update", id="absurd-any-count",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01\x75" + BIG)])]),
            "any collection length exceeds the update", id="absurd-any-array",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01\x76" + BIG)])]),
            "any collection length exceeds the update", id="absurd-any-object",
        ),
        pytest.param(
            build([(1, 0, [root_item(2, BIG + b"\x00")])]),
            "JSON count exceeds the update", id="absurd-json-count",
        ),
        pytest.param(
            build([(1, 0, [root_item(4, BIG + b"x")])]),
            "byte string runs past the end", id="absurd-string",
        ),
        pytest.param(
            b"\x00" + BIG,
            "delete set client count exceeds the update", id="absurd-delete-set",
        ),
        pytest.param(
            b"\x00\x01\x01" + BIG + b"\x00\x01",
            "delete range count exceeds the update", id="absurd-delete-ranges",
        ),
        pytest.param(b"\x00\x01\x01\x00", "empty delete set entry", id="empty-delete-ranges"),
        pytest.param(
            build([(1, 0, [bytes([0x8A]) + b"\x01"])]),
            "bad struct info 0x8a", id="skip-with-flags",
        ),
        pytest.param(
            build([(1, 0, [bytes([0x80]) + b"\x01\x00\x01"])]),
            "bad struct info 0x80", id="gc-with-flags",
        ),
        pytest.param(
            build([(1, 0, [bytes([11]) + b"\x00"])]),
            "bad struct info 0x0b", id="content-ref-11-move",
        ),
        pytest.param(
            build([(1, 0, [root_item(24, any_bytes([b"v"]))])]),
            "bad struct info 0x18", id="ref-24-yrs-masks",
        ),
        pytest.param(
            build([(1, 0, [bytes([8, 2]) + vstr(NAME) + any_bytes([b"v"])])]),
            "bad parent info 2", id="pinfo2",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01\x73")])]),
            "unknown any tag 115", id="unknown-any-tag",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01\x77\x02\xff\xfe")])]),
            "string is not valid UTF-8", id="bad-utf8",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01\x7b\x00")])]),
            "truncated float64", id="short-float64",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01\x7d" + b"\xff" * 12)])]),
            "varint too long", id="long-varint",
        ),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x00")])]),
            "zero-length item", id="zero-length-any",
        ),
        pytest.param(
            build([(1, 0, [root_item(4, vstr(""))])]),
            "zero-length item", id="zero-length-string",
        ),
        pytest.param(
            build([(1, 0, [bytes([10]) + b"\x00"])]),
            "zero-length GC/Skip", id="zero-length-skip",
        ),
        pytest.param(
            build([(1, 0, [root_item(7, b"\x08")])]),
            "unsupported type ref 8", id="unknown-type-ref",
        ),
        pytest.param(
            build([(1, 0, [root_item(2, b"\x01" + vstr("{nope"))])]),
            "invalid JSON content", id="bad-json",
        ),
        pytest.param(build([(1, 2**32 - 1, [_ok_any()])]), "clock overflow", id="clock-overflow"),
        pytest.param(
            build([(1, 0, [root_item(8, b"\x01" + b"\x75\x01" * 100 + b"\x7e")])]),
            "any value nested too deeply", id="deep-any",
        ),
        pytest.param(
            build([(1, 0, [root_item(2, b"\x01" + vstr("[" * 100_000))])]),
            "invalid JSON content", id="deep-json",
        ),
    ],
)
def test_malformed(update: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        appended_values(update)
    assert type(err.value) is RemoteProtocolError
    assert str(err.value) == f"malformed Yjs update: {message}"


def test_max_structs() -> None:
    update = build([(1, 0, [_ok_any(b"a"), origin_item(8, any_bytes([b"b"]), (1, 0))])])
    assert appended_values(update) == [b"a", b"b"]
    parse_update(update, max_structs=2)
    with pytest.raises(RemoteProtocolError, match="structs"):
        parse_update(update, max_structs=1)


def test_bytes_like_inputs() -> None:
    update = SAMPLES[0]
    assert appended_values(bytearray(update)) == appended_values(memoryview(update))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_update("not bytes")  # type: ignore[arg-type]


def test_u64_client_ids_and_noncanonical_varuints_within_range() -> None:
    client = 2**64 - 1
    update = build([(client, 0, [_ok_any(b"big")])])
    assert parse_update(update).items[0].client == client
    # 0x85 0x00 is a (non-minimal) 5: same value in yrs since it fits in 5 bytes
    odd = b"\x01\x01\x01\x85\x00" + _ok_any(b"v") + b"\x00"
    assert parse_update(odd).items[0].clock == 5


def _check_gate_against_pycrdt(update: bytes) -> None:
    """Gate the update; if admitted, pycrdt must only have added admitted bytes to the array."""
    try:
        admitted = appended_values(update)
    except LedgerError:
        return
    doc, array = new_doc(424_242)
    doc.apply_update(BASE_STATE)
    before = Counter(values_of(array))
    try:
        doc.apply_update(update)
    except ValueError:
        return  # pycrdt refused it too (e.g. a missing parent); the ledger maps that to an error
    after = Counter(values_of(array))
    assert before <= after, "something was removed"
    assert after - before <= Counter(admitted), "pycrdt inserted something the gate did not admit"
    state = parse_update(doc.get_update())
    assert not state.deletes and not state.gc_ranges
    assert all(it.parent in (None, NAME) and it.parent_sub is None for it in state.items)


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    for prefix in (b"", b"\x01", b"\x01\x01\x07\x00", b"\x01\x01\x07\x00\x08\x01\x07entries"):
        update = prefix + data
        try:
            values = appended_values(update)
        except LedgerError:
            continue
        # Accepted: applying it may insert at most the values the gate reported, into the
        # entries array, and nothing else (pycrdt may still refuse it or hold it back).
        doc, array = new_doc(424_243)
        try:
            doc.apply_update(update)
        except ValueError:
            continue
        assert Counter(values_of(array)) <= Counter(values)


# one byte-level edit of an update: (what, where modulo its length, the byte)
MUTATION = st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]),
                     st.integers(0, 10**6), st.integers(0, 255))


def mutated(update: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(update)
    for op, where, byte in mutations:
        if not buf:
            break
        i = where % len(buf)
        if op == "flip":
            buf[i] ^= 1 << (byte % 8)
        elif op == "set":
            buf[i] = byte
        elif op == "insert":
            buf.insert(i, byte)
        else:
            del buf[i]
    return bytes(buf)


@SETTINGS
@given(
    st.sampled_from(SAMPLES),
    st.lists(MUTATION, min_size=1, max_size=4),
)
def test_mutated_real_updates(update: bytes, mutations: list[tuple[str, int, int]]) -> None:
    _check_gate_against_pycrdt(mutated(update, mutations))


# Histories of three docs: (which doc, what it does, a value)
HISTORIES = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["append", "extend", "insert", "sync"]),
        st.binary(max_size=40),
    ),
    max_size=25,
)


@SETTINGS
@given(HISTORIES)
def test_random_histories_round_trip(ops: list[tuple[int, str, bytes]]) -> None:
    docs = [new_doc(cid) for cid in (1, 2**32 + 1, 3)]
    starts = [d.get_state() for d, _ in docs]
    inserted: list[bytes] = []
    for who, op, value in ops:
        doc, array = docs[who]
        if op == "append":
            array.append(value)
            inserted.append(value)
        elif op == "extend":
            with doc.transaction():
                array.extend([value, value[::-1]])
            inserted += [value, value[::-1]]
        elif op == "insert":
            array.insert(len(array) // 2, value)
            inserted.append(value)
        else:
            src, _ = docs[(who + 1) % 3]
            gated_apply(doc, src.get_update(doc.get_state()))
    merged = pycrdt.merge_updates(
        *(d.get_update(s) for (d, _), s in zip(docs, starts, strict=True))
    )
    assert Counter(appended_values(merged)) == Counter(inserted)
    final, final_array = new_doc(77)
    gated_apply(final, merged)
    assert Counter(values_of(final_array)) == Counter(inserted)
    for doc, _ in docs:  # every doc converges with the merged state
        gated_apply(doc, final.get_update(doc.get_state()))
        assert values_of(doc.get(NAME, type=Array)) == values_of(final_array)


@SETTINGS
@given(HISTORIES, st.integers(0, 40))
def test_squash_changes_no_item_and_no_place(ops: list[tuple[int, str, bytes]], lost: int
                                            ) -> None:
    """squash(merge of rows) applies as the merge does: the same array, state and pending
    structs, also when a row is missing (its clocks become Skip structs) and arrives later."""
    docs = [new_doc(cid) for cid in (1, 2**32 + 1, 3)]
    rows: list[bytes] = []  # every transaction's update, as a store would keep them
    for who, op, value in ops:
        doc, array = docs[who]
        before = doc.get_state()
        if op == "append":
            array.append(value)
        elif op == "extend":
            array.extend([value, value[::-1]])
        elif op == "insert":
            array.insert(len(array) // 2, value)
        else:
            src, _ = docs[(who + 1) % 3]
            gated_apply(doc, src.get_update(before))
            continue
        rows.append(doc.get_update(before))
    for row in rows:  # a stored row's clock ranges, from its header when it is one struct
        assert clock_spans(row, NAME) == gate_ranges(row, {}, NAME)[2]
    kept = [r for i, r in enumerate(rows) if i != lost]
    for part in ([rows] if not kept else [rows, kept]):
        merged = pycrdt.merge_updates(*part) if part else b"\x00\x00"
        squashed = squash(merged, NAME)
        assert clock_spans(squashed, NAME) == gate_ranges(squashed, {}, NAME)[2]
        assert appended_values(squashed) == appended_values(merged)
        plain, plain_array = new_doc(77)
        plain.apply_update(merged)
        ours, our_array = new_doc(78)
        ours.apply_update(squashed)
        for doc in (plain, ours):
            for row in rows:  # a lost row arrives: whatever waited on it integrates
                doc.apply_update(row)
        assert values_of(our_array) == values_of(plain_array)
        assert ours.get_state() == plain.get_state()
    doc, array = new_doc(5)
    own = []
    for i in range(5):
        before = doc.get_state()
        array.append(bytes([i]))
        own.append(doc.get_update(before))
    chained = squash(pycrdt.merge_updates(*own), NAME)
    assert len(parse_update(chained).items) == 1  # one client's appends: one struct


@pytest.mark.parametrize("ours, theirs", [(1, 2), (2, 1)])
def test_squash_keeps_an_item_whose_right_origin_differs_apart(ours: int, theirs: int) -> None:
    """X goes between A and B; their C between X and B; our Y between X and C. Y starts where X
    ends and names X as its origin, but its right origin is C, not B: merged into X it would
    lose the place it was written at (before C)."""
    (doc, array), (other, other_array) = new_doc(ours), new_doc(theirs)
    rows = [diff(doc, lambda: array.extend([b"A", b"B"]))]
    other.apply_update(doc.get_update())
    rows.append(diff(doc, lambda: array.insert(1, b"X")))
    other.apply_update(doc.get_update(other.get_state()))
    rows.append(diff(other, lambda: other_array.insert(2, b"C")))
    doc.apply_update(other.get_update(doc.get_state()))
    rows.append(diff(doc, lambda: array.insert(2, b"Y")))
    assert values_of(array) == [b"A", b"X", b"Y", b"C", b"B"]
    fresh, fresh_array = new_doc(77)
    fresh.apply_update(squash(pycrdt.merge_updates(*rows), NAME))
    assert values_of(fresh_array) == values_of(array)


# ---- boundaries and messages pinned by mutation testing ---------------------------------------


def vi(n: int) -> bytes:
    """lib0 ``writeVarInt``, written from its spec: sign in bit 6 of the first byte with 6 value
    bits, then 7 bits per byte, bit 7 meaning "more"."""
    negative, n = n < 0, abs(n)
    out = bytearray([(0x80 if n > 0x3F else 0) | (0x40 if negative else 0) | (n & 0x3F)])
    n >>= 6
    while n > 0:
        out.append((0x80 if n > 0x7F else 0) | (n & 0x7F))
        n >>= 7
    return bytes(out)


def _any_values(*anys: bytes) -> tuple[object, ...]:
    update = build([(72, 0, [root_item(8, vu(len(anys)) + b"".join(anys))])])
    (item,) = parse_update(update).items
    return item.values


def _malformed_message(update: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as err:
        parse_update(update)
    assert type(err.value) is RemoteProtocolError
    return str(err.value)


def test_varints_decode_as_lib0_writes_them() -> None:
    values = [0, 1, -1, 63, -63, 64, -64, 127, 8191, 8192, 2**31, -(2**31), 2**53, 2**63 - 1,
              -(2**63 - 1)]
    assert len(vi(2**63 - 1)) == 10  # the longest a varint may be
    assert _any_values(*(b"\x7d" + vi(v) for v in values)) == tuple(values)
    too_long = build([(1, 0, [root_item(8, b"\x01\x7d" + b"\x80" * 10 + b"\x00")])])
    assert _malformed_message(too_long) == "malformed Yjs update: varint too long"
    too_big = build([(1, 0, [root_item(8, b"\x01\x7d" + vi(2**63))])])
    assert _malformed_message(too_big) == "malformed Yjs update: varint out of range"


def test_json_content_reads_undefined_and_refuses_bad_json() -> None:
    update = build([(1, 0, [root_item(2, vu(2) + vstr("undefined") + vstr('{"a": [1]}'))])])
    (item,) = parse_update(update).items
    assert item.values == (UNDEFINED, {"a": [1]}) and repr(UNDEFINED) == "UNDEFINED"
    bad = build([(1, 0, [root_item(2, b"\x01" + vstr("{nope"))])])
    assert _malformed_message(bad) == "malformed Yjs update: invalid JSON content"


@pytest.mark.parametrize("tag, size, what", [
    (0x7B, 8, "float64"), (0x7C, 4, "float32"), (0x7A, 8, "bigint"),
])
def test_a_fixed_width_any_that_runs_past_the_end_is_malformed(tag: int, size: int,
                                                               what: str) -> None:
    for short in range(size):
        update = build([(1, 0, [root_item(8, b"\x01" + bytes([tag]) + bytes(short))])])
        assert _malformed_message(update[:-1]) == f"malformed Yjs update: truncated {what}"


@pytest.mark.parametrize("level", [b"\x75\x01", b"\x76\x01" + vstr("k")], ids=["array", "object"])
def test_any_nesting_limit_is_64_collections_of_either_kind(level: bytes) -> None:
    (value,) = _any_values(level * 64 + b"\x7e")
    for _ in range(64):
        assert isinstance(value, (list, dict)) and len(value) == 1
        value = value[0] if isinstance(value, list) else value["k"]
    assert value is None
    deeper = build([(1, 0, [root_item(8, b"\x01" + level * 65 + b"\x7e")])])
    assert _malformed_message(deeper) == "malformed Yjs update: any value nested too deeply"


def test_any_messages_name_the_problem() -> None:
    for content, message in (
        (b"\x01\x75" + BIG, "any collection length exceeds the update"),
        (b"\x01\x73", "unknown any tag 115"),
    ):
        update = build([(1, 0, [root_item(8, content)])])
        assert _malformed_message(update) == f"malformed Yjs update: {message}"


def test_state_vector_boundaries_and_messages() -> None:
    state = {1: 127, 128: 128, 2**32 - 1: 300}
    encoded = encode_state_vector(state)
    assert encoded == (b"\x03" + b"\x01\x7f" + b"\x80\x01\x80\x01"
                       + b"\xff\xff\xff\xff\x0f\xac\x02")
    assert decode_state_vector(encoded) == state
    for sv, message in (
        (b"", "truncated"),
        (b"\x00\x00", "1 trailing bytes"),
        (b"\x01\x05\x03\x00\x00", "2 trailing bytes"),
        (b"\x01\x05" + b"\xff" * 5 + b"\x7f", "varuint too long"),
    ):
        with pytest.raises(RemoteProtocolError) as err:
            decode_state_vector(sv)
        assert str(err.value) == f"malformed Yjs state vector: {message}"


def test_the_gate_reads_the_array_it_is_told_to() -> None:
    update = build([(1, 0, [root_item(8, any_bytes([b"v"]), name="other")])])
    assert appended_values(update, "other") == [b"v"]
    assert gate_update(update, {}, "other") == ([b"v"], set())
    for gate in (lambda: appended_values(update), lambda: gate_update(update, {})):
        with pytest.raises(ForbiddenUpdate):
            gate()


def test_gate_messages_name_the_item_and_the_reason() -> None:
    for update, message in (
        (build([(70, 0, [_ok_any()])], deletes=[(9, [(0, 1)])]),
         "update deletes (non-empty delete set)"),
        (build([(53, 0, [bytes([0]) + vu(3)])]), "update carries garbage-collected (GC) structs"),
        (build([(70, 0, [root_item(8, any_bytes([b"v"]), sub="key")])]),
         "item (70, 0) is a map entry (parentSub)"),
        (build([(70, 0, [bytes([8]) + vu(0) + vu(1) + vu(0) + any_bytes([b"v"])])]),
         "item (70, 0) targets a nested type (1, 0)"),
        (build([(70, 0, [root_item(8, any_bytes([b"v"]), name="other")])]),
         "item (70, 0) targets root type 'other', not 'entries'"),
        (build([(70, 0, [root_item(8, vu(2) + b"\x74" + vstr(b"ok") + b"\x7d\x01")])]),
         "item (70, 0) inserts a non-bytes value (int)"),
        (build([(70, 0, [root_item(4, vstr("text"))])]),
         "item (70, 0) has forbidden content ref 4"),
    ):
        with pytest.raises(ForbiddenUpdate) as err:
            appended_values(update)
        assert str(err.value) == message


def test_holes_and_ranges_of_a_section() -> None:
    """Two structs back to back leave no hole; a client the state does not know must start at
    clock 0, and a section starting later is a hole (so is a gap after the state)."""
    back_to_back = build([(1, 0, [_ok_any(b"a"), origin_item(8, any_bytes([b"b", b"c"]), (1, 0))])])
    assert gate_ranges(back_to_back, {}) == ([b"a", b"b", b"c"], set(), {1: (0, 3)})
    late = build([(1, 1, [origin_item(8, any_bytes([b"b"]), (1, 0))])])
    assert gate_ranges(late, {}) == ([b"b"], {1}, {1: (1, 2)})
    assert gate_ranges(late, {1: 1}) == ([b"b"], set(), {1: (1, 2)})
    assert gate_ranges(build([(1, 3, [_ok_any()])]), {1: 2})[1] == {1}


@pytest.mark.parametrize("client, clock", [
    (127, 127), (128, 128), (2**64 - 1, 2**32 - 1),
])
def test_origin_ids_at_the_varuint_boundaries(client: int, clock: int) -> None:
    item = origin_item(8, any_bytes([b"x" * 128]), (client, clock))
    right = bytes([8 | 0x40]) + vu(client) + vu(clock) + any_bytes([b"y" * 127])
    (first, second) = parse_update(build([(5, 0, [item, right])])).items
    assert first.origin == (client, clock) and first.values == (b"x" * 128,)
    assert second.right_origin == (client, clock) and second.values == (b"y" * 127,)


def test_origin_varuints_are_bounded_like_the_others() -> None:
    long_client = b"\x80" * 10 + b"\x00"  # 11 bytes: longer than any u64
    long_clock = b"\x80" * 5 + b"\x00"  # 6 bytes: longer than any u32
    for origin in (long_client + b"\x00", b"\x01" + long_clock):
        update = build([(5, 0, [bytes([8 | 0x80]) + origin + any_bytes([b"v"])])])
        assert _malformed_message(update) == "malformed Yjs update: varuint too long"


def test_max_structs_counts_every_client_section() -> None:
    update = build([(1, 0, [_ok_any(b"a")]), (2, 0, [_ok_any(b"b")])])
    assert len(parse_update(update, max_structs=2).items) == 2
    assert _malformed_message_of(lambda: parse_update(update, max_structs=1)) == (
        "malformed Yjs update: more than 1 structs")


def _malformed_message_of(call: Callable[[], object]) -> str:
    with pytest.raises(RemoteProtocolError) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize("struct, values, length", [
    (root_item(5, vstr('{"a": 1}')), ({"a": 1},), 1),  # ContentEmbed
    (root_item(6, vstr("bold") + vstr("true")), ("bold", True), 1),  # ContentFormat
    (root_item(7, bytes([0])), (0,), 1),  # ContentType: a nested Array
    (root_item(7, bytes([3]) + vstr("p")), (3, "p"), 1),  # ContentType: an XmlElement "p"
    (root_item(9, vstr("guid") + b"\x76\x01" + vstr("gc") + b"\x78"), ("guid", {"gc": True}), 1),
    (root_item(1, vu(2)), (), 2),  # ContentDeleted
    (root_item(3, vstr(b"\x00\x01")), (b"\x00\x01",), 1),  # ContentBinary
    (root_item(4, vstr("h\u00e9\U0001f600")), ("h\u00e9\U0001f600",), 4),  # UTF-16 units
])
def test_every_content_kind_reads_its_values_and_length(struct: bytes, values: tuple[object, ...],
                                                        length: int) -> None:
    (item,) = parse_update(build([(70, 0, [struct])])).items
    assert (item.values, item.length) == (values, length)


def test_skip_and_gc_runs_are_bounded_by_the_clock_and_trailing_bytes_are_counted() -> None:
    assert parse_update(build([(1, 2**32 - 4, [bytes([10]) + vu(3)])])).items == ()
    for ref in (0, 10):
        update = build([(1, 2**32 - 4, [bytes([ref]) + vu(5)])])
        assert _malformed_message(update) == "malformed Yjs update: clock overflow"
    assert _malformed_message(SAMPLES[0] + b"garbage") == "malformed Yjs update: 7 trailing bytes"


# ---- the usual shape, read fast ----------------------------------------------------------------


def _same_as_general(update: bytes) -> bool:
    """The usual-shape reader gives up (None) or gives exactly what the general gate gives; True
    when it read the update itself. So does the one-item pattern (``_gate_one``), which
    reads only updates the usual-shape reader reads too."""
    one = yjs._one_item(NAME).fullmatch(update)
    item = None if one is None else yjs._gate_one(one)
    usual = yjs._gate_usual(update, NAME.encode())
    if usual is None:
        assert item is None, update.hex()
        return False
    assert usual == yjs._gate_general(update, NAME)  # (which must not raise either)
    assert item is None or [item] == usual, update.hex()
    return True


def test_one_item_updates_are_read_by_the_pattern() -> None:
    """What an append into one of many contexts writes (one struct of one buffer: the first
    by the root's name, the next by its origin; long client ids) is read by ``_one_item``;
    numbers out of range are left to the other readers."""
    doc, array = new_doc(2**50 + 3)
    ones = [diff(doc, lambda: array.append(b"first")), diff(doc, lambda: array.append(b"2")),
            encode_appended(2**50 + 3, 0, [b"0"]), encode_appended(2**50 + 3, 7, [b"x" * 300]),
            USUAL[0], USUAL[1], USUAL[4],
            build([(7, 3, [b"\xc8" + vu(2**40) + vu(2**31) + vu(9) + vu(4) + any_bytes([b"x"])])])]
    for update in ones:
        one = yjs._one_item(NAME).fullmatch(update)
        assert one is not None and _same_as_general(update), update.hex()
        assert [yjs._gate_one(one)] == yjs.gate_structs(update)
    for over in (build([(5, 2**32 - 1, [_ok_any(b"a")])]),  # clock overflow
                 build([(7, 3, [b"\x88" + b"\xff" * 9 + b"\x02" + vu(1) + any_bytes([b"x"])])]),
                 build([(7, 3, [b"\x88" + vu(1) + b"\xff" * 4 + b"\x1f" + any_bytes([b"x"])])]),
                 b"\x01\x01" + b"\xff" * 9 + b"\x02" + b"\x00" + _ok_any(b"v") + b"\x00"):
        one = yjs._one_item(NAME).fullmatch(over)
        assert one is not None and yjs._gate_one(one) is None, over.hex()
        assert not _same_as_general(over)


USUAL = [
    build([(5, 0, [_ok_any(b"a")])]),
    build([(2**64 - 1, 2**32 - 3, [_ok_any(b"a" * 200)])]),  # u64 client, a 2-byte length
    build([(7, 3, [origin_item(8, any_bytes([b"x", b"y" * 20000]), (7, 2))])]),  # 3-byte len
    build([(7, 3, [b"\xc8" + vu(2**40) + vu(2**31) + vu(9) + vu(4) + any_bytes([b"x"])])]),
    build([(7, 3, [b"\x48" + vu(2**40) + vu(300) + any_bytes([b"r"])])]),  # right origin only
    build([(9, 0, [_ok_any(b"a"), b"\x0a" + vu(4), origin_item(8, any_bytes([b"b"]), (9, 0))]),
           (3, 1, [_ok_any(b"c")])]),  # a Skip, two clients
    build([]),
    b"\x01\x01\x01\x85\x00" + _ok_any(b"v") + b"\x00",  # a non-minimal (valid) clock
]

UNUSUAL = [
    build([(5, 0, [_ok_any(b"a")])], deletes=[(5, [(0, 1)])]),  # a delete set
    build([(5, 0, [root_item(8, any_bytes([b"a"]), name="other")])]),
    build([(5, 0, [root_item(8, any_bytes([b"a"]), sub="key")])]),
    build([(5, 0, [root_item(3, vstr(b"binary"))])]),  # ContentBinary: the general reader's
    build([(5, 0, [root_item(8, vu(1) + b"\x77" + vstr("text"))])]),  # a string value
    build([(5, 0, [root_item(8, vu(0))])]),  # zero-length
    build([(5, 2**32 - 1, [_ok_any(b"a")])]),  # clock overflow
    build([(5, 0, [b"\x0a" + vu(0)])]),  # zero-length Skip
    build([(5, 0, [_ok_any(b"a")])]) + b"\x00",  # trailing bytes
    build([(5, 0, [_ok_any(b"a")])])[:-3],  # truncated
]


def test_the_usual_shape_is_read_as_the_general_gate_reads_it() -> None:
    for update in USUAL:
        assert _same_as_general(update), update.hex()
    for update in UNUSUAL:
        assert not _same_as_general(update), update.hex()
    # what pycrdt and our own appends write is the usual shape
    doc, array = new_doc(2**50 + 3)
    assert _same_as_general(diff(doc, lambda: array.append(b"first")))
    assert _same_as_general(diff(doc, lambda: array.extend([b"2", b"3" * 300])))
    assert _same_as_general(encode_appended(2**50 + 3, 3, [b"4", b"5"]))
    assert _same_as_general(encode_appended(2**50 + 3, 0, [b"0"]))


@SETTINGS
@given(
    st.sampled_from(SAMPLES + USUAL),
    st.lists(MUTATION, max_size=4),
)
def test_mutated_updates_read_the_usual_way_or_the_general_way_alike(
        update: bytes, mutations: list[tuple[str, int, int]]) -> None:
    _same_as_general(mutated(update, mutations))


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_read_the_usual_way_or_the_general_way_alike(data: bytes) -> None:
    for prefix in (b"", b"\x01\x01\x07\x00", b"\x01\x01\x07\x00\x08\x01\x07entries",
                   b"\x01\x02\x07\x00\x88\x07\x00"):
        _same_as_general(prefix + data)


@pytest.mark.parametrize("client, clock, count", [(1, 0, 1), (2**53 - 1, 2**31, 300), (77, 5, 1)])
def test_clock_spans_reads_a_row_of_one_struct_from_its_header(client: int, clock: int,
                                                               count: int) -> None:
    """Our own appends' rows (one ContentAny struct, origin our previous item or the array) give
    their clock range without a parse of the values (a stored row passed the gate when it was
    taken); a header cut short is left to the gate, which names the problem."""
    values = [bytes([i % 256]) * 100 for i in range(count)]
    row = encode_appended(client, clock, values, NAME)
    assert clock_spans(row, NAME) == {client: (clock, clock + count)} == \
        gate_ranges(row, {}, NAME)[2]
    with pytest.raises(RemoteProtocolError):
        clock_spans(row[:4], NAME)


# ---- the usual row's shortcut (``usual_row`` + ``integrate_usual``) ------------------------------

PREFIX = b"ROW:"
NUMBERS = st.one_of(st.integers(0, 300), st.sampled_from([2**32 - 1, 2**32, 2**64 - 1, 2**64]))


def usual_update(client: int, clock: int, origin: int, known: int, value: bytes,
                 size: int | None = None) -> bytes:
    return (b"\x01\x01" + vu(client) + vu(clock) + b"\x88" + vu(origin) + vu(known) +
            b"\x01\x74" + vu(len(value) if size is None else size) + value + b"\x00")


@SETTINGS
@given(st.tuples(st.sampled_from([7, 2**64 - 1, 300]), NUMBERS, st.sampled_from([7, 9, 2**64]),
                 NUMBERS, st.binary(max_size=200), st.one_of(st.none(), st.integers(0, 300))),
       st.dictionaries(st.sampled_from([7, 9, 300, 2**64 - 1]), NUMBERS, max_size=3),
       st.lists(MUTATION, max_size=2))
@example((7, 2**32, 9, 0, b"v", None), {7: 2**32, 9: 1}, [])  # a clock out of range
@example((2**64, 0, 9, 0, b"v", None), {9: 1}, [])  # a client out of range
@example((7, 0, 9, 2**32 + 1, b"v", None), {9: 2**33}, [])  # an origin out of range
@example((7, 0, 9, 0, b"v", 2), {9: 1}, [])  # a size that is not the value's
def test_the_usual_row_integrates_as_the_gate_and_integrate_do(
        row: tuple[int, int, int, int, bytes, int | None], state: dict[int, int],
        mutations: list[tuple[str, int, int]]) -> None:
    update = usual_update(*row)
    if mutations:
        update = mutated(update, mutations)
    match = yjs.usual_row(PREFIX, NAME).fullmatch(PREFIX + update)
    try:
        expected_state = dict(state)
        taken, waiting = yjs.integrate(yjs.gate_structs(update, NAME), expected_state)
    except LedgerError:
        taken, waiting, expected_state = [], [], {}  # (refused: the shortcut must not take it)
        refused = True
    else:
        refused = False
    if match is None:
        return
    ours = dict(state)
    value = yjs.integrate_usual(match, ours, {})
    if value is None:
        assert ours == state  # (nothing changed: the caller's gate and integrate decide)
    else:
        assert not refused and not waiting and taken == [value] and ours == expected_state


def test_the_usual_row_is_read_from_the_stored_row() -> None:
    state = {7: 3, 9: 1}
    match = yjs.usual_row(PREFIX, NAME).fullmatch(PREFIX + usual_update(7, 3, 9, 0, b"x" * 200))
    assert match is not None and yjs.integrate_usual(match, state, {}) == b"x" * 200
    assert state == {7: 4, 9: 1}
    for held, origin_known in ((2, 0), (4, 0), (3, 1)):  # held already, a hole, origin missing
        state = {7: held, 9: 1}
        match = yjs.usual_row(PREFIX, NAME).fullmatch(
            PREFIX + usual_update(7, 3, 9, origin_known, b"v"))
        assert match is not None and yjs.integrate_usual(match, state, {}) is None
        assert state == {7: held, 9: 1}


def test_an_even_run_is_read_from_its_header_and_anything_else_is_left_to_the_gate() -> None:
    """``even_run`` finds the values of one client's struct of buffers of one size placed by
    its origin or, a client's first, in the array by its name (our appends), as the gate reads
    them; values of two sizes, a trailing byte, a value that is not a buffer and two clients'
    structs are not such runs."""
    from p2p_ledger.core.yjs import encode_appended, even_run, gate_structs

    values = [bytes([i]) * 200 for i in range(130)]
    update = encode_appended(2**40 + 7, 300, values)
    run = even_run(b"xyz" + update, 3)
    assert run is not None
    assert (run.client, run.clock, run.origin, run.origin_clock, run.length, run.size) == \
        (2**40 + 7, 300, 2**40 + 7, 299, 130, 200)
    blob = b"xyz" + update
    assert [blob[run.at + i * run.stride : run.at + i * run.stride + run.size]
            for i in range(run.length)] == values
    (struct,) = gate_structs(update, "entries")
    assert list(struct[-1]) == values
    first = even_run(encode_appended(5, 0, values), 0)  # (a client's first: in the array)
    assert first is not None and (first.origin, first.clock, first.length) == (None, 0, 130)
    assert even_run(encode_appended(5, 1, values[:3] + [b"x" * 199]), 0) is None
    assert even_run(encode_appended(5, 1, values) + b"\x00", 0) is None
    with_int = bytearray(encode_appended(5, 1, [b"ab", b"cd"]))
    with_int[with_int.index(b"cd") - 2] = 0x7D  # (a varint, not a buffer)
    assert even_run(bytes(with_int), 0) is None
    two = pycrdt.merge_updates(encode_appended(5, 1, [b"ab"]), encode_appended(6, 1, [b"cd"]))
    assert even_run(two, 0) is None
