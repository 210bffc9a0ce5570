"""One context: its entries' index and Merkle tree, and the pycrdt Doc of its log when needed.

The Doc is the replication format (Yjs state vectors and updates move what a peer lacks, fast);
the index is the read model (``index.EntryIndex``: records by id, causal order, per-writer
seqs, in columns; entries are built when read); the Merkle tree over
entry ids says in 32 bytes whether two copies hold the same set — it, not the Yjs state, is the
truth about what a node holds. This is the only module that touches pycrdt, and it makes the
Doc only when something needs one (``doc``): a Yjs diff, a peer's update with a struct yrs
would hold pending, a compaction. Our own appends are written as Yjs updates directly
(``yjs.encode_appended``); a load and a peer's update whose structs all integrate are read by
``yjs.integrate``, which keeps the state vector (``_state``). A Doc made late is given the
stored rows (``rows``) and the updates not stored yet, and must then hold exactly that state.

Every update from outside (a peer, a snapshot) passes the grow-only gate (``yjs``), record
verification (content ids, limits) and **authentication** *before* it is applied: pycrdt observers
run after the fact and cannot veto. An entry is authentic when a signed head of its writer names
it, or when an authentic entry of the same writer one seq above names it as ``prev`` (see
``identity``); anything else is a ForgedEntry and the whole update is refused. Entries are indexed
from what is actually inserted into the array (as ``yjs.integrate`` reads it, or as the Array
observer reports it once there is a Doc), so the index never disagrees with the Doc. Yjs
ignores a struct whose (client, clock) it has already seen, whatever its content, so a member
that squats a position can hide an entry from the Doc; such an entry is found by id (the peer
protocol descends this tree) and re-inserted as a new item of our own client
(``add_authentic``); the index deduplicates by id.

Heads: ``heads`` holds the signed heads this context still needs, and only those: a head whose
entry gains a held successor naming it is dropped (the successor vouches for it from then on),
except one every ``ANCHOR_EVERY`` seqs of a writer, kept so that a proof never walks more than
~2 × ``ANCHOR_EVERY`` records up to a head. What changed since the last commit waits in
``head_changes`` for the ledger to store with its rows; rows carry no heads (see ``storage``).

Forks: two authentic entries for one writer position (a writer that signed both) are both kept
(they are signed data; every node keeps the same set), ordered by (Lamport, id) like any other
entry, and recorded in ``forks`` with a proof anyone can check (``fork_proof``).
"""

from __future__ import annotations

import hashlib
import struct
import weakref
from array import array
from collections.abc import Callable, Iterable, Sequence
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
    RecordFields,
    check_context,
    decode_record,
    fresh_record_fields,
    known_record_fields,
    record_fields,
)
from .errors import ForbiddenUpdate, IntegrityError, RemoteProtocolError
from .identity import Head
from .index import EntriesAt, EntriesById, EntriesInOrder, EntryIndex, Reader, writer_name
from .merkle import BUILD_STEP, MerkleTree
from .yjs import (
    GatedStruct,
    appended_values,
    decode_state_vector,
    encode_appended,
    encode_state_vector,
    even_run,
    gate_structs,
    integrate,
    ranges_of,
    squash,
    varuint_bytes,
)

ARRAY_NAME = "entries"
MAX_ATTRIBUTES = 29  # of a ContextLog or an EntryIndex (see ContextLog.__init__)
EMPTY_UPDATE = _EMPTY_UPDATE = b"\x00\x00"  # no structs, no delete set
FLUSH_CHUNK = 4096  # our items given to a Doc made late, per update (see ContextLog.doc)
_HEAD_WRITER = attrgetter("writer")  # a head's writer, named as entries name theirs
# A writer keeps one head every ANCHOR_EVERY seqs or more even when successors vouch for the
# entries below (the rest go): a proof for an entry deep in a chain (a WANT, a diff ending
# mid-chain, a fork proof) then walks at most ~2 x ANCHOR_EVERY records to a head, as it walked
# at most one commit (~128 entries from 128 appenders) when every commit's head was kept.
# why: spread over 10,000 contexts each commit's head with its 7-hash path was ~370 B of a
# ~863 B stored row; kept every 64 seqs at most, that is ~6 B per entry.
ANCHOR_EVERY = 64
# Records from our own store: limits were checked when they came in (and may have changed since).
_UNLIMITED = Limits(2**32, 2**32, 2**32)
_NEVER = 0xFFFFFFFF  # a clock no struct reaches: get_update leaves out every struct of that client
_U64 = struct.Struct(">Q")  # a writer's chain in its raw form (origin ‖ chain)
RUN_MIN = 16  # records a stored row needs for a load to read it as columns (load_run)


