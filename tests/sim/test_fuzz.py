"""The fuzzer: hundreds of random fault schedules hold every invariant; failures reproduce."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_ledger.core.protocol import PeerSession
from p2p_ledger.sim import load_scenario, run_scenario
from p2p_ledger.sim.fuzz import fuzz, random_scenario, run_seeds


@pytest.mark.slow
def test_fuzz_hundreds_of_runs(tmp_path: Path) -> None:
    result = fuzz(300, seed=2026, out_dir=tmp_path)
    problems = [(seed, report.failed_checks(), str(path)) for seed, report, path in
                result.failures]
    assert not problems
    assert result.runs == 300


def test_generated_scenarios_are_valid_and_varied() -> None:
    kinds: set[str] = set()
    for seed in run_seeds(0, 40):
        scenario = load_scenario(random_scenario(seed))
        kinds |= {s.kind for s in scenario.steps}
        assert scenario.steps[-1].at == 40.0
    assert kinds >= {"append", "writers", "partition", "cut", "heal", "crash", "restart", "link"}


def test_failure_writes_a_reproducing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PeerSession, "push", lambda self, context, update: None)
    monkeypatch.setattr(PeerSession, "send_root", lambda self: None)
    result = fuzz(3, seed=1, out_dir=tmp_path)
    failing = [(seed, report, path) for seed, report, path in result.failures
               if report.acknowledged]
    assert failing
    seed, report, path = failing[0]
    assert path is not None and path.name == f"fuzz-{seed}.toml"
    assert path.read_text().startswith("# ")
    again = run_scenario(path)
    assert again.trace_digest == report.trace_digest
    assert again.failed_checks() == report.failed_checks()
