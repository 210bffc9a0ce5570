"""Cursors: version vectors with a text form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import make_entry
from p2p_ledger.core.errors import InvalidCursor, LocalInputError

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None)
node_ids = st.text("abcXYZ019._-", min_size=1, max_size=10)
vectors = st.dictionaries(node_ids, st.integers(1, 2**64 - 1), max_size=6)


def entry(origin: str, seq: int):
    return make_entry("ctx", "k", b"", {}, seq, origin, seq, 0)


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
    c = Cursor({"a": 1})
    assert Cursor.parse(c) is c
    assert Cursor.parse(" a:1,b:2 ") == {"a": 1, "b": 2}
    assert Cursor.parse("b:2,a:1") == {"a": 1, "b": 2}
    # zero (and negative) seqs mean "nothing seen" and are dropped
    assert Cursor.parse("a:0") == Cursor() and str(Cursor.parse("a:0,b:1")) == "b:1"
    assert Cursor({"a": 0, "b": -1, "c": 2}) == {"c": 2}
    assert repr(Cursor({"a": 1})) == "Cursor('a:1')"


@pytest.mark.parametrize(
    "text",
    ["a", "a:", ":1", "a:x", "a:-1", "a:+1", "a:1.5", "a:1,a:2", "a b:1", "a/b:1", "\u00e9:1",
     "a:1:2", "x" * 65 + ":1", "a:1,b"],
)
def test_invalid_text_raises_invalid_cursor(text):
    with pytest.raises(InvalidCursor):
        Cursor.parse(text)
    assert issubclass(InvalidCursor, LocalInputError)


@pytest.mark.parametrize("text", ["a:\u00b2", "a:1\u00b9", "a:" + "9" * 5000])
def test_non_ascii_or_huge_digits_raise_invalid_cursor(text):
    with pytest.raises(InvalidCursor):
        Cursor.parse(text)


def test_non_ascii_decimal_digits_are_refused():
    with pytest.raises(InvalidCursor):
        Cursor.parse("a:\u0661\u0662")  # int() reads this as 12


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
    cursor = Cursor({"a": 5})
    assert cursor.advanced([entry("a", 2)]) == {"a": 5}
    assert cursor.advanced([entry("a", 7), entry("a", 6)]) == {"a": 7}
