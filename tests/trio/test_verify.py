"""verify's ids on disk (``trio/verify.py``): past ``spill_at`` ids a context's ids go to 256
files by first byte, and ``audit``'s answer stays the one it gives with every id in a set."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

import p2p_ledger.trio.verify as verify_module
from p2p_ledger.core import audit as audit_module
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
            other = apart(["c0"])
            answer = other.answer()
            assert answer is not None and answer[1] == {"c2"}
            assert answer[0]["c0"] == alone[0]
        with second_process(data / DB_NAME, ledger.limits, tmp_path) as apart:
            assert ledger.verify(apart=apart) == alone
        with second_process(tmp_path / "nothing-here", ledger.limits, tmp_path) as apart:
            assert apart(["c0"]).answer() is None
            assert ledger.verify(apart=apart) == alone
    finally:
        store.close()
