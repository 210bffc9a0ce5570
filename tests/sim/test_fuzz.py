"""The fuzzer: hundreds of random fault schedules hold every invariant; failures reproduce."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_ledger.core.protocol import PeerSession
from p2p_ledger.sim import load_scenario, run_scenario
from p2p_ledger.sim.fuzz import fuzz, random_scenario, run_seeds


@pytest.mark.slow
def test_fuzz_hundreds_of_runs_at_users_sizes(tmp_path: Path) -> None:
    # Up to 7 nodes and 120 simulated seconds per run (the default, 4 nodes / 40 s, never
    # reached the losses of issue 13); every commit of every run is checked for durability.
    # why: 1,000 runs took 267 s of a 10.8-minute CI suite; 300 keep it in budget (the whole
    # suite 6:57 with 200 on a nearly idle 2-core machine, 200 runs 30 s of it), and the
    # release soak (README) runs 20,000.
    runs = 300
    result = fuzz(runs, seed=2026, max_nodes=7, duration_s=120.0, out_dir=tmp_path, workers=2)
    print(f"fuzz: {runs} runs, base seed 2026, {len(result.failures)} failed, "
          f"{result.wall_s:.0f}s ({result.runs_per_minute:.0f} runs/min)")
    problems = [(seed, report.failed_checks(), str(path)) for seed, report, path in
                result.failures]
    assert not problems
    assert result.runs == runs


def test_workers_do_not_change_the_results() -> None:
    def outcomes(workers: int) -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        fuzz(4, seed=5, max_nodes=3, duration_s=10.0, workers=workers,
             on_run=lambda i, seed, report: seen.append((seed, report.trace_digest)))
        return seen

    assert outcomes(2) == outcomes(1)


def test_generated_scenarios_use_both_transports() -> None:
    transports = {load_scenario(random_scenario(seed)).net.transport
                  for seed in run_seeds(0, 40)}
    assert transports == {"tcp", "datagram"}


def test_generated_scenarios_are_valid_and_varied() -> None:
    kinds: set[str] = set()
    for seed in run_seeds(0, 40):
        scenario = load_scenario(random_scenario(seed))
        kinds |= {s.kind for s in scenario.steps}
        assert scenario.steps[-1].at == 40.0
    assert kinds >= {"append", "writers", "partition", "cut", "heal", "crash", "restart", "link",
                     "tail_loss", "byzantine"}


def test_generated_byzantine_members_use_every_attack() -> None:
    attacks = {step["byzantine"]["attack"] for seed in run_seeds(0, 80)
               for step in random_scenario(seed)["steps"] if "byzantine" in step}
    assert attacks == {"forge", "squat", "lamport", "equivocate"}


def test_a_short_fuzz_session_with_hostile_members_and_tail_losses_holds(tmp_path: Path) -> None:
    """Every run of a short session (seed printed) holds every check; the byzantine and
    tail-loss faults are drawn in it."""
    seeds: list[int] = []
    result = fuzz(12, seed=8, max_nodes=4, duration_s=20.0, out_dir=tmp_path,
                  on_run=lambda i, seed, report: seeds.append(seed))
    print(f"fuzz: 12 runs, base seed 8, {len(result.failures)} failed")
    kinds = {s.kind for seed in seeds for s in load_scenario(
        random_scenario(seed, 4, 20.0)).steps}
    assert {"tail_loss", "byzantine"} <= kinds
    assert not [(seed, report.failed_checks(), str(path)) for seed, report, path in
                result.failures]


def test_failure_writes_a_reproducing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PeerSession, "push", lambda self, context, update, own=False: None)
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


def test_evicting_every_context_not_in_use_changes_nothing() -> None:
    """The same random schedules with a memory budget of 1 byte (each ledger keeps only the
    context in use loaded, every other one is reloaded from MemoryStorage when needed) pass
    every invariant and produce the very same trace."""
    from p2p_ledger.sim.runner import ScenarioRun

    for seed in run_seeds(7, 4):
        print("fuzz seed", seed)
        unbounded = ScenarioRun(load_scenario(random_scenario(seed))).run()
        tiny = ScenarioRun(load_scenario(random_scenario(seed)), memory_budget=1).run()
        assert not tiny.failed_checks(), (seed, tiny.failed_checks())
        assert tiny.trace_digest == unbounded.trace_digest, seed


def test_answers_in_parts_hold_every_invariant_whatever_is_loaded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Random schedules (several writers, late pushes, partitions, crashes, tail losses,
    hostile members) with every diff answered from the stored rows in parts of ~300 B (one
    or two entries): every invariant holds, many answers stop short (the receivers ask for the
    rest), and the trace is the same with a memory budget of 1 byte (an answer depends on
    what is stored and on the peer's state vector, never on what is loaded)."""
    from p2p_ledger.core import ledger as ledger_module
    from p2p_ledger.sim.runner import ScenarioRun

    monkeypatch.setattr(ledger_module, "PART_BYTES", 300)
    monkeypatch.setattr(ledger_module, "ROWS_ONLY", 0)
    partial = 0
    diff = ledger_module.Ledger.bundle_diff

    def counting(self: ledger_module.Ledger, context: str, sv: bytes | None) -> bytes | None:
        nonlocal partial
        out = diff(self, context, sv)
        partial += self.last_diff_partial
        return out

    monkeypatch.setattr(ledger_module.Ledger, "bundle_diff", counting)
    for seed in run_seeds(11, 6):
        print("fuzz seed", seed)
        unbounded = ScenarioRun(load_scenario(random_scenario(seed))).run()
        assert not unbounded.failed_checks(), (seed, unbounded.failed_checks())
        tiny = ScenarioRun(load_scenario(random_scenario(seed)), memory_budget=1).run()
        assert tiny.trace_digest == unbounded.trace_digest, seed
    print("answers that stopped short:", partial)
    assert partial > 3


def test_a_run_is_not_converged_while_a_node_holds_rows_to_commit() -> None:
    """Regression (fuzz seed 2480014448 at the users' sizes): the run ended as converged while
    n5 held a hostile member's 11 entries received but staged for the group commit; the
    checks, reading n5, committed them, and roots differed with nobody left to send them on.
    Convergence now waits for every scheduled commit."""
    report = run_scenario(load_scenario(random_scenario(2480014448, 7, 120.0)))
    assert not report.failed_checks(), report.failed_checks()
