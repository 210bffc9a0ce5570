"""What the ledger needs from durable storage, and an in-memory implementation.

The ledger calls storage synchronously: when ``commit`` returns, the updates are durable. The
runtime uses SQLite (``store.SqliteStore``); the simulator and unit tests use ``MemoryStorage``,
whose ``commit`` is durable by definition (a simulated crash keeps exactly what was committed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Storage(Protocol):
    def load(self) -> dict[str, list[bytes]]:
        """Every context's stored Yjs updates, in commit order."""
        ...

    def commit(self, updates: Sequence[tuple[str, bytes]]) -> None:
        """Append (context, update) pairs in one durable transaction."""
        ...

    def replace_context(self, context: str, state: bytes) -> None:
        """Atomically replace a context's update history by one state (compaction)."""
        ...

    def get_meta(self, name: str) -> str | None: ...

    def set_meta(self, name: str, value: str) -> None: ...

    def close(self) -> None: ...


class MemoryStorage:
    """Durable for the life of the object: what a simulated node keeps across a crash."""

    def __init__(self) -> None:
        self.updates: dict[str, list[bytes]] = {}
        self.meta: dict[str, str] = {}
        self.commits = 0

    def load(self) -> dict[str, list[bytes]]:
        return {name: list(blobs) for name, blobs in self.updates.items()}

    def commit(self, updates: Sequence[tuple[str, bytes]]) -> None:
        for context, blob in updates:
            self.updates.setdefault(context, []).append(blob)
        self.commits += 1

    def replace_context(self, context: str, state: bytes) -> None:
        self.updates[context] = [state]

    def get_meta(self, name: str) -> str | None:
        return self.meta.get(name)

    def set_meta(self, name: str, value: str) -> None:
        self.meta[name] = value

    def close(self) -> None:
        pass
