"""The checks can fail: break the system on purpose and the runner must say which check broke."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

import pytest

from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import Entry
from p2p_ledger.core.index import EntryIndex
from p2p_ledger.core.ledger import Appended, AppendRequest, Ledger
from p2p_ledger.core.node import NodeCore
from p2p_ledger.core.protocol import PeerSession
from p2p_ledger.sim import run_scenario
from p2p_ledger.sim.cluster import CheckedStorage

from .helpers import small_scenario


def _failed(report: Any) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


def test_no_reconciliation_fails_convergence(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sessions open but never gossip or push: nothing ever moves between nodes.
    monkeypatch.setattr(PeerSession, "send_root", lambda self: None)
    monkeypatch.setattr(PeerSession, "push", lambda self, context, update, own=False: None)
    report = run_scenario(small_scenario())
    assert not report.passed
    assert {"converged_within_s", "same_root", "no_acknowledged_loss"} <= _failed(report)
    assert report.converged_after_s is None
    assert report.lost > 0


def test_uncommitted_appends_fail_no_acknowledged_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    # The append is acknowledged but never reaches storage: a crash must lose it.
    original = Ledger.append

    def append_without_commit(self: Ledger, requests: Sequence[AppendRequest]) -> Appended:
        monkeypatch.setattr(self, "_commit", lambda updates: None)
        try:
            return original(self, requests)
        finally:
            monkeypatch.delattr(self, "_commit")

    monkeypatch.setattr(Ledger, "append", append_without_commit)
    data = small_scenario(steps=[
        {"at": 1, "partition": [["a"], ["b", "c"]]},
        {"at": 2, "append": {"node": "a", "context": "ctx", "count": 4}},
        {"at": 3, "crash": "a"},
        {"at": 4, "restart": "a"},
        {"at": 5, "heal": True},
    ])
    report = run_scenario(data)
    assert "no_acknowledged_loss" in _failed(report)
    assert report.lost == 4
    assert report.acknowledged == 4
    detail = next(c.detail for c in report.checks if c.name == "no_acknowledged_loss")
    assert "gone from its origin" in detail
    assert "durable_at_every_commit" in _failed(report)


def test_updates_stored_one_commit_late_fail_durable_at_every_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each commit stores the previous commit's updates: the end state can look whole, but a
    # crash between two commits would lose what the live ledger already holds (and acknowledged).
    held: dict[int, list[tuple[str, bytes]]] = {}
    original = Ledger._commit

    def commit_late(self: Ledger, updates: list[tuple[str, bytes]]) -> None:
        previous, held[id(self)] = held.get(id(self), []), list(updates)
        if previous:
            original(self, previous)

    monkeypatch.setattr(Ledger, "_commit", commit_late)
    report = run_scenario(small_scenario())
    assert "durable_at_every_commit" in _failed(report)
    detail = next(c.detail for c in report.checks if c.name == "durable_at_every_commit")
    assert "would be gone after a crash" in detail


def test_heads_left_unstored_fail_durable_at_every_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rows carry no heads: a store that keeps the rows but not the heads still rebuilds every
    # entry, but nothing in it proves who wrote them any more.
    original = CheckedStorage.commit

    def commit_without_heads(self: CheckedStorage, updates: Any, summaries: Any = None,
                             heads: Any = (), lamport: Any = None) -> None:
        original(self, updates, summaries, (), lamport)

    monkeypatch.setattr(CheckedStorage, "commit", commit_without_heads)
    report = run_scenario(small_scenario())
    assert "durable_at_every_commit" in _failed(report)
    detail = next(c.detail for c in report.checks if c.name == "durable_at_every_commit")
    assert "verify finds" in detail and "vouches" in detail


def test_rereading_watcher_fails_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A ledger whose cursor never advances hands the watcher the same entries again.
    original = Ledger.get

    def get_without_progress(self: Ledger, context: str, key: str | None = None,
                             after: Cursor | str | None = None,
                             limit: int | None = None) -> tuple[list[Entry], Cursor]:
        entries, _ = original(self, context, key, None, limit)
        return entries, Cursor()

    monkeypatch.setattr(Ledger, "get", get_without_progress)
    report = run_scenario(small_scenario())
    assert _failed(report) == {"watchers_exactly_once"}


def test_arrival_order_fails_same_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # Index entries in arrival order instead of causal order: the sets agree, the order not.
    def place_in_arrival_order(self: EntryIndex, slot: int) -> None:
        self.order = array("I", self.order)  # (a range while slots came in order)
        self.order.append(slot)

    monkeypatch.setattr(EntryIndex, "_place", place_in_arrival_order)
    report = run_scenario(small_scenario())
    assert "same_order" in _failed(report)
    assert "same_root" not in _failed(report)


def test_core_exception_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: PeerSession) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(PeerSession, "send_root", boom)
    report = run_scenario(small_scenario())
    assert not report.passed
    assert _failed(report) == {"no_errors"}
    assert report.error is not None and "RuntimeError: injected" in report.error


def test_deadline_the_tick_ignores_fails_no_stuck_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    # A core whose next_deadline() names a time its tick() has nothing to do at.
    original = NodeCore.next_deadline
    monkeypatch.setattr(NodeCore, "next_deadline", lambda self: min(original(self), 2.0))
    report = run_scenario(small_scenario(steps=[{"at": 3, "append": {"node": "a",
                                                                     "context": "x"}}],
                                         checks={"converged_within_s": 1}))
    assert "no_stuck_timers" in _failed(report)
    detail = next(c.detail for c in report.checks if c.name == "no_stuck_timers")
    assert "first: a at t=2.000000000s" in detail
