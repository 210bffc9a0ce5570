"""Entries: canonical encoding (golden vectors), content ids, record decoding and validation."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_ledger.core import entry as entry_module
from p2p_ledger.core.entry import (
    DEFAULT_LIMITS,
    ID_SIZE,
    MAX_LAMPORT,
    Limits,
    check_context,
    check_fields,
    check_node_id,
    decode_body,
    decode_record,
    fresh_record_fields,
    known_record_fields,
    make_chain,
    make_entry,
)
from p2p_ledger.core.errors import (
    IntegrityError,
    InvalidContextName,
    InvalidKey,
    InvalidMeta,
    InvalidNodeId,
    InvalidPayload,
    KeyTooLarge,
    LamportOutOfRange,
    LedgerError,
    LocalInputError,
    MetaTooLarge,
    PayloadTooLarge,
)

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
VECTORS = json.loads((Path(__file__).parent / "data" / "entry_vectors.json").read_text())["vectors"]
FIELDS = ("context", "key", "payload", "meta", "lamport", "origin", "chain", "seq",
          "appended_at_ns", "prev")
ORIGIN_A = hashlib.sha256(b"node-a").hexdigest()
ORIGIN_B = hashlib.sha256(b"node-b").hexdigest()
PREV = hashlib.sha256(b"prev").digest()
VALIDATION_ERRORS = (
    InvalidContextName, KeyTooLarge, PayloadTooLarge, MetaTooLarge, InvalidMeta, InvalidNodeId,
)


def _s(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def reference_body(context, key, payload, meta_items, lamport, origin, chain, seq, at,
                   prev) -> bytes:
    """Independent encoder written from the spec; ``meta_items`` is written in the given order."""
    out = b"P2PL\x02" + _s(context) + _s(key) + struct.pack(">I", len(payload)) + payload
    out += struct.pack(">I", len(meta_items))
    for name, value in meta_items:
        out += _s(name) + _s(value)
    return (out + struct.pack(">Q", lamport) + bytes.fromhex(origin)
            + struct.pack(">QQQ", chain, seq, at) + prev)


def record_of(body: bytes) -> bytes:
    return hashlib.sha256(body).digest() + body


def sample(**changes):
    fields = dict(
        context="ctx", key="k", payload=b"payload", meta={"a": "1", "b": "2"},
        lamport=5, origin=ORIGIN_A, chain=7, seq=3, appended_at_ns=1_700_000_000_000_000_000,
        prev=PREV,
    )
    fields.update(changes)
    return make_entry(**fields)


contexts = st.text("abcXYZ019._:/-", min_size=1, max_size=20)
origins = st.binary(min_size=32, max_size=32).map(bytes.hex)
u64 = st.integers(1, 2**64 - 1)
metas = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5)
entries = st.builds(
    make_entry, context=contexts, key=st.text(max_size=20), payload=st.binary(max_size=64),
    meta=metas, lamport=st.integers(1, MAX_LAMPORT), origin=origins,
    chain=st.integers(0, 2**64 - 1), seq=st.integers(2, 2**64 - 1),
    appended_at_ns=st.integers(0, 2**64 - 1),
    prev=st.binary(min_size=32, max_size=32).filter(lambda p: p != bytes(32)),
)


@SETTINGS
@given(context=contexts, origin=origins, chain=st.integers(0, 2**64 - 1),
       seq=st.integers(0, 2**32),
       items=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=64), metas,
                                st.integers(1, MAX_LAMPORT), st.integers(0, 2**64 - 1)),
                      min_size=1, max_size=6))
def test_make_chain_builds_what_make_entry_builds(context, origin, chain, seq, items):
    """The append path's builder gives, entry for entry, what ``make_entry`` gives for the
    same fields with each entry naming the one before, and each record's fields as a check of
    the record reads them."""
    prev = prev_at_start = bytes(32) if seq == 0 else hashlib.sha256(b"before").digest()
    entries, records, fields = make_chain(context, origin, chain, seq, prev, items)
    expected = []
    for n, (key, payload, meta, lamport, at_ns) in enumerate(items, start=seq + 1):
        expected.append(make_entry(context, key, payload, meta, lamport, origin, chain, n,
                                   at_ns, prev))
        prev = bytes.fromhex(expected[-1].id)
    assert entries == expected
    assert [e.writer for e in entries] == [e.writer for e in expected]
    assert records == [e.record for e in expected]
    assert fields == [known_record_fields(r) for r in records]
    assert [decode_record(r) for r in records] == expected
    named = make_chain(context, origin, chain, seq, prev_at_start, items,
                       f"{origin}.{chain:016x}")  # (the writer's name given: the same)
    assert named == (entries, records, fields)
    assert [e.writer for e in named[0]] == [e.writer for e in expected]


# ---- golden vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_golden_vectors(vector):
    entry = make_entry(
        vector["context"], vector["key"], bytes.fromhex(vector["payload_hex"]), vector["meta"],
        vector["lamport"], vector["origin"], vector["chain"], vector["seq"],
        vector["appended_at_ns"], bytes.fromhex(vector["prev_hex"]),
    )
    assert entry.body.hex() == vector["encoding_hex"]
    expected_id = hashlib.sha256(bytes.fromhex(vector["encoding_hex"])).hexdigest()
    assert entry.id == vector["id"] == expected_id
    assert entry.record == bytes.fromhex(vector["id"] + vector["encoding_hex"])
    record = bytes.fromhex(vector["id"] + vector["encoding_hex"])
    if vector["lamport"] > MAX_LAMPORT:
        with pytest.raises(LamportOutOfRange):
            decode_record(record)
        decoded = decode_body(entry.body)
    else:
        decoded = decode_record(record)
    assert decoded == entry
    assert decoded.payload == bytes.fromhex(vector["payload_hex"])


def test_golden_vectors_match_the_spec_encoder():
    for v in VECTORS:
        body = reference_body(
            v["context"], v["key"], bytes.fromhex(v["payload_hex"]),
            sorted(v["meta"].items(), key=lambda kv: kv[0].encode()),
            v["lamport"], v["origin"], v["chain"], v["seq"], v["appended_at_ns"],
            bytes.fromhex(v["prev_hex"]),
        )
        assert body.hex() == v["encoding_hex"], v["name"]


# ---- content id --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,other",
    [
        ("context", "ctx2"), ("key", "k2"), ("key", ""), ("payload", b"payloaD"),
        ("payload", b""), ("meta", {"a": "1", "b": "3"}), ("meta", {"a": "1", "c": "2"}),
        ("meta", {"a": "1"}), ("meta", {}), ("lamport", 6), ("origin", ORIGIN_B), ("seq", 4),
        ("appended_at_ns", 1), ("chain", 8), ("prev", bytes(31) + b"\x01"),
    ],
)
def test_every_field_changes_the_id(field, other):
    base = sample()
    changed = sample(**{field: other})
    assert changed.id != base.id
    assert changed.body != base.body


def test_ambiguous_splits_do_not_collide():
    # Length prefixes: moving bytes from one field to the next must change the id.
    assert sample(context="ab", key="c").id != sample(context="a", key="bc").id
    assert sample(meta={"ab": "c"}).id != sample(meta={"a": "bc"}).id


@SETTINGS
@given(entry=entries, data=st.data())
def test_meta_order_does_not_change_the_id(entry, data):
    items = data.draw(st.permutations(list(entry.meta.items())))
    again = make_entry(
        entry.context, entry.key, entry.payload, dict(items), entry.lamport, entry.origin,
        entry.chain, entry.seq, entry.appended_at_ns, entry.prev,
    )
    assert again.id == entry.id and again.body == entry.body


@SETTINGS
@given(entry=entries)
def test_id_is_sha256_of_the_spec_encoding(entry):
    body = reference_body(
        entry.context, entry.key, entry.payload,
        sorted(entry.meta.items(), key=lambda kv: kv[0].encode()),
        entry.lamport, entry.origin, entry.chain, entry.seq, entry.appended_at_ns, entry.prev,
    )
    assert entry.body == body
    assert entry.id == hashlib.sha256(body).hexdigest()


def test_make_entry_rejects_out_of_range_integers():
    for field in ("lamport", "seq", "appended_at_ns", "chain"):
        with pytest.raises(ValueError):
            sample(**{field: -1})
        with pytest.raises(ValueError):
            sample(**{field: 2**64})
    assert sample(lamport=2**64 - 1).lamport == 2**64 - 1


# ---- decoding ----------------------------------------------------------------------------------


@SETTINGS
@given(entry=entries)
def test_decode_record_round_trip(entry):
    decoded = decode_record(entry.record)
    assert decoded == entry
    assert decoded.body == entry.body
    assert decoded.record == entry.record
    assert dict(decoded.meta) == dict(entry.meta)
    assert decode_body(entry.body) == entry


def test_entry_json():
    text = sample(payload=b"hi").to_json()
    assert text["payload"] == "hi" and "payload_b64" not in text
    assert text["id"] == sample(payload=b"hi").id and text["meta"] == {"a": "1", "b": "2"}
    binary = sample(payload=b"\xff\x00").to_json()
    assert binary["payload_b64"] == "/wA=" and "payload" not in binary


def test_record_whose_id_lies_names_the_claimed_id():
    entry = sample()
    liar = sample(payload=b"other")
    record = bytes.fromhex(liar.id) + entry.body
    with pytest.raises(IntegrityError, match=liar.id):
        decode_record(record)
    flipped = bytearray(entry.record)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError, match=entry.id):
        decode_record(bytes(flipped))


@SETTINGS
@given(garbage=st.binary(max_size=200))
def test_garbage_records_raise_integrity_error_only(garbage):
    with pytest.raises(IntegrityError):
        decode_record(garbage)
    # Also with a correct id, so that the decoder itself sees the garbage.
    with pytest.raises(IntegrityError):
        decode_record(record_of(garbage))


@SETTINGS
@given(entry=entries, data=st.data())
def test_truncated_or_extended_records_raise_integrity_error_only(entry, data):
    body = entry.body
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(IntegrityError):
        decode_record(entry.record[: ID_SIZE + cut])  # the id no longer matches
    with pytest.raises(IntegrityError):
        decode_record(record_of(body[:cut]))  # the id matches: the decoder must refuse it
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(IntegrityError):
        decode_record(record_of(body + extra))


@SETTINGS
@given(entry=entries, data=st.data())
def test_mutated_records_are_either_valid_entries_or_integrity_errors(entry, data):
    body = bytearray(entry.body)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_record(record_of(bytes(body)))
    except IntegrityError:
        return
    assert decoded.body == bytes(body)
    assert make_entry(
        decoded.context, decoded.key, decoded.payload, decoded.meta, decoded.lamport,
        decoded.origin, decoded.chain, decoded.seq, decoded.appended_at_ns, decoded.prev,
    ).body == bytes(body)


@SETTINGS
@given(entry=entries, data=st.data())
def test_fresh_record_fields_answers_as_decode_record(entry, data):
    """verify's batch check (a fast path for the usual record) accepts exactly what
    decode_record accepts for the record's context, with the same fields, and raises an
    IntegrityError for everything else; an id already seen is skipped unchecked."""
    if data.draw(st.booleans()):  # the usual record: no meta; sometimes a writer's first
        first = data.draw(st.booleans())
        entry = make_entry(entry.context, entry.key, entry.payload, {}, entry.lamport,
                           entry.origin, entry.chain, 1 if first else entry.seq,
                           entry.appended_at_ns, bytes(32) if first else entry.prev)
    body = bytearray(entry.body)
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    # the id of the bytes, or the id of the entry before the mutation (a lying id)
    record = record_of(bytes(body)) if data.draw(st.booleans()) else \
        entry.record[:ID_SIZE] + bytes(body)
    limits = data.draw(st.sampled_from([DEFAULT_LIMITS, Limits(max_key=4, max_payload=8)]))
    context = entry.context.encode("utf-8")
    seen: set[bytes] = set()
    try:
        decoded = decode_record(record, limits)
        if decoded.context != entry.context:
            raise IntegrityError("another context")
    except IntegrityError:
        with pytest.raises(IntegrityError):
            fresh_record_fields([record], context, seen, limits)
        return
    writer = bytes.fromhex(decoded.origin) + decoded.chain.to_bytes(8, "big")
    fields = (record[:ID_SIZE], decoded.lamport, decoded.seq, decoded.prev, writer)
    assert fresh_record_fields([record, record], context, seen, limits) == [fields]
    assert known_record_fields(record) == fields  # (what a local append reads, unchecked)
    assert seen == {record[:ID_SIZE]}
    assert fresh_record_fields([b"\x00" * ID_SIZE + record[ID_SIZE:], record], context,
                               {b"\x00" * ID_SIZE, record[:ID_SIZE]}, limits) == []


def _usual(**changes):
    fields = dict(context="ctx", key="k", payload=b"payload", meta_items=(), lamport=5,
                  origin=ORIGIN_A, chain=7, seq=3, at=1, prev=PREV)
    fields.update(changes)
    return reference_body(**fields)


@pytest.mark.parametrize("body", [
    _usual(lamport=0), _usual(lamport=MAX_LAMPORT + 1), _usual(seq=0), _usual(seq=1),
    _usual(prev=bytes(32)), _usual(key="k" * 300), _usual(key="kk").replace(
        _s("kk"), _s("kk")[:4] + b"\xff\xfe"), _usual(context="other"),
    _usual()[:-1], _usual() + b"\x00",
    # a meta count with no meta after it, and the tail where the meta would be
    _usual().replace(struct.pack(">I", 0), struct.pack(">I", 1), 3)[:-4] + b"\x00" * 4,
], ids=["lamport-0", "lamport-max", "seq-0", "seq-1-with-prev", "no-prev", "key-too-long",
        "key-not-utf8", "other-context", "truncated", "trailing", "meta-count"])
def test_fresh_record_fields_refuses_what_decode_record_refuses(body):
    """The fast path's own checks, each at its edge (random mutations rarely hit them)."""
    if body.startswith(b"P2PL\x02" + _s("ctx")):  # the other context aside
        with pytest.raises(IntegrityError):
            entry = decode_record(record_of(body))
            assert entry.context == "ctx"
    with pytest.raises(IntegrityError):
        fresh_record_fields([record_of(body)], b"ctx", set())


