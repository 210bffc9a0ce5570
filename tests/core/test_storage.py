"""``MemoryStorage`` keeps the ``Storage`` contract as ``SqliteStore`` does.

The simulator and the core's tests run on MemoryStorage and the runtime on SQLite, so the same
sequence of calls must give the same answers from both: rows in commit order, summaries that
describe the stored rows or None (after a commit of rows alone, until ``put_summaries``), a
compaction that keeps a current summary current and counts the new stored bytes, meta values.
"""

from __future__ import annotations

from p2p_ledger.core.storage import MemoryStorage, Storage, Summary


def _summary(n: int, stored: int) -> Summary:
    return Summary(bytes([n]) * 32, n, b"sv-%d" % n, 10 * n, 0, stored)


def test_rows_summaries_compaction_and_meta(storage: Storage) -> None:
    assert storage.load() == {} and storage.contexts() == []
    assert list(storage.iter_context("nowhere")) == []
    s1, s2, s3 = _summary(1, 2), _summary(2, 1), _summary(3, 4)
    storage.commit([("a", b"1"), ("b", b"2"), ("a", b"3")], {"a": s1, "b": s2})
    assert storage.load() == {"a": [b"1", b"3"], "b": [b"2"]}
    assert sorted(storage.contexts()) == ["a", "b"]
    assert list(storage.iter_context("a")) == [b"1", b"3"]
    assert storage.summaries() == {"a": s1, "b": s2}
    storage.commit([("a", b"4")], {"a": s3})
    assert storage.summaries() == {"a": s3, "b": s2}

    storage.commit([("c", b"5")])  # rows without their summaries: stale until put_summaries
    assert storage.summaries() is None
    assert list(storage.iter_context("c")) == [b"5"]
    storage.replace_context("a", b"state", [])  # a compaction while stale: still stale
    assert storage.summaries() is None and storage.load()["a"] == [b"state"]
    s4 = _summary(4, 1)
    storage.put_summaries({"a": s1, "b": s2, "c": s4})
    assert storage.summaries() == {"a": s1, "b": s2, "c": s4}

    storage.replace_context("b", b"compacted", [])  # current: stays current, counts its bytes
    assert storage.summaries() == {"a": s1, "b": s2._replace(stored=9), "c": s4}
    assert storage.load() == {"a": [b"state"], "b": [b"compacted"], "c": [b"5"]}

    assert storage.get_meta("node_id") is None
    storage.set_meta("node_id", "n1")
    storage.set_meta("other", "x")
    storage.set_meta("node_id", "n2")
    assert (storage.get_meta("node_id"), storage.get_meta("other")) == ("n2", "x")


def test_memory_summaries_cover_every_context_with_rows_and_commits_are_counted() -> None:
    m = MemoryStorage()
    assert m.summaries() == {} and m.commits == 0
    m.commit([("a", b"1")], {"a": _summary(1, 1)})
    m.commit([])
    assert m.commits == 2
    m.updates["b"] = [b"2"]  # a row written straight in, as tests do: no summary describes it
    assert m.summaries() is None
    m.put_summaries({"a": _summary(1, 1), "b": _summary(2, 1)})
    assert m.summaries() == {"a": _summary(1, 1), "b": _summary(2, 1)}


def test_heads_change_with_the_commits_and_compaction_replaces_them(storage: Storage) -> None:
    assert storage.heads("a") == []
    storage.commit([("a", b"1"), ("b", b"2")], None, [("a", b"i1", b"h1"), ("b", b"i2", b"h2")])
    storage.commit([("a", b"3")], None, [("a", b"i3", b"h3"), ("a", b"i1", None)])
    assert (storage.heads("a"), storage.heads("b")) == ([b"h3"], [b"h2"])
    storage.commit([], None, [("a", b"gone", None)])  # deleting what is not there: nothing
    assert storage.heads("a") == [b"h3"]
    storage.replace_context("a", b"state", [(b"i4", b"h4"), (b"i5", b"h5")])
    assert sorted(storage.heads("a")) == [b"h4", b"h5"] and storage.heads("b") == [b"h2"]
    assert storage.load()["a"] == [b"state"]


def test_spans_are_read_from_a_contexts_rows_by_their_number(storage: Storage) -> None:
    """A row's number is its place among its context's rows in commit order (rows of other
    contexts between them do not count); spans of one row close together and far apart, of
    several rows, in any order, come back in the order asked; a compaction makes its state row
    0 (and the rows known before it are forgotten)."""
    storage.commit([("a", b"0123456789"), ("b", b"bbbb"), ("a", b"abcdef")])
    storage.commit([("b", b"BBBB"), ("a", b"x" * 10_000 + b"far")])
    assert storage.read_spans("a", []) == []
    assert storage.read_spans("a", [(1, 2, 3), (0, 0, 2), (0, 8, 2), (0, 3, 1), (2, 10_000, 3),
                                    (2, 0, 1), (1, 0, 6)]) == [
        b"cde", b"01", b"89", b"3", b"far", b"x", b"abcdef"]
    assert storage.read_spans("b", [(1, 0, 4), (0, 1, 2)]) == [b"BBBB", b"bb"]
    storage.commit([("a", b"later")])  # a row committed after the first read is found too
    assert storage.read_spans("a", [(3, 1, 3)]) == [b"ate"]
    storage.replace_context("a", b"the state", [])
    assert storage.read_spans("a", [(0, 4, 5)]) == [b"state"]
    storage.commit([("a", b"after")])
    assert storage.read_spans("a", [(1, 0, 5), (0, 0, 3)]) == [b"after", b"the"]
