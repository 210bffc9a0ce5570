"""Command line for the simulator: ``scenario run``, ``scenario fuzz`` and ``scenario bench``.

``add_scenario_commands(subparsers)`` adds the ``scenario`` command to the main ``p2p-ledger``
parser; every leaf parser sets ``func`` to a handler ``(argparse.Namespace) -> int`` (the exit
code; bad input raises ``UsageError``, which the main command prints as one line).
``python -m p2p_ledger scenario run FILE...`` runs them.

``run --real [--time-scale X]`` runs the same files on real node processes on loopback
(``harness/real.py``), ``run --netns`` on real node processes in network namespaces
(``harness/netns.py``).
``run`` exits 0 iff every check of every scenario held, 1 if one failed, 2 for an invalid file.
Results go to stdout (a summary per scenario, or one JSON object per line with ``--json``);
a progress line goes to stderr only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..sim.runner import Report, run_scenario
from ..sim.scenario import ScenarioError
from .main import Formatter, UsageError, positive_float
from .output import Progress


def add_scenario_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``scenario {run,fuzz,bench}`` to a parser's subcommands."""
    parser = subparsers.add_parser(
        "scenario", help="simulate partitions, crashes and lossy links; fuzz; benchmark",
        formatter_class=Formatter,
        description="Run the deterministic network simulator: replay scenario files (run), "
                    "draw random fault schedules (fuzz), measure the simulator (bench). The "
                    "same file and seed give the same run, byte for byte.",
        epilog="examples:\n  p2p-ledger scenario run scenarios/*.toml --plot /tmp/plots\n"
               "  p2p-ledger scenario fuzz --runs 500\n")
    sub = parser.add_subparsers(dest="scenario_command", metavar="COMMAND", required=True)
    add_sim_subcommands(sub)


def add_sim_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run", help="run scenario files and check their invariants",
        formatter_class=Formatter,
        description="Replay each scenario file on the deterministic simulated network (the real "
                    "node code, a virtual clock, one seeded random generator) and check its "
                    "invariants: convergence, no acknowledged loss, the same order and root "
                    "everywhere, watchers see each entry once. Prints a summary per scenario "
                    "(or one JSON object per line with --json). Exit 0 iff every check held, "
                    "1 if one failed, 2 for an invalid file.",
        epilog="examples:\n"
               "  p2p-ledger scenario run scenarios/split_brain.toml\n"
               "  p2p-ledger scenario run scenarios/*.toml --plot /tmp/plots\n"
               "  p2p-ledger scenario run scenarios/split_brain.toml --real --time-scale 0.2\n"
               "file format: scenarios/README.md and the docstring of p2p_ledger/sim/scenario.py\n")
    run.add_argument("files", nargs="+", type=Path, metavar="FILE", help="scenario TOML files")
    run.add_argument("--seed", type=int, help="override every scenario's seed")
    run.add_argument("--json", action="store_true", help="one JSON object per scenario per line")
    run.add_argument("--plot", type=Path, metavar="DIR",
                     help="write a timeline PNG per scenario into DIR (needs matplotlib)")
    run.add_argument("--trace", type=Path, metavar="DIR",
                     help="write each run's event trace (the digest's input) to DIR")
    run.add_argument("--real", action="store_true",
                     help="run on real node processes on loopback, every link through a "
                          "fault-injecting relay (see p2p_ledger/harness/real.py)")
    run.add_argument("--netns", action="store_true",
                     help="run on real node processes, one per Linux network namespace on a "
                          "bridge; partitions and cuts are made by the kernel (root only; see "
                          "p2p_ledger/harness/netns.py)")
    run.add_argument("--time-scale", type=float, default=None, metavar="X",
                     help="with --real or --netns: wall seconds per scenario second (default "
                          "0.1: a 70 s scenario runs in about 7 s; writers' rates scale too)")
    run.set_defaults(func=cmd_run)

    fuzz = sub.add_parser(
        "fuzz", help="random fault schedules on small clusters", formatter_class=Formatter,
        description="Run random schedules of writes, partitions, one-way cuts, crashes, "
                    "restarts and link changes on small simulated clusters, each drawn from "
                    "its own seed, and check the scenario invariants after each. A failing run "
                    "prints its seed and writes a TOML file that reproduces it. Exit 0 iff "
                    "every run passed.",
        epilog="examples:\n"
               "  p2p-ledger scenario fuzz --runs 500\n"
               "  p2p-ledger scenario fuzz --runs 50 --seed 7 --nodes 6 --json\n")
    fuzz.add_argument("--runs", type=int, default=100, help="number of runs (default 100)")
    fuzz.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    fuzz.add_argument("--nodes", type=int, default=4, help="at most this many nodes (default 4)")
    fuzz.add_argument("--duration", type=positive_float, default=40.0, metavar="S",
                      help="simulated seconds of faults per run (default 40)")
    fuzz.add_argument("--workers", type=int, default=1, metavar="N",
                      help="spread the runs over N processes (default 1; the results do not "
                           "depend on it)")
    fuzz.add_argument("--out", type=Path, default=Path("fuzz-failures"),
                      help="where failing scenarios are written (default ./fuzz-failures)")
    fuzz.add_argument("--json", action="store_true",
                      help="one JSON object per failing run, then a summary object")
    fuzz.set_defaults(func=cmd_fuzz)

    bench = sub.add_parser(
        "bench", help="simulator speed and dissemination benchmarks", formatter_class=Formatter,
        description="Measure how fast the simulator runs (simulated seconds per wall second) "
                    "and how entries spread (messages, bytes, time to converge) as clusters "
                    "grow; prints a table (or JSON lines).",
        epilog="example:\n  p2p-ledger scenario bench --quick\n")
    bench.add_argument("--json", action="store_true", help="rows as JSON lines")
    bench.add_argument("--quick", action="store_true", help="smaller runs")
    bench.set_defaults(func=cmd_bench)


