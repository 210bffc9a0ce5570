"""Invalid scenario files fail with one clear message naming the file, step and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2p_ledger.sim import ScenarioError, load_scenario

from .helpers import small_scenario


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(data)
    return str(info.value)


def _with_step(step: dict[str, Any]) -> dict[str, Any]:
    return small_scenario(steps=[step])


@pytest.mark.parametrize(("step", "expected"), [
    ({"at": 3, "partition": [["a", "zz"]]},
     "steps[0] (at = 3) partition[0]: unknown node 'zz' (nodes: a, b, c)"),
    ({"partition": [["a"]]}, "steps[0]: missing field 'at'"),
    ({"at": 1, "heal": True, "crash": "a"}, "give exactly one action"),
    ({"at": 1}, "give exactly one action"),
    ({"at": -1, "heal": True}, "steps[0] at: must be >= 0"),
    ({"at": "soon", "heal": True}, "steps[0] at: expected a number, got 'soon'"),
    ({"at": 1, "explode": True}, "unknown field 'explode'"),
    ({"at": 1, "append": {"node": "a", "context": "bad name!"}},
     "steps[0] (at = 1) append context: invalid context name 'bad name!'"),
    ({"at": 1, "append": {"node": "a", "context": "c", "count": 0}},
     "append count: must be >= 1"),
    ({"at": 1, "writers": {"nodes": "all", "context": "c", "rate_per_s": 0,
                           "duration_s": 5}}, "writers rate_per_s: must be > 0"),
    ({"at": 1, "link": {"loss": 1.5}}, "link loss: must be >= 0 and <= 1"),
    ({"at": 1, "link": {"between": ["a"], "loss": 0.1}}, "expected two nodes"),
    ({"at": 1, "cut": {"from": "a"}}, "give both 'from' and 'to'"),
    ({"at": 1, "partition": [["a"], ["a", "b"]]}, "node 'a' is in two groups"),
    ({"at": 1, "restart": "a"}, "steps[0] (at = 1) restart: node 'a' is not down"),
    ({"at": 1, "heal": True, "repeat": 3}, "repeat needs every_s > 0"),
])
def test_bad_steps(step: dict[str, Any], expected: str) -> None:
    message = _error(_with_step(step))
    assert message.startswith("<scenario>: ")
    assert expected in message


def test_crash_twice_is_caught_statically() -> None:
    message = _error(small_scenario(steps=[{"at": 1, "crash": "a"}, {"at": 2, "crash": "a"}]))
    assert "steps[1] (at = 2) crash: node 'a' is already down" in message


def test_append_to_a_down_node_is_caught() -> None:
    message = _error(small_scenario(steps=[
        {"at": 1, "crash": "b"}, {"at": 2, "append": {"node": "b", "context": "c"}}]))
    assert "steps[1] (at = 2) append: node 'b' is down then" in message


@pytest.mark.parametrize(("change", "expected"), [
    ({"links": {"latency": 5}}, "[links]: unknown field 'latency'"),
    ({"links": {"transport": "udp"}}, "transport: expected one of tcp, datagram, got 'udp'"),
    ({"checks": {"converged_within_s": "fast"}}, "[checks] converged_within_s: expected a number"),
    ({"checks": {"same_root": 1}}, "[checks] same_root: expected true or false"),
    ({"config": {"gossip_interval": 0}}, "[config] gossip_interval: must be > 0"),
    ({"topology": "mesh"}, "topology: expected one of full, chain, ring, star, none"),
    ({"nodes": []}, "nodes: expected a non-empty list"),
    ({"nodes": ["a", "a"]}, "nodes[1]: node 'a' is listed twice"),
    ({"nodes": ["a b"]}, "nodes[0]: invalid node name 'a b'"),
    ({"scenario": {"seed": -1}}, "[scenario] seed: must be >= 0"),
    ({"extra": 1}, "top level: unknown field 'extra'"),
])
def test_bad_tables(change: dict[str, Any], expected: str) -> None:
    data = small_scenario(steps=[])
    data.update(change)
    assert expected in _error(data)


def test_node_tables_and_counts() -> None:
    star = load_scenario({"nodes": 4, "topology": "star"})
    assert star.nodes == ["n1", "n2", "n3", "n4"]
    assert star.seeds == {"n1": [], "n2": ["n1"], "n3": ["n1"], "n4": ["n1"]}
    explicit = load_scenario({"nodes": [{"name": "x", "seeds": ["y"]}, "y"], "topology": "none"})
    assert explicit.seeds == {"x": ["y"], "y": []}


def test_partition_leftovers_form_a_group() -> None:
    scenario = load_scenario(small_scenario(steps=[{"at": 1, "partition": [["a"]]}]))
    assert scenario.steps[0].args["groups"] == [["a"], ["b", "c"]]


def test_repeat_expands_in_time_order() -> None:
    scenario = load_scenario(small_scenario(steps=[
        {"at": 5, "cut": {"from": "a", "to": "b"}, "repeat": 3, "every_s": 10},
        {"at": 8, "heal": True, "repeat": 3, "every_s": 10},
    ]))
    assert [(s.at, s.kind) for s in scenario.steps] == [
        (5, "cut"), (8, "heal"), (15, "cut"), (18, "heal"), (25, "cut"), (28, "heal")]


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("nodes = [\"a\"\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: invalid TOML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match=r"missing\.toml: cannot read"):
        load_scenario(tmp_path / "missing.toml")
    step = tmp_path / "step.toml"
    step.write_text('nodes = ["a", "b"]\n[[steps]]\nat = 1\ncrash = "c"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(step)
    assert str(info.value) == (f"{step}: steps[0] (at = 1) crash: unknown node 'c' "
                               "(nodes: a, b)")


def test_cli_reports_invalid_file_in_one_line(tmp_path: Path) -> None:
    step = tmp_path / "step.toml"
    step.write_text('nodes = ["a", "b"]\n[[steps]]\nat = 1\ncrash = "c"\n')
    result = subprocess.run([sys.executable, "-m", "p2p_ledger", "scenario", "run", str(step)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [f"p2p-ledger: error: ScenarioError: {step}: steps[0] (at = 1) crash: "
                     "unknown node 'c' (nodes: a, b)"]


def test_cut_steps_compose_the_same_way_in_every_runner() -> None:
    from p2p_ledger.sim.scenario import cuts_after

    split = cuts_after("partition", {"groups": [["a"], ["b", "c"]]}, {("x", "y")})
    assert split == {("a", "b"), ("a", "c"), ("b", "a"), ("c", "a")}  # a partition replaces
    more = cuts_after("cut", {"pairs": [("b", "c")]}, split)
    assert more == split | {("b", "c")}
    assert cuts_after("heal", {"pairs": [("a", "b")]}, more) == more - {("a", "b")}
    assert cuts_after("heal", {}, more) == set()  # a heal naming nothing heals everything
    with pytest.raises(ValueError):
        cuts_after("crash", {}, more)
