"""Fixtures for the core's tests (helpers live in ``helpers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2p_ledger.core.storage import MemoryStorage, Storage
from p2p_ledger.trio.store import SqliteStore


@pytest.fixture(params=[False, True], ids=["a-first", "b-first"])
def swapped(request: pytest.FixtureRequest) -> bool:
    """Run a SessionPair test with the sessions' roles swapped too."""
    return bool(request.param)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """Each store the ledger runs on: MemoryStorage (core, simulator) and SqliteStore (node)."""
    if request.param == "memory":
        yield MemoryStorage()
        return
    store = SqliteStore(tmp_path / "node", synchronous="OFF")
    yield store
    store.close()