def test_unsorted_meta_is_not_canonical():
    args = ("ctx", "k", b"p")
    tail = (5, ORIGIN_A, 1, 3, 7, PREV)
    body = reference_body(*args, [("b", "2"), ("a", "1")], *tail)
    with pytest.raises(IntegrityError, match="canonical"):
        decode_record(record_of(body))
    # Sorted by UTF-8 bytes, not by something else: "Z" < "a" < "é".
    good = reference_body(*args, [("Z", ""), ("a", ""), ("\u00e9", "")], *tail)
    assert decode_record(record_of(good)).meta == {"Z": "", "a": "", "\u00e9": ""}
    bad = reference_body(*args, [("a", ""), ("Z", ""), ("\u00e9", "")], *tail)
    with pytest.raises(IntegrityError):
        decode_record(record_of(bad))


def test_duplicate_meta_names_are_not_canonical():
    body = reference_body("ctx", "k", b"p", [("a", "1"), ("a", "2")], 5, ORIGIN_A, 1, 3, 7, PREV)
    with pytest.raises(IntegrityError):
        decode_record(record_of(body))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b"P2PX" + b[4:], id="magic"),
        pytest.param(lambda b: b[:4] + b"\x01" + b[5:], id="version-1"),
        pytest.param(lambda b: b[:4] + b"\x00" + b[5:], id="version-0"),
        pytest.param(lambda b: b + b"\x00", id="trailing-byte"),
        pytest.param(lambda b: b[:-1], id="truncated"),
    ],
)
def test_malformed_encodings_are_refused(mutate):
    with pytest.raises(IntegrityError):
        decode_record(record_of(mutate(sample().body)))


