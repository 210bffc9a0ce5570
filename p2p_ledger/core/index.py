"""The read model of one context in columns: its entries' ids, causal order and writers' seqs.

A loaded context used to hold one ``Entry`` object per entry (its record body, a payload copy,
the hex id, meta, boxed ints: ~950 B per 100 B entry, measured with tracemalloc on 100k
entries), then every record back to back in one buffer (~310 B per 100 B entry, 263 B of it the
records). Here an entry is a *slot* number, and memory holds only what lookups and ordering
need, in flat arrays (65 B per entry at 1M, whatever the size: see ``_WIDER``):

- ``ids`` holds every entry's 32-byte id back to back (``find`` compares them);
- ``lamport``, ``seq``, ``writer`` (an index into ``writers``) and ``key_hash`` (a keyed hash of
  the entry's key, for reads by key) are arrays of machine ints;
- ``order`` lists the slots in causal order, (Lamport time, id): a ``range`` while that is the
  order they came in;
- ``row``, ``offset`` and ``size`` say where the record lies in the context's stored rows (a
  ``storage.Span``: the row's number in the context, the offset in it, the record's size);
- an open-addressing table of slot numbers finds a slot by id (the ids ``add_run`` added join
  it after ``_SCANS`` lookups that search them: a load's first page needs none; so do those
  of our one-record appends, at most ``_WAITING_MAX`` at a time); a writer's
  seqs map to slots through one array per writer (a ``range`` while its slots follow one
  another; a dict for seqs far beyond a writer's run, so a hostile seq of 2^60 costs one dict
  item, not an array that long).

Records themselves are read from storage (``read``: ``Storage.read_spans`` for this context)
when a read, a page, a watch, a proof or a check needs them; each one read is checked against
its id (its place and its content's sha256: ``add_run`` indexes stored records unhashed). A
record not stored yet — its row is staged, or not committed yet, or the index has no
storage (a ``ContextLog`` made without one, as tests do) — stays in ``unstored`` until the
owner says where it was stored (``stored``, ``ContextLog.stored_row``): appends and ingest never
read storage.

``Entry`` objects are decoded only when a read, a page, a watch or a proof hands one out
(``entry``). Records are trusted here: the caller checked them (content id, canonical form,
context) before adding them.

Forks (two authentic entries at one writer position) keep the first one in the writer's seq
array and list every id in ``forks``; a read delivers each, as ``get`` describes.
"""

from __future__ import annotations

import bisect
import hashlib
import operator
import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import overload

from .cursor import Cursor
from .entry import ID_SIZE, Entry, decode_body
from .errors import IntegrityError
from .storage import Span

_PREV_SIZE = 32  # a record ends with its prev
# A record ends with a tail of Lamport time, writer (origin, chain), seq, wall time and prev:
# where each starts, counted back from the record's end.
_TAIL_SIZE = _LAMPORT_AT = 96
_WRITER_AT, _WRITER_SIZE = 88, 40
_SEQ_AT = 48
_LITTLE = sys.byteorder == "little"
_SAME_KEY_MAX = 64  # a run's keys are compared as columns up to this size (one hash if equal)
_FAR = 4096  # a seq this far beyond its writer's array goes to the far dict instead
_U32 = struct.Struct(">I")
_HASH_MASK = 0xFFFFFFFF
_PLACE_PIECE = 4096  # ids hashed at a time by _place_ids (their copies: 4096 x 65 B)
# Ids of our one-record appends that may wait to be placed (``add_next_one``): placing them
# then takes ~2 ms, and a lookup's search of them (``find``) ~10 us.
_WAITING_MAX = 4096
# why: lookups by id while a load's ids wait search their buffer, up to this many, before
# placing them all: at 1M ids a search takes ~2-4 ms (in C) against ~0.43 CPU-s to place
# them, so a cold context's first lookups (a peer's question, a proof) cost a few ms, and a
# context looked up often pays at most ~0.13 CPU-s more before its table is built
_SCANS = 32
# Entries built per storage read when a whole sequence of them is walked (a snapshot, a watch
# of a large catch-up): one read per this many, not one per entry.
READ_BATCH = 1024

# Reads the bytes at spans of this context's stored rows (``Storage.read_spans``).
Reader = Callable[[Sequence[Span]], list[bytes]]

# why: an index column holds the narrowest machine int its values so far fit (a context's
# Lamport times, seqs, offsets in a row stay below 2^32, its rows below 2^16 up to ~8M entries
# of 128 per commit, its writers below 256, its records below 64 KiB) and is copied to a wider
# one when a value does not fit (a hostile seq or Lamport time, a long history). 1M appends of
# 100 B into one context: the index held 92.8 B per entry with 8-byte Lamport times, seqs and
# offsets, 4-byte writers, rows and sizes, the order and the writer's seqs as arrays and an id
# table at most half full (tracemalloc); 65.1 B like this (with the order and seqs as ranges
# and the table at most 2/3 full, below), 34.7 of it the ids. Seqs, rows and offsets start one
# byte wide: spread over 10,000 contexts a context's 100 entries sit in 100 rows of one entry
# (offsets ~30) and a writer's seqs stay below 256, ~0.5 KB of each context's ~24 KB of RSS.
_WIDER = {"B": "H", "H": "I", "I": "Q"}


