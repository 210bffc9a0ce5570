"""The columnar read model (``EntryIndex``) answers exactly what the ``Entry``-per-entry model
it replaced answered: reads, keys, pages and cursors, positions, successors, forks.

``Reference`` below is that former model, kept as the oracle: a dict by id, a dict of seqs per
writer and a list in causal order, of whole ``Entry`` objects, with the former ``get`` verbatim.
Both are fed the same seeded arrivals: several writers, forks, holes that fill late, duplicates,
Lamport times that fall along a chain or saturate, a hostile seq far beyond its writer's run.
"""

from __future__ import annotations

import bisect
import copy
import random
from array import array
from operator import attrgetter

import pytest

from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import MAX_LAMPORT, NO_PREV, Entry, make_entry
from p2p_ledger.core.index import EntriesById, EntriesInOrder, EntryIndex

_ORDER = attrgetter("lamport", "id")
CONTEXT = "ctx"


class Reference:
    """The read model as it was: Entry objects in dicts and a list."""

    def __init__(self) -> None:
        self.by_id: dict[str, Entry] = {}
        self.ordered: list[Entry] = []
        self.by_writer: dict[str, dict[int, Entry]] = {}
        self.contiguous: dict[str, int] = {}
        self.forks: dict[tuple[str, int], list[str]] = {}

    def index(self, entry: Entry) -> bool:
        if entry.id in self.by_id:
            return False
        self.by_id[entry.id] = entry
        writer, seq = entry.writer, entry.seq
        key = (entry.lamport, entry.id)
        if not self.ordered or _ORDER(self.ordered[-1]) < key:
            self.ordered.append(entry)
        else:
            self.ordered.insert(bisect.bisect_left(self.ordered, key, key=_ORDER), entry)
        seqs = self.by_writer.setdefault(writer, {})
        held = seqs.get(seq)
        if held is not None:
            ids = self.forks.setdefault((writer, seq), [held.id])
            ids.append(entry.id)
            ids.sort()
        else:
            seqs[seq] = entry
        run = self.contiguous.get(writer, 0)
        if seq == run + 1:
            run += 1
            while run + 1 in seqs:
                run += 1
            self.contiguous[writer] = run
        elif writer not in self.contiguous:
            self.contiguous[writer] = run
        return True

    def get(self, key=None, after=None, limit=None):
        after = after or Cursor()
        out: list[Entry] = []
        if limit is not None and limit <= 0:
            return out, after
        starts = [seqs[after.get(writer, 0) + 1].order_key
                  for writer, seqs in self.by_writer.items() if after.get(writer, 0) + 1 in seqs]
        if not starts:
            return out, after
        for (writer, seq), ids in self.forks.items():
            if seq == after.get(writer, 0) + 1:
                starts += [self.by_id[i].order_key for i in ids]
        reached: dict[str, int] = {}
        forks = self.forks
        first = bisect.bisect_left(self.ordered, min(starts), key=_ORDER)
        tail = self.ordered[first:]
        widened = first == 0
        skipped = True
        while skipped and (limit is None or len(out) < limit):
            skipped = False
            progressed = len(reached), sum(reached.values())
            for entry in tail:
                writer, seq = entry.writer, entry.seq
                last = reached.get(writer)
                if last is None:
                    last = after.get(writer, 0)
                if seq != last + 1 and not (seq == last > after.get(writer, 0)
                                            and (writer, seq) in forks and entry not in out):
                    if seq > last + 1 and seq <= self.contiguous.get(writer, 0):
                        skipped = True
                    continue
                reached[writer] = seq
                if key is not None and entry.key != key:
                    continue
                out.append(entry)
                if limit is not None and len(out) >= limit:
                    break
            by_writer = self.by_writer
            pending = not skipped and any(seq + 1 in by_writer[w] for w, seq in reached.items())
            if pending and not widened:
                skipped, tail, widened = True, self.ordered, True
            elif skipped and progressed == (len(reached), sum(reached.values())):
                if widened:
                    break
                tail, widened = self.ordered, True
            elif pending:
                skipped = True
        return out, after.advanced(out)


