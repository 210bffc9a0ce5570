"""The streamed check of a context's rows (``core/audit.py``) against a full rebuild.

``verify`` no longer rebuilds a ``ContextLog``: ``audit`` reads the rows once and recomputes
the summary. Its answer must be the rebuild's on every store the other tests and the simulator
make (forks, squatted positions re-inserted by id, byzantine members, tail losses, pending Yjs
structs), and it must catch what the rebuild catches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pycrdt import Array, Doc, merge_updates

import p2p_ledger.core.ledger as ledger_module
from p2p_ledger.core.audit import audit
from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.errors import ForgedEntry
from p2p_ledger.core.identity import Head
from p2p_ledger.core.ledger import Ledger, same_summary, summarize
from p2p_ledger.core.storage import MemoryStorage, Summary
from p2p_ledger.sim import load_scenario
from p2p_ledger.sim.runner import ScenarioRun
from p2p_ledger.testing import bundled, forged_update

from .helpers import (
    HEADS,
    append,
    append_after_last,
    byzantine_run,
    chain_entries,
    heads_for,
    open_ledger,
    sync,
)

SCENARIOS = Path(__file__).parents[2] / "scenarios"


def audited(ledger: Ledger, name: str) -> Summary | None:
    return audit(name, ledger.storage.iter_context(name), ledger.limits, ledger.stored_heads(name))


def rebuilt(ledger: Ledger, name: str) -> Summary:
    fresh, stored = ledger._read(name, verify=True)
    return summarize(fresh, stored)


def same_as_rebuild(ledger: Ledger) -> int:
    """Every stored context audits to what a rebuild gives; returns how many audited (the
    others hold pending structs and are rebuilt by verify)."""
    done = 0
    for name in ledger.stored_context_names():
        found = audited(ledger, name)
        if found is not None:
            want = rebuilt(ledger, name)
            assert same_summary(found, want) and found.stored == want.stored, name
            done += 1
    return done


@pytest.mark.slow
@pytest.mark.parametrize("name", ["byzantine_member", "tail_loss"])
def test_simulated_stores_audit_like_a_rebuild(name: str) -> None:
    run = ScenarioRun(load_scenario(SCENARIOS / f"{name}.toml"))
    report = run.run()
    assert report.passed
    audited_contexts = 0
    for node in run.cluster.nodes.values():
        ledger = Ledger.open(node.storage, node.name, f"{node.name}-audit")
        audited_contexts += same_as_rebuild(ledger)
        assert ledger.verify() == []
    assert audited_contexts > 0


def test_forks_and_entries_found_by_id_audit_like_a_rebuild() -> None:
    run = byzantine_run(["a", "b", "c"], 3, 15)
    forks = 0
    for node in run.cluster.nodes.values():
        ledger = Ledger.open(node.storage, node.name, f"{node.name}-audit")
        assert same_as_rebuild(ledger) == len(ledger.stored_context_names())
        forks += ledger.fork_count()
    assert forks > 0


def test_pending_structs_are_left_to_a_rebuild_until_they_settle() -> None:
    x, z = open_ledger(MemoryStorage(), "x"), open_ledger(MemoryStorage(), "z")
    b = open_ledger(MemoryStorage(), "b")
    first = append(x, "c1", "x0").updates[0][1]
    sync(x, z, "c1")
    append(z, "c1", "z0")
    sync(z, x, "c1")
    waits = append_after_last(x, "c1", "x1")  # its Yjs origin is z's item, which b lacks
    b.apply_remote("c1", first)
    b.apply_remote("c1", waits)
    assert audited(b, "c1") is None  # yrs holds x1 pending: verify rebuilds this one
    assert b.verify() == []
    sync(z, b, "c1")
    assert same_as_rebuild(b) == 1 and b.context_entries("c1") == 3
    assert b.verify() == []


def test_a_struct_waits_for_its_right_origin_too() -> None:
    """An item inserted before another (its Yjs right origin) that the store lacks is pending
    in yrs as one whose left origin is missing: left to a rebuild, then audited once the
    right origin arrives (mutation sample: ``>`` for ``>=`` on the right origin's clock took
    it while it waited for the very next struct of that client)."""
    [x1], [y1] = chain_entries("x", [1], "ctx"), chain_entries("y", [1], "ctx")
    first = Doc(client_id=1)
    first.get("entries", type=Array).append(x1.record)
    second = Doc(client_id=2)
    second.apply_update(first.get_update())
    second.get("entries", type=Array).insert(0, y1.record)  # right origin: x1, client 1 clock 0
    before = second.get_update(first.get_state())
    b = open_ledger(MemoryStorage(), "b")
    b.apply_remote("ctx", bundled(before, heads_for([y1])))
    assert audited(b, "ctx") is None and b.verify() == []
    b.apply_remote("ctx", bundled(first.get_update(), heads_for([x1])))
    assert same_as_rebuild(b) == 1 and b.context_entries("ctx") == 2


def test_verify_builds_no_context(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = open_ledger(MemoryStorage(), "a")
    for i in range(5):
        append(ledger, f"c{i}", *[f"p{i}-{j}" for j in range(30)])
    reopened = open_ledger(ledger.storage, "a", "a-2")

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("verify built a ContextLog")

    monkeypatch.setattr(ledger_module, "ContextLog", refuse)
    assert reopened.verify() == []
    assert reopened.loads == 0 and reopened.live_contexts() == []


def test_an_unvouched_entry_is_reported() -> None:
    storage = MemoryStorage()
    ledger = open_ledger(storage, "a")
    append(ledger, "ctx", "fine")
    [entry] = chain_entries("z", [1], "ctx")
    storage.updates["ctx"].append(encode_bundle((), forged_update([entry.record])))
    with pytest.raises(ForgedEntry, match="no signature"):
        audited(ledger, "ctx")
    problems = ledger.verify()
    assert len(problems) == 1 and "no signature" in problems[0]


def test_a_chain_stored_before_its_first_entries_in_one_row_is_vouched_for() -> None:
    """One stored row can hold a writer's seqs 2-3 (one Yjs client's struct) before its seq 1
    (another client's: yrs writes clients in descending order), as a simulated receiver of a
    hostile member's fork stored them. Seq 3's head vouches for 2, and 2 names 1: all three
    are authentic. Found from outside (fuzz seed 2672514770, 6 nodes, 60 s): records checked in
    batches across structs counted seq 1 as offered before it was, and verify called it
    forged."""
    e1, e2, e3 = chain_entries("z", [1, 2, 3], "ctx")
    update = merge_updates(forged_update([e2.record, e3.record], client_id=2),
                           forged_update([e1.record], client_id=1))
    row = encode_bundle(heads_for([e3]), update)
    storage = MemoryStorage()
    storage.updates["ctx"] = [row]
    found = audit("ctx", [row], Ledger.open(MemoryStorage(), "a", "a-1").limits)
    assert found is not None and found.entries == 3
    assert open_ledger(storage, "a").verify() == []


def test_a_bad_head_counts_only_where_nothing_else_vouches() -> None:
    """As ``ContextLog.authenticate``: a head is needed only for an entry no authentic
    successor names; a broken signature there is a problem, elsewhere it is ignored."""
    e1, e2 = chain_entries("z", [1, 2], "ctx")
    good = HEADS[bytes.fromhex(e2.id)]
    h1 = HEADS[bytes.fromhex(e1.id)]
    broken = Head(h1.origin, h1.chain, h1.seq, h1.entry_id, bytes(64))
    rows = [encode_bundle((broken,), forged_update([e1.record], client_id=1)),
            encode_bundle((good,), forged_update([e2.record], client_id=2))]
    storage = MemoryStorage()
    storage.updates["ctx"] = list(rows)
    assert open_ledger(storage, "a").verify() == []  # e2's head vouches for e2, e2 for e1
    with pytest.raises(ForgedEntry, match="not valid"):
        audit("ctx", rows[:1], Ledger.open(MemoryStorage(), "a", "a-1").limits)


def test_positions_seen_out_of_order_join_the_run_once_the_gap_fills() -> None:
    """``audit``'s fork count: a writer's seqs can arrive out of order (late arrivals); once the
    gap fills, every seq seen is taken (a second entry there is a fork) and the next is new."""
    from p2p_ledger.core.audit import _Positions

    positions = _Positions()
    assert [positions.add(s) for s in (1, 3, 4, 2)] == [True] * 4
    assert positions.run == 4 and not positions.beyond
    assert [positions.add(s) for s in (1, 2, 3, 4, 5)] == [False] * 4 + [True]


@pytest.mark.parametrize("batch", [1, 2, 4096])
def test_the_first_problem_in_store_order_is_the_one_reported(
        monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """Records are checked in batches after their rows are read: a bad record is still the
    problem reported when a later row is malformed or the store fails to give the next row."""
    from p2p_ledger.core import audit as audit_module
    from p2p_ledger.core.errors import IntegrityError, RemoteProtocolError, StoreDamagedError

    monkeypatch.setattr(audit_module, "CHECK_BATCH", batch)
    e1, e2 = chain_entries("z", [1, 2], "ctx")
    tampered = e2.record[:-60] + bytes([e2.record[-60] ^ 1]) + e2.record[-59:]
    good = encode_bundle((), forged_update([e1.record], client_id=1))
    bad = encode_bundle((), forged_update([tampered], client_id=2))
    limits = Ledger.open(MemoryStorage(), "a", "a-1").limits
    with pytest.raises(IntegrityError) as first:
        audit("ctx", [good, bad], limits)
    with pytest.raises(IntegrityError) as err:
        audit("ctx", [good, bad, b"not a bundle"], limits)
    assert str(err.value) == str(first.value)

    def failing() -> Iterator[bytes]:
        yield good
        yield bad
        raise StoreDamagedError("the next row is unreadable")

    with pytest.raises(IntegrityError) as err:
        audit("ctx", failing(), limits)
    assert str(err.value) == str(first.value)
    with pytest.raises(RemoteProtocolError):  # with no bad record before it, the row's own
        audit("ctx", [good, b"not a bundle"], limits)


def test_verify_reports_progress_within_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """One big context is not a silent wait: ``progress`` hears of every batch of entries."""
    from p2p_ledger.core import audit as audit_module

    monkeypatch.setattr(audit_module, "CHECK_BATCH", 10)
    ledger = open_ledger(MemoryStorage(), "a")
    for row in range(6):
        append(ledger, "big", *[f"p{row}-{i}" for i in range(20)])
    calls: list[tuple[int, int, int]] = []
    assert open_ledger(ledger.storage, "a", "a-2").verify(
        lambda *args: calls.append(args)) == []
    assert calls[-1] == (1, 1, 120)
    within = [entries for done, _, entries in calls if done == 0]
    assert within == sorted(within) and len(within) >= 5 and 0 < within[0] < 120


@pytest.mark.parametrize("batch", [1, 256])
def test_an_entry_stored_again_is_counted_once_and_skipped_unchecked(
        monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """An id counted before, stored again by another Yjs client (in the same batch of records
    or a later one), is the same entry: counted once and, as a rebuild does, not checked again,
    even with a body that would fail (``audit`` asks whether an id was counted only at a taken
    position or for a record that fails its check)."""
    from p2p_ledger.core import audit as audit_module

    monkeypatch.setattr(audit_module, "CHECK_BATCH", batch)
    e1, e2 = chain_entries("z", [1, 2], "ctx")
    garbled = e1.record[:40] + b"\x00" + e1.record[41:]
    rows = [encode_bundle((), forged_update([e1.record], client_id=1)),
            encode_bundle((), forged_update([garbled], client_id=2)),
            encode_bundle((), forged_update([e1.record, garbled], client_id=3)),
            encode_bundle(heads_for([e2]), forged_update([e2.record], client_id=4))]
    storage = MemoryStorage()
    storage.updates["ctx"] = list(rows)
    ledger = Ledger.open(storage, "a", "a-1")
    found = audited(ledger, "ctx")
    assert found is not None and found.entries == 2 and found.forks == 0
    assert same_summary(found, rebuilt(ledger, "ctx"))


class _InProcess:
    """``Ledger.verify``'s ``apart`` in this process: what ``trio/verify.py``'s second process
    answers (its contexts audited as ``verify_context`` audits one, the other records checked),
    or as it answers when it fails (None) or settles none of its contexts."""

    def __init__(self, ledger: Ledger, theirs: list[str], rest: bool, how: str) -> None:
        from p2p_ledger.core.audit import unsound_contexts
        from p2p_ledger.core.errors import LedgerError

        self.theirs = theirs
        audited: dict[str, Summary | str | None] = {}
        for name in theirs:
            try:
                audited[name] = audited_or_none(ledger, name)
            except LedgerError as exc:
                audited[name] = f"context {name}: {exc}"
        rows = [(name, row) for name in ledger.stored_context_names() if name not in theirs
                for row in ledger.storage.iter_context(name)]
        unsound = unsound_contexts(rows, ledger.limits) if rest else set()
        self.answered = None if how == "failed" else (
            ({}, unsound) if how == "settled none" else (audited, unsound))

    def answer(self) -> tuple[dict[str, Summary | str | None], set[str]] | None:
        return self.answered


def audited_or_none(ledger: Ledger, name: str) -> Summary | None:
    return audit(name, ledger.storage.iter_context(name), ledger.limits,
                 ledger.stored_heads(name))


@pytest.mark.parametrize("share, even", [(0.0, False), (0.5, False), (1.0, False),
                                         (0.5, True), (1.0, True)])
def test_verify_shared_with_another_process_answers_as_one(
        monkeypatch: pytest.MonkeyPatch, share: float, even: bool) -> None:
    """``Ledger.verify`` with ``apart`` (another process auditing a share of the contexts and,
    unless the share is an even split, checking every other record, ``unsound_contexts``,
    while the rest are audited here with their records' fields read unchecked) reports exactly
    what it reports alone: a forged entry, a tampered record, a row that is no bundle, an entry
    stored again with a garbled body (skipped), whichever process had them; and so it does when
    the other process failed or settled none of its contexts."""
    from p2p_ledger.core.audit import unsound_contexts

    if even:  # (whole contexts up to ``share``, each process auditing its own in full)
        monkeypatch.setattr(ledger_module, "EVEN_SHARE", share)
        monkeypatch.setattr(ledger_module, "EVEN_FLOOR", 0.0)
    else:
        monkeypatch.setattr(ledger_module, "APART_SHARE", share)
        monkeypatch.setattr(ledger_module, "EVEN_FLOOR", 2.0)
    ledger = open_ledger(MemoryStorage(), "a")
    for name in ("again", "good", "junk", "tampered"):
        append(ledger, name, *[f"{name}-{i}" for i in range(5)])
    storage = ledger.storage
    [forged] = chain_entries("z", [1], "forged")
    storage.updates["forged"] = [encode_bundle((), forged_update([forged.record]))]
    [e1] = chain_entries("y", [1], "tampered")
    tampered = e1.record[:-60] + bytes([e1.record[-60] ^ 1]) + e1.record[-59:]
    storage.updates["tampered"].append(encode_bundle(heads_for([e1]), forged_update([tampered])))
    storage.updates["junk"].append(b"not a bundle")
    [again] = chain_entries("x", [1], "again")
    garbled = again.record[:40] + b"\x00" + again.record[41:]
    storage.updates["again"] += [
        encode_bundle(heads_for([again]), forged_update([again.record], client_id=7)),
        encode_bundle((), forged_update([garbled], client_id=8))]
    rows = [(name, row) for name, kept in storage.updates.items() for row in kept]
    assert unsound_contexts(rows, ledger.limits) == {"tampered", "junk", "again"}
    alone = ledger.verify()
    assert [line.split(":")[0] for line in alone] == [
        "context again", "context again", "context forged", "context junk", "context tampered"]
    assert "6 entries" in alone[0]  # (not 7: the garbled body is the same entry again)
    shared: list[tuple[list[str], bool]] = []
    for how in ("answered", "failed", "settled none"):
        assert ledger.verify(apart=lambda theirs, rest, how=how: (  # type: ignore[misc]
            shared.append((theirs, rest)) or _InProcess(ledger, theirs, rest, how))) == alone
    want = {0.0: [], 0.5: ["again", "forged"], 1.0: ledger.stored_context_names()}[share]
    assert shared == [(want, not even)] * 3
