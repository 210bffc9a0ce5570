"""The trio driver: runs a NodeCore over websockets, SQLite and real time.

Task tree (every task belongs to the nursery of ``open_node``'s ``async with``):

    open_node
    ├── server            websockets listener (when ``listen`` is set); one handler task per
    │                     connection: a peer link, or an API client (api.serve_client)
    ├── timer             calls core.tick() at core.next_deadline(), or sooner when woken
    ├── committer         group commit: takes every pending append, and every received update
    │                     staged since the last commit, and commits them in one transaction
    │                     (synchronously: no other task can see uncommitted entries)
    └── dial <conn>       one per outgoing link, started on a Dial action
        └── writer        drains the link's outbox into the flow-controlled websocket

A failing link task ends its own link (the core hears ``connection_lost``) and nothing else.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from time import perf_counter
from typing import Any

import trio

from ..core.cursor import Cursor
from ..core.entry import DEFAULT_LIMITS, Entry, Limits, check_context, check_node_id
from ..core.errors import LedgerError, LinkBroken, LinkClosed, MdnsUnavailable, TlsError
from ..core.identity import Identity
from ..core.ledger import (
    DEFAULT_MEMORY_BUDGET,
    GATHER_WAIT,
    SUMMARY_LAG,
    AppendRequest,
    Ledger,
)
from ..core.node import ROOM_BYTES, Close, Dial, NodeConfig, NodeCore, Send
from ..core.proof import make_proof
from ..core.protocol import cluster_key_bytes
from ..core.storage import Storage
from .api import serve_client
from .http import process_request
from .identity import open_identity
from .metrics import NodeMetrics
from .store import SqliteStore
from .transport import (
    Connection,
    PeerLink,
    check_url,
    client_tls,
    dial,
    open_listeners,
    port_of,
    serve_websockets,
    server_tls,
)
from .verify import spilling

log = logging.getLogger("p2p_ledger")

MAX_QUEUE_BYTES = 512 * 1024 * 1024  # per link; beyond it the peer is too slow and is dropped
WATCH_PAGE = 256


class _Batch:
    """The appends waiting for the next commit; every caller in it is parked (``wait``) until
    the committer calls ``finish``.

    why: one task switch per append is the floor of group commit (each appender is a task).
    What trio.Event adds to it (a set of tasks, its abort closure), and trio.current_time()
    per call for the latency histogram, cost ~0.45 us per entry of ~3.4: 128 tasks that only
    join a batch and wait for it, 200k appends, 3 alternated runs: 3.43-3.47 against 2.98-3.03
    us of CPU per entry parked in a list with time.perf_counter(). ``append`` parks through
    ``park`` (no coroutine of ``wait`` between it and trio), joins the batch inline and calls
    the trio functions bound once: 34.0k -> 31.2k instructions per append (callgrind, the same
    128 tasks against a stub ledger, 50k appends less 10k)."""

    __slots__ = ("done", "entries", "error", "requests", "starts", "waiting")

    def __init__(self) -> None:
        self.requests: list[AppendRequest] = []
        # when each call joined, on time.perf_counter() (the append latency histogram)
        self.starts: list[float] = []
        self.done = False
        self.waiting: list[trio.lowlevel.Task] = []
        self.entries: list[Entry] = []
        self.error: BaseException | None = None

    async def wait(self) -> None:
        """Until ``finish`` (a checkpoint if it was called already); cancellable."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        await _wait_task_rescheduled(self.park())

    def park(self) -> Callable[[Any], trio.lowlevel.Abort]:
        """Count the calling task among those ``finish`` wakes; returns the abort function
        that takes it out again, for ``trio.lowlevel.wait_task_rescheduled``."""
        task = _current_task()
        waiting = self.waiting
        waiting.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            waiting.remove(task)
            return _ABORTED

        return abort

    def finish(self) -> None:
        """Wake every caller waiting; later ``wait`` calls return at once."""
        self.done = True
        for task in self.waiting:
            _reschedule(task)
        self.waiting.clear()


# (bound once: each append parks and is woken through them)
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_reschedule = trio.lowlevel.reschedule
_ABORTED = trio.lowlevel.Abort.SUCCEEDED


