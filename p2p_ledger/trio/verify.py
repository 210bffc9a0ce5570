"""``verify --data``'s drivers: a context of any size in bounded memory, two cores.

Theory of operation
-------------------
**Records checked apart.** Checking each stored record (its content id's sha256, canonical
form, limits, context) is ~40% of ``verify``'s work and needs nothing from the rest of the
check. ``records_checked_apart`` runs it in a second process (``python -m
p2p_ledger.trio.verify``, its own read-only connection, the rows in storage order) while
``Ledger.verify`` audits every context with the records' fields read unchecked; the contexts
it names as unsound (or all of them, if it fails) are then checked again in full, so the
answer is the one a single process gives.

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
or a fork; or for a record that fails its check) reads its file (~1/256 of the ids).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from ..core.audit import unsound_contexts
from ..core.entry import Limits
from ..core.merkle import root_of_byte_parts, root_of_keys

# why: 1M ids in a set are ~100 MB; spilled past 64k, one context of 1M entries peaked at
# 75 MiB against 166, and took 8.6-8.8 CPU-s against 9.4-10.7 (256 sorts of 4k ids cost less
# than one of 1M; alternated, load ~9); a context of fewer ids never touches the disk
SPILL_AT = 1 << 16
BUFFER_BYTES = 8 << 20  # ids buffered before they are appended to their files (256 appends)
RECENT = 1 << 16  # ids kept in memory after the spill, for ``known``: cleared past this


class SpillIds:
    """``audit.IdSet`` in a set up to ``spill_at`` ids, then in 256 files in ``directory``
    (made on the first spill, removed by ``finish``; a check that fails leaves them to the
    caller's temporary directory)."""

    def __init__(self, directory: str | os.PathLike[str], spill_at: int = SPILL_AT) -> None:
        self.directory = Path(directory)
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
    return lambda: SpillIds(Path(directory) / f"ids-{next(numbers)}", SPILL_AT)


@contextmanager
def records_checked_apart(db: Path, limits: Limits) -> Iterator[Callable[[], set[str] | None]]:
    """A second process checking every record stored in ``db`` (``audit.unsound_contexts``)
    until the ``unsound()`` given here is called: the contexts it found unsound, or None if
    it failed (then every context is to be checked in full). The process is ended on exit."""
    proc = subprocess.Popen([sys.executable, "-m", "p2p_ledger.trio.verify", str(db),
                             json.dumps(asdict(limits))],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def unsound() -> set[str] | None:
        out, _ = proc.communicate()
        try:
            return set(json.loads(out)) if proc.returncode == 0 else None
        except ValueError:
            return None

    try:
        yield unsound
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_records(db: str, limits: str) -> None:
    """The second process: every row of ``db`` in storage order, then the unsound contexts
    as a JSON list on stdout."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cursor = conn.execute("SELECT context, blob FROM updates")
        rows = (row for batch in iter(lambda: cursor.fetchmany(256), []) for row in batch)
        found = unsound_contexts(((str(name), bytes(blob)) for name, blob in rows),
                                 Limits(**json.loads(limits)))
    finally:
        conn.close()
    print(json.dumps(sorted(found)))


if __name__ == "__main__":
    _check_records(*sys.argv[1:3])
