"""All contexts of one node: appends, remote updates, reads, snapshots and the node-level tree.

Sans-I/O except for the injected ``Storage``, which is called synchronously: when ``append``
or ``apply_remote`` returns, what it added is durable. Because nothing here awaits, no other task
can observe (or ship to a peer) an entry between its insertion and its commit.

The node-level Merkle tree maps sha256(context name) → that context's root: its 32-byte root says
whether two nodes hold exactly the same data, and descending it finds the differing contexts.

Authorship: the ledger appends as its ``Identity`` (entries carry its public key as ``origin``);
each context's entries of this open form one writer chain (``identity.chain_for(instance,
context)``, fresh per open) and every commit signs the chain's new head. What is stored and
shipped is a ``bundle``: a Yjs update plus the heads (and vouchers) that authenticate it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .bundle import decode_bundle, encode_bundle
from .clock import LamportClock
from .context_log import ARRAY_NAME, EMPTY_UPDATE, ContextLog, client_id_for
from .cursor import Cursor
from .entry import (
    DEFAULT_LIMITS,
    ID_SIZE,
    NO_PREV,
    Entry,
    Limits,
    check_context,
    check_fields,
    make_entry,
)
from .errors import AlreadyExists, IntegrityError, LedgerError
from .identity import Identity, chain_for, writer_key
from .merkle import MerkleTree
from .snapshot import decode_snapshot, encode_snapshot
from .storage import Storage
from .yjs import appended_values

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
        identity: Identity,
        instance: str,
        storage: Storage,
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] = time.time_ns,
        label: str = "",
    ) -> None:
        """Use ``Ledger.open``: it rebuilds the state from storage."""
        self.identity = identity
        self.origin = identity.origin
        self.node_id = label or identity.origin[:16]  # a human label (logs, HELLO)
        self.instance = instance
        self.storage = storage
        self.limits = limits
        self.now_ns = now_ns
        self.clock = LamportClock()
        self.contexts: dict[str, ContextLog] = {}
        self.tree = MerkleTree()
        self.names: dict[bytes, str] = {}  # context_key → name, to answer tree descents
        self.listeners: list[Listener] = []
        self.fork_log: list[str] = []  # one line per fork found, for the node to log
        self._chains: dict[str, int] = {}
        self.last_update_took = False  # see apply_remote

    @classmethod
    def open(
        cls,
        storage: Storage,
        identity: Identity | str,
        instance: str,
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] = time.time_ns,
        verify: bool = False,
        label: str | None = None,
    ) -> Ledger:
        """Rebuild every context from storage, checking every entry's content id (and, with
        ``verify``, every signature: see ``verify()``).

        ``identity`` may be a string: then the key is derived from it (``Identity.from_seed``,
        for simulations and tests) and it is the label too. ``instance`` must be fresh for
        every open (it names this open's Yjs clients and writer chains; reusing one after the
        store lost its tail would reuse positions).
        """
        if isinstance(identity, str):
            label = identity if label is None else label
            identity = Identity.from_seed(identity)
        ledger = cls(identity, instance, storage, limits, now_ns, label or "")
        for name, blobs in storage.load().items():
            ctx = ledger._context(name)
            try:
                for blob in blobs:
                    bundle = decode_bundle(blob)
                    ctx.load_stored(bundle.update, bundle.heads, verify=verify)
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

    def writer(self, context: str) -> str:
        """Our writer (cursor key) in ``context`` for this open."""
        return writer_key(self.origin, self._chain(context))

    def forks(self) -> list[dict[str, object]]:
        """Every fork found: a writer that signed two entries for one position."""
        return [{"context": name, "writer": writer, "seq": seq, "ids": list(ids)}
                for name, ctx in sorted(self.contexts.items())
                for (writer, seq), ids in sorted(ctx.forks.items())]

    def fork_proof(self, context: str, writer: str, seq: int) -> dict[str, object]:
        """The two signed statements of a fork (``identity.check_fork_proof`` checks it)."""
        ctx = self.contexts.get(context)
        if ctx is None or (writer, seq) not in ctx.forks:
            raise LookupError(f"no fork of {writer} at seq {seq} in {context}")
        return ctx.fork_proof(writer, seq)

    def bundle_diff(self, context: str, state_vector: bytes | None) -> bytes | None:
        """What a peer with ``state_vector`` lacks of ``context``, with the heads (and vouchers)
        that authenticate it; None when it lacks nothing."""
        ctx = self.contexts[context]
        update = ctx.diff(state_vector)
        if update == EMPTY_UPDATE:
            return None
        by_id = ctx.by_id
        entries = []
        for record in appended_values(update, ARRAY_NAME):
            entry = by_id.get(record[:ID_SIZE].hex())
            if entry is not None:
                entries.append(entry)
        heads, vouchers = ctx.proof_for(entries)
        return encode_bundle(heads, update, vouchers)

    def bundle_records(self, context: str, ids: Iterable[bytes]) -> bytes | None:
        """The entries of ``context`` with these ids that we hold, as a bundle of vouchers (no
        Yjs update: the receiver re-inserts them as its own items); None if we hold none."""
        ctx = self.contexts.get(context)
        if ctx is None:
            return None
        entries = [e for e in (ctx.by_id.get(i.hex()) for i in ids) if e is not None]
        if not entries:
            return None
        heads, vouchers = ctx.proof_for(entries)
        records = {e.id: e.record for e in entries}
        return encode_bundle(heads, EMPTY_UPDATE, [*records.values(), *vouchers])

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
        tips: dict[str, tuple[int, bytes]] = {}  # context → (last seq, its id) of our chain
        origin, tick, now_ns = self.origin, self.clock.tick, self.now_ns
        for req in requests:
            name = req.context
            batch = groups.get(name)
            if batch is None:
                batch = groups[name] = []
                ctx = self._context(name)
                writer = writer_key(origin, self._chain(name))
                seq = ctx.max_seq(writer)
                last = ctx.by_writer.get(writer, {}).get(seq)
                tips[name] = (seq, bytes.fromhex(last.id) if last is not None else NO_PREV)
            seq, prev = tips[name]
            entry = make_entry(name, req.key, req.payload, req.meta, tick(), origin,
                               self._chain(name), seq + 1, now_ns(), prev)
            tips[name] = (seq + 1, bytes.fromhex(entry.id))
            batch.append(entry)
        updates = []
        sign = self.identity.sign_head
        for name, entries in groups.items():
            last = entries[-1]
            head = sign(name, last.chain, last.seq, bytes.fromhex(last.id))
            _, update = self.contexts[name].append_local(entries, (head,))
            updates.append((name, encode_bundle((head,), update)))
        self._commit(updates)
        for name, entries in groups.items():
            self._refresh(self.contexts[name])
            self._notify(name, entries)
        return Appended(_in_request_order(requests, groups), updates)

    def apply_remote(self, context: str, blob: bytes) -> list[Entry]:
        """Apply a peer's bundle for a context; returns the entries that were new here.

        Refused (RemoteProtocolError, ForbiddenUpdate, IntegrityError, ForgedEntry,
        LamportOutOfRange) before anything changes if the bundle is malformed, not append-only,
        or carries an entry whose id lies or that no signature of its origin vouches for.
        """
        check_context(context)
        bundle = decode_bundle(blob)
        created = context not in self.contexts
        ctx = self._context(context)
        try:
            new, heads, applied, reinserted = ctx.receive(
                bundle.update, bundle.heads, bundle.vouchers)
        except LedgerError:
            if created:
                del self.contexts[context]  # refused before anything was applied
            raise
        # Persist exactly what was applied to the Doc (the update less what it already held),
        # pending structs included, then what we re-inserted as our own items: replaying the
        # stored updates in order then rebuilds the same Doc, whatever yrs integrated now or
        # holds for later. The heads that vouched for the entries go with them.
        rows = [(context, encode_bundle(heads, u)) for u in (applied, reinserted) if u is not None]
        if rows:
            self._commit(rows)
        # Whether the Doc took anything from it (new entries, or structs Yjs holds back until
        # what they wait for arrives): a push that did is worth forwarding.
        self.last_update_took = applied is not None
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
                for blob in stored.get(name, []):
                    bundle = decode_bundle(blob)
                    ctx.load_stored(bundle.update, bundle.heads)
                if not len(ctx):
                    del self.contexts[name]
                self._refresh(ctx)
            raise

    # ---- snapshots and compaction --------------------------------------------------------------

    def snapshot(self, context: str) -> bytes:
        check_context(context)
        ctx = self.contexts.get(context)
        entries = ctx.ordered if ctx else []
        heads = ctx.proof_for(entries)[0] if ctx else []
        return encode_snapshot(context, self.context_root(context), entries, heads)

    def load_snapshot(self, blob: bytes, fail_if_exists: bool = False) -> tuple[str, int]:
        """Verify a snapshot (content ids, root, and every entry's signature) and add the
        entries this node lacks; returns (context, added)."""
        context, _root, entries, heads = decode_snapshot(blob, self.limits)
        existing = self.contexts.get(context)
        if fail_if_exists and existing is not None and len(existing):
            raise AlreadyExists(f"context {context} already holds {len(existing)} entries")
        created = existing is None
        ctx = self._context(context)
        try:
            used = ctx.authenticate(entries, heads)
        except LedgerError:
            if created:
                del self.contexts[context]
            raise
        missing = list({e.id: e for e in entries if e.id not in ctx.by_id}.values())
        if not missing:
            if created:
                del self.contexts[context]
            return context, 0
        added, update = ctx.append_local(missing, used)
        self._commit([(context, encode_bundle(used, update))])
        self._refresh(ctx)
        self._notify(context, added)
        return context, len(added)

    def compact(self, context: str) -> None:
        """Fold a context's stored update history into one state blob; reads are unchanged."""
        ctx = self.contexts.get(check_context(context))
        if ctx is not None:
            heads = list(ctx.heads.values())
            self.storage.replace_context(context, encode_bundle(heads, ctx.compacted_state()))

    def verify(self) -> list[str]:
        """Recheck every entry, signature and root from scratch; returns problems (empty =
        sound)."""
        problems = []
        for name, ctx in self.contexts.items():
            fresh = ContextLog(name, 0, self.limits)
            try:
                fresh.load_stored(ctx.compacted_state(), verify=True)
                ContextLog(name, 0, self.limits).authenticate(
                    fresh.ordered, list(ctx.heads.values()))
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

    def _chain(self, context: str) -> int:
        chain = self._chains.get(context)
        if chain is None:
            chain = self._chains[context] = chain_for(self.instance, context)
        return chain

    def _refresh(self, ctx: ContextLog) -> None:
        for writer, seq in ctx.new_forks:
            ids = ctx.forks[(writer, seq)]
            self.fork_log.append(f"fork in {ctx.name}: writer {writer} signed "
                                 f"{' and '.join(ids)} for seq {seq}")
        ctx.new_forks.clear()
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
