"""What authorship costs: durable appends and cold catch-up, signed and verified, next to the
same run's unsigned baseline.

The baseline is the very same code with the two Ed25519 calls replaced by no-ops (a zero
signature; ``Head.verify`` accepts anything), so the difference is exactly the cost of signing
each commit (once, whatever contexts it extends) and of checking the heads a catch-up needs.
Goals (issue #8): durable appends within 20% of the baseline, cold catch-up of 100 B entries at
≥ 50k entries/s with every signature checked.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.identity import Head, Identity, signature_cache
from ..core.ledger import Ledger
from ..core.storage import MemoryStorage
from ..trio.store import SqliteStore
from .bench_common import PAYLOAD, Sample, Scale, Table, discard, payloads, ratio, tempdir


@contextmanager
def _mode(signed: bool) -> Iterator[list[int]]:
    """Yields a one-item counter of signature checks; unsigned: signing and checking are
    no-ops."""
    sign, verify = Identity.sign, Head.verify
    checks = [0]

    def counted(head: Head, context: str) -> None:
        checks[0] += 1
        if signed:
            verify(head, context)

    def no_sign(self: Identity, message: bytes) -> bytes:
        return bytes(64)

    Head.verify = counted  # type: ignore[method-assign]
    if not signed:
        Identity.sign = no_sign  # type: ignore[method-assign]
    signature_cache().cache_clear()  # every run checks its signatures from scratch
    try:
        yield checks
    finally:
        Head.verify = verify  # type: ignore[method-assign]
        Identity.sign = sign  # type: ignore[method-assign]


def _appends(path: Path, n: int, per_commit: int, signed: bool) -> float:
    """Durable appends/s (SQLite, synchronous=FULL), ``per_commit`` entries per commit."""
    store = SqliteStore(path, synchronous="FULL")
    try:
        with _mode(signed):
            ledger = Ledger.open(store, "bench-signer", "instance")
            data = payloads(n + 1, PAYLOAD, 7)
            ledger.append([ledger.prepare("ctx", "k", data[-1])])  # warm-up
            requests = [ledger.prepare("ctx", "k", p) for p in data[:-1]]
            t0 = time.perf_counter()
            for start in range(0, n, per_commit):
                ledger.append(requests[start:start + per_commit])
            seconds = time.perf_counter() - t0
            discard(ledger)
        return n / seconds
    finally:
        store.close()


def _source(n: int, contexts: int, per_commit: int) -> Ledger:
    src = Ledger.open(MemoryStorage(), "bench-source", "instance")
    data = payloads(n, PAYLOAD, 11)
    names = [f"ctx-{i:04d}" for i in range(contexts)]
    per_context = n // contexts
    for name_i, name in enumerate(names):
        chunk = data[name_i * per_context:(name_i + 1) * per_context]
        for start in range(0, len(chunk), per_commit):
            src.append([src.prepare(name, "k", p) for p in chunk[start:start + per_commit]])
    return src


def _catchup(src: Ledger, signed: bool) -> tuple[float, int]:
    """Entries/s a fresh ledger takes in ``src`` whole (the receiver's work: gate, content ids,
    authentication, pycrdt, index, Merkle, commit), and the signatures it checked."""
    bundles = [(name, src.bundle_diff(name, None)) for name in src.contexts]
    with _mode(signed) as checks:
        dst = Ledger.open(MemoryStorage(), "bench-reader", "instance")
        gc.collect()
        t0 = time.perf_counter()
        for name, bundle in bundles:
            if bundle is not None:
                dst.apply_remote(name, bundle)
        seconds = time.perf_counter() - t0
    n = dst.entry_count()
    assert n == src.entry_count() and dst.root() == src.root()
    discard(dst)
    return n / seconds, checks[0]


def bench_trust(scale: Scale) -> Table:
    table = Table("Authorship: Ed25519-signed chain heads vs the same code unsigned (same run)",
                  ["case", "signed /s", "unsigned /s", "signed/unsigned", "signatures checked",
                   "goal met"])
    single, batched = scale.single_appends, scale.batched_entries
    with tempdir("trust") as d:
        for per_commit, n in ((1, single), (100, batched)):
            ours, base = Sample(), Sample()
            for r in range(scale.repeats):
                ours.add(_appends(d / f"s{per_commit}-{r}", n, per_commit, True))
                base.add(_appends(d / f"u{per_commit}-{r}", n, per_commit, False))
            table.add(f"durable appends, {per_commit} per commit", ours.median, base.median,
                      ratio(ours.median, base.median), None,
                      ratio(ours.median, base.median) >= 0.8)
    n, contexts = scale.catchup_small, scale.catchup_small_contexts
    for per_commit in (100, 1):
        src = _source(n, contexts, per_commit)
        ours, base = Sample(), Sample()
        checked = 0
        for _ in range(scale.repeats):
            rate, checked = _catchup(src, True)
            ours.add(rate)
            base.add(_catchup(src, False)[0])
        table.add(f"cold catch-up, {n:,} × {PAYLOAD} B in {contexts} contexts, "
                  f"{per_commit} per commit", ours.median, base.median,
                  ratio(ours.median, base.median), checked, ours.median >= 50_000)
        discard(src)
    table.notes += [
        "unsigned = the same code with signing and checking replaced by no-ops",
        "appends: SQLite synchronous=FULL, one Ledger.append per commit; goal: within 20%",
        "catch-up: a fresh ledger applies each context's whole bundle (the receiver's time); "
        "one signature per writer chain is checked, however many commits made it; "
        "goal: ≥ 50,000 entries/s",
    ]
    return table