def test_invalid_utf8_is_refused():
    body = sample().body
    # The context "ctx" starts right after magic, version and its u32 length.
    bad = body[:9] + b"\xff" + body[10:]
    with pytest.raises(IntegrityError):
        decode_record(record_of(bad))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"context": "has space"}, id="bad-context"),
        pytest.param({"context": "x" * 129}, id="long-context"),
        pytest.param({"seq": 1}, id="seq-1-with-prev"),
        pytest.param({"prev": bytes(32)}, id="seq-3-without-prev"),
        pytest.param({"lamport": MAX_LAMPORT + 1}, id="lamport-over-limit"),
        pytest.param({"key": "k" * 257}, id="long-key"),
        pytest.param({"seq": 0}, id="seq-0"),
        pytest.param({"lamport": 0}, id="lamport-0"),
    ],
)
def test_records_with_invalid_fields_are_integrity_errors(changes):
    entry = sample(**changes)  # make_entry trusts its caller; the record decoder must not
    with pytest.raises(IntegrityError, match=entry.id):
        decode_record(entry.record)


def test_record_limits_are_applied():
    entry = sample(payload=b"x" * 11, meta={"m": "y" * 20})
    assert decode_record(entry.record, DEFAULT_LIMITS) == entry
    with pytest.raises(IntegrityError):
        decode_record(entry.record, Limits(max_payload=10))
    with pytest.raises(IntegrityError):
        decode_record(entry.record, Limits(max_meta=20))
    with pytest.raises(IntegrityError):
        decode_record(entry.record, Limits(max_key=0))


