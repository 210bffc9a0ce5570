"""Node identity and signed chain heads: who wrote an entry, proven with Ed25519.

Theory of operation
-------------------
Every data directory owns one Ed25519 key pair (the driver creates it on first open and keeps it
in the directory; this module only computes). An entry's ``origin`` is the hex of the public key,
so a verifier needs nothing but the entry to know which key must have signed it.

A node does not sign entries one by one (an Ed25519 verify costs ~65 µs here, one per 100 B
entry would cap catch-up near 15k entries/s). Each *writer* — one origin during one open of its
data directory, in one context: ``origin.chain`` — keeps a hash chain: every entry names the id
of the writer's previous entry (``prev``), and a commit states only each chain's new head, a
``Head`` = (context, origin, chain, seq, entry id). One valid head authenticates its entry and,
through the ``prev`` links, every earlier entry of the chain, as Hypercore's signed tree roots
authenticate every block below them. A cold reader verifies one signature per writer, not one
per entry.

**One signature per commit** (format 2). A commit that extends chains in many contexts signs
them all at once: each head is a leaf, ``sha256("p2p-ledger head leaf v2" ‖ context ‖ chain ‖
seq ‖ entry id)``; the leaves, sorted, are paired level by level into a small Merkle tree
(``sha256("p2p-ledger head node v2" ‖ lower ‖ higher)``: a pair is hashed in sorted order, so a
path needs no left/right bits; an odd node rises unpaired), and the origin signs
``"p2p-ledger commit v2" ‖ origin ‖ root``. Each head carries the signature and its *path* (the
sibling hashes up to the root: ⌈log2 n⌉ × 32 bytes for a commit of n contexts, none for one
context), so a receiver of one context checks it with nothing from the others. The leaf names
the context, so a head and path moved to another context, another chain or seq, or another
entry give another root; the message names the origin, so a signature is nobody else's. A
verified (origin, root, signature) is remembered (``_signed``), so the heads of one commit
received for many contexts cost one Ed25519 verification. Heads of format 1 (one signature per
head, ``head_message``; ``path`` None) are still read and checked: stores and snapshots written
before format 2 keep working.

``chain`` is fresh on every open (derived from the open's random instance id): a node that lost
the tail of its store (a restored backup, a disk that lied about fsync) starts a new chain
instead of re-signing the seqs it already used, so an honest node never signs two entries for
one position. Two valid heads (or chains) that put two different entries at one position are a
*fork*: the proof is the pair of signed statements (see ``fork_proof`` in context_log).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import ForgedEntry, IntegrityError
from .reader import Reader

HEAD_DOMAIN = b"p2p-ledger head v1\x00"  # format 1: one signature per head
LEAF_DOMAIN = b"p2p-ledger head leaf v2\x00"
NODE_DOMAIN = b"p2p-ledger head node v2\x00"
COMMIT_DOMAIN = b"p2p-ledger commit v2\x00"
ROOT_DOMAIN = b"p2p-ledger context root v1\x00"
LINK_DOMAIN = b"p2p-ledger link v1\x00"
KEY_SIZE = 32
SIG_SIZE = 64
HEAD_SIZE = KEY_SIZE + 8 + 8 + 32 + SIG_SIZE  # origin, chain, seq, entry id, signature
_HEAD = struct.Struct(">32sQQ32s64s")
_HEAD_DEPTH = struct.Struct(">32sQQ32s64sB")  # (a format-2 head before its path)
_U32 = struct.Struct(">I")
_U64_PAIR = struct.Struct(">QQ")
HASH_SIZE = 32
MAX_DEPTH = 32  # path hashes: a commit of up to 2^32 contexts
LEGACY = 0xFF  # the depth byte of a format-1 head (no path: it was signed alone)


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

    def sign_heads(self, heads: Sequence[tuple[str, int, int, bytes]]) -> list[Head]:
        """One signature over the heads (context, chain, seq, entry id) a commit extends, one
        per context: the signed heads, in the same order, each with its path."""
        pack_size, pack_position, join, sha = _U32.pack, _U64_PAIR.pack, b"".join, hashlib.sha256
        leaves = []
        for context, chain, seq, entry_id in heads:  # (head_leaf, inline)
            raw = context.encode("utf-8")
            leaves.append(sha(join((LEAF_DOMAIN, pack_size(len(raw)), raw,
                                    pack_position(chain, seq), entry_id))).digest())
        root, paths = _tree(leaves)
        signature = self.sign(commit_message(self.public, root))
        public = self.public
        return [_new_head(public, chain, seq, entry_id, signature, path)
                for (_, chain, seq, entry_id), path in zip(heads, paths, strict=True)]

    def sign_head(self, context: str, chain: int, seq: int, entry_id: bytes) -> Head:
        """A commit of one context (its path is empty)."""
        return self.sign_heads([(context, chain, seq, entry_id)])[0]

    def sign_root(self, context: str, root: bytes, entries: int, signed_at_ns: int
                  ) -> SignedRoot:
        message = root_message(context, root, entries, signed_at_ns, self.public)
        return SignedRoot(context, root, entries, signed_at_ns, self.public, self.sign(message))

    def sign_link(self, transcript: bytes) -> bytes:
        """Prove this key to a peer during the handshake (see ``link_transcript``)."""
        return self.sign(LINK_DOMAIN + transcript)

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message`` (every statement above is signed here)."""
        return self._key.sign(message)

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
    the context it travels with (the context is part of the signed leaf). ``path`` is the
    concatenated sibling hashes from the leaf up to the commit's signed root (b"" for a commit
    of one context), or None for a format-1 head, signed alone."""

    origin: bytes  # 32-byte public key
    chain: int
    seq: int
    entry_id: bytes  # 32 bytes
    signature: bytes  # 64 bytes
    path: bytes | None = b""

    @property
    def writer(self) -> str:
        return writer_key(self.origin.hex(), self.chain)

    def encode(self) -> bytes:
        """Format 2: the format-1 fields, u8 depth (LEGACY for a format-1 head), the path."""
        path = self.path
        if path is None:
            return _HEAD_DEPTH.pack(self.origin, self.chain, self.seq, self.entry_id,
                                    self.signature, LEGACY)
        return _HEAD_DEPTH.pack(self.origin, self.chain, self.seq, self.entry_id,
                                self.signature, len(path) // HASH_SIZE) + path

    @classmethod
    def decode(cls, raw: bytes) -> Head:
        """A format-1 head (HEAD_SIZE bytes, no depth byte)."""
        if len(raw) != HEAD_SIZE:
            raise IntegrityError(f"a signed head is {HEAD_SIZE} bytes, got {len(raw)}")
        origin, chain, seq, entry_id, signature = _HEAD.unpack(raw)
        return cls(origin, chain, seq, entry_id, signature, None)

    @classmethod
    def read(cls, r: Reader) -> Head:
        """One format-2 head from ``r`` (short reads raise the reader's fault)."""
        origin, chain, seq, entry_id, signature = _HEAD.unpack(r.take(HEAD_SIZE))
        depth = r.u8()
        if depth == LEGACY:
            return cls(origin, chain, seq, entry_id, signature, None)
        if depth > MAX_DEPTH:
            raise r.fault(f"a signed head with a path of {depth} hashes (at most {MAX_DEPTH})")
        return cls(origin, chain, seq, entry_id, signature, r.take(depth * HASH_SIZE))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Head:
        """One head as ``encode`` wrote it (a stored head); IntegrityError if malformed."""
        r = Reader(raw, IntegrityError, "a stored head")
        head = cls.read(r)
        if r.remaining:
            raise IntegrityError(f"a stored head has {r.remaining} bytes too many")
        return head

    def root(self, context: str) -> bytes:
        """The commit root this head's leaf and path lead to (format 2)."""
        node = head_leaf(context, self.chain, self.seq, self.entry_id)
        path = self.path or b""
        for at in range(0, len(path), HASH_SIZE):
            node = _node(node, path[at:at + HASH_SIZE])
        return node

    def verify(self, context: str) -> None:
        """ForgedEntry unless the signature is the origin's over this statement."""
        if self.path is None:
            ok = _signed_alone(self.origin, self.signature, head_message(
                context, self.origin, self.chain, self.seq, self.entry_id))
        else:
            ok = _signed(self.origin, self.root(context), self.signature)
        if not ok:
            raise ForgedEntry(
                f"signature of {self.writer} on seq {self.seq} of {context} is not valid")

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "origin": self.origin.hex(), "chain": f"{self.chain:016x}", "seq": self.seq,
            "id": self.entry_id.hex(), "signature": self.signature.hex()}
        if self.path is not None:
            out["path"] = self.path.hex()
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Head:
        """ValueError (or KeyError, TypeError) when ``doc`` is malformed; no "path": format 1."""
        path = doc.get("path")
        head = cls(bytes.fromhex(doc["origin"]), int(doc["chain"], 16), int(doc["seq"]),
                   bytes.fromhex(doc["id"]), bytes.fromhex(doc["signature"]),
                   None if path is None else bytes.fromhex(path))
        if (len(head.origin), len(head.entry_id), len(head.signature)) != (
                KEY_SIZE, HASH_SIZE, SIG_SIZE) or len(head.path or b"") % HASH_SIZE or \
                len(head.path or b"") > MAX_DEPTH * HASH_SIZE:
            raise ValueError("origin, id, signature or path has the wrong size")
        return head


