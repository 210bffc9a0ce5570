"""One context: a pycrdt Doc holding a grow-only Array of records, plus an index and a Merkle tree.

The Doc is the replication format (Yjs state vectors and updates move what a peer lacks, fast);
the index is the read model (id → entry, causal order, per-writer seqs); the Merkle tree over
entry ids says in 32 bytes whether two copies hold the same set — it, not the Yjs state, is the
truth about what a node holds. This is the only module that touches pycrdt.

Every update from outside (a peer, a snapshot) passes the grow-only gate (``yjs``), record
verification (content ids, limits) and **authentication** *before* it is applied: pycrdt observers
run after the fact and cannot veto. An entry is authentic when a signed head of its writer names
it, or when an authentic entry of the same writer one seq above names it as ``prev`` (see
``identity``); anything else is a ForgedEntry and the whole update is refused. Entries are indexed
from what the Array observer reports was actually inserted, so the index never disagrees with the
Doc. Yjs ignores a struct whose (client, clock) it has already seen, whatever its content, so a
member that squats a position can hide an entry from the Doc; such an entry is found by id (the
peer protocol descends this tree) and re-inserted as a new item of our own client
(``add_authentic``); the index deduplicates by id.

Forks: two authentic entries for one writer position (a writer that signed both) are both kept
(they are signed data; every node keeps the same set), ordered by (Lamport, id) like any other
entry, and recorded in ``forks`` with a proof anyone can check (``fork_proof``).
"""

from __future__ import annotations

import bisect
import hashlib
import weakref
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

from pycrdt import Array, Doc, get_update, merge_updates

from .authorship import Authorship
from .cursor import Cursor
from .entry import (
    DEFAULT_LIMITS,
    ID_SIZE,
    Entry,
    Limits,
    check_context,
    decode_body,
    decode_record,
)
from .errors import ForbiddenUpdate, IntegrityError, RemoteProtocolError
from .identity import Head
from .merkle import MerkleTree
from .yjs import decode_state_vector, encode_state_vector, gate_ranges

ARRAY_NAME = "entries"
_ORDER = attrgetter("lamport", "id")  # causal order: Entry.order_key
# pycrdt commit cost grows with the square of the inserts in one transaction: keep them small.
TRANSACTION_CHUNK = 100
EMPTY_UPDATE = _EMPTY_UPDATE = b"\x00\x00"  # no structs, no delete set
_WRITER_SEQ = attrgetter("writer", "seq")
_HEAD_WRITER = attrgetter("writer")  # a head's writer, named as entries name theirs
_NEVER = 0xFFFFFFFF  # a clock no struct reaches: get_update leaves out every struct of that client


