"""Shared helpers for the simulator tests: small scenario dicts and the shipped files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.toml"))


def small_scenario(**overrides: Any) -> dict[str, Any]:
    """Three nodes, a partition with writes on both sides, a heal."""
    data: dict[str, Any] = {
        "nodes": ["a", "b", "c"],
        "topology": "full",
        "scenario": {"name": "small", "seed": 11},
        "links": {"latency_ms": 5, "jitter_ms": 2},
        "steps": [
            {"at": 1, "append": {"node": "a", "context": "ctx", "count": 3}},
            {"at": 2, "partition": [["a"], ["b", "c"]]},
            {"at": 3, "append": {"node": "a", "context": "ctx", "count": 2}},
            {"at": 3, "writers": {"nodes": ["b", "c"], "context": "ctx", "rate_per_s": 2,
                                  "duration_s": 5}},
            {"at": 12, "heal": True},
        ],
        "checks": {"converged_within_s": 30},
    }
    data.update(overrides)
    return data
