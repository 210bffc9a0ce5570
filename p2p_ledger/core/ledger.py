"""All contexts of one node: appends, remote updates, reads, snapshots and the node-level tree.

Sans-I/O except for the injected ``Storage``, which is called synchronously: when ``append``
or ``apply_remote`` returns, what it added is durable. Because nothing here awaits, no other task
can observe (or ship to a peer) an entry between its insertion and its commit. With
``defer_commits`` (the runtime), ``apply_remote`` stages its rows instead and the next
``flush`` commits everything staged in one transaction (group commit of received updates);
a read of a context holding staged rows (its entries, root, state vector, a diff) flushes
first, and the node tree and counts change only on commit, so what is read or shipped is still
always durable. Status reads (root, counts, ``forks``) show the last commit and commit nothing.

The working set is bounded; the ledger lives on disk. Every context has a ``Summary``
(``storage.py``: root, entry count, state vector, Lamport maximum), persisted in the same
transaction as its rows, or with ``summary_lag_ns`` (the runtime) by a later commit, while
``open`` recomputes any that lag their rows (``Storage.lagging_summaries``): ``open`` builds the
node-level tree from the summaries alone and loads no context. A context's ``ContextLog`` (its
pycrdt Doc, index and tree of ids) is rebuilt from its stored rows on first need (a write, a
read of entries, a diff to send, a proof) and evicted least-recently-used beyond
``memory_budget``; gossip about a context that is in sync, or whose peer already holds all of
it, answers from the summary without loading it. A peer that holds
nothing of a context, or lacks much of it, gets the stored rows it lacks, merged, without
loading it either, in parts of about ``part_bytes`` (``bundle_diff``): a Yjs diff of a
grow-only log is the stored updates the peer's state vector does not cover, and any prefix of
them in commit order applies on its own.

The node-level Merkle tree maps sha256(context name) → that context's root: its 32-byte root says
whether two nodes hold exactly the same data, and descending it finds the differing contexts.

Authorship: the ledger appends as its ``Identity`` (entries carry its public key as ``origin``);
each context's entries of this open form one writer chain (``identity.chain_for(instance,
context)``, fresh per open) and every commit signs, once, the new heads of every chain it
extends (``identity.sign_heads``). What is shipped is a ``bundle``: a Yjs update plus the
heads (and vouchers) that authenticate it. What is stored is the same bundle without heads
(one row per update) and, apart, the heads each context still needs (``ContextLog.heads``:
chain tips and anchors), changed by the commit that stores the rows making a head unneeded.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from typing import NamedTuple, Protocol

from pycrdt import get_update, merge_updates

from .audit import IdSet, MemoryIds, audit_steps, finished
from .bundle import BARE, decode_bundle, encode_bundle, update_start
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
    known_record_fields,
    make_chain,
)
from .errors import AlreadyExists, IntegrityError, LedgerError, RemoteProtocolError
from .identity import Head, Identity, chain_for, writer_key
from .merkle import MerkleTree
from .snapshot import decode_snapshot, encode_snapshot
from .storage import ContextView, Storage, Summary
from .yjs import (
    appended_values,
    clock_spans,
    decode_state_vector,
    encode_state_vector,
    squash,
)

EMPTY_STATE_VECTOR = b"\x00"
# Bytes of Yjs update after which an answer from the stored rows stops at the next place its
# entries are vouched for (``Ledger._bundle_of_rows``); the peer asks again for the rest.
# why: one context of 1M × 100 B was a 222 MB answer, built in memory several times over
# (rows, merge, squash, bundle: peak RSS 1,873 MiB at the source, 2,672 MiB at the fresh
# node), and a context past ~1.2M such entries exceeded the receiver's 256 MiB
# ``max_update_bytes``: it could never be fetched.
PART_BYTES = 8 * 1024 * 1024
WALK_MEMORY = 8  # per context, where the last parts' walks stopped (``Ledger._walks``)
# A context of more than ROWS_ONLY × part_bytes stored bytes answers every diff from its rows.
# why: its ContextLog costs ~3 × its stored bytes and seconds to load (51k entries took 5.3 s
# here); the last part of a catch-up (less than part_bytes) would load it just to diff it.
ROWS_ONLY = 1
# why: the budget counts an estimate of a loaded context's memory, not a measurement (Python
# cannot size one object graph cheaply): a fixed cost per context (its ContextLog, index and
# tree objects) and per entry whatever its size (index columns, Merkle tree; records are read
# from the rows, see index.py), and, once a Doc is made for it (see ContextLog.doc), a little
# more per entry plus its stored bytes (the Doc's copy of every record and its Yjs items).
# Fitted on contexts loaded in a fresh process from an SQLite store, each with its tree built
# (a root taken) and its id table (a lookup), RSS growth: 10,000 contexts of 10 x 100 B entries
# 7.2 KB each, 3,000 of 98 16.1 KB, 1,500 of 200 35.7 KB, 1,000 of 300 47.9 KB, 300 of 1,000
# 151 KB, one of 200k 171 B per entry. A context of up to SMALL_ENTRIES costs CONTEXT_COST +
# SMALL_ENTRY_COST per entry (its tree mostly one leaf keeping no item hashes, a 2-byte id
# table: see merkle._HASHED_ABOVE), a larger one ENTRY_COST per entry (200: 34 KB, 300: 51 KB,
# 1,000: 170 KB). The fit before (6 KB + 170 B
# per entry) held before the root leaf dropped its item hashes (98 entries: 20.4 KB, now 16.1;
# it estimated 22.7). Loaded with a Doc, 100k x 100 B (258 stored B
# each) and 20k x 2 KB (2,158) grew by ~314 and ~2,240 B per entry more: ~50 + 1.0 x stored.
# The estimate before (290 B per entry, no cost per context) was fitted before the narrow
# index columns: it overcounted a context of 98 entries by 40% and undercounted one of 10 by
# 60%, so `bench --scale`'s 1M entries over 10,000 contexts (~206 MB loaded) were estimated
# past the 256 MiB budget at ~920k, and from there every append reloaded its context (appends
# round-robin over the contexts: the LRU order is the worst one), ~1.6 ms of CPU each.
CONTEXT_COST = 6200
SMALL_ENTRY_COST = 100
SMALL_ENTRIES = 128
ENTRY_COST = 170
DOC_ENTRY_COST = 50
DOC_STORED_FACTOR = 1.0
# The runtime's default budget (open_node, --memory-budget): ~1.6M loaded entries of 100 B in
# a few contexts, ~1.6M over 10,000 (~500k with their Docs).
DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024
# With defer_commits, a driver gathers received updates while they keep coming, GATHER_WAIT at
# a time and at most GATHER_PASSES times, then commits them in one transaction (the runtime's
# committer; the simulator does the same in virtual time).
# why: measured with two nodes in one process (2,000 appends pushed as 250 updates):
# committing as soon as the committer ran took 250 transactions (the link task reads one frame
# per scheduler pass, so yielding passes gathered nothing), waiting 1 ms while more arrived
# took 48, 2 ms took 33. An fsync costs milliseconds anyway. Large updates are not held for
# more: 10 received bundles of 10 MB committed one at a time / 3 at a time / all at once cost
# 0.25 / 0.33 / 0.74 commit CPU-s (SQLite's page cache spills), only the fsync waits would go.
GATHER_WAIT = 0.001
GATHER_PASSES = 10
# ``verify`` with another process (``apart``): its share of the contexts (whole ones, by their
# entries plus CONTEXT_WEIGHT each), besides checking every other stored record.
# why: per entry, a context audited with its records checked apart cost this process ~0.7 of
# a full audit and the checking process ~0.4 (one context of 1M, CPU-s); many small contexts
# ~0.85 and ~0.4 (100k entries over 10,000): the two are even when the other takes ~0.3. A
# context costs about as much as 8 entries on top (its queries, heads, summary).
APART_SHARE = 0.3
CONTEXT_WEIGHT = 8
# When whole contexts make an even split (many contexts, none holding most of the entries),
# the other process audits up to EVEN_SHARE of the work in full, and checks no other record.
# why: over 10,000 contexts the records' check apart repeated each row's reading (gate) in
# both processes: 2.5 + 2.1 CPU-s for 100k entries, where one process took 3.7. This process
# also imports the ledger (pycrdt) and opens the store while the other imports less, so the
# other takes a little more than half: at 0.45 this one took 1.57-1.70 CPU-s and the other
# 1.04-1.18, at 0.55 1.36-1.64 and 1.31-1.63 (100k over 10,000 contexts, load ~10)
EVEN_SHARE = 0.55
EVEN_FLOOR = 0.35
# With ``summary_lag_ns`` (the runtime sets SUMMARY_LAG), a commit stores rows and heads only,
# and the summaries of the contexts it touched are computed and stored by the first commit
# (or ``write_summaries``) at least this long after the oldest commit they lag behind.
# why: a summary holds the context's Merkle root, recomputed from its stale paths: at 128
# appends per commit into one context that was ~15% of an append's CPU (py-spy, 100k x 100 B),
# and a context touched by several commits within the lag gets one summary instead of several.
SUMMARY_LAG = 1.0  # seconds
# ...unless fewer than SUMMARY_SHARE rows were committed since per summary to store (each a
# context's row of one commit: spread over many contexts, a summary per row), up to
# SUMMARY_LAG_MOST x SUMMARY_LAG (meanwhile a lagging context is never evicted: what a
# second's commits touch stays loaded up to 4 s).
# why: spread over 10,000 contexts at ~10k entries/s each second's commits touch most
# contexts once, so the summaries cost as much as if none lagged: ~15 us per entry of ~75
# (root, state vector, node tree, the row; in-process ingest of 100k, 128 per commit). One
# context is unchanged (one summary for ~80 rows a second).
SUMMARY_SHARE = 4
SUMMARY_LAG_MOST = 4
# Rows a settling context reads per query (``Ledger._rows_in_batches``).
SETTLE_ROWS = 64

Listener = Callable[[str, Sequence[Entry]], None]


class Apart(Protocol):
    """A process sharing ``Ledger.verify`` (``trio/verify.py``), started on its contexts."""

    def answer(self) -> tuple[dict[str, Summary | str | None], set[str]] | None:
        """Once it is done: what each of its contexts holds (a ``Summary``; a problem line;
        None if it did not settle it), and the other contexts holding a record that fails its
        check; None if it failed."""


class AppendRequest(NamedTuple):
    """A validated append, ready to be batched with others into one commit.

    why: a NamedTuple, not a frozen dataclass: one is made per append, and the dataclass's
    ``__init__`` (``object.__setattr__`` per field) cost 1.7 against 0.5 µs."""

    context: str
    key: str
    payload: bytes
    meta: Mapping[str, str]


class Appended:
    """What ``Ledger.append`` did: the entries in request order, and ``updates``, the
    committed Yjs updates as bundles with their heads (what to push to peers), built when
    first asked for (a node with no open link pushes nothing)."""

    __slots__ = ("_pushed", "_updates", "entries")

    def __init__(self, entries: list[Entry], updates: list[tuple[str, Head, bytes]]) -> None:
        self.entries = entries
        self._updates = updates  # (context, its head, its Yjs update)
        self._pushed: list[tuple[str, bytes]] | None = None

    @property
    def updates(self) -> list[tuple[str, bytes]]:
        if self._pushed is None:
            self._pushed = [(name, encode_bundle((head,), update))
                            for name, head, update in self._updates]
        return self._pushed


def context_key(name: str) -> bytes:
    return hashlib.sha256(name.encode("utf-8")).digest()


def memory_cost(summary: Summary, doc: bool = False) -> int:
    """The budget's estimate of a loaded context's memory, in bytes, with its Doc if ``doc``
    (see ENTRY_COST)."""
    n = summary.entries
    cost = CONTEXT_COST + SMALL_ENTRY_COST * n if n <= SMALL_ENTRIES else ENTRY_COST * n
    if doc:
        cost += DOC_ENTRY_COST * summary.entries + int(DOC_STORED_FACTOR * summary.stored)
    return cost


def summarize(ctx: ContextLog, stored: int) -> Summary:
    return Summary(ctx.root(), len(ctx), ctx.state_vector(), ctx.max_lamport, len(ctx.forks),
                   stored)


def same_summary(a: Summary, b: Summary) -> bool:
    """Equal content (yrs may encode one state vector in different orders)."""
    return (a.root, a.entries, a.max_lamport, a.forks) == (b.root, b.entries, b.max_lamport,
                                                           b.forks) and \
        decode_state_vector(a.state_vector) == decode_state_vector(b.state_vector)


class Contexts(Mapping[str, ContextLog]):
    """Every context a ledger holds, by name. Membership, iteration and ``len`` read the
    summaries; looking a context up loads its ``ContextLog`` (and may evict others)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._ledger.holds(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ledger.context_names())

    def __len__(self) -> int:
        return len(self._ledger.context_names())

    def __getitem__(self, name: str) -> ContextLog:
        ledger = self._ledger
        ledger._flush_if(name)
        ctx = ledger._load(name)
        if ctx is None:
            raise KeyError(name)
        ledger._evict()
        return ctx


