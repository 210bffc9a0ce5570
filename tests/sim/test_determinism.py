"""Same seed and scenario → the same event trace, byte for byte; another seed → another run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from p2p_ledger.sim import run_scenario, to_toml

from .helpers import SCENARIOS, small_scenario


def test_same_seed_same_digest() -> None:
    first = run_scenario(small_scenario(), keep_trace=True)
    second = run_scenario(small_scenario(), keep_trace=True)
    assert first.trace == second.trace
    assert first.trace_digest == second.trace_digest
    assert (first.messages, first.bytes, first.acknowledged) == \
        (second.messages, second.bytes, second.acknowledged)


def test_different_seeds_different_digests() -> None:
    digests = {run_scenario(small_scenario(), seed=seed).trace_digest for seed in range(4)}
    assert len(digests) == 4


def test_seed_override_matches_file_seed() -> None:
    data = small_scenario()
    data["scenario"] = {"name": "small", "seed": 99}
    assert run_scenario(data).trace_digest == run_scenario(small_scenario(), seed=99).trace_digest


def test_digest_does_not_depend_on_hash_randomisation(tmp_path: Path) -> None:
    """Set iteration order changes with PYTHONHASHSEED; the trace must not."""
    data = small_scenario(links={"latency_ms": 5, "jitter_ms": 5, "loss": 0.05,
                                 "duplicate": 0.05, "reorder": 0.1})
    path = tmp_path / "lossy.toml"
    path.write_text(to_toml(data))
    digests = {run_scenario(data).trace_digest}
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-m", "p2p_ledger", "scenario", "run", "--json",
                              str(path)],
                             capture_output=True, text=True, env=env, timeout=120, check=True)
        digests.add(json.loads(out.stdout)["trace_digest"])
    assert len(digests) == 1


def test_shipped_digest_is_stable_within_a_process() -> None:
    path = SCENARIOS / "crash_during_writes.toml"
    assert run_scenario(path).trace_digest == run_scenario(path).trace_digest
