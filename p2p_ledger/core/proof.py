"""Inclusion proofs a third party checks offline: "this entry is in this context's tree".

Theory of operation
-------------------
A node answers ``prove(context, entry_id)`` with a JSON object (``make_proof``)::

    {"proof": "p2p-ledger inclusion v1", "context": ..., "entry_id": hex,
     "record": base64(id + canonical encoding), "context_root": hex,
     "merkle_proof": base64(merkle.Proof.encode()),
     "signed_root": {"context", "root": hex, "entries", "signed_at_ns", "key": hex,
                     "signature": hex}}

``signed_root`` is the serving node's ``identity.SignedRoot``: its key (the node's origin, as
``status`` shows it) vouches that at ``signed_at_ns`` its copy of the context had this root.

``check_proof`` needs nothing but that object, and to mean anything a root or a key the checker
trusts from elsewhere: the record must hash to ``entry_id`` (so the entry's content is what was
proved), belong to ``context``, and the Merkle proof must lead from the id to ``context_root``
(``merkle.verify_proof``: the path is rebuilt from the id's own nibbles, so a proof cannot move
an item). A ``signed_root``, when present, must carry a valid signature over that very context
and root; with a ``key`` the checker trusts (e.g. a node's origin), it must be that key's. The
node that made the proof is not trusted for any of it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .entry import ID_SIZE, Entry, decode_record
from .errors import ForgedEntry, LedgerError, RemoteProtocolError, UnknownEntry
from .identity import SignedRoot
from .ledger import Ledger
from .merkle import Proof, verify_proof

PROOF_KIND = "p2p-ledger inclusion v1"


class InvalidProof(RemoteProtocolError):
    """A proof that is malformed or does not prove what it claims."""


def make_proof(ledger: Ledger, context: str, entry_id: str) -> dict[str, Any]:
    """The inclusion proof of ``entry_id`` in ``context`` (UnknownEntry if it is not here)."""
    ctx = ledger.contexts.get(context)
    entry = None if ctx is None else ctx.by_id.get(entry_id)
    if ctx is None or entry is None:
        raise UnknownEntry(f"no entry {entry_id[:80]!r} in context {context!r} on this node")
    proof = ctx.tree.prove(bytes.fromhex(entry.id))
    root = ctx.root()
    signed = ledger.identity.sign_root(context, root, len(ctx), ledger.now_ns())
    return {"proof": PROOF_KIND, "context": context, "entry_id": entry.id,
            "record": base64.b64encode(entry.record).decode("ascii"),
            "context_root": root.hex(), "merkle_proof": _b64(proof.encode()),
            "signed_root": signed.to_json()}


def check_proof(doc: object, root: bytes | None = None, key: bytes | None = None) -> Entry:
    """The proved entry, if ``doc`` proves it is in the context tree with root ``root`` (the
    proof's own ``context_root`` when None) and, with ``key``, that the root is signed by that
    public key; InvalidProof, naming what failed, otherwise."""
    if not isinstance(doc, dict) or doc.get("proof") != PROOF_KIND:
        raise InvalidProof(f"not a p2p-ledger inclusion proof (want \"proof\": {PROOF_KIND!r})")
    fields = {}
    for name in ("context", "entry_id", "record", "context_root", "merkle_proof"):
        value = doc.get(name)
        if not isinstance(value, str):
            raise InvalidProof(f"field {name!r} is missing or not a string")
        fields[name] = value
    try:
        record = base64.b64decode(fields["record"], validate=True)
        proof = Proof.decode(base64.b64decode(fields["merkle_proof"], validate=True))
        claimed_root = bytes.fromhex(fields["context_root"])
        entry = decode_record(record)  # re-hashes: the content is what the id names
    except (ValueError, binascii.Error) as exc:
        raise InvalidProof(f"malformed proof: {exc}") from None
    except LedgerError as exc:
        raise InvalidProof(f"the record does not check: {exc}") from None
    if entry.id != fields["entry_id"]:
        raise InvalidProof(f"the record is entry {entry.id}, not {fields['entry_id']}")
    if entry.context != fields["context"]:
        raise InvalidProof(f"the entry belongs to context {entry.context!r}, not "
                           f"{fields['context']!r}")
    if root is not None and claimed_root != root:
        raise InvalidProof(f"the proof is for context root {claimed_root.hex()}, not the "
                           f"trusted root {root.hex()}")
    signed = signed_root(doc)
    if signed is None and key is not None:
        raise InvalidProof("the proof carries no signed root, so no key vouches for it")
    if signed is not None:
        if (signed.context, signed.root) != (entry.context, claimed_root):
            raise InvalidProof(f"the signed root is {signed.root.hex()} of context "
                               f"{signed.context!r}, not the proof's {claimed_root.hex()} of "
                               f"{entry.context!r}")
        try:
            signed.verify(key)
        except ForgedEntry as exc:
            raise InvalidProof(str(exc)) from None
    if len(claimed_root) != ID_SIZE or not verify_proof(claimed_root, bytes.fromhex(entry.id),
                                                        b"", proof):
        raise InvalidProof("the Merkle proof does not lead from the entry id to the root")
    return entry


def signed_root(doc: dict[str, Any]) -> SignedRoot | None:
    """The proof's signed root (not checked yet); None when it has none."""
    raw = doc.get("signed_root")
    if raw is None:
        return None
    try:
        if not isinstance(raw, dict):
            raise TypeError("not an object")
        return SignedRoot.from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidProof(f"malformed signed root: {exc}") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