# ---- validation of local input -----------------------------------------------------------------


def _raises_exactly(cls, fn, *args):
    with pytest.raises(LocalInputError) as info:
        fn(*args)
    assert type(info.value) is cls
    assert isinstance(info.value, (LedgerError, ValueError))
    others = [c for c in VALIDATION_ERRORS if c is not cls]
    assert not isinstance(info.value, tuple(others))


def test_validation_errors_are_distinct_classes():
    assert len(set(VALIDATION_ERRORS)) == len(VALIDATION_ERRORS)
    for cls in VALIDATION_ERRORS:
        assert issubclass(cls, LocalInputError) and issubclass(cls, ValueError)
        assert not any(issubclass(cls, o) for o in VALIDATION_ERRORS if o is not cls)


@pytest.mark.parametrize(
    "name",
    ["", " ", "a b", "x" * 129, "tab\t", "new\nline", "ctx\n", "\u00e9", "a*b", "a#b", None, 5,
     b"ctx", ["ctx"]],
)
def test_invalid_context_names(name):
    _raises_exactly(InvalidContextName, check_context, name)


@pytest.mark.parametrize("name", ["a", "x" * 128, "A-Za-z0-9._:/-", "orders/eu:2024", "..", "/"])
def test_valid_context_names(name):
    assert check_context(name) == name


