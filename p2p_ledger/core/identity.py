"""Node identity and signed chain heads: who wrote an entry, proven with Ed25519.

Theory of operation
-------------------
Every data directory owns one Ed25519 key pair (the driver creates it on first open and keeps it
in the directory; this module only computes). An entry's ``origin`` is the hex of the public key,
so a verifier needs nothing but the entry to know which key must have signed it.

A node does not sign entries one by one (an Ed25519 verify costs ~65 µs here, one per 100 B
entry would cap catch-up near 15k entries/s). Each *writer* — one origin during one open of its
data directory, in one context: ``origin.chain`` — keeps a hash chain: every entry names the id
of the writer's previous entry (``prev``), and each commit signs only the chain's new head, a
``Head`` = (context, origin, chain, seq, entry id). One valid head authenticates its entry and,
through the ``prev`` links, every earlier entry of the chain, as Hypercore's signed tree roots
authenticate every block below them. A cold reader verifies one signature per writer, not one
per entry.

``chain`` is fresh on every open (derived from the open's random instance id): a node that lost
the tail of its store (a restored backup, a disk that lied about fsync) starts a new chain
instead of re-signing the seqs it already used, so an honest node never signs two entries for
one position. Two valid heads (or chains) that put two different entries at one position are a
*fork*: the proof is the pair of signed statements (see ``fork_proof`` in context_log).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import ForgedEntry, IntegrityError

HEAD_DOMAIN = b"p2p-ledger head v1\x00"
ROOT_DOMAIN = b"p2p-ledger context root v1\x00"
LINK_DOMAIN = b"p2p-ledger link v1\x00"
KEY_SIZE = 32
SIG_SIZE = 64
HEAD_SIZE = KEY_SIZE + 8 + 8 + 32 + SIG_SIZE  # origin, chain, seq, entry id, signature
_HEAD = struct.Struct(">32sQQ32s64s")


class Identity:
    """A node's signing key. ``origin`` (hex public key) is what entries carry."""

    __slots__ = ("_key", "origin", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.origin = self.public.hex()

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        if len(raw) != KEY_SIZE:
            raise ValueError(f"an Ed25519 private key is {KEY_SIZE} bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def from_seed(cls, seed: str | bytes) -> Identity:
        """A key derived from ``seed``: deterministic, for simulations and tests only (anyone
        who knows the seed can sign as this identity)."""
        raw = seed.encode() if isinstance(seed, str) else seed
        return cls.from_private_bytes(hashlib.sha256(b"p2p-ledger test key\x00" + raw).digest())

    def private_bytes(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign_head(self, context: str, chain: int, seq: int, entry_id: bytes) -> Head:
        message = head_message(context, self.public, chain, seq, entry_id)
        return Head(self.public, chain, seq, entry_id, self._key.sign(message))

    def sign_root(self, context: str, root: bytes, entries: int, signed_at_ns: int
                  ) -> SignedRoot:
        message = root_message(context, root, entries, signed_at_ns, self.public)
        return SignedRoot(context, root, entries, signed_at_ns, self.public,
                          self._key.sign(message))

    def sign_link(self, transcript: bytes) -> bytes:
        """Prove this key to a peer during the handshake (see ``link_transcript``)."""
        return self._key.sign(LINK_DOMAIN + transcript)

    def __repr__(self) -> str:
        return f"Identity({self.origin[:16]}…)"


def link_transcript(verifier_nonce: bytes, signer_hello: bytes, verifier_hello: bytes) -> bytes:
    """What a node signs to prove its key on one link: the verifier's fresh nonce and both
    HELLO frames, the signer's first. The nonce makes a recorded proof useless on another link
    (no replay); the order and the HELLOs (each names its sender's origin and nonce) make a
    proof echoed back to its signer worthless (no reflection): the echo would have to be over
    the signer's HELLO as the *verifier's*, which names the signer's own origin, and a node
    refuses a peer with its own origin anyway."""
    return b"".join([verifier_nonce, hashlib.sha256(signer_hello).digest(),
                     hashlib.sha256(verifier_hello).digest()])


def check_link_proof(origin: bytes, signature: bytes, transcript: bytes) -> None:
    """IntegrityError unless ``signature`` is ``origin``'s over ``transcript``."""
    try:
        _public_key(origin).verify(signature, LINK_DOMAIN + transcript)
    except (InvalidSignature, ValueError):
        raise IntegrityError(f"the peer did not prove the key of origin {origin.hex()[:16]}…"
                             ) from None


@dataclass(frozen=True, slots=True)
class Head:
    """A signed statement: entry ``entry_id`` is number ``seq`` of writer ``origin.chain`` in
    the context it travels with (the context is part of the signed message)."""

    origin: bytes  # 32-byte public key
    chain: int
    seq: int
    entry_id: bytes  # 32 bytes
    signature: bytes  # 64 bytes

    @property
    def writer(self) -> str:
        return writer_key(self.origin.hex(), self.chain)

    def encode(self) -> bytes:
        return _HEAD.pack(self.origin, self.chain, self.seq, self.entry_id, self.signature)

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        if len(raw) != HEAD_SIZE:
            raise IntegrityError(f"a signed head is {HEAD_SIZE} bytes, got {len(raw)}")
        return cls(*_HEAD.unpack(raw))

    def verify(self, context: str) -> None:
        """IntegrityError unless the signature is the origin's over this statement."""
        message = head_message(context, self.origin, self.chain, self.seq, self.entry_id)
        try:
            _public_key(self.origin).verify(self.signature, message)
        except (InvalidSignature, ValueError):
            raise ForgedEntry(
                f"signature of {self.writer} on seq {self.seq} of {context} is not valid"
            ) from None

    def to_json(self) -> dict[str, object]:
        return {"origin": self.origin.hex(), "chain": f"{self.chain:016x}", "seq": self.seq,
                "id": self.entry_id.hex(), "signature": self.signature.hex()}


@dataclass(frozen=True, slots=True)
class SignedRoot:
    """A signed statement of which key vouches for which root, when: the holder of ``key`` says
    that at ``signed_at_ns`` (its wall clock, ns since the epoch) its copy of ``context`` held
    ``entries`` entries whose Merkle root (of entry ids) is ``root``. An inclusion proof against
    that root then says the entry was in the context as that key saw it."""

    context: str
    root: bytes  # 32 bytes
    entries: int
    signed_at_ns: int
    key: bytes  # the signer's 32-byte public key (its origin)
    signature: bytes  # 64 bytes

    def verify(self, key: bytes | None = None) -> None:
        """ForgedEntry unless the signature is ``key``'s (the statement's own key when None)
        over this statement."""
        if key is not None and key != self.key:
            raise ForgedEntry(f"the root of {self.context} is signed by {self.key.hex()}, not "
                              f"by {key.hex()}")
        message = root_message(self.context, self.root, self.entries, self.signed_at_ns,
                               self.key)
        try:
            _public_key(self.key).verify(self.signature, message)
        except (InvalidSignature, ValueError):
            raise ForgedEntry(f"the signature of {self.key.hex()} on the root of "
                              f"{self.context} is not valid") from None

    def to_json(self) -> dict[str, object]:
        return {"context": self.context, "root": self.root.hex(), "entries": self.entries,
                "signed_at_ns": self.signed_at_ns, "key": self.key.hex(),
                "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SignedRoot:
        """ValueError (or KeyError, TypeError) when ``doc`` is malformed."""
        root, key, signature = (bytes.fromhex(doc[k]) for k in ("root", "key", "signature"))
        entries, signed_at = doc["entries"], doc["signed_at_ns"]
        if not isinstance(doc["context"], str) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64
                for v in (entries, signed_at)):
            raise ValueError("context, entries or signed_at_ns has the wrong type")
        if (len(root), len(key), len(signature)) != (32, KEY_SIZE, SIG_SIZE):
            raise ValueError("root, key or signature has the wrong size")
        return cls(doc["context"], root, entries, signed_at, key, signature)


def root_message(context: str, root: bytes, entries: int, signed_at_ns: int, key: bytes
                 ) -> bytes:
    raw = context.encode("utf-8")
    return b"".join([ROOT_DOMAIN, struct.pack(">I", len(raw)), raw, root,
                     struct.pack(">QQ", entries, signed_at_ns), key])


def head_message(context: str, origin: bytes, chain: int, seq: int, entry_id: bytes) -> bytes:
    raw = context.encode("utf-8")
    return b"".join([HEAD_DOMAIN, struct.pack(">I", len(raw)), raw, origin,
                     struct.pack(">QQ", chain, seq), entry_id])


def writer_key(origin: str, chain: int) -> str:
    """The name of one chain in cursors and status: ``<origin hex>.<chain hex>``."""
    return f"{origin}.{chain:016x}"


def chain_for(instance: str, context: str) -> int:
    """A writer chain per (open of a data directory, context): fresh whenever the instance is."""
    digest = hashlib.sha256(f"chain\x00{instance}\x00{context}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@lru_cache(maxsize=4096)
def _public_key(origin: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(origin)


def check_fork_proof(proof: Mapping[str, Any]) -> list[str]:
    """Check a fork proof (``ContextLog.fork_proof``) with nothing but the proof: two branches,
    each a head signed by the writer's origin and the records from the head's entry down to the
    forked seq, each naming the next as ``prev``. Returns the two entry ids; ForgedEntry or
    IntegrityError if the proof does not prove a fork."""
    from .entry import decode_record

    try:
        context, writer, seq = str(proof["context"]), str(proof["writer"]), int(proof["seq"])
        origin_hex, chain_hex = writer.split(".")
        found = []
        for branch in proof["branches"]:
            raw_head = branch["head"]
            head = Head(bytes.fromhex(raw_head["origin"]), int(raw_head["chain"], 16),
                        int(raw_head["seq"]), bytes.fromhex(raw_head["id"]),
                        bytes.fromhex(raw_head["signature"]))
            if head.writer != writer:
                raise IntegrityError("a head of another writer")
            head.verify(context)
            expected, position = head.entry_id, head.seq
            entry = None
            for text in branch["records"]:
                entry = decode_record(bytes.fromhex(text))
                if (bytes.fromhex(entry.id), entry.writer, entry.seq, entry.context) != (
                        expected, writer, position, context):
                    raise IntegrityError(f"record {entry.id} does not continue the chain")
                expected, position = entry.prev, position - 1
            if entry is None or entry.seq != seq:
                raise IntegrityError("a branch does not reach the forked seq")
            found.append(entry.id)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"malformed fork proof: {exc}") from None
    if len(found) != 2 or found[0] == found[1]:
        raise IntegrityError("a fork proof needs two different entries")
    return found
