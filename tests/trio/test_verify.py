"""verify's ids on disk (``trio/verify.py``): past ``spill_at`` ids a context's ids go to 256
files by first byte, and ``audit``'s answer stays the one it gives with every id in a set."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

import p2p_ledger.trio.verify as verify_module
from p2p_ledger.core import audit as audit_module
from p2p_ledger.core import ledger as ledger_module
from p2p_ledger.core.audit import MemoryIds, audit, unsound_contexts
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.merkle import root_of_keys
from p2p_ledger.trio.verify import SpillIds, spilling

from ..core.helpers import byzantine_run

SEED = 20261130


def test_ids_in_files_answer_as_a_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "BUFFER_BYTES", 32 * 10)  # some flushed, some buffered
    monkeypatch.setattr(verify_module, "RECENT", 5)
    print(f"SEED={SEED}")
    rng = random.Random(SEED)
    ids = [rng.randbytes(32) for _ in range(2000)]
    ids += [bytes([7]) + rng.randbytes(31) for _ in range(50)]  # one byte's file holds many
    spilled = SpillIds(tmp_path / "ids", spill_at=100)
    for at in range(0, len(ids), 37):
        spilled.add(ids[at:at + 37])
    assert spilled.parts is not None and len(spilled.ids) <= 5 + 37  # recent ones only
    assert all(raw in spilled for raw in ids)
    others = [rng.randbytes(32) for _ in range(200)]
    # an id whose bytes straddle two stored ids is not one of them
    others += [ids[0][16:] + ids[1][:16], ids[-1][1:] + b"\x00"]
    assert not any(raw in spilled for raw in others)
    assert spilled.finish() == (root_of_keys(ids), len(ids))
    assert not (tmp_path / "ids").exists()
    small = SpillIds(tmp_path / "small", spill_at=100)
    small.add(ids[:100])
    assert small.finish() == (root_of_keys(ids[:100]), 100) and not (tmp_path / "small").exists()


@pytest.mark.parametrize("batch", [1, 256])
def test_audit_with_spilled_ids_answers_as_with_a_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """Stores with forks and entries stored twice (a byzantine member squatting and
    equivocating): every context audits to the same summary whether its ids stay in a set or
    go to files after 0, 3 or 40 of them, checked one record at a time or 256 together."""
    monkeypatch.setattr(audit_module, "CHECK_BATCH", batch)
    monkeypatch.setattr(verify_module, "BUFFER_BYTES", 32 * 7)
    monkeypatch.setattr(verify_module, "RECENT", 4)
    run = byzantine_run(["a", "b"], 4, 12)
    forks = 0
    for node in run.cluster.nodes.values():
        ledger = Ledger.open(node.storage, node.name, f"{node.name}-audit")
        for name in ledger.stored_context_names():
            args = (name, ledger.storage.iter_context(name), ledger.limits)
            want = audit(*args, ledger.stored_heads(name), MemoryIds())
            assert want is not None
            forks += want.forks
            for spill_at in (0, 3, 40):
                got = audit(name, ledger.storage.iter_context(name), ledger.limits,
                            ledger.stored_heads(name),
                            SpillIds(tmp_path / f"{node.name}-{spill_at}", spill_at))
                assert got == want, (node.name, name, spill_at)
        rows = [(name, row) for name in ledger.stored_context_names()
                for row in ledger.storage.iter_context(name)]
        assert unsound_contexts(rows, ledger.limits) == set()
        assert ledger.verify(id_sets=spilling(tmp_path / node.name)) == []
    assert forks > 0


async def test_a_second_process_shares_verify(tmp_path: Path) -> None:
    """``second_process``: a real process on the store audits its share of the contexts (here
    c0, whose record was tampered with: a problem line) and names the others holding a bad
    record (c2); ``Ledger.verify`` with it answers as alone, and so it does when the process
    cannot read the store."""
    from p2p_ledger.trio.runtime import open_node
    from p2p_ledger.trio.store import DB_NAME, SqliteStore
    from p2p_ledger.trio.verify import second_process

    data = tmp_path / "n"
    async with open_node(data, node_id="n") as node:
        for i in range(20):
            await node.append(f"c{i % 4}", f"payload-{i:04d}")
    db = sqlite3.connect(data / DB_NAME)
    with db:
        for context in ("c0", "c2"):
            (rowid, blob), = db.execute("SELECT id, blob FROM updates WHERE ctx = (SELECT id "
                                        "FROM contexts WHERE name = ?) LIMIT 1", (context,))
            at = bytes(blob).index(b"payload-")
            db.execute("UPDATE updates SET blob = ? WHERE id = ?",
                       (blob[:at] + b"P" + blob[at + 1:], rowid))
    db.close()
    store = SqliteStore(data)
    try:
        ledger = Ledger.open(store, "n", "n-verify")
        alone = ledger.verify()
        assert [line.split(":")[0] for line in alone] == ["context c0", "context c2"]
        with second_process(data / DB_NAME, ledger.limits, tmp_path) as apart:
            other = apart(["c0"], True)
            answer = other.answer()
            assert answer is not None and answer[1] == {"c2"}
            assert answer[0]["c0"] == alone[0]
        with second_process(data / DB_NAME, ledger.limits, tmp_path) as apart:
            assert ledger.verify(apart=apart) == alone
        with second_process(tmp_path / "nothing-here", ledger.limits, tmp_path) as apart:
            assert apart(["c0"], True).answer() is None
            assert ledger.verify(apart=apart) == alone
        # whole contexts split evenly, each process auditing its own in full (c0 or c2 theirs)
        for share in (0.3, 0.8):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(ledger_module, "EVEN_FLOOR", 0.0)
                patch.setattr(ledger_module, "EVEN_SHARE", share)
                asked: list[tuple[list[str], bool]] = []
                with second_process(data / DB_NAME, ledger.limits, tmp_path) as apart:
                    assert ledger.verify(apart=lambda theirs, rest, asked=asked, apart=apart: (
                        asked.append((theirs, rest)) or apart(theirs, rest))) == alone
                assert asked == [({0.3: ["c0"], 0.8: ["c0", "c1", "c2"]}[share], False)]
        with second_process(tmp_path / "nothing-here", ledger.limits, tmp_path) as apart:
            assert ledger.verify(apart=apart) == alone  # (it failed: all checked here)
    finally:
        store.close()


async def test_a_scan_gives_each_context_as_its_own_reads_do(tmp_path: Path) -> None:
    """``SqliteStore.scan`` (and ``StoreReader.scan``): one pass over runs of context ids gives
    each context asked for that holds rows or heads, with exactly the rows and heads its own
    reads give, whatever the subset (runs broken anywhere), a context left with heads and no
    rows, one with neither, and a name the store does not know."""
    from p2p_ledger.trio.runtime import open_node
    from p2p_ledger.trio.store import DB_NAME, SqliteStore

    data = tmp_path / "n"
    async with open_node(data, node_id="n") as node:
        for i in range(60):
            await node.append(f"c{(i * 7) % 12:02d}", f"payload-{i:04d}")
    db = sqlite3.connect(data / DB_NAME)
    with db:  # c05 keeps its heads, c06 has nothing left
        for name in ("c05", "c06"):
            db.execute("DELETE FROM updates WHERE ctx = (SELECT id FROM contexts WHERE name = ?)",
                       (name,))
        db.execute("DELETE FROM heads WHERE ctx = (SELECT id FROM contexts WHERE name = 'c06')")
    db.close()
    print(f"SEED={SEED}")
    rng = random.Random(SEED)
    store = SqliteStore(data)
    reader = store.reader()
    try:
        names = [f"c{i:02d}" for i in range(12)] + ["unknown"]
        for _ in range(20):
            wanted = rng.sample(names, rng.randint(0, len(names)))
            for source in (store, reader):
                got = {name: (list(rows), heads) for name, rows, heads in source.scan(wanted)}
                want = {name: (list(store.iter_context(name)), store.heads(name))
                        for name in wanted if name not in ("c06", "unknown")}
                assert got == want, wanted
                assert "c05" not in got or got["c05"][0] == []
    finally:
        reader.close()
        store.close()


def test_contexts_a_scan_did_not_give_are_verified_one_by_one() -> None:
    """A scan may end early (a read that failed): ``Ledger.verify`` reads the contexts it did
    not give one at a time, and answers as with a whole scan (a tampered context, a row that is
    no bundle and a summary with no rows among them, on either side of the end)."""
    from p2p_ledger.core.storage import MemoryStorage

    from ..core.helpers import append, open_ledger

    class EndsEarly(MemoryStorage):
        def scan(self, contexts):  # type: ignore[no-untyped-def]
            yield from list(super().scan(contexts))[:self.given]

    storage = EndsEarly()
    ledger = open_ledger(storage, "a")
    for i in range(6):
        append(ledger, f"c{i}", *[f"c{i}-{n}" for n in range(3)])
    storage.updates["c1"].append(b"not a bundle")
    row = storage.updates["c4"][0]
    at = row.index(b"c4-1")
    storage.updates["c4"][0] = row[:at] + b"X" + row[at + 1:]
    del storage.updates["c5"]  # (its summary stays)
    storage.given = 10
    whole = ledger.verify()
    assert {line.split(":")[0] for line in whole} == {"context c1", "context c4", "context c5"}
    for given in range(6):
        storage.given = given
        assert ledger.verify() == whole


def test_the_second_process_imports_neither_pycrdt_nor_trio() -> None:
    """It starts with the command, and what it imports is what its start costs: the audit and
    the store's reads, not the ledger (pycrdt) nor the runtime (trio, websockets)."""
    import subprocess
    import sys

    code = ("import sys, p2p_ledger.trio.verify; print(sorted(m for m in ('pycrdt', 'trio', "
            "'websockets', 'p2p_ledger.core.ledger') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