def _widened(col: array[int], value: int) -> array[int]:
    """``col`` copied to the narrowest wider type that holds ``value``, ``value`` appended."""
    while True:
        col = array(_WIDER[col.typecode], col)
        try:
            col.append(value)
        except OverflowError:
            continue
        return col


def _fitted(col: array[int], top: int) -> array[int]:
    """``col``, or a copy of it wide enough for values up to ``top``."""
    while True:
        try:
            array(col.typecode, (top,))
        except OverflowError:
            col = array(_WIDER[col.typecode], col)
            continue
        return col


def _extended(col: array[int], values: list[int]) -> array[int]:
    """``col`` with ``values`` appended, in a copy wide enough for them if they do not fit."""
    try:
        col.fromlist(values)  # (all or nothing)
    except OverflowError:
        col = _fitted(col, max(values))
        col.fromlist(values)
    return col


def _repeated(col: array[int], value: int, count: int) -> array[int]:
    """``col`` with ``value`` appended ``count`` times (it fits), in one copy."""
    col.frombytes(array(col.typecode, (value,)).tobytes() * count)
    return col


def _put(col: array[int], slot: int, value: int) -> array[int]:
    """``col[slot] = value``, in a wider copy of ``col`` if it does not fit (returned)."""
    try:
        col[slot] = value
    except OverflowError:
        col = _widened(col, value)
        col.pop()
        col[slot] = value
    return col


def writer_name(raw: bytes) -> str:
    """A writer's cursor key from its raw form (32 B origin ‖ u64 chain): ``Entry.writer``."""
    return f"{raw[:32].hex()}.{raw[32:].hex()}"