def test_context_names_checked_before_are_remembered_within_a_bound():
    """Names that passed are remembered (the check runs per append), never more than the
    bound, and remembering changes no answer: a bad name, or a look-alike of a good one that is
    not a str, is refused however many good names came before."""

    class LookAlike:  # equal to a good name, hashing like it, but not a str
        def __eq__(self, other: object) -> bool:
            return other == "ctx"

        def __hash__(self) -> int:
            return hash("ctx")

    assert check_context("ctx") == "ctx"
    for i in range(entry_module._GOOD_CONTEXTS_MAX + 10):
        assert check_context(f"c{i}") == f"c{i}"
        assert len(entry_module._good_contexts) <= entry_module._GOOD_CONTEXTS_MAX
    assert check_context("ctx") == "ctx"
    _raises_exactly(InvalidContextName, check_context, LookAlike())
    for name in ["a b", "x" * 129, "ctx\n", None]:
        _raises_exactly(InvalidContextName, check_context, name)


@pytest.mark.parametrize("node_id", ["", "x" * 65, "a:b", "a/b", "a b", "n\n", None, 3])
def test_invalid_node_ids(node_id):
    _raises_exactly(InvalidNodeId, check_node_id, node_id)


def test_valid_node_ids():
    for node_id in ("n", "x" * 64, "node-A_1.2"):
        assert check_node_id(node_id) == node_id


def test_key_limits():
    assert check_fields("k" * 256, b"", None)[0] == "k" * 256
    _raises_exactly(KeyTooLarge, check_fields, "k" * 257, b"", None)
    _raises_exactly(KeyTooLarge, check_fields, "\u00e9" * 129, b"", None)  # 258 UTF-8 bytes
    assert check_fields("\u00e9" * 128, b"", None)[0] == "\u00e9" * 128
    _raises_exactly(InvalidKey, check_fields, 5, b"", None)
    _raises_exactly(KeyTooLarge, check_fields, "abc", b"", None, Limits(max_key=2))


@pytest.mark.parametrize("key,payload,limits", [
    ("k", b"x" * 10, Limits(max_payload=10)), ("k", b"x" * 11, Limits(max_payload=10)),
    ("a" * 256, b"", DEFAULT_LIMITS), ("a" * 257, b"", DEFAULT_LIMITS),
    ("abc", b"", Limits(max_key=2)), ("", b"", DEFAULT_LIMITS), ("\u00e9", b"p", DEFAULT_LIMITS),
])
def test_the_common_case_path_answers_as_the_general_one(key, payload, limits):
    """ASCII key, bytes payload, no meta take a short path; a bytearray payload and an empty
    meta mapping take the general one: the same result or the same error either way."""
    def outcome(*args):
        try:
            return check_fields(*args, limits)
        except LocalInputError as exc:
            return type(exc), str(exc)

    assert outcome(key, payload, None) == outcome(key, bytearray(payload), {})


