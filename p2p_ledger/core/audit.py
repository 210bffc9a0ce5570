"""The full check of one context's stored rows, streamed: ``verify`` without a Doc.

Theory of operation
-------------------
``verify`` must recheck everything from scratch (every content id, canonical form, limit and
signature) and compare what the rows hold with the stored summary (root, entry count, Yjs
state vector, Lamport maximum, forks). Rebuilding the context's ``ContextLog`` does that but
holds the whole context in memory (its Doc, an ``Entry`` per entry, the Merkle tree: ~2 KB per
entry) and runs at ~26k entries/s. This module reads the rows once, in commit order, and keeps
only what the answer needs:

- **Yjs integration without yrs** (``yjs.integrate``, which a loaded context uses too). The
  log is grow-only: every stored struct passed the grow-only gate (``yjs.gate_structs``), so
  an Item is integrated exactly when its client's earlier clocks are, and its origin and right
  origin (if any) are. ``integrated`` holds, per client, the clock below which everything is
  integrated (the state vector); a struct whose dependencies are missing waits in ``waiting``
  and is retried after each row. Structs still
  waiting at the end are ones yrs holds pending too: then ``audit`` answers None and the
  caller rebuilds the context the old way, so a corner of yrs's pending rules can never make
  this check disagree with a rebuild.
- **Each entry once.** A new id at a position (writer, seq) already taken is a fork; the
  same entry inserted twice (found by id, then by Yjs) counts once. Positions are kept per
  writer as the contiguous prefix seen plus the seqs seen beyond it (in commit order, a
  writer's seqs come in order, so that set stays empty). At a position not taken yet, an id
  checked against its record is new (the record names its position), so only an entry at a
  taken position, or a record that fails its check (one stored again is skipped unchecked,
  as a rebuild skips it), asks whether its id was counted already. The ids counted go to an
  ``IdSet`` (``MemoryIds``: a set; a driver's may keep them on disk, ``trio/verify.py``).
- **Authentication by the one rule** (``authorship.Authorship``, which ``ContextLog.authenticate``
  uses too): an entry is authentic when a head names it or when an authentic entry of its
  writer one seq above names it as ``prev``. The heads stored apart from the rows (chain tips
  and anchors) are offered first; rows of older formats bring their commits' heads. Fed in
  commit order, an entry waits for its successor (one per writer at a time, unless a tip's
  head names it). A head's signature is checked only if nothing else vouches for its entry by
  the end: one Ed25519 verification per writer chain, not per commit (~15k verifications/s
  per core).
- **The root** comes from the sorted ids at the end (``IdSet.finish``).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Generator, Iterable
from typing import Protocol, TypeVar

from .authorship import Authorship, raw_writer
from .bundle import BARE, decode_bundle
from .entry import CONTEXT_RE, ID_SIZE, Limits, fresh_record_fields, known_record_fields
from .errors import IntegrityError
from .identity import Head
from .merkle import root_of_keys
from .storage import Summary
from .yjs import (
    GatedStruct,
    encode_state_vector,
    gate_structs,
    integrate,
    integrate_usual,
    usual_row,
)

ARRAY_NAME = "entries"
T = TypeVar("T")
# why: spread over 10,000 contexts a row holds one entry, and checking each row's records in a
# call of their own cost ~1.5 us per row in calls and set-up. 4,096 cost one context of 128
# entries per row ~7% more CPU than 256 (same instructions: records gone cold in the cache);
# a batch is also a step of ``audit_steps`` (~3 ms)
CHECK_BATCH = 256
BARE_SIZE = len(BARE)


class IdSet(Protocol):
    """Where ``audit`` keeps the raw ids of the entries it counted: they give the count and the
    Merkle root at the end, and answer the rare question "was this id counted already?" (an
    entry at a position already taken: the same entry stored twice, or a fork; a record that
    fails its check). A driver may keep them on disk (``trio/verify.py``); ``MemoryIds``
    holds them in a set."""

    def add(self, ids: list[bytes]) -> None:
        """Count ``ids`` (new, distinct, checked)."""

    def __contains__(self, raw: object) -> bool:
        """Whether ``raw`` was counted (exact; may be slow: asked only in the rare cases)."""

    @property
    def known(self) -> Container[bytes]:
        """Ids counted, as fast to ask as a set: all of them, or only the recent ones (for
        ``Authorship.known``, where an id missing costs only a note kept for nothing)."""

    def finish(self) -> tuple[bytes, int]:
        """The Merkle root of the ids counted and how many there are."""


class MemoryIds:
    """The ids in a set (~100 B per id: 1M ids ~100 MB)."""

    __slots__ = ("ids",)

    def __init__(self) -> None:
        self.ids: set[bytes] = set()

    def add(self, ids: list[bytes]) -> None:
        self.ids.update(ids)

    def __contains__(self, raw: object) -> bool:
        return raw in self.ids

    @property
    def known(self) -> Container[bytes]:
        return self.ids

    def finish(self) -> tuple[bytes, int]:
        return root_of_keys(self.ids), len(self.ids)


class _Positions:
    """The seqs of one writer seen so far: a contiguous prefix and the ones beyond it."""

    __slots__ = ("run", "beyond")

    def __init__(self) -> None:
        self.run = 0
        self.beyond: set[int] = set()

    def add(self, seq: int) -> bool:
        """Mark ``seq`` seen; False if it was already."""
        if seq <= self.run or seq in self.beyond:
            return False
        if seq == self.run + 1:
            run = seq
            beyond = self.beyond
            while run + 1 in beyond:
                run += 1
                beyond.discard(run)
            self.run = run
        else:
            self.beyond.add(seq)
        return True


def audit(name: str, rows: Iterable[bytes], limits: Limits,
          heads: Iterable[Head] = (), ids: IdSet | None = None) -> Summary | None:
    """Check every stored row of context ``name`` (bundles, in commit order) with the heads
    stored apart from them and recompute its summary. Raises IntegrityError / ForgedEntry (or
    the bundle's and gate's errors) at the first problem; None when some structs stay pending
    in Yjs (the caller then rebuilds). ``ids`` keeps the ids counted (``MemoryIds`` if None)."""
    return finished(audit_steps(name, rows, limits, heads, ids))


def finished(steps: Generator[int, None, T], step: Callable[[int], None] | None = None) -> T:
    """What a generator of steps returns, its steps all taken at once (``step`` called with
    what each yields: progress)."""
    while True:
        try:
            done = next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if step is not None:
            step(done)


def audit_steps(name: str, rows: Iterable[bytes], limits: Limits,
                heads: Iterable[Head] = (), ids: IdSet | None = None, checked: bool = False,
                ) -> Generator[int, None, Summary | None]:
    """``audit``, a step at a time: yields the number of entries checked so far after each
    batch of ``CHECK_BATCH`` records, so a driver can serve between steps (``node
    --verify-in-background``); returns what ``audit`` returns. With ``checked``, every record
    of these rows was found sound elsewhere (``unsound_contexts`` found nothing wrong in them):
    their fields are read from their tails, unchecked; the answer is the one without it."""
    if not CONTEXT_RE.fullmatch(name):
        raise IntegrityError(f"{name!r} is not a valid context name")
    context = name.encode("utf-8")
    counted = MemoryIds() if ids is None else ids
    integrated: dict[int, int] = {}
    waiting: list[GatedStruct] = []
    positions: dict[bytes, _Positions] = {}  # raw writer (origin ‖ chain) → its seqs seen
    forks: set[tuple[bytes, int]] = set()
    # why: ``known`` holds only the ids of batches already taken, never one of the batch being
    # taken that it has not reached (an entry whose chain is vouched for must not find its
    # ``prev`` "known" while that ``prev`` still waits later in the batch, or the note
    # vouching for it is lost: a forked chain stored in one row ahead of its first seqs)
    rule: Authorship[bytes] = Authorship(name, raw_writer, known=counted.known)
    for head in heads:
        rule.head(head)
    max_lamport = 0
    stored = 0
    entries = 0

    def fields_of(records: list[bytes]) -> list[tuple[bytes, int, int, bytes, bytes]]:
        """The fields of ``records`` not counted yet, each checked; a record whose id was
        counted before is the same entry again, skipped unchecked (as a rebuild skips it)."""
        batch: set[bytes] = set()
        if checked:
            out = []
            for record in records:
                if record[:ID_SIZE] not in batch:
                    batch.add(record[:ID_SIZE])
                    out.append(known_record_fields(record))
            return out
        try:
            return fresh_record_fields(records, context, batch, limits)
        except Exception:  # (rare) a bad record, or one counted in an earlier batch
            batch.clear()
            out = []
            for record in records:
                if record[:ID_SIZE] not in batch and record[:ID_SIZE] not in counted:
                    out += fresh_record_fields([record], context, batch, limits)
            return out

    def take(records: list[bytes]) -> None:
        nonlocal max_lamport, entries
        new: list[bytes] = []
        for raw, lamport, seq, prev, writer in fields_of(records):
            held = positions.get(writer)
            if held is None:
                held = positions[writer] = _Positions()
            if seq == held.run + 1 and not held.beyond:
                held.run = seq  # the usual case: the writer's next seq (``_Positions.add``)
            elif not held.add(seq):
                # A taken position: the same entry stored again (counted already), or a fork.
                # (At a position not taken, an id checked against its record is new: the
                # record names the position.)
                if raw in counted:
                    continue
                forks.add((writer, seq))
            new.append(raw)
            if lamport > max_lamport:
                max_lamport = lamport
            rule.entry(raw, writer, seq, prev)
        counted.add(new)
        entries += len(new)

    taken: list[bytes] = []  # records integrated, not checked yet: checked in batches, in order

    def check_taken() -> None:
        nonlocal taken
        batch, taken = taken, []
        take(batch)

    usual = usual_row(BARE, ARRAY_NAME).fullmatch
    clients: dict[bytes, int] = {}
    try:
        for blob in rows:
            stored += len(blob)
            if not waiting and type(blob) is bytes:
                match = usual(blob)  # (the usual row: one entry appended after the last)
                if match is not None:
                    value = integrate_usual(match, integrated, clients)
                    if value is not None:
                        taken.append(value)
                        if len(taken) >= CHECK_BATCH:
                            check_taken()
                            yield entries
                        continue
            if blob.startswith(BARE):  # (a stored row: no heads, no vouchers)
                structs = gate_structs(blob[BARE_SIZE:], ARRAY_NAME)
            else:
                bundle = decode_bundle(blob)
                structs = gate_structs(bundle.update, ARRAY_NAME)
                if bundle.heads:
                    check_taken()  # (``rule`` sees entries and heads in store order)
                    for head in bundle.heads:
                        rule.head(head)
            got, waiting = integrate([*waiting, *structs] if waiting else structs, integrated)
            taken += got
            if len(taken) >= CHECK_BATCH:
                check_taken()
                yield entries
        check_taken()
    except Exception:
        check_taken()  # a bad record of an earlier row is the first problem, as it always was
        raise
    if waiting:
        return None
    rule.finish()
    root, count = counted.finish()
    return Summary(root, count, encode_state_vector(integrated), max_lamport, len(forks), stored)


def unsound_contexts(rows: Iterable[tuple[str, bytes]], limits: Limits) -> set[str]:
    """The contexts of ``rows`` (context, stored row: any order) holding a row that does not
    decode or pass the gate, or a record that fails its check (content id, canonical form,
    limits, context), or one id twice in a struct with different bytes. Every record is
    checked, whether or not Yjs integrates it, so a context not named here can be audited
    with ``checked`` (``Ledger.verify``'s ``apart``: another process runs this meanwhile)."""
    unsound: set[str] = set()
    for name, blob in rows:
        if name in unsound:
            continue
        try:
            for *_, values in gate_structs(decode_bundle(blob).update, ARRAY_NAME):
                if len(fresh_record_fields(values, name.encode("utf-8"), set(),
                                           limits)) != len(values):
                    first: dict[bytes, bytes] = {}
                    if any(first.setdefault(record[:ID_SIZE], record) != record
                           for record in values):
                        unsound.add(name)
        except Exception:  # (what is wrong is named by the full check of the context)
            unsound.add(name)
    return unsound