class EntryIndex:
    def __init__(self, name: str, read: Reader | None = None) -> None:
        self.name = name
        self.read = read  # None: every record stays in ``unstored``
        self.ids = bytearray()
        # (each column as narrow as its values so far: ``_widened`` when one does not fit)
        self.lamport = array("I")
        self.seq = array("B")
        self.writer = array("B")
        self.key_hash = array("I")
        # why: slots are mostly in causal order already (our appends, a catch-up in order): the
        # order is then the range of the slots, 4 B per entry less, until a slot sorts earlier
        self.order: array[int] | range = range(0)
        self.row = array("B")
        self.offset = array("B")
        self.size = array("H")
        self.unstored: dict[int, bytes] = {}  # slot → its record, until ``stored``
        # why: ids are found through this open-addressing table of slot + 1 (0 = empty), kept
        # at most 2/3 full (2-byte places while it has at most 2^16: a context of 100 entries
        # has 256, 1.2 KB of its ~24 KB of RSS with 4-byte ones): 6-12 B per entry, against
        # ~140 B for a dict of 32-byte id objects to boxed slot numbers. The probe starts at
        # Python's hash of the id, which is keyed per process (SipHash), so a peer cannot grind
        # ids that collide here (nor keys that collide in ``key_hash``, which a read by key
        # then checks against the record anyway).
        self._table = array("H", bytes(2 * 16))
        self._placed = 0  # slots whose ids are in the table: the rest are placed on next use
        self._scans = 0  # lookups that searched the ids not placed (see find)
        self._own_waiting = 0  # of them, the last ones: our one-record appends' (add_next_one)
        self.writers: list[str] = []  # writer index → cursor key
        self._writer_of: dict[str, int] = {}
        self._writer_raw: dict[bytes, int] = {}
        # writer index → slot + 1 at seq - 1 (0: none); a range while its slots follow one
        # another (a writer's appends, a catch-up of one writer): 4 B per entry less
        self._seqs: list[array[int] | range] = []
        self._far: dict[tuple[int, int], int] = {}  # (writer index, seq) → slot, see _FAR
        # Highest seq per writer below which nothing is missing: reads deliver only up to it so
        # that a cursor never jumps over an entry that arrives late.
        self.contiguous: dict[str, int] = {}
        self._max_seq: dict[str, int] = {}
        self.max_lamport = 0
        # (writer, seq) → the ids of every authentic entry there, when there is more than one
        self.forks: dict[tuple[str, int], list[str]] = {}
        self.new_forks: list[tuple[str, int]] = []  # for the ledger to report, then clear
        self._key_at = ID_SIZE + 9 + len(name.encode("utf-8"))  # where a record's key starts

    def __len__(self) -> int:
        return len(self.lamport)

    # ---- one slot --------------------------------------------------------------------------

    def records(self, slots: Sequence[int]) -> list[bytes]:
        """The records at ``slots``: those not stored yet from memory, the others read from
        storage in one call, each checked against its id (IntegrityError: the stored rows
        changed under the index)."""
        unstored = self.unstored
        out = [unstored.get(slot, b"") for slot in slots]
        wanted = [i for i, record in enumerate(out) if not record]
        if not wanted:
            return out
        read = self.read
        if read is None:
            raise IntegrityError(f"context {self.name}: a record without storage is not held")
        row, offset, size, ids = self.row, self.offset, self.size, self.ids
        spans = [(row[s], offset[s], size[s]) for s in (slots[i] for i in wanted)]
        for i, record in zip(wanted, read(spans), strict=True):
            slot = slots[i]
            if len(record) != size[slot] or not ids.startswith(record[:ID_SIZE], ID_SIZE * slot) \
                    or hashlib.sha256(record[ID_SIZE:]).digest() != record[:ID_SIZE]:
                raise IntegrityError(
                    f"context {self.name}: the stored record of entry "
                    f"{self.raw_id(slot).hex()} is not where the index says (row {row[slot]}) "
                    "or does not match its id")
            out[i] = record
        return out

    def record(self, slot: int) -> bytes:
        return self.records((slot,))[0]

    def raw_id(self, slot: int) -> bytes:
        start = ID_SIZE * slot
        return bytes(self.ids[start : start + ID_SIZE])

    def prev(self, slot: int) -> bytes:
        record = self.unstored.get(slot)
        if record is None and self.read is not None:
            # (the last 32 bytes of the stored record: a walk up a chain reads no more)
            end = self.offset[slot] + self.size[slot]
            return self.read([(self.row[slot], end - _PREV_SIZE, _PREV_SIZE)])[0]
        return (record or self.record(slot))[-_PREV_SIZE:]

    def _key_of(self, record: bytes) -> bytes:
        at = self._key_at
        (size,) = _U32.unpack_from(record, at)
        return record[at + 4 : at + 4 + size]

    def key_bytes(self, slot: int) -> bytes:
        return self._key_of(self.record(slot))

    def entry(self, slot: int) -> Entry:
        return self.entries((slot,))[0]

    def entries(self, slots: Sequence[int]) -> list[Entry]:
        return [decode_body(record[ID_SIZE:], record[:ID_SIZE].hex())
                for record in self.records(slots)]

    def stored(self, slot: int, row: int, offset: int, size: int) -> None:
        """The record of ``slot`` lies at (``row``, ``offset``, ``size``) of the context's
        stored rows (checked by the caller): memory lets it go."""
        try:
            self.row[slot], self.offset[slot], self.size[slot] = row, offset, size
        except OverflowError:  # (a column too narrow: widen what must be)
            self.row = _put(self.row, slot, row)
            self.offset = _put(self.offset, slot, offset)
            self.size = _put(self.size, slot, size)
        self.unstored.pop(slot, None)

    def writer_index(self, writer: str) -> int | None:
        return self._writer_of.get(writer)

    # ---- lookups -----------------------------------------------------------------------------

    def find(self, raw_id: bytes) -> int | None:
        """The slot of the entry with this 32-byte id, or None.

        While ids of a load wait to be placed (``add_run``), the first ``_SCANS`` lookups
        search the buffer of those ids for it (in C) and the table for the others; the next
        lookup places them all."""
        waiting = self._placed != len(self.lamport)
        if waiting and (self._scans >= _SCANS or len(raw_id) != ID_SIZE):
            self._place_ids()
            waiting = False
        table, ids = self._table, self.ids
        mask = len(table) - 1
        i = hash(raw_id) & mask
        while held := table[i]:
            if ids.startswith(raw_id, ID_SIZE * (held - 1)):
                return held - 1
            i = (i + 1) & mask
        if not waiting:
            return None
        self._scans += 1
        at = ids.find(raw_id, ID_SIZE * self._placed)
        while at >= 0 and at % ID_SIZE:  # (bytes across two ids: not this id)
            at = ids.find(raw_id, at + 1)
        return at // ID_SIZE if at >= 0 else None

    def find_hex(self, entry_id: str) -> int | None:
        if len(entry_id) != 2 * ID_SIZE:
            return None
        try:
            raw = bytes.fromhex(entry_id)
        except ValueError:
            return None
        return self.find(raw)

    def slot_at(self, writer: int, seq: int) -> int | None:
        """The (first) slot at a writer's position."""
        seqs = self._seqs[writer]
        if 0 < seq <= len(seqs):
            held = seqs[seq - 1]
            if held:
                return held - 1
        return self._far.get((writer, seq)) if self._far else None

    def entry_at(self, writer: str, seq: int) -> Entry | None:
        index = self._writer_of.get(writer)
        slot = None if index is None else self.slot_at(index, seq)
        return None if slot is None else self.entry(slot)

    def max_seq(self, writer: str) -> int:
        return self._max_seq.get(writer, 0)

    def successor(self, slot: int) -> int | None:
        """The slot one seq above ``slot`` on its writer that names it as prev, if held."""
        raw = self.raw_id(slot)
        writer, seq = self.writer[slot], self.seq[slot] + 1
        above = self.slot_at(writer, seq)
        if above is not None and self.prev(above) == raw:
            return above
        for other in self.forks.get((self.writers[writer], seq), ()):
            found = self.find_hex(other)
            if found is not None and self.prev(found) == raw:
                return found
        return None

    def vouched_by_held(self, writer: str, seq: int, raw_id: bytes) -> bool:
        """An entry we hold, one seq above on ``writer``, names ``raw_id`` as its prev."""
        index = self._writer_of.get(writer)
        above = None if index is None else self.slot_at(index, seq + 1)
        if above is None:
            return False
        if self.prev(above) == raw_id:
            return True
        return any(self.prev(s) == raw_id for s in
                   (self.find_hex(i) for i in self.forks.get((writer, seq + 1), ()))
                   if s is not None)

    def _order_key(self, slot: int) -> tuple[int, bytes]:
        return self.lamport[slot], self.raw_id(slot)

    # ---- writes ------------------------------------------------------------------------------

    def _writer_for(self, writer: str, raw: bytes) -> int:
        index = self._writer_of.get(writer)
        if index is None:
            index = len(self.writers)
            self.writers.append(writer)
            self._writer_of[writer] = index
            self._writer_raw[raw] = index
            self._seqs.append(range(0))
        return index

    def reserve(self, more: int) -> None:
        """Size the id table for ``more`` entries at once (a catch-up's batch) instead of
        doubling it, and placing every held id again, several times while they are added."""
        size = len(self._table)
        while 3 * (len(self) + more) > 2 * size:
            size *= 2
        if size > len(self._table):
            self._grow(size)

    def add_records(self, records: Sequence[bytes | bytearray],
                    fields: Sequence[tuple[bytes, int, int, bytes, bytes]]) -> list[int]:
        """Index checked records, given each one's fields as ``entry.fresh_record_fields``
        gives them, (raw id, lamport, seq, prev, raw writer) (the id and prev are read from
        the record); returns the slots of those new here (one already held, e.g. found by id
        and then by Yjs, is skipped). Their records wait in ``unstored`` until ``stored``.

        why: a catch-up indexes a whole update at once; per batch (one table size, locals, each
        writer's contiguity and top seq once at the end) it costs 1.8 µs less per entry than
        one call per record growing the table as it goes (20k x 100 B, one context).

        While ids of a load wait to be placed (``add_run``), records whose writer positions
        are all free here (an append's, a peer's next entries) join them unplaced: an id names
        its writer and seq (it hashes the record, which holds both), so an id held already
        would be at its position. Any other batch places every id first.

        why: the first append after a cold load of a context of 1M placed its 1M ids
        (~1.0 CPU-s, cProfile) for one new entry that could not be held."""
        lazy = self._placed != len(self.lamport) and self._positions_free(fields)
        if not lazy:
            if self._placed != len(self.lamport):
                self._place_ids()
            self.reserve(len(records))
        table, ids, unstored = self._table, self.ids, self.unstored
        mask = len(table) - 1
        lamports, seq_col, writer_col, order = self.lamport, self.seq, self.writer, self.order
        key_hash, key_at = self.key_hash, self._key_at
        row_col, offset_col, size_col = self.row, self.offset, self.size
        writer_raw, all_seqs, far, forks = self._writer_raw, self._seqs, self._far, self.forks
        max_lamport = self.max_lamport
        touched: dict[int, int] = {}  # writer index → its top seq in this batch
        new: list[int] = []
        for record, (_, lamport, seq, _, raw_writer) in zip(records, fields, strict=True):
            # (one probe finds the id or the free place for it)
            record = bytes(record)  # (pycrdt hands out bytearrays)
            raw_id = record[:ID_SIZE]
            if not lazy:
                i = hash(raw_id) & mask
                while held := table[i]:
                    if ids.startswith(raw_id, ID_SIZE * (held - 1)):
                        break
                    i = (i + 1) & mask
                if held:
                    continue  # held already
                table[i] = len(lamports) + 1
            writer = writer_raw.get(raw_writer)
            if writer is None:
                writer = self._writer_for(writer_name(raw_writer), raw_writer)
            slot = len(lamports)
            ids += raw_id
            unstored[slot] = record
            (n,) = _U32.unpack_from(record, key_at)
            key_hash.append(hash(record[key_at + 4 : key_at + 4 + n]) & _HASH_MASK)
            try:
                lamports.append(lamport)
            except OverflowError:
                lamports = self.lamport = _widened(lamports, lamport)
            try:
                seq_col.append(seq)
            except OverflowError:
                seq_col = self.seq = _widened(seq_col, seq)
            try:
                writer_col.append(writer)
            except OverflowError:
                writer_col = self.writer = _widened(writer_col, writer)
            if type(order) is range:  # (every slot so far: the range is set after the loop)
                if slot and lamports[slot - 1] >= lamport:
                    self.order = range(slot)
                    self._place(slot)
                    order = self.order
            elif order and lamports[order[-1]] >= lamport:
                self._place(slot)
                order = self.order
            else:
                order.append(slot)  # the common case (local appends, catch-up in order)
            if lamport > max_lamport:
                max_lamport = lamport
            if seq > touched.get(writer, 0):
                touched[writer] = seq
            seqs = all_seqs[writer]
            n = len(seqs)
            at = seqs[seq - 1] - 1 if 0 < seq <= n else -1
            if at < 0 and far:
                at = far.get((writer, seq), -1)
            if at >= 0:
                name = self.writers[writer]
                forked = forks.get((name, seq))
                if forked is None:
                    forked = forks[(name, seq)] = [self.raw_id(at).hex()]
                    self.new_forks.append((name, seq))
                forked.append(raw_id.hex())
                forked.sort()
            elif type(seqs) is range and seq == n + 1 and (not n or seqs.stop == slot + 1):
                all_seqs[writer] = range(seqs.start if n else slot + 1, slot + 2)
            elif 0 < seq <= n + _FAR:
                if not isinstance(seqs, array):
                    seqs = all_seqs[writer] = array("I", seqs)
                if seq <= n:
                    seqs[seq - 1] = slot + 1
                else:
                    seqs.frombytes(bytes(4 * (seq - 1 - n)))
                    seqs.append(slot + 1)
            else:
                far[(writer, seq)] = slot
            new.append(slot)
        self.max_lamport = max_lamport
        if not lazy:
            self._placed = len(lamports)
        if type(order) is range:
            self.order = range(len(lamports))
        for col in (row_col, offset_col, size_col):  # (where each lies: set by ``stored``)
            col.frombytes(bytes(col.itemsize * len(new)))
        contiguous, max_seq = self.contiguous, self._max_seq
        for writer, top in touched.items():
            name, seqs = self.writers[writer], all_seqs[writer]
            # the longest run of seqs 1, 2, ... held (what a read may deliver up to)
            n = len(seqs)
            run = n if type(seqs) is range else contiguous.get(name, 0)  # (a range: no hole)
            while (run < n and seqs[run]) or (far and (writer, run + 1) in far):
                run += 1
            contiguous[name] = run
            if top > max_seq.get(name, 0):
                max_seq[name] = top
        return new

    def add_next(self, records: Sequence[bytes],
                 fields: Sequence[tuple[bytes, int, int, bytes, bytes]]) -> list[int] | None:
        """``add_records`` of records that are one writer's next entries (seqs continuing
        its own, none held beyond them), each after the last held in causal order, as our
        own appends are: the same index, with no step per record for what they cannot be.
        None, and nothing changed, for any other records (``add_records`` takes those).

        An id names its writer and seq, so none of them can be held (nor be a fork, nor
        repeat in the batch): an id is only placed, never looked for, and not even placed
        while a load's ids wait (``add_run``; ids of our one-record appends waiting alone are
        placed first: ``add_next_one``); the writer, its seqs, contiguity and the
        causal order are settled once for the batch.

        why: ``add_records`` was 13% of ``bench --scale``'s ingest into one context (128
        records a call) and 8.1% spread over 10,000 contexts (one a call), py-spy. Into one
        index of 100k, 128 a call, this takes 1.67 us per record against 2.93 (process
        time, medians of 5 alternated runs, load ~5)."""
        if len(fields) == 1:
            return self.add_next_one(records[0], fields[0])
        ids, lamports, seqs, _, raw_writers = zip(*fields, strict=True)
        raw_writer, first, count = raw_writers[0], seqs[0], len(seqs)
        writer = self._writer_raw.get(raw_writer)
        held = self._seqs[writer] if writer is not None else range(0)
        n = len(self.lamport)
        order = self.order
        last = n and self.lamport[n - 1 if type(order) is range else order[-1]]
        if first != len(held) + 1 or lamports[0] <= last or self._far or (count > 1 and (
                raw_writers.count(raw_writer) != count or
                seqs != tuple(range(first, first + count)) or
                not all(map(operator.lt, lamports, islice(lamports, 1, None))))):
            return None
        # (with no far seq, a writer's seqs end at its array's end: the positions are free)
        if writer is None:
            writer = self._writer_for(writer_name(raw_writer), raw_writer)
        name = self.writers[writer]
        end = n + count
        if self._own_waiting and n - self._placed == self._own_waiting:
            self._place_ids()  # (only our one-record appends' ids wait: placed with these)
        if self._placed == n:  # (else they join the load's ids, placed later: find)
            self.reserve(count)
            table = self._table
            mask = len(table) - 1
            slot = n
            for raw_id in ids:
                i = hash(raw_id) & mask
                while table[i]:
                    i = (i + 1) & mask
                slot += 1
                table[i] = slot
            self._placed = end
        self.ids += b"".join(ids)
        key_at = self._key_at
        hashes = []
        unstored = self.unstored
        slot = n
        for record in records:
            record = bytes(record)  # (pycrdt hands out bytearrays)
            unstored[slot] = record
            slot += 1
            (size,) = _U32.unpack_from(record, key_at)
            hashes.append(hash(record[key_at + 4 : key_at + 4 + size]) & _HASH_MASK)
        self.key_hash.fromlist(hashes)
        self.lamport = _extended(self.lamport, list(lamports))
        self.seq = _extended(self.seq, list(seqs))
        self.writer = _extended(self.writer, [writer] * count)
        for col in (self.row, self.offset, self.size):  # (where each lies: set by ``stored``)
            col.frombytes(bytes(col.itemsize * count))
        if type(order) is range:
            self.order = range(end)
        else:
            order.extend(range(n, end))
        if type(held) is range and (not held or held.stop == n + 1):
            held = self._seqs[writer] = range(held.start if held else n + 1, end + 1)
        else:
            if type(held) is range:
                held = self._seqs[writer] = array("I", held)
            held.extend(range(n + 1, end + 1))
        if type(held) is range:
            run = len(held)
        else:  # (the longest run of seqs 1, 2, ... held, as add_records counts it)
            run = self.contiguous.get(name, 0)
            while run < len(held) and held[run]:
                run += 1
        self.contiguous[name] = run
        self._max_seq[name] = first + count - 1
        if lamports[-1] > self.max_lamport:
            self.max_lamport = lamports[-1]
        return list(range(n, end))

    def add_next_one(self, record: bytes,
                     fields: tuple[bytes, int, int, bytes, bytes]) -> list[int] | None:
        """``add_next`` of one record, in as few steps as it takes.

        why: spread over 10,000 contexts every call is of one record (our one append to a
        context in a commit): 2.74 us a call, against 4.81 through ``add_next``'s batch
        steps (columns of the fields, checks over them, a loop per column) and 5.14 through
        ``add_records`` (20k calls into one index, process time, medians of 5 alternated
        runs, load ~5)."""
        raw_id, lamport, seq, _, raw_writer = fields
        writer = self._writer_raw.get(raw_writer)
        held = self._seqs[writer] if writer is not None else range(0)
        # (the last slot in causal order holds the highest Lamport time: ``max_lamport``)
        if seq != len(held) + 1 or lamport <= self.max_lamport or self._far:
            return None
        # (with no far seq, a writer's seqs end at its array's end: the position is free)
        if writer is None:
            writer = self._writer_for(writer_name(raw_writer), raw_writer)
        self.max_lamport = lamport
        lamports = self.lamport
        n = len(lamports)
        # why: its id waits to be placed in the table, as a load's ids do (``find`` searches
        # the ids waiting, ``_place_ids`` places them): spread over 10,000 contexts nothing
        # looks our appends up by id while they come, and placing each one touched the
        # context's table, cold by then (``append_local`` in-process, 200k appends over
        # 10,000 contexts: 11.2-13.4 -> 10.2-11.4 us, 3 alternated runs). While none of a
        # load's ids wait, ours are placed once ``_WAITING_MAX`` of them wait (with a
        # load's, they wait for lookups as those do).
        if n - self._placed == self._own_waiting:
            if self._own_waiting == _WAITING_MAX:
                self._place_ids()
            self._own_waiting += 1
        self.ids += raw_id
        record = bytes(record)  # (pycrdt hands out bytearrays)
        self.unstored[n] = record
        at = self._key_at
        (size,) = _U32.unpack_from(record, at)
        self.key_hash.append(hash(record[at + 4 : at + 4 + size]) & _HASH_MASK)
        try:
            lamports.append(lamport)
        except OverflowError:
            self.lamport = _widened(lamports, lamport)
        try:
            self.seq.append(seq)
        except OverflowError:
            self.seq = _widened(self.seq, seq)
        try:
            self.writer.append(writer)
        except OverflowError:
            self.writer = _widened(self.writer, writer)
        self.row.append(0)  # (where it lies: set by ``stored``)
        self.offset.append(0)
        self.size.append(0)
        order = self.order
        if type(order) is range:
            self.order = range(n + 1)
        else:
            order.append(n)
        name = self.writers[writer]
        if type(held) is range and held.stop == n + 1:
            self._seqs[writer] = range(held.start, n + 2)
            self.contiguous[name] = seq
        elif not held:
            self._seqs[writer] = range(n + 1, n + 2)
            self.contiguous[name] = seq
        else:
            if type(held) is range:
                held = self._seqs[writer] = array("I", held)
            held.append(n + 1)
            run = self.contiguous.get(name, 0)  # (the longest run of seqs 1, 2, ... held)
            while run < seq and held[run]:
                run += 1
            self.contiguous[name] = run
        self._max_seq[name] = seq
        return [n]

    def _positions_free(self, fields: Sequence[tuple[bytes, int, int, bytes, bytes]]) -> bool:
        """No entry is held at any of these records' (writer, seq), and no two of them share
        one: none of their ids can be held, nor repeated among them."""
        writer_raw, seen = self._writer_raw, set()
        for _, _, seq, _, raw_writer in fields:
            writer = writer_raw.get(raw_writer)
            if writer is not None and self.slot_at(writer, seq) is not None:
                return False
            seen.add((raw_writer, seq))
        return len(seen) == len(fields)

    def add_run(self, blob: bytes, at: int, count: int, stride: int, size: int,
                row: int) -> bool:
        """Index ``count`` stored records of ``size`` bytes, the first at ``at`` of ``blob``
        (row ``row`` of the context) and each ``stride`` bytes after the one before, when they
        are entries of one writer continuing its seqs, each after the last in causal order:
        their columns are sliced out of the row with no step per record, their ids go into
        the table when it is next used (``find``). False, and nothing changed, for any other
        records (``add_records`` takes those).

        Records are trusted here (our own rows): not parsed, not hashed. A record read back
        later is checked against its id (``records``), and ``verify`` checks every one.

        why: a cold context's first read loaded its rows record by record (fields, id table,
        seqs: ``fresh_record_fields`` then ``add_records``, ~4 us per entry: 4.1 CPU-s for a
        context of 1M) before reading its first page."""
        key_at, n = self._key_at, len(self.lamport)
        if size < key_at + 4 + _TAIL_SIZE:
            return False
        end = at + (count - 1) * stride + size  # (the last record's end)
        base = at + size  # (the first record's end: its tail is just before)

        def column(offset: int, width: int) -> bytes:
            # (bytes ``offset``.. ``offset + width`` of every record, record after record)
            out = bytearray(width * count)
            for j in range(width):
                out[j::width] = blob[offset + j : end : stride]
            return bytes(out)

        writers = [blob[w : w + _WRITER_SIZE] for w in range(base - _WRITER_AT, end, stride)]
        raw_writer = writers[0]
        if writers.count(raw_writer) != count:
            return False
        seqs = array("Q", column(base - _SEQ_AT, 8))
        lamports = array("Q", column(base - _LAMPORT_AT, 8))
        if _LITTLE:
            seqs.byteswap()
            lamports.byteswap()
        writer = self._writer_raw.get(raw_writer)
        name = writer_name(raw_writer) if writer is None else self.writers[writer]
        first = seqs[0]
        held = self._seqs[writer] if writer is not None else range(0)
        last = n and self.lamport[n - 1 if type(self.order) is range else self.order[-1]]
        if first != len(held) + 1 or first != self._max_seq.get(name, 0) + 1 or \
                seqs[-1] != first + count - 1 or lamports[0] <= last or \
                not all(map(operator.lt, seqs, islice(seqs, 1, None))) or \
                not all(map(operator.lt, lamports, islice(lamports, 1, None))):
            return False
        # (the seqs run first.. first + count - 1: each new here, none a fork)
        lengths = column(at + key_at, 4)
        if lengths == lengths[:4] * count:
            (length,) = _U32.unpack_from(lengths)
            keys = at + key_at + 4
            if length <= _SAME_KEY_MAX and \
                    column(keys, length) == blob[keys : keys + length] * count:
                hashes: Iterable[int] = array(
                    "I", (hash(blob[keys : keys + length]) & _HASH_MASK,)) * count
            else:
                hashes = [hash(blob[k : k + length]) & _HASH_MASK
                          for k in range(keys, end, stride)]
        else:
            hashes = [hash(blob[k + 4 : k + 4 + _U32.unpack_from(blob, k)[0]]) & _HASH_MASK
                      for k in range(at + key_at, end, stride)]
        if writer is None:
            writer = self._writer_for(name, raw_writer)
        self.ids += b"".join([blob[i : i + ID_SIZE] for i in range(at, end, stride)])
        self.lamport = _fitted(self.lamport, lamports[-1])
        self.lamport.fromlist(lamports.tolist())
        self.seq = _fitted(self.seq, seqs[-1])
        self.seq.fromlist(seqs.tolist())
        self.writer = _repeated(_fitted(self.writer, writer), writer, count)
        self.key_hash.extend(hashes)
        self.row = _repeated(_fitted(self.row, row), row, count)
        self.offset = _fitted(self.offset, at + (count - 1) * stride)
        self.offset.extend(range(at, end, stride))
        self.size = _repeated(_fitted(self.size, size), size, count)
        order = self.order
        if type(order) is range:
            self.order = range(n + count)
        else:
            order.extend(range(n, n + count))
        seqs_of = self._seqs[writer]
        if type(seqs_of) is range and (not seqs_of or seqs_of.stop == n + 1):
            self._seqs[writer] = range(seqs_of.start if seqs_of else n + 1, n + count + 1)
        else:
            if type(seqs_of) is range:
                seqs_of = self._seqs[writer] = array("I", seqs_of)
            seqs_of.extend(range(n + 1, n + count + 1))
        if self.contiguous.get(name, 0) == first - 1:
            self.contiguous[name] = first + count - 1
        self._max_seq[name] = first + count - 1
        self.max_lamport = max(self.max_lamport, lamports[-1])
        return True

    def _place(self, slot: int) -> None:
        """Put a new slot in causal order (one that does not sort after the last)."""
        order = self.order
        key = self._order_key(slot)
        if self._order_key(order[-1]) < key:
            if type(order) is range:
                self.order = range(slot + 1)
            else:
                order.append(slot)
            return
        if type(order) is range:
            order = self.order = array("I", order)
        order.insert(bisect.bisect_left(order, key, key=self._order_key), slot)

    def _grow(self, size: int = 0) -> array[int]:
        """Double the id table (or make it ``size`` slots), placing every held slot again."""
        size = size or 2 * len(self._table)
        # (2-byte slots while every slot + 1 fits: a table of 2^16 places holds < 2^16 * 2/3)
        code = "H" if size <= 1 << 16 else "I"
        self._table = array(code, bytes(array(code).itemsize * size))
        self._placed = 0
        self._place_ids()
        return self._table

    def _place_ids(self) -> None:
        """Put the ids of the slots not placed yet (``add_run``'s, or all after ``_grow``)
        into the id table, growing it first if they would fill it past 2/3."""
        size = len(self._table)
        while 3 * len(self) > 2 * size:
            size *= 2
        if size > len(self._table):
            self._grow(size)
            return
        table, ids = self._table, self.ids
        mask = size - 1
        # why: the ids hashed a piece at a time (each piece copied once, sliced and hashed
        # in C), not each copied out of the buffer in the loop: placing 1M ids (a cold
        # load's first lookup, or the table doubling under appends) takes 0.42-0.44 CPU-s
        # against 0.47-0.53 (5 alternated runs); the rest is the probes' random access
        for first in range(self._placed, len(self), _PLACE_PIECE):
            piece = bytes(ids[ID_SIZE * first : ID_SIZE * (first + _PLACE_PIECE)])
            keys = [piece[at : at + ID_SIZE] for at in range(0, len(piece), ID_SIZE)]
            for slot, key in enumerate(map(hash, keys), first + 1):
                i = key & mask
                while table[i]:
                    i = (i + 1) & mask
                table[i] = slot
        self._placed = len(self)
        self._own_waiting = 0

    # ---- reads -------------------------------------------------------------------------------

    def get(self, key: str | None = None, after: Cursor | None = None,
            limit: int | None = None) -> tuple[list[Entry], Cursor]:
        """Entries not covered by ``after``, in causal order; returns them and the next cursor.

        A writer's entries are delivered in seq order with no gap (an entry waits for its
        predecessor, even when a saturated or hostile clock sorts it first), so the cursor that
        comes back never covers an entry that was not delivered.
        """
        return self._get(key, after, limit, exact=False)

    def _get(self, key: str | None, after: Cursor | None, limit: int | None,
             exact: bool) -> tuple[list[Entry], Cursor]:
        """``get``; entries of another key whose hash is ``key``'s are told apart by reading
        their records when ``exact`` (a second pass, only after such a collision)."""
        after = after or Cursor()
        out: list[int] = []
        if limit is not None and limit <= 0:
            return [], after
        writers = self.writers
        base = [after.get(w, 0) for w in writers]  # writer index → seq the cursor covers
        # Everything before the first uncovered entry of every writer is covered: start there.
        starts = [self._order_key(slot) for slot in
                  (self.slot_at(w, covered + 1) for w, covered in enumerate(base))
                  if slot is not None]
        if not starts:
            return [], after
        forks = self.forks
        for (name, at), ids in forks.items():  # a sibling may sort first
            if at == after.get(name, 0) + 1:
                starts += [self._order_key(s) for s in map(self.find_hex, ids) if s is not None]
        raw_key = None if key is None else key.encode("utf-8")
        wanted = 0 if raw_key is None else hash(raw_key) & _HASH_MASK
        key_hash = self.key_hash
        reached: dict[int, int] = {}  # writer index → last seq delivered by this call
        contiguous = [self.contiguous.get(w, 0) for w in writers]
        order, seq_of, writer_of = self.order, self.seq, self.writer
        first = bisect.bisect_left(order, min(starts), key=self._order_key)
        # (a view, not a copy: a page near the start of a long context copied the rest of it)
        tail: Sequence[int] = order[first:] if type(order) is range else memoryview(order)[first:]
        widened = first == 0
        skipped = True
        while skipped and (limit is None or len(out) < limit):
            # Another pass only when an entry had to wait for a predecessor sorted after it.
            skipped = False
            progressed = len(reached), sum(reached.values())
            for slot in tail:
                writer, seq = writer_of[slot], seq_of[slot]
                last = reached.get(writer)
                if last is None:
                    last = base[writer]
                if seq != last + 1 and not (seq == last > base[writer]
                                            and (writers[writer], seq) in forks
                                            and slot not in out):
                    if seq > last + 1 and seq <= contiguous[writer]:
                        skipped = True
                    continue  # covered, or its predecessor is not delivered yet
                reached[writer] = seq
                if raw_key is not None and (key_hash[slot] != wanted or
                                            exact and self.key_bytes(slot) != raw_key):
                    continue
                out.append(slot)
                if limit is not None and len(out) >= limit:
                    break
            # why: a writer's next entry can sort before where the tail starts: equal
            # (saturated) Lamport times are ordered by id, and a member may sign falling ones
            # (seq 2 before seq 1). Such an entry was left out of the read although it was
            # deliverable (a watch delivered it only when something else arrived), or a pass
            # delivered nothing while a later seq kept asking for another, forever (every read
            # of the context hung). Then look at the whole order; give up when even that
            # delivers nothing.
            pending = not skipped and any(self.slot_at(w, seq + 1) is not None
                                          for w, seq in reached.items())
            if pending and not widened:
                skipped, tail, widened = True, order, True
            elif skipped and progressed == (len(reached), sum(reached.values())):
                if widened:
                    break
                tail, widened = order, True
            elif pending:
                skipped = True
        records = self.records(out)
        if raw_key is not None and not exact and any(
                self._key_of(record) != raw_key for record in records):
            return self._get(key, after, limit, exact=True)
        entries = [decode_body(record[ID_SIZE:], record[:ID_SIZE].hex()) for record in records]
        return entries, after.advanced(entries)


