"""Group commit of received updates in the simulator, driven as the runtime drives it: a frame
that staged rows has its answer and forwards carried out only after the commit
(``NodeCore.take_actions`` commits first), and a crash between staging and commit loses the
staged updates but nothing acknowledged: the peers still hold them and send them again."""

from __future__ import annotations

from typing import Any

import pytest

from p2p_ledger.core.node import NodeCore
from p2p_ledger.sim import load_scenario
from p2p_ledger.sim.cluster import Cluster
from p2p_ledger.sim.runner import ScenarioRun

from .helpers import small_scenario


def _crash_in_the_gather_window(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The first time b has received updates staged, it crashes before the commit and is
    restarted a second later. Returns what was staged when it crashed."""
    seen: dict[str, Any] = {}
    gather = Cluster._gather

    def crashing(self: Cluster, arg: tuple[str, int, int, int]) -> None:
        name = arg[0]
        ledger = self.nodes[name].ledger
        if name == "b" and not seen and ledger is not None and ledger.has_staged():
            seen["rows"] = ledger.staged_rows()
            seen["ids"] = {e.id for _, entries in ledger._held for e in entries}
            self.crash("b")
            self.loop.at(self.loop.now + 10**9, lambda _: self.start("b"), None)
            return
        gather(self, arg)

    monkeypatch.setattr(Cluster, "_gather", crashing)
    return seen


def test_a_crash_between_staging_and_commit_loses_nothing_acknowledged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _crash_in_the_gather_window(monkeypatch)
    run = ScenarioRun(load_scenario(small_scenario()))
    report = run.run()
    assert seen["rows"] > 0 and seen["ids"], "b crashed with received updates staged"
    assert report.passed, [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    b = run.cluster.nodes["b"].ledger
    assert b is not None
    assert seen["ids"] <= {e.id for e in b.contexts["ctx"].ordered}  # sent again after restart


def test_actions_released_before_the_commit_fail_the_durability_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Teeth: a core that hands out its actions without committing what it staged (a forward
    or an answer built from updates that are not durable yet) fails ``durable_at_every_commit``."""

    def take_actions_uncommitted(self: NodeCore) -> list[Any]:
        actions, self._actions = self._actions, []
        return actions

    monkeypatch.setattr(NodeCore, "take_actions", take_actions_uncommitted)
    report = ScenarioRun(load_scenario(small_scenario())).run()
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "durable_at_every_commit" in failed
    assert "uncommitted" in failed["durable_at_every_commit"]