def test_payload_limits():
    limits = Limits(max_payload=10)
    assert check_fields("k", b"x" * 10, None, limits)[1] == b"x" * 10
    _raises_exactly(PayloadTooLarge, check_fields, "k", b"x" * 11, None, limits)
    _raises_exactly(PayloadTooLarge, check_fields, "k", "\u00e9" * 6, None, limits)  # 12 bytes
    _raises_exactly(InvalidPayload, check_fields, "k", 123, None)
    assert check_fields("k", "h\u00e9", None)[1] == "h\u00e9".encode()
    assert check_fields("k", bytearray(b"ab"), None)[1] == b"ab"
    assert check_fields("k", memoryview(b"ab"), None)[1] == b"ab"
    assert type(check_fields("k", bytearray(b"ab"), None)[1]) is bytes


def test_meta_limits_and_types():
    limits = Limits(max_meta=10)
    assert check_fields("k", b"", {"abcde": "fghij"}, limits)[2] == {"abcde": "fghij"}
    _raises_exactly(MetaTooLarge, check_fields, "k", b"", {"abcde": "fghijk"}, limits)
    _raises_exactly(MetaTooLarge, check_fields, "k", b"", {"a": "1", "bcdef": "ghij"}, limits)
    _raises_exactly(InvalidMeta, check_fields, "k", b"", {"a": 1})
    _raises_exactly(InvalidMeta, check_fields, "k", b"", {"a": b"1"})
    _raises_exactly(InvalidMeta, check_fields, "k", b"", {"a": None})
    _raises_exactly(InvalidMeta, check_fields, "k", b"", {1: "a"})
    _raises_exactly(InvalidMeta, check_fields, "k", b"", [("a", "b")])
    _raises_exactly(InvalidMeta, check_fields, "k", b"", "a=b")
    assert check_fields("k", b"", None)[2] == {}


def test_check_fields_returns_a_copy_of_meta():
    meta = {"a": "1"}
    _, _, clean = check_fields("k", b"", meta)
    meta["b"] = "2"
    assert clean == {"a": "1"}


@pytest.mark.parametrize(
    "args",
    [("\ud800", b"", None), ("k", "\ud800", None), ("k", b"", {"\ud800": "v"}),
     ("k", b"", {"m": "\udfff"})],
    ids=["key", "payload", "meta-name", "meta-value"],
)
def test_unencodable_strings_are_local_input_errors(args):
    with pytest.raises(LocalInputError):
        check_fields(*args)


@SETTINGS
@given(entry=entries)
def test_entry_is_immutable_and_order_key(entry):
    assert entry.order_key == (entry.lamport, entry.id)
    with pytest.raises(AttributeError):
        entry.key = "other"  # type: ignore[misc]
    assert replace(entry, key=entry.key) == entry


# ---- the direct canonical checks agree with "decode, re-encode and compare" --------------------


def _oracle(body: bytes):
    """The obvious decoder: read every field, then require that re-encoding gives the same bytes.

    Returns the fields, or None if the body is malformed or not canonical.
    """
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(body):
            raise ValueError("truncated")
        pos += n
        return body[pos - n : pos]

    def u32():
        return struct.unpack(">I", take(4))[0]

    def text():
        return take(u32()).decode("utf-8")

    try:
        if take(5) != b"P2PL\x02":
            return None
        context, key = text(), text()
        payload = take(u32())
        meta = {}
        for _ in range(u32()):
            name = text()
            meta[name] = text()
        lamport = struct.unpack(">Q", take(8))[0]
        origin = take(32).hex()
        chain, seq, at = struct.unpack(">QQQ", take(24))
        prev = take(32)
    except (ValueError, UnicodeDecodeError):
        return None
    if pos != len(body):
        return None
    items = sorted(meta.items(), key=lambda kv: kv[0].encode("utf-8"))
    if reference_body(context, key, payload, items, lamport, origin, chain, seq, at,
                      prev) != body:
        return None
    return (context, key, payload, meta, lamport, origin, chain, seq, at, prev)


