"""``core.proof`` refuses what it cannot check, and says what failed.

``tests/cli/test_proof.py`` shows good proofs check and tampered ones fail; these pin the
checks that only a mutation run showed no test depended on: the Merkle path itself (every
tampered proof there also broke the signed root or the trusted root first), strict base64,
documents that are not objects, and the one-line message naming what failed.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from p2p_ledger.core.errors import UnknownEntry
from p2p_ledger.core.ledger import Ledger
from p2p_ledger.core.proof import InvalidProof, check_proof, make_proof
from p2p_ledger.core.storage import MemoryStorage


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    ledger = Ledger.open(MemoryStorage(), "a", "a-instance", now_ns=lambda: 1_800_000_000 * 10**9)
    ledger.append([ledger.prepare("ctx", "k", f"payload {i}") for i in range(40)])
    return ledger


def _proof(ledger: Ledger, index: int = 3) -> dict[str, Any]:
    entry = ledger.get("ctx")[0][index]
    return json.loads(json.dumps(make_proof(ledger, "ctx", entry.id)))


def _unsigned(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "signed_root"}


def test_make_proof_of_an_unknown_context_or_entry_is_unknown_entry(ledger: Ledger) -> None:
    with pytest.raises(UnknownEntry, match="^no entry '0+' in context 'nowhere' on this node$"):
        make_proof(ledger, "nowhere", "0" * 64)
    with pytest.raises(UnknownEntry, match="^no entry '1+' in context 'ctx' on this node$"):
        make_proof(ledger, "ctx", "1" * 64)
    with pytest.raises(UnknownEntry) as err:  # a long id is cut to 80 characters
        make_proof(ledger, "ctx", "f" * 500)
    assert repr("f" * 80) in str(err.value) and "f" * 81 not in str(err.value)


@pytest.mark.parametrize("doc", [None, [], "proof", 7, ["proof", "p2p-ledger inclusion v1"]])
def test_a_document_that_is_not_an_object_is_refused_by_name(doc: object) -> None:
    with pytest.raises(InvalidProof, match="^not a p2p-ledger inclusion proof"):
        check_proof(doc)


def test_the_merkle_path_alone_decides_when_nothing_else_is_claimed(ledger: Ledger) -> None:
    """Without a signed root or a trusted root only the path ties the entry to the root: a
    root that is not the tree's, a path of another entry, or a root of the wrong size fail."""
    good = _unsigned(_proof(ledger))
    assert check_proof(good).id == good["entry_id"]
    other_path = _proof(ledger, index=30)["merkle_proof"]
    for doc in (dict(good, context_root="11" * 32), dict(good, merkle_proof=other_path),
                dict(good, context_root=good["context_root"][:62])):
        with pytest.raises(InvalidProof, match="^the Merkle proof does not lead from the entry "
                                               "id to the root$"):
            check_proof(doc)


@pytest.mark.parametrize("field", ["record", "merkle_proof"])
def test_base64_with_characters_outside_the_alphabet_is_malformed(ledger: Ledger,
                                                                 field: str) -> None:
    good = _proof(ledger)
    assert base64.b64decode("!" + good[field]) == base64.b64decode(good[field])  # lenient
    with pytest.raises(InvalidProof, match="^malformed proof: "):
        check_proof(dict(good, **{field: "!" + good[field]}))


def test_each_refusal_names_what_failed(ledger: Ledger) -> None:
    good = _proof(ledger)
    signed = good["signed_root"]
    other = ledger.identity.sign_root("ctx", bytes(32), 40, 1).to_json()
    cases: list[tuple[dict[str, Any], bytes | None, bytes | None, str]] = [
        ({"proof": "something else"}, None, None, r"not a p2p-ledger inclusion proof \(want "
                                                  r"\"proof\": 'p2p-ledger inclusion v1'\)"),
        (_unsigned(dict(good, record=None)), None, None,
         "field 'record' is missing or not a string"),
        (dict(good, context_root="zz"), None, None, "malformed proof: .*hexadecimal.*"),
        (dict(good, record=base64.b64encode(b"\x00" * 40).decode()), None, None,
         "the record does not check: .+"),
        (dict(good, entry_id="00" * 32), None, None,
         f"the record is entry {good['entry_id']}, not {'00' * 32}"),
        (dict(good, context="other"), None, None,
         "the entry belongs to context 'ctx', not 'other'"),
        (good, bytes(32), None, f"the proof is for context root {good['context_root']}, not "
                                f"the trusted root {'00' * 32}"),
        (_unsigned(good), None, bytes.fromhex(ledger.origin),
         "the proof carries no signed root, so no key vouches for it"),
        (dict(good, signed_root=other), None, None,
         f"the signed root is {'00' * 32} of context 'ctx', not the proof's "
         f"{good['context_root']} of 'ctx'"),
        (dict(good, signed_root=dict(signed, entries=41)), None, None,
         f"the signature of {ledger.origin} on the root of ctx is not valid"),
        (good, None, bytes(32), f"the root of ctx is signed by {ledger.origin}, not by "
                                f"{'00' * 32}"),
        (dict(good, signed_root="signed"), None, None, "malformed signed root: not an object"),
        (dict(good, signed_root={"key": "zz"}), None, None, "malformed signed root: .+"),
    ]
    for doc, root, key, message in cases:
        with pytest.raises(InvalidProof) as err:
            check_proof(doc, root, key)
        assert re.fullmatch(message, str(err.value)), (message, str(err.value))
