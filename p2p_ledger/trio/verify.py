"""``verify --data``'s drivers: a context of any size in bounded memory, two cores.

Theory of operation
-------------------
**A second process.** ``SecondProcess`` (``python -m p2p_ledger.trio.verify``, a read
connection of its own) starts with the command, so its interpreter and imports overlap the
store's open, and waits for its plan. Over many contexts it audits in full about half the
work (``ledger.EVEN_SHARE``, whole contexts) while ``Ledger.verify`` audits the rest in full;
it imports neither the ledger nor pycrdt, so it starts working first.
When a few contexts hold most of the entries, no even split of whole contexts exists: it
audits ``ledger.APART_SHARE`` of the work, then checks every other stored record
(``audit.unsound_contexts``; checking a record is ~30-40% of ``verify``'s work and needs
nothing from the rest of the check), while ``Ledger.verify`` audits the rest with their
records' fields read unchecked. Its contexts are judged against their summaries as ours are;
the contexts it names as unsound, and any it did not settle (all of them, if it fails), are
then checked again in full, so the answer is the one a single process gives.

**Ids on disk.** ``audit`` counts each entry of a context once and computes the context's
Merkle root from the ids at the end, so it keeps every id it counted (``audit.IdSet``). In a
set that is ~100 B per id: 1M entries in one context peaked at 167 MiB, 10M would need ~1.3 GB.
``SpillIds`` holds them in a set up to ``SPILL_AT`` ids (a small context never touches the
disk), then moves them into 256 files by first byte (32 bytes per id, appended from a buffer
of ``BUFFER_BYTES``) and keeps only the ids of the last batches in memory, for
``Authorship.known`` (an id missing there costs one note kept for nothing, never a verdict).
The root comes from the files one at a time, each read, sorted and hashed alone
(``merkle.root_of_byte_parts``): memory for 1/256 of the ids. The exact question "was this id
counted?" (asked only for an entry at a position already taken: the same entry stored again,
or a fork; or for a record that fails its check) reads its file (~1/256 of the ids). One
context of 10M entries: peak RSS 118 MiB (53 in the second process), against ~1.3 GB in a set.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ..core.audit import audit, unsound_contexts
from ..core.entry import Limits
from ..core.errors import LedgerError
from ..core.identity import Head
from ..core.merkle import root_of_byte_parts, root_of_keys
from ..core.storage import Summary
from .store import StoreReader

# why: 1M ids in a set are ~100 MB; spilled past 64k, one context of 1M entries peaked at
# 75 MiB against 166, and took 8.6-8.8 CPU-s against 9.4-10.7 (256 sorts of 4k ids cost less
# than one of 1M; alternated, load ~9); a context of fewer ids never touches the disk
SPILL_AT = 1 << 16
BUFFER_BYTES = 8 << 20  # ids buffered before they are appended to their files (256 appends)
RECENT = 1 << 16  # ids kept in memory after the spill, for ``known``: cleared past this
_NOWHERE = Path()


class SpillIds:
    """``audit.IdSet`` in a set up to ``spill_at`` ids, then in 256 files in ``directory``
    (made on the first spill, removed by ``finish``; a check that fails leaves them to the
    caller's temporary directory)."""

    def __init__(self, directory: str | os.PathLike[str], spill_at: int = SPILL_AT) -> None:
        self.where = directory  # (a Path only once it spills: one context of 10 ids is a set)
        self.directory = _NOWHERE
        self.spill_at = spill_at
        self.ids: set[bytes] = set()  # all ids, then (spilled) the recent ones: ``known``
        self.parts: list[bytearray] | None = None  # buffered per first byte, once spilled
        self.counts = [0] * 256
        self.buffered = 0

    def add(self, ids: list[bytes]) -> None:
        if self.parts is None:
            self.ids.update(ids)
            if len(self.ids) > self.spill_at:
                self._spill()
            return
        self._append(ids)
        if len(self.ids) > RECENT:
            self.ids.clear()  # (the same set object: ``known`` is read once by ``audit``)
        self.ids.update(ids)

    def __contains__(self, raw: object) -> bool:
        if raw in self.ids:
            return True
        if self.parts is None or not isinstance(raw, bytes) or len(raw) != 32:
            return False
        return _holds(self.parts[raw[0]], raw) or _holds(self._stored(raw[0]), raw)

    @property
    def known(self) -> Container[bytes]:
        return self.ids

    def finish(self) -> tuple[bytes, int]:
        """The root and count; the files are removed."""
        if self.parts is None:
            return root_of_keys(self.ids), len(self.ids)
        self._flush()
        self.ids.clear()
        found = root_of_byte_parts(self._part, self.counts), sum(self.counts)
        for first in range(256):
            self._path(first).unlink(missing_ok=True)
        self.directory.rmdir()
        return found

    def _spill(self) -> None:
        self.directory = Path(self.where)
        self.directory.mkdir()
        self.parts = [bytearray() for _ in range(256)]
        self._append(list(self.ids))
        self.ids.clear()

    def _append(self, ids: list[bytes]) -> None:
        assert self.parts is not None
        parts, counts = self.parts, self.counts
        for raw in ids:
            parts[raw[0]] += raw
            counts[raw[0]] += 1
        self.buffered += len(ids)
        if self.buffered * 32 >= BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        assert self.parts is not None
        for first, buffer in enumerate(self.parts):
            if buffer:
                with open(self._path(first), "ab") as f:
                    f.write(buffer)
                buffer.clear()
        self.buffered = 0

    def _path(self, first: int) -> Path:
        return self.directory / f"{first:02x}"

    def _stored(self, first: int) -> bytes:
        try:
            return self._path(first).read_bytes()
        except FileNotFoundError:
            return b""

    def _part(self, first: int) -> list[bytes]:
        data = self._stored(first)
        return sorted(data[at:at + 32] for at in range(0, len(data), 32))


def _holds(data: bytes | bytearray, raw: bytes) -> bool:
    """Whether ``raw`` is one of the 32-byte ids laid end to end in ``data``."""
    at = data.find(raw)
    while at >= 0:
        if at % 32 == 0:
            return True
        at = data.find(raw, at + 1)
    return False


def spilling(directory: str | os.PathLike[str]) -> Callable[[], SpillIds]:
    """A new ``SpillIds`` per context, each in a directory of its own under ``directory``."""
    numbers = itertools.count()
    base = os.fspath(directory)
    return lambda: SpillIds(f"{base}/ids-{next(numbers)}", SPILL_AT)


class SecondProcess:
    """``Ledger.verify``'s ``Apart``: ``python -m p2p_ledger.trio.verify`` on the store's file
    (a connection of its own), started at once so that its interpreter and imports overlap
    this process's own start; ``start`` hands it its plan: audit the contexts given in full,
    then (``rest``) check every other stored record (``audit.unsound_contexts``). ``close``
    ends it if it still runs (without a plan it exits as it reads its input's end)."""

    def __init__(self, db: Path, limits: Limits, plan: Path) -> None:
        self.plan = plan
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2p_ledger.trio.verify", str(db),
             json.dumps(asdict(limits)), str(plan)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def start(self, theirs: list[str], rest: bool) -> SecondProcess:
        # (a file: any number of contexts, no pipe to fill; a line on its input says "go")
        self.plan.write_text(json.dumps({"theirs": theirs, "rest": rest}))
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()
        except OSError:  # (it died: ``answer`` says it failed)
            pass
        return self

    def answer(self) -> tuple[dict[str, Summary | str | None], set[str]] | None:
        out = self.proc.stdout.read() if self.proc.stdout is not None else b""
        if self.proc.wait() != 0:
            return None
        try:
            got = json.loads(out)
            audited: dict[str, Summary | str | None] = {
                name: found if found is None or isinstance(found, str) else Summary(
                    bytes.fromhex(found[0]), found[1], bytes.fromhex(found[2]), *found[3:])
                for name, found in got["audited"].items()}
            return audited, set(got["unsound"])
        except (ValueError, KeyError, TypeError, IndexError):
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def second_process(db: Path, limits: Limits, directory: Path,
                   ) -> Iterator[Callable[[list[str], bool], SecondProcess]]:
    """What ``Ledger.verify`` takes as ``apart``: a ``SecondProcess`` on ``db``, started on
    entry (its plan written in ``directory`` when ``Ledger.verify`` calls ``apart``), ended on
    exit. A second call of ``apart`` starts another."""
    started = [SecondProcess(db, limits, directory / "plan-0.json")]
    planned = 0

    def start(theirs: list[str], rest: bool) -> SecondProcess:
        nonlocal planned
        if planned == len(started):
            started.append(SecondProcess(db, limits, directory / f"plan-{planned}.json"))
        planned += 1
        return started[planned - 1].start(theirs, rest)

    try:
        yield start
    finally:
        for other in started:
            other.close()


def _share(db: str, limits_json: str, plan: str) -> None:
    """The second process: once told to go, audit the contexts of the plan, then (``rest``)
    check every other stored record; print what it found as one JSON object."""
    limits = Limits(**json.loads(limits_json))
    if sys.stdin.readline() != "go\n":
        return  # (not needed after all)
    told = json.loads(Path(plan).read_text())
    theirs: list[str] = told["theirs"]
    reader = StoreReader(Path(db))
    audited: dict[str, object] = {}
    unsound: set[str] = set()
    try:
        with tempfile.TemporaryDirectory(prefix="p2p-ledger-verify-") as ids:
            id_sets = spilling(ids)
            for name, rows, heads in reader.scan(theirs):  # (as ``Ledger.verify`` audits one)
                try:
                    found = audit(name, rows, limits, [Head.from_bytes(raw) for raw in heads],
                                  id_sets())
                    audited[name] = None if found is None else [
                        found.root.hex(), found.entries, found.state_vector.hex(),
                        found.max_lamport, found.forks, found.stored]
                except LedgerError as exc:
                    audited[name] = f"context {name}: {exc}"
                except Exception:
                    audited[name] = None  # (left to the first process)
        if told["rest"]:
            skip = set(theirs)
            unsound = unsound_contexts(((name, row) for name, row in reader.all_rows()
                                        if name not in skip), limits)
    finally:
        reader.close()
    print(json.dumps({"audited": audited, "unsound": sorted(unsound)}))


if __name__ == "__main__":
    _share(*sys.argv[1:4])