def format_report(report: Report, mode: str = "") -> str:
    """A human summary: one line for the scenario, one per check. ``mode``: "" (simulated),
    "real" (loopback relays) or "netns"; real runs count wire units and use the wall clock."""
    status = "PASS" if report.passed else "FAIL"
    conv = "never" if report.converged_after_s is None else f"{report.converged_after_s:.3f}s"
    if mode and report.converged_after_node_s is not None:
        conv += (f" of scenario time ({report.converged_after_node_s:.3f}s on the nodes' clocks,"
                 f" time scale {report.time_scale:g})")
    unit = {"": "messages", "real": "relayed chunks", "netns": "packets"}[mode]
    traffic = f"{report.messages} {unit}, {_size(report.bytes)}"
    if mode:
        timing = (f"{report.nodes} real nodes, {report.sim_s:.1f}s of scenario time in "
                  f"{report.wall_s:.2f}s, steps digest")
    else:
        timing = f"{report.sim_s:.1f}s simulated in {report.wall_s:.2f}s, digest"
    lines = [
        f"{status} {report.scenario} (seed {report.seed}): converged after {conv}, "
        f"{traffic}, {report.acknowledged} acknowledged, {report.lost} lost, "
        + (f"{report.disk_lost} gone with a disk, " if report.disk_lost else "")
        + (f"{report.attacks} hostile bundles, " if report.attacks else "")
        + f"{timing} "
        f"{report.trace_digest[:16]}"
    ]
    for check in report.checks:
        mark = "ok  " if check.passed else "FAIL"
        lines.append(f"  {mark} {check.name}" + (f": {check.detail}" if check.detail else ""))
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def cmd_run(args: argparse.Namespace) -> int:
    netns = bool(getattr(args, "netns", False))
    real = bool(getattr(args, "real", False)) or netns
    mode = "netns" if netns else "real" if real else ""
    scale: float | None = getattr(args, "time_scale", None)
    if netns and getattr(args, "real", False):
        raise UsageError("--real and --netns are two different real modes: pick one")
    if scale is not None and not (real and 0 < scale < float("inf")):
        raise UsageError("--time-scale needs --real or --netns and a positive number")
    if real and (args.plot is not None or args.trace is not None):
        raise UsageError("--plot and --trace are for simulated runs only")
    if args.plot is not None:
        _check_plot_dir(args.plot)  # before a long run, not after it
    if real:
        # only when asked for
        from ..harness.real import DEFAULT_TIME_SCALE, RelayNetwork, run_real_scenario

        real_scale = scale or DEFAULT_TIME_SCALE
        network: Any = RelayNetwork
        if netns:
            from ..harness.netns import NetnsNetwork, netns_unavailable

            unavailable = netns_unavailable()
            if unavailable is not None:
                print(f"p2p-ledger: error: NetnsError: {unavailable}", file=sys.stderr)
                return 1
            network = NetnsNetwork
    failed = False
    progress = Progress()
    for i, path in enumerate(args.files):
        try:
            with progress.ticking(f"[{i + 1}/{len(args.files)}] {path}"):
                if real:
                    report = run_real_scenario(path, seed=args.seed, time_scale=real_scale,
                                               network=network)
                else:
                    report = run_scenario(path, seed=args.seed, timeline=args.plot is not None,
                                          keep_trace=args.trace is not None)
        except ScenarioError as exc:
            # One stderr line, like every other p2p-ledger error.
            print(f"p2p-ledger: error: ScenarioError: {exc}", file=sys.stderr)
            return 2
        failed |= not report.passed
        if args.json:
            row = report.to_json()
            if real:
                row |= {"mode": mode}
            print(json.dumps(row), flush=True)
        else:
            print(format_report(report, mode=mode), flush=True)
        if args.plot is not None:
            from ..sim.plot import plot_report  # matplotlib only when asked for

            out = plot_report(report, args.plot / f"{report.scenario}-{report.seed}.png")
            if not args.json:
                print(f"  plot: {out}")
        if args.trace is not None and report.trace is not None:
            args.trace.mkdir(parents=True, exist_ok=True)
            (args.trace / f"{report.scenario}-{report.seed}.trace").write_text(
                "".join(report.trace))
    return 1 if failed else 0


