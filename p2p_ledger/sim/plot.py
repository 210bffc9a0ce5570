"""Timeline plots of a scenario run (matplotlib, Agg backend, imported only when asked for).

One figure, one shared time axis, read top to bottom:

* **network**: each stretch of time with links cut, coloured by what was cut and labelled with
  the groups the partition made (``a b c | d e f``) or the cuts inside a group (``a ⇄ b``,
  ``c → a``); the legend repeats every label, so a stretch too short for its text is still
  explained;
* **nodes**: how many acknowledged entries each node lacks. Up to ``SMALL_MULTIPLES`` nodes get
  a row each (nodes whose counts coincide are all visible, never drawn over each other), with
  what each still lacks at the end on the right; more nodes get a heatmap row each plus an
  **all nodes** panel: the band between the fewest and the most missing entries of the live
  nodes, and their median;
* crashes are hatched on the node's row and labelled "down";
* two labelled markers: when the convergence clock starts (the last heal, restart or write) and
  when every live node held every entry.

Long runs are drawn in minutes or hours (``time_unit``). When the final catch-up is too short
to see on the whole run's axis (a day offline, then seconds to sync), a narrow **zoom** column on
the right shows it in seconds after the clock started (the runner samples that stretch every
``FINAL_SAMPLE_S``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import Report, Timeline

SMALL_MULTIPLES = 10  # up to this many nodes, one row each; more: heatmap + aggregate band
ZOOM_BELOW = 0.04  # zoom into the catch-up when it spans less than this share of the run
CUT_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
               "#ccb974", "#64b5cd", "#c44e52")
LINE = "#c44e52"
START_COLOUR, CONVERGED_COLOUR = "#2ca02c", "#9467bd"
WIDTH_IN = 12.0


def time_unit(end_s: float) -> tuple[float, str]:
    """Seconds per axis unit and its name: hours for runs of 3 h or more, minutes from 15 min."""
    if end_s >= 3 * 3600:
        return 3600.0, "h"
    if end_s >= 15 * 60:
        return 60.0, "min"
    return 1.0, "s"


@dataclass
class _Column:
    unit: float  # seconds per axis unit
    offset: float  # the time (s) drawn as 0
    lo: float  # axis range, in axis units
    hi: float
    width_in: float  # the column's width, to decide whether a label fits
    main: bool  # the whole run (labels, titles) or the zoom
    last: bool = True  # the rightmost column (the numbers at the end)

    def x(self, seconds: float) -> float:
        return (seconds - self.offset) / self.unit


def plot_report(report: Report, path: Path) -> Path:
    """Write the timeline figure of ``report`` (run with ``timeline=True``) as a PNG."""
    fig = timeline_figure(report)  # selects the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def timeline_figure(report: Report) -> Any:
    """The matplotlib Figure ``plot_report`` saves (tests read its labels)."""
    timeline = report.timeline
    if timeline is None or not timeline.times:
        raise ValueError("the report has no timeline: run with timeline=True")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = timeline.nodes
    times = timeline.times
    end = times[-1] if len(times) > 1 else times[0] + 1
    unit, unit_name = time_unit(end)
    columns = [_Column(unit, 0.0, 0.0, end * 1.01 / unit, WIDTH_IN * 0.8, True)]
    catch_up = end - timeline.reference_s
    peak = max([v for n in nodes for v in timeline.missing[n] if not math.isnan(v)] + [1.0])
    pad = max(2.0, 0.3 * catch_up)
    # A catch-up of any length (a heal after hours of cut can take 0.04 s), if there is one to
    # see: some node lacks a visible share of the peak in the zoomed stretch.
    zoom = 0 < catch_up < ZOOM_BELOW * end and any(
        m > 0.02 * peak for node in nodes
        for t, m in zip(times, timeline.missing[node], strict=True)
        if t >= timeline.reference_s - pad)  # nan > x is False: a node down shows nothing
    if zoom:
        columns[0].width_in, columns[0].last = WIDTH_IN * 0.62, False
        columns.append(_Column(1.0, timeline.reference_s, -pad, max(1.0, catch_up * 1.05),
                               WIDTH_IN * 0.18, False))
    small = len(nodes) <= SMALL_MULTIPLES

    # Panel heights in inches: the strip, then a row per node or a heatmap, then the band.
    rows: list[tuple[str, float]] = [("network", 0.45)]
    if small:
        rows += [(node, 0.55) for node in nodes]
    else:
        rows += [("heatmap", max(3.0, 0.2 * len(nodes))), ("all", 2.0)]
    height = sum(h for _, h in rows) + 2.0  # title, axis label, legend
    fig, grid = plt.subplots(len(rows), len(columns), figsize=(WIDTH_IN, height),
                             sharex="col", sharey="row", layout="constrained", squeeze=False,
                             gridspec_kw={"height_ratios": [h for _, h in rows],
                                          "width_ratios": [c.width_in for c in columns]})
    colours = _cut_colours(timeline)
    handles: list[Any] = []
    for j, col in enumerate(columns):
        axes = [grid[i][j] for i in range(len(rows))]
        strip, panels = axes[0], axes[1:]
        handles = _draw_network(strip, timeline, colours, col)
        if small:
            for ax, node in zip(panels, nodes, strict=True):
                _draw_node_row(ax, timeline, node, peak, colours, col)
        else:
            mesh = _draw_heatmap(panels[0], timeline, peak, col)
            _draw_band(panels[1], timeline, colours, col)
        handles += _draw_markers(axes, timeline, col)
        axes[-1].set_xlim(col.lo, col.hi)
        if col.main:
            axes[-1].set_xlabel(f"simulated time ({unit_name})")
        else:
            axes[-1].set_xlabel("zoom: s after the clock starts")
            strip.set_title("the catch-up, zoomed in", fontsize=9, loc="left")
            for ax in axes:
                ax.tick_params(labelleft=False)
    if not small:
        fig.colorbar(mesh, ax=[grid[1][j] for j in range(len(columns))],
                     label="entries lacked", pad=0.01, fraction=0.03)
    handles += _crash_handle(timeline)

    status = "PASS" if report.passed else "FAIL: " + ", ".join(report.failed_checks())
    conv = ("never" if report.converged_after_s is None
            else f"{report.converged_after_s:.2f} s after the last heal/restart/write")
    title = (f"{report.scenario} (seed {report.seed}) — {status} — {len(nodes)} nodes, "
             f"converged {conv}")
    if timeline.description:
        title += f"\n{timeline.description}"
    fig.suptitle(title, fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)),
               fontsize=8, frameon=False)
    return fig


# ---- panels ------------------------------------------------------------------------------------

def _cut_colours(timeline: Timeline) -> dict[str, str]:
    labels = list(dict.fromkeys(label for _, _, label in timeline.partitions))
    return {label: CUT_COLOURS[i % len(CUT_COLOURS)] for i, label in enumerate(labels)}


def _draw_network(ax: Any, timeline: Timeline, colours: dict[str, str],
                  col: _Column) -> list[Any]:
    from matplotlib.patches import Patch

    ax.set_ylim(0, 1)
    ax.set_yticks([])
    if col.main:
        ax.set_ylabel("network", rotation=0, ha="right", va="center", fontsize=9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    shown = [p for p in timeline.partitions
             if col.x(p[1]) > col.lo and col.x(p[0]) < col.hi]
    if not shown:
        ax.text(0.5, 0.5, "no link cut" + (" during the run" if col.main else ""),
                transform=ax.transAxes, ha="center", va="center", fontsize=8, color="#555555")
    for start, stop, label in shown:
        x0, x1 = col.x(start), col.x(stop)
        ax.axvspan(x0, x1, color=colours[label], alpha=0.85, linewidth=0)
        visible = min(x1, col.hi) - max(x0, col.lo)
        span_in = visible / max(col.hi - col.lo, 1e-9) * col.width_in
        text = _fitting(label, span_in)
        if text is not None:
            ax.text((max(x0, col.lo) + min(x1, col.hi)) / 2, 0.5, text[0], ha="center",
                    va="center", fontsize=text[1], color="white", fontweight="bold",
                    clip_on=True, linespacing=1.0)
    return [Patch(color=colour, alpha=0.85,
                  label=f"{'split' if ' | ' in label else 'cut'}: {label}")
            for label, colour in colours.items()]


def _fitting(label: str, width_in: float) -> tuple[str, float] | None:
    """The label as it fits in ``width_in`` (one line, or one line per group at a smaller
    size), or None: bold text takes about 0.0075 in per character and point."""
    lines = label.replace(" | ", " |\n").replace("; ", "\n").split("\n")
    for text, size in ((label, 8.0), (label, 7.0), ("\n".join(lines), 6.5)):
        longest = max(len(line) for line in text.split("\n"))
        if longest * size * 0.0075 < width_in and text.count("\n") < 3:
            return text, size
    return None


def _draw_node_row(ax: Any, timeline: Timeline, node: str, peak: float,
                   colours: dict[str, str], col: _Column) -> None:
    xs = [col.x(t) for t in timeline.times]
    ys = timeline.missing[node]
    _shade_cuts(ax, timeline, colours, col)
    ax.fill_between(xs, [0 if math.isnan(y) else y for y in ys], step="post", color=LINE,
                    alpha=0.35, linewidth=0)
    ax.step(xs, ys, where="post", color=LINE, linewidth=1)
    _draw_crashes(ax, timeline.crashes.get(node, []), col, 0, peak * 1.1)
    ax.set_ylim(0, peak * 1.1)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    if col.last:
        ax.text(1.01, 0.5, f"{_last(ys):,.0f}", transform=ax.transAxes, fontsize=8,
                va="center", color="#333333")  # what it still lacks at the end
    if not col.main:
        return
    ax.set_yticks([0, peak])
    ax.set_yticklabels(["0", f"{peak:,.0f}"], fontsize=7)
    ax.set_ylabel(node, rotation=0, ha="right", va="center", fontsize=9)
    if node == timeline.nodes[0]:
        ax.set_title("acknowledged entries each node lacks (the number on the right: at the "
                     "end)", fontsize=9, loc="left")


def _draw_heatmap(ax: Any, timeline: Timeline, peak: float, col: _Column) -> Any:
    nodes = timeline.nodes
    xs = [col.x(t) for t in timeline.times]
    edges = xs + [xs[-1] + (xs[-1] - xs[-2] if len(xs) > 1 else 1.0)]
    mesh = ax.pcolormesh(edges, range(len(nodes) + 1), [timeline.missing[n] for n in nodes],
                         cmap="Reds", vmin=0, vmax=peak, shading="flat")
    for i, node in enumerate(nodes):
        _draw_crashes(ax, timeline.crashes.get(node, []), col, i, i + 1)
    ax.set_ylim(len(nodes), 0)
    if col.main:
        ax.set_yticks([i + 0.5 for i in range(len(nodes))])
        ax.set_yticklabels(nodes, fontsize=7 if len(nodes) > 16 else 8)
        ax.set_ylabel("node")
        ax.set_title("acknowledged entries each node lacks (darker: more)", fontsize=9,
                     loc="left")
    return mesh


def _draw_band(ax: Any, timeline: Timeline, colours: dict[str, str], col: _Column) -> None:
    xs = [col.x(t) for t in timeline.times]
    _shade_cuts(ax, timeline, colours, col)
    columns = [[timeline.missing[n][i] for n in timeline.nodes
                if not math.isnan(timeline.missing[n][i])] for i in range(len(xs))]
    low = [min(c) if c else math.nan for c in columns]
    high = [max(c) if c else math.nan for c in columns]
    mid = [sorted(c)[len(c) // 2] if c else math.nan for c in columns]
    ax.fill_between(xs, low, high, step="post", color=LINE, alpha=0.3, linewidth=0,
                    label="fewest – most (live nodes)")
    ax.step(xs, mid, where="post", color=LINE, linewidth=1.2, label="median node")
    ax.set_ylim(bottom=0)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    if col.main:
        ax.set_ylabel("entries lacked")
        ax.set_title(f"all {len(timeline.nodes)} nodes", fontsize=9, loc="left")
        ax.legend(loc="upper left", fontsize=8)


def _shade_cuts(ax: Any, timeline: Timeline, colours: dict[str, str], col: _Column) -> None:
    for start, stop, label in timeline.partitions:
        ax.axvspan(col.x(start), col.x(stop), color=colours[label], alpha=0.12, linewidth=0)


def _draw_crashes(ax: Any, crashes: Sequence[tuple[float, float]], col: _Column, y0: float,
                  y1: float) -> None:
    from matplotlib.patches import Rectangle

    for start, stop in crashes:
        x0, x1 = col.x(start), col.x(stop)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor="#999999", alpha=0.5,
                               hatch="///", edgecolor="#444444", linewidth=0, zorder=3))
        if (x1 - x0) / max(col.hi - col.lo, 1e-9) * col.width_in > 0.35:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, "down", ha="center", va="center",
                    fontsize=7, zorder=4, clip_on=True)


def _draw_markers(axes: Sequence[Any], timeline: Timeline, col: _Column) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=START_COLOUR, linestyle="--",
                      label=f"convergence clock starts: last heal, restart or write "
                            f"({_at(timeline.reference_s)})")]
    for ax in axes:
        ax.axvline(col.x(timeline.reference_s), color=START_COLOUR, linestyle="--",
                   linewidth=1.1, zorder=5)
    if timeline.converged_s is not None:
        for ax in axes:
            ax.axvline(col.x(timeline.converged_s), color=CONVERGED_COLOUR, linestyle=":",
                       linewidth=1.4, zorder=5)
        after = timeline.converged_s - timeline.reference_s
        handles.append(Line2D([], [], color=CONVERGED_COLOUR, linestyle=":",
                              label=f"every live node holds every entry ({after:,.1f} s "
                                    f"after the clock starts)"))
    return handles


def _crash_handle(timeline: Timeline) -> list[Any]:
    from matplotlib.patches import Patch

    if not any(timeline.crashes.values()):
        return []
    return [Patch(facecolor="#999999", alpha=0.5, hatch="///", edgecolor="#444444",
                  label="node down (crashed, until restarted)")]


def _at(seconds: float) -> str:
    if seconds >= 3 * 3600:
        return f"at {seconds / 3600:.2f} h"
    return f"at {seconds:,.1f} s"


def _last(values: Sequence[float]) -> float:
    for v in reversed(values):
        if not math.isnan(v):
            return v
    return 0.0