@dataclass
class _Outbox:
    send: trio.MemorySendChannel[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    queued: int = 0
    drained: trio.Event = field(default_factory=trio.Event)  # the writer has ended


class Node:
    """A running node. Get one from ``open_node``; every method runs on the trio thread.

    Reads (``get``, ``status``, ``contexts``, ``snapshot``) are plain methods: they read the
    node's in-memory state and return at once, with no I/O to wait for. Calls that wait are
    ``async``: ``append``/``append_many`` (until the commit is durable), ``watch`` (for new
    entries), ``load`` and ``verify`` (the whole store re-checked, the node served meanwhile).
    ``Client`` offers the same calls with the same arguments and results against a node in
    another process; there every call is ``async`` (each is a round trip).
    """

    def __init__(self, ledger: Ledger, core: NodeCore, nursery: trio.Nursery) -> None:
        self.ledger = ledger
        self.core = core
        self._nursery = nursery
        self._batch: _Batch | None = None  # the appends the committer takes next
        self._pending_ready = trio.Event()
        self._wake = trio.Event()
        self._timer_at = float("inf")  # the deadline the timer sleeps until
        self._changed: dict[str, trio.Event] = {}
        self._outboxes: dict[int, _Outbox] = {}
        self._link_scopes: dict[int, trio.CancelScope] = {}
        self._dial_scopes: dict[int, trio.CancelScope] = {}  # dials not connected yet
        self._tls: ssl.SSLContext | None = None  # verifies wss:// peers (open_node)
        self.metrics = NodeMetrics(self)  # GET /metrics (metrics.py)
        # The last full integrity check of this open (status "verified"): a start checks
        # nothing (it reads the stored summaries); verify() (in the background too) does.
        self.verified: dict[str, Any] = {"state": "never", "contexts": 0, "entries": 0,
                                         "problems": 0}
        ledger.listeners.append(self._on_new_entries)

    @property
    def node_id(self) -> str:
        """This node's id (stored in its data directory: the same across restarts)."""
        return self.ledger.node_id

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` where it listens (peers and clients dial it); "" if not listening."""
        return self.core.config.url

    @property
    def api_key(self) -> bytes | None:
        """The cluster key API clients must prove (None: the API is open)."""
        return self.core.config.key

    # ---- the API an embedding agent uses ------------------------------------------------------

    async def append(
        self, context: str, payload: bytes | str, key: str = "",
        meta: Mapping[str, str] | None = None,
    ) -> Entry:
        """Append one entry to ``context``; returns it once it is durable here.

        Args: ``context`` the log's name (1-128 of ``A-Z a-z 0-9 . _ : / -``); ``payload`` bytes,
        or a str stored as UTF-8; ``key`` an optional label to filter reads by; ``meta`` str→str.
        Returns the ``Entry`` (its ``id`` is the sha256 content id), committed to SQLite and
        already pushed to every connected peer.
        Raises a ``LocalInputError`` subclass (``InvalidContextName``, ``PayloadTooLarge``,
        ``KeyTooLarge``, ``MetaTooLarge``, ...) before anything is stored; a storage error
        (``OSError``, ``sqlite3.Error``) if the commit failed: then nothing was acknowledged.
        """
        request = self.ledger.prepare(context, key, payload, meta)
        batch = self._batch  # (_join, inlined: one call fewer per append)
        if batch is None:
            batch = self._batch = _Batch()
            self._pending_ready.set()
        requests = batch.requests
        start = len(requests)
        requests.append(request)
        batch.starts.append(perf_counter())
        # (parked without ``batch.wait()``'s coroutine: the batch taking appends is never
        # finished, the committer takes it before it commits)
        await _wait_task_rescheduled(batch.park())
        if batch.error is not None:
            raise batch.error
        return batch.entries[start]

    async def append_many(
        self, items: Sequence[tuple[str, bytes | str, str, Mapping[str, str] | None]]
    ) -> list[Entry]:
        """Append several entries in one durable commit.

        Args: ``items`` of ``(context, payload, key, meta)`` as for ``append`` (meta may be None).
        Returns the entries in the order given. Every item is validated first: one bad item
        raises its ``LocalInputError`` and none is stored. Concurrent callers share commits too.
        """
        prepare = self.ledger.prepare
        requests = [prepare(c, k, p, m) for c, p, k, m in items]
        if not requests:
            return []
        batch, start = self._join(requests)
        await batch.wait()
        if batch.error is not None:
            raise batch.error
        return batch.entries[start : start + len(requests)]

    def _join(self, requests: Sequence[AppendRequest]) -> tuple[_Batch, int]:
        """Add validated requests to the next commit; returns it and where they start in it."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            self._pending_ready.set()
        start = len(batch.requests)
        batch.requests.extend(requests)
        batch.starts.append(perf_counter())
        return batch, start

    def get(
        self, context: str, key: str | None = None, after: Cursor | str | None = None,
        limit: int | None = None,
    ) -> tuple[list[Entry], Cursor]:
        """Read ``context`` in causal order: the entries ``after`` does not cover, at most
        ``limit`` of them, only those labelled ``key`` if given.

        Synchronous: it reads the in-memory index (no I/O). Returns ``(entries, cursor)``; pass
        the cursor back as ``after`` to page on with no gap and no duplicate, even when entries
        arrive late from peers. An unknown context reads as empty. Raises
        ``InvalidContextName`` or ``InvalidCursor`` for bad arguments.
        """
        return self.ledger.get(context, key, after, limit)

    async def watch(
        self, context: str, key: str | None = None, since: Cursor | str | None = None
    ) -> AsyncIterator[tuple[Entry, Cursor]]:
        """Stream ``context``: the backlog after ``since``, then every new entry (local or from a
        peer) as it arrives, each once, with the cursor to resume from after it.

        An async generator that never ends by itself: leave the ``async for`` (or cancel) to
        stop. ``key`` filters by label. Raises ``InvalidContextName`` / ``InvalidCursor``.
        """
        check_context(context)
        cursor = Cursor.parse(since)
        while True:
            changed = self._changed.setdefault(context, trio.Event())
            entries, _ = self.ledger.get(context, key, cursor, WATCH_PAGE)
            if not entries:
                await changed.wait()
                continue
            for entry in entries:
                cursor = cursor.advanced((entry,))
                yield entry, cursor

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary: ``node_id``, ``url``, ``root`` (hex node Merkle root: two nodes
        hold the same data iff equal; with ``settling`` contexts left after a crash, the root
        and ``entries`` show them as last stored until they settle), ``entries``,
        ``contexts``, ``settling``, ``peers`` (each with its
        ``state``: new, connecting, connected, backoff, dropped), traffic counters, and
        ``verified``: the full integrity check of this open (``state`` never, running, ok or
        failed; ``contexts``, ``entries`` and ``problems`` counted so far)."""
        status = self.core.status()
        status["verified"] = dict(self.verified)
        since = self.core.agreed_since  # (on the trio clock: say how long ago)
        status["agreed_for_s"] = None if since is None else round(self._now() - since, 3)
        return status

    def contexts(self) -> list[dict[str, Any]]:
        """Every context this node holds, sorted by name: ``{"context": name, "entries": count,
        "root": hex Merkle root}`` (two nodes agree on a context iff its roots are equal)."""
        ledger = self.ledger
        return [{"context": name, "entries": ledger.context_entries(name),
                 "root": ledger.context_root(name).hex()}
                for name in sorted(ledger.context_names())]

    async def verify(self) -> list[str]:
        """Re-check everything this node holds, from scratch, while it serves.

        Every context is read back from its stored rows, one at a time, with each entry's
        content id, canonical encoding, limits, context and signature re-verified, and its
        root, count and state vector compared with the stored summary (and the loaded context,
        if any). Returns one human-readable line per problem; **an empty list means every check
        passed** (and is also what a node holding no context returns). The check goes in steps
        of ``audit.CHECK_BATCH`` entries with the node served between them, each context from
        one consistent view of the store (``StoreReader``: what the node commits meanwhile is
        checked by the next run, not mixed into this one); ``status()["verified"]`` counts as it
        goes. ``p2p-ledger verify --data DIR`` does the same on a stopped node's store.

        why: a context checked in one go held the event loop for all of it (~10 s for 1M
        entries at ~100k entries per CPU-second); a step is 256 entries (~3 ms).
        """
        self.verified = {"state": "running", "contexts": 0, "entries": 0, "problems": 0}
        while self.ledger.settle_step():  # (the summaries compared are the stored ones)
            await trio.sleep(0)
        problems: list[str] = []
        storage = self.ledger.storage
        assert isinstance(storage, SqliteStore)  # (open_node's)
        # A context's ids go to files past 64k (``trio/verify.py``): bounded memory.
        with closing(storage.reader()) as reader, \
                tempfile.TemporaryDirectory(prefix="p2p-ledger-verify-") as ids:
            id_sets = spilling(ids)
            for name in self.ledger.stored_context_names():
                done = self.verified["entries"]
                result = None
                # (the view's summary is the one stored: store a lagging one first; nothing
                # commits between this and the view's first read, no await comes between)
                self.ledger.write_summaries()
                with reader.view():
                    steps = self.ledger.verify_steps(name, reader, id_sets)
                    while result is None:
                        try:
                            self.verified["entries"] = done + next(steps)
                        except StopIteration as stop:
                            result = stop.value or self.ledger.verify_context(name, None,
                                                                              id_sets)
                        await trio.sleep(0)
                entries, found = result
                problems += found
                self.verified.update(contexts=self.verified["contexts"] + 1,
                                     entries=done + entries, problems=len(problems))
        self._verify_done(problems)
        return problems

    def _verify_done(self, problems: list[str]) -> None:
        self.verified.update(state="failed" if problems else "ok", problems=len(problems))
        for line in problems:
            log.error("verify: %s", line)
        log.info("verify: %s, %d entries in %d contexts checked", self.verified["state"],
                 self.verified["entries"], self.verified["contexts"])

    def prove(self, context: str, entry_id: str) -> dict[str, Any]:
        """An inclusion proof of the entry in its context's Merkle tree, which anyone can check
        offline (``core.proof.check_proof``); UnknownEntry if this node does not hold it."""
        return make_proof(self.ledger, context, entry_id)

    def snapshot(self, context: str) -> bytes:
        """A self-verifying snapshot file of ``context`` (every entry and its Merkle root), for
        ``load`` on any node. Raises ``InvalidContextName``."""
        return self.ledger.snapshot(context)

    async def load(self, blob: bytes, fail_if_exists: bool = False) -> tuple[str, int]:
        """Add the entries of a ``snapshot`` this node lacks (they then sync to its peers).

        Returns ``(context, number of entries added)``. The whole file is verified first and
        refused as a whole: ``InvalidSnapshot``, ``UnsupportedVersion``, ``IntegrityError``
        (an entry or the root does not match); ``AlreadyExists`` when ``fail_if_exists`` and
        the context holds entries.
        """
        result = self.ledger.load_snapshot(blob, fail_if_exists)
        self._kick()
        return result

    def compact(self, context: str) -> None:
        """Fold the context's stored update history into one state row (smaller store, faster
        start); reads are unchanged. Raises ``InvalidContextName``."""
        self.ledger.compact(context)

    # ---- internals ---------------------------------------------------------------------------

    def _now(self) -> float:
        return trio.current_time()

    def _on_new_entries(self, context: str, entries: Sequence[Entry]) -> None:
        event = self._changed.pop(context, None)
        if event is not None:
            event.set()

    def _kick(self) -> None:
        self._wake.set()

    def _flush(self) -> None:
        """Carry out what the core decided, and wake the timer if the core's next deadline
        is now earlier than the one it sleeps until.

        why: waking it after every frame cost a task switch, a tick and a carry-out per frame:
        ~12% of a receiving node's CPU in a 1,000 x 100 KB catch-up (cProfile on thread time,
        1,469 wake-ups for 1,600 frames); a frame seldom moves a deadline earlier."""
        self._carry_out()
        if self.core.next_deadline() < self._timer_at:
            self._kick()

    def _carry_out(self) -> None:
        self._carry_out_once()
        while room := [conn for conn in self.core.answers_waiting()
                       if conn in self._outboxes and self._outboxes[conn].queued < ROOM_BYTES]:
            for conn in room:  # (answers are built as their link drains: see _writer)
                self.core.send_room(conn, self._now(), ROOM_BYTES - self._outboxes[conn].queued)
            self._carry_out_once()

    def _carry_out_once(self) -> None:
        try:
            actions = self.core.take_actions()  # commits the received updates staged first
        except Exception as exc:
            log.error("commit of received updates failed: %s", exc)
            raise
        for line in self.core.take_log():
            log.info("%s", line)
        for heal in self.core.counters.heals:
            self.metrics.heal.observe(heal)
        self.core.counters.heals.clear()
        for event in self.core.take_events():
            self.metrics.on_event(event)
            log.info("%s", event.text(), extra={"event": event.kind, "peer": event.node_id,
                                                "origin": event.origin, "url": event.url,
                                                "reason": event.reason,
                                                "retry_in_s": event.retry_in})
        for action in actions:
            if isinstance(action, Send):
                self._enqueue(action.conn, action.frame)
            elif isinstance(action, Close):
                dialing = self._dial_scopes.pop(action.conn, None)
                if dialing is not None:
                    dialing.cancel()  # the core gave up on this dial (dial_timeout)
                outbox = self._outboxes.pop(action.conn, None)
                if outbox is not None:
                    outbox.send.close()  # the writer sends what is queued (the BYE), then ends
            elif isinstance(action, Dial):
                self._nursery.start_soon(self._dial, action.conn, action.url)

    def _enqueue(self, conn: int, frame: bytes) -> None:
        outbox = self._outboxes.get(conn)
        if outbox is None:
            return
        outbox.queued += len(frame)
        if outbox.queued > MAX_QUEUE_BYTES:
            log.warning("link %s: send queue over %d bytes, dropping the slow peer",
                        conn, MAX_QUEUE_BYTES)
            self._outboxes.pop(conn)
            scope = self._link_scopes.get(conn)
            if scope is not None:
                scope.cancel()
            return
        outbox.send.send_nowait(frame)

    async def _timer(self) -> None:
        while True:
            deadline = self._timer_at = self.core.next_deadline()
            with trio.move_on_at(deadline):
                await self._wake.wait()
            self._wake = trio.Event()
            self.core.tick(self._now())
            # Not _flush: kicking itself would make the timer spin (a tick per scheduler pass);
            # the loop reads the new deadline anyway.
            self._carry_out()

    async def _committer(self) -> None:
        while True:
            await self._pending_ready.wait()
            self._pending_ready = trio.Event()
            batch, self._batch = self._batch, None
            if batch is None:  # received updates only
                await self._gather_received()
                self._flush()
                continue
            try:
                appended = self.core.append(batch.requests, self._now())
                self.core.commit_ended(self._now())
            except (LedgerError, OSError, Exception) as exc:  # noqa: B014 - storage can fail
                log.error("append of %d entries failed: %s", len(batch.requests), exc)
                batch.error = exc
            else:
                batch.entries = appended.entries
                self.metrics.commit_batch.observe(len(batch.requests))
                self.metrics.append_latency.observe_since(batch.starts, perf_counter())
            batch.finish()
            self._flush()

    def _write_summaries(self) -> None:
        try:
            self.ledger.write_summaries()
        except Exception as exc:  # storage can fail
            # (the rows are durable; the next open recomputes the summaries they lack)
            log.error("storing the contexts' summaries failed: %s", exc)

    async def _gather_received(self) -> None:
        """Before committing received updates, wait while more keep arriving
        (``Ledger.gathering``; an isolated update waits one GATHER_WAIT)."""
        waits, seen = 0, -1
        while self.ledger.gathering(waits, seen):
            waits, seen = waits + 1, self.ledger.staged_rows()
            await trio.sleep(GATHER_WAIT)

    async def _handle_connection(self, ws: Connection) -> None:
        """Server side: a binary first frame is a peer, a text one an API client."""
        try:
            # why: asked later, on a socket already closed, it raised OSError (EBADF) out of
            # this handler: a traceback in the log for every connection a relay cut at once
            remote = ws.remote_address
        except OSError:
            remote = "?"
        try:
            with trio.fail_after(self.core.config.handshake_timeout):
                first = await ws.recv()
        except Exception as exc:  # a client that never speaks, or closes at once
            log.info("connection from %s ended before its first message: %s",
                     remote, type(exc).__name__)
            return
        if isinstance(first, str):
            await serve_client(self, ws, first)
            return
        conn = self.core.connection_accepted(self._now())
        await self._run_link(conn, PeerLink(ws), first=bytes(first))

    async def _dial(self, conn: int, url: str) -> None:
        scope = self._dial_scopes[conn] = trio.CancelScope()
        # The core abandons a dial after dial_timeout (Close cancels this scope); the
        # transport's own timeout is only a backstop.
        timeout = self.core.config.dial_timeout + 1
        try:
            with scope:
                async with dial(url, timeout=timeout, tls=self._tls) as ws:
                    if self._dial_scopes.pop(conn, None) is None:
                        return  # abandoned in the same instant
                    link = PeerLink(ws)
                    self._open_outbox(conn)
                    self.core.connection_made(conn, self._now())
                    await self._run_link(conn, link)
        except LinkBroken as exc:
            self._dial_scopes.pop(conn, None)
            if conn in self._outboxes or conn in self.core.links:
                self._outboxes.pop(conn, None)
                self.core.connection_lost(conn, self._now(), str(exc))
            else:
                self.core.dial_failed(conn, self._now(), str(exc))
            self._flush()

    def _open_outbox(self, conn: int) -> None:
        send, receive = trio.open_memory_channel[bytes](float("inf"))
        self._outboxes[conn] = _Outbox(send, receive)

    async def _run_link(self, conn: int, link: PeerLink, first: bytes | None = None) -> None:
        if conn not in self._outboxes:
            self._open_outbox(conn)
        outbox = self._outboxes[conn]
        reason = "connection closed"
        with trio.CancelScope() as scope:
            self._link_scopes[conn] = scope
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn, link, outbox)
                    large = False
                    if first is not None:
                        self.core.frame_received(conn, first, self._now())
                        large = self._allow_large_frames(conn, link)
                    self._flush()
                    while conn in self.core.links:
                        frame = await link.recv()
                        self.core.frame_received(conn, frame, self._now())
                        if not large:
                            large = self._allow_large_frames(conn, link)
                        self._after_frame()
                    # The core closed the link (its Close closed the outbox): let the writer
                    # send what is queued, the BYE last, then stop.
                    with trio.move_on_after(2):
                        await outbox.drained.wait()
                    nursery.cancel_scope.cancel()
            except* (LinkClosed, LinkBroken) as group:  # why: the nursery wraps them in a group
                reason = str(group.exceptions[0])
        self._link_scopes.pop(conn, None)
        self._outboxes.pop(conn, None)
        if conn in self.core.links:
            self.core.connection_lost(conn, self._now(), reason)
            self._flush()
        await link.aclose()

    def _allow_large_frames(self, conn: int, link: PeerLink) -> bool:
        """Raise the link's message limit once the core accepted the peer's HELLO, before the
        actions it returned (our AUTH) are carried out: the peer sends large frames only
        after our AUTH, so none can arrive before the limit is raised."""
        if self.core.takes_large_frames(conn):
            link.allow_large_frames()
            return True
        return False

    def _after_frame(self) -> None:
        """A frame that staged received updates leaves its answer (and its forwards) to the
        committer, which commits whatever every link staged meanwhile in one transaction and
        then carries them out (group commit of received updates); other frames are carried out
        at once."""
        if self.ledger.has_staged():
            self._pending_ready.set()
        else:
            self._flush()

    async def _writer(self, conn: int, link: PeerLink, outbox: _Outbox) -> None:
        try:
            async for frame in outbox.receive:
                await link.send(frame)
                outbox.queued -= len(frame)
                if outbox.queued < ROOM_BYTES and conn in self.core.answers_waiting():
                    self._flush()  # build the next answer waiting for this link
        finally:
            outbox.drained.set()


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def _label(storage: Storage, node_id: str | None, identity: Identity) -> str:
    """The node's human label: ``node_id`` if given (it may change), else the stored one, else
    one made from the origin. Entries carry the origin, never the label."""
    if node_id is not None:
        check_node_id(node_id)
    label = node_id or storage.get_meta("node_id") or f"node-{identity.origin[:8]}"
    storage.set_meta("node_id", label)
    return label


@asynccontextmanager
async def open_node(
    data_dir: str | os.PathLike[str],
    *,
    listen: str | None = None,
    peers: Sequence[str] = (),
    node_id: str | None = None,
    cluster: str = "default",
    cluster_key: bytes | str | None = None,
    gossip_interval: float = 1.0,
    discovery: bool = True,
    mdns: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    synchronous: str = "FULL",
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    public_metrics: bool = False,
    memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
    verify_in_background: bool = False,
) -> AsyncIterator[Node]:
    """Run a node until the block exits: rebuilt from ``data_dir``, serving ``listen`` if given,
    dialing ``peers``. Appends work with no peer reachable and sync when one comes back.

    ``mdns``: advertise and browse the LAN (DNS-SD, ``trio/mdns.py``); opt-in, needs a
    ``listen`` address that is not loopback-only.

    Raises InvalidUrl (a bad peer URL), MdnsUnavailable and ListenError (address in use...)
    before the data directory is created or opened; StoreError / StoreLockedError when it
    cannot be used.

    TLS: with ``tls_cert`` and ``tls_key`` (PEM files) the node serves ``wss://`` only. Every
    ``wss://`` peer it dials must present a certificate valid for its host name, signed by a CA
    in ``tls_ca`` (a PEM bundle) or, without it, in the system's trust store. TlsError (one
    line) for files that cannot be used, before anything is created.

    The listen port also answers plain HTTP (``trio/http.py``): ``/healthz``, ``/readyz``,
    ``/metrics`` (with a cluster key, only for its bearer token unless ``public_metrics``) and
    the dashboard page at ``/``.

    ``memory_budget``: bytes of loaded contexts (estimated: ``core.ledger.memory_cost``) beyond
    which the least recently used are unloaded (they reload from the store when next needed);
    None keeps every context that was used loaded. A start checks no entry (it reads stored
    summaries); ``verify_in_background`` runs the full check a context at a time while the node
    serves (``status()["verified"]`` follows it)."""
    key = cluster_key_bytes(cluster_key)
    if (tls_cert is None) != (tls_key is None):
        raise TlsError("--tls-cert and --tls-key go together")
    server_context = None if tls_cert is None or tls_key is None else server_tls(tls_cert, tls_key)
    client_context = client_tls(tls_ca)
    for url in peers:
        check_url(url, "peer URL")
    advertise: list[str] = []
    if mdns:
        from .mdns import advertised_addresses  # zeroconf only when asked

        if not discovery:
            raise MdnsUnavailable("mdns finds peers to dial, but discovery is off (only the "
                                  "seeds are dialed): use one or the other")
        advertise = advertised_addresses(_parse_listen(listen)[0] if listen else None)
    listeners = await open_listeners(*_parse_listen(listen)) if listen is not None else []
    try:
        store = SqliteStore(Path(data_dir), synchronous=synchronous)
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    try:
        identity = open_identity(Path(data_dir), store)
        label = _label(store, node_id, identity)
        # why: a fresh instance per open gives fresh Yjs client ids and writer chains, so a
        # store that lost its tail (restored backup, a disk that lied about fsync) never reuses
        # a position it may already have given out.
        ledger = Ledger.open(store, identity, secrets.token_hex(16), limits, label=label,
                             memory_budget=memory_budget)
        ledger.defer_commits = True  # the committer commits received updates in groups
        ledger.summary_lag_ns = int(SUMMARY_LAG * 1e9)  # (stored by later commits, or idle)
        async with trio.open_nursery() as nursery:
            url = ""
            if listen is not None:
                host, _ = _parse_listen(listen)
                holder: list[Node] = []

                async def handler(ws: Connection) -> None:
                    await holder[0]._handle_connection(ws)

                server = await nursery.start(functools.partial(
                    serve_websockets, handler, listeners, tls=server_context,
                    process_request=process_request(lambda: holder[0], public_metrics)))
                if advertise:  # why: ws://0.0.0.0:PORT in HELLO/PEERS sends peers to themselves
                    host = advertise[0]
                shown = f"[{host}]" if ":" in host else host
                scheme = "ws" if server_context is None else "wss"
                url = f"{scheme}://{shown}:{port_of(server)}"
            config = NodeConfig(node_id=label, cluster=cluster, url=url, seeds=tuple(peers),
                                key=key, gossip_interval=gossip_interval,
                                idle_timeout=max(10.0, 5 * gossip_interval),
                                discovery=discovery, paced_answers=True)
            core = NodeCore(ledger, config, Random(secrets.randbits(64)))
            node = Node(ledger, core, nursery)
            node._tls = client_context
            if listen is not None:
                holder.append(node)
            nursery.start_soon(node._timer)
            nursery.start_soon(node._committer)
            if verify_in_background:
                nursery.start_soon(node.verify)
            if mdns:
                from .mdns import run_mdns

                await nursery.start(run_mdns, core, node._flush, advertise, port_of(server))
            try:
                yield node
            finally:
                # Closing pops the outboxes: keep them to wait until every BYE is out.
                closing = list(node._outboxes.values())
                core.shutdown(trio.current_time())
                node._flush()
                node._write_summaries()
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    for outbox in closing:
                        await outbox.drained.wait()
                nursery.cancel_scope.cancel()
    finally:
        store.close()
        for listener in listeners:  # the server closes them too; a failed start does not
            listener.socket.close()
