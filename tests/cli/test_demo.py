"""`p2p-ledger demo` runs its whole story against real processes and cleans up after itself."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import cli


@pytest.mark.slow
def test_demo_runs_to_completion_and_cleans_up() -> None:
    result = cli("demo", "--entries", "40", timeout=90)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr
    for phase in ("== 1. start", "== 2. write", "== 3. SIGKILL", "== 4. restart", "== 5. check",
                  "== summary"):
        assert phase in out, out
    assert "200 acknowledged entries in 4 contexts, every one on every node" in out, out
    data_root = out.splitlines()[0].rsplit(" ", 1)[1]
    assert data_root.startswith("/") and not os.path.exists(data_root)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert data_root not in ps  # no node process left behind

