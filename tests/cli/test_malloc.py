"""``config.tune_malloc``: a node process keeps freed large buffers instead of faulting new
memory in for every one (what it buys is measured by ``bench --only sync``, "Sync (e)")."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A child process: copy a 10 MB buffer 20 times (two large blocks alive at once, as a transfer
# holds them) and print the page faults per copy, after tune_malloc or not.
_CHILD = r"""
import os, resource, sys
from p2p_ledger.cli.config import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tune" else False
b = os.urandom(10_000_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    x = b[1:]
    y = b"".join([b"-", x])
    del x, y
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


def _faults_per_copy(mode: str, **env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_a_tuned_process_reuses_large_blocks_instead_of_faulting_them_in() -> None:
    tuned, faults = _faults_per_copy("tune")
    untuned, untuned_faults = _faults_per_copy("plain")
    assert (tuned, untuned) == ("True", "False")
    # a 10 MB block is 2,442 pages: without the setting each copy faults (nearly) all of them
    assert untuned_faults > 1000
    assert faults < 300


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_the_environment_wins_over_tune_malloc() -> None:
    tuned, _ = _faults_per_copy("tune", MALLOC_TRIM_THRESHOLD_="0")
    assert tuned == "False"
