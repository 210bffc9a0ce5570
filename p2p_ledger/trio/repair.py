"""Repair a damaged store: keep every stored update that can still be read and verified, drop
the rest, so the node can start again and fetch what was dropped from its peers.

Theory of operation
-------------------
``repair(data_dir)`` works on a STOPPED node's data directory (it takes the same lock):

1. Rows are salvaged from a copy of the damaged database (and its WAL) one at a time, by rowid,
   so a lost page costs only the rows on it (a lost page of ``contexts``, the rows of the
   contexts it names; ``store.Salvage`` reads every store format this version reads): the
   ``meta`` table (node id and the rest), then every ``updates`` row up to the largest id
   SQLite ever handed out (``sqlite_sequence``; a scan's end when that is unreadable).
   Then each context's stored heads (``heads``), a context at a time.
2. Every salvaged update is checked as an update from a peer would be (the grow-only gate,
   content ids, limits, context, the signatures of heads it carries): what fails is dropped.
   Then each context's updates are authenticated together with its salvaged heads (rows carry
   no heads: an entry is vouched for by its successor, found in a later row, or by a stored
   head of a chain tip or anchor): an update holding an entry nothing vouches for any more
   (its successor's row, or its head, was lost) is dropped, and so on until every entry left
   is vouched for — so a lost row costs, besides its own entries, at most the ~2 ×
   ``ANCHOR_EVERY`` entries below it on each chain it held. What is left goes through the
   ledger, merged, exactly as a peer's bundle would. An update whose Yjs dependencies were
   lost is kept; Yjs integrates it once a peer supplies what it waits for.
3. The kept rows, in their original order, the heads of their entries and the meta rows (less
   ``instance``: Yjs positions are never reused after a loss) go to a new database, complete
   and fsynced before anything moves. A store with nothing to salvage (not even its meta rows)
   is left exactly as it was.
4. The damaged files (``ledger.sqlite3`` and its ``-wal``/``-shm``, together: a stale WAL next
   to a new database would be replayed into it) move into ``damaged-<time>/`` in the data
   directory (nothing is deleted), and the new database takes their place.

Repair keeps the node's identity. Entries it lost are the node's own only if no peer has them;
whatever a peer holds comes back by anti-entropy as soon as the node runs again.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pycrdt import merge_updates

from ..core.authorship import Authorship, raw_writer
from ..core.bundle import Bundle, decode_bundle, encode_bundle
from ..core.context_log import ARRAY_NAME
from ..core.entry import DEFAULT_LIMITS, ID_SIZE, record_fields
from ..core.errors import LedgerError, StoreDamagedError, StoreError
from ..core.identity import Head
from ..core.ledger import Ledger
from ..core.storage import MemoryStorage
from ..core.yjs import gate_structs
from .store import (
    DB_NAME,
    MARK,
    SCHEMA,
    SUMMARIES_UPTO,
    Salvage,
    SqliteStore,
    check_format,
    fsync_dir,
    write_rows,
)

SCAN_AHEAD = 10_000  # rowids probed past the last readable one when sqlite_sequence is lost


@dataclass
class RepairReport:
    kept: int = 0  # update rows kept
    dropped: int = 0  # rows unreadable or refused by verification
    entries: int = 0
    contexts: int = 0
    damaged_copy: str = ""
    problems: list[str] = field(default_factory=list)  # one line per dropped row (first 20)

    def to_json(self) -> dict[str, object]:
        return {"kept_updates": self.kept, "dropped_updates": self.dropped,
                "entries": self.entries, "contexts": self.contexts,
                "damaged_copy": self.damaged_copy, "problems": self.problems}


def repair(data_dir: str | os.PathLike[str]) -> RepairReport:
    """Rebuild ``data_dir``'s store from what of it still verifies; see the module docstring.
    Nothing moves until the new store is built: a store that cannot be salvaged at all is left
    exactly as it was (and keeps refusing to start)."""
    data = Path(data_dir)
    db = data / DB_NAME
    if not db.is_file():
        raise StoreDamagedError(f"{data} has no {DB_NAME}: nothing to repair")
    # The lock: refuse while a node runs on it (StoreLockedError), hold it while we work.
    lock = SqliteStore.lock(data)
    work = Path(tempfile.mkdtemp(prefix="repair-", dir=data))
    try:
        report = RepairReport()
        meta, rows, heads = _salvage(db, work, report)
        new = _write(work, meta, *_verified(meta, rows, heads, report))
        aside = data / f"damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for suffix in ("", "-wal", "-shm"):  # the WAL goes with its database, never alone
            if (data / (DB_NAME + suffix)).exists():
                os.replace(data / (DB_NAME + suffix), aside / (DB_NAME + suffix))
        os.replace(new, db)
        fsync_dir(data)
        report.damaged_copy = str(aside)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(lock)


def _work_copy(damaged: Path, work_dir: Path) -> Path:
    """A copy of the damaged database (and its WAL) that SQLite will read as far as it goes.

    why: SQLite trusts the page count in the header (bytes 28-31) and calls the whole file
    malformed when the file is shorter, schema included (measured: a 66-page store cut to 39
    pages answered every query, even ``sqlite_master``, with "database disk image is
    malformed"; with the count set to 39, the meta rows and 2 of its 4 update rows read back).
    """
    work = work_dir / "salvage.sqlite3"
    shutil.copyfile(damaged, work)
    wal = damaged.with_name(damaged.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, work.with_name(work.name + "-wal"))
    with open(work, "rb+") as f:
        header = f.read(100)
        if len(header) == 100 and header.startswith(b"SQLite format 3\x00"):
            size = int.from_bytes(header[16:18], "big")
            page = 65536 if size == 1 else size
            pages = -(-os.fstat(f.fileno()).st_size // page)
            f.truncate(pages * page)  # a cut inside a page: pad it with zeros
            f.seek(28)
            f.write(pages.to_bytes(4, "big"))
    return work


def _salvage(path: Path, work_dir: Path, report: RepairReport,
             ) -> tuple[dict[str, str], list[tuple[str, bytes]], dict[str, list[bytes]]]:
    conn = sqlite3.connect(_work_copy(path, work_dir), isolation_level=None)
    try:
        check_format(conn, path)  # a store of a newer format is not ours to rewrite
    except StoreError:
        conn.close()
        raise
    except sqlite3.DatabaseError:
        pass  # an unreadable header: the read of the identity rows below names the damage
    try:
        meta: dict[str, str] = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreDamagedError(f"{path}: not even the node's identity rows can be read "
                                f"({exc}); nothing can be repaired: start a new node in a new "
                                f"data directory") from None
    if "node_id" not in meta:
        conn.close()
        raise StoreDamagedError(f"{path}: the store names no node: nothing to repair")
    try:
        meta.pop("instance", None)  # Yjs positions are never reused after a loss: a new one
        last = _last_id(conn)
        salvage = Salvage(conn)
        rows: list[tuple[str, bytes]] = []
        rowid = 0
        while rowid < last:
            rowid += 1
            try:
                row = salvage.row(rowid)
            except sqlite3.DatabaseError as exc:
                _dropped(report, f"update row {rowid}: unreadable ({exc})")
                continue
            if row is not None:
                rows.append(row)
        heads: dict[str, list[bytes]] = {}
        for context in dict.fromkeys(context for context, _ in rows):
            try:
                heads[context] = salvage.heads(context)
            except sqlite3.DatabaseError as exc:
                _problem(report, f"heads of context {context!r}: unreadable ({exc})")
        return meta, rows, heads
    finally:
        conn.close()


def _last_id(conn: sqlite3.Connection) -> int:
    """The largest rowid ``updates`` ever had, as well as the damaged file still tells it."""
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'updates'").fetchone()
        if row is not None:
            return int(row[0])
    except sqlite3.DatabaseError:
        pass  # why: sqlite_sequence itself is damaged: fall back to scanning the rowids below
    last = 0
    try:
        for (rowid,) in conn.execute("SELECT id FROM updates ORDER BY id"):
            last = int(rowid)
    except sqlite3.DatabaseError:
        pass  # the scan stops at the first lost page: probe on past it
    return last + SCAN_AHEAD


# A salvaged row, checked alone: its bundle and its entries (raw id, raw writer, seq, prev).
_Checked = tuple[Bundle, list[tuple[bytes, bytes, int, bytes]]]


def _verified(meta: dict[str, str], rows: list[tuple[str, bytes]],
              heads: dict[str, list[bytes]], report: RepairReport,
              ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes, bytes]]]:
    """The rows the ledger accepts as it would accept them from a peer, in order, and the
    stored heads (context, raw entry id, head) that name their entries."""
    ledger = Ledger.open(MemoryStorage(), meta["node_id"], "repair")
    numbers: dict[str, list[int]] = {}  # context → its rows' numbers (1-based, store order)
    for number, (context, _) in enumerate(rows, 1):
        numbers.setdefault(context, []).append(number)
    kept: set[int] = set()
    kept_heads = []
    for context, mine in numbers.items():
        sound: dict[int, _Checked] = {}
        for number in mine:
            try:
                sound[number] = _checked(context, rows[number - 1][1])
            except (LedgerError, ValueError) as exc:
                _dropped(report, f"update {number} of context {context!r}: "
                                 f"{type(exc).__name__}: {exc}")
        stored = []
        for blob in heads.get(context, []):
            try:
                head = Head.from_bytes(blob)
                head.verify(context)
            except LedgerError as exc:
                _problem(report, f"a stored head of context {context!r}: {exc}")
                continue
            stored.append(head)
        while unvouched := _unvouched(context, stored, sound.values()):
            for number, (_, entries) in list(sound.items()):
                if any(raw in unvouched for raw, _, _, _ in entries):
                    del sound[number]
                    _dropped(report, f"update {number} of context {context!r}: ForgedEntry: "
                                     f"nothing vouches for its entries any more (the row or "
                                     f"head of a successor was lost)")
        if not sound:
            continue
        held = {raw for _, entries in sound.values() for raw, _, _, _ in entries}
        mine_heads = [h for h in stored if h.entry_id in held]
        try:
            ledger.apply_remote(context, encode_bundle(
                [*mine_heads, *(h for bundle, _ in sound.values() for h in bundle.heads)],
                merge_updates(*(bundle.update for bundle, _ in sound.values()))))
        except (LedgerError, ValueError) as exc:
            for number in sound:
                _dropped(report, f"update {number} of context {context!r}: "
                                 f"{type(exc).__name__}: {exc}")
            continue
        kept |= sound.keys()
        kept_heads += [(context, h.entry_id, h.encode()) for h in mine_heads]
    report.kept = len(kept)
    report.entries = ledger.entry_count()
    report.contexts = len(ledger.contexts)
    return [row for number, row in enumerate(rows, 1) if number in kept], kept_heads


def _checked(context: str, blob: bytes) -> _Checked:
    """A salvaged row checked alone: bundle format, the signatures of the heads it carries (a
    row of an older format), the grow-only gate and every record (content id, canonical form,
    limits, context, Lamport bound). Raises what is wrong."""
    bundle = decode_bundle(blob)
    for head in bundle.heads:
        head.verify(context)
    name = context.encode("utf-8")
    entries = []
    for *_, values in gate_structs(bundle.update, ARRAY_NAME):
        for record in values:
            _, seq, prev, writer = record_fields(record, name, DEFAULT_LIMITS)
            entries.append((record[:ID_SIZE], writer, seq, prev))
    return bundle, entries


def _unvouched(context: str, heads: list[Head], rows: Iterable[_Checked]) -> set[bytes]:
    """The raw ids of the entries of ``rows`` that neither a head (stored, or carried by a row)
    nor an entry above them vouches for (the one rule: ``authorship``)."""
    rows = list(rows)
    rule: Authorship[bytes] = Authorship(context, raw_writer)
    for head in [*heads, *(h for bundle, _ in rows for h in bundle.heads)]:
        rule.head(head)
    seen: set[bytes] = set()
    for _, entries in rows:
        for raw, writer, seq, prev in entries:
            if raw not in seen:  # (an entry stored twice is one entry)
                seen.add(raw)
                rule.entry(raw, writer, seq, prev)
    return set(rule.pending)


def _dropped(report: RepairReport, line: str) -> None:
    report.dropped += 1
    _problem(report, line)


def _problem(report: RepairReport, line: str) -> None:
    if len(report.problems) < 20:
        report.problems.append(line)


def _write(work_dir: Path, meta: dict[str, str], rows: list[tuple[str, bytes]],
           heads: list[tuple[str, bytes, bytes]]) -> Path:
    """The new store, complete and on disk, in ``work_dir`` (moved into place by the caller)."""
    new = work_dir / DB_NAME
    conn = sqlite3.connect(new, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA + MARK)
        conn.execute("BEGIN")
        # Not the old summaries' mark: the new store has none, its first open computes them.
        conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)",
                         sorted((k, v) for k, v in meta.items() if k != SUMMARIES_UPTO))
        write_rows(conn, rows, heads)
        conn.execute("COMMIT")
    finally:
        conn.close()
    with open(new, "rb+") as f:
        os.fsync(f.fileno())
    return new
