"""One context: a pycrdt Doc holding a grow-only Array of records, plus an index and a Merkle tree.

The Doc is the replication format (Yjs state vectors and updates move exactly what a peer
lacks); the index is the read model (id → entry, causal order, per-origin seqs); the Merkle tree
over entry ids says in 32 bytes whether two copies hold the same set. This is the only module
that touches pycrdt.

Every update from outside (a peer, a snapshot) passes the grow-only gate (``yupdate``) and record
verification *before* it is applied: pycrdt observers run after the fact and cannot veto.
Entries are indexed from what the Array observer reports was actually inserted, so the index never
disagrees with the Doc (Yjs ignores a struct it has already seen, whatever its content).
"""

from __future__ import annotations

import bisect
import hashlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pycrdt import Array, ArrayEvent, Doc, get_update

from .cursor import Cursor
from .entry import DEFAULT_LIMITS, ID_SIZE, Entry, Limits, decode_body, decode_record
from .errors import ForbiddenUpdate, IntegrityError, RemoteProtocolError
from .merkle import MerkleTree
from .yjs import decode_state_vector, encode_state_vector, gate_update

ARRAY_NAME = "entries"
# pycrdt commit cost grows with the square of the inserts in one transaction: keep them small.
TRANSACTION_CHUNK = 100
_EMPTY_UPDATE = b"\x00\x00"  # no structs, no delete set
_NEVER = 0xFFFFFFFF  # a clock no struct reaches: get_update leaves out every struct of that client


