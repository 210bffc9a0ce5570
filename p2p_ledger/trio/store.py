"""SQLite storage (stdlib, WAL): the runtime's durable ``Storage``.

One row per committed Yjs update, one row per context (``contexts``: its integer id, its name,
its ``core.storage.Summary``) and one row per head a context still needs (``heads``), written in
the same transaction as the updates they describe; a commit is one SQLite transaction, so
concurrent appends that the ledger batches share one fsync (group commit). Checkpoints run in a
thread of the store with its own connection (``_Checkpointer``), off the committing (trio)
thread. A lock file with ``flock`` keeps a second process out of the same data directory (SQLite
itself would let both in and interleave).

A damaged store is refused with one named line (``StoreDamagedError``), never a traceback and
never silently replaced by a new node: a database that cannot be read (truncated, malformed), an
empty (0-byte) database, and a database that has vanished while its WAL files are still there.
A new database is built beside its final name and renamed into place, so a 0-byte
``ledger.sqlite3`` is never a state this code leaves behind: it always means damage.
``p2p-ledger repair`` (``repair.py``) keeps what still verifies.

The file says whose it is and which format it holds in SQLite's own header fields
(``application_id``, ``user_version``: ``STORE_FORMAT``). A store of a higher format was written
by a newer p2p-ledger and is refused untouched with one line; rows are never read by code that
does not know their layout. Formats: 0 = unmarked, written before the mark existed (rows that
carry their heads, or headless rows beside a ``heads`` table); 2 = headless rows and a ``heads``
table, each row naming its context; 3 = rows, heads and summaries keyed by a context's integer
id, bare rows without the bundle header, heads without the entry id that is their key and with
what they share with the other heads of their commit in a ``crowns`` row (``crown`` NULL: the
head is whole but its id; 0: bytes stored as given, not a head as ``Head.encode`` writes it). This
version rewrites a store of format 0 or 2 in format 3 when it opens it (``_migrate``, one
transaction); rows of format 0 that carry heads are kept whole.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from array import array
from collections.abc import Collection, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..core.bundle import BARE
from ..core.entry import ID_SIZE
from ..core.errors import StoreDamagedError, StoreError, StoreLockedError
from ..core.identity import HASH_SIZE, KEY_SIZE, LEGACY, SIG_SIZE
from ..core.storage import HeadChange, Span, Summary

DB_NAME = "ledger.sqlite3"
# why: SQLite copies the WAL into the database (a checkpoint, with its own fsync) in the
# committing connection once the WAL passes 1,000 pages: half of what committing large rows
# cost. 10 rows of 10 MB (WAL, synchronous=FULL, load 10 on 2 cores, 3 runs each): the writer
# spent 0.42-0.58 CPU-s and 2.8-3.5 s with those checkpoints, 0.29-0.30 CPU-s and 1.4-1.9 s with
# them in a thread of their own (0.16-0.18 CPU-s there; sqlite3 releases the GIL). The writer
# still checkpoints itself past CHECKPOINT_BACKSTOP bytes of WAL, should the thread fall behind.
CHECKPOINT_EVERY = 4 * 1024 * 1024  # bytes of rows committed between background checkpoints
CHECKPOINT_BACKSTOP = 64 * 1024 * 1024  # bytes of WAL (in pages of the store's page size)
# why: a new store has 16 KiB pages (a store keeps the page size it was created with). A
# receiver of 1,000 x 100 KB (two node processes, alternated, load ~3) spent 0.59 CPU-s
# against 0.78 with 4 KiB pages (in-process receive 0.51 against 0.85 CPU-s per 102 MB) and
# moved 95-122 MB/s against 86-90. Small entries cost the same CPU and wall time to ingest
# (100k in one context, 50k over 10,000 contexts, alternated), but write 1.7-1.9x the bytes
# (whole pages of the index per commit) and take 275 against 261 B per entry on disk in one
# context, 381 against 393 over 10,000 contexts (5 entries each).
PAGE_SIZE = 16384
# read_spans: spans of one row at most SPAN_GAP bytes apart are read as one piece (one query),
# up to SPAN_PIECE bytes; the row ids of at most ROW_CACHE contexts are kept (8 B per row).
SPAN_GAP = 4096
SPAN_PIECE = 1 << 20
ROW_CACHE = 4096
# why: Python's sqlite3 binds an int, float, str or bytearray as it is, but passes any other
# parameter (bytes, memoryview) through its adaptation protocol first (a tuple built, a dict
# and two attribute lookups, in 3.11 an AttributeError formatted and dropped): an executemany
# of 128 rows (int, 260 B, int) took 1.22 us per row with bytes, 0.72 with bytearray. A spread
# commit binds ~4 blobs per entry (its row, a head's id, bytes and old id), so the statements
# of a commit bind them as ``Blob`` (a copy, ~0.1 us for a small one; the same bytes stored);
# a row above SMALL_ROW bytes is bound as a view of the bundle (its copy costs more).
Blob = bytearray
SMALL_ROW = 4096
# the crowns of at most CROWN_CACHE heads stored are kept (``SqliteStore._crown_of``, ~150 B each)
CROWN_CACHE = 1 << 16
log = logging.getLogger(__name__)
REPAIR_HINT = "`p2p-ledger repair --data {dir}` keeps what still verifies"
# why: spread over 10,000 contexts (100k × 100 B entries, one entry per row, `bench --scale`)
# format 2 took 431 B per entry: the row 342 (the name of its context in it, the 13-byte header
# of a bundle without heads), the index on (context, id) 24, the heads 56 (a 32-byte key the head
# repeats), the summaries 9. Format 3 names a context by a small integer (``contexts``, which
# holds its summary too), cuts the bare header from rows (``bare`` = 1, no byte of payload:
# SQLite stores the constant in the record's header), and stores a head without the entry id
# that is its key, the parts it shares with the other heads of its commit once (``crowns``,
# see CROWN_BELOW): 364 B per entry (one context: ~262 B, as before).
SCHEMA = """
CREATE TABLE IF NOT EXISTS contexts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    root BLOB,
    entries INTEGER,
    state_vector BLOB,
    max_lamport INTEGER,
    forks INTEGER,
    stored INTEGER
);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ctx INTEGER NOT NULL,
    blob BLOB NOT NULL,
    bare INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_context ON updates (ctx, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS heads (
    ctx INTEGER NOT NULL,
    id BLOB NOT NULL,
    head BLOB NOT NULL,
    crown INTEGER,
    PRIMARY KEY (ctx, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS crowns (
    id INTEGER PRIMARY KEY,
    crown BLOB NOT NULL,
    live INTEGER NOT NULL
);
DROP TRIGGER IF EXISTS a_crowned_head_goes;
"""


def _statements(script: str) -> list[str]:
    """``script``'s statements, one by one (``executescript`` would commit a transaction: the
    rewrite of an older store runs them inside its own)."""
    out, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            out.append(buffer.strip())
            buffer = ""
    return out


SCHEMA_STATEMENTS = _statements(SCHEMA)
STORE_FORMAT = 3
APPLICATION_ID = 0x70326C67  # "p2lg": a p2p-ledger store, in SQLite's header
MARK = f"PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {STORE_FORMAT};"
# The highest update row id the summaries describe, written in the same transaction as they
# are: rows written without summaries (an older version, a tool) leave it behind, and the next
# open recomputes them instead of trusting stale ones.
SUMMARIES_UPTO = "summaries_upto"
# A context's integer id, in a statement that names the context (the scalar subquery is read
# once per statement, and the index lookups use its value).
CTX = "(SELECT id FROM contexts WHERE name = ?)"
# "TIME ROW": a Lamport time at or above every entry of the rows after SUMMARIES_UPTO up to row
# id ROW, written with the rows by each commit that leaves summaries lagging
# (``Storage.commit``'s ``lamport``): an open after a crash takes TIME instead of reading
# those rows, and reads only the rows after ROW (committed without a time: by a tool, or an
# older version).
# why: spread over 10,000 contexts summaries may lag their rows by up to SUMMARY_LAG_MOST x
# SUMMARY_LAG (4 s, ``Ledger._summaries_due``), and the open after a crash read every row
# of those 4 s to decode its records' times.
LAMPORT_UPTO = "lamport_upto"
SUMMARY_COLUMNS = "root, entries, state_vector, max_lamport, forks, stored"
_first, _second = itemgetter(0), itemgetter(1)


class SqliteStore:
    def __init__(self, data_dir: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        self.path = Path(data_dir)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"data directory {self.path} is a file, not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self.lock(self.path)
        db = self._db_path = self.path / DB_NAME  # (one Path: reads name it in their errors)
        self._checkpointer: _Checkpointer | None = None  # started by the first CHECKPOINT_EVERY
        self._synchronous = synchronous
        self._row_ids: dict[str, array[int]] = {}  # context → its rows' ids, in commit order
        self._ids: dict[str, int] = {}  # context → its integer id (committed)
        # (context id, head id) → its crown (0: none) of heads this open stored (committed)
        self._crown_of: dict[tuple[int, bytes], int] = {}
        self._unchecked = 0  # bytes of rows committed since the last background checkpoint
        try:
            if not db.exists():
                refuse_vanished(self.path)
                _create(db)
            elif db.stat().st_size == 0:
                raise StoreDamagedError(
                    f"{db} is empty (0 bytes): the store was emptied; refusing to start a new "
                    f"node in its place (restore it, or move the directory away)")
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per commit().
            self.db = sqlite3.connect(db, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns (survives power loss, not just kill -9).
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            page = self.db.execute("PRAGMA page_size").fetchone()[0]
            self.db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP // page}")
            check_format(self.db, db)
            _migrate(self.db, db)
            self.db.executescript(SCHEMA + MARK)
            self._lamport = self._covered()
        except BaseException as exc:
            # Not a database (or unreadable): release the lock so the caller can report it.
            os.close(self._lock_fd)
            if isinstance(exc, sqlite3.DatabaseError):
                raise _named(db, exc) from None
            raise

    @staticmethod
    def lock(path: Path) -> int:
        """Take the data directory's lock (StoreLockedError if a process holds it); returns the
        file descriptor, whose closing releases it."""
        fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"data directory {path} is in use by another p2p-ledger process") from None
        return fd

    def load(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        try:
            for context, blob, bare in self.db.execute(
                    "SELECT c.name, u.blob, u.bare FROM updates AS u JOIN contexts AS c"
                    " ON c.id = u.ctx ORDER BY u.id"):
                out.setdefault(context, []).append(_bundle(blob, bare))
        except sqlite3.DatabaseError as exc:
            raise _named(self.path / DB_NAME, exc) from None
        return out

    def contexts(self) -> list[str]:
        return [str(c) for (c,) in self.db.execute(
            "SELECT name FROM contexts AS c WHERE EXISTS"
            " (SELECT 1 FROM updates WHERE ctx = c.id) ORDER BY name")]

    def iter_context(self, context: str) -> Iterator[bytes]:
        return _context_rows(self.db, self._db_path, context)

    def scan(self, contexts: Collection[str]) -> Iterator[tuple[str, Iterator[bytes], list[bytes]]]:
        return _scan(self.db, self._db_path, contexts)

    def iter_rows(self, context: str, after: int = 0) -> Iterator[tuple[int, bytes]]:
        try:
            cursor = self.db.execute(
                f"SELECT id, blob, bare FROM updates WHERE ctx = {CTX} AND id > ? ORDER BY id",
                (context, after))
            # why: a few rows at a time: a row may hold a whole commit of large entries (10 MB)
            while rows := cursor.fetchmany(8):
                for row, blob, bare in rows:
                    yield row, _bundle(blob, bare)
        except sqlite3.DatabaseError as exc:
            raise _named(self.path / DB_NAME, exc) from None

    def read_spans(self, context: str, spans: Sequence[Span]) -> list[bytes]:
        """One query per piece of a row: spans of one row close together (a page of entries
        committed together) are cut from one ``substr`` of it."""
        out: list[bytes] = []
        if not spans:
            return out
        # (a bare row is stored without the bundle's header: its offsets move by that much)
        query = f"SELECT substr(blob, ? - {len(BARE)} * bare, ?) FROM updates WHERE id = ?"
        try:
            ids = self._rows_of(context, max(row for row, _, _ in spans))
            i, n = 0, len(spans)
            while i < n:
                row, lo, size = spans[i]
                hi, j = lo + size, i + 1
                while j < n:  # (the run of spans that follow in one piece of the row)
                    r, at, size = spans[j]
                    end = at + size
                    if r != row or at < lo or at > hi + SPAN_GAP or end - lo > SPAN_PIECE:
                        break
                    hi = max(hi, end)
                    j += 1
                found = self.db.execute(query, (lo + 1, hi - lo, ids[row])).fetchone()
                piece = bytes(found[0]) if found else b""
                out += [piece[at - lo : at - lo + size] for _, at, size in spans[i:j]]
                i = j
        except sqlite3.DatabaseError as exc:
            raise _named(self.path / DB_NAME, exc) from None
        return out

    def _rows_of(self, context: str, row: int) -> array[int]:
        """The ids of ``context``'s rows in commit order, read when a row beyond those known
        is asked for (rows are only appended, until replace_context forgets them)."""
        ids = self._row_ids.get(context)
        if ids is None:
            if len(self._row_ids) >= ROW_CACHE:
                self._row_ids.clear()
            ids = self._row_ids[context] = array("q")
        if row >= len(ids):
            ids.extend(r for (r,) in self.db.execute(
                f"SELECT id FROM updates WHERE ctx = {CTX} AND id > ? ORDER BY id",
                (context, ids[-1] if ids else -1)))
            if row >= len(ids):
                raise StoreDamagedError(
                    f"{self.path / DB_NAME}: context {context} has {len(ids)} stored rows, not "
                    f"{row + 1}: " + REPAIR_HINT.format(dir=self.path))
        return ids

    def heads(self, context: str) -> list[bytes]:
        return _context_heads(self.db, self._db_path, context)

    def summaries(self) -> dict[str, Summary] | None:
        upto = self.get_meta(SUMMARIES_UPTO)
        last = self.db.execute("SELECT max(id) FROM updates").fetchone()[0]
        if upto is None or int(upto) != (last or 0):
            return None
        return {str(row[0]): _summary(row) for row in self.db.execute(
            f"SELECT name, {SUMMARY_COLUMNS} FROM contexts WHERE root IS NOT NULL")}

    def lagging_summaries(self) -> tuple[dict[str, Summary], list[str]]:
        """The stored summaries and the contexts with rows after SUMMARIES_UPTO (every context
        when it was never written: a store from before summaries, or from ``repair``)."""
        upto = self.get_meta(SUMMARIES_UPTO)
        if upto is None:
            return {}, self.contexts()
        lagging = [str(c) for (c,) in self.db.execute(
            "SELECT name FROM contexts WHERE id IN (SELECT DISTINCT ctx FROM updates"
            " WHERE id > ?)", (int(upto),))]
        return ({str(row[0]): _summary(row) for row in self.db.execute(
            f"SELECT name, {SUMMARY_COLUMNS} FROM contexts WHERE root IS NOT NULL")}, lagging)

    def _covered(self) -> int | None:
        """The Lamport time the rows after SUMMARIES_UPTO come to, if LAMPORT_UPTO covers
        them all (0: there are none); None if some were committed without one."""
        last = self.db.execute("SELECT max(id) FROM updates").fetchone()[0] or 0
        if last <= int(self.get_meta(SUMMARIES_UPTO) or 0):
            return 0
        time, row = _time_upto(self.get_meta(LAMPORT_UPTO))
        return time if row == last else None

    def lagging_lamport(self) -> tuple[int, Iterator[tuple[str, bytes]]]:
        time, row = _time_upto(self.get_meta(LAMPORT_UPTO))
        return time, self._rows_after(max(row, int(self.get_meta(SUMMARIES_UPTO) or 0)))

    def _rows_after(self, after: int) -> Iterator[tuple[str, bytes]]:
        try:
            names = {ctx: str(name) for ctx, name in self.db.execute(
                "SELECT id, name FROM contexts")}
            cursor = self.db.execute("SELECT ctx, blob, bare FROM updates WHERE id > ? "
                                     "ORDER BY id", (after,))
            while rows := cursor.fetchmany(8):  # (a row may hold a commit of large entries)
                for ctx, blob, bare in rows:
                    yield names[ctx], _bundle(blob, bare)
        except sqlite3.DatabaseError as exc:
            raise _named(self.path / DB_NAME, exc) from None

    def reader(self) -> StoreReader:
        """A connection of its own that reads consistent views of the store while this one
        commits (``StoreReader``); close it before the store."""
        return StoreReader(self.path / DB_NAME)

    def commit(self, updates: Sequence[tuple[str, bytes]],
               summaries: Mapping[str, Summary] | None = None,
               heads: Sequence[HeadChange] = (), lamport: int | None = None) -> None:
        if not updates and not summaries and not heads:
            return
        covered = self._lamport
        self.db.execute("BEGIN")
        try:
            ids, new = self._context_ids(chain(summaries or (), map(_first, updates),
                                               map(_first, heads)))
            crowns = write_rows(self.db, updates, heads, ids, self._crown_of)
            if summaries is not None:
                self._put(summaries, ids)
                self._mark_current()
                covered = 0
            elif updates:
                covered = self._cover(lamport)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self._lamport = covered
        if new:
            self._known_ids(new)
        self._known_crowns(crowns)
        self._committed(sum(map(len, map(_second, updates))))

    # why: a commit over 128 contexts looked each up 3 times by name (its row, its heads'
    # deletion and insertion): +5-10 µs per entry spread over 10,000 contexts, against 21-26 µs
    # for all of format 2's store writes. The ids known are kept (``_known_ids``), but only
    # once their transaction committed: a rolled-back id may name another context later. When
    # every name is known, the ids known are the answer (a dict comprehension over a spread
    # commit's ~384 names was 9.5% of the store's Python: 3.35 -> 3.24 us per entry, medians
    # of 9 replays of 1,563 commits against a no-op connection).
    def _context_ids(self, contexts: Iterable[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Inside a transaction: the integer id of each context, and of those not known
        before (named now if they had none)."""
        known, names = self._ids, dict.fromkeys(contexts)
        if names.keys() <= known.keys():  # (the usual commit: every id known, no dict built)
            return known, {}
        named = context_ids(self.db, [c for c in names if c not in known])
        ids = {c: known[c] for c in names if c in known}
        ids.update(named)
        return ids, named

    def _known_ids(self, ids: Mapping[str, int]) -> None:
        if len(self._ids) + len(ids) > ROW_CACHE * 16:
            self._ids.clear()
        self._ids.update(ids)

    def _known_crowns(self, changes: Crowned) -> None:
        """After a commit: the crowns of the heads it stored (and those it deleted: no more),
        kept so that a later deletion counts them down without asking (``_delete_heads``);
        only once their transaction committed, as ``_known_ids``: a rolled-back crown's id is
        handed out again."""
        gone, stored = changes
        known = self._crown_of
        if len(known) + len(stored) > CROWN_CACHE:
            known.clear()
        for key in gone:
            known.pop(key, None)
        known.update(stored)

    def _cover(self, lamport: int | None) -> int | None:
        """Inside a transaction that leaves rows after SUMMARIES_UPTO: LAMPORT_UPTO covers
        them all, ``lamport`` its new rows (None: not given), if it covered those before;
        returns the time they come to (None: not covered, an open reads them)."""
        if lamport is None or self._lamport is None:
            return None
        time = max(self._lamport, lamport)
        self.db.execute("INSERT INTO meta (name, value) SELECT ?, ? || ' ' || max(id) FROM "
                        "updates WHERE true ON CONFLICT (name) DO UPDATE SET value = "
                        "excluded.value", (LAMPORT_UPTO, time))
        return time

    def _committed(self, size: int) -> None:
        """After a commit of ``size`` bytes of rows: wake the checkpoint thread every
        CHECKPOINT_EVERY bytes (started at the first: most stores in tests never get there)."""
        self._unchecked += size
        if self._unchecked >= CHECKPOINT_EVERY:
            self._unchecked = 0
            if self._checkpointer is None:
                self._checkpointer = _Checkpointer(self.path / DB_NAME, self._synchronous)
            self._checkpointer.wake()

    def put_summaries(self, summaries: Mapping[str, Summary]) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.execute(f"UPDATE contexts SET ({SUMMARY_COLUMNS}) = "
                            f"(NULL, NULL, NULL, NULL, NULL, NULL)")
            self._put(summaries)
            self._mark_current()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self._lamport = 0  # (nothing lags)

    def _put(self, summaries: Mapping[str, Summary], ids: Mapping[str, int] | None = None
             ) -> None:
        """Inside a transaction: write summaries, by the contexts' ``ids`` (None: by name,
        naming the contexts that have no id: ``put_summaries``)."""
        if ids is not None:
            self.db.executemany(
                f"UPDATE contexts SET ({SUMMARY_COLUMNS}) = (?, ?, ?, ?, ?, ?) WHERE id = ?",
                [(Blob(root), entries, Blob(vector), lamport, forks, stored, ids[name])
                 for name, (root, entries, vector, lamport, forks, stored) in summaries.items()])
            return
        self.db.executemany(
            f"INSERT INTO contexts (name, {SUMMARY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT (name) DO UPDATE SET ({SUMMARY_COLUMNS}) = (excluded.root, "
            f"excluded.entries, excluded.state_vector, excluded.max_lamport, excluded.forks, "
            f"excluded.stored)",
            [(name, *summary) for name, summary in summaries.items()])


    def _mark_current(self) -> None:
        last = self.db.execute("SELECT max(id) FROM updates").fetchone()[0]
        self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                        (SUMMARIES_UPTO, str(last or 0)))

    def replace_context(self, context: str, state: bytes,
                        heads: Sequence[tuple[bytes, bytes]]) -> None:
        self._row_ids.pop(context, None)
        self.db.execute("BEGIN")
        try:
            current = self.get_meta(SUMMARIES_UPTO) == str(
                self.db.execute("SELECT max(id) FROM updates").fetchone()[0] or 0)
            self.db.execute(f"DELETE FROM updates WHERE ctx = {CTX}", (context,))
            _delete_heads(self.db, [(ctx, bytes(raw)) for ctx, raw in self.db.execute(
                f"SELECT ctx, id FROM heads WHERE ctx = {CTX}", (context,)).fetchall()], {})
            write_rows(self.db, [(context, state)], [(context, raw, head) for raw, head in heads])
            self.db.execute("UPDATE contexts SET stored = ? WHERE name = ? AND root IS NOT NULL",
                            (len(state), context))
            if current:
                self._mark_current()  # the content is unchanged: the summaries still hold
            else:  # (and so are its Lamport times)
                self._cover(self._lamport)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self._crown_of.clear()  # (its heads went without it)
        self._committed(len(state))

    def get_meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()  # first: the last connection to close ends the WAL
        self.db.close()
        os.close(self._lock_fd)


class StoreReader:
    """Reads of a store on a connection of its own: within ``view()``, every read sees the
    store as it was at the first of them (a WAL read transaction), whatever the store's own
    connection commits meanwhile. ``node --verify-in-background`` checks a context this way
    in steps, serving between them, against the summary stored with the rows it reads."""

    def __init__(self, db: Path) -> None:
        self.path = db
        self.db = sqlite3.connect(db, isolation_level=None)
        self.db.execute("PRAGMA query_only = 1")

    @contextmanager
    def view(self) -> Iterator[StoreReader]:
        self.db.execute("BEGIN")
        try:
            yield self
        finally:
            self.db.execute("ROLLBACK")  # (nothing was written: ends the read transaction)

    def iter_context(self, context: str) -> Iterator[bytes]:
        return _context_rows(self.db, self.path, context)

    def heads(self, context: str) -> list[bytes]:
        return _context_heads(self.db, self.path, context)

    def scan(self, contexts: Collection[str]) -> Iterator[tuple[str, Iterator[bytes], list[bytes]]]:
        return _scan(self.db, self.path, contexts)

    def all_rows(self) -> Iterator[tuple[str, bytes]]:
        """Every stored row, in storage order: (its context, its bundle), 256 at a time
        (``verify``'s second process checks every record this way)."""
        try:
            names = {ctx: str(name) for ctx, name in self.db.execute(
                "SELECT id, name FROM contexts")}
            cursor = self.db.execute("SELECT ctx, blob, bare FROM updates")
            while rows := cursor.fetchmany(256):
                for ctx, blob, bare in rows:
                    yield names[ctx], _bundle(blob, bare)
        except sqlite3.DatabaseError as exc:
            raise _named(self.path, exc) from None

    def summary(self, context: str) -> Summary | None:
        try:
            row = self.db.execute(f"SELECT name, {SUMMARY_COLUMNS} FROM contexts "
                                  f"WHERE name = ? AND root IS NOT NULL", (context,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise _named(self.path, exc) from None
        return None if row is None else _summary(row)

    def close(self) -> None:
        self.db.close()


def _time_upto(value: str | None) -> tuple[int, int]:
    """LAMPORT_UPTO's (time, row); (0, 0) if there is none."""
    if value is None:
        return 0, 0
    time, row = value.split()
    return int(time), int(row)


def _summary(row: Sequence[Any]) -> Summary:
    """A context's name and summary columns."""
    return Summary(bytes(row[1]), int(row[2]), bytes(row[3]), int(row[4]), int(row[5]),
                   int(row[6]))


class _Checkpointer:
    """A thread with its own connection that copies the WAL into the database (a PASSIVE
    checkpoint: it never blocks the writer or a reader) each time it is woken."""

    def __init__(self, db: Path, synchronous: str) -> None:
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(db, synchronous),
                                        name=f"checkpoint {db}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()

    def _run(self, db: Path, synchronous: str) -> None:
        try:
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute(f"PRAGMA synchronous={synchronous}")  # (FULL: fsync the database)
        except sqlite3.Error as exc:  # (the writer's own checkpoints go on)
            log.warning("cannot open %s for background checkpoints: %s", db, exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    # The rows stay in the WAL, durable; the writer's own checkpoint past
                    # CHECKPOINT_BACKSTOP bytes reports a lasting fault on its next commit.
                    log.warning("background checkpoint of %s failed: %s", db, exc)
        finally:
            conn.close()


def _context_rows(db: sqlite3.Connection, path: Path, context: str) -> Iterator[bytes]:
    """One context's stored updates in commit order, fetched 256 at a time."""
    try:
        cursor = db.execute(f"SELECT blob, bare FROM updates WHERE ctx = {CTX} ORDER BY id",
                            (context,))
        while rows := cursor.fetchmany(256):
            for blob, bare in rows:
                yield _bundle(blob, bare)
    except sqlite3.DatabaseError as exc:
        raise _named(path, exc) from None


def _context_heads(db: sqlite3.Connection, path: Path, context: str) -> list[bytes]:
    try:
        return _heads_of(db, context)
    except sqlite3.DatabaseError as exc:
        raise _named(path, exc) from None


def _heads_of(db: sqlite3.Connection, context: str) -> list[bytes]:
    """A context's stored heads, each as ``Head.encode`` wrote it (one whose crown is lost
    comes back malformed: the reader's check names it)."""
    return [_whole_head(*row) for row in db.execute(
        f"SELECT h.id, h.head, h.crown, c.crown FROM heads AS h LEFT JOIN crowns AS c "
        f"ON c.id = h.crown WHERE h.ctx = {CTX}", (context,))]


def _whole_head(raw: bytes, head: bytes, at: int | None, crown: bytes | None) -> bytes:
    """A stored head (its row's id, head and crown columns, its crown's bytes) as
    ``Head.encode`` wrote it."""
    if at is None:
        return _head(raw, head)
    if at == 0 or crown is None:
        return bytes(head)
    depth = (len(head) - 16 + len(crown) - _CROWN_PATH_AT) // HASH_SIZE
    return b"".join((crown[:KEY_SIZE], head[:16], raw, crown[KEY_SIZE:_CROWN_PATH_AT],
                     bytes([depth]), head[16:], crown[_CROWN_PATH_AT:]))


# SQLite's page cache while ``_scan`` reads (KiB; the connection's own is restored after).
# why: a context's rows are spread over the file (one row per commit that touched it), and the
# next contexts' rows sit in the same pages (committed together); with the default 2 MB cache
# every row's leaf page was read again (a 16 KiB pread): reading 1M rows of 10,000 contexts in
# context order took 1.64-1.71 CPU-s (0.72-0.74 of it system), with 4-32 MiB 0.99-1.07 (sys
# 0.07-0.20; a scan in storage order 0.44); peak RSS 14 -> 28 MiB at 16 MiB (load ~5)
SCAN_CACHE_KIB = 16 * 1024


def _scan(db: sqlite3.Connection, path: Path, contexts: Collection[str],
          ) -> Iterator[tuple[str, Iterator[bytes], list[bytes]]]:
    """``Storage.scan``: the contexts by integer id, each run of consecutive ids in two
    queries (rows by the index on (ctx, id), heads by their key), read side by side. A read
    that fails ends the scan (raised to the caller if it was reading that context's rows):
    the caller reads the contexts not given one by one, each failing where the damage is.

    why: ``verify`` over 10,000 contexts of 10 entries made two queries per context (and a
    ``Path`` per call): ~0.5 of its ~3.7 CPU-s (cProfile); contexts made one after another
    have consecutive ids, so a whole store is one run."""
    try:
        was = db.execute("PRAGMA cache_size").fetchone()[0]
        db.execute(f"PRAGMA cache_size = -{SCAN_CACHE_KIB}")
    except sqlite3.DatabaseError:
        return
    try:
        wanted = set(contexts)
        ids = sorted((ctx, str(name)) for ctx, name in db.execute(
            "SELECT id, name FROM contexts") if name in wanted)
        names = dict(ids)
        runs: list[list[int]] = []
        for ctx, _ in ids:
            if runs and runs[-1][1] == ctx - 1:
                runs[-1][1] = ctx
            else:
                runs.append([ctx, ctx])
        for low, high in runs:
            if (yield from _scan_run(db, path, names, low, high)):
                return
    except sqlite3.DatabaseError:
        return
    finally:
        with suppress(sqlite3.DatabaseError):
            db.execute(f"PRAGMA cache_size = {int(was)}")


def _scan_run(db: sqlite3.Connection, path: Path, names: Mapping[int, str], low: int,
              high: int) -> Generator[tuple[str, Iterator[bytes], list[bytes]], None, bool]:
    """``_scan`` of the contexts ``low`` to ``high`` (every id between them wanted); True if
    a read of rows failed (the scan ends)."""
    rows = db.execute("SELECT ctx, blob, bare FROM updates WHERE ctx BETWEEN ? AND ? "
                      "ORDER BY ctx, id", (low, high))
    heads = _fetched(db.execute(
        "SELECT h.ctx, h.id, h.head, h.crown, c.crown FROM heads AS h LEFT JOIN crowns AS c "
        "ON c.id = h.crown WHERE h.ctx BETWEEN ? AND ? ORDER BY h.ctx", (low, high)))
    batch: list[Any] = rows.fetchmany(256)  # (rows fetched, read from ``at`` on)
    at = 0
    head = next(heads, None)
    broken = False

    def rows_of(ctx: int) -> Iterator[bytes]:
        nonlocal batch, at, broken
        try:
            while batch:
                for row_ctx, blob, bare in batch[at:] if at else batch:
                    if row_ctx != ctx:
                        return
                    at += 1
                    yield BARE + blob if bare else bytes(blob)  # (``_bundle``)
                batch, at = rows.fetchmany(256), 0
        except sqlite3.DatabaseError as exc:
            broken = True
            raise _named(path, exc) from None

    while batch or head is not None:
        ctx = min(batch[at][0] if batch else high + 1, head[0] if head is not None else high + 1)
        held = []
        while head is not None and head[0] == ctx:
            held.append(_whole_head(*head[1:]))
            head = next(heads, None)
        its_rows = rows_of(ctx)
        yield names[ctx], its_rows, held
        for _ in its_rows:  # (rows the caller left: an audit that stopped at a problem)
            pass
        if broken:
            return True
    return False


def _fetched(cursor: sqlite3.Cursor) -> Iterator[Any]:
    """A cursor's rows, fetched 256 at a time."""
    while rows := cursor.fetchmany(256):
        yield from rows


def context_ids(db: sqlite3.Connection, contexts: Iterable[str]) -> dict[str, int]:
    """Inside a transaction: the integer id of each context, named now if it has none."""
    names = list(dict.fromkeys(contexts))
    db.executemany("INSERT OR IGNORE INTO contexts (name) VALUES (?)", [(c,) for c in names])
    return {c: int(db.execute("SELECT id FROM contexts WHERE name = ?", (c,)).fetchone()[0])
            for c in names}


# The heads a commit changed, as the store keeps track of them once it committed
# (``SqliteStore._known_crowns``): the (context id, head id) of each head deleted, and the
# crown (0: none) of each head stored.
Crowned = tuple[list[tuple[int, bytes]], dict[tuple[int, bytes], int]]
INSERT_ROW = "INSERT INTO updates (ctx, blob, bare) VALUES (?, ?, ?)"
INSERT_HEAD = "INSERT INTO heads (ctx, id, head, crown) VALUES (?, ?, ?, ?)"
DELETE_HEAD = "DELETE FROM heads WHERE ctx = ? AND id = ?"
# why: spread over 10,000 contexts a commit deletes each touched context's superseded head and
# stores its new one: renaming the old row in place (one statement, one search of the key) cost
# 3.3 against 4.0 us per head for the DELETE and INSERT (128 heads per commit, 300 commits,
# 16 KiB pages, SQLite alone); keyed by a slot instead of the entry id it would cost 2.4, at
# the price of a new store format.
RENAME_HEAD = "UPDATE heads SET id = ?, head = ?, crown = ? WHERE ctx = ? AND id = ?"


def write_rows(db: sqlite3.Connection, updates: Sequence[tuple[str, bytes]],
               heads: Sequence[HeadChange], ids: Mapping[str, int] | None = None,
               known: Mapping[tuple[int, bytes], int] | None = None) -> Crowned:
    """Inside a transaction: append rows and apply head changes; ``ids`` names every context
    they touch (None: ``context_ids`` of them). Returns the heads deleted and the crowns of
    those stored (see ``_put_heads``)."""
    if ids is None:
        ids = context_ids(db, [*(c for c, _ in updates), *(c for c, _, _ in heads)])
    cut = len(BARE)  # (``_row``, inline: a spread commit stores ~128 rows of one entry)
    db.executemany(INSERT_ROW, [
        ((ids[c], Blob(memoryview(b)[cut:]) if len(b) <= SMALL_ROW else memoryview(b)[cut:], 1)
         if type(b) is bytes and b.startswith(BARE) else (ids[c], b, 0)) for c, b in updates])
    if heads:
        return _put_heads(db, heads, ids, known or {})
    return [], {}


def _put_heads(db: sqlite3.Connection, heads: Sequence[HeadChange], ids: Mapping[str, int],
               known: Mapping[tuple[int, bytes], int]) -> Crowned:
    """Inside a transaction: apply head changes, deletions first. Heads of one commit that
    share their origin, signature and the path above their lowest CROWN_BELOW levels store
    those once (a ``crowns`` row, counting the heads that use it; a deletion counts it down,
    and the last deletes it). ``known``: the crowns of heads stored before, where the caller
    knows them (``SqliteStore._crown_of``). A head stored where its context deletes a known
    one takes that one's row (``RENAME_HEAD``). Returns the heads deleted and the crown (0:
    none) of each head stored, by (context id, head id)."""
    gone: dict[tuple[int, bytes], None] = {}
    stored: dict[tuple[int, bytes], bytes] = {}  # (the last of a head given twice, replacing)
    for context, raw, head in heads:
        if head is None:
            gone[ids[context], raw] = None
        else:
            stored[ids[context], raw] = head
    down: dict[int, int] = {}  # crown → heads deleted that used it
    free: dict[int, bytes] = {}  # context id → a deleted head whose row a stored one takes
    plain: list[tuple[int, bytes]] = []  # deleted heads whose rows go
    for key in gone:
        crown = known.get(key)
        if crown is None:  # (unknown: read as it goes)
            found = db.execute(DELETE_HEAD + " RETURNING crown", key).fetchone()
            crown = found[0] if found is not None else 0
        elif key[0] in free:  # (one row per context is taken: a second one goes)
            plain.append(key)
        else:
            free[key[0]] = key[1]
        if crown:
            down[crown] = down.get(crown, 0) + 1
    rows: list[tuple[int, bytes, bytes, int | None]] = []
    crowned: dict[bytes, list[tuple[tuple[int, bytes], bytes]]] = {}  # (origin, sig, path)
    for key, head in stored.items():
        depth = head[_DEPTH_AT] if len(head) > _DEPTH_AT else LEGACY
        if len(head) != _DEPTH_AT + 1 + (0 if depth == LEGACY else depth * HASH_SIZE) or (
                head[_ID_AT:_SIG_AT] != key[1]):
            rows.append((*key, head, 0))  # (not a head as Head.encode writes it)
        elif depth == LEGACY or depth <= CROWN_BELOW:
            rows.append((*key, _stored_head(head), None))
        else:
            shared = head[:KEY_SIZE] + head[_SIG_AT:_DEPTH_AT] + head[_UPPER_AT:]
            group = crowned.get(shared)
            if group is None:
                crowned[shared] = [(key, head)]
            else:
                group.append((key, head))
    crowns: list[tuple[bytes, int]] = []
    for shared, group in crowned.items():
        if len(group) == 1:  # (shared by nothing: the head whole is smaller)
            key, head = group[0]
            rows.append((*key, _stored_head(head), None))
        else:
            crowns.append((shared, len(group)))
    _count_down(db, down)
    if crowns:  # (ids as SQLite would hand them out, one INSERT at a time)
        at = db.execute("SELECT max(id) FROM crowns").fetchone()[0] or 0
        db.executemany("INSERT INTO crowns (id, crown, live) VALUES (?, ?, ?)",
                       [(at + i, Blob(shared), n) for i, (shared, n) in enumerate(crowns, 1)])
        for i, group in enumerate((g for g in crowned.values() if len(g) > 1), at + 1):
            rows += [(*key, head[KEY_SIZE:_ID_AT] + head[_DEPTH_AT + 1:_UPPER_AT], i)
                     for key, head in group]
    renamed: list[tuple[Blob, Blob, int | None, int, Blob]] = []
    added: list[tuple[int, Blob, Blob, int | None]] = []
    for ctx, raw, head, crown in rows:
        old = free.pop(ctx, None)
        if old is None:
            added.append((ctx, Blob(raw), Blob(head), crown))
        else:
            renamed.append((Blob(raw), Blob(head), crown, ctx, Blob(old)))
    plain += free.items()
    if plain:
        db.executemany(DELETE_HEAD, plain)
    db.execute("SAVEPOINT heads")
    try:
        db.executemany(RENAME_HEAD, renamed)
        db.executemany(INSERT_HEAD, added)
    except sqlite3.IntegrityError:  # (a head stored again, which the ledger does not do)
        db.execute("ROLLBACK TO heads")
        db.executemany(DELETE_HEAD, [(ctx, old) for _, _, _, ctx, old in renamed])
        # (each replaces the one stored; those deleted above are gone and counted already)
        _delete_heads(db, [row[:2] for row in rows if row[:2] not in gone], known)
        db.executemany(INSERT_HEAD, rows)
    db.execute("RELEASE heads")
    return list(gone), {(ctx, raw): crown or 0 for ctx, raw, _, crown in rows}


# why: a trigger counted a crown down per deleted head (an UPDATE and a DELETE of ``crowns``
# each): spread over 10,000 contexts every commit deletes ~128 superseded heads, and the
# DELETE cost 7.4-7.9 us per entry with the trigger, 1.6-2.3 without it (in-process ingest of
# 100k over 10,000 contexts). The heads of one commit were mostly stored by one earlier commit,
# so they count down one crown or two; the crown of a head this open stored is known
# (``SqliteStore._crown_of``), any other is read as it is deleted.
def _delete_heads(db: sqlite3.Connection, keys: Sequence[tuple[int, bytes]],
                  known: Mapping[tuple[int, bytes], int]) -> None:
    """Inside a transaction: delete the heads (context id, head id) ``keys``, count each one's
    crown down by the heads deleted, and delete the crowns none uses any more."""
    if not keys:
        return
    down: dict[int, int] = {}
    plain: list[tuple[int, bytes]] = []
    for key in dict.fromkeys(keys):
        crown = known.get(key)
        if crown is None:  # (unknown: read as it goes)
            found = db.execute(DELETE_HEAD + " RETURNING crown", key).fetchone()
            crown = found[0] if found is not None else 0
        else:
            plain.append(key)
        if crown:
            down[crown] = down.get(crown, 0) + 1
    db.executemany(DELETE_HEAD, plain)
    _count_down(db, down)


def _count_down(db: sqlite3.Connection, down: Mapping[int, int]) -> None:
    """Inside a transaction: count each crown down by the heads deleted that used it
    (``down``), and delete those none uses any more."""
    if down:
        db.executemany("UPDATE crowns SET live = live - ? WHERE id = ?",
                       [(n, crown) for crown, n in down.items()])
        db.executemany("DELETE FROM crowns WHERE id = ? AND live <= 0", [(c,) for c in down])


class Salvage:
    """Reads of a damaged store (``repair``, on a copy) of any format this version reads, a row
    at a time: each read raises sqlite3.DatabaseError where the damage is."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        try:
            self.format = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError:
            self.format = STORE_FORMAT  # (an unreadable header: reads say where the damage is)
        self._names: dict[int, str] = {}

    def row(self, rowid: int) -> tuple[str, bytes] | None:
        """The ``updates`` row ``rowid``: (its context, its bundle), None if there is none."""
        if self.format < 3:
            row = self.conn.execute("SELECT context, blob FROM updates WHERE id = ?",
                                    (rowid,)).fetchone()
            return None if row is None else (str(row[0]), bytes(row[1]))
        found = self.conn.execute("SELECT ctx, blob, bare FROM updates WHERE id = ?",
                                  (rowid,)).fetchone()
        if found is None:
            return None
        ctx, blob, bare = found
        if ctx not in self._names:
            name = self.conn.execute("SELECT name FROM contexts WHERE id = ?", (ctx,)).fetchone()
            if name is None:
                raise sqlite3.DatabaseError(f"context {ctx} of the row has no name")
            self._names[ctx] = str(name[0])
        return self._names[ctx], _bundle(blob, bare)

    def heads(self, context: str) -> list[bytes]:
        """The heads stored for ``context``."""
        if self.format < 3:
            return [bytes(head) for (head,) in self.conn.execute(
                "SELECT head FROM heads WHERE context = ?", (context,))]
        return _heads_of(self.conn, context)


def _row(blob: bytes) -> tuple[bytes | memoryview, int]:
    """A bundle as a row stores it: (its bytes, bare), without the header when it has no heads
    and no vouchers (``bare`` 1; the rows of older formats that carry heads stay whole)."""
    if type(blob) is bytes and blob.startswith(BARE):  # (anything else goes to SQLite as is)
        return memoryview(blob)[len(BARE):], 1
    return blob, 0


def _bundle(blob: bytes, bare: int) -> bytes:
    """A stored row's bundle."""
    return BARE + blob if bare else bytes(blob)


# A stored head leaves out its entry id (``Head.encode``: origin, chain, seq, the id, the
# signature, a depth byte, the path), the key of its row. A crowned head keeps only chain, seq
# and the lowest CROWN_BELOW hashes of its path; its crown (``crowns``) holds the origin, the
# signature and the rest of the path.
# why: a commit of 128 contexts signs one root over 128 leaves, so each of its heads carried
# the same 64-byte signature and 32-byte origin and a 7-hash path (224 B) whose upper hashes
# it shares with its neighbours: with 10,000 contexts each keeping its tip's head, heads were
# 49 of 391 B per entry. Below CROWN_BELOW levels a group of up to 2^3 heads shares a crown of
# 4 hashes + 96 B; a crown that only one head still uses costs ~3% more than that head whole.
CROWN_BELOW = 3
_ID_AT = KEY_SIZE + 16
_SIG_AT = _ID_AT + ID_SIZE
_DEPTH_AT = _SIG_AT + SIG_SIZE
_UPPER_AT = _DEPTH_AT + 1 + CROWN_BELOW * HASH_SIZE
_CROWN_PATH_AT = KEY_SIZE + SIG_SIZE


def _stored_head(head: bytes) -> bytes:
    return head[:_ID_AT] + head[_ID_AT + ID_SIZE:]


def _head(raw: bytes, stored: bytes) -> bytes:
    return stored[:_ID_AT] + raw + stored[_ID_AT:]


def _migrate(conn: sqlite3.Connection, db: Path) -> None:
    """Rewrite a store of format 0 or 2 (``updates`` rows and heads naming their context,
    ``summaries`` apart) in format 3, in one transaction (a crash leaves the old store whole),
    then give the old tables' pages back (VACUUM). Rows keep their ids and order, and every
    byte a reader sees: ``verify`` checks the result as it checked the old store."""
    if "context" not in {row[1] for row in conn.execute("PRAGMA table_info(updates)")}:
        return  # (a new store, or one of format 3)
    log.warning("%s: rewriting the store in format %d (once)", db, STORE_FORMAT)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, create in _FORMAT_2:  # (a format-0 store may lack the later tables)
            conn.execute(create)
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_2")
        conn.execute("DROP INDEX IF EXISTS updates_by_context")
        for statement in SCHEMA_STATEMENTS:
            conn.execute(statement)
        conn.execute("INSERT INTO contexts (name) SELECT context FROM updates_2 UNION "
                     "SELECT context FROM heads_2 UNION SELECT context FROM summaries_2")
        conn.execute(f"UPDATE contexts SET ({SUMMARY_COLUMNS}) = (SELECT {SUMMARY_COLUMNS} "
                     f"FROM summaries_2 WHERE context = contexts.name) "
                     f"WHERE name IN (SELECT context FROM summaries_2)")
        copy = conn.execute("SELECT u.id, c.id, u.blob FROM updates_2 AS u JOIN contexts AS c "
                            "ON c.name = u.context ORDER BY u.id")
        while rows := copy.fetchmany(256):
            conn.executemany("INSERT INTO updates (id, ctx, blob, bare) VALUES (?, ?, ?, ?)",
                             [(row, ctx, *_row(bytes(blob))) for row, ctx, blob in rows])
        # AUTOINCREMENT: an id the old table handed out is never handed out again
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'updates'")
        conn.execute("UPDATE sqlite_sequence SET name = 'updates' WHERE name = 'updates_2'")
        heads = [(str(context), bytes(raw), bytes(head)) for context, raw, head in
                 conn.execute("SELECT context, id, head FROM heads_2").fetchall()]
        _put_heads(conn, heads, context_ids(conn, [context for context, _, _ in heads]), {})
        for table, _ in _FORMAT_2:
            conn.execute(f"DROP TABLE {table}_2")
        conn.execute(f"PRAGMA user_version = {STORE_FORMAT}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("VACUUM")


# The tables of format 2 that format 3 replaces, as format 2 created them.
_FORMAT_2 = [
    ("updates", "CREATE TABLE IF NOT EXISTS updates (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "context TEXT NOT NULL, blob BLOB NOT NULL)"),
    ("heads", "CREATE TABLE IF NOT EXISTS heads (context TEXT NOT NULL, id BLOB NOT NULL, "
              "head BLOB NOT NULL, PRIMARY KEY (context, id)) WITHOUT ROWID"),
    ("summaries", "CREATE TABLE IF NOT EXISTS summaries (context TEXT PRIMARY KEY, root BLOB "
                  "NOT NULL, entries INTEGER NOT NULL, state_vector BLOB NOT NULL, "
                  "max_lamport INTEGER NOT NULL, forks INTEGER NOT NULL, stored INTEGER NOT NULL)"),
]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_vanished(path: Path) -> None:
    """StoreDamagedError when the database is gone but its WAL files are still there."""
    left = [DB_NAME + s for s in ("-wal", "-shm") if (path / (DB_NAME + s)).exists()]
    if left and not (path / DB_NAME).exists():
        raise StoreDamagedError(
            f"{path / DB_NAME} is missing but {' and '.join(left)} are still there: the store "
            f"vanished; refusing to start a new node in its place (restore it, or move the "
            f"directory away)")


def _create(db: Path) -> None:
    """A new, empty database, built beside ``db`` and renamed into place (never 0 bytes)."""
    tmp = db.with_name(DB_NAME + ".new")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # (before WAL: fixed from then on)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA + MARK)
    finally:
        conn.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, db)
    fsync_dir(db.parent)


def check_format(conn: sqlite3.Connection, db: Path) -> None:
    """StoreError unless ``db`` is a p2p-ledger store (or an unmarked one) of a format this
    version reads; run before anything is created or written in it."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    if app not in (0, APPLICATION_ID):
        raise StoreError(f"{db} is an SQLite database of another application "
                         f"(application_id {app:#x}), not a p2p-ledger store")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > STORE_FORMAT:
        raise StoreError(
            f"{db} holds store format {version}, written by a newer p2p-ledger; this version "
            f"reads formats up to {STORE_FORMAT}: upgrade p2p-ledger (the store is untouched)")


def _named(db: Path, exc: sqlite3.DatabaseError) -> StoreError:
    if "not a database" in str(exc):
        return StoreError(f"{db} is not a p2p-ledger SQLite database ({exc})")
    return StoreDamagedError(f"{db} is damaged ({exc}): " + REPAIR_HINT.format(dir=db.parent))