def _arrivals(rng: random.Random) -> list[Entry]:
    """Entries of a few writers, with forks, falling or saturated Lamport times, in a shuffled
    order with duplicates."""
    made: list[Entry] = []
    for w in range(rng.randint(1, 4)):
        origin = f"{w + 1:02x}" * 32
        chain = rng.getrandbits(64)
        lamport = rng.choice([1, 50, MAX_LAMPORT - 3])
        prev = NO_PREV
        for seq in range(1, rng.randint(1, 30)):
            style = rng.random()
            if style < 0.15:
                lamport = max(1, lamport - rng.randint(1, 3))  # a falling clock
            elif style < 0.3:
                pass  # the same time (saturated clocks look like this)
            else:
                lamport = min(MAX_LAMPORT, lamport + rng.randint(1, 3))
            branches = 2 if rng.random() < 0.1 else 1  # an equivocating writer
            for b in range(branches):
                entry = make_entry(CONTEXT, rng.choice("ab"), rng.randbytes(rng.randint(0, 9)),
                                   {"m": "1"} if rng.random() < 0.1 else {}, lamport, origin,
                                   chain, seq, 1000 + seq, prev if b == 0 else prev)
                made.append(entry)
            prev = bytes.fromhex(made[-1].id)
    made.append(make_entry(CONTEXT, "far", b"", {}, 7, "ee" * 32, 5, 2**60, 0, b"\x01" * 32))
    arrivals = made + rng.sample(made, len(made) // 5)  # duplicates
    # mostly in order, with some entries arriving late
    arrivals.sort(key=lambda e: rng.random() if rng.random() < 0.3 else 0)
    return arrivals


def _same(index: EntryIndex, ref: Reference, rng: random.Random) -> None:
    ordered = EntriesInOrder(index)
    assert list(ordered) == ref.ordered
    assert ordered[1:4] == ref.ordered[1:4] and (not ref.ordered or ordered[-1] == ref.ordered[-1])
    by_id = EntriesById(index)
    assert set(by_id) == set(ref.by_id) and len(by_id) == len(ref.by_id)
    for entry_id in rng.sample(sorted(ref.by_id), min(5, len(ref.by_id))):
        assert by_id[entry_id] == ref.by_id[entry_id] and entry_id in by_id
    assert "zz" not in by_id and "00" * 32 not in by_id and by_id.get("x" * 64) is None
    assert index.contiguous == ref.contiguous and index.forks == ref.forks
    for writer, seqs in ref.by_writer.items():
        for seq, entry in seqs.items():
            assert index.entry_at(writer, seq) == entry
        assert index.entry_at(writer, max(seqs) + 1) is None
        assert index.max_seq(writer) == max(seqs)
    cursors = [None, Cursor()]
    for _ in range(4):
        cursors.append(Cursor({w: rng.randint(0, 31) for w in ref.by_writer
                               if rng.random() < 0.7}))
    for after in cursors:
        for key in (None, "a", "far"):
            for limit in (None, 0, 1, 3, 1000):
                assert index.get(key, after, limit) == ref.get(key, after, limit), (after, key,
                                                                                    limit)
    for limit in (1, 2, 5):  # paging to the end gives the same pages and cursors
        after_new = after_ref = None
        for _ in range(200):
            page, after_new = index.get(None, after_new, limit)
            expected, after_ref = ref.get(None, after_ref, limit)
            assert (page, after_new) == (expected, after_ref)
            if not page:
                break


@pytest.mark.parametrize("seed", range(40))
def test_the_columns_answer_what_entry_objects_answered(seed: int) -> None:
    print("seed", seed)
    rng = random.Random(seed)
    index, ref = EntryIndex(CONTEXT), Reference()
    arrivals = _arrivals(rng)
    i = 0
    while i < len(arrivals):
        # batches of one record (an append) to 30 (a catch-up), duplicates
        # inside one batch included
        batch = arrivals[i : i + rng.choice((1, 1, 2, 5, 30))]
        i += len(batch)
        slots = index.add_records([e.record for e in batch], [_fields(e) for e in batch])
        expected = [e.id for e in batch if ref.index(e)]
        assert [index.raw_id(slot).hex() for slot in slots] == expected
        if rng.random() < 0.3 or i == len(arrivals):
            _same(index, ref, rng)
    assert sorted(index.new_forks) == sorted(ref.forks)


def _fields(entry: Entry) -> tuple[bytes, int, int, bytes, bytes]:
    """(raw id, lamport, seq, prev, raw writer), as ``entry.fresh_record_fields`` gives them."""
    writer = bytes.fromhex(entry.origin) + entry.chain.to_bytes(8, "big")
    return bytes.fromhex(entry.id), entry.lamport, entry.seq, entry.prev, writer


def test_a_successor_is_the_entry_that_names_it_among_forked_siblings() -> None:
    origin, chain = "ab" * 32, 3
    first = make_entry(CONTEXT, "k", b"1", {}, 1, origin, chain, 1, 0)
    left = make_entry(CONTEXT, "k", b"L", {}, 2, origin, chain, 2, 0, bytes.fromhex(first.id))
    other = make_entry(CONTEXT, "k", b"o", {}, 1, origin, chain, 1, 1)
    right = make_entry(CONTEXT, "k", b"R", {}, 2, origin, chain, 2, 0, bytes.fromhex(other.id))
    index = EntryIndex(CONTEXT)
    four = (first, left, other, right)
    slots = index.add_records([e.record for e in four],
                              [_fields(e) for e in four])
    assert index.successor(slots[0]) == slots[1] and index.successor(slots[2]) == slots[3]
    assert index.successor(slots[1]) is None
    assert index.vouched_by_held(first.writer, 1, bytes.fromhex(other.id))
    assert not index.vouched_by_held(first.writer, 2, bytes.fromhex(left.id))
    assert index.record(slots[3]) == right.record and index.prev(slots[3]) == right.prev


def test_columns_start_narrow_and_widen_for_values_that_do_not_fit() -> None:
    """Each column holds the narrowest ints its values so far fit; a writer past 255, a row
    past 65,535, an offset past 4 GiB, a record past 64 KiB, a seq and a Lamport time past
    2^32 widen it, and every answer stays the same."""
    stored: dict[tuple[int, int], bytes] = {}

    def read(spans):
        return [stored[(row, offset)][:size] for row, offset, size in spans]

    index = EntryIndex(CONTEXT, read)
    entries = [make_entry(CONTEXT, "k", b"%d" % w, {}, 1 + w, f"{w:064x}", 1, 1, 0)
               for w in range(255)]
    slots = index.add_records([e.record for e in entries], [_fields(e) for e in entries])
    for slot, entry in zip(slots, entries, strict=True):
        stored[(slot, 7)] = entry.record
        index.stored(slot, slot, 7, len(entry.record))
    assert [index.lamport.typecode, index.seq.typecode, index.writer.typecode,
            index.row.typecode, index.offset.typecode, index.size.typecode] == list("IBBBBH")
    assert index.order == range(255)  # (in causal order so far: no column for it)
    big = [make_entry(CONTEXT, "k", b"x" * 70_000, {}, 2**40, "ff" * 32, 1, 2**33, 0),
           make_entry(CONTEXT, "j", b"y", {}, 3, "fe" * 32, 9, 1, 0)]
    more = index.add_records([e.record for e in big], [_fields(e) for e in big])
    assert [index.lamport.typecode, index.seq.typecode, index.writer.typecode] == list("QQH")
    for slot, entry, (row, offset) in zip(more, big, [(70_000, 2**32 + 3), (1, 5)], strict=True):
        stored[(row, offset)] = entry.record
        index.stored(slot, row, offset, len(entry.record))
    assert [index.row.typecode, index.offset.typecode, index.size.typecode] == list("IQI")
    assert index.order.typecode == "I"  # (big[1] sorts before big[0])
    everything = entries + big
    assert list(EntriesInOrder(index)) == sorted(everything, key=_ORDER)
    assert [index.entry(slot) for slot in slots + more] == everything
    assert index.entry_at(big[0].writer, 2**33) == big[0] and index.max_seq(big[0].writer) == 2**33
    assert index.get("j")[0] == [big[1]] and index.unstored == {}


def _chain(origin: str, first_seq: int, lamports: list[int], keys: list[str],
           size: int = 40) -> list[Entry]:
    """Entries of one writer at seqs ``first_seq`` on, each naming the one before (records
    of one size when the keys are)."""
    out, prev = [], NO_PREV if first_seq == 1 else bytes(range(32))
    for i, (lamport, key) in enumerate(zip(lamports, keys, strict=True)):
        entry = make_entry(CONTEXT, key, bytes([i % 256]) * size, {}, lamport, origin, 3,
                           first_seq + i, 10 + i, prev)
        out.append(entry)
        prev = bytes.fromhex(entry.id)
    return out


def _run_row(entries: list[Entry], clock: int) -> tuple[bytes, object]:
    """A stored row holding ``entries`` as one run of our client's items (a few bytes of
    bundle framing first), and where ``yjs.even_run`` finds them."""
    from p2p_ledger.core.yjs import encode_appended, even_run

    blob = b"\x00\x07" + encode_appended(99, clock, [e.record for e in entries])
    run = even_run(blob, 2)
    assert run is not None and run.length == len(entries)
    return blob, run


def _snapshot(index: EntryIndex) -> tuple:
    """Every column and every answer of an index."""
    return (bytes(index.ids), list(index.lamport), list(index.seq), list(index.writer),
            list(index.key_hash), list(index.order), list(index.row), list(index.offset),
            list(index.size), index.writers, index.contiguous, {w: index.max_seq(w) for w in
            index.writers}, index.max_lamport, index.forks,
            [index.find(index.raw_id(s)) for s in range(len(index))],
            index.get(), index.get("a"), index.get(limit=3),
            [index.slot_at(w, q) for w in range(len(index.writers)) for q in range(0, 40)])


@pytest.mark.parametrize("keys", ["same", "several", "sizes"])
def test_a_run_read_as_columns_is_indexed_as_its_records_are(keys: str) -> None:
    """``add_run`` of records stored as an even run gives the index ``add_records`` and
    ``stored`` give (columns, lookups, reads), for runs of two writers continuing their
    seqs, keys equal, differing, or of different sizes; the ids join the table on use."""
    rows: dict[int, bytes] = {}

    def read(spans):
        return [rows[row][offset : offset + size] for row, offset, size in spans]

    key_of = {"same": lambda i: "k", "several": lambda i: "ab"[i % 2],
              "sizes": lambda i: "a" * (1 + i % 2)}[keys]
    a, b = "aa" * 32, "bb" * 32
    runs = [_chain(a, 1, list(range(1, 21)), [key_of(i) for i in range(20)], 41),
            _chain(b, 1, list(range(30, 50)), [key_of(i) for i in range(20)], 41),
            _chain(a, 21, list(range(60, 90)), [key_of(i + 1) for i in range(30)], 41)]
    if keys == "sizes":  # (one size of record per run: the payload makes up for the key)
        runs = [[make_entry(CONTEXT, e.key, bytes(41 - len(e.key)), {}, e.lamport, e.origin, 3,
                            e.seq, e.appended_at_ns, e.prev) for e in run] for run in runs]
    by_columns, by_records = EntryIndex(CONTEXT, read), EntryIndex(CONTEXT, read)
    clock = 0
    for row, run in enumerate(runs):
        blob, found = _run_row(run, clock + 1)
        clock += len(run)
        rows[row] = blob
        assert by_columns.add_run(blob, found.at, found.length, found.stride, found.size, row)
        slots = by_records.add_records([e.record for e in run], [_fields(e) for e in run])
        for i, slot in enumerate(slots):
            by_records.stored(slot, row, found.at + i * found.stride, found.size)
    assert by_columns._placed == 0  # (nothing looked up yet)
    assert _snapshot(by_columns) == _snapshot(by_records)
    more = _chain(b, 21, [95, 96], ["k", "k"])
    assert by_columns.add_records([e.record for e in more], [_fields(e) for e in more]) == \
        by_records.add_records([e.record for e in more], [_fields(e) for e in more])
    assert _snapshot(by_columns) == _snapshot(by_records)


def test_records_added_before_a_loads_ids_are_placed_are_indexed_as_after() -> None:
    """``add_records`` right after ``add_run`` (no lookup yet) answers as once every id is
    placed: records at free positions (a held writer's next ones, a new writer's) leave the
    ids unplaced; a record held already is skipped, one repeated in its batch indexed once,
    a fork at a held position kept, each as by an index whose ids were all placed."""
    a, b = "aa" * 32, "bb" * 32
    blob, run = _run_row(_chain(a, 1, list(range(10, 30)), ["k"] * 20), 1)
    held = _chain(a, 1, list(range(10, 30)), ["k"] * 20)
    nxt = _chain(a, 21, [30, 31], ["k", "k"])
    nxt[0] = make_entry(CONTEXT, "k", b"n", {}, 30, a, 3, 21, 0, bytes.fromhex(held[-1].id))
    nxt[1] = make_entry(CONTEXT, "k", b"m", {}, 31, a, 3, 22, 0, bytes.fromhex(nxt[0].id))
    other = _chain(b, 1, [32], ["j"])
    fork = make_entry(CONTEXT, "k", b"f", {}, 33, a, 3, 5, 0, bytes.fromhex(held[3].id))
    probes = [([held[7]], 0), ([*_chain(b, 2, [40], ["j"])] * 2, 1), ([fork], 1),
              ([nxt[1], held[0]], 0), (_chain(b, 2, [40], ["j"]), 1)]
    for probe, added in probes:
        for placed_first in (False, True):
            lazy, eager = (EntryIndex(CONTEXT, lambda spans: [blob[o : o + n]
                                                              for _, o, n in spans])
                           for _ in range(2))
            for index in (lazy, eager):
                assert index.add_run(blob, run.at, run.length, run.stride, run.size, 0)
            eager._place_ids()  # (every id placed)
            for i, batch in enumerate([nxt, other, probe]):
                if placed_first and i == 1:
                    lazy._place_ids()
                records, fields = [e.record for e in batch], [_fields(e) for e in batch]
                got = lazy.add_records(records, fields)
                assert got == eager.add_records(records, fields)
                assert len(got) == (added if i == 2 else len(batch))
                if i < 2 and not placed_first:
                    assert lazy._placed == 0  # (free positions: nothing placed yet)
            assert _snapshot(lazy) == _snapshot(eager)
            if probe[0] is fork:
                assert lazy.forks == {(fork.writer, 5): sorted([held[4].id, fork.id])}


def test_records_that_are_not_a_run_after_the_held_ones_are_left_to_add_records() -> None:
    """``add_run`` takes nothing when the records are of two writers, do not continue their
    writer's seqs, or are not each after the last held in causal order: False, the index
    unchanged."""
    a, b = "aa" * 32, "bb" * 32
    blob, run = _run_row(_chain(a, 1, list(range(10, 30)), ["k"] * 20), 1)
    first = blob
    index = EntryIndex(CONTEXT, lambda spans: [first[o : o + n] for _, o, n in spans])
    assert index.add_run(blob, run.at, run.length, run.stride, run.size, 0)
    before = _snapshot(index)
    mixed = _chain(a, 21, list(range(40, 50)), ["k"] * 10) + \
        _chain(b, 1, list(range(50, 60)), ["k"] * 10)
    refused = [mixed,
               _chain(a, 22, list(range(40, 60)), ["k"] * 20),  # (seq 21 missing)
               _chain(a, 21, list(range(29, 49)), ["k"] * 20),  # (not after Lamport 29)
               _chain(a, 21, [40, 41, 43, 42] * 5, ["k"] * 20)]  # (falling within the run)
    for entries in refused:
        blob, run = _run_row(entries, 21)
        assert not index.add_run(blob, run.at, run.length, run.stride, run.size, 1)
        assert _snapshot(index) == before


def _next_of(index: EntryIndex, origin: str, chain: int, lamports: list[int],
             key: str = "k") -> list[Entry]:
    """The next entries of writer ``origin.chain`` after what ``index`` holds of it."""
    writer = f"{origin}.{chain:016x}"
    seq = index.max_seq(writer)
    slot = None if index.writer_index(writer) is None else \
        index.slot_at(index.writer_index(writer), seq)  # type: ignore[arg-type]
    prev = NO_PREV if slot is None else index.raw_id(slot)
    out = []
    for i, lamport in enumerate(lamports):
        entry = make_entry(CONTEXT, key, b"%d" % (seq + i), {}, lamport, origin, chain,
                           seq + i + 1, 7, prev)
        out.append(entry)
        prev = bytes.fromhex(entry.id)
    return out


def _placed_table(index: EntryIndex) -> bytes:
    """The id table ``index`` holds once every id waiting is placed (``_place_ids``, on a copy:
    an id of ours may wait where ``add_records`` placed it)."""
    placed = copy.copy(index)
    placed._table = array(index._table.typecode, index._table)
    placed._place_ids()
    return bytes(placed._table)


@pytest.mark.parametrize("seed", range(30))
def test_the_next_entries_of_a_writer_are_indexed_as_add_records_indexes_them(
        seed: int) -> None:
    """``add_next`` (our appends' path) leaves the index ``add_records`` leaves (columns,
    table, order, seqs, contiguity, answers) or takes nothing: twins fed the same seeded
    batches — our next entries (one or many), a peer's entries between them, forks and a far
    seq at our next positions, falling and equal Lamport times, 2^40 ones, 256 writers before ours —
    after a cold load whose ids wait to be placed (``add_run``), looked up at random."""
    rng = random.Random(seed)
    rows: dict[int, bytes] = {}

    def read(spans):
        return [rows[row][offset : offset + size] for row, offset, size in spans]

    ours, peer = "aa" * 32, "bb" * 32
    fast, twin = EntryIndex(CONTEXT, read), EntryIndex(CONTEXT, read)
    if rng.random() < 0.7:  # a cold load: a run of ours, its ids not placed yet
        blob, run = _run_row(_chain(ours, 1, list(range(1, 21)), ["k"] * 20), 1)
        rows[0] = blob
        for index in (fast, twin):
            assert index.add_run(blob, run.at, run.length, run.stride, run.size, 0)
    if rng.random() < 0.3:  # 256 writers before ours: its index widens the writer column
        others = [make_entry(CONTEXT, "o", b"", {}, 25, f"{w:064x}", 1, 1, 0)
                  for w in range(256)]
        for index in (fast, twin):
            index.add_records([e.record for e in others], [_fields(e) for e in others])
    lamport, taken = 30, 0
    for step in range(60):
        style = rng.random()
        if style < 0.55:  # our next entries
            count = rng.choice((1, 1, 1, 2, 5, 128))
            step = rng.choice((1, 1, 1, 0, -1)) if rng.random() < 0.1 else 1
            lamports = [lamport + 1 + max(i * step, -lamport) for i in range(count)]
            if rng.random() < 0.05:
                lamports = [2**40 + i for i in range(count)]
            lamport = max(lamport, *lamports)
            batch = _next_of(fast, ours, 3, lamports)
        elif style < 0.75:  # a peer's next entries, perhaps sorting before ours
            lamport += 1
            batch = _next_of(fast, peer, rng.randint(0, 300) if rng.random() < 0.2 else 1,
                             [lamport - rng.choice((0, 0, 5))])
        elif style < 0.85:  # a fork at our next position, or of an entry we hold
            batch = _next_of(fast, ours, 3, [lamport + 1], key="fork")
            if rng.random() < 0.5 and len(fast):
                mine = fast.writer_index(f"{ours}.{3:016x}")
                if mine is not None and fast.max_seq(f"{ours}.{3:016x}") > 1:
                    at = rng.randint(1, fast.max_seq(f"{ours}.{3:016x}"))
                    batch = [make_entry(CONTEXT, "fork", b"f", {}, lamport + 1, ours, 3, at,
                                        9, b"\x02" * 32)]
        elif style < 0.9 and step > 45:  # a hostile far seq of ours (none taken after it)
            batch = [make_entry(CONTEXT, "far", b"", {}, lamport + 1, ours, 3,
                                fast.max_seq(f"{ours}.{3:016x}") + rng.choice((2, 5000)),
                                0, b"\x01" * 32)]
        else:  # what we hold already, offered again
            held = [fast.entry(s) for s in rng.sample(range(len(fast)), min(len(fast), 2))]
            batch = held or _next_of(fast, ours, 3, [lamport + 1])
        records, fields = [e.record for e in batch], [_fields(e) for e in batch]
        got = fast.add_next(records, fields)
        if got is None:
            got = fast.add_records(records, fields)
        else:
            taken += 1
        assert got == twin.add_records(records, fields)
        if rng.random() < 0.2:  # lookups (searches while ids wait), or every id placed
            probes = [bytes(32), bytes(fast.ids[16:48]),
                      *map(fast.raw_id, rng.sample(range(len(fast)), min(8, len(fast))))]
            assert [fast.find(p) for p in probes] == [twin.find(p) for p in probes]
        if rng.random() < 0.05:
            for index in (fast, twin):
                index._place_ids()
        assert _snapshot(fast) == _snapshot(twin) and fast.new_forks == twin.new_forks
        assert fast.unstored == twin.unstored and _placed_table(fast) == _placed_table(twin)
    assert taken > 10


def test_add_next_takes_nothing_that_is_not_a_writers_next_entries() -> None:
    """None, and the index unchanged, for records of two writers, seqs that skip or repeat,
    a position held (a fork), Lamport times not after the last held or falling in the batch,
    or any far seq held."""
    a, b = "aa" * 32, "bb" * 32
    index = EntryIndex(CONTEXT)
    first = _next_of(index, a, 3, [10, 11])
    assert index.add_next([e.record for e in first], [_fields(e) for e in first]) == [0, 1]
    before = _snapshot(index)
    nxt = _next_of(index, a, 3, [12, 13, 14])
    refused = [nxt[:1] + _next_of(index, b, 1, [13]), nxt[1:], [nxt[0], nxt[0]],
               [nxt[0], nxt[2]], first[1:], _next_of(index, a, 3, [11]),
               _next_of(index, a, 3, [12, 14, 13]), _next_of(index, a, 3, [12, 12])]
    for batch in refused:
        assert index.add_next([e.record for e in batch], [_fields(e) for e in batch]) is None
        assert _snapshot(index) == before
    far = make_entry(CONTEXT, "far", b"", {}, 20, b, 1, 2**60, 0,
                     b"\x01" * 32)
    index.add_records([far.record], [_fields(far)])
    assert index.add_next([nxt[0].record], [_fields(nxt[0])]) is None


def test_ids_of_one_record_appends_wait_to_be_placed_a_bounded_number_at_a_time() -> None:
    """Our one-record appends' ids wait to be placed (found meanwhile by searching them); a
    batch of our appends places them first, and one-record appends place theirs once
    ``_WAITING_MAX`` wait; every id is found at its slot throughout."""
    from p2p_ledger.core.index import _WAITING_MAX

    a = "aa" * 32
    index = EntryIndex(CONTEXT)
    added: list[Entry] = []

    def one(count: int) -> None:
        for _ in range(count):
            entry = _next_of(index, a, 3, [len(added) + 1])[0]
            assert index.add_next([entry.record], [_fields(entry)]) == [len(added)]
            added.append(entry)

    one(10)
    assert index._placed == 0
    batch = _next_of(index, a, 3, [11, 12])
    assert index.add_next([e.record for e in batch], [_fields(e) for e in batch]) == [10, 11]
    added += batch
    assert index._placed == 12
    one(_WAITING_MAX + 5)
    assert index._placed == 12 + _WAITING_MAX
    assert [index.find(bytes.fromhex(e.id)) for e in added] == list(range(len(added)))
    assert index.find(bytes(32)) is None


def test_lookups_while_a_loads_ids_wait_answer_as_once_they_are_placed() -> None:
    """While a load's ids wait to be placed, the first lookups search them (``_SCANS``):
    each held id is found at its slot, bytes across two ids or an id not held are not;
    the next lookup places every id, and the answers stay the same."""
    from p2p_ledger.core.index import _SCANS

    a = "aa" * 32
    held = _chain(a, 1, list(range(10, 30)), ["k"] * 20)
    blob, run = _run_row(held, 1)
    index = EntryIndex(CONTEXT, lambda spans: [blob[o : o + n] for _, o, n in spans])
    index.reserve(20)  # (as a load does: the table sized, nothing in it)
    assert index.add_run(blob, run.at, run.length, run.stride, run.size, 0)
    more = _next_of(index, a, 3, [40, 41])
    for slot, entry in enumerate(more, 20):  # (one record at a time: its id waits too)
        assert index.add_next([entry.record], [_fields(entry)]) == [slot]
    raw = [bytes.fromhex(e.id) for e in held + more]
    probes = [*raw, bytes(index.ids[16:48]), bytes(32)]
    expected = [*range(22), None, None]
    assert _SCANS < 2 * len(probes)
    assert [index.find(p) for p in probes] == expected and index._placed == 0
    assert [index.find(p) for p in probes] == expected and index._placed == 22