def client_id_for(instance: str, context: str) -> int:
    """A Yjs client id per (node incarnation, context); < 2^53 so it survives JS numbers."""
    digest = hashlib.sha256(f"{instance}\x00{context}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 11


class ContextLog:
    def __init__(self, name: str, client_id: int, limits: Limits = DEFAULT_LIMITS) -> None:
        self.name = name
        self.limits = limits
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self._array = self.doc.get(ARRAY_NAME, type=Array)
        # Not ``observe(self._on_insert)``: pycrdt keeps the callback in Rust, where Python's GC
        # cannot see the cycle back to this object, so a bound method would never be freed.
        self._array.observe(_weak_observer(weakref.ref(self)))
        self._inserted: list[bytes] = []
        self._array_len = 0  # array elements accounted for by observer events
        self.by_id: dict[str, Entry] = {}
        self.ordered: list[Entry] = []
        self._order_keys: list[tuple[int, str, int]] = []
        self.by_origin: dict[str, dict[int, Entry]] = {}
        # Highest seq per origin below which nothing is missing: reads deliver only up to it so
        # that a cursor never jumps over an entry that arrives late.
        self.contiguous: dict[str, int] = {}
        self._max_seq: dict[str, int] = {}
        self.tree = MerkleTree()
        self.max_lamport = 0

    def _on_insert(self, event: ArrayEvent) -> None:
        # Runs inside pycrdt after the update is applied: only collect; indexing happens outside.
        delta: list[dict[str, Any]] = event.delta  # type: ignore[attr-defined]  # slot, no stub
        for op in delta:
            inserted = op.get("insert")
            if inserted:
                self._inserted.extend(bytes(v) for v in inserted)

    # ---- reads -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.by_id)

    def root(self) -> bytes:
        return self.tree.root()

    def max_seq(self, origin: str) -> int:
        return self._max_seq.get(origin, 0)

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
        """Entries not covered by ``after``, in causal order; returns them and the next cursor."""
        after = after or Cursor()
        out: list[Entry] = []
        if limit is not None and limit <= 0:
            return out, after
        # Everything before the first uncovered entry of every origin is covered: start there.
        starts = [
            seqs[after.get(origin, 0) + 1].order_key
            for origin, seqs in self.by_origin.items()
            if after.get(origin, 0) + 1 in seqs
        ]
        if not starts:
            return out, after
        contiguous = self.contiguous
        for entry in self.ordered[bisect.bisect_left(self._order_keys, min(starts)) :]:
            if entry.seq > contiguous.get(entry.origin, 0) or after.covers(entry):
                continue
            if key is not None and entry.key != key:
                continue
            out.append(entry)
            if limit is not None and len(out) >= limit:
                break
        return out, after.advanced(out)

    # ---- writes ------------------------------------------------------------------------------

    def append_local(self, entries: Sequence[Entry]) -> tuple[list[Entry], bytes]:
        """Insert entries this node created; returns those indexed and the Yjs update to persist."""
        before = self.doc.get_state()
        records = [e.record for e in entries]
        for start in range(0, len(records), TRANSACTION_CHUNK):
            chunk = records[start : start + TRANSACTION_CHUNK]
            with self.doc.transaction() as txn:
                _extend(self._array, txn, chunk)
        known = dict(zip(records, entries, strict=True))
        return self._index_inserted(known, trusted=True), self.doc.get_update(before)

    def apply_remote(self, update: bytes) -> tuple[list[Entry], bytes | None]:
        """Gate, verify and apply an update from a peer.

        Returns the entries new to this node and the update that was applied — what the Doc
        lacked of ``update`` — for the caller to persist (None when that was nothing). Replaying
        the persisted updates in order rebuilds exactly this Doc, pending structs included.
        Raises ForbiddenUpdate / RemoteProtocolError / IntegrityError before touching the Doc.
        """
        state = decode_state_vector(self.doc.get_state())
        values, holes = gate_update(update, state, ARRAY_NAME)
        known: dict[bytes, Entry] = {}
        for record in values:
            entry = decode_record(record, self.limits)
            if entry.context != self.name:
                raise ForbiddenUpdate(
                    f"entry {entry.id} belongs to context {entry.context!r}, not {self.name!r}"
                )
            known[record] = entry
        for client in holes:
            # why: yrs 0.28 (pycrdt 0.14.13) shows an item whose own client's previous item is
            # missing in the array at once when its origin is another client's known item, but
            # leaves it out of the state vector and of every diff. A local append after it then
            # points at it, and no replay of the stored updates (nor any peer) can integrate
            # that append until the missing item arrives: a crash lost acknowledged entries
            # (tests/core/test_ledger.py, _gap_scenario). Such a client's structs are dropped
            # here; the state vector still asks for them, so anti-entropy resends them in order.
            state[client] = _NEVER
        try:
            applied = get_update(update, encode_state_vector(state))
        except Exception as exc:  # the gate parsed it, so this is a pycrdt-level refusal
            raise RemoteProtocolError(f"update refused by pycrdt for {self.name}: {exc}") from None
        if applied == _EMPTY_UPDATE:
            return [], None
        self._apply(applied)
        return self._index_inserted(known, trusted=True), applied

    def load_stored(self, update: bytes, verify: bool = False) -> list[Entry]:
        """Re-apply an update this node persisted itself (rebuild on start)."""
        self._apply(update)
        return self._index_inserted({}, trusted=not verify)

    def _apply(self, update: bytes) -> None:
        try:
            self.doc.apply_update(update)
        except Exception as exc:  # the gate parsed it, so this is a pycrdt-level refusal
            self._inserted.clear()
            raise RemoteProtocolError(f"update refused by pycrdt for {self.name}: {exc}") from None

    def _index_inserted(self, known: dict[bytes, Entry], trusted: bool) -> list[Entry]:
        inserted, self._inserted = self._inserted, []
        length = len(self._array)
        if length != self._array_len + len(inserted):
            # yrs sometimes integrates a pending update (one that waited for a missing
            # dependency) without reporting it to the observer until a later transaction:
            # when the count does not add up, look at the whole array.
            inserted = [bytes(v) for v in self._array]
        self._array_len = length
        new: list[Entry] = []
        by_id = self.by_id
        for record in inserted:
            tree_key = record[:ID_SIZE]
            if tree_key.hex() in by_id:
                continue
            entry = known.get(record)
            if entry is None:
                entry = decode_record(record, self.limits) if not trusted else _quick(record)
                if entry.context != self.name:
                    raise IntegrityError(f"entry {entry.id} is stored under context {self.name}")
            if self._index(entry):
                # The record's first 32 bytes are the id the entry was checked against.
                self.tree.set(tree_key)
                new.append(entry)
        return new

    def add_missing(self, entries: Iterable[Entry]) -> tuple[list[Entry], bytes | None]:
        """Insert already verified entries that this node lacks (snapshot load)."""
        missing = [e for e in entries if e.id not in self.by_id]
        missing = list({e.id: e for e in missing}.values())
        if not missing:
            return [], None
        return self.append_local(missing)

    def _index(self, entry: Entry) -> bool:
        """Add one entry to the read model; the caller adds its id to the Merkle tree."""
        by_id = self.by_id
        if entry.id in by_id:
            return False  # the same entry inserted twice (e.g. two snapshot loads): keep one
        by_id[entry.id] = entry
        origin, seq, lamport = entry.origin, entry.seq, entry.lamport
        key = (lamport, origin, seq)
        keys = self._order_keys
        if not keys or keys[-1] < key:
            keys.append(key)  # the common case (local appends, catch-up in order)
            self.ordered.append(entry)
        else:
            pos = bisect.bisect_left(keys, key)
            keys.insert(pos, key)
            self.ordered.insert(pos, entry)
        seqs = self.by_origin.get(origin)
        if seqs is None:
            seqs = self.by_origin[origin] = {}
        seqs[seq] = entry
        run = self.contiguous.get(origin, 0)
        if seq == run + 1:
            run += 1
            while run + 1 in seqs:
                run += 1
            self.contiguous[origin] = run
        elif origin not in self.contiguous:
            self.contiguous[origin] = run
        if seq > self._max_seq.get(origin, 0):
            self._max_seq[origin] = seq
        if lamport > self.max_lamport:
            self.max_lamport = lamport
        return True

    def compacted_state(self) -> bytes:
        """The whole Doc as one update: replaces the stored history without changing any read."""
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


def _weak_observer(ref: weakref.ReferenceType[ContextLog]) -> Callable[[ArrayEvent], None]:
    # pycrdt passes as many arguments as the callback declares: exactly one, the event.
    def on_insert(event: ArrayEvent) -> None:
        log = ref()
        if log is not None:
            log._on_insert(event)

    return on_insert


def _quick(record: bytes) -> Entry:
    # Own store: the content hash is still checked, field limits were checked on the way in.
    claimed = record[:ID_SIZE].hex()
    body = record[ID_SIZE:]
    if hashlib.sha256(body).hexdigest() != claimed:
        raise IntegrityError(f"entry {claimed} does not match its content")
    return decode_body(body, claimed)