def client_id_for(instance: str, context: str) -> int:
    """A Yjs client id per (node incarnation, context); < 2^53 so it survives JS numbers."""
    digest = hashlib.sha256(f"{instance}\x00{context}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 11


class ContextLog:
    def __init__(self, name: str, client_id: int, limits: Limits = DEFAULT_LIMITS) -> None:
        self.name = check_context(name)  # (entries of this name skip the pattern on receive)
        self.limits = limits
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self._array = self.doc.get(ARRAY_NAME, type=Array)
        # Not ``observe(self._on_insert)``: pycrdt keeps the callback in Rust, where Python's GC
        # cannot see the cycle back to this object, so a bound method would never be freed.
        self._subscription = _observe(self._array, weakref.ref(self))
        self._inserted: list[bytes | bytearray] = []
        # applied updates with structs yrs holds pending, each with the clock each of its
        # clients must reach for it to be settled (None: ask pycrdt)
        self._unsettled: list[tuple[bytes, dict[int, int] | None]] = []
        self._array_len = 0  # array elements accounted for by observer events
        self.by_id: dict[str, Entry] = {}
        self.ordered: list[Entry] = []
        self.by_writer: dict[str, dict[int, Entry]] = {}
        # Highest seq per writer below which nothing is missing: reads deliver only up to it so
        # that a cursor never jumps over an entry that arrives late.
        self.contiguous: dict[str, int] = {}
        self._max_seq: dict[str, int] = {}
        self.tree = MerkleTree()
        self.max_lamport = 0
        self.heads: dict[bytes, Head] = {}  # raw entry id → a verified head naming it
        # (writer, seq) → the ids of every authentic entry there, when there is more than one
        self.forks: dict[tuple[str, int], list[str]] = {}
        self.new_forks: list[tuple[str, int]] = []  # for the ledger to report, then clear

    def _on_insert(self, event: Any) -> None:
        # Runs inside pycrdt after the update is applied: only collect; indexing happens outside.
        delta: list[dict[str, Any]] = event.delta
        for op in delta:
            inserted = op.get("insert")
            if inserted:
                # (bytearrays, as pycrdt hands them: _index_inserted converts only when it must)
                self._inserted.extend(inserted)

    # ---- reads -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.by_id)

    def root(self) -> bytes:
        return self.tree.root()

    def max_seq(self, writer: str) -> int:
        return self._max_seq.get(writer, 0)

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def diff(self, state_vector: bytes | None = None) -> bytes:
        """The Yjs update holding everything a peer with ``state_vector`` lacks (all if None)."""
        if state_vector:
            try:
                decode_state_vector(state_vector)  # checked before pycrdt allocates for it
            except RemoteProtocolError as exc:
                raise RemoteProtocolError(f"bad state vector for {self.name}: {exc}") from None
        try:
            return self.doc.get_update(state_vector) if state_vector else self.doc.get_update()
        except Exception as exc:  # pycrdt raises plain exceptions for undecodable vectors
            raise RemoteProtocolError(f"bad state vector for {self.name}: {exc}") from None

    def get(
        self, key: str | None = None, after: Cursor | None = None, limit: int | None = None
    ) -> tuple[list[Entry], Cursor]:
        """Entries not covered by ``after``, in causal order; returns them and the next cursor.

        A writer's entries are delivered in seq order with no gap (an entry waits for its
        predecessor, even when a saturated or hostile clock sorts it first), so the cursor that
        comes back never covers an entry that was not delivered.
        """
        after = after or Cursor()
        out: list[Entry] = []
        if limit is not None and limit <= 0:
            return out, after
        # Everything before the first uncovered entry of every writer is covered: start there.
        starts = [
            seqs[after.get(writer, 0) + 1].order_key
            for writer, seqs in self.by_writer.items()
            if after.get(writer, 0) + 1 in seqs
        ]
        if not starts:
            return out, after
        for (writer, seq), ids in self.forks.items():  # a sibling may sort first
            if seq == after.get(writer, 0) + 1:
                starts += [self.by_id[i].order_key for i in ids]
        reached: dict[str, int] = {}  # writer → last seq delivered by this call
        forks = self.forks
        first = bisect.bisect_left(self.ordered, min(starts), key=_ORDER)
        tail = self.ordered[first:]
        widened = first == 0
        skipped = True
        while skipped and (limit is None or len(out) < limit):
            # Another pass only when an entry had to wait for a predecessor sorted after it.
            skipped = False
            progressed = len(reached), sum(reached.values())
            for entry in tail:
                writer, seq = entry.writer, entry.seq
                last = reached.get(writer)
                if last is None:
                    last = after.get(writer, 0)
                if seq != last + 1 and not (seq == last > after.get(writer, 0)
                                            and (writer, seq) in forks
                                            and entry not in out):
                    if seq > last + 1 and seq <= self.contiguous.get(writer, 0):
                        skipped = True
                    continue  # covered, or its predecessor is not delivered yet
                reached[writer] = seq
                if key is not None and entry.key != key:
                    continue
                out.append(entry)
                if limit is not None and len(out) >= limit:
                    break
            # why: a writer's next entry can sort before where the tail starts: equal
            # (saturated) Lamport times are ordered by id, and a member may sign falling ones
            # (seq 2 before seq 1). Such an entry was left out of the read although it was
            # deliverable (a watch delivered it only when something else arrived), or a pass
            # delivered nothing while a later seq kept asking for another, forever (every read
            # of the context hung). Then look at the whole order; give up when even that
            # delivers nothing.
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

    # ---- authentication ------------------------------------------------------------------------

    def authenticate(
        self, entries: Sequence[Entry], heads: Sequence[Head] = (), trusted: bool = False,
    ) -> list[Head]:
        """Check that every entry of ``entries`` we do not hold yet is vouched for by a head or
        by an authentic successor (in ``entries`` or held), by the one authorship rule
        (``authorship.Authorship``); returns the heads that were needed (their signatures
        checked, unless ``trusted``). ForgedEntry if any entry is not."""
        by_id = self.by_id
        fresh = [e for e in entries if e.id not in by_id]
        if not fresh:
            return []
        rule: Authorship[str] = Authorship(self.name, _HEAD_WRITER, self._held_vouches)
        for head in heads:
            rule.head(head)
        # why: attrgetter builds the key in C (a lambda per entry was ~3% of a cold catch-up),
        # and an update's entries mostly come in ascending seq: reversed, that is one run, and
        # from the top down each entry finds its successor's vouch waiting (nothing pends).
        fresh.sort(key=_WRITER_SEQ, reverse=True)
        take = rule.entry
        for entry in fresh:
            take(bytes.fromhex(entry.id), entry.writer, entry.seq, entry.prev)
        return rule.finish(check=not trusted)

    def _held_vouches(self, raw: bytes, writer: str, seq: int) -> bool:
        """What we hold vouches for the entry at (``writer``, ``seq``) with id ``raw``: a head
        we keep names it, or an entry we hold one seq above names it as prev."""
        if raw in self.heads:
            return True
        above = self.by_writer.get(writer, {}).get(seq + 1)
        if above is None:
            return False
        if above.prev == raw:
            return True
        ids = self.forks.get((writer, seq + 1), ())
        return any(self.by_id[i].prev == raw for i in ids)

    def keep_heads(self, heads: Iterable[Head]) -> None:
        for head in heads:
            self.heads.setdefault(head.entry_id, head)

    def trim_heads(self) -> list[Head]:
        """Keep only the heads something needs — those of chain tips (what ``proof_for`` of
        every entry names) and those of entries not indexed yet (structs Yjs holds pending) —
        and return them. Compaction stores only these: spread over 10,000 contexts, each
        commit's head (with its path) was ~370 B of every stored row."""
        kept = {h.entry_id: h for h in self.proof_for(self.ordered)[0]}
        by_id = self.by_id
        for raw, head in self.heads.items():
            if raw.hex() not in by_id:
                kept.setdefault(raw, head)
        self.heads = kept
        return list(kept.values())

    def proof_for(self, entries: Iterable[Entry]) -> tuple[list[Head], list[bytes]]:
        """What a receiver needs besides ``entries`` to authenticate them: for the top of each
        run of one writer, the head naming it, or the records that link it up to the nearest
        entry with a head, and that head. Every entry we hold is authentic, so the path
        exists."""
        batch = {e.id: e for e in entries}
        positions = {(e.writer, e.seq) for e in batch.values()}
        forks = self.forks
        heads: dict[bytes, Head] = {}
        vouchers: dict[str, bytes] = {}
        for entry in batch.values():
            writer, seq = entry.writer, entry.seq
            if (writer, seq + 1) in positions:
                if (writer, seq) not in forks and (writer, seq + 1) not in forks:
                    continue  # the run above is in the batch and brings its own proof
                # why: a forked position holds two entries; only the one that names this
                # entry as prev vouches for it (by position alone, a node holding both
                # branches shipped one without a head: its peers refused it for good)
                above = self._successor(entry)
                if above is not None and above.id in batch:
                    continue
            current = entry
            while True:
                raw = bytes.fromhex(current.id)
                head = self.heads.get(raw)
                if head is not None:
                    heads[raw] = head
                    break
                above = self._successor(current)
                if above is None:
                    raise IntegrityError(
                        f"entry {current.id} of {self.name} has no head and no successor")
                if above.id in batch:
                    break  # the run above is in the batch already and brings its own proof
                vouchers[above.id] = above.record
                current = above
        return list(heads.values()), list(vouchers.values())

    def _successor(self, entry: Entry) -> Entry | None:
        raw = bytes.fromhex(entry.id)
        seq = entry.seq + 1
        above = self.by_writer.get(entry.writer, {}).get(seq)
        if above is not None and above.prev == raw:
            return above
        for other in self.forks.get((entry.writer, seq), ()):
            if self.by_id[other].prev == raw:
                return self.by_id[other]
        return None

    def fork_proof(self, writer: str, seq: int) -> dict[str, Any]:
        """Two signed statements putting two different entries at one position of ``writer``:
        for each, a head and the records from the head's entry down to the forked one (each
        naming the next as prev). ``identity.check_fork_proof`` checks it with nothing else."""
        ids = self.forks[(writer, seq)][:2]
        branches = []
        for entry_id in ids:
            current = self.by_id[entry_id]
            records = [current.record]
            while (head := self.heads.get(bytes.fromhex(current.id))) is None:
                above = self._successor(current)
                if above is None:
                    raise IntegrityError(f"entry {current.id}: no head and no successor")
                records.append(above.record)
                current = above
            branches.append({"head": head.to_json(),
                             "records": [r.hex() for r in reversed(records)]})
        return {"context": self.name, "writer": writer, "seq": seq, "ids": ids,
                "branches": branches}

    # ---- writes ------------------------------------------------------------------------------

    def append_local(
        self, entries: Sequence[Entry], heads: Sequence[Head] = ()
    ) -> tuple[list[Entry], bytes]:
        """Insert authentic entries as new items of our own Yjs client (our appends, or entries
        found by id); returns those indexed and the Yjs update to persist."""
        self.keep_heads(heads)
        before = self.doc.get_state()
        records = [e.record for e in entries]
        for start in range(0, len(records), TRANSACTION_CHUNK):
            chunk = records[start : start + TRANSACTION_CHUNK]
            with self.doc.transaction() as txn:
                _extend(self._array, txn, chunk)
        return self._index_inserted(records, entries, trusted=True), self.doc.get_update(before)

    def apply_remote(
        self, update: bytes, heads: Sequence[Head] = ()
    ) -> tuple[list[Entry], bytes | None]:
        """``receive`` without vouchers: the entries new to this node and the update applied."""
        new, _, applied, _ = self.receive(update, heads)
        return new, applied

    def receive(
        self, update: bytes, heads: Sequence[Head] = (), vouchers: Sequence[bytes] = ()
    ) -> tuple[list[Entry], list[Head], bytes | None, bytes | None]:
        """Gate, verify, authenticate and apply an update from a peer (and entries it sent by
        id, as ``vouchers``).

        Returns the entries new to this node, the heads that vouched for them, the update that
        was applied — what the Doc lacked of ``update`` — and the update of entries re-inserted
        as our own items (vouchers we lacked), each None when it was nothing: the caller
        persists both, in that order, with the heads. Replaying the persisted updates in order
        rebuilds exactly this Doc, pending structs included. Raises ForbiddenUpdate /
        RemoteProtocolError / IntegrityError / ForgedEntry before touching the Doc.
        """
        state = decode_state_vector(self.doc.get_state())
        known: list[Entry] = []  # the entries of ``values``, in order
        values: list[bytes] = []
        holes: Iterable[int] = ()
        ranges: dict[int, tuple[int, int]] = {}
        if update != _EMPTY_UPDATE:
            values, holes, ranges = gate_ranges(update, state, ARRAY_NAME)
        name, limits = self.name, self.limits
        for record in values:  # (_decode_own, inlined: once per entry received)
            entry = decode_record(record, limits, name)
            if entry.context != name:
                raise ForbiddenUpdate(
                    f"entry {entry.id} belongs to context {entry.context!r}, not {name!r}")
            known.append(entry)
        extra = {}
        for record in vouchers:
            entry = self._decode_own(record)
            extra[entry.id] = entry
        used = self.authenticate([*known, *extra.values()], heads)
        for client in holes:
            # why: yrs 0.28 (pycrdt 0.14.13) shows an item whose own client's previous item is
            # missing in the array at once when its origin is another client's known item, but
            # leaves it out of the state vector and of every diff. A local append after it then
            # points at it, and no replay of the stored updates (nor any peer) can integrate
            # that append until the missing item arrives: a crash lost acknowledged entries
            # (tests/core/test_ledger.py, _gap_scenario). Such a client's structs are dropped
            # here; the state vector still asks for them, so anti-entropy resends them in order.
            state[client] = _NEVER
        applied: bytes | None = None
        new: list[Entry] = []
        if update != _EMPTY_UPDATE:
            if ranges and not holes and all(
                    first >= state.get(client, 0) for client, (first, _) in ranges.items()):
                # why: nothing in it is held yet (the common case: a push, a catch-up), so it
                # is what pycrdt would cut it to; cutting it anyway decoded and re-encoded the
                # whole update once more (1,000 × 100 KB: one of four passes over 100 MB).
                applied = update
            else:
                try:
                    applied = get_update(update, encode_state_vector(state))
                except Exception as exc:  # the gate parsed it: a pycrdt-level refusal
                    raise RemoteProtocolError(
                        f"update refused by pycrdt for {self.name}: {exc}") from None
                ranges = {}  # the applied update is another one: let _settle ask pycrdt
            if applied == _EMPTY_UPDATE:
                applied = None
            else:
                self._apply(applied)
                self._settle(applied, {c: end for c, (_, end) in ranges.items()} or None)
                new = self._index_inserted(values, known, trusted=True)
        # Authentic records that did not come as Yjs items (found by id, or a path to a head):
        # keep them as new items of our own client.
        missing = [e for e in extra.values() if e.id not in self.by_id]
        reinserted = None
        if missing:
            added, reinserted = self.append_local(missing)
            new += added
        if applied is None and reinserted is None:
            return new, [], None, None  # nothing kept: the heads are not needed (nor stored)
        # Kept only with what the caller persists them with: every head we hold is stored.
        self.keep_heads(used)
        return new, used, applied, reinserted

    def _decode_own(self, record: bytes) -> Entry:
        entry = decode_record(record, self.limits, self.name)
        if entry.context != self.name:
            raise ForbiddenUpdate(
                f"entry {entry.id} belongs to context {entry.context!r}, not {self.name!r}")
        return entry

    def load_stored(self, update: bytes, heads: Sequence[Head] = (),
                    verify: bool = False) -> list[Entry]:
        """Re-apply an update this node persisted itself (rebuild on start)."""
        self.keep_heads(heads)
        self._apply(update)
        self._settle(update)
        return self._index_inserted((), (), trusted=not verify)

    def _settle(self, update: bytes, ends: dict[int, int] | None = None) -> None:
        """Keep the applied updates whose structs yrs still holds pending (an origin missing):
        ``Doc.get_update()`` leaves pending structs out, so ``compacted_state`` adds these.
        ``ends`` (client → the clock past its last struct in ``update``, from the gate) answers
        without pycrdt: the update is settled once the state vector reaches every end."""
        raw_state = self.doc.get_state()
        state: dict[int, int] | None = None
        kept = []
        for u, u_ends in [*self._unsettled, (update, ends)]:
            if u_ends is not None:
                if state is None:
                    state = decode_state_vector(raw_state)
                if all(state.get(c, 0) >= end for c, end in u_ends.items()):
                    continue
            elif get_update(u, raw_state) == _EMPTY_UPDATE:
                continue
            kept.append((u, u_ends))
        self._unsettled = kept

    def _apply(self, update: bytes) -> None:
        try:
            self.doc.apply_update(update)
        except Exception as exc:  # the gate parsed it, so this is a pycrdt-level refusal
            self._inserted.clear()
            raise RemoteProtocolError(f"update refused by pycrdt for {self.name}: {exc}") from None

    def _index_inserted(self, values: Sequence[bytes], entries: Sequence[Entry],
                        trusted: bool) -> list[Entry]:
        """Index what the observer saw inserted; ``entries`` are the checked entries of the
        records ``values`` offered (any record not among them is decoded here)."""
        inserted, self._inserted = self._inserted, []
        length = len(self._array)
        new: list[Entry] = []
        ids: list[bytes] = []  # the new entries' ids, added to the Merkle tree in one go
        by_id = self.by_id
        index = self._index
        if length == self._array_len + len(inserted) and inserted == values:
            # why: the usual case (an append, a push, a catch-up): exactly the records offered,
            # in order. One C-level comparison of the lists, instead of hashing every 100 B
            # record twice into a dict and copying each bytearray pycrdt hands over (~6% of a
            # cold catch-up, py-spy).
            self._array_len = length
            for record, entry in zip(values, entries, strict=True):
                if index(entry):
                    # The record's first 32 bytes are the id the entry was checked against.
                    ids.append(record[:ID_SIZE])
                    new.append(entry)
            self.tree.add_keys(ids)
            return new
        if length != self._array_len + len(inserted):
            # yrs sometimes integrates a pending update (one that waited for a missing
            # dependency) without reporting it to the observer until a later transaction:
            # when the count does not add up, look at the whole array.
            inserted = list(self._array)
        self._array_len = length
        # (by raw id: keyed by the whole record, a 100 KB entry was hashed twice more for the
        # dict, ~0.25 of 1.0 CPU-s of a 1,000 x 100 KB catch-up's core work, cProfile)
        known = {record[:ID_SIZE]: entry for record, entry in zip(values, entries, strict=True)}
        for raw in inserted:
            record = bytes(raw)
            tree_key = record[:ID_SIZE]
            found = known.get(tree_key)
            if found is None or found.body != record[ID_SIZE:]:
                if tree_key.hex() in by_id:
                    continue
                found = decode_record(record, self.limits) if not trusted else _quick(record)
                if found.context != self.name:
                    raise IntegrityError(f"entry {found.id} is stored under context {self.name}")
            if index(found):
                # The record's first 32 bytes are the id the entry was checked against.
                ids.append(tree_key)
                new.append(found)
        self.tree.add_keys(ids)
        return new

    def _index(self, entry: Entry) -> bool:
        """Add one entry to the read model; the caller adds its id to the Merkle tree."""
        by_id = self.by_id
        if entry.id in by_id:
            return False  # the same entry inserted twice (e.g. found by id, then by Yjs): one
        by_id[entry.id] = entry
        writer, seq, lamport = entry.writer, entry.seq, entry.lamport
        key = (lamport, entry.id)
        ordered = self.ordered
        if not ordered or _ORDER(ordered[-1]) < key:
            ordered.append(entry)  # the common case (local appends, catch-up in order)
        else:
            # why: no list of (lamport, id) tuples beside ``ordered`` for bisect: it held 64 B
            # per entry (measured with sys.getsizeof, 100k entries); bisect by key instead
            ordered.insert(bisect.bisect_left(ordered, key, key=_ORDER), entry)
        seqs = self.by_writer.get(writer)
        if seqs is None:
            seqs = self.by_writer[writer] = {}
        held = seqs.get(seq)
        if held is not None:
            ids = self.forks.get((writer, seq))
            if ids is None:
                ids = self.forks[(writer, seq)] = [held.id]
                self.new_forks.append((writer, seq))
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
        if seq > self._max_seq.get(writer, 0):
            self._max_seq[writer] = seq
        if lamport > self.max_lamport:
            self.max_lamport = lamport
        return True

    def compacted_state(self) -> bytes:
        """The whole Doc as one update, pending structs included: replaces the stored history
        without changing any read, now or once what the pending structs wait for arrives."""
        if self._unsettled:
            return merge_updates(self.doc.get_update(), *(u for u, _ in self._unsettled))
        return self.doc.get_update()


def _extend(array: Array[Any], txn: Any, values: list[bytes]) -> None:
    """``array.extend(values)`` inside ``txn``, without pycrdt's per-item Python wrapper.

    ``Array.extend`` opens a nested transaction and type-checks every item (~1.4 µs each); the
    Rust array's ``insert`` per value builds the very same structs, so the update bytes are
    identical (tests/trio/test_group_commit.py checks it). Falls back to ``extend`` if pycrdt's
    internals move.
    """
    raw_txn = getattr(txn, "_txn", None)
    integrated = getattr(array, "_integrated", None)
    if raw_txn is None or integrated is None:
        array.extend(values)
        return
    insert = integrated.insert
    for index, value in enumerate(values, len(array)):
        insert(raw_txn, index, value)


def _observe(array: Array[Any], ref: weakref.ReferenceType[ContextLog]) -> Any:
    """Observe ``array``'s inserts for the ContextLog behind ``ref``; returns the subscription
    (the observer lives as long as it does).

    why: ``Array.observe`` wraps each event in a pycrdt ``ArrayEvent`` whose constructor walks
    the whole delta (every inserted value) and opens a read transaction: ~8% of the CPU of a
    1,000 × 100 KB catch-up (sampled). The Rust array's own ``observe`` hands over the raw
    event, whose ``delta`` holds the same values. Falls back to ``observe`` if pycrdt's
    internals move.
    """
    def on_insert(event: Any) -> None:
        log = ref()
        if log is not None:
            log._on_insert(event)

    integrated = getattr(array, "integrated", None)
    if integrated is None or not hasattr(integrated, "observe"):
        return array.observe(on_insert)
    return integrated.observe(on_insert)


def _quick(record: bytes) -> Entry:
    # Own store: the content hash is still checked, field limits were checked on the way in.
    claimed = record[:ID_SIZE].hex()
    body = record[ID_SIZE:]
    if hashlib.sha256(body).hexdigest() != claimed:
        raise IntegrityError(f"entry {claimed} does not match its content")
    return decode_body(body, claimed)