class EntriesById(Mapping[str, Entry]):
    """A context's entries by hex id, built on lookup."""

    def __init__(self, index: EntryIndex) -> None:
        self._index = index

    def __getitem__(self, entry_id: str) -> Entry:
        slot = self._index.find_hex(entry_id) if isinstance(entry_id, str) else None
        if slot is None:
            raise KeyError(entry_id)
        return self._index.entry(slot)

    def __contains__(self, entry_id: object) -> bool:
        return isinstance(entry_id, str) and self._index.find_hex(entry_id) is not None

    def __iter__(self) -> Iterator[str]:
        index = self._index
        return (index.raw_id(slot).hex() for slot in range(len(index)))

    def __len__(self) -> int:
        return len(self._index)


class EntriesAt(Sequence[Entry]):
    """Entries of the index at the given slots, built on access.

    why: a receive hands its new entries to the ledger, the protocol and the watchers, which
    mostly only count them; building an ``Entry`` per received record was ~1/4 of a cold
    catch-up's CPU (cProfile, 20k x 100 B)."""

    def __init__(self, index: EntryIndex, slots: Sequence[int]) -> None:
        self._index = index
        self._slots = slots

    def slots(self) -> Sequence[int]:
        return self._slots

    @overload
    def __getitem__(self, i: int) -> Entry: ...

    @overload
    def __getitem__(self, i: slice) -> list[Entry]: ...

    def __getitem__(self, i: int | slice) -> Entry | list[Entry]:
        if isinstance(i, slice):
            return self._index.entries(self.slots()[i])
        return self._index.entry(self.slots()[i])

    def __iter__(self) -> Iterator[Entry]:
        entries, slots = self._index.entries, self.slots()
        for start in range(0, len(slots), READ_BATCH):
            yield from entries(slots[start : start + READ_BATCH])

    def __len__(self) -> int:
        return len(self.slots())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EntriesAt({list(self)!r})"


class EntriesInOrder(EntriesAt):
    """A context's entries in causal order, built on access."""

    def __init__(self, index: EntryIndex) -> None:
        super().__init__(index, index.order)

    def slots(self) -> Sequence[int]:
        return self._index.order
