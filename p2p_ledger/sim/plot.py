"""Timeline plots of a scenario run (matplotlib, Agg backend, imported only when asked for).

Top panel: nodes × time, each cell coloured by how many acknowledged entries that node lacks;
crashes hatched on the node's row, partitions shaded over the whole run. Bottom panel: the same
missing-entry counts as lines. Dashed lines mark the reference time (last heal/restart or
write) and the moment the live nodes converged.
"""

from __future__ import annotations

import math
from pathlib import Path

from .runner import Report


def plot_report(report: Report, path: Path) -> Path:
    timeline = report.timeline
    if timeline is None or not timeline.times:
        raise ValueError("the report has no timeline: run with timeline=True")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    nodes = timeline.nodes
    times = timeline.times
    height = max(4.0, 2.5 + 0.18 * len(nodes))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, height + 3), sharex=True,
                                      layout="constrained",
                                      gridspec_kw={"height_ratios": [max(2, len(nodes) / 4), 2]})
    grid = [[timeline.missing[n][i] for i in range(len(times))] for n in nodes]
    peak = max([v for row in grid for v in row if not math.isnan(v)] + [1.0])
    end = times[-1] if len(times) > 1 else times[0] + 1
    mesh = top.pcolormesh(_edges(times, end), range(len(nodes) + 1), grid, cmap="Reds",
                          vmin=0, vmax=peak, shading="flat")
    # One colorbar for both panels keeps their time axes aligned.
    fig.colorbar(mesh, ax=[top, bottom], label="missing entries (heatmap)", pad=0.01,
                 shrink=0.6, anchor=(0.0, 1.0))
    for i, node in enumerate(nodes):
        for start, stop in timeline.crashes.get(node, []):
            top.add_patch(Rectangle((start, i), stop - start, 1, facecolor="black", alpha=0.35,
                                    hatch="///", edgecolor="black", linewidth=0))
    for start, stop, _label in timeline.partitions:
        top.axvspan(start, stop, ymin=0.985, facecolor="tab:blue", edgecolor="tab:blue",
                    linewidth=0, zorder=3)  # a strip along the top edge
        for x in (start, stop):
            top.axvline(x, color="tab:blue", linewidth=0.8, zorder=3)
        bottom.axvspan(start, stop, color="tab:blue", alpha=0.12, linewidth=0)
    for ax in (top, bottom):
        ax.axvline(timeline.reference_s, color="tab:green", linestyle="--", linewidth=1)
        if timeline.converged_s is not None:
            ax.axvline(timeline.converged_s, color="tab:purple", linestyle=":", linewidth=1.2)
    top.set_yticks([i + 0.5 for i in range(len(nodes))])
    top.set_yticklabels(nodes, fontsize=7 if len(nodes) > 12 else 9)
    top.set_ylim(len(nodes), 0)
    top.set_ylabel("node")
    status = "PASS" if report.passed else "FAIL: " + ", ".join(report.failed_checks())
    conv = "never" if report.converged_after_s is None else f"{report.converged_after_s:.2f}s"
    top.set_title(f"{report.scenario} (seed {report.seed}) — {status} — converged after {conv}")
    top.legend(handles=[Patch(facecolor="tab:blue", label="partition / cut (top strip)"),
                        Patch(facecolor="black", alpha=0.35, hatch="///", label="crashed")],
               loc="upper right", fontsize=8)
    for node in nodes:
        bottom.plot(times, timeline.missing[node], linewidth=0.9, label=node)
    bottom.set_xlabel("simulated time (s)")
    bottom.set_ylabel("missing entries")
    if len(nodes) <= 10:
        bottom.legend(fontsize=7, ncol=min(len(nodes), 5), loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _edges(times: list[float], end: float) -> list[float]:
    edges = list(times)
    edges.append(end + (times[-1] - times[-2] if len(times) > 1 else 1.0))
    return edges
