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
    for phase in ("== 1. start", "== 2. write", "== 3. SIGKILL", "== 4. restart",
                  "== 5. partition", "== 6. check", "== summary"):
        assert phase in out, out
    # 3 x 40 written together, 2 x 40 with one node down, 40 + 2 x 40 during the partition
    assert "320 acknowledged entries in 4 contexts, every one on every node" in out, out
    assert "roots differ: n1 " in out and "converged after the heal" in out, out
    data_root = out.splitlines()[0].rsplit(" ", 1)[1]
    assert data_root.startswith("/") and not os.path.exists(data_root)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert data_root not in ps  # no node process left behind

