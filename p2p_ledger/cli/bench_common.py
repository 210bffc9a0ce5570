"""What every ``bench`` group shares: result tables, sizes (``Scale``), progress, memory probes.

Its own module so ``bench`` (storage) and ``bench_sync`` (sync) both import it and neither
imports the other's internals.
"""

from __future__ import annotations

import gc
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.ledger import Ledger
from ..core.storage import Storage

Cell = str | int | float | None

# ---- tables --------------------------------------------------------------------------------


@dataclass
class Table:
    """A titled grid of cells; numbers are formatted only when rendered (JSON keeps them raw)."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def render(self) -> str:
        text = [[fmt(c) for c in row] for row in self.rows]
        widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(self.columns)]

        def line(cells: Sequence[str]) -> str:
            # First column (the case) left-aligned, numbers right-aligned.
            parts = [cells[0].ljust(widths[0])]
            parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join(parts).rstrip()

        out = [self.title, "=" * len(self.title), line(self.columns),
               line(["-" * w for w in widths])]
        out += [line(r) for r in text]
        out += [f"  * {n}" for n in self.notes]
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": [dict(zip(self.columns, row, strict=True)) for row in self.rows],
            "notes": self.notes,
        }


def fmt(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1000:
            return f"{value:,.0f}"
        if mag >= 1:
            return f"{value:.3g}" if mag < 100 else f"{value:.0f}"
        return f"{value:.2g}"
    return value


def ratio(ours: float, base: float) -> float:
    return ours / base if base else float("inf")


def spread(values: Sequence[float]) -> float:
    """Max minus min over the median, in percent: how noisy the repeats were."""
    med = statistics.median(values)
    return 100.0 * (max(values) - min(values)) / med if med else 0.0


@dataclass
class Sample:
    """Repeated measurements of one quantity."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        return spread(self.values)


@dataclass(frozen=True)
class Scale:
    """Every size the bench uses; ``quick`` is small enough for a smoke test."""

    quick: bool
    repeats: int
    single_appends: int  # one append, one commit
    batched_entries: int  # per batch size, per repeat
    node_appends: int  # through open_node, per concurrency level
    rebuild_contexts: int
    rebuild_per_context: int
    merkle_items: int
    proofs: int
    # sync
    sync_small_contexts: tuple[int, ...]  # in-sync rounds besides the big pair
    big_contexts: int  # the big pair: (a) at its size, (b) and (c) on it
    big_per_context: int
    diverged_fraction: float
    diverged_entries: int
    node_contexts: int  # open_node in-sync / reconcile cases
    catchup_small: int  # (d) entries of 100 B
    catchup_small_contexts: int
    catchup_large: int  # (d) entries of 100 KB
    catchup_large_contexts: int


FULL = Scale(
    quick=False, repeats=3, single_appends=300, batched_entries=3000, node_appends=2000,
    rebuild_contexts=100, rebuild_per_context=1000, merkle_items=100_000, proofs=1000,
    sync_small_contexts=(1, 1000), big_contexts=10_000, big_per_context=100,
    diverged_fraction=0.01, diverged_entries=10, node_contexts=10_000,
    catchup_small=100_000, catchup_small_contexts=100, catchup_large=1000,
    catchup_large_contexts=10,
)
QUICK = Scale(
    quick=True, repeats=2, single_appends=20, batched_entries=200, node_appends=100,
    rebuild_contexts=10, rebuild_per_context=200, merkle_items=5000, proofs=100,
    sync_small_contexts=(1,), big_contexts=200, big_per_context=10,
    diverged_fraction=0.05, diverged_entries=10, node_contexts=100,
    catchup_small=2000, catchup_small_contexts=10, catchup_large=20,
    catchup_large_contexts=2,
)

PAYLOAD = 100  # bytes per entry unless a case says otherwise


_T0 = time.perf_counter()


def met(scale: Scale, ok: bool | None) -> bool | None:
    """A goal cell: a goal stated for the full sizes is never shown as met on a ``--quick`` run
    (shown as "-"), and None (nothing measured) is never a pass."""
    return None if scale.quick or ok is None else ok


def filesystem_of(path: Path) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts: the longest matching mount
    point), e.g. "ext4", "overlay" or "tmpfs" (RAM: fsync costs nothing and nothing is
    durable); "unknown" where /proc is missing."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"  # no /proc: say so rather than guess
    target, best, kind = str(path.resolve()), "", "unknown"
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def say(msg: str) -> None:
    """Progress on stderr (elapsed time, RSS), so stdout holds only the tables (or the JSON);
    only when stderr is a terminal, so a script's or CI's stderr stays clean."""
    if not sys.stderr.isatty():
        return
    print(f"[bench {time.perf_counter() - _T0:6.1f}s {current_rss() / 2**20:6.0f} MiB] {msg}",
          file=sys.stderr, flush=True)


@contextmanager
def tempdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"p2pl-bench-{prefix}-") as d:
        yield Path(d)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def status_kib(field: str) -> int:
    """A KiB field of /proc/self/status (VmRSS, VmHWM); 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0  # no /proc here: the table shows 0 rather than failing the bench
    return 0


def current_rss() -> int:
    """Resident set size now, in bytes (VmRSS)."""
    return status_kib("VmRSS") * 1024


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@contextmanager
def gc_paused() -> Iterator[None]:
    """Building fixtures of millions of objects: skip the repeated full GC passes (not measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def discard(*ledgers: Ledger) -> None:
    """Free ledgers' loaded contexts now (and collect), so the next measure starts clean."""
    for ledger in ledgers:
        ledger.drop_memory()
    gc.collect()


def open_loaded(storage: Storage, node_id: str, instance: str) -> Ledger:
    """``Ledger.open`` and then every context loaded, its tree of ids included: the full
    rebuild from the stored rows (what every start did before per-context summaries; a start
    now loads nothing, and a load builds a context's tree on its first use)."""
    ledger = Ledger.open(storage, node_id, instance)
    for name in ledger.contexts:
        ledger.contexts[name].root()  # loads it, and builds its tree
    return ledger


def gc_pause() -> tuple[float, int]:
    """Seconds one full collection takes now, and how many objects the GC tracks."""
    t0 = time.perf_counter()
    gc.collect()
    return time.perf_counter() - t0, len(gc.get_objects())


def payloads(n: int, size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(n)]
