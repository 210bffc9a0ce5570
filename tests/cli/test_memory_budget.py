"""node --memory-budget: sizes in bytes, decimal and binary units; a bad size is a usage error."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from p2p_ledger.cli.main import byte_size


@pytest.mark.parametrize(("text", "expected"), [
    ("300000000", 300_000_000), ("256MB", 256_000_000), ("256MiB", 256 * 2**20),
    ("256M", 256 * 2**20), ("1.5GiB", int(1.5 * 2**30)), ("64kb", 64_000), ("2G", 2 * 2**30),
])
def test_sizes(text: str, expected: int) -> None:
    assert byte_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12XB", "-5MB", "0", "nanGB", "1e400"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        byte_size(text)


def test_a_bad_budget_is_a_one_line_usage_error(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "p2p_ledger", "node", "--data",
                             str(tmp_path / "d"), "--memory-budget", "lots"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--memory-budget" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "d").exists()
