"""SQLite storage (stdlib, WAL): the runtime's durable ``Storage``.

One row per committed Yjs update; a commit is one SQLite transaction, so concurrent appends that
the ledger batches share one fsync (group commit). A lock file with ``flock`` keeps a second
process out of the same data directory (SQLite itself would let both in and interleave).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import StoreError, StoreLockedError

SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    context TEXT NOT NULL,
    blob BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_context ON updates (context, id);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SqliteStore:
    def __init__(self, data_dir: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        self.path = Path(data_dir)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"data directory {self.path} is a file, not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreLockedError(
                f"data directory {self.path} is in use by another p2p-ledger process"
            ) from None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per commit().
            self.db = sqlite3.connect(self.path / "ledger.sqlite3", isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns (survives power loss, not just kill -9).
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.executescript(SCHEMA)
        except BaseException as exc:
            # Not a database (or unreadable): release the lock so the caller can report it.
            os.close(self._lock_fd)
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"{self.path / 'ledger.sqlite3'} is not a p2p-ledger SQLite "
                                 f"database ({exc})") from None
            raise

    def load(self) -> dict[str, list[bytes]]:
        out: dict[str, list[bytes]] = {}
        for context, blob in self.db.execute("SELECT context, blob FROM updates ORDER BY id"):
            out.setdefault(context, []).append(bytes(blob))
        return out

    def commit(self, updates: Sequence[tuple[str, bytes]]) -> None:
        if not updates:
            return
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT INTO updates (context, blob) VALUES (?, ?)", updates)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def replace_context(self, context: str, state: bytes) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.execute("DELETE FROM updates WHERE context = ?", (context,))
            self.db.execute("INSERT INTO updates (context, blob) VALUES (?, ?)", (context, state))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get_meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def close(self) -> None:
        self.db.close()
        os.close(self._lock_fd)