def _fast(body: bytes):
    try:
        e = decode_body(body)
    except IntegrityError:
        return None
    return (e.context, e.key, e.payload, dict(e.meta), e.lamport, e.origin, e.chain, e.seq,
            e.appended_at_ns, e.prev)


meta_texts = st.text(alphabet=st.sampled_from("aAzZ\u00e9\u00ff\u0100\U0001f600\x00"), max_size=3)


@SETTINGS
@given(
    context=st.text(max_size=4), key=st.text(max_size=4), payload=st.binary(max_size=8),
    meta_items=st.lists(st.tuples(meta_texts, meta_texts), max_size=4),
    lamport=u64, origin=origins, seq=u64, at=u64, data=st.data(),
)
def test_decoder_agrees_with_reencode_and_compare(
    context, key, payload, meta_items, lamport, origin, seq, at, data
):
    # meta_items in any order, with duplicates: canonical only when strictly sorted.
    body = reference_body(context, key, payload, meta_items, lamport, origin, 5, seq, at, PREV)
    assert _fast(body) == _oracle(body)
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    for candidate in (bytes(mutated), bytes(mutated[:cut]), bytes(mutated) + b"\x00"):
        assert _fast(candidate) == _oracle(candidate)


def test_lone_surrogate_bytes_are_refused():
    # "\ud800" encoded the lax way (CESU/WTF-8) is not UTF-8: no entry could re-encode to it.
    body = reference_body("ctx", "k", b"p", [], 1, ORIGIN_A, 1, 1, 1, bytes(32))
    bad = body.replace(b"\x00\x00\x00\x01k", b"\x00\x00\x00\x03\xed\xa0\x80")
    with pytest.raises(IntegrityError, match="malformed"):
        decode_record(record_of(bad))


def test_record_limit_errors_name_the_field():
    entry = sample(key="kk", payload=b"x" * 11, meta={"m": "y" * 20})
    for limits, what in ((Limits(max_key=1), "key"), (Limits(max_payload=10), "payload"),
                         (Limits(max_meta=20), "meta")):
        with pytest.raises(IntegrityError, match=f"{entry.id} is invalid: {what} is"):
            decode_record(entry.record, limits)
    assert decode_record(entry.record, Limits(max_key=2, max_payload=11, max_meta=21)) == entry


def test_entries_built_by_the_codec_equal_dataclass_built_ones():
    from p2p_ledger.core.entry import Entry

    entry = sample(meta={"z": "1", "a": "2"})
    plain = Entry(entry.context, entry.key, entry.payload, dict(entry.meta), entry.lamport,
                  entry.origin, entry.chain, entry.seq, entry.appended_at_ns, entry.prev,
                  entry.id, entry.body, entry.writer)
    for built in (entry, decode_record(entry.record), decode_body(entry.body)):
        assert built == plain and type(built) is Entry
        assert built.body == plain.body and built.record == plain.record
        with pytest.raises(AttributeError):
            built.seq = 9  # still frozen


# ---- what the errors say, and the exact boundaries (each pinned by a mutation-testing survivor) --


def test_entry_json_names_every_field():
    entry = sample(payload=b"hi", chain=0xAB)
    assert entry.to_json() == {
        "id": entry.id, "context": "ctx", "key": "k", "lamport": 5, "origin": ORIGIN_A,
        "chain": "00000000000000ab", "seq": 3, "appended_at_ns": 1_700_000_000_000_000_000,
        "meta": {"a": "1", "b": "2"}, "payload": "hi",
    }


def test_local_input_errors_say_what_is_wrong():
    with pytest.raises(InvalidContextName, match=r"^invalid context name 'a b': use 1-128"):
        check_context("a b")
    with pytest.raises(InvalidNodeId, match=r"^invalid node id 'a:b': use 1-64"):
        check_node_id("a:b")
    with pytest.raises(InvalidKey, match=r"^key must be a string, got int$"):
        check_fields(5, b"", None)
    with pytest.raises(InvalidPayload, match=r"^payload must be bytes or str, got int$"):
        check_fields("k", 5, None)
    with pytest.raises(InvalidMeta, match=r"^meta must be a mapping of str to str$"):
        check_fields("k", b"", {"a": 1})
    with pytest.raises(MetaTooLarge, match=r"^meta is 11 bytes; the limit is 10$"):
        check_fields("k", b"", {"abcde": "fghijk"}, Limits(max_meta=10))
    for args, what in ((("\ud800", b"", None), "key"), (("k", "\ud800", None), "payload"),
                       (("k", b"", {"\ud800": "v"}), "meta name"),
                       (("k", b"", {"m": "\udfff"}), "meta value")):
        with pytest.raises(LocalInputError, match=rf"^{what} is not encodable as UTF-8"):
            check_fields(*args)