def _check_plot_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--plot {path} is a file; it wants a directory for the PNGs")
    try:
        import matplotlib  # noqa: F401  (plot.py imports it for real)
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'p2p-ledger[plot]'") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot create it ({exc.strerror or exc})") from None


def cmd_fuzz(args: argparse.Namespace) -> int:
    from ..sim.fuzz import fuzz

    progress = Progress()
    failures = 0

    def on_run(i: int, seed: int, report: Report) -> None:
        nonlocal failures
        if not report.passed:
            failures += 1
            progress.done()
            print(f"FAIL seed {seed}: {', '.join(report.failed_checks())}", file=sys.stderr)
        progress.update(f"run {i + 1}/{args.runs} (seed {seed}), {failures} failed, "
                        f"{progress.elapsed:.0f}s")

    if args.runs < 1 or args.nodes < 2 or args.workers < 1:
        raise UsageError("--runs and --workers must be >= 1 and --nodes >= 2")
    result = fuzz(args.runs, args.seed, args.nodes, args.duration, args.out, on_run,
                  workers=args.workers)
    progress.done()
    for seed, report, path in result.failures:
        if args.json:
            row = report.to_json() | {"fuzz_seed": seed, "reproduce": str(path)}
            print(json.dumps(row))
        else:
            print(format_report(report))
            print(f"  reproduce: p2p-ledger scenario run {path}")
    if args.json:  # the summary, also when every run passed
        print(json.dumps({"summary": True, "runs": result.runs,
                          "failed": len(result.failures), "base_seed": args.seed,
                          "max_nodes": args.nodes, "duration_s": args.duration,
                          "workers": args.workers,
                          "wall_s": round(result.wall_s, 3),
                          "runs_per_minute": round(result.runs_per_minute, 1)}))
    else:
        print(f"{result.runs} runs, {len(result.failures)} failed, {result.wall_s:.1f}s "
              f"({result.runs_per_minute:.0f} runs/min), base seed {args.seed}")
    return 1 if result.failures else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench_sim import (
        dissemination_by_topology,
        format_rows,
        format_topology_rows,
        run_sim_bench,
    )

    progress = Progress()
    rows = run_sim_bench(quick=args.quick,
                         progress=lambda text: progress.update(text, force=True))
    by_topology = dissemination_by_topology(
        quick=args.quick, progress=lambda text: progress.update(text, force=True))
    progress.done()
    if args.json:
        for row in rows + by_topology:
            print(json.dumps(row))
    else:
        print(format_rows(rows))
        print()
        print(format_topology_rows(by_topology))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``p2p-ledger scenario ARGV...`` (the same parser, errors and exit codes)."""
    from .main import main as cli_main

    return cli_main(["scenario", *(sys.argv[1:] if argv is None else argv)])
