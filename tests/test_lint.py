"""Static checks run with the suite, so the one test command also gates style and types."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The sans-I/O core: everything that decides. It must type-check strictly.
# The folder is the rule: every module in p2p_ledger/core/ is pure.
PURE_CORE = sorted(p.name for p in (ROOT / "p2p_ledger" / "core").glob("*.py"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_ruff_clean() -> None:
    result = _run("ruff", "check", "p2p_ledger", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_pure_core() -> None:
    result = _run("mypy", "--strict", *(f"p2p_ledger/core/{name}" for name in PURE_CORE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_pure_core_does_no_io() -> None:
    """The core must run unchanged in the simulator: no sockets, files, threads or clocks."""
    forbidden = re.compile(r"^\s*(import|from) (websockets|sqlite3|socket|trio|threading)\b"
                           r"|(?<![.\w])(?<!def )open\(", re.M)
    for name in PURE_CORE:
        text = (ROOT / "p2p_ledger" / "core" / name).read_text()
        hits = [m.group(0).strip() for m in forbidden.finditer(text)]
        assert not hits, f"{name} does I/O: {hits}"