class _UnfrozenHead:
    """``Head``'s slot layout without the frozen ``__setattr__`` (see ``entry._Unfrozen``).

    why: a commit signs one head per context it extends (~128 spread over 10,000 contexts);
    the frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost ~1.2 us a
    head, plain stores and a class switch ~0.3."""

    __slots__ = ("origin", "chain", "seq", "entry_id", "signature", "path")
    origin: bytes
    chain: int
    seq: int
    entry_id: bytes
    signature: bytes
    path: bytes | None


if _UnfrozenHead.__slots__ != tuple(f.name for f in fields(Head)):
    raise ImportError("identity.py: _UnfrozenHead.__slots__ must list Head's fields in order")


def _new_head(origin: bytes, chain: int, seq: int, entry_id: bytes, signature: bytes,
              path: bytes | None) -> Head:
    """``Head(...)`` of fields already checked."""
    head = _UnfrozenHead()
    head.origin = origin
    head.chain = chain
    head.seq = seq
    head.entry_id = entry_id
    head.signature = signature
    head.path = path
    head.__class__ = Head  # type: ignore[assignment]
    return cast(Head, head)


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


def head_leaf(context: str, chain: int, seq: int, entry_id: bytes) -> bytes:
    """A head's leaf in its commit's tree: what the commit says of one context (format 2)."""
    raw = context.encode("utf-8")
    return hashlib.sha256(b"".join((LEAF_DOMAIN, _U32.pack(len(raw)), raw,
                                    _U64_PAIR.pack(chain, seq), entry_id))).digest()