@pytest.mark.parametrize("meta", [[], "", ()], ids=["list", "str", "tuple"])
def test_an_empty_meta_that_is_not_a_mapping_is_refused(meta):
    """Empty, but not a mapping: the short path for an absent meta must not take it."""
    _raises_exactly(InvalidMeta, check_fields, "k", b"", meta)


def test_make_entry_integer_ranges_are_inclusive_and_errors_name_the_field():
    for field in ("lamport", "seq", "appended_at_ns", "chain"):
        for value in (0, 2**64 - 1):
            assert getattr(sample(**{field: value}), field) == value
        for value in (-1, 2**64):
            with pytest.raises(ValueError, match=rf"^{field} out of range: {value}$"):
                sample(**{field: value})


def _decode_error(body: bytes) -> str:
    with pytest.raises(IntegrityError) as info:
        decode_body(body)
    return str(info.value)


def test_decoder_errors_say_what_is_wrong():
    body = sample().body
    for bad, reason in (
        (body[:5], "is malformed: truncated"),
        (body[:20], "is malformed: truncated"),
        (b"P2PX" + body[4:], "is malformed: bad magic"),
        (body[:4] + b"\x07" + body[5:], "is malformed: unsupported entry encoding version 7"),
        (body + b"\x00", "is malformed: trailing bytes"),
    ):
        assert _decode_error(bad) == f"entry {hashlib.sha256(bad).hexdigest()} {reason}"
    unsorted = reference_body("ctx", "k", b"p", [("b", "2"), ("a", "1")], 5, ORIGIN_A, 1, 3, 7,
                              PREV)
    assert _decode_error(unsorted) == (
        f"entry {hashlib.sha256(unsorted).hexdigest()} is not in canonical form: "
        "meta names not strictly increasing by UTF-8 bytes")


def test_record_length_boundary():
    """A record shorter than an id and 5 bytes is refused as too short; from 37 bytes on, the
    id is checked against the content."""
    with pytest.raises(IntegrityError, match=r"^record of 36 bytes is too short$"):
        decode_record(bytes(36))
    with pytest.raises(IntegrityError, match="does not match its content"):
        decode_record(bytes(37))


def test_record_meta_limit_counts_every_name_and_value():
    entry = sample(meta={"ab": "cd", "ef": "gh"})  # 8 bytes of meta, 4 per item
    assert decode_record(entry.record, Limits(max_meta=8)) == entry
    with pytest.raises(IntegrityError, match="meta is 8 bytes; the limit is 7"):
        decode_record(entry.record, Limits(max_meta=7))


def test_record_at_the_lamport_limit_is_accepted():
    entry = sample(lamport=MAX_LAMPORT)
    assert decode_record(entry.record) == entry
    with pytest.raises(LamportOutOfRange, match=f"the limit is {MAX_LAMPORT}"):
        decode_record(sample(lamport=MAX_LAMPORT + 1).record)


def test_make_entry_names_the_field_out_of_range_not_a_neighbour_at_its_bound():
    for bound in (0, 2**64 - 1):
        for field in ("lamport", "seq", "chain"):
            with pytest.raises(ValueError, match=r"^appended_at_ns out of range: -1$"):
                sample(**{field: bound, "appended_at_ns": -1})


def test_every_entry_names_its_writer():
    """``writer`` ("origin.chain", chain in 16 hex digits) is what cursors count per; it is
    excluded from equality, so it needs its own check, for built and decoded entries alike."""
    for chain in (0, 7, 2**64 - 1):
        entry = sample(chain=chain, origin=ORIGIN_B)
        for built in (entry, decode_record(entry.record), decode_body(entry.body)):
            assert built.writer == f"{ORIGIN_B}.{chain:016x}"