def client_id_for(instance: str, context: str) -> int:
    """A Yjs client id per (node incarnation, context); < 2^53 so it survives JS numbers."""
    digest = hashlib.sha256(f"{instance}\x00{context}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 11


# The Yjs updates of the stored rows of a context (by name), in commit order
# (``Storage.iter_context``, each row's bundle decoded): what a Doc made late is given
# (``ContextLog.doc``). One callable for every context of a ledger: nothing per context.
Rows = Callable[[str], Iterable[bytes]]


class ContextLog:
    def __init__(self, name: str, client_id: int, limits: Limits = DEFAULT_LIMITS,
                 read: Reader | None = None, rows: Rows | None = None) -> None:
        """``read`` reads spans of this context's stored rows (``Storage.read_spans``): with
        it, a record leaves memory once the owner says which row holds it (``stored_row``);
        without it, every record stays in memory. ``rows`` reads the Yjs updates of the
        stored rows, for a Doc made late (``doc``); without it, every update stays in memory
        until a Doc is made."""
        # why: at most MAX_ATTRIBUTES attributes here and in the index: CPython 3.11 shares
        # the keys of an instance dict between instances up to 30 of them; a 30th made each
        # ContextLog's dict 1,584 B instead of 296 (contexts of 10 entries loaded: 8.5 KB
        # each against 7.2)
        self.name = check_context(name)  # (entries of this name skip the pattern on receive)
        self.limits = limits
        self.client_id = client_id  # our Yjs client in this context (this open)
        # The Doc is made on first need (``doc``): our own appends, a load and a peer's update
        # whose structs all integrate need none (see _insert_own, load_stored, receive).
        self._doc: Doc[Any] | None = None
        self._array: Array[Any] | None = None
        self._subscription: Any = None
        self._rows = rows
        # Without a Doc: the Yjs state (client → the clock below which every struct is
        # integrated, ours included), and the updates made or applied since the last stored
        # row (what a Doc made now is given after the stored rows; see stored_row).
        self._state: dict[int, int] = {}
        # (lists, not deques, here and in _to_store: they hold a row or two, and an empty
        # deque is 760 B, one per loaded context: 2 of ~4.5 KB of an empty ContextLog)
        self._not_stored: list[bytes] = []
        # structs of a load that did not integrate yet (a tuple while none: no list per context)
        self._waiting: Sequence[GatedStruct] = ()
        # the first slot whose id the tree has not taken yet (a load's, or one of our
        # appends'): from it on every id joins the tree when it is next used (``tree``)
        self._loading: int | None = None
        self.docs_made = 0  # Docs made for this context (tests)
        self._next_clock = 0  # our client's next Yjs clock
        self._doc_clock = 0  # our client's clock the Doc has reached (≤ _next_clock)
        # slots of our own items the Doc does not hold yet, the first at _doc_clock
        self._own_pending: list[int] = []
        self._doc_state: dict[int, int] | None = None  # the Doc's state vector, decoded
        self._inserted: list[bytes | bytearray] = []
        # applied updates with structs yrs holds pending, each with the clock each of its
        # clients must reach for it to be settled (None: ask pycrdt)
        self._unsettled: list[tuple[bytes, dict[int, int] | None]] = []
        self._array_len = 0  # array elements accounted for by observer events
        self.index = EntryIndex(self.name, read)
        self._row_count = 0  # rows stored for this context (the next one's number)
        # For each update handed out to be stored, in order: the slots of its new entries, in
        # the order its bytes hold them as far as we know (see stored_row).
        self._to_store: list[Sequence[int]] = []
        # why: our client's id as a varuint, for each append's update (``encode_appended``):
        # spread over 10,000 contexts its cache of 1,024 missed at every append (~2.5 us)
        self._who = varuint_bytes(client_id)
        self.by_id = EntriesById(self.index)  # (built on lookup: entries are not kept whole)
        self.ordered = EntriesInOrder(self.index)
        self._tree = MerkleTree()
        self.heads: dict[bytes, Head] = {}  # raw entry id → a verified head naming it
        # what changed in ``heads`` since the ledger last stored it (None: dropped)
        self.head_changes: dict[bytes, Head | None] = {}
        self._anchors: dict[str, int] = {}  # writer → seq of the highest head kept as anchor

    @property
    def forks(self) -> dict[tuple[str, int], list[str]]:
        """(writer, seq) → the ids of every authentic entry there, when there is more than one"""
        return self.index.forks

    @property
    def new_forks(self) -> list[tuple[str, int]]:
        return self.index.new_forks  # for the ledger to report, then clear

    @property
    def contiguous(self) -> dict[str, int]:
        return self.index.contiguous

    @property
    def max_lamport(self) -> int:
        return self.index.max_lamport

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
        return len(self.index)

    def root(self) -> bytes:
        return self.tree.root()

    def max_seq(self, writer: str) -> int:
        return self.index.max_seq(writer)

    def entry_at(self, writer: str, seq: int) -> Entry | None:
        """The (first) entry held at a writer's position."""
        return self.index.entry_at(writer, seq)

    def raw_id_at(self, writer: str, seq: int) -> bytes | None:
        """The id of the (first) entry held at a writer's position."""
        index = self.index
        number = index.writer_index(writer)
        slot = None if number is None else index.slot_at(number, seq)
        return None if slot is None else index.raw_id(slot)

    @property
    def has_doc(self) -> bool:
        return self._doc is not None

    @property
    def doc(self) -> Doc[Any]:
        """The pycrdt Doc holding every item of this context, made when first needed (a diff,
        a peer's update whose structs do not all integrate, a compaction) from the stored
        rows and the updates not stored yet; our own items appended after it are given to it
        then too."""
        return self.make_doc()

    def make_doc(self) -> Doc[Any]:
        """``doc``: made now if there is none."""
        doc = self._doc
        if doc is None:
            doc = self._doc = self._made_doc()
            self._array = doc.get(ARRAY_NAME, type=Array)
            self._array_len = len(self._array)
            # Not ``observe(self._on_insert)``: pycrdt keeps the callback in Rust, where
            # Python's GC cannot see the cycle back to this object, so a bound method would
            # never be freed.
            self._subscription = _observe(self._array, weakref.ref(self))
        if self._own_pending:
            self._flush_own(doc)
        return doc

    def _made_doc(self) -> Doc[Any]:
        """A Doc given every stored row and every update not stored yet; IntegrityError if it
        does not hold exactly the structs this context integrated without it."""
        doc: Doc[Any] = Doc(client_id=self.client_id)
        self.docs_made += 1
        updates = [*(self._rows(self.name) if self._rows is not None else ()),
                   *self._not_stored]
        if updates:
            # why: yrs integrates an update's structs one at a time: a context's rows merged
            # and squashed go in as one struct per client run (see yjs.squash)
            merged = updates[0] if len(updates) == 1 else \
                squash(merge_updates(*updates), ARRAY_NAME)
            del updates
            try:
                doc.apply_update(merged)
            except Exception as exc:  # our own rows
                raise IntegrityError(f"the stored rows of {self.name} refused by pycrdt: {exc}"
                                     ) from None
        held = decode_state_vector(doc.get_state())
        if held != {c: k for c, k in self._state.items() if k}:
            raise IntegrityError(f"the Doc made from the rows of {self.name} holds "
                                 f"{sum(held.values())} items, not {sum(self._state.values())}")
        self._not_stored.clear()
        self._next_clock = self._doc_clock = held.get(self.client_id, 0)
        self._doc_state = held
        return doc

    def _flush_own(self, doc: Doc[Any]) -> None:
        """Give the Doc our items appended without it (the same struct each commit stored)."""
        pending, self._own_pending = self._own_pending, []
        # (a piece at a time: a context of 1M entries appended without a Doc would otherwise
        # hold its records twice more while one update of all of them is built and applied)
        for start in range(0, len(pending), FLUSH_CHUNK):
            records = self.index.records(pending[start : start + FLUSH_CHUNK])
            try:
                doc.apply_update(encode_appended(self.client_id, self._doc_clock, records,
                                                 ARRAY_NAME, self._who))
            except Exception as exc:  # our own struct: this would be a bug, not a peer's fault
                raise IntegrityError(f"our own items refused by pycrdt in {self.name}: {exc}"
                                     ) from None
            self._doc_clock += len(records)
            inserted, self._inserted = self._inserted, []
            if inserted == records:
                self._array_len += len(records)
            else:
                # (items yrs held pending may have waited for one of ours: index what came)
                self._inserted = inserted
                self._index_inserted((), (), trusted=True)

    def _doc_clocks(self) -> dict[int, int]:
        """The Doc's state vector, decoded (cached until an update is applied); our client's
        next clock follows it when the Doc holds more of our client than we made (positions
        a peer squatted, or our items of this open read back from the store)."""
        state = self._doc_state
        if state is None:
            doc = self._doc
            state = self._doc_state = {} if doc is None else decode_state_vector(
                doc.get_state())
            own = state.get(self.client_id, 0)
            if own > self._next_clock:
                assert not self._own_pending  # (the Doc is flushed before anything is applied)
                self._next_clock = self._doc_clock = own
        return state

    def _clocks(self) -> dict[int, int]:
        """Client → the clock below which every struct is integrated (the Doc's state vector
        when there is a Doc), ours included; a copy."""
        if self._doc is None:
            return dict(self._state)
        state = self._doc_clocks()
        if self._next_clock > state.get(self.client_id, 0):
            state = {**state, self.client_id: self._next_clock}
        return dict(state)

    def item_count(self) -> int:
        """The items of the Doc's array (with a Doc, or what it would hold)."""
        if self._doc is None:
            return sum(self._state.values())
        return len(self.doc.get(ARRAY_NAME, type=Array))

    def state_vector(self) -> bytes:
        return encode_state_vector(self._clocks())

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
        """Entries not covered by ``after``, in causal order, and the next cursor (see
        ``EntryIndex.get``)."""
        return self.index.get(key, after, limit)

    # ---- authentication ------------------------------------------------------------------------

    def authenticate(
        self, entries: Sequence[Entry], heads: Sequence[Head] = (), trusted: bool = False,
    ) -> list[Head]:
        """Check that every entry of ``entries`` we do not hold yet is vouched for by a head or
        by an authentic successor (in ``entries`` or held), by the one authorship rule
        (``authorship.Authorship``); returns the heads that were needed (their signatures
        checked, unless ``trusted``). ForgedEntry if any entry is not."""
        return self._authenticate(
            [(e.writer, e.seq, bytes.fromhex(e.id), e.prev) for e in entries], heads, trusted)

    def _authenticate(self, offered: Iterable[tuple[str, int, bytes, bytes]],
                      heads: Sequence[Head], trusted: bool = False) -> list[Head]:
        """``authenticate`` of entries given as (writer, seq, raw id, prev)."""
        # (an empty context, as in a cold catch-up, holds none of them: no lookups)
        find = self.index.find if len(self.index) else None
        # why: one entry can be offered twice (an update holding the same record as two Yjs
        # items, as a squat's re-insert does, or a voucher that is also in the update); the
        # rule takes each entry once (a second copy found its vouch used: a fuzzed schedule
        # refused an honest update as forged and never converged)
        fresh: dict[bytes, tuple[str, int, bytes, bytes]] = {}
        for offer in offered:
            raw = offer[2]
            if raw not in fresh and (find is None or find(raw) is None):
                fresh[raw] = offer
        if not fresh:
            return []
        rule: Authorship[str] = Authorship(self.name, _HEAD_WRITER, self._held_vouches)
        for head in heads:
            rule.head(head)
        # why: tuples sort in C (a key lambda per entry was ~3% of a cold catch-up), and an
        # update's entries mostly come in ascending seq: reversed, that is one run, and from
        # the top down each entry finds its successor's vouch waiting (nothing pends). Ids
        # are unique, so the sort never reaches ``prev``.
        take = rule.entry
        for writer, seq, raw, prev in sorted(fresh.values(), reverse=True):
            take(raw, writer, seq, prev)
        return rule.finish(check=not trusted)

    def _held_vouches(self, raw: bytes, writer: str, seq: int) -> bool:
        """What we hold vouches for the entry at (``writer``, ``seq``) with id ``raw``: a head
        we keep names it, or an entry we hold one seq above names it as prev."""
        return raw in self.heads or self.index.vouched_by_held(writer, seq, raw)

    def keep_heads(self, heads: Iterable[Head], stored: bool = False) -> None:
        """Hold these verified heads; unless ``stored`` (read from the store), they are also
        noted in ``head_changes`` for the next commit to store."""
        held, changes = self.heads, self.head_changes
        for head in heads:
            raw = head.entry_id
            if raw not in held:
                held[raw] = head
                if not stored:
                    changes[raw] = head

    def _drop_vouched(self, slots: Sequence[int], prevs: Iterable[bytes] = ()) -> None:
        """Newly held entries (at ``slots``; ``prevs``: the prev each names, when the caller
        has them) vouch for the entry each names as ``prev``: drop that entry's head, unless
        it is an anchor (one every ANCHOR_EVERY seqs of its writer)."""
        heads = self.heads
        if not heads:
            return
        index = self.index
        for slot, prev in zip(slots, prevs or map(index.prev, slots), strict=True):
            head = heads.get(prev)
            if head is None or head.seq != index.seq[slot] - 1:
                continue
            writer = index.writers[index.writer[slot]]
            if head.writer == writer:
                self._drop_head(prev, head, writer)

    def _drop_head(self, raw: bytes, head: Head, writer: str) -> None:
        """An entry held now vouches for ``head``'s entry (``raw``, of ``writer``): drop the
        head, unless it is an anchor (one every ANCHOR_EVERY seqs of its writer)."""
        heads = self.heads
        anchor = self._anchors.get(writer)
        if anchor is None:  # (first time since the load: the highest head below)
            anchor = max((h.seq for h in heads.values()
                          if h.seq < head.seq and h.writer == writer), default=0)
        if head.seq - anchor >= ANCHOR_EVERY:
            self._anchors[writer] = head.seq
        else:
            self._anchors[writer] = anchor
            del heads[raw]
            self.head_changes[raw] = None

    def take_head_changes(self) -> list[tuple[bytes, bytes | None]]:
        """What changed in ``heads`` since the last call, encoded for storage."""
        changes, self.head_changes = self.head_changes, {}
        return [(raw, None if head is None else head.encode()) for raw, head in changes.items()]

    def trim_heads(self) -> list[Head]:
        """Keep only the heads something needs — those of chain tips (what ``proof_for`` of
        every entry names), those of entries not indexed yet (structs Yjs holds pending) and
        anchors (one every ANCHOR_EVERY seqs of a writer or more) — and return them.
        Compaction stores only these (heads read from rows of older formats are all there)."""
        index = self.index
        kept = {h.entry_id: h for h in self.proof_for_ids(map(index.raw_id, index.order))[0]}
        by_writer: dict[str, list[Head]] = {}
        for raw, head in self.heads.items():
            if index.find(raw) is None:
                kept.setdefault(raw, head)
            elif raw not in kept:
                by_writer.setdefault(head.writer, []).append(head)
        for heads in by_writer.values():
            last = 0
            for head in sorted(heads, key=attrgetter("seq")):
                if head.seq - last >= ANCHOR_EVERY:
                    kept[head.entry_id] = head
                    last = head.seq
        self.heads = kept
        self.head_changes = {}
        self._anchors = {}
        return list(kept.values())

    def proof_for(self, entries: Iterable[Entry]) -> tuple[list[Head], list[bytes]]:
        """What a receiver needs besides ``entries`` (held here) to authenticate them: see
        ``proof_for_ids``."""
        return self.proof_for_ids(bytes.fromhex(e.id) for e in entries)

    def proof_for_ids(self, ids: Iterable[bytes]) -> tuple[list[Head], list[bytes]]:
        """What a receiver needs besides the entries with these raw ids (those held here) to
        authenticate them: for the top of each run of one writer, the head naming it, or the
        records that link it up to the nearest entry with a head, and that head. Every entry
        we hold is authentic, so the path exists."""
        index = self.index
        found = (index.find(raw) for raw in ids)
        batch = dict.fromkeys(slot for slot in found if slot is not None)
        writer_of, seq_of, writers = index.writer, index.seq, index.writers
        positions = {(writer_of[s], seq_of[s]) for s in batch}
        forks = self.forks
        heads: dict[bytes, Head] = {}
        vouchers: dict[int, bytes] = {}
        for slot in batch:
            writer, seq = writer_of[slot], seq_of[slot]
            if (writer, seq + 1) in positions:
                name = writers[writer]
                if (name, seq) not in forks and (name, seq + 1) not in forks:
                    continue  # the run above is in the batch and brings its own proof
                # why: a forked position holds two entries; only the one that names this
                # entry as prev vouches for it (by position alone, a node holding both
                # branches shipped one without a head: its peers refused it for good)
                above = index.successor(slot)
                if above is not None and above in batch:
                    continue
            current = slot
            while True:
                raw = index.raw_id(current)
                head = self.heads.get(raw)
                if head is not None:
                    heads[raw] = head
                    break
                above = index.successor(current)
                if above is None:
                    raise IntegrityError(
                        f"entry {raw.hex()} of {self.name} has no head and no successor")
                if above in batch:
                    break  # the run above is in the batch already and brings its own proof
                vouchers[above] = index.record(above)
                current = above
        return list(heads.values()), list(vouchers.values())

    def fork_proof(self, writer: str, seq: int) -> dict[str, Any]:
        """Two signed statements putting two different entries at one position of ``writer``:
        for each, a head and the records from the head's entry down to the forked one (each
        naming the next as prev). ``identity.check_fork_proof`` checks it with nothing else."""
        index = self.index
        ids = self.forks[(writer, seq)][:2]
        branches = []
        for entry_id in ids:
            current = index.find_hex(entry_id)
            assert current is not None, "every forked id is held"
            records = [index.record(current)]
            while (head := self.heads.get(index.raw_id(current))) is None:
                above = index.successor(current)
                if above is None:
                    raise IntegrityError(
                        f"entry {index.raw_id(current).hex()}: no head and no successor")
                records.append(index.record(above))
                current = above
            branches.append({"head": head.to_json(),
                             "records": [r.hex() for r in reversed(records)]})
        return {"context": self.name, "writer": writer, "seq": seq, "ids": ids,
                "branches": branches}

    # ---- writes ------------------------------------------------------------------------------

    def append_local(
        self, entries: Sequence[Entry], heads: Sequence[Head] = (),
        built: tuple[Sequence[bytes], Sequence[RecordFields]] | None = None,
    ) -> tuple[Sequence[Entry], bytes]:
        """Insert authentic entries as new items of our own Yjs client (our appends, or entries
        found by id); returns those indexed and the Yjs update to persist. ``built``: the
        entries' records and fields, as ``entry.make_chain`` gives them."""
        slots, update = self._insert_own(entries, heads, built)
        return EntriesAt(self.index, slots), update

    def _insert_own(self, entries: Sequence[Entry], heads: Sequence[Head] = (),
                    built: tuple[Sequence[bytes], Sequence[RecordFields]] | None = None,
                    ) -> tuple[list[int], bytes]:
        """Our own items: indexed, and written as a Yjs update without the Doc, which gets
        them when it is next needed (``doc``)."""
        if built is not None and len(built[0]) == 1 and self._doc is None:
            return self._insert_one(built[0][0], built[1][0], heads)
        return self._insert_many(entries, heads, built)

    def _insert_many(self, entries: Sequence[Entry], heads: Sequence[Head] = (),
                     built: tuple[Sequence[bytes], Sequence[RecordFields]] | None = None,
                     ) -> tuple[list[int], bytes]:
        """``_insert_own`` of any number of entries, with a Doc or without."""
        self.keep_heads(heads)
        if built is None:
            records: Sequence[bytes] = [e.record for e in entries]
            fields: Sequence[RecordFields] = [known_record_fields(r) for r in records]
        else:
            records, fields = built
        doc = self._doc
        if doc is None:
            clock = self._state.get(self.client_id, 0)
        else:
            self._doc_clocks()  # (our next clock, after positions a peer may have squatted)
            clock = self._next_clock
        update = encode_appended(self.client_id, clock, records, ARRAY_NAME, self._who)
        index = self.index
        new = index.add_next(records, fields)  # (our appends: the next of our writer)
        if new is None:  # (entries found by id, or after a peer's fork of our writer)
            new = index.add_records(records, fields)
        if index.read is not None:
            self._to_store.append(new)
        self._next_clock = clock + len(records)
        if doc is None:
            self._state[self.client_id] = self._next_clock
            self._not_stored.append(update)
        elif len(new) == len(records):
            self._own_pending += new
        else:  # (an entry held already becomes one more item of ours: it stays in its slot)
            found = [index.find(f[0]) for f in fields]
            self._own_pending += [slot for slot in found if slot is not None]
        if new and self._loading is None:
            self._loading = new[0]  # (their ids join the tree when it is next used)
        # (every record new: slot after slot, so each one's prev is in its fields)
        self._drop_vouched(new, [f[3] for f in fields] if len(new) == len(fields) else ())
        return new, update

    def _insert_one(self, record: bytes, fields: RecordFields, heads: Sequence[Head]
                    ) -> tuple[list[int], bytes]:
        """``_insert_own`` of one record while there is no Doc, in as few steps as it takes:
        the same index, heads, state and update.

        why: spread over 10,000 contexts every call is of one record (our one append to a
        context in a commit), and ``_insert_own``'s steps for a batch (a list of prevs,
        ``keep_heads``, ``_drop_vouched`` comparing writers by name) cost ~1 us of it."""
        held = self.heads
        for head in heads:  # (keep_heads, inline)
            raw = head.entry_id
            if raw not in held:
                held[raw] = head
                self.head_changes[raw] = head
        client, state = self.client_id, self._state
        clock = state.get(client, 0)
        update = encode_appended(client, clock, (record,), ARRAY_NAME, self._who)
        index = self.index
        new = index.add_next_one(record, fields)  # (our append: the next of our writer)
        if new is None:  # (an entry found by id, or after a peer's fork of our writer)
            new = index.add_records((record,), (fields,))
        if index.read is not None:
            self._to_store.append(new)
        self._next_clock = state[client] = clock + 1
        self._not_stored.append(update)
        if new:
            if self._loading is None:
                self._loading = new[0]  # (its id joins the tree when it is next used)
            # (_drop_vouched of its prev, the writers compared raw: no name formatted)
            prev = fields[3]
            vouched = held.get(prev)
            if vouched is not None and vouched.seq == fields[2] - 1 and \
                    fields[4] == vouched.origin + _U64.pack(vouched.chain):
                self._drop_head(prev, vouched, index.writers[index.writer[new[0]]])
        return new, update

    def apply_remote(
        self, update: bytes, heads: Sequence[Head] = ()
    ) -> tuple[Sequence[Entry], bytes | None]:
        """``receive`` without vouchers: the entries new to this node and the update applied."""
        new, _, applied, _ = self.receive(update, heads)
        return new, applied

    def receive(
        self, update: bytes, heads: Sequence[Head] = (), vouchers: Sequence[bytes] = ()
    ) -> tuple[Sequence[Entry], list[Head], bytes | None, bytes | None]:
        """Gate, verify, authenticate and apply an update from a peer (and entries it sent by
        id, as ``vouchers``).

        Returns the entries new to this node, the heads that vouched for them, the update that
        was applied — what the Doc lacked of ``update`` — and the update of entries re-inserted
        as our own items (vouchers we lacked), each None when it was nothing: the caller
        persists both, in that order, with the heads. Replaying the persisted updates in order
        rebuilds exactly this Doc, pending structs included. Raises ForbiddenUpdate /
        RemoteProtocolError / IntegrityError / ForgedEntry before touching the Doc.
        """
        state = self._clocks()
        structs: list[GatedStruct] = []
        values: list[bytes] = []
        holes: Iterable[int] = ()
        ranges: dict[int, tuple[int, int]] = {}
        if update != _EMPTY_UPDATE:
            structs = gate_structs(update, ARRAY_NAME)
            values, holes, ranges = ranges_of(structs, state)
        # The records checked without building an Entry per record: (raw id, lamport, seq,
        # prev, raw writer) each, for the authorship rule and the index.
        raw_name, limits = self.name.encode("utf-8"), self.limits
        try:
            fields = fresh_record_fields(values, raw_name, set(), limits)
            if len(fields) != len(values):
                # why: a second copy of an id is skipped unchecked there; from a peer, each
                # copy must match its id too, or it would enter the Doc unchecked
                for record in values:
                    record_fields(record, raw_name, limits)
        except IntegrityError:
            for record in values:
                self._decode_own(record)  # names the fault (ForbiddenUpdate: another context's)
            raise
        writers: dict[bytes, str] = {}
        offered: list[tuple[str, int, bytes, bytes]] = []
        for raw, _, seq, prev, writer in fields:
            name = writers.get(writer)
            if name is None:
                name = writers[writer] = writer_name(writer)
            offered.append((name, seq, raw, prev))
        extra = {}
        for record in vouchers:
            entry = self._decode_own(record)
            extra[entry.id] = entry
            offered.append((entry.writer, entry.seq, bytes.fromhex(entry.id), entry.prev))
        used = self._authenticate(offered, heads)
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
        new: list[int] = []  # the slots of the entries new here
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
                structs = []
            if applied == _EMPTY_UPDATE:
                applied = None
            else:
                taken = None if self._doc is not None else self._integrated(applied, structs)
                if taken is not None:
                    new = self._index(taken, values, fields, trusted=True)
                    self._not_stored.append(applied)
                else:  # (a Doc is made now if there is none: some struct would wait in yrs)
                    self._apply(applied)
                    self._settle(applied, {c: end for c, (_, end) in ranges.items()} or None)
                    new = self._index_inserted(values, fields, trusted=True)
                if self.index.read is not None:
                    self._to_store.append(new)
        # Authentic records that did not come as Yjs items (found by id, or a path to a head):
        # keep them as new items of our own client.
        missing = [e for e in extra.values() if e.id not in self.by_id]
        reinserted = None
        added: list[int] = []
        if missing:
            added, reinserted = self._insert_own(missing)  # (drops the heads they vouch for)
        entries = EntriesAt(self.index, new + added)
        if applied is None and reinserted is None:
            return entries, [], None, None  # nothing kept: the heads are not needed (nor stored)
        # Kept only with what the caller persists them with: every head we hold is stored.
        self.keep_heads(used)
        # why: once, not again for ``added``: a second pass over an entry whose prev's head
        # was just kept as an anchor finds that anchor current and drops it
        self._drop_vouched(new)
        return entries, used, applied, reinserted

    def _decode_own(self, record: bytes) -> Entry:
        entry = decode_record(record, self.limits, self.name)
        if entry.context != self.name:
            raise ForbiddenUpdate(
                f"entry {entry.id} belongs to context {entry.context!r}, not {self.name!r}")
        return entry

    def _integrated(self, update: bytes, structs: list[GatedStruct]) -> list[bytes] | None:
        """Integrate ``update`` (its gated ``structs``, or [] to read them) without a Doc:
        the values it inserts, or None (nothing changed) when a struct of it would wait for
        one not held: yrs would hold it pending, and a Doc is needed to say what happens."""
        state = dict(self._state)
        taken, waiting = integrate(structs or gate_structs(update, ARRAY_NAME), state)
        if waiting:
            return None
        self._state = state
        return taken

    def load_stored(self, update: bytes, heads: Sequence[Head] = (),
                    verify: bool = False) -> int:
        """Re-apply an update this node persisted itself (rebuild on start), into the Doc if
        there is one, else without one (``loaded`` then says whether every struct of the rows
        integrated); returns how many entries it added."""
        self.keep_heads(heads, stored=True)
        held = len(self.index)
        if self._doc is None:
            if self._loading is None:
                self._loading = held
            queue = gate_structs(update, ARRAY_NAME)
            if self._waiting:
                queue = [*self._waiting, *queue]
            taken, waiting = integrate(queue, self._state)
            self._waiting = waiting or ()
            # (checked in one batch: each content id hashed, the limits only with ``verify``)
            fields = fresh_record_fields(taken, self.name.encode("utf-8"), set(),
                                         self.limits if verify else _UNLIMITED)
            if len(fields) == len(taken):
                self._index(taken, taken, fields, trusted=not verify)
            else:  # (an entry twice in one row: each copy is checked)
                self._index(taken, (), (), trusted=not verify)
        else:
            self._apply(update)
            self._settle(update)
            self._index_inserted((), (), trusted=not verify)
        return len(self.index) - held

    def load_run(self, blob: bytes, update_at: int, heads: Sequence[Head] = ()) -> bool:
        """``load_stored`` then ``stored_row`` of a stored row whose update (at ``update_at``
        of ``blob``) is a run of one writer's entries after those held (``yjs.even_run``,
        ``EntryIndex.add_run``), read as columns; False, and nothing done, for any other row
        (the caller loads it the usual way).

        why: a load read every record of every row (4.1 CPU-s for the first read of a cold
        context of 1M entries, ``add_records`` ~45% and ``fresh_record_fields`` ~35% of it);
        rows of fewer than ``RUN_MIN`` records are read that way still (a run's columns cost
        ~100 slices a row, whatever its length)."""
        index = self.index
        if self._doc is not None or self._waiting or index.read is None:
            return False
        run = even_run(blob, update_at)
        if run is None or run.length < RUN_MIN:
            return False
        state = self._state
        if run.clock != state.get(run.client, 0) or (
                run.origin is not None and run.origin_clock >= state.get(run.origin, 0)):
            return False  # (it does not integrate now: integrate decides)
        held = len(index)
        if not index.add_run(blob, run.at, run.length, run.stride, run.size, self._row_count):
            return False
        self.keep_heads(heads, stored=True)
        state[run.client] = run.clock + run.length
        if self._loading is None:
            self._loading = held
        self._row_count += 1
        return True

    def loaded(self) -> bool:
        """The load is over (``load_stored`` of every stored row). Returns whether every
        struct loaded without a Doc integrated (else only a Doc says what yrs makes of them:
        the loader loads again with one)."""
        return not self._waiting

    @property
    def tree(self) -> MerkleTree:
        """The Merkle tree of the entry ids; the entries a load or our appends added go to it
        on first use (a root, a proof, a descent).

        why: it takes keys in batches faster than one row's at a time: 200k ids added 128 at
        a time cost 2.3 CPU-s with the root, 65,536 at a time 1.16 (one batch 1.06; all at
        once, a nibble at a time, ``MerkleTree.add_packed``: 1M ids 4.8-5.2 against 9.5-12); with
        summaries that lag their rows (``Ledger.summary_lag_ns``) nothing reads it per commit:
        appends of 100 B into one context, 38-41 against 42-44 µs of CPU per entry in
        ``Ledger.append`` (alternated, load ~6.5)."""
        first, self._loading = self._loading, None
        tree = self._tree
        tree.finish_steps()  # (a build in steps: the steps left, at once)
        if first is not None:
            with memoryview(self.index.ids) as ids:
                tree.add_packed(ids[ID_SIZE * first :])
        return tree

    def tree_step(self, upto: int = 0) -> bool:
        """A step of building the tree (``MerkleTree.start_steps``) while it is empty and more
        than ``BUILD_STEP`` ids wait for it (a load's); once it is built, up to BUILD_STEP of
        the ids that wait below slot ``upto`` (the ids appended during the build: the caller
        says how far). True while steps may be left. The ids appended meanwhile wait for the
        next use, and a use takes the steps left at once."""
        tree = self._tree
        if tree.building:
            return tree.step()
        first = self._loading
        if first is None:
            return False
        if len(tree):
            end = min(upto, first + BUILD_STEP)
            if end <= first:
                return False
            with memoryview(self.index.ids) as ids:
                tree.add_packed(ids[ID_SIZE * first : ID_SIZE * end])
            self._loading = end
            return True
        end = len(self.index.ids) // ID_SIZE
        if end - first <= BUILD_STEP:
            return False
        tree.start_steps(lambda: self.index.ids, first, end)
        self._loading = end  # (from it on, ids wait for the next use as before)
        return tree.step()

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
        doc = self.doc
        self._doc_state = None  # (it changes)
        try:
            doc.apply_update(update)
        except Exception as exc:  # the gate parsed it, so this is a pycrdt-level refusal
            self._inserted.clear()
            raise RemoteProtocolError(f"update refused by pycrdt for {self.name}: {exc}") from None

    def _index_inserted(self, values: Sequence[bytes],
                        fields: Sequence[tuple[bytes, int, int, bytes, bytes]],
                        trusted: bool) -> list[int]:
        """Index what the observer saw inserted (see ``_index``)."""
        inserted: Sequence[bytes | bytearray]
        inserted, self._inserted = self._inserted, []
        assert self._array is not None  # (called after the Doc took an update)
        length = len(self._array)
        counted, self._array_len = self._array_len + len(inserted), length
        if length != counted:
            # yrs sometimes integrates a pending update (one that waited for a missing
            # dependency) without reporting it to the observer until a later transaction:
            # when the count does not add up, look at the whole array.
            inserted = list(self._array)
        return self._index(inserted, values, fields, trusted)

    def _index(self, inserted: Sequence[bytes | bytearray], values: Sequence[bytes],
               fields: Sequence[tuple[bytes, int, int, bytes, bytes]],
               trusted: bool) -> list[int]:
        """Index the records ``inserted`` into the array; ``fields`` are the checked fields of
        the records ``values`` offered, one per id (``entry.fresh_record_fields``); any other
        record is checked here (one held already is skipped). Returns the slots of the
        entries new here."""
        index = self.index
        if len(fields) == len(values) and inserted == values:
            # why: the usual case (an append, a push, a catch-up): exactly the records offered,
            # in order. One C-level comparison of the lists, instead of hashing every 100 B
            # record twice into a dict and copying each bytearray pycrdt hands over (~6% of a
            # cold catch-up, py-spy).
            records: Sequence[bytes] = values
            checked = fields
        else:
            # (by raw id: keyed by the whole record, a 100 KB entry was hashed twice more for
            # the dict, ~0.25 of 1.0 CPU-s of a 1,000 x 100 KB catch-up's core work, cProfile)
            known = {f[0]: f for f in fields}
            name = self.name.encode("utf-8")
            # Our own store (trusted): the content hash and canonical form are still checked,
            # field limits were checked on the way in.
            limits = _UNLIMITED if trusted else self.limits
            records, checked = [], []
            for raw in inserted:
                record = bytes(raw)
                found = known.get(record[:ID_SIZE])  # (its content was checked against its id)
                if found is not None:
                    records.append(record)
                    checked.append(found)
                elif index.find(record[:ID_SIZE]) is None:
                    records.append(record)
                    checked.append((record[:ID_SIZE], *record_fields(record, name, limits)))
        new = index.add_records(records, checked)
        if self._loading is None:
            # (a slot's first 32 bytes are the id its record's fields were checked against)
            self._tree.add_keys(_new_ids(index, new, checked))
        return new

    # ---- where records are stored -------------------------------------------------------------

    def stored_row(self, blob: bytes, update_at: int) -> None:
        """``blob`` is now this context's next stored row (committed, or read back at a load),
        its Yjs update starting at ``update_at``: the records not stored yet that it holds
        leave memory, read back from it when needed (``EntryIndex.records``).

        Each record is found by its bytes, in the order of the slots the update added (the
        order of its bytes for our appends and for a peer's update as yrs reports it, which is
        the order it came in); when that is not the order of the row's bytes (items of several
        clients, or a struct Yjs held pending), the update is parsed to find the rest. A
        record found nowhere (in a row stored earlier, as a struct Yjs held pending) stays in
        memory.

        why: on the path of every append (128 records of 257 B per row): parsing the update
        again with the gate's reader and finding each value cost 1.7-2.3 µs per record,
        ``bytes.find`` of each record from the end of the one before 1.0-1.2 µs (its search
        is prepared per call), checking first right after the buffer prefix a value has in a
        ContentAny (``_next_at``) 0.3 µs."""
        row = self._row_count
        self._row_count += 1
        if self._not_stored:
            del self._not_stored[0]  # (lists, not deques: see _not_stored)
        slots = self._to_store.pop(0) if self._to_store else None
        index = self.index
        if index.read is None or not index.unstored:
            return
        if not self._locate(row, blob, update_at, list(index.unstored) if slots is None
                            else slots):
            self._locate_parsed(row, blob, update_at)

    def _locate(self, row: int, blob: bytes, start: int, slots: Iterable[int]) -> bool:
        """Note where the records of ``slots`` not stored yet lie in ``blob``, looking for each
        after the one before (from ``start``); False at the first one not found there."""
        index = self.index
        unstored, rows, offsets, sizes = index.unstored, index.row, index.offset, index.size
        at = start
        for slot in slots:
            record = unstored.pop(slot, None)
            if record is None:
                continue
            size = len(record)
            # (_next_at, inlined: the varuint of a size below 128 is one byte, below 16384 two)
            guess = at + (2 if size < 128 else 3 if size < 16384 else 1 + _varuint_size(size))
            at = guess if blob.startswith(record, guess) else blob.find(record, at)
            if at < 0:
                unstored[slot] = record
                return False
            try:
                rows[slot], offsets[slot], sizes[slot] = row, at, size
            except OverflowError:  # (a column too narrow for it: the index widens it)
                index.stored(slot, row, at, size)
                rows, offsets, sizes = index.row, index.offset, index.size
            at += size
        return True

    def _locate_parsed(self, row: int, blob: bytes, start: int) -> None:
        """``_locate`` for every record of the update in ``blob`` (from ``start``), in the
        order of its bytes, read by the gate's parser."""
        index = self.index
        unstored, find = index.unstored, index.find
        at = start
        for value in appended_values(blob[start:], ARRAY_NAME):
            at = _next_at(blob, value, at)
            slot = find(value[:ID_SIZE])
            if slot is not None and unstored.get(slot) == value:
                index.stored(slot, row, at, len(value))
            at += len(value)

    def spans_in(self, blob: bytes, update_at: int) -> tuple[array[int], array[int]]:
        """Where every entry's record lies in ``blob``, a compacted state (``compacted_state``
        stored as a row, its update at ``update_at``): (offsets, sizes) by slot, for
        ``compacted``. IntegrityError if one is missing (nothing is replaced then)."""
        index = self.index
        n = len(index)
        offsets, sizes = array("Q", bytes(8 * n)), array("I", bytes(4 * n))
        found = 0
        at = update_at
        for value in appended_values(blob[update_at:], ARRAY_NAME):
            at = _next_at(blob, value, at)
            slot = index.find(value[:ID_SIZE])
            if slot is not None and not sizes[slot]:
                offsets[slot], sizes[slot] = at, len(value)
                found += 1
            at += len(value)
        if found != n:
            raise IntegrityError(f"the compacted state of {self.name} holds {found} of its "
                                 f"{n} entries")
        return offsets, sizes

    def compacted(self, offsets: array[int], sizes: array[int]) -> None:
        """The stored rows are now one, the compacted state ``spans_in`` read (row 0)."""
        index = self.index
        self._row_count = 1
        self._to_store.clear()
        if index.read is None:
            return
        index.row = array("B", bytes(len(index)))
        index.offset, index.size = offsets, sizes
        index.unstored.clear()

    def compacted_state(self) -> bytes:
        """The whole Doc as one update, pending structs included: replaces the stored history
        without changing any read, now or once what the pending structs wait for arrives."""
        if self._unsettled:
            return merge_updates(self.doc.get_update(), *(u for u, _ in self._unsettled))
        return self.doc.get_update()


def _new_ids(index: EntryIndex, new: Sequence[int],
             fields: Sequence[tuple[bytes, int, int, bytes, bytes]]) -> list[bytes]:
    """The ids of the slots ``add_records`` just added for records of these ``fields``: the
    fields' own when every record was new (no copy out of the index's buffer)."""
    if len(new) == len(fields):
        return [f[0] for f in fields]
    return [index.raw_id(slot) for slot in new]


def _next_at(blob: bytes, value: bytes, at: int) -> int:
    """Where ``value`` lies in ``blob`` from ``at`` on: right after a lib0 buffer prefix (tag,
    varuint size), as a ContentAny holds each value after the one before, when it is there;
    else where its bytes first appear (a struct's header between, a ContentBinary); -1 if
    nowhere. The bytes there are ``value``'s either way: a record read back is the same."""
    guess = at + 1 + _varuint_size(len(value))
    return guess if blob.startswith(value, guess) else blob.find(value, at)


def _varuint_size(n: int) -> int:
    """Bytes of ``n`` as a varuint (7 bits a byte)."""
    return (n.bit_length() + 6) // 7 or 1


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
