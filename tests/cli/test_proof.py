"""Inclusion proofs people can use: ``prove`` on a node, ``check-proof`` offline.

The checker trusts nothing the node says: the record must hash to the id, the path must lead
from the id to the root, and with ``--root`` that root must be the one the checker trusts (read
here from a second node that synced the context).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.proof import InvalidProof, check_proof, make_proof
from p2p_ledger.core.storage import MemoryStorage

from .conftest import Procs, assert_one_line_error, json_lines, ok, run


def _ledger_with(n: int) -> Ledger:
    ledger = Ledger.open(MemoryStorage(), "a", "a-instance", now_ns=lambda: 1)
    ledger.append([ledger.prepare("ctx", "k", f"payload {i}") for i in range(n)])
    return ledger


@pytest.mark.parametrize("n", [1, 17, 600])  # one bucket, one split, a deep tree
def test_every_entry_proves_and_tampering_fails(n: int) -> None:
    ledger = _ledger_with(n)
    entries, _ = ledger.get("ctx")
    root = ledger.context_root("ctx")
    for entry in entries[:: max(1, n // 25)]:
        proof = make_proof(ledger, "ctx", entry.id)
        assert check_proof(json.loads(json.dumps(proof)), root).id == entry.id
    proof = make_proof(ledger, "ctx", entries[0].id)
    other = entries[-1] if n > 1 else entries[0]
    bad_cases = {
        "wrong trusted root": (dict(proof), bytes(32)),
        "record swapped": (dict(proof, record=make_proof(ledger, "ctx", other.id)["record"]),
                           None) if n > 1 else (dict(proof, entry_id="00" * 32), None),
        "root edited": (dict(proof, context_root="11" * 32), None),
        "context renamed": (dict(proof, context="other"), None),
        "not a proof": ({"hello": 1}, None),
        "garbage path": (dict(proof, merkle_proof="AAAA"), None),
    }
    for name, (doc, trusted) in bad_cases.items():
        with pytest.raises(InvalidProof):
            check_proof(doc, trusted)
            pytest.fail(name)


def test_prove_and_check_proof_against_real_nodes(procs: Procs, tmp_path: Path) -> None:
    a = procs.node("a", "--node-id", "a")
    b = procs.node("b", "--node-id", "b", "--peer", a.url)
    lines = "\n".join(f"fact {i}" for i in range(300))
    entries = json_lines(ok(run("append", "--node", a.url, "facts", "-", stdin=lines)).stdout)
    target = entries[123]["id"]
    # The root to trust comes from another node, once it holds the same entries.
    while True:
        roots = {n.url: json_lines(ok(run("contexts", "--node", n.url)).stdout) for n in (a, b)}
        if roots[a.url] == roots[b.url]:
            break
    [row] = roots[b.url]
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(ok(run("prove", "--node", a.url, "facts", target)).stdout)
    [checked] = json_lines(ok(run("check-proof", str(proof_file), "--root", row["root"])).stdout)
    assert checked["ok"] is True and checked["entry_id"] == target
    assert checked["entry"]["payload"] == "fact 123"
    # Tampered: another payload in the record, or a root nobody vouches for.
    doc = json.loads(proof_file.read_text())
    doc["context_root"] = "00" * 32
    proof_file.write_text(json.dumps(doc))
    assert_one_line_error(run("check-proof", str(proof_file), "--root", row["root"]), 1,
                          "InvalidProof")
    assert_one_line_error(run("prove", "--node", a.url, "facts", "ab" * 32), 2, "UnknownEntry")
    assert_one_line_error(run("check-proof", str(tmp_path / "missing.json")), 2, "UsageError")
