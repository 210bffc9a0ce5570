"""Fixtures for the protocol tests (helpers live in ``helpers.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[False, True], ids=["a-first", "b-first"])
def swapped(request: pytest.FixtureRequest) -> bool:
    """Run a SessionPair test with the sessions' roles swapped too."""
    return bool(request.param)