class Ledger:
    def __init__(
        self,
        identity: Identity,
        instance: str,
        storage: Storage,
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] = time.time_ns,
        label: str = "",
        memory_budget: int | None = None,
    ) -> None:
        """Use ``Ledger.open``: it reads the state from storage."""
        self.identity = identity
        self.origin = identity.origin
        self.node_id = label or identity.origin[:16]  # a human label (logs, HELLO)
        self.instance = instance
        self.storage = storage
        self.limits = limits
        self.now_ns = now_ns
        self.clock = LamportClock()
        self.memory_budget = memory_budget  # bytes of loaded contexts (memory_cost); None: all
        self.summaries: dict[str, Summary] = {}  # every stored context, as last committed
        self._live: OrderedDict[str, ContextLog] = OrderedDict()  # loaded, least recent first
        self._costs: dict[str, int] = {}  # memory_cost of each loaded context
        self._live_cost = 0
        self._entries = 0  # entries in all summaries
        self.loads = 0  # contexts loaded from storage since open (tests, metrics)
        self.contexts = Contexts(self)
        self.defer_commits = False  # apply_remote stages its rows until flush() (the runtime)
        self._staged: list[tuple[str, bytes]] = []
        self._dirty: set[str] = set()  # contexts holding staged rows: never evicted
        self._durable_forks: dict[str, dict[tuple[str, int], list[str]]] = {}  # of _dirty ones
        self._held: list[tuple[str, Sequence[Entry]]] = []  # notifications of staged entries
        self._tree = MerkleTree()  # (read through ``tree``: it settles lagging summaries)
        self._due: dict[str, bytes] = {}  # context → root not in ``_tree`` yet (_node_tree)
        self.names: dict[bytes, str] = {}  # context_key → name, to answer tree descents
        self.summary_lag_ns = 0  # see SUMMARY_LAG; 0: every commit stores its summaries
        # loaded contexts committed since their summary was computed: name → (stored bytes,
        # entries counted in ``_entries``); never evicted (``_settle`` computes it)
        self._lagging: dict[str, tuple[int, int]] = {}
        self._unsaved: set[str] = set()  # summaries computed, not stored yet
        self._lag_since = 0  # now_ns of the oldest commit whose summaries are not stored
        self._lag_rows = 0  # rows committed since then
        # contexts whose stored summary lags rows a crash left, or that have none (``open``),
        # not loaded: in the node tree at their stored root until settled (``settle_step``)
        self._stale: OrderedDict[str, None] = OrderedDict()  # (its oldest found in O(1))
        self._settling: tuple[str, Generator[int, None, Summary]] | None = None
        # lagging contexts whose Merkle tree is built a step at a time (``builds_trees``):
        # their summaries are not due until it is; 0 while it is built, then the ids held
        # when it was (those appended during the build join it in steps too)
        self._building: dict[str, int] = {}
        self.listeners: list[Listener] = []
        self.fork_log: list[str] = []  # one line per fork found, for the node to log
        self._chains: dict[str, tuple[int, str, int, bytes]] = {}  # see _writer_of
        self.last_update_took = False  # see apply_remote
        self.part_bytes = PART_BYTES  # answers from the stored rows go in parts of about this
        self.last_diff_partial = False  # see bundle_diff
        self.last_diff_reach: dict[int, int] = {}  # see bundle_diff
        # per context: (a state vector covering every row up to a row number, that number)
        self._walks: dict[str, list[tuple[dict[int, int], int]]] = {}
        # (bound once: every ContextLog holds this one object, see context_log.Rows)
        self._stored_updates = self._stored_updates_of

    @classmethod
    def open(
        cls,
        storage: Storage,
        identity: Identity | str,
        instance: str,
        limits: Limits = DEFAULT_LIMITS,
        now_ns: Callable[[], int] = time.time_ns,
        label: str | None = None,
        memory_budget: int | None = None,
    ) -> Ledger:
        """Open the ledger stored in ``storage``: the node-level tree from the persisted
        per-context summaries, no context loaded, no entry re-checked (``verify`` does that, a
        context at a time). The contexts whose rows go beyond their stored summary (a crash
        within ``summary_lag_ns`` of a commit, a store from before summaries, one ``repair``
        wrote) are *settling*: recomputed later (``settle_step``), or at once when one is read.

        ``identity`` may be a string: then the key is derived from it (``Identity.from_seed``,
        for simulations and tests) and it is the label too. ``instance`` must be fresh for
        every open (it names this open's Yjs clients and writer chains; reusing one after the
        store lost its tail would reuse positions). ``memory_budget``: bytes of loaded contexts
        (as ``memory_cost`` estimates them) beyond which the least recently used are evicted.
        """
        if isinstance(identity, str):
            label = identity if label is None else label
            identity = Identity.from_seed(identity)
        ledger = cls(identity, instance, storage, limits, now_ns, label or "", memory_budget)
        summaries, lagging = storage.lagging_summaries()
        ledger.summaries = summaries
        for name, summary in summaries.items():
            ledger._entries += summary.entries
            ledger._refresh_summary(name, summary)
        if lagging:
            ledger._stale = OrderedDict.fromkeys(lagging)
            # (our next entry must come after every one stored: the tail's times too, stored
            # with its rows or read from those committed without them)
            lamport, rows = storage.lagging_lamport()
            ledger.clock.observe(lamport)
            for _, blob in rows:
                for record in appended_values(decode_bundle(blob).update, ARRAY_NAME):
                    ledger.clock.observe(known_record_fields(record)[1])
        return ledger

    # ---- reads -------------------------------------------------------------------------------

    def root(self) -> bytes:
        return self.tree.root()

    def settled_root(self) -> bytes | None:
        """The node root, or None when reading it would compute lagging summaries first
        (``summary_lag_ns``: contexts committed to since the root was last read)."""
        return None if self._lagging else self._node_tree().root()

    @property
    def tree(self) -> MerkleTree:
        """The node-level tree (sha256 of each context's name → its root), current."""
        if self._lagging:
            self._settle()
        return self._node_tree()

    def _node_tree(self) -> MerkleTree:
        """The node-level tree with the roots summarized since it was last read.

        why: set per summary, a context's root went into the tree ~once per entry spread over
        10,000 contexts (each summary flush holds most of them: one entry each), 3.3 us a
        set; now once per context per read of the node tree (none while no peer is linked)."""
        due = self._due
        if due:
            self._due = {}
            names, tree = self.names, self._tree
            for name, root in due.items():
                key = context_key(name)
                names[key] = name
                tree.set(key, root)
        return self._tree

    def context_root(self, name: str) -> bytes:
        self._flush_if(name)
        ctx = self._live.get(name)
        if ctx is not None:
            return ctx.root()
        summary = self._summary(name)
        return summary.root if summary else MerkleTree().root()

    def state_vector(self, name: str) -> bytes:
        """The Yjs state vector of ``name`` (empty if we hold nothing), without loading it."""
        self._flush_if(name)
        ctx = self._live.get(name)
        if ctx is not None:
            return ctx.state_vector()
        summary = self._summary(name)
        return summary.state_vector if summary else EMPTY_STATE_VECTOR

    def context_entries(self, name: str) -> int:
        lagging = self._lagging.get(name)
        if lagging is not None:
            return len(self._live[name])
        summary = self._summary(name)
        return summary.entries if summary else 0

    def entry_count(self) -> int:
        """Entries in every context (a settling one counted as its stored summary says)."""
        return self._entries

    def holds(self, name: str) -> bool:
        return name in self.summaries or name in self._live or name in self._stale

    def context_names(self) -> list[str]:
        """Every context held (stored, or new in memory), in a deterministic order."""
        known = self.summaries
        return [*known, *(n for n in self._stale if n not in known),
                *(n for n in self._live if n not in known and n not in self._stale)]

    def live_contexts(self) -> list[str]:
        """The contexts loaded in memory now, least recently used first."""
        return list(self._live)

    def writer(self, context: str) -> str:
        """Our writer (cursor key) in ``context`` for this open."""
        return self._writer_of(context)[1]

    def fork_count(self) -> int:
        if self._lagging:
            self._settle()
        return sum(s.forks for s in self.summaries.values())

    def forks(self) -> list[dict[str, object]]:
        """Every fork committed: a writer that signed two entries for one position. A read:
        it commits nothing (a context holding staged rows shows its forks as of its last
        commit), and a settling context's as its stored summary counts them until it settles."""
        if self._lagging:
            self._settle()
        out: list[dict[str, object]] = []
        for name in sorted(n for n, s in self.summaries.items() if s.forks):
            forks = self._durable_forks.get(name)
            if forks is None:
                ctx = self._load(name)
                assert ctx is not None
                forks = ctx.forks
            out += [{"context": name, "writer": writer, "seq": seq, "ids": list(ids)}
                    for (writer, seq), ids in sorted(forks.items())]
        self._evict()
        return out

    def fork_proof(self, context: str, writer: str, seq: int) -> dict[str, object]:
        """The two signed statements of a fork (``identity.check_fork_proof`` checks it)."""
        self._flush_if(context)
        ctx = self._load(context)
        if ctx is None or (writer, seq) not in ctx.forks:
            raise LookupError(f"no fork of {writer} at seq {seq} in {context}")
        proof = ctx.fork_proof(writer, seq)
        self._evict()
        return proof

    def bundle_diff(self, context: str, state_vector: bytes | None) -> bytes | None:
        """What a peer with ``state_vector`` lacks of ``context``, with the heads (and vouchers)
        that authenticate it; None when it lacks nothing (decided from the summary's state
        vector when the context is not loaded: it is then not loaded).

        A peer that holds nothing of a context, or lacks more than ``part_bytes`` of it (as
        the summary estimates: the clocks it lacks × the stored bytes per entry), or any
        peer of a context of more than ``ROWS_ONLY × part_bytes`` stored bytes, gets the
        stored rows it lacks (``_bundle_of_rows``), nothing loaded, in parts of about
        ``part_bytes``: ``last_diff_partial`` then says the answer stops short, and the peer
        asks again with its new state vector (``last_diff_reach``, when it held exactly
        ``state_vector`` and takes all of the answer). Otherwise the loaded context's Doc answers.
        Either way the answer depends only on what is stored and on the state vector, never
        on what is loaded.

        why: a fresh peer fetching 20k × 100 B in 20 contexts cost the sender 0.37 CPU-s
        (1.5 at one entry per commit) through each context's Doc, 0.04 (0.3-0.4) from the
        rows, with the receiver's CPU and signature checks unchanged and the bundles 0.5-0.8%
        larger (the stored anchors' heads; 3 alternated rounds, load ~8). For large entries
        (10 contexts of 100 × 100 KB) building each ContextLog took 36-64 ms of CPU per
        context, merging its rows 9 ms."""
        self._flush_if(context)
        self.last_diff_partial = False
        if context in self._lagging:
            self._settle()
        summary = self._summary(context)
        if summary is not None and summary.entries:
            empty = state_vector in (None, b"", EMPTY_STATE_VECTOR)
            try:
                theirs = {} if empty else decode_state_vector(state_vector or b"")
            except RemoteProtocolError as exc:
                raise RemoteProtocolError(f"bad state vector for {context}: {exc}") from None
            lacking = sum(max(0, clock - theirs.get(client, 0))
                          for client, clock in decode_state_vector(summary.state_vector).items())
            if not lacking:
                return None  # a grow-only log: they hold every struct we hold
            if not theirs or summary.stored > ROWS_ONLY * self.part_bytes or \
                    lacking * summary.stored > self.part_bytes * summary.entries:
                return self._bundle_of_rows(context, theirs)
        elif state_vector and summary is None and context not in self._live:
            return None
        ctx = self._load(context)
        if ctx is None:
            return None
        update = ctx.diff(state_vector)
        if update == EMPTY_UPDATE:
            self._evict()
            return None
        heads, vouchers = ctx.proof_for_ids(
            record[:ID_SIZE] for record in appended_values(update, ARRAY_NAME))
        self._evict()
        return encode_bundle(heads, update, vouchers)

    def _bundle_of_rows(self, context: str, theirs: Mapping[int, int]) -> bytes:
        """What a peer holding ``theirs`` (a decoded state vector) lacks of ``context``, from
        the stored rows, no ContextLog loaded: a forward walk over the rows in commit order
        that takes each row it lacks (the part of it it lacks, when it holds some:
        ``pycrdt.get_update``), their Yjs updates merged and squashed (``yjs.squash``), with
        the heads stored for their entries (and those rows of older formats carry). Replaying
        rows in commit order is what a restart does, so each part applies on top of those
        before it.

        The answer stops at the first row boundary past ``part_bytes`` where every entry it
        carries is vouched for within it: each writer chain's last entry in it has a head
        (a chain tip, or an anchor every ``ANCHOR_EVERY`` seqs). ``last_diff_partial`` tells
        the caller the peer lacks more. Several chains interleaved may rarely reach a head
        together (only at their tips, for writers whose anchors are out of phase), so past
        ``2 × part_bytes`` the answer stops at the next row boundary anyway, and each open
        chain gets vouchers up to its next head: its records read from the rows after
        (``_vouchers``), which the receiver keeps as its own items and takes again with a later
        part (the index keeps one per id). Entries whose successor the peer holds get vouchers
        from the rows the same way.

        A walk starts after the rows an earlier part's receiver is known to hold (``_walks``:
        the rows up to where a part stopped, with the state vector that covers them; a
        hint, the answer is the same without it), so fetching a context part by part reads
        its rows about once, not once per part.

        Every entry is authentic, and every entry's successor is in a later row (or held by
        the peer) or it has a stored head, so the walk always ends vouched for. A single row
        going whole with the heads it carries goes as stored (why: re-encoding a 10 MB row
        was ~12% of the sender's samples in that catch-up; sending the row whole,
        alternated, 0.97 against 1.05 sender CPU-s, 3 pairs at load 11)."""
        part = self.part_bytes
        try:
            headed = {head.entry_id: head for head in self.stored_heads(context)}
            start = 0
            for covered, after in self._walks.get(context, ()):
                if after > start and all(theirs.get(c, 0) >= end for c, end in covered.items()):
                    start = after
            wanted = encode_state_vector(theirs)
            reach = dict(theirs)  # per client, the end of every row walked (the walk's hint)
            whole = b""  # the first row taken, as stored, if it was taken whole
            whole_heads: tuple[Head, ...] = ()  # the heads that row carries
            updates: list[bytes] = []
            ids: list[bytes] = []  # the entries taken, in order
            named: set[bytes] = set()  # entries named as prev by an entry taken
            unvouched: set[bytes] = set()  # entries taken with no head and no successor taken
            size, last, cut = 0, start, False
            rows = self.storage.iter_rows(context, start)
            for row, blob in rows:
                bundle = decode_bundle(blob)
                spans = clock_spans(bundle.update, ARRAY_NAME)
                if all(end <= theirs.get(c, 0) for c, (_, end) in spans.items()):
                    last = row
                    for c, (_, end) in spans.items():
                        reach[c] = max(reach.get(c, 0), end)
                    continue  # they hold all of it
                if size >= part and (not unvouched or size >= 2 * part):
                    cut = True
                    break
                for head in bundle.heads:  # a row of an older format carries its heads
                    headed.setdefault(head.entry_id, head)
                update = bundle.update
                if any(first < theirs.get(c, 0) for c, (first, _) in spans.items()):
                    update = get_update(update, wanted)  # the part of it they lack
                elif not updates:
                    whole, whole_heads = blob, bundle.heads
                updates.append(update)
                size += len(update)
                last = row
                for c, (_, end) in spans.items():
                    reach[c] = max(reach.get(c, 0), end)
                for record in appended_values(update, ARRAY_NAME):
                    raw, _, _, prev, _ = known_record_fields(record)
                    ids.append(raw)
                    named.add(prev)
                    unvouched.discard(prev)
                    if raw not in headed and raw not in named:
                        unvouched.add(raw)
            vouchers: list[bytes] = []
            if unvouched:
                following = chain([(row, blob)], rows) if cut else rows
                vouchers = self._vouchers(context, unvouched, headed, following)
            if cut:
                self.last_diff_partial = True
                self.last_diff_reach = reach
                walks = self._walks.setdefault(context, [])
                walks.append((reach, last))
                del walks[:-WALK_MEMORY]
            del rows
            heads = list(dict.fromkeys(headed[raw] for raw in ids if raw in headed))
            if len(updates) == 1 and whole and not vouchers and list(whole_heads) == heads:
                return whole
            del whole  # (one copy of the answer fewer while the merge runs)
            update = updates[0] if len(updates) == 1 else \
                squash(merge_updates(*updates), ARRAY_NAME)
        except LedgerError as exc:  # our own rows: damage here, not a peer's fault
            raise IntegrityError(f"context {context}: {exc}") from None
        heads += [headed[raw] for raw in (v[:ID_SIZE] for v in vouchers) if raw in headed]
        return encode_bundle(list(dict.fromkeys(heads)), update, vouchers)

    def _vouchers(self, context: str, unvouched: set[bytes], headed: dict[bytes, Head],
                  rows: Iterator[tuple[int, bytes]]) -> list[bytes]:
        """The records that link each entry of ``unvouched`` up to an entry with a head (in
        ``headed``): its successor (the entry naming it as prev), that one's, and so on; read
        from ``rows`` (the rows after the answer's), then from every row, pass after pass (a
        successor the peer holds may sit in a row before, and an entry re-inserted from a
        peer's vouchers after its successor). IntegrityError if one has none: our store lost
        it."""
        out: dict[bytes, bytes] = {}  # the vouchers
        need = set(unvouched)  # entries whose successor is still to find
        linked: set[bytes] = set()  # entries whose successor was found
        source: Iterable[tuple[int, bytes]] = rows
        while True:
            found = len(out)
            for _row, blob in source:
                bundle = decode_bundle(blob)
                for head in bundle.heads:
                    headed.setdefault(head.entry_id, head)
                for record in appended_values(bundle.update, ARRAY_NAME):
                    raw, _, _, prev, _ = known_record_fields(record)
                    if prev in need and raw not in out:
                        need.discard(prev)
                        linked.add(prev)
                        out[raw] = record
                        if raw not in headed and raw not in linked:
                            need.add(raw)
                if not need:
                    return list(out.values())
            if source is not rows and len(out) == found:
                break  # a whole pass found nothing more
            source = self.storage.iter_rows(context)  # (a successor stored before)
        raise IntegrityError(f"context {context}: no stored entry or head vouches for "
                             f"{len(need)} entries")

    def bundle_records(self, context: str, ids: Iterable[bytes]) -> bytes | None:
        """The entries of ``context`` with these ids that we hold, as a bundle of vouchers (no
        Yjs update: the receiver re-inserts them as its own items); None if we hold none."""
        self._flush_if(context)
        ctx = self._load(context)
        if ctx is None:
            return None
        entries = [e for e in (ctx.by_id.get(i.hex()) for i in ids) if e is not None]
        if not entries:
            return None
        heads, vouchers = ctx.proof_for(entries)
        self._evict()
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
        self._flush_if(context)
        ctx = self._load(context)
        if ctx is None:
            return [], cursor
        out = ctx.get(key, cursor, limit)
        self._evict()
        return out

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
        Rows staged by ``apply_remote`` are committed in the same transaction.
        """
        # (key, payload, meta, Lamport time, wall time) by context; the clock ticks per entry
        # in request order
        groups: dict[str, list[tuple[str, bytes, Mapping[str, str], int, int]]] = {}
        tick, now_ns = self.clock.tick, self.now_ns
        for req in requests:
            items = groups.get(req.context)
            if items is None:
                items = groups[req.context] = []
            items.append((req.key, req.payload, req.meta, tick(), now_ns()))
        # why: spread over 10,000 contexts a commit does this once per context for one entry
        # each, so the context's lookups are inline (a call each was ~1 us per entry), and
        # each context's parts are kept in one tuple, its head's statement made on the way
        live, chains, origin = self._live, self._chains, self.origin
        built = []  # (name, context log, entries, records, fields), a context at a time
        signing = []  # (name, chain, seq, entry id) of each context's last entry: its head
        try:
            for name, items in groups.items():
                ctx = live.get(name)
                if ctx is None:
                    ctx = self._context(name)
                else:
                    live.move_to_end(name)
                known = chains.get(name)
                chain, writer, seq, prev = known if known is not None else self._writer_of(name)
                if seq < 0:
                    seq = ctx.max_seq(writer)
                    prev = ctx.raw_id_at(writer, seq) or NO_PREV
                entries, records, fields = make_chain(name, origin, chain, seq, prev, items,
                                                      writer)
                built.append((name, ctx, entries, records, fields))
                signing.append((name, chain, seq + len(items), fields[-1][0]))
            # One signature for the whole commit: a head per context, each with its path to
            # the commit's signed root (identity.sign_heads).
            heads = self.identity.sign_heads(signing)
            updates, pushed = [], []
            for (name, ctx, entries, records, fields), head in zip(built, heads, strict=True):
                update = ctx.append_local(entries, (head,), (records, fields))[1]
                updates.append((name, BARE + update))  # (a bare bundle: the head apart)
                pushed.append((name, head, update))
            self._commit(updates)
        except BaseException:
            # (a failed commit reloads what is durable; anything failing before it may leave
            # our entries in a context's index: there, its index tells the tip again)
            for name in groups:
                known = chains.get(name)
                if known is not None:
                    chains[name] = (*known[:2], -1, NO_PREV)
            raise
        # why: asking the context's index for our chain's tip (``max_seq``, ``raw_id_at``)
        # cost ~1.2-1.5 us per context per commit (~2.7% of a spread ingest's samples)
        for name, chain, seq, last in signing:
            chains[name] = (chain, chains[name][1], seq, last)
        if self.listeners:
            for name, _, entries, _, _ in built:
                self._notify(name, entries)
        self._evict()
        if len(built) == len(requests):  # (an entry per context: in request order already)
            return Appended([entries[0] for _, _, entries, _, _ in built], pushed)
        return Appended(_in_request_order(
            requests, {name: entries for name, _, entries, _, _ in built}), pushed)

    def apply_remote(self, context: str, blob: bytes) -> Sequence[Entry]:
        """Apply a peer's bundle for a context; returns the entries that were new here.

        Refused (RemoteProtocolError, ForbiddenUpdate, IntegrityError, ForgedEntry,
        LamportOutOfRange) before anything changes if the bundle is malformed, not append-only,
        or carries an entry whose id lies or that no signature of its origin vouches for.
        """
        check_context(context)
        bundle = decode_bundle(blob)
        created = not self.holds(context)
        ctx = self._context(context)
        # the forks ``forks`` shows until staged rows commit (forks are few: usually none)
        durable_forks = {k: list(v) for k, v in ctx.forks.items()}
        try:
            new, heads, applied, reinserted = ctx.receive(
                bundle.update, bundle.heads, bundle.vouchers)
        except LedgerError:
            if created:
                self._drop(context)  # refused before anything was applied
            raise
        # Persist exactly what was applied to the Doc (the update less what it already held),
        # pending structs included, then what we re-inserted as our own items: replaying the
        # stored updates in order then rebuilds the same Doc, whatever yrs integrated now or
        # holds for later. The heads that vouched for the entries are stored apart, with them.
        rows = [(context, encode_bundle((), u)) for u in (applied, reinserted) if u is not None]
        # Whether the Doc took anything from it (new entries, or structs Yjs holds back until
        # what they wait for arrives): a push that did is worth forwarding.
        self.last_update_took = applied is not None
        if not rows:
            if created:
                self._drop(context)
        elif self.defer_commits:
            self._staged += rows
            if context not in self._dirty:
                self._durable_forks[context] = durable_forks
            self._dirty.add(context)
            if new:
                self._held.append((context, new))
            return new
        else:
            self._commit(rows)
            if new:
                self._notify(context, new)
        self._evict()
        return new

    def has_staged(self) -> bool:
        return bool(self._staged)

    def staged_rows(self) -> int:
        return len(self._staged)

    def gathering(self, waits: int, seen: int) -> bool:
        """Whether a driver gathering received updates for one commit should wait GATHER_WAIT
        more: rows are staged, more arrived since it last looked (``seen`` rows then, -1 at
        first) and it has waited fewer than GATHER_PASSES times. Both drivers ask it."""
        rows = len(self._staged)
        return rows > 0 and rows != seen and waits < GATHER_PASSES

    def _flush_if(self, context: str) -> None:
        """Before reading ``context``: commit what is staged if some of it is there."""
        if context in self._dirty:
            self.flush()

    def flush(self) -> None:
        """Commit the rows ``apply_remote`` staged (``defer_commits``), in one transaction, then
        tell the listeners about their entries. A read of a context holding staged rows calls
        it first; the runtime calls it before carrying out the core's actions."""
        if self._staged:
            self._commit([])
            self._evict()  # the contexts just committed may go now

    def _commit(self, updates: list[tuple[str, bytes]]) -> None:
        """Commit ``updates`` (after the staged rows) with the summaries of every context they
        touch, in one transaction; then update the node tree and the summaries. On failure the
        touched contexts are dropped from memory (the next use reloads what is durable).

        With ``summary_lag_ns``, the summaries wait (``_lagging``) until a commit at least that
        long after the oldest one they lag behind stores them all with its rows; meanwhile
        the stored summaries describe the rows up to a commit before, and an open after a
        crash recomputes the contexts committed since (``Storage.lagging_summaries``)."""
        rows = updates
        if self._staged:
            rows, self._staged = [*self._staged, *updates], []
            self._dirty = set()
            self._durable_forks = {}
        held, self._held = self._held, []
        # One pass over the rows before the transaction, one after it: a context's head
        # changes and stored bytes, then its rows' places and counts.
        # why: spread over 10,000 contexts each of ~128 rows is a context's only one, so every
        # pass and lookup per context counts (three passes and a dict of sizes before)
        heads: list[tuple[str, bytes, bytes | None]] = []
        add_head = heads.append
        live, lagging, known = self._live, self._lagging, self.summaries
        after: dict[str, tuple[int, int]] = {}  # (stored bytes, entries counted in _entries)
        top = 0  # the highest Lamport time of the contexts touched
        for name, blob in rows:
            was = after.get(name)
            if was is None:
                ctx = live[name]
                for raw, head in ctx.take_head_changes():
                    add_head((name, raw, head))
                if ctx.max_lamport > top:
                    top = ctx.max_lamport
                was = lagging.get(name)  # (entries counted in _entries: lagging, or stored)
                if was is None:
                    summary = known.get(name)
                    was = (summary.stored, summary.entries) if summary else (0, 0)
            after[name] = (was[0] + len(blob), was[1])
        now = self.now_ns() if self.summary_lag_ns else 0
        if not self.lags():
            self._lag_since, self._lag_rows = now, 0
        self._lag_rows += len(rows)
        summaries: dict[str, Summary] | None = None
        computed: dict[str, Summary] = {}
        # (none while a context settles: stored summaries describe every row up to the last
        # commit that stores any, and its stored one does not)
        if not self._stale and self._summaries_due(now, after):
            computed = {name: summarize(live[name], stored)
                        for name, (stored, _) in {**self._lagging, **after}.items()}
            # (the summaries _settle computed are current in memory, their contexts perhaps
            # evicted since: stored as they are; one committed since is computed anew above)
            summaries = {**{name: self.summaries[name] for name in self._unsaved}, **computed}
        # (what an open after a crash takes for the clock instead of reading lagging rows)
        lamport = None if summaries is not None or not after else top
        try:
            self.storage.commit(rows, summaries, heads, lamport)
        except BaseException:
            # The docs now hold entries that are not durable: forget them, reload what is.
            for name in after:
                self._forget(name)
            raise
        if summaries is None:
            for name, blob in rows:
                ctx = live[name]
                ctx.stored_row(blob, update_start(blob))  # (its records are read from it now)
                count = len(ctx)
                stored, counted = after[name]
                self._entries += count - counted
                lagging[name] = after[name] = (stored, count)  # (counted now: its next row)
            self.clock.observe(top)
        else:
            for name, blob in rows:
                live[name].stored_row(blob, update_start(blob))
            self._summarized(computed)
            self._unsaved = set()
        for context, entries in held:
            self._notify(context, entries)

    def _summaries_due(self, now: int, touched: Collection[str]) -> bool:
        """Whether this commit (touching ``touched``) stores the lagging summaries with its
        rows: always without ``summary_lag_ns``; else once the oldest lags by that much and
        there were SUMMARY_SHARE rows since per summary to store, or it lags by
        SUMMARY_LAG_MOST times that; and not while a context's tree is built a step at a time
        (``builds_trees``: the summaries keep lagging meanwhile). Never by what is loaded:
        answers, and so the simulator's traces, do not depend on the memory budget."""
        lag = self.summary_lag_ns
        if not lag:
            return True
        waited = now - self._lag_since
        if waited < lag:
            return False
        if waited < SUMMARY_LAG_MOST * lag:
            lagging = self._lagging
            due = len(lagging) + len(self._unsaved) + sum(1 for n in touched if n not in lagging)
            if due * SUMMARY_SHARE > self._lag_rows:
                return False
        return not self.builds_trees()

    def _summarized(self, computed: Mapping[str, Summary]) -> None:
        """Each of ``computed`` is now the current summary of its context (loaded): counts,
        memory cost and the node tree follow it.

        why: spread over 10,000 contexts a commit that stores the summaries computes ~10,000
        (one per ~4 rows); one loop with the steps inline instead of five calls per context
        (counts, accounting, forks, node tree): 3.6-3.9 -> 2.8 us per summary (10,000
        contexts of 4-24 entries, 2 alternated runs)"""
        lagging, known, live, costs, due = (self._lagging, self.summaries, self._live,
                                            self._costs, self._due)
        observe = self.clock.observe
        for name, summary in computed.items():
            was = lagging.pop(name, None)  # (entries counted in _entries: lagging, or stored)
            if was is not None:
                counted = was[1]
            else:
                held = known.get(name)
                counted = held.entries if held else 0
            self._entries += summary.entries - counted
            known[name] = summary
            ctx = live[name]
            cost = memory_cost(summary, ctx.has_doc)  # (_account, inline)
            self._live_cost += cost - costs.get(name, 0)
            costs[name] = cost
            if ctx.new_forks:
                self._refresh(ctx)
            elif summary.entries:  # (_refresh_summary, inline)
                due[name] = summary.root
                observe(summary.max_lamport)

    def _settle(self) -> None:
        """Compute the summaries of the lagging contexts (their roots: what a read of the node
        tree, a count of forks, a diff or a check needs), to be stored later; not those
        holding staged rows, whose entries are not durable yet (their commit comes first)."""
        live, dirty = self._live, self._dirty
        computed = {name: summarize(live[name], stored)
                    for name, (stored, _) in self._lagging.items() if name not in dirty}
        self._summarized(computed)
        self._unsaved.update(computed)

    def write_summaries(self) -> None:
        """Store every summary that lags its rows (``summary_lag_ns``), in one transaction: the
        runtime calls it when the node goes idle, before a check of the store and at close.
        Nothing while a context settles (the next open settles again what is left)."""
        self.flush()  # (staged rows first: every summary stored must cover its rows)
        if self._stale or (not self._lagging and not self._unsaved):
            return
        self._settle()
        self.storage.commit([], {name: self.summaries[name] for name in self._unsaved})
        self._unsaved = set()

    def builds_trees(self) -> bool:
        """Whether the Merkle tree of a lagging context is built a step at a time; if none is,
        start (with a first step) the build of each that would take every id at once
        (``ContextLog.tree_step``: an empty tree, more than BUILD_STEP ids waiting, as after
        the load of a context after a start). Its summary is not due until its tree is built
        (``_summaries_due``; the idle store waits too): ``NodeCore.tick`` takes the steps, one
        every SETTLE_PAUSE while ``building``, and the node serves and commits between them.
        A read of its root meanwhile takes the steps left at once, as every use of the tree.

        why: a commit that stored the summaries built the tree at once: at 1M ~2.2 CPU-s in
        which every append waited, when appends kept coming after a start (only the idle
        store took steps)."""
        building = self._building
        if not building:
            live = self._live
            for name in self._lagging:
                if live[name].tree_step():
                    building[name] = 0
        return bool(building)

    def building(self) -> bool:
        """Whether a tree is built a step at a time (``builds_trees``; ``tree_step``)."""
        return bool(self._building)

    def tree_step(self) -> bool:
        """A step of building a tree ``builds_trees`` started, then of adding to it the ids
        appended during the build, up to BUILD_STEP a step (only those: appends may outpace
        the steps); True while some are left.

        why: the commit that stored the summaries after a build took those ids at once, ~8 s
        of them at load ~6.5 (0.37-0.69 s of the trio loop at 1M, against 0.22-0.34 s for a
        second's)."""
        building, live = self._building, self._live
        while building:
            name, upto = next(iter(building.items()))
            ctx = live.get(name)
            if ctx is not None and ctx.tree_step(upto):
                return True
            if ctx is not None and not upto:  # (built: its last step was taken)
                building[name] = len(ctx)
                return True
            del building[name]  # (caught up; or used, so built at once; or dropped)
        return bool(building)

    def lags(self) -> bool:
        """Whether some summary is not stored yet (``write_summaries`` would store it, once
        no context settles)."""
        return bool(self._lagging or self._unsaved or self._stale)

    def settling(self) -> int:
        """How many contexts still settle (see ``open``)."""
        return len(self._stale)

    def settle_step(self) -> bool:
        """Settle the settling contexts a step at a time, the oldest first: ``audit_steps``
        over the stored rows (``audit.CHECK_BATCH`` entries a step), as a read of one would
        at once (``_summary``). True while some remain. ``NodeCore.tick`` calls it, so both
        drivers serve between steps. A context loaded meanwhile settles as a loaded one
        (``_load``); rows that cannot be settled (a damaged store) raise IntegrityError here
        or at their first read, as ``open`` used to.

        why: ``open`` recomputed them at once: after a crash within SUMMARY_LAG of a commit
        into a context of 1M entries, ~10 s before the node was ready."""
        if not self._stale:
            return False
        if self._settling is None or self._settling[0] not in self._stale:
            name = next(iter(self._stale))
            self._settling = (name, self._recompute_steps(name))
        name, steps = self._settling
        try:
            next(steps)
        except StopIteration as stop:
            self._settled(name, stop.value)
        except BaseException:
            self._settling = None  # (the next step starts it again, and raises again)
            raise
        return bool(self._stale)

    def settle(self) -> None:
        """Settle every settling context now."""
        for name in list(self._stale):
            if name in self._stale:  # (a read of one may have loaded another)
                self._summary(name)

    def _summary(self, name: str) -> Summary | None:
        """The summary of ``name`` (None if we hold nothing there), settled first if it
        settles: a stored one that lags its rows is never what a read is told."""
        if name in self._stale:
            going = self._settling is not None and self._settling[0] == name
            steps = self._settling[1] if self._settling and going else self._recompute_steps(name)
            try:
                summary = finished(steps)
            except BaseException:
                if going:
                    self._settling = None  # (its steps are over: the next starts again)
                raise
            self._settled(name, summary)
        return self.summaries.get(name)

    def _settled(self, name: str, summary: Summary) -> None:
        """The settling context ``name`` holds ``summary``: counted, in the tree, to store."""
        del self._stale[name]
        if self._settling and self._settling[0] == name:
            self._settling = None
        old = self.summaries.get(name)
        self._entries += summary.entries - (old.entries if old else 0)
        self.summaries[name] = summary
        self._refresh_summary(name, summary)
        self._unsaved.add(name)

    def _forget(self, name: str) -> None:
        """After a failed commit: drop ``name``'s loaded context; if its summary lagged, it is
        recomputed from what is durable (and stays to be stored)."""
        lagging = name in self._lagging
        self._drop(name)
        if lagging:
            self._entries -= self._lagging.pop(name)[1]
            self.summaries[name] = summary = finished(self._recompute_steps(name))
            self._entries += summary.entries
            self._refresh_summary(name, summary)
            self._unsaved.add(name)

    # ---- snapshots and compaction --------------------------------------------------------------

    def snapshot(self, context: str) -> bytes:
        check_context(context)
        self._flush_if(context)
        ctx = self._load(context)
        entries = list(ctx.ordered) if ctx else []  # (decoded once, used twice)
        heads = ctx.proof_for(entries)[0] if ctx else []
        blob = encode_snapshot(context, self.context_root(context), entries, heads)
        self._evict()
        return blob

    def load_snapshot(self, blob: bytes, fail_if_exists: bool = False) -> tuple[str, int]:
        """Verify a snapshot (content ids, root, and every entry's signature) and add the
        entries this node lacks; returns (context, added)."""
        context, _root, entries, heads = decode_snapshot(blob, self.limits)
        self._flush_if(context)
        held = self.context_entries(context)
        if fail_if_exists and held:
            raise AlreadyExists(f"context {context} already holds {held} entries")
        created = not self.holds(context)
        ctx = self._context(context)
        try:
            used = ctx.authenticate(entries, heads)
        except LedgerError:
            if created:
                self._drop(context)
            raise
        missing = list({e.id: e for e in entries if e.id not in ctx.by_id}.values())
        if not missing:
            if created:
                self._drop(context)
            return context, 0
        added, update = ctx.append_local(missing, used)
        self._commit([(context, encode_bundle((), update))])
        self._notify(context, added)
        self._evict()
        return context, len(added)

    def compact(self, context: str) -> None:
        """Fold a context's stored update history into one state blob; reads are unchanged.
        Only the heads still needed are kept (``ContextLog.trim_heads``): a head whose entry
        has an authentic successor vouches for nothing the successor does not."""
        check_context(context)
        self._flush_if(context)
        self.write_summaries()
        ctx = self._load(context)
        if ctx is not None:
            heads = ctx.trim_heads()
            update = ctx.compacted_state()
            state = encode_bundle((), update)
            spans = ctx.spans_in(state, len(state) - len(update))
            self.storage.replace_context(context, state,
                                         [(head.entry_id, head.encode()) for head in heads])
            self._walks.pop(context, None)
            ctx.compacted(*spans)
            summary = self.summaries.get(context)
            if summary is not None:
                self.summaries[context] = summary._replace(stored=len(state))
            if context in self._lagging:
                self._lagging[context] = (len(state), self._lagging[context][1])
            self._evict()

    def verify(self, progress: Callable[[int, int, int], None] | None = None,
               id_sets: Callable[[], IdSet] = MemoryIds,
               apart: Callable[[list[str], bool], Apart] | None = None) -> list[str]:
        """Recheck what storage holds from scratch, one context in memory at a time (see
        ``verify_context``). Calls ``progress(contexts done, contexts, entries done)`` after
        each context and every ``audit.CHECK_BATCH`` entries within one. Returns the problems
        (empty = sound).

        With ``apart``, another process shares the work (``trio/verify.py``): ``apart(theirs,
        rest)`` starts it on the contexts ``theirs`` (whole contexts, see ``_their_share``),
        and with ``rest`` on checking every other stored record (``audit.unsound_contexts``).
        Meanwhile the others are audited here, in full, or with ``rest`` with their records'
        fields read unchecked; then its answer gives what its contexts hold (judged here, as
        ours are), and the contexts it found a bad record in, which are checked again in full.
        A context it did not settle (or, with ``rest``, everything if it failed) is checked
        here in full: the answer is one process's. A settling context (an open after a
        crash) is audited here, in full, and what its rows hold becomes its summary."""
        # Settling contexts are settled by their audit here (``_verify_rows``), not first.
        # why: ``settle()`` first audited each of them in full, and then the check audited it
        # again: after a crash, up to a second of ingest read and checked twice
        settling = set(self._stale)
        self.write_summaries()  # (the lagging ones; nothing while some settle: stored after)
        problems: dict[str, list[str]] = {}
        names = self.stored_context_names()
        theirs, rest = self._their_share([name for name in names if name not in settling]) \
            if apart is not None else (set(), False)
        other = apart(sorted(theirs), rest) if apart is not None else None
        again: set[str] = set()
        done = 0
        mine = [name for name in names if name not in theirs]
        # (one pass over the store; what it did not give, read one context at a time)
        scanned = self.storage.scan(mine)
        given: set[str] = set()
        for number, (name, rows, heads) in enumerate(chain(scanned, (
                (name, None, None) for name in mine if name not in given)), 1):
            given.add(name)
            step = None if progress is None else (
                lambda checked, at=number, base=done: progress(at - 1, len(names), base + checked))
            try:
                checked = rest and name not in settling  # (a summary is made of these)
                if rows is None or heads is None:
                    entries, found = self.verify_context(name, step, id_sets, checked)
                else:
                    entries, found = self._verify_rows(name, rows, heads, step, id_sets,
                                                       checked)
            except Exception:
                if not rest:
                    raise
                again.add(name)  # (a record's unchecked fields made no sense: checked below)
                continue
            if found:
                problems[name] = found
            done += entries
            if progress is not None:
                progress(number, len(names), done)
        if other is not None:
            answer = other.answer()
            audited, unsound = answer if answer is not None else ({}, None)
            for name in sorted(theirs):
                found_there = audited.get(name)
                if isinstance(found_there, str):
                    problems[name] = [found_there]
                elif found_there is None:
                    again.add(name)
                else:
                    problems[name] = self._judged(name, found_there, self.summaries.get(name))
            if rest:
                again.update(mine if unsound is None else unsound)
            for name in sorted(again):
                problems.pop(name, None)
                problems[name] = self.verify_context(name, None, id_sets)[1]
            if progress is not None:
                progress(len(names), len(names), self._entries)
        self.write_summaries()  # (those settled above, unless one could not be)
        return [line for name in names for line in problems.get(name, ())]

    def _their_share(self, names: list[str]) -> tuple[set[str], bool]:
        """The contexts of the process sharing ``verify`` (whole ones, in order, weighed by
        their entries plus ``CONTEXT_WEIGHT``), and whether it also checks every other record:
        up to ``EVEN_SHARE`` of the work if that takes ``EVEN_FLOOR`` of it (many contexts:
        each process audits its own in full), else up to ``APART_SHARE`` and the records."""
        summaries = self.summaries

        def weight(name: str) -> int:
            summary = summaries.get(name)
            return CONTEXT_WEIGHT + (summary.entries if summary is not None else 0)

        def share(budget: float) -> tuple[set[str], int]:
            theirs: set[str] = set()
            taken = 0
            for name in names:
                if taken + weight(name) <= budget:
                    theirs.add(name)
                    taken += weight(name)
            return theirs, taken

        total = sum(map(weight, names))
        even, taken = share(EVEN_SHARE * total)
        if taken >= EVEN_FLOOR * total:
            return even, False
        return share(APART_SHARE * total)[0], True

    def stored_context_names(self) -> list[str]:
        """Every context with stored rows or a summary, sorted (what ``verify`` checks)."""
        return sorted(set(self.storage.contexts()) | self.summaries.keys())

    def verify_context(self, name: str, step: Callable[[int], None] | None = None,
                       id_sets: Callable[[], IdSet] = MemoryIds, checked: bool = False,
                       ) -> tuple[int, list[str]]:
        """Recheck ``name`` from its stored rows, aside from the loaded one: every entry's
        content id, canonical form and limits, every signature, and its stored summary (root,
        count, state vector) against what the rows hold. Streams the rows (``audit``: no Doc,
        no ``ContextLog``); only a context whose rows leave Yjs structs pending is rebuilt.
        Calls ``step(entries checked so far)`` as it goes; ``audit`` keeps the ids it counts
        in ``id_sets()`` (a driver's may spill them to disk); with ``checked``, the records
        were checked elsewhere (``audit_steps``). Returns (entries, problems)."""
        self._flush_if(name)
        if name in self._lagging:
            self._settle()
        return self._verify_rows(name, self.storage.iter_context(name), None, step, id_sets,
                                 checked)

    def _verify_rows(self, name: str, rows: Iterator[bytes], heads: list[bytes] | None,
                     step: Callable[[int], None] | None, id_sets: Callable[[], IdSet],
                     checked: bool) -> tuple[int, list[str]]:
        """``verify_context`` of ``name``'s stored ``rows`` and ``heads`` (None: read them),
        nothing of it staged or lagging."""
        try:
            found = finished(audit_steps(
                name, rows, self.limits, self.stored_heads(name) if heads is None else
                [Head.from_bytes(blob) for blob in heads], id_sets(), checked), step)
            if found is None:
                fresh, stored = self._read(name, verify=True)
                ContextLog(name, 0, self.limits).authenticate(
                    fresh.ordered, list(fresh.heads.values()))
                found = summarize(fresh, stored)
        except LedgerError as exc:
            return 0, [f"context {name}: {exc}"]
        if name in self._stale and not checked:
            # A settling context: what its rows hold, checked in full, is its summary (a
            # problem above leaves it settling: its first read raises, as it would have).
            self._settled(name, found)
        return found.entries, self._judged(name, found, self._summary(name))

    def verify_steps(self, name: str, view: ContextView, id_sets: Callable[[], IdSet] = MemoryIds,
                     ) -> Generator[int, None, tuple[int, list[str]] | None]:
        """``verify_context`` a step at a time (``audit_steps``: yields the entries checked so
        far), over the rows, stored heads and summary of ``name`` in ``view``, one consistent
        view of the store read while the node goes on committing. Returns (entries,
        problems), or None when the rows leave Yjs structs pending (then ``verify_context``
        rebuilds the context, at once). The loaded context is compared only if nothing of
        ``name`` was committed since that view."""
        try:
            summary = view.summary(name)
            found = yield from audit_steps(name, view.iter_context(name), self.limits,
                                           [Head.from_bytes(raw) for raw in view.heads(name)],
                                           id_sets())
        except LedgerError as exc:
            return 0, [f"context {name}: {exc}"]
        if found is None:
            return None
        self._flush_if(name)
        if name in self._lagging:
            self._settle()  # (committed since the view: its summary is not the view's)
        return found.entries, self._judged(name, found, summary,
                                           live=self.summaries.get(name) == summary)

    def _judged(self, name: str, found: Summary, summary: Summary | None,
                live: bool = True) -> list[str]:
        """The problems of ``name`` whose rows hold ``found``: a stored ``summary`` that says
        otherwise, a loaded context (if ``live``) whose root differs."""
        problems = []
        if summary is None or not same_summary(summary, found):
            problems.append(f"context {name}: its stored summary ({summary and summary.entries}"
                            f" entries) does not match its rows ({found.entries} entries, "
                            f"root {found.root.hex()[:16]})")
        loaded = self._live.get(name) if live else None
        if loaded is not None and loaded.root() != found.root:
            problems.append(f"context {name}: root {loaded.root().hex()} in memory does not "
                            f"match the stored entries")
        return problems

    # ---- internals ---------------------------------------------------------------------------

    def _context(self, name: str) -> ContextLog:
        """The loaded context ``name``, loading it, or a new empty one."""
        ctx = self._load(name)
        if ctx is None:
            ctx = self._live[name] = self._new_log(name)
            self._costs[name] = 0
        return ctx

    def _load(self, name: str) -> ContextLog | None:
        """The ContextLog of ``name`` (rebuilt from its stored rows if not loaded), most
        recently used now; None if we hold nothing there. Evicts nothing (``_evict`` does,
        when the caller is done): a context being worked on is never dropped under it."""
        ctx = self._live.get(name)
        if ctx is not None:
            self._live.move_to_end(name)
            return ctx
        summary = self.summaries.get(name)
        if summary is None and name not in self._stale:
            return None
        ctx, stored = self._read(name)
        ctx.new_forks.clear()  # reported when they were found
        self._live[name] = ctx
        if name in self._stale:  # (settles as a loaded context committed to does)
            del self._stale[name]
            self._lagging[name] = (stored, summary.entries if summary else 0)
            self.clock.observe(ctx.max_lamport)
        self._account(name)
        self.loads += 1
        return ctx

    def _account(self, name: str) -> None:
        """Count the loaded context ``name`` at its ``memory_cost`` now (a Doc may have been
        made for it)."""
        summary, ctx = self.summaries.get(name), self._live.get(name)
        cost = 0 if summary is None or ctx is None else memory_cost(summary, ctx.has_doc)
        self._live_cost += cost - self._costs.get(name, 0)
        self._costs[name] = cost

    def _read(self, name: str, verify: bool = False, doc: bool = False,
              ) -> tuple[ContextLog, int]:
        """A context rebuilt from its stored rows (each content id re-hashed, but for runs of
        one writer's records read as columns, ``ContextLog.load_run``, whose records are
        checked when read back; with ``verify`` every record fully decoded and checked) and
        the stored bytes; not kept.

        Without a Doc, unless ``verify`` or ``doc``: the rows' structs are integrated by
        reading them (``yjs.integrate``), and a Doc is made only when something needs one
        (``ContextLog.doc``). Rows whose structs do not all integrate (ones yrs holds
        pending) are loaded again into a Doc, as ``verify`` loads them.

        why: a loaded context's Doc was about half of its memory (~430 B per 100 B entry:
        a second copy of every record plus its Yjs items) and most of the time of a first
        read of a cold context (24 s at 1M entries)."""
        lazy = not (verify or doc)
        ctx = self._new_log(name, lazy)
        if not lazy:
            ctx.make_doc()  # (empty: the rows go into it one by one, as they were committed)
        summary = self.summaries.get(name)
        if summary is not None:
            # why: the id table sized once, not doubled as the load goes (~7% of a load's
            # CPU, 11 doublings for 100k entries, cProfile)
            ctx.index.reserve(summary.entries)
        stored = 0
        try:
            ctx.keep_heads(self.stored_heads(name), stored=True)
            for blob in self.storage.iter_context(name):
                stored += len(blob)
                bundle = decode_bundle(blob)
                update_at = len(blob) - len(bundle.update)
                if lazy and ctx.load_run(blob, update_at, bundle.heads):
                    continue  # (a run of one writer's records, read as columns)
                ctx.load_stored(bundle.update, bundle.heads, verify=verify)
                ctx.stored_row(blob, update_at)
        except LedgerError as exc:
            raise IntegrityError(f"context {name}: {exc}") from None
        if not ctx.loaded():
            return self._read(name, verify, doc=True)
        return ctx, stored

    def _recompute_steps(self, name: str) -> Generator[int, None, Summary]:
        """The summary of ``name``'s stored rows, streamed a step at a time (``audit_steps``:
        memory for its ids, not a ``ContextLog``); rows ``audit`` cannot settle or refuses
        are rebuilt as they always were (which raises what the rebuild raises).

        why: a store without summaries (one ``repair`` wrote, or older) opened with every
        context rebuilt in turn: 126 MiB peak RSS and 2.97 CPU-s for one context of
        100k x 100 B, against 66 MiB and 0.93 s streamed."""
        try:
            found = yield from audit_steps(name, self._rows_in_batches(name), self.limits,
                                           self.stored_heads(name))
        except LedgerError:
            found = None
        if found is not None:
            return found
        ctx, stored = self._read(name)
        return summarize(ctx, stored)

    def _rows_in_batches(self, name: str) -> Iterator[bytes]:
        """``name``'s stored rows, each batch read whole (no cursor held between a driver's
        steps, while it commits)."""
        after, more = 0, True
        while more:
            batch: list[bytes] = []
            size, more = 0, False
            for row, blob in self.storage.iter_rows(name, after):
                batch.append(blob)
                size += len(blob)
                if len(batch) == SETTLE_ROWS or size >= PART_BYTES:
                    after, more = row, True
                    break
            yield from batch

    def _new_log(self, name: str, lazy: bool = True) -> ContextLog:
        """An empty ContextLog of ``name`` whose records are read from its stored rows (and,
        if ``lazy``, whose Doc is made from them when first needed)."""
        return ContextLog(name, client_id_for(self.instance, name), self.limits,
                          functools.partial(self.storage.read_spans, name),
                          self._stored_updates if lazy else None)

    def _stored_updates_of(self, name: str) -> Iterator[bytes]:
        """The Yjs updates of ``name``'s stored rows, in commit order."""
        for blob in self.storage.iter_context(name):
            yield decode_bundle(blob).update

    def stored_heads(self, name: str) -> list[Head]:
        """The heads stored for ``name`` apart from its rows (IntegrityError if one is
        malformed)."""
        return [Head.from_bytes(blob) for blob in self.storage.heads(name)]

    def _drop(self, name: str) -> None:
        """Forget the loaded ContextLog of ``name`` (its summary stays)."""
        if self._live.pop(name, None) is not None:
            self._live_cost -= self._costs.pop(name, 0)
        self._dirty.discard(name)
        self._durable_forks.pop(name, None)

    def _evict(self) -> None:
        """Drop least recently used contexts while over the memory budget, never the most
        recent one (the one just used) nor one holding staged rows."""
        if self._live:  # (the context just used: a Doc may have been made for it)
            self._account(next(reversed(self._live)))
        budget = self.memory_budget
        if budget is None or self._live_cost <= budget:
            return
        for name in list(self._live)[:-1]:
            if self._live_cost <= budget:
                break
            if name not in self._dirty and name not in self._lagging:
                self._drop(name)

    def drop_memory(self) -> None:
        """Unload every context (benchmarks; the next use reloads it)."""
        self.flush()
        self.write_summaries()
        for name in list(self._live):
            self._drop(name)

    def _writer_of(self, context: str) -> tuple[int, str, int, bytes]:
        """Our chain in ``context`` during this open, its writer key, and its tip as our last
        committed append left it: seq and entry id (-1 and NO_PREV while not known: the
        context's index tells)."""
        known = self._chains.get(context)
        if known is None:
            chain = chain_for(self.instance, context)
            known = self._chains[context] = (chain, writer_key(self.origin, chain), -1, NO_PREV)
        return known

    def _refresh(self, ctx: ContextLog) -> None:
        for writer, seq in ctx.new_forks:
            ids = ctx.forks[(writer, seq)]
            self.fork_log.append(f"fork in {ctx.name}: writer {writer} signed "
                                 f"{' and '.join(ids)} for seq {seq}")
        ctx.new_forks.clear()
        self._refresh_summary(ctx.name, self.summaries[ctx.name])

    def _refresh_summary(self, name: str, summary: Summary) -> None:
        if not summary.entries:
            return  # an empty context is no data: it must not change the node root
        self._due[name] = summary.root  # (into the node tree when it is next read)
        self.clock.observe(summary.max_lamport)

    def _notify(self, context: str, entries: Sequence[Entry]) -> None:
        for listener in list(self.listeners):
            listener(context, entries)


def _in_request_order(
    requests: Iterable[AppendRequest], groups: dict[str, list[Entry]]
) -> list[Entry]:
    iters = {name: iter(entries) for name, entries in groups.items()}
    return [next(iters[req.context]) for req in requests]
