"""Timeline plots a newcomer can read: every node visible, markers and cut stretches labelled,
groups named, many nodes aggregated, long runs in hours with the catch-up zoomed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from p2p_ledger.sim import run_scenario
from p2p_ledger.sim.runner import describe_cuts
from p2p_ledger.sim.scenario import partition_cuts

from .helpers import small_scenario

pytest.importorskip("matplotlib")

from p2p_ledger.sim.plot import plot_report, time_unit, timeline_figure  # noqa: E402


def _texts(fig: Any) -> dict[str, list[str]]:
    """The words a reader sees, by where they are."""
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    axes = fig.get_axes()
    return {
        "legend": legend,
        "ylabels": [ax.get_ylabel() for ax in axes],
        "xlabels": [ax.get_xlabel() for ax in axes if ax.get_xlabel()],
        "titles": [ax.get_title(loc="left") for ax in axes if ax.get_title(loc="left")],
        "inside": [t.get_text() for ax in axes for t in ax.texts],
        "panel_legends": [t.get_text() for ax in axes if ax.get_legend()
                          for t in ax.get_legend().get_texts()],
    }


def test_every_node_has_its_row_and_everything_is_labelled(tmp_path: Path) -> None:
    nodes = ["a", "b", "c", "d", "e", "f"]
    data = small_scenario(nodes=nodes, steps=[
        {"at": 1, "writers": {"nodes": "all", "context": "x", "rate_per_s": 2,
                              "duration_s": 10}},
        {"at": 2, "partition": [["a", "b", "c"], ["d", "e", "f"]]},
        {"at": 5, "crash": "e"}, {"at": 8, "restart": "e"},
        {"at": 9, "heal": True},
        {"at": 10, "cut": {"from": "c", "to": "a"}},
        {"at": 12, "heal": True},
    ])
    report = run_scenario(data, timeline=True)
    texts = _texts(timeline_figure(report))
    # One row per node, named: coinciding counts cannot hide a node.
    assert [y for y in texts["ylabels"] if y in nodes] == nodes
    assert "split: a b c | d e f" in texts["legend"] and "cut: c → a" in texts["legend"]
    assert any(t.startswith("convergence clock starts: last heal, restart or write")
               for t in texts["legend"])
    assert any(t.startswith("every live node holds every entry") for t in texts["legend"])
    assert "node down (crashed, until restarted)" in texts["legend"]
    assert "a b c | d e f" in texts["inside"]  # the stretch is wide enough for its label
    assert texts["xlabels"] == ["simulated time (s)"]
    png = plot_report(report, tmp_path / "p" / "six.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_many_nodes_get_a_heatmap_and_an_aggregate_band() -> None:
    nodes = [f"n{i}" for i in range(1, 13)]
    data = small_scenario(nodes=nodes, steps=[
        {"at": 1, "writers": {"nodes": "all", "context": "x", "rate_per_s": 1,
                              "duration_s": 6}},
        {"at": 2, "partition": [nodes[:4]]},
        {"at": 6, "heal": True},
    ])
    texts = _texts(timeline_figure(run_scenario(data, timeline=True)))
    assert "all 12 nodes" in texts["titles"]
    assert {"median node", "fewest – most (live nodes)"} <= set(texts["panel_legends"])
    assert "split: n1–n4 | n5–n12" in texts["legend"]
    assert "entries lacked" in texts["ylabels"]


def test_a_long_run_is_drawn_in_hours_with_the_catch_up_zoomed_in() -> None:
    data = small_scenario(steps=[
        {"at": 1, "partition": [["a"], ["b", "c"]]},
        {"at": 2, "append": {"node": "b", "context": "x", "count": 5}},
        {"at": 3 * 3600, "heal": True},
    ], checks={"converged_within_s": 60})
    report = run_scenario(data, timeline=True)
    assert report.passed
    texts = _texts(timeline_figure(report))
    assert texts["xlabels"] == ["simulated time (h)", "zoom: s after the clock starts"]
    assert "the catch-up, zoomed in" in texts["titles"]


def test_time_units() -> None:
    assert time_unit(87) == (1.0, "s")
    assert time_unit(20 * 60) == (60.0, "min")
    assert time_unit(86_400) == (3600.0, "h")


def test_cut_descriptions_name_the_groups() -> None:
    six = list("abcdef")
    assert describe_cuts(partition_cuts([list("abc"), list("def")]), six) == "a b c | d e f"
    assert describe_cuts(partition_cuts([["a", "b"], ["c", "d"], ["e", "f"]]), six) == \
        "a b | c d | e f"
    assert describe_cuts({("c", "a")}, six) == "c → a"
    assert describe_cuts({("a", "b"), ("b", "a")}, six) == "a ⇄ b"
    many = [f"n{i}" for i in range(1, 26)]
    assert describe_cuts(partition_cuts([many[5:10], many[10:15], many[:5] + many[15:]]),
                         many) == "n1–n5 n16–n25 | n6–n10 | n11–n15"
    assert describe_cuts({(a, b) for a in many[:12] for b in many[12:]}, many) == \
        "n1–n12 → n13–n25"
    assert describe_cuts(partition_cuts([many[0::2], many[1::2]]), many) == \
        "n1 n3 n5 … (13 nodes) | n2 n4 n6 … (12 nodes)"
