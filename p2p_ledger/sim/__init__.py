"""Deterministic simulator: many real node cores on a simulated network, in one process.

``loop`` (virtual clock, event heap, trace digest) → ``network`` (links, faults, partitions) →
``cluster`` (nodes driven like the runtime drives them) → ``scenario`` (TOML files) →
``runner`` (run + invariant checks → ``Report``) → ``fuzz``, ``plot``, ``bench``, ``cli``.
"""

from .runner import CheckResult, Report, ScenarioRun, run_scenario
from .scenario import Scenario, ScenarioError, load_scenario, to_toml

__all__ = ["CheckResult", "Report", "Scenario", "ScenarioError", "ScenarioRun", "load_scenario",
           "run_scenario", "to_toml"]
