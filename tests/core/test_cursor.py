"""Cursors: version vectors with a text form."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import make_entry
from p2p_ledger.core.errors import InvalidCursor, LocalInputError

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
node_ids = st.builds(lambda o, c: f"{o.hex()}.{c:016x}", st.binary(min_size=32, max_size=32),
                     st.integers(0, 2**64 - 1))  # writers: origin.chain
vectors = st.dictionaries(node_ids, st.integers(1, 2**64 - 1), max_size=6)


def W(name: str) -> str:
    """A writer key named after ``name``."""
    return f"{hashlib.sha256(name.encode()).hexdigest()}.{len(name):016x}"


A, B, C = W("a"), W("b"), W("c")


def entry(writer: str, seq: int):
    origin, chain = writer.split(".")
    prev = bytes(32) if seq == 1 else hashlib.sha256(b"%d" % seq).digest()
    return make_entry("ctx", "k", b"", {}, seq, origin, int(chain, 16), seq, 0, prev)


@SETTINGS
@given(seen=vectors)
def test_parse_str_round_trip(seen):
    cursor = Cursor(seen)
    text = str(cursor)
    assert Cursor.parse(text) == cursor
    assert dict(Cursor.parse(text)) == seen
    assert str(Cursor.parse(text)) == text
    assert text == ",".join(f"{o}:{s}" for o, s in sorted(seen.items()))


@SETTINGS
@given(seen=vectors, data=st.data())
def test_text_is_independent_of_insertion_order(seen, data):
    items = data.draw(st.permutations(list(seen.items())))
    assert str(Cursor(dict(items))) == str(Cursor(seen))


def test_parse_special_values():
    assert Cursor.parse(None) == Cursor() == {}
    assert Cursor.parse("") == Cursor()
    assert str(Cursor()) == ""
    c = Cursor({A: 1})
    assert Cursor.parse(c) is c
    assert Cursor.parse(f" {A}:1,{B}:2 ") == {A: 1, B: 2}
    assert Cursor.parse(f"{B}:2,{A}:1") == {A: 1, B: 2}
    # zero (and negative) seqs mean "nothing seen" and are dropped
    assert Cursor.parse(f"{A}:0") == Cursor() and str(Cursor.parse(f"{A}:0,{B}:1")) == f"{B}:1"
    assert Cursor({A: 0, B: -1, C: 2}) == {C: 2}
    assert repr(Cursor({A: 1})) == f"Cursor('{A}:1')"


@pytest.mark.parametrize(
    "text",
    ["a", "a:", ":1", "a:x", "a:-1", "a:+1", "a:1.5", "a:1,a:2", "a b:1", "a/b:1", "\u00e9:1",
     "a:1:2", "x" * 65 + ":1", "a:1,b", "a:1", A + ":x", f"{A}:1,{A}:2", A.upper() + ":1",
     A[:-1] + ":1", A.split(".")[0] + ":1"],
)
def test_invalid_text_raises_invalid_cursor(text):
    with pytest.raises(InvalidCursor):
        Cursor.parse(text)
    assert issubclass(InvalidCursor, LocalInputError)


@pytest.mark.parametrize("text", [A + ":\u00b2", A + ":1\u00b9", A + ":" + "9" * 5000])
def test_non_ascii_or_huge_digits_raise_invalid_cursor(text):
    with pytest.raises(InvalidCursor):
        Cursor.parse(text)


def test_non_ascii_decimal_digits_are_refused():
    with pytest.raises(InvalidCursor):
        Cursor.parse(A + ":\u0661\u0662")  # int() reads this as 12


@SETTINGS
@given(
    seen=vectors,
    origin=node_ids,
    seq=st.integers(1, 2**20),
)
def test_covers(seen, origin, seq):
    cursor = Cursor(seen)
    assert cursor.covers(entry(origin, seq)) == (seq <= seen.get(origin, 0))


@SETTINGS
@given(
    seen=vectors,
    batch=st.lists(st.tuples(node_ids, st.integers(1, 2**20)), max_size=10),
)
def test_advanced(seen, batch):
    cursor = Cursor(seen)
    before = dict(cursor)
    entries = [entry(o, s) for o, s in batch]
    moved = cursor.advanced(entries)
    assert dict(cursor) == before, "advanced returns a new cursor"
    for e in entries:
        assert moved.covers(e)
    for origin in set(seen) | {o for o, _ in batch}:
        expected = max([seen.get(origin, 0)] + [s for o, s in batch if o == origin])
        assert moved.get(origin, 0) == expected
    assert cursor.advanced([]) == cursor


def test_advanced_never_goes_back():
    cursor = Cursor({A: 5})
    assert cursor.advanced([entry(A, 2)]) == {A: 5}
    assert cursor.advanced([entry(A, 7), entry(A, 6)]) == {A: 7}


def test_a_bad_cursor_says_what_a_cursor_looks_like() -> None:
    expected = (r"^invalid cursor 'x:1': expected writer:seq,writer:seq \(writer = 64 hex "
                r"digits of the origin, '\.', 16 of the chain\)$")
    with pytest.raises(InvalidCursor, match=expected):
        Cursor.parse("x:1")
