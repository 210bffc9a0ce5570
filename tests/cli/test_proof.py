"""Inclusion proofs people can use: ``prove`` on a node, ``check-proof`` offline.

The checker trusts nothing the node says: the record must hash to the id, the path must lead
from the id to the root, the root must carry a valid signature, and with ``--key`` that signature
must be the key's the checker trusts (the node's origin, read from its status) or with
``--root`` the root must be the one it trusts (read here from a second node that synced the
context).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_ledger.core.identity import Identity
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.proof import InvalidProof, check_proof, make_proof
from p2p_ledger.core.storage import MemoryStorage

from .conftest import Procs, assert_one_line_error, json_lines, ok, run


def _ledger_with(n: int) -> Ledger:
    ledger = Ledger.open(MemoryStorage(), "a", "a-instance", now_ns=lambda: 1_800_000_000 * 10**9)
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


def test_the_root_is_signed_by_the_serving_nodes_key() -> None:
    ledger = _ledger_with(40)
    entry = ledger.get("ctx")[0][7]
    proof = json.loads(json.dumps(make_proof(ledger, "ctx", entry.id)))
    signed = proof["signed_root"]
    assert signed["key"] == ledger.origin and signed["root"] == proof["context_root"]
    assert signed["entries"] == 40 and signed["signed_at_ns"] == 1_800_000_000 * 10**9
    key = bytes.fromhex(ledger.origin)
    assert check_proof(proof, key=key).id == entry.id
    assert check_proof(proof).id == entry.id  # self-consistent without a trusted key
    mallory = Identity.from_seed("mallory")
    resigned = mallory.sign_root("ctx", bytes.fromhex(signed["root"]), 40,
                                 signed["signed_at_ns"]).to_json()
    bad_cases = {
        "another key's signature, checked against the node's key":
            (dict(proof, signed_root=resigned), key),
        "the node's statement checked against another key": (proof, mallory.public),
        "signature flipped": (dict(proof, signed_root=dict(
            signed, signature=("00" if signed["signature"][:2] != "00" else "11")
            + signed["signature"][2:])), None),
        "time edited": (dict(proof, signed_root=dict(signed, signed_at_ns=1)), None),
        "count edited": (dict(proof, signed_root=dict(signed, entries=41)), None),
        "root of another context": (dict(proof, signed_root=dict(signed, context="other")),
                                    None),
        "signed root swapped for another root's": (dict(proof, signed_root=ledger.identity
                                                        .sign_root("ctx", bytes(32), 40, 1)
                                                        .to_json()), None),
        "malformed": (dict(proof, signed_root={"key": "zz"}), None),
        "no signed root, but a key is required": (
            {k: v for k, v in proof.items() if k != "signed_root"}, key),
    }
    for name, (doc, trusted_key) in bad_cases.items():
        with pytest.raises(InvalidProof):
            check_proof(doc, key=trusted_key)
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
    # The key to trust is a's origin (read from its status: in practice, from someone you trust).
    [status] = json_lines(ok(run("status", "--node", a.url)).stdout)
    [checked] = json_lines(ok(run("check-proof", str(proof_file), "--key",
                                  status["origin"])).stdout)
    assert checked["signed_by"] == status["origin"] and checked["key_trusted"] is True
    [other] = json_lines(ok(run("status", "--node", b.url)).stdout)
    assert_one_line_error(run("check-proof", str(proof_file), "--key", other["origin"]), 1,
                          "InvalidProof")
    assert_one_line_error(run("check-proof", str(proof_file), "--key", "xyz"), 2, "UsageError")
    text = ok(run("check-proof", str(proof_file), "--key", status["origin"], "--format",
                  "text")).stdout
    assert "signed by " + status["origin"][:16] in text and "300 entries" in text
    # Tampered: another payload in the record, or a root nobody vouches for.
    doc = json.loads(proof_file.read_text())
    doc["context_root"] = "00" * 32
    proof_file.write_text(json.dumps(doc))
    assert_one_line_error(run("check-proof", str(proof_file), "--root", row["root"]), 1,
                          "InvalidProof")
    assert_one_line_error(run("prove", "--node", a.url, "facts", "ab" * 32), 2, "UnknownEntry")
    assert_one_line_error(run("check-proof", str(tmp_path / "missing.json")), 2, "UsageError")
