"""The ``cluster`` fixture: a ``p2p_ledger.testing.LocalCluster`` in the test's tmp dir, every
process it started SIGKILLed in the finalizer, its log directory printed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2p_ledger.testing import LocalCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    started = time.monotonic()
    c = LocalCluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
        print(f"cluster of {len(c.nodes)} node(s) ran {time.monotonic() - started:.1f}s; "
              f"logs in {tmp_path / 'logs'}")
