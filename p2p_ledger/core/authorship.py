"""The authorship rule, in one place: which entries a set of signed heads and ``prev`` links
vouch for.

Theory of operation
-------------------
An entry is **authentic** when a valid signed head of its writer names it at its position
(``identity.Head``: origin, chain, seq, entry id), or when an authentic entry of the *same
writer* one seq above names it as ``prev`` (an entry never vouches for another writer's, nor for
a position other than the one just below it), or when what the caller already holds vouches for
it (``held``: a head or an authentic successor it keeps). A head's signature is checked only
where nothing else vouches for its entry: one Ed25519 verification per writer chain, not per
entry or per commit.

``Authorship`` decides this incrementally, in any order: heads and entries are offered as they
come (``verify`` streams a context's rows in commit order, where a commit's head arrives with
its entries; a peer's update offers all its heads, then all its entries). An entry nothing
vouches for yet waits in ``pending``; when it becomes authentic it vouches for the pending
chain below it, or leaves its ``prev`` in ``vouched`` for an entry still to come. ``finish``
refuses anything still pending (``ForgedEntry``) and verifies the heads that were needed.
Both callers — ``ContextLog.authenticate`` (receive, load, snapshot) and ``audit`` (verify,
repair) — use this class, so the rule cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Hashable
from typing import Generic, TypeVar

from .entry import NO_PREV
from .errors import ForgedEntry
from .identity import Head

W = TypeVar("W", bound=Hashable)  # a writer's name: the caller's choice (str key or raw bytes)


class Authorship(Generic[W]):
    """Decide which offered entries are authentic (see the module docstring).

    ``writer_of(head)`` names a head's writer the way the caller names entries' writers;
    ``held(raw id, writer, seq)`` says whether what the caller already holds vouches for an
    entry; ``known`` holds the raw ids the caller has already seen (an entry's ``prev`` found
    there needs no note for later); ``name`` is the context, named in errors and signed in
    heads."""

    __slots__ = ("name", "writer_of", "held", "known", "offers", "pending", "vouched", "also",
                 "needed")

    def __init__(self, name: str, writer_of: Callable[[Head], W],
                 held: Callable[[bytes, W, int], bool] | None = None,
                 known: Container[bytes] = ()) -> None:
        self.name = name
        self.writer_of = writer_of
        self.held = held
        self.known = known
        self.offers: dict[bytes, Head] = {}  # heads whose entry has not been offered yet
        self.pending: dict[bytes, tuple[W, int, bytes]] = {}  # unvouched: id → writer, seq, prev
        self.vouched: dict[bytes, tuple[W, int]] = {}  # prev ids named by authentic entries
        self.also: dict[bytes, set[tuple[W, int]]] = {}  # a second position named for one id
        self.needed: dict[bytes, Head] = {}  # authentic by a head alone so far

    def head(self, head: Head) -> None:
        """Offer a signed head (its signature is checked in ``finish``, if it is needed)."""
        raw = head.entry_id
        below = self.pending.get(raw)
        if below is not None:
            writer, seq, prev = below
            if head.seq == seq and self.writer_of(head) == writer:
                del self.pending[raw]
                self.needed[raw] = head
                self._vouch(writer, seq, prev)
        elif raw not in self.needed and raw not in self.known:
            self.offers.setdefault(raw, head)

    def entry(self, raw: bytes, writer: W, seq: int, prev: bytes) -> None:
        """Offer an entry (each entry once): its raw id, writer, seq and ``prev``."""
        position = (writer, seq)
        if self.vouched and self.vouched.pop(raw, None) == position or (
                self.also and position in self.also.pop(raw, ())):
            self._vouch(writer, seq, prev)
        elif self.held is not None and self.held(raw, writer, seq):
            self._vouch(writer, seq, prev)
        else:
            head = self.offers.pop(raw, None) if self.offers else None
            if head is not None and head.seq == seq and self.writer_of(head) == writer:
                self.needed[raw] = head
                self._vouch(writer, seq, prev)
            else:
                self.pending[raw] = (writer, seq, prev)

    def _vouch(self, writer: W, seq: int, prev: bytes) -> None:
        """The entry at (``writer``, ``seq``) naming ``prev`` is authentic: so is the chain
        below it that waits in ``pending``."""
        pending = self.pending
        while prev != NO_PREV:
            below = pending.get(prev)
            if below is not None:
                if below[0] != writer or below[1] != seq - 1:
                    return  # names an entry of another position: vouches for nothing
                del pending[prev]
                seq, prev = seq - 1, below[2]
                continue
            if self.needed:
                self.needed.pop(prev, None)  # a successor vouches for it: its head is not needed
            if prev not in self.known:
                position = (writer, seq - 1)
                if self.vouched.setdefault(prev, position) != position:
                    self.also.setdefault(prev, set()).add(position)
            return

    def finish(self, check: bool = True) -> list[Head]:
        """ForgedEntry if an offered entry is not vouched for; else the heads that were needed,
        their signatures checked (unless ``check`` is False: heads this node stored itself)."""
        if self.pending:
            raw, (writer, seq, _) = max(self.pending.items(), key=lambda kv: kv[1][1])
            name = _writer_key(writer) if isinstance(writer, bytes) else str(writer)
            raise ForgedEntry(f"entry {raw.hex()} (seq {seq} of {name} in {self.name}): "
                              f"no signature of its origin vouches for it")
        heads = list(self.needed.values())
        if check:
            for head in heads:
                head.verify(self.name)
        return heads


def raw_writer(head: Head) -> bytes:
    """A head's writer as ``entry.record_fields`` names it: origin ‖ chain (40 bytes)."""
    return head.origin + head.chain.to_bytes(8, "big")


def _writer_key(raw: bytes) -> str:
    """The cursor's name of a raw writer (``identity.writer_key``)."""
    return f"{raw[:32].hex()}.{raw[32:].hex()}"
