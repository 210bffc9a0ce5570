"""Behaviours of the node core that the simulator found; each test states what should hold.

``test_dropped_peer_is_relearned``: a dropped peer that a live peer advertises again is retried.
"""

from __future__ import annotations

from p2p_ledger.sim import run_scenario

from .helpers import small_scenario


def test_dropped_peer_is_relearned() -> None:
    report = run_scenario({
        "nodes": ["h", "a", "b"], "topology": "star", "hub": "h",
        "scenario": {"name": "relearn", "seed": 3},
        "config": {"drop_after": 20.0},
        "steps": [{"at": 5, "partition": [["a"], ["h", "b"]]},  # a and b drop each other
                  {"at": 65, "heal": True},  # both reconnect to the hub, its PEERS name them
                  {"at": 100, "crash": "h"},
                  {"at": 101, "append": {"node": "a", "context": "x"}},
                  {"at": 101, "append": {"node": "b", "context": "x"}}],
        "checks": {"converged_within_s": 30},
    })
    assert report.passed, report.failed_checks()


def test_seed_down_for_hours_does_not_overflow_backoff() -> None:
    # Found by offline_agent_day: 2 ** failures overflowed float after ~1000 failed redials.
    # Two nodes (no gossip while apart), quick retries: > 1100 failed dials in 5000 s.
    data = small_scenario(nodes=["a", "b"], config={"backoff_max": 1.0},
                          steps=[{"at": 1, "append": {"node": "a", "context": "x"}},
                                 {"at": 2, "partition": [["a"], ["b"]]},
                                 {"at": 3, "append": {"node": "b", "context": "x"}},
                                 {"at": 5000, "heal": True}],
                          checks={"converged_within_s": 60})
    report = run_scenario(data)
    assert report.passed, [(c.name, c.detail) for c in report.checks if not c.passed]


def test_timers_fire_exactly_at_their_deadline() -> None:
    # Found by the no_stuck_timers check: tick() compared `now - last_heard >= idle_timeout`
    # while next_deadline() returned `last_heard + idle_timeout`; float rounding made a tick at
    # that deadline a no-op, which would spin a driver (or an autojumping MockClock).
    for seed in range(3):
        report = run_scenario(small_scenario(), seed=seed)
        assert "no_stuck_timers" not in report.failed_checks()