def commit_message(origin: bytes, root: bytes) -> bytes:
    """What an origin signs once per commit (format 2): its key and the root of its heads."""
    return COMMIT_DOMAIN + origin + root


def _node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(NODE_DOMAIN + (a + b if a <= b else b + a)).digest()


def _tree(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root over ``leaves`` (sorted, paired level by level, an odd one rising unpaired) and
    each leaf's path (concatenated sibling hashes), in the order of ``leaves``.

    The levels are built bottom-up, then each node's path to the root top-down: a node's path
    is its sibling (none for one rising unpaired) followed by its parent's path.

    why: a spread commit signs ~128 leaves; walking every leaf up every level (a dict entry and
    a list per leaf, a step per leaf per level) cost ~200 us a commit, these two passes ~105
    (1.6 -> 0.8 us per entry spread over 10,000 contexts)."""
    if not leaves:
        raise ValueError("a commit signs at least one head")
    level = sorted(leaves)
    if len(set(level)) != len(level):
        raise ValueError("a commit extends each chain once")
    levels = []
    sha, domain = hashlib.sha256, NODE_DOMAIN
    while len(level) > 1:
        levels.append(level)
        upper = [sha(domain + a + b if a <= b else domain + b + a).digest()  # (_node, inline)
                 for a, b in zip(level[::2], level[1::2], strict=False)]
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
    paths = [b""]  # of the nodes of the level above (the root's: empty)
    for below in reversed(levels):
        size = len(below)
        paths = [(below[i ^ 1] if i ^ 1 < size else b"") + paths[i >> 1] for i in range(size)]
    path_of = dict(zip(levels[0], paths, strict=True)) if levels else {level[0]: b""}
    return level[0], [path_of[leaf] for leaf in leaves]


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


# why: a commit of n contexts reaches a peer as n bundles whose heads share one signature and
# one root; remembering what was checked makes that one Ed25519 verification (~65 µs here)
# instead of n. A pure function of its arguments, so caching it cannot change an answer.
@lru_cache(maxsize=4096)
def _signed(origin: bytes, root: bytes, signature: bytes) -> bool:
    return _signed_alone(origin, signature, commit_message(origin, root))


def signature_cache() -> Any:
    """The cache of checked commit signatures (benchmarks clear it between runs)."""
    return _signed


def _signed_alone(origin: bytes, signature: bytes, message: bytes) -> bool:
    try:
        _public_key(origin).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


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
            head = Head.from_json(branch["head"])
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
