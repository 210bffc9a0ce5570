"""Epidemic forwarding in the simulator: a sparse random graph with lossy links delivers every
write to every node within a small multiple of (hops × link latency), in virtual time."""

from __future__ import annotations

from typing import Any

from p2p_ledger.cli.bench_sim import dissemination

# The bound: every write reaches every node within K × (most hops × 50 ms).
# why: the largest stretch of a run is chaotic in its timing (a 1 ms change anywhere draws a
# different run): over seeds 1-8 it was 3.8-6.1 with forwarding (7.2 once with a one-pass
# commit gather) and 37-50 without; K = 8 keeps that gap on both sides.
K = 8


def _run(forward: bool) -> dict[str, Any]:
    print("seed 5")
    return dissemination(nodes=12, latency_ms=50.0, jitter_ms=10.0, rate_per_s=5.0,
                         duration_s=4.0, seed=5, topology="random", loss=0.10, warm_s=4.0,
                         config={"forward": forward})


def test_sparse_lossy_graph_delivers_within_a_multiple_of_the_hops() -> None:
    d = _run(forward=True)
    assert d["appends"] and d["complete"] == d["appends"]  # every write reached every node
    assert max(d["stretch"]) <= K


def test_without_forwarding_the_same_run_misses_the_bound() -> None:
    """The bound is not vacuous: direct pushes and anti-entropy alone take many times longer."""
    d = _run(forward=False)
    assert max(d["stretch"]) > K


def test_each_origin_s_pushes_settle_on_a_tree() -> None:
    """After 30 s of the same load every origin has written and learned its tree: each append
    then crosses exactly nodes - 1 links (no copies, no PRUNE), still within the bound. During
    the first seconds (each origin's first push floods the graph's cycles) it costs more."""
    print("seed 5")
    steady = dissemination(nodes=12, latency_ms=50.0, jitter_ms=10.0, rate_per_s=5.0,
                           duration_s=4.0, seed=5, topology="random", warm_s=30.0)
    assert steady["appends"] and steady["complete"] == steady["appends"]
    # (exactly 11 held for this seed only by luck: seeds 1-6 gave 11.0-11.07 UPDATEs per append
    # on main before protocol 8, and 11.0-11.1 after it; a copy now and then, under 1%)
    assert 11 <= steady["per_append_UPDATE"] <= 11 * 1.01
    assert "per_append_PRUNE" not in steady or steady["per_append_PRUNE"] == 0
    assert max(steady["stretch"]) <= 2
