"""All contexts of one node: appends, remote updates, reads, snapshots and the node-level tree.

Sans-I/O except for the injected ``Storage``, which is called synchronously: when ``append``
or ``apply_remote`` returns, what it added is durable. Because nothing here awaits, no other task
can observe (or ship to a peer) an entry between its insertion and its commit.

The node-level Merkle tree maps sha256(context name) → that context's root: its 32-byte root says
whether two nodes hold exactly the same data, and descending it finds the differing contexts.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .clock import LamportClock
from .context_log import ContextLog, client_id_for
from .cursor import Cursor
from .entry import DEFAULT_LIMITS, Entry, Limits, check_context, check_fields, make_entry
from .errors import AlreadyExists, IntegrityError, LedgerError
from .merkle import MerkleTree
from .snapshot import decode_snapshot, encode_snapshot
from .storage import Storage

Listener = Callable[[str, list[Entry]], None]


@dataclass(frozen=True)
class AppendRequest:
    """A validated append, ready to be batched with others into one commit."""

    context: str
    key: str
    payload: bytes
    meta: Mapping[str, str]


@dataclass(frozen=True)
class Appended:
    entries: list[Entry]
    updates: list[tuple[str, bytes]]


def context_key(name: str) -> bytes:
    return hashlib.sha256(name.encode("utf-8")).digest()


class Ledger:
    def __init__(
        self,
        node_id: str,
        instance: str,
        storage: Storage,
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """Use ``Ledger.open``: it rebuilds the state from storage."""
        self.node_id = node_id
        self.instance = instance
        self.storage = storage
        self.limits = limits
        self.now_ns = now_ns
        self.clock = LamportClock()
        self.contexts: dict[str, ContextLog] = {}
        self.tree = MerkleTree()
        self.names: dict[bytes, str] = {}  # context_key → name, to answer tree descents
        self.listeners: list[Listener] = []

    @classmethod
    def open(
        cls,
        storage: Storage,
        node_id: str,
        instance: str,
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] = time.time_ns,
        verify: bool = False,
    ) -> Ledger:
        """Rebuild every context from storage, checking every entry's content id."""
        ledger = cls(node_id, instance, storage, limits, now_ns)
        for name, updates in storage.load().items():
            ctx = ledger._context(name)
            try:
                for update in updates:
                    ctx.load_stored(update, verify=verify)
            except LedgerError as exc:
                raise IntegrityError(f"context {name}: {exc}") from None
            ledger._refresh(ctx)
        return ledger

    # ---- reads -------------------------------------------------------------------------------

    def root(self) -> bytes:
        return self.tree.root()

    def context_root(self, name: str) -> bytes:
        ctx = self.contexts.get(name)
        return ctx.root() if ctx else MerkleTree().root()

    def entry_count(self) -> int:
        return sum(len(c) for c in self.contexts.values())

    def get(
        self,
        context: str,
        key: str | None = None,
        after: Cursor | str | None = None,
        limit: int | None = None,
    ) -> tuple[list[Entry], Cursor]:
        """Entries after the cursor in causal order, and the cursor to pass next time.

        An unknown context reads as empty.
        """
        check_context(context)
        cursor = Cursor.parse(after)
        ctx = self.contexts.get(context)
        return ctx.get(key, cursor, limit) if ctx else ([], cursor)

    # ---- writes ------------------------------------------------------------------------------

    def prepare(
        self, context: str, key: str = "", payload: bytes | str = b"",
        meta: Mapping[str, str] | None = None,
    ) -> AppendRequest:
        """Validate one append; raises a named LocalInputError and changes nothing."""
        check_context(context)
        key, data, clean_meta = check_fields(key, payload, meta, self.limits)
        return AppendRequest(context, key, data, clean_meta)

    def append(self, requests: Sequence[AppendRequest]) -> Appended:
        """Append a batch in one durable commit (group commit).

        Returns the entries in request order and the committed Yjs updates (what to push to peers).
        """
        groups: dict[str, list[Entry]] = {}
        next_seq: dict[str, int] = {}
        node_id, tick, now_ns = self.node_id, self.clock.tick, self.now_ns
        for req in requests:
            name = req.context
            batch = groups.get(name)
            if batch is None:
                batch = groups[name] = []
                next_seq[name] = self._context(name).max_seq(node_id) + 1
            batch.append(make_entry(
                name, req.key, req.payload, req.meta, tick(), node_id,
                next_seq[name] + len(batch), now_ns(),
            ))
        updates = []
        for name, entries in groups.items():
            _, update = self.contexts[name].append_local(entries)
            updates.append((name, update))
        self._commit(updates)
        for name, entries in groups.items():
            self._refresh(self.contexts[name])
            self._notify(name, entries)
        return Appended(_in_request_order(requests, groups), updates)

    def apply_remote(self, context: str, update: bytes) -> list[Entry]:
        """Apply a peer's Yjs update for a context; returns the entries that were new here.

        Refused (RemoteProtocolError, ForbiddenUpdate, IntegrityError) before anything changes
        if the update is malformed, not append-only, or carries an entry whose id lies.
        """
        check_context(context)
        created = context not in self.contexts
        ctx = self._context(context)
        try:
            new, applied = ctx.apply_remote(update)
        except LedgerError:
            if created:
                del self.contexts[context]  # refused before anything was applied
            raise
        # Persist exactly what was applied to the Doc (the update less what it already held),
        # pending structs included: replaying the stored updates in order then rebuilds the
        # same Doc, whatever yrs integrated now or holds for later.
        if applied is not None:
            self._commit([(context, applied)])
        if new:
            self._refresh(ctx)
            self._notify(context, new)
        return new

    def _commit(self, updates: list[tuple[str, bytes]]) -> None:
        try:
            self.storage.commit(updates)
        except BaseException:
            # The docs now hold entries that are not durable: rebuild them from what is.
            stored = self.storage.load()
            for name, _ in updates:
                ctx = self.contexts[name] = ContextLog(
                    name, client_id_for(self.instance, name), self.limits)
                for update in stored.get(name, []):
                    ctx.load_stored(update)
                if not len(ctx):
                    del self.contexts[name]
                self._refresh(ctx)
            raise

    # ---- snapshots and compaction --------------------------------------------------------------

    def snapshot(self, context: str) -> bytes:
        check_context(context)
        ctx = self.contexts.get(context)
        entries = ctx.ordered if ctx else []
        return encode_snapshot(context, self.context_root(context), entries)

    def load_snapshot(self, blob: bytes, fail_if_exists: bool = False) -> tuple[str, int]:
        """Verify a snapshot and add the entries this node lacks; returns (context, added)."""
        context, _root, entries = decode_snapshot(blob, self.limits)
        existing = self.contexts.get(context)
        if fail_if_exists and existing is not None and len(existing):
            raise AlreadyExists(f"context {context} already holds {len(existing)} entries")
        ctx = self._context(context)
        added, update = ctx.add_missing(entries)
        if update is not None:
            self._commit([(context, update)])
            for entry in added:
                self.clock.observe(entry.lamport)
            self._refresh(ctx)
            self._notify(context, added)
        return context, len(added)

    def compact(self, context: str) -> None:
        """Fold a context's stored update history into one state blob; reads are unchanged."""
        ctx = self.contexts.get(check_context(context))
        if ctx is not None:
            self.storage.replace_context(context, ctx.compacted_state())

    def verify(self) -> list[str]:
        """Recheck every entry and every root from scratch; returns problems (empty = sound)."""
        problems = []
        for name, ctx in self.contexts.items():
            fresh = ContextLog(name, 0, self.limits)
            try:
                fresh.load_stored(ctx.compacted_state(), verify=True)
            except LedgerError as exc:
                problems.append(f"context {name}: {exc}")
                continue
            if fresh.root() != ctx.root():
                problems.append(f"context {name}: root {ctx.root().hex()} does not match entries")
        return problems

    # ---- internals ---------------------------------------------------------------------------

    def _context(self, name: str) -> ContextLog:
        ctx = self.contexts.get(name)
        if ctx is None:
            ctx = self.contexts[name] = ContextLog(
                name, client_id_for(self.instance, name), self.limits)
        return ctx

    def _refresh(self, ctx: ContextLog) -> None:
        if not len(ctx):
            return  # an empty context is no data: it must not change the node root
        key = context_key(ctx.name)
        self.names[key] = ctx.name
        self.tree.set(key, ctx.root())
        self.clock.observe(ctx.max_lamport)

    def _notify(self, context: str, entries: list[Entry]) -> None:
        for listener in list(self.listeners):
            listener(context, entries)


def _in_request_order(
    requests: Iterable[AppendRequest], groups: dict[str, list[Entry]]
) -> list[Entry]:
    iters = {name: iter(entries) for name, entries in groups.items()}
    return [next(iters[req.context]) for req in requests]
