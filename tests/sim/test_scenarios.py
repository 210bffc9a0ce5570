"""Every shipped scenario passes (its speed is in ``p2p-ledger scenario bench``); the fuzzer's
TOML writer round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_ledger.sim import load_scenario, run_scenario, to_toml
from p2p_ledger.sim.fuzz import random_scenario

from .helpers import SHIPPED, small_scenario

EXPECTED = {"split_brain", "flapping_link", "crash_during_writes", "offline_agent_day",
            "three_way_partition", "star_hub_loss", "lossy_network", "rolling_partitions_25",
            "byzantine_member", "tail_loss"}


def test_all_scenarios_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= EXPECTED


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenario_passes(path: Path) -> None:
    report = run_scenario(path)
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert report.passed, failed
    assert report.lost == 0
    assert report.acknowledged > 0
    assert report.converged_after_s is not None
    assert {c.name for c in report.checks} >= {
        "converged_within_s", "no_acknowledged_loss", "same_order", "same_root",
        "watchers_exactly_once", "no_stuck_timers", "no_errors"}


def test_small_scenario_reports_traffic() -> None:
    report = run_scenario(small_scenario())
    assert report.passed, report.checks
    assert report.messages > 0 and report.bytes > report.messages
    assert report.by_type["HELLO"] >= 6  # both ends of three links at least
    assert report.acknowledged >= 5  # the two appends, plus the writers


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_toml_round_trip_reproduces_a_run(seed: int, tmp_path: Path) -> None:
    data = random_scenario(seed)
    path = tmp_path / "s.toml"
    path.write_text(to_toml(data))
    assert load_scenario(path).raw == data
    assert run_scenario(path).trace_digest == run_scenario(data).trace_digest
