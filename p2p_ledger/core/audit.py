"""The full check of one context's stored rows, streamed: ``verify`` without a Doc.

Theory of operation
-------------------
``verify`` must recheck everything from scratch (every content id, canonical form, limit and
signature) and compare what the rows hold with the stored summary (root, entry count, Yjs
state vector, Lamport maximum, forks). Rebuilding the context's ``ContextLog`` does that but
holds the whole context in memory (its Doc, an ``Entry`` per entry, the Merkle tree: ~2 KB per
entry) and runs at ~26k entries/s. This module reads the rows once, in commit order, and keeps
only what the answer needs:

- **Yjs integration without yrs.** The log is grow-only: every stored struct passed the
  grow-only gate (``yjs.gate_structs``), so an Item is integrated exactly when its client's
  earlier clocks are, and its origin and right origin (if any) are. ``integrated`` holds, per
  client, the clock below which everything is integrated (the state vector); a struct whose
  dependencies are missing waits in ``waiting`` and is retried after each row. Structs still
  waiting at the end are ones yrs holds pending too: then ``audit`` answers None and the
  caller rebuilds the context the old way, so a corner of yrs's pending rules can never make
  this check disagree with a rebuild.
- **Each entry once.** ``seen`` holds the raw ids counted (the one per-entry cost: one
  32-byte key); the same entry inserted twice (found by id, then by Yjs) counts once. A new
  id at a position (writer, seq) already taken is a fork; positions are kept per writer as
  the contiguous prefix seen plus the seqs seen beyond it (in commit order, a writer's seqs
  come in order, so that set stays empty).
- **Authentication, as ``ContextLog.authenticate`` decides it.** An entry is authentic when a
  head names it or when an authentic entry of its writer one seq above names it as ``prev``.
  Unvouched entries wait in ``pending`` (normally one commit's worth: a commit's head names
  its top entry and arrives in the same row); an authentic entry vouches for its prev, walking
  down ``pending``, or leaves the prev in ``vouched`` for when it arrives. A head's signature
  is checked only if nothing else vouches for its entry by the end (``to_verify``): one
  Ed25519 verification per writer chain, not per commit (~15k verifications/s per core).
- **The root** comes from the sorted ids at the end (``merkle.root_of_keys``).
"""

from __future__ import annotations

from collections.abc import Iterable

from .bundle import decode_bundle
from .entry import CONTEXT_RE, ID_SIZE, NO_PREV, Limits, record_fields
from .errors import ForgedEntry, IntegrityError
from .identity import Head
from .merkle import root_of_keys
from .storage import Summary
from .yjs import GatedStruct, encode_state_vector, gate_structs

ARRAY_NAME = "entries"


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


def audit(name: str, rows: Iterable[bytes], limits: Limits) -> Summary | None:
    """Check every stored row of context ``name`` (bundles, in commit order) and recompute its
    summary. Raises IntegrityError / ForgedEntry (or the bundle's and gate's errors) at the
    first problem; None when some structs stay pending in Yjs (the caller then rebuilds)."""
    if not CONTEXT_RE.fullmatch(name):
        raise IntegrityError(f"{name!r} is not a valid context name")
    context = name.encode("utf-8")
    integrated: dict[int, int] = {}
    waiting: list[GatedStruct] = []
    seen: set[bytes] = set()
    positions: dict[bytes, _Positions] = {}  # raw writer (origin ‖ chain) → its seqs seen
    forks: set[tuple[bytes, int]] = set()
    pending: dict[bytes, tuple[bytes, int, bytes]] = {}  # unvouched: id → (writer, seq, prev)
    vouched: dict[bytes, tuple[bytes, int]] = {}  # prev ids named by authentic entries, unseen
    heads: dict[bytes, Head] = {}  # heads whose entry has not arrived
    to_verify: dict[bytes, Head] = {}  # authentic by a head alone so far: check it at the end
    max_lamport = 0
    stored = 0

    def vouch(writer: bytes, seq: int, prev: bytes) -> None:
        """The entry at (``writer``, ``seq``) naming ``prev`` is authentic: so is the chain
        below it that waits in ``pending``."""
        while prev != NO_PREV:
            below = pending.get(prev)
            if below is not None:
                if below[0] != writer or below[1] != seq - 1:
                    return  # names an entry of another position: vouches for nothing
                del pending[prev]
                seq, prev = seq - 1, below[2]
                continue
            if to_verify:
                to_verify.pop(prev, None)  # a successor vouches for it: its head is not needed
            if prev not in seen:
                vouched[prev] = (writer, seq - 1)
            return

    def take(record: bytes) -> None:
        nonlocal max_lamport
        raw = record[:ID_SIZE]
        if raw in seen:
            return  # the same entry inserted twice: one entry
        lamport, seq, prev, writer = record_fields(record, context, limits)
        seen.add(raw)
        held = positions.get(writer)
        if held is None:
            held = positions[writer] = _Positions()
        if not held.add(seq):
            forks.add((writer, seq))
        if lamport > max_lamport:
            max_lamport = lamport
        if vouched and vouched.pop(raw, None) == (writer, seq):
            vouch(writer, seq, prev)
            return
        head = heads.pop(raw, None) if heads else None
        if head is not None and head.seq == seq and _raw_writer(head) == writer:
            to_verify[raw] = head
            vouch(writer, seq, prev)
            return
        pending[raw] = (writer, seq, prev)

    for blob in rows:
        stored += len(blob)
        bundle = decode_bundle(blob)
        for head in bundle.heads:
            raw = head.entry_id
            if raw in pending:
                writer, seq, prev = pending[raw]
                if head.seq == seq and _raw_writer(head) == writer:
                    del pending[raw]
                    to_verify[raw] = head
                    vouch(writer, seq, prev)
            elif raw not in seen:
                heads.setdefault(raw, head)
        queue = [*waiting, *gate_structs(bundle.update, ARRAY_NAME)]
        progressed = True
        while progressed and queue:
            progressed = False
            waiting = []
            for struct in queue:
                client, clock, length, origin, right, values = struct
                end = integrated.get(client, 0)
                if clock > end or (origin is not None and origin[1] >= integrated.get(
                        origin[0], 0)) or (right is not None and right[1] >= integrated.get(
                        right[0], 0)):
                    waiting.append(struct)
                    continue
                if clock + length > end:
                    for record in values[end - clock:] if end > clock else values:
                        take(record)
                    integrated[client] = clock + length
                    progressed = True
            queue = waiting
    if waiting:
        return None
    if pending:
        raw, (writer, seq, _) = max(pending.items(), key=lambda kv: (kv[1][0], kv[1][1]))
        raise ForgedEntry(f"entry {raw.hex()} (seq {seq} of {_writer_key(writer)} in {name}): "
                          f"no signature of its origin vouches for it")
    for head in to_verify.values():
        head.verify(name)
    return Summary(root_of_keys(seen), len(seen), encode_state_vector(integrated), max_lamport,
                   len(forks), stored)


def _raw_writer(head: Head) -> bytes:
    return head.origin + head.chain.to_bytes(8, "big")


def _writer_key(raw: bytes) -> str:
    """The cursor's name of a raw writer (``identity.writer_key``)."""
    return f"{raw[:32].hex()}.{raw[32:].hex()}"
