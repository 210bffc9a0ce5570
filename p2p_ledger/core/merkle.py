"""Insertion-order-independent Merkle tree over 32-byte keys.

Theory of operation
-------------------
Items are ``(key, value)`` pairs; keys are 32-byte sha256 digests, so they
are spread uniformly and can be used directly as a path.  The tree is a
16-ary trie on the key's nibbles (4-bit digits, high nibble of byte 0
first).  Its *shape* is a pure function of the item set: the node at prefix
``p`` is a leaf ("bucket") iff at most ``max_leaf`` keys start with ``p`` (or
``p`` is all 64 nibbles), otherwise it is an inner node whose non-empty
children are the nodes at ``p + (n,)``.  Because nothing depends on the
order of insertion, two peers holding the same set compute the same root,
and two peers holding different sets can find the difference by comparing
child digests top-down, descending only where they differ.  ``max_leaf``
is part of what a peer sees (which nodes are buckets, hence every digest):
peers must use the same one (16).

Digests are sha256 with a one-byte domain tag so that no value of one kind
can be reinterpreted as another kind (an item as a bucket, a bucket as an
inner node)::

    item   = H(0x00 || key || len(value):u32be || value)
    bucket = H(0x01 || item hashes of its items, sorted by key)
    inner  = H(0x02 || 16 child digests, 32 zero bytes for an empty child)

An empty tree is an empty bucket, so its root is ``H(0x01)``.

In memory the tree is kept in fewer, larger pieces than the nodes above (the
digests, views and proofs are those of the nodes above, whatever the pieces):

- a small bucket of keys whose values are all empty (the per-context trees
  of entry ids) is one ``bytes``: its keys sorted and concatenated;
- a :class:`_Leaf` holds the sorted keys (and values, None while all are
  empty) of either one bucket or of an inner node whose children are all
  buckets (a "two-level leaf", at most ``16 * max_leaf`` keys, built only
  from keys whose values are empty); the latter keeps its buckets' digests;
- an :class:`_Inner` is an inner node with a child below which some node is
  inner; it keeps its 16 children and their digests.

Child digests are kept, item hashes only in leaves whose buckets are big
enough (``_HASHED_ABOVE``) and in two-level leaves at depths 2-3 (``_HASHED_DEPTHS``),
and not in a root that is a two-level leaf (a
tree of up to ~130 keys, at most 256): a changed bucket of a few keys is rehashed from
them.  Every kept digest has a stale bit in its holder (``stale``); an
insert walks one path (O(depth) = O(log16 n)) setting them, and ``root()``
recomputes only what is stale.  A bucket that grows past ``max_leaf``
becomes a two-level leaf (or inner nodes, if its keys still share the next
nibble); a two-level leaf one of whose buckets grows past ``max_leaf``
becomes an ``_Inner`` keeping its digests.  Items are never removed, so
nothing ever turns back.

A :class:`Proof` is the whole bucket holding the key plus, for every inner
node from the bucket's parent up to the root, all 16 child digests.  A
verifier holding only the root rebuilds the path itself, taking the slot at
each depth from the key's own nibbles, so a proof cannot move an item to a
different place in the tree.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from hashlib import sha256
from operator import sub
from typing import TypeAlias

from .errors import LocalInputError, RemoteProtocolError
from .reader import Reader

__all__ = [
    "DIGEST_SIZE",
    "EMPTY_ROOT",
    "MalformedProof",
    "MerkleTree",
    "NodeView",
    "Proof",
    "diff_children",
    "root_of_keys",
    "verify_proof",
]

DIGEST_SIZE = 32
KEY_NIBBLES = 2 * DIGEST_SIZE
FANOUT = 16

_TAG_ITEM = b"\x00"
_TAG_BUCKET = b"\x01"
_TAG_INNER = b"\x02"
_ZERO = bytes(DIGEST_SIZE)
_MAX_VALUE_LEN = 0xFFFFFFFF  # the length prefix in the item hash is a u32

EMPTY_ROOT: bytes = sha256(_TAG_BUCKET).digest()

_PROOF_VERSION = 1
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class MalformedProof(RemoteProtocolError, ValueError):
    """Encoded proof bytes (from a peer) are malformed.

    Also a ValueError, so callers of :meth:`Proof.decode` need catch only that.
    """


def _nibble(key: bytes, depth: int) -> int:
    byte = key[depth >> 1]
    return byte >> 4 if depth & 1 == 0 else byte & 0x0F


def _item_hash(key: bytes, value: bytes) -> bytes:
    # The explicit length keeps (key, value) framing unambiguous even though
    # keys are fixed-size: the tag + length make an item preimage impossible
    # to confuse with a bucket or inner preimage.
    return sha256(_TAG_ITEM + key + _U32.pack(len(value)) + value).digest()


_EMPTY_VALUE = _U32.pack(0)  # an empty value's length prefix


def _bucket_digest(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Digest of a bucket; ``items`` must already be sorted by key."""
    h = sha256(_TAG_BUCKET)
    for key, value in items:
        h.update(_item_hash(key, value))
    return h.digest()


def _inner_digest(children: Iterable[bytes | None]) -> bytes:
    return sha256(_TAG_INNER + b"".join(_ZERO if c is None else c for c in children)).digest()


def _has_prefix(key: bytes, prefix: tuple[int, ...]) -> bool:
    return all(_nibble(key, i) == n for i, n in enumerate(prefix))


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes):
        if not isinstance(key, (bytearray, memoryview)):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        key = bytes(key)
    if len(key) != DIGEST_SIZE:
        raise LocalInputError(f"key must be {DIGEST_SIZE} bytes, got {len(key)}")
    return key


def _check_value(value: bytes) -> bytes:
    if not isinstance(value, bytes):
        if not isinstance(value, (bytearray, memoryview)):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        value = bytes(value)
    if len(value) > _MAX_VALUE_LEN:
        raise LocalInputError("value too large for the u32 length prefix")
    return value


def _check_prefix(prefix: tuple[int, ...]) -> tuple[int, ...]:
    prefix = tuple(prefix)
    if len(prefix) > KEY_NIBBLES:
        raise LocalInputError(f"prefix longer than {KEY_NIBBLES} nibbles")
    for n in prefix:
        if type(n) is not int or not 0 <= n < FANOUT:
            raise LocalInputError(f"prefix nibbles must be ints in 0..15, got {n!r}")
    return prefix


# ---- the pieces the tree is kept in (see the module doc) -----------------------------------------
#
# why: one object per node (a bucket object with its keys, cached item hashes and digest; an
# inner node with a 16-slot list, a digest buffer and a dirty set) held 202 B per key at 100k
# random keys and 155 B at 1M (tracemalloc, the tree alone, keys added 128 at a time with a
# root() after each, as ContextLog does). Most buckets are tiny (100k keys: ~1.5 keys per
# bucket under inner nodes of ~24), so per-node headers and item hashes were most of it. In
# these pieces: 62 B per key at 100k, 75 B at 1M (53 B with no item hashes kept at all, but
# add_keys + root then cost 1.09x main's CPU at 1M instead of 0.96x: see _HASHED_ABOVE).


def _find(keys: bytes, key: bytes) -> tuple[int, bool]:
    """Where ``key`` is (True) or would go (False) among ``keys`` (sorted, concatenated)."""
    lo, hi = 0, len(keys) >> 5
    while lo < hi:
        mid = (lo + hi) >> 1
        k = keys[mid << 5 : (mid + 1) << 5]
        if k < key:
            lo = mid + 1
        elif k == key:
            return mid, True
        else:
            hi = mid
    return lo, False


def _find_at(keys: bytes, key: bytes, depth: int) -> tuple[int, bool]:
    """:func:`_find` in a bucket at ``depth``: the keys sharing ``key``'s byte ``depth // 2``
    by two bisections of that column of bytes (sorted, since the keys share the bytes
    before it), then a look at those few.

    why: a bucket of ~15 keys (a tree of 1M) took ~1.1 us by a binary search in Python, ~0.5
    like this"""
    at = depth >> 1
    col = keys[at::DIGEST_SIZE]
    byte = key[at]
    i = bisect_left(col, byte)
    hi = bisect_left(col, byte + 1, i)
    while i < hi:
        k = keys[i << 5 : (i + 1) << 5]
        if k >= key:
            return i, k == key
        i += 1
    return i, False


def _find_grouped(keys: bytes, key: bytes, depth: int) -> tuple[int, bool, int, int]:
    """:func:`_find` in a two-level leaf at ``depth``, and where the key's bucket starts and
    ends.

    why: the bucket by two bisections of the column of nibbles (in C), then a look at its few
    keys (~2 at 100k keys), instead of a binary search in Python over the whole leaf; the
    bucket's size is then known without another search."""
    byte = key[depth >> 1]
    col = keys[depth >> 1 :: DIGEST_SIZE]  # (sorted; the high nibble shared if depth is odd)
    first, step = (byte, 1) if depth & 1 else (byte & 0xF0, 16)
    lo = bisect_left(col, first)
    hi = bisect_left(col, first + step, lo)
    i = lo
    while i < hi and keys[i << 5 : (i + 1) << 5] < key:
        i += 1
    return i, i < hi and keys[i << 5 : (i + 1) << 5] == key, lo, hi


def _bounds(keys: bytes, depth: int) -> list[int]:
    """17 indexes: the keys (sorted, concatenated, sharing their first ``depth`` nibbles) whose
    nibble at ``depth`` is ``n`` are ``bounds[n]`` to ``bounds[n + 1]``. By bisection of the
    column of their bytes at ``depth // 2``, which is sorted too."""
    col = keys[depth >> 1 :: DIGEST_SIZE]
    if depth & 1:
        base = col[0] & 0xF0
        return [0, *[bisect_left(col, base + n) for n in range(1, FANOUT)], len(col)]
    return [0, *[bisect_left(col, n << 4) for n in range(1, FANOUT)], len(col)]


def _group(keys: bytes, depth: int, nib: int) -> tuple[int, int]:
    """``bounds[nib], bounds[nib + 1]`` of :func:`_bounds`, by two bisections."""
    col = keys[depth >> 1 :: DIGEST_SIZE]
    if depth & 1:
        first = (col[0] & 0xF0) + nib
        lo = bisect_left(col, first)
        return lo, bisect_left(col, first + 1, lo)
    lo = bisect_left(col, nib << 4)
    return lo, bisect_left(col, (nib + 1) << 4, lo)


def _present(sizes: list[int]) -> int:
    """The bits of the nibbles whose ``sizes`` (16 counts of keys) are not 0."""
    return sum(1 << nib for nib, size in enumerate(sizes) if size)


def _items(keys: bytes, values: list[bytes] | None, lo: int, hi: int
           ) -> list[tuple[bytes, bytes]]:
    if values is None:
        return [(keys[i : i + DIGEST_SIZE], b"") for i in range(lo << 5, hi << 5, DIGEST_SIZE)]
    return [(keys[i << 5 : (i + 1) << 5], values[i]) for i in range(lo, hi)]


def _hashes(keys: bytes, values: list[bytes] | None, lo: int, hi: int) -> bytes:
    """The item hashes of items ``lo`` to ``hi`` of a leaf, concatenated."""
    if values is None:
        # why: the keys-only case in one comprehension, no per-item tuple or call: the
        # per-context trees' small buckets are rehashed from their keys on every change
        return b"".join([sha256(_TAG_ITEM + keys[i : i + DIGEST_SIZE] + _EMPTY_VALUE).digest()
                         for i in range(lo << 5, hi << 5, DIGEST_SIZE)])
    return b"".join([_item_hash(keys[i << 5 : (i + 1) << 5], values[i]) for i in range(lo, hi)])


def _bucket_of(keys: bytes, values: list[bytes] | None, hashed: bytes | None, lo: int,
               hi: int) -> bytes:
    """Digest of the bucket of items ``lo`` to ``hi`` of a leaf (``hashed``: its item hashes,
    if it keeps them)."""
    if hashed is not None:
        return sha256(_TAG_BUCKET + hashed[lo << 5 : hi << 5]).digest()
    return sha256(_TAG_BUCKET + _hashes(keys, values, lo, hi)).digest()


# why: a bucket's digest is rehashed from its keys on every change unless its item hashes are
# kept (32 B a key). The buckets of a two-level leaf hold ~1.5 keys at 100k keys (24 a leaf),
# ~7.6 at 500k; bucket leaves ~12 at 1M. Keeping none: 53 B a key at 1M but add_keys + root of
# 128-key batches 1.09x main's CPU there and 1.41x between 10k and 60k keys (buckets of 2-9
# keys); keeping them where buckets hold more than 3 keys on average (a two-level leaf's counted
# over 16): 75 B a key at 1M, 0.96x main's CPU there, 1.04-1.09x from 10k, 1.10x at 100k
# (thread CPU time, batches alternated with main's in one process, load 6-12 on 2 cores).
# A leaf with values (the node-level tree: a context's root changes on every commit touching
# it) always keeps them: with none kept, setting 128 of 10k contexts' roots then root() cost
# 1.72x main's CPU.
# The root's two-level leaf (a whole tree of 17 to ~130 keys, 256 at most, while no first
# nibble has more than 16: a context of ~100 entries) keeps
# none either.
# why: a node holds thousands of such trees (`bench --scale` spreads 1M entries over 10,000
# contexts of 100), whose item hashes were 3.2 KB of each context's ~24 KB of RSS; without
# them a key added to a tree of ~100 and its root cost 11.2-11.9 us against 8.7-9.5 (3,000
# trees, one key each, 3 alternated runs at load ~4), the ~6 other keys of its bucket hashed
# again: ~3 us per entry at most, where a spread append costs ~120 (bench --scale's spread
# ingest: the same CPU within 1%, RSS 296.3 -> 245.6 MiB).
# A two-level leaf at depth 2 or 3 (a tree of ~4k to ~200k keys: one context growing towards
# 1M passes there) keeps them whatever its size.
# why: from 65k to 200k keys the tree is mostly such leaves at depth 3 of 17-48 keys, whose
# changed buckets of 1-3 were rehashed from their keys, and every key hashed again when a leaf
# passed 48: 0 -> 300k ids, 40k a batch with the root after each, 14.27G -> 12.05G instructions
# (callgrind), 0 -> 400k 0.93x the CPU (2 alternated rounds in one process, load ~6), 65 -> 80 B
# a key at 200k and the same at 400k and 1M (tracemalloc). Not at depth 4 (trees of ~1M: 37% of
# its nodes are such leaves, ~15 MB more) nor 0-1 (small contexts).
_HASHED_ABOVE = 3
_HASHED_DEPTHS = (2, 3)


def _keeps_hashes(n: int, two_level: bool, values: list[bytes] | None, depth: int = 1) -> bool:
    """Whether a leaf of ``n`` keys (a two-level one at ``depth`` if ``two_level``) keeps the
    item hashes of its keys (see _HASHED_ABOVE)."""
    if values is not None:
        return True
    if two_level:
        return depth in _HASHED_DEPTHS or (n > _HASHED_ABOVE << 4 and depth > 0)
    return n > _HASHED_ABOVE


class _Leaf:
    """Sorted keys (concatenated) with their values (None while every value is empty) and, if
    its buckets are big enough to pay for them, their item hashes in key order (``hashed``):
    one bucket (``slots`` None), or an inner node whose children are all buckets (a two-level
    leaf: ``slots`` holds the 16 bucket digests, 32 zero bytes for an empty one, and ``stale``
    the bits of those not current)."""

    __slots__ = ("hashed", "keys", "slots", "stale", "values")

    def __init__(self, keys: bytes, values: list[bytes] | None, slots: bytearray | None = None,
                 stale: int = 0, hashed: bytes | None = None) -> None:
        self.keys = keys
        self.values = values
        self.slots = slots
        self.stale = stale
        self.hashed = hashed


class _Inner:
    """An inner node some child of which is inner: its 16 children (None for an empty one),
    their digests (``slots``, the inner digest's preimage after the tag) and the bits of the
    children whose digest is not current (``stale``)."""

    __slots__ = ("kids", "slots", "stale")

    def __init__(self, kids: list[_Node | None], slots: bytearray, stale: int) -> None:
        self.kids = kids
        self.slots = slots
        self.stale = stale


_Node: TypeAlias = "bytes | _Leaf | _Inner"


def _values_or_none(values: list[bytes] | None) -> list[bytes] | None:
    return values if values is not None and any(values) else None


def _bucket(keys: bytes, values: list[bytes] | None, hashed: bytes | None) -> bytes | _Leaf:
    """A bucket leaf of ``keys`` and ``values`` (their item hashes ``hashed``, if known): the
    keys alone when nothing more is worth keeping."""
    n = len(keys) >> 5
    if _keeps_hashes(n, False, values):
        return _Leaf(keys, values, None, 0, _hashes(keys, values, 0, n) if hashed is None
                     else hashed)
    return keys


def _digest(node: _Node, depth: int) -> bytes:
    """The digest of ``node`` (at ``depth``), recomputing only what is stale in it."""
    if type(node) is bytes:
        return _bucket_of(node, None, None, 0, len(node) >> 5)
    assert type(node) is _Leaf or type(node) is _Inner
    slots = node.slots
    if slots is None:
        assert type(node) is _Leaf
        return _bucket_of(node.keys, node.values, node.hashed, 0, len(node.keys) >> 5)
    stale = node.stale
    if stale:
        if type(node) is _Inner:
            kids = node.kids
            while stale:
                bit = stale & -stale
                stale ^= bit
                nib = bit.bit_length() - 1
                kid = kids[nib]
                assert kid is not None
                at = nib << 5
                slots[at : at + 32] = _digest(kid, depth + 1)
        else:
            assert type(node) is _Leaf
            keys, values, hashed = node.keys, node.values, node.hashed
            col = keys[depth >> 1 :: DIGEST_SIZE]
            base, step = ((col[0] & 0xF0), 1) if depth & 1 else (0, 16)
            while stale:
                bit = stale & -stale
                stale ^= bit
                nib = bit.bit_length() - 1
                lo = bisect_left(col, base + nib * step)
                hi = bisect_left(col, base + (nib + 1) * step, lo)
                at = nib << 5
                if hashed is None and values is None:  # (_bucket_of, inlined: the hot case)
                    slots[at : at + 32] = sha256(_TAG_BUCKET + b"".join([
                        sha256(_TAG_ITEM + keys[i : i + DIGEST_SIZE] + _EMPTY_VALUE).digest()
                        for i in range(lo << 5, hi << 5, DIGEST_SIZE)])).digest()
                elif values is None and hashed is not None:
                    slots[at : at + 32] = sha256(_TAG_BUCKET + hashed[lo << 5 : hi << 5]).digest()
                else:
                    slots[at : at + 32] = _bucket_of(keys, values, hashed, lo, hi)
        node.stale = 0
    return sha256(_TAG_INNER + slots).digest()


def _slots(node: _Leaf | _Inner, depth: int) -> bytearray:
    """The child digests of ``node`` (an inner node at ``depth``), made current."""
    if node.stale:
        _digest(node, depth)
    assert node.slots is not None
    return node.slots


def _children(slots: bytearray, present: Iterable[bool]) -> tuple[bytes | None, ...]:
    return tuple(bytes(slots[i << 5 : (i + 1) << 5]) if here else None
                 for i, here in enumerate(present))


def _leaf_parts(node: bytes | _Leaf) -> tuple[bytes, list[bytes] | None, bool]:
    """keys, values, and whether ``node`` is a two-level leaf"""
    if type(node) is bytes:
        return node, None, False
    assert type(node) is _Leaf
    return node.keys, node.values, node.slots is not None


@dataclass(frozen=True)
class NodeView:
    """Read-only snapshot of one node, as exchanged during sync."""

    prefix: tuple[int, ...]
    digest: bytes
    children: tuple[bytes | None, ...] | None
    items: tuple[tuple[bytes, bytes], ...] | None

    @property
    def is_leaf(self) -> bool:
        return self.children is None


@dataclass(frozen=True)
class Proof:
    """Membership proof: the key's whole bucket plus the inner nodes above it.

    ``levels[0]`` is the bucket's parent, ``levels[-1]`` the root; each level
    holds all 16 child digests (``None`` for an empty child), including the
    one on the path, which the verifier recomputes and checks.
    """

    bucket: tuple[tuple[bytes, bytes], ...]
    levels: tuple[tuple[bytes | None, ...], ...]

    def encode(self) -> bytes:
        """Binary form.

        ``version:u8, n_items:u32, n_items * (key[32], len:u32, value),
        n_levels:u8, n_levels * (present:u16 bitmap, bit i = nibble i,
        one 32-byte digest per set bit in nibble order)``.
        """
        if len(self.levels) > KEY_NIBBLES:
            raise LocalInputError("too many levels")
        out = [bytes([_PROOF_VERSION]), _U32.pack(len(self.bucket))]
        for key, value in self.bucket:
            if len(key) != DIGEST_SIZE:
                raise LocalInputError("bad key length in bucket")
            out += (key, _U32.pack(len(value)), value)
        out.append(bytes([len(self.levels)]))
        for level in self.levels:
            if len(level) != FANOUT:
                raise LocalInputError("a level must have 16 slots")
            present = 0
            digests = []
            for i, d in enumerate(level):
                if d is not None:
                    if len(d) != DIGEST_SIZE:
                        raise LocalInputError("bad digest length in level")
                    present |= 1 << i
                    digests.append(d)
            out.append(_U16.pack(present))
            out += digests
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """Parse :meth:`encode` output.

        Any malformed input raises :class:`MalformedProof` (a ValueError) and
        nothing else, since the bytes come from untrusted peers.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            # Contract: decode raises only ValueError, even for a non-bytes.
            raise MalformedProof("proof must be bytes")
        r = Reader(bytes(data), MalformedProof, "proof")
        if r.u8() != _PROOF_VERSION:
            raise MalformedProof("unsupported proof version")
        n_items = r.u32()
        # Every item needs at least 36 bytes; refuse absurd counts up front
        # instead of looping until the data runs out.
        if n_items * (DIGEST_SIZE + 4) > r.remaining:
            raise MalformedProof("truncated proof")
        bucket = []
        for _ in range(n_items):
            key = r.take(DIGEST_SIZE)
            bucket.append((key, r.take(r.u32())))
        n_levels = r.u8()
        if n_levels > KEY_NIBBLES:
            raise MalformedProof("too many levels")
        levels = []
        for _ in range(n_levels):
            present = r.u16()
            levels.append(
                tuple(
                    r.take(DIGEST_SIZE) if present >> i & 1 else None
                    for i in range(FANOUT)
                )
            )
        if r.pos != len(r.data):
            raise MalformedProof("trailing bytes after proof")
        return cls(bucket=tuple(bucket), levels=tuple(levels))


def _is_digest(x: object) -> bool:
    return type(x) is bytes and len(x) == DIGEST_SIZE


def verify_proof(root: bytes, key: bytes, value: bytes, proof: Proof) -> bool:
    """True iff ``proof`` shows ``(key, value)`` is in the tree with ``root``.

    Never raises: anything malformed (wrong types, lengths, shapes) is just a
    failed proof, because proofs come from untrusted peers.  Every field is
    type-checked before use rather than wrapped in a blanket ``except``, so a
    bug here surfaces instead of being swallowed.
    """
    if not (_is_digest(root) and _is_digest(key) and type(value) is bytes):
        return False
    if not isinstance(proof, Proof):
        return False
    bucket, levels = proof.bucket, proof.levels
    if type(bucket) is not tuple or type(levels) is not tuple:
        return False
    depth = len(levels)
    if depth > KEY_NIBBLES:
        return False
    # The bucket sits at the key's own prefix of length `depth`; every bucket
    # member must share it, and members must be strictly sorted (canonical,
    # no duplicates) - otherwise this is not a bucket the tree could hold.
    # The hash chain alone already implies both; checking them rejects junk
    # before hashing and keeps accepted proofs canonical.
    path = tuple(_nibble(key, i) for i in range(depth))
    found = False
    prev = b""
    for item in bucket:
        if type(item) is not tuple or len(item) != 2:
            return False
        k, v = item
        if not (_is_digest(k) and type(v) is bytes) or k <= prev:
            return False
        if not _has_prefix(k, path):
            return False
        if k == key:
            if v != value:
                return False
            found = True
        prev = k
    if not found:
        return False
    h = _bucket_digest(bucket)
    # Walk up: levels[0] is at depth-1, levels[-1] at depth 0 (the root).
    for i, level in enumerate(levels):
        if type(level) is not tuple or len(level) != FANOUT:
            return False
        if not all(d is None or _is_digest(d) for d in level):
            return False
        if level[path[depth - 1 - i]] != h:
            return False
        h = _inner_digest(level)
    return h == root


def diff_children(a: NodeView, b: NodeView) -> list[int]:
    """Nibbles whose child digests differ between two inner node views."""
    if a.children is None or b.children is None:
        raise LocalInputError("diff_children needs two inner nodes")
    return [n for n in range(FANOUT) if a.children[n] != b.children[n]]


def root_of_keys(keys: Iterable[bytes], max_leaf: int = 16) -> bytes:
    """The root of the tree holding ``keys`` (32-byte keys, empty values), without building
    one: the same digest as ``MerkleTree.set`` of each key then ``root()``, from the keys
    sorted (``verify`` rechecks a context's root this way: a sorted list of the ids and a
    stack of at most 64 levels, no tree nodes)."""
    ordered = sorted(keys if isinstance(keys, (set, frozenset)) else set(keys))
    if ordered and set(map(len, ordered)) != {DIGEST_SIZE}:
        raise LocalInputError(f"keys must be {DIGEST_SIZE} bytes")
    return _sorted_digest(ordered, 0, len(ordered), 0, max_leaf)


def root_of_byte_parts(part: Callable[[int], list[bytes]], counts: Sequence[int],
                       max_leaf: int = 16) -> bytes:
    """``root_of_keys`` of keys kept apart by their first byte: ``counts[b]`` distinct keys
    start with byte ``b``, and ``part(b)`` gives them (sorted), asked once per non-empty byte.
    Only one part (or 16 small ones) is in memory at a time: ``verify`` sorts a context's ids
    this way once there are too many to hold (``trio/verify.py``)."""
    if len(counts) != 256:
        raise LocalInputError("counts must have one count per first byte (256)")

    def keys_of(first: int, last: int) -> list[bytes]:
        return [key for b in range(first, last) if counts[b] for key in part(b)]

    total = sum(counts)
    if total <= max_leaf:
        everything = keys_of(0, 256)
        return _sorted_digest(everything, 0, len(everything), 0, max_leaf)
    children: list[bytes | None] = [None] * FANOUT
    for nib in range(FANOUT):
        group = sum(counts[nib * 16:nib * 16 + 16])
        if group == 0:
            continue
        if group <= max_leaf:  # a bucket at depth 1: its keys from up to 16 parts
            keys = keys_of(nib * 16, nib * 16 + 16)
            children[nib] = _sorted_digest(keys, 0, len(keys), 1, max_leaf)
            continue
        grand: list[bytes | None] = [None] * FANOUT
        for low in range(FANOUT):
            if counts[nib * 16 + low]:
                keys = part(nib * 16 + low)
                grand[low] = _sorted_digest(keys, 0, len(keys), 2, max_leaf)
        children[nib] = _inner_digest(grand)
    return _inner_digest(children)


def _nibble_runs(keys: list[bytes], lo: int, hi: int, depth: int) -> list[tuple[int, int, int]]:
    """``(nibble, start, end)`` for each non-empty run of ``keys[lo:hi]`` (sorted, sharing their
    first ``depth`` nibbles) that has that nibble at ``depth``: 15 bisections, no per-key work
    (or, for a short run, one look at each key)."""
    at = depth >> 1
    runs = []
    if hi - lo <= FANOUT:
        # why: 128 ids into a tree of 100k part ways by the third nibble, so most runs are a
        # few keys long: one nibble per key is cheaper than 15 bisections
        nibs = [k[at] & 0x0F for k in keys[lo:hi]] if depth & 1 else \
            [k[at] >> 4 for k in keys[lo:hi]]
        start, prev = lo, nibs[0]
        for j, nib in enumerate(nibs, lo):
            if nib != prev:
                runs.append((prev, start, j))
                start, prev = j, nib
        runs.append((prev, start, hi))
        return runs
    first = keys[lo]
    head = first[:at]
    start = lo
    for nib in range(_nibble(first, depth), FANOUT):
        if nib == FANOUT - 1:
            end = hi
        else:
            # the first key whose nibble at ``depth`` is above ``nib``
            nxt = nib + 1
            bound = head + bytes([(first[at] & 0xF0) | nxt if depth & 1 else nxt << 4])
            end = bisect_left(keys, bound, start, hi)
        if end != start:
            runs.append((nib, start, end))
        if end == hi:
            break
        start = end
    return runs


def _sorted_digest(keys: list[bytes], lo: int, hi: int, depth: int, max_leaf: int) -> bytes:
    """Digest of the node at depth ``depth`` holding ``keys[lo:hi]`` (sorted, sharing their
    first ``depth`` nibbles): a bucket when at most ``max_leaf`` keys (or no nibble left),
    else an inner node of the 16 groups by the next nibble."""
    if hi - lo <= max_leaf or depth == KEY_NIBBLES:
        return sha256(_TAG_BUCKET + b"".join(
            [sha256(_TAG_ITEM + k + _EMPTY_VALUE).digest() for k in keys[lo:hi]])).digest()
    children: list[bytes | None] = [None] * FANOUT
    for nib, start, end in _nibble_runs(keys, lo, hi, depth):
        children[nib] = _sorted_digest(keys, start, end, depth + 1, max_leaf)
    return _inner_digest(children)


_PACKED_BATCH = 65536  # keys per add_keys call of add_packed into a tree that is not empty
# Keys a step of ``add_packed_steps`` builds at most (and gathers, at ~1M keys: a first byte's).
# why: ~5 us a key, so a step holds the caller ~20 ms; the tree of a context of 1M loaded after
# a start, built at once by its first summary, held the trio loop ~2.5 CPU-s
BUILD_STEP = 4096


class MerkleTree:
    """Mutable, insertion-order-independent Merkle trie (see module doc)."""

    def __init__(self, max_leaf: int = 16) -> None:
        if type(max_leaf) is not int or max_leaf < 1:
            raise LocalInputError("max_leaf must be a positive int")
        self._max_leaf = max_leaf
        self._root: _Node = b""
        self._root_digest: bytes | None = EMPTY_ROOT
        self._count = 0
        self._steps: Iterator[None] | None = None  # a build in steps (start_steps)

    @property
    def max_leaf(self) -> int:
        return self._max_leaf

    def __len__(self) -> int:
        return self._count

    def _leaf_of(self, key: bytes) -> tuple[bytes | _Leaf, int] | None:
        node = self._root
        depth = 0
        while type(node) is _Inner:
            kid = node.kids[_nibble(key, depth)]
            if kid is None:
                return None
            node = kid
            depth += 1
        assert type(node) is bytes or type(node) is _Leaf
        return node, depth

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def get(self, key: bytes) -> bytes | None:
        if not isinstance(key, bytes) or len(key) != DIGEST_SIZE:
            return None
        found = self._leaf_of(key)
        if found is None:
            return None
        keys, values, _ = _leaf_parts(found[0])
        i, here = _find(keys, key)
        if not here:
            return None
        return b"" if values is None else values[i]

    def set(self, key: bytes, value: bytes = b"") -> bool:
        """Insert or replace; returns True if the tree changed."""
        if type(key) is not bytes or len(key) != DIGEST_SIZE:
            key = _check_key(key)
        if type(value) is not bytes or len(value) > _MAX_VALUE_LEN:
            value = _check_value(value)
        return self._insert(key, value)

    def update(self, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Bulk :meth:`set`; returns how many items changed the tree."""
        # Validate and collapse repeats first so a bad item leaves the tree
        # untouched and a key given twice is inserted once (last one wins).
        pending: dict[bytes, bytes] = {}
        for key, value in items:
            pending[_check_key(key)] = _check_value(value)
        insert = self._insert
        return sum(insert(key, value) for key, value in pending.items())

    def add_keys(self, keys: Iterable[bytes]) -> int:
        """Bulk insert of the ``keys`` not yet in the tree, with empty values (the per-context
        trees of entry ids); returns how many were new. The same tree as one :meth:`set` per
        key, but each inner node on the way is visited once per call, not once per key, and a
        new bucket is filled in one piece.

        why: a cold catch-up sets ~1,000 ids per context in one go; one walk from the root per
        key was ~23% of the receiver's time (cProfile, 100k entries in 100 contexts).
        """
        return self._add_list([k if type(k) is bytes and len(k) == DIGEST_SIZE else _check_key(k)
                               for k in keys])

    def _add_list(self, keys: list[bytes]) -> int:
        """:meth:`add_keys` of ``keys``, checked.

        why: sorting the list itself when its keys are distinct (a set only to check that) is
        cheaper than sorting a set: 0.23 against 0.30 us a key for 35k keys"""
        assert self._steps is None, "a build in steps is not finished"
        unique = set(keys)
        ordered = sorted(keys if len(unique) == len(keys) else unique)
        if not ordered:
            return 0
        before = self._count
        self._root = self._add_run(self._root, ordered, 0, len(ordered), 0)
        if self._count != before:
            self._root_digest = None
        return self._count - before

    def add_packed(self, packed: bytes | bytearray | memoryview) -> int:
        """:meth:`add_keys` of every 32-byte key of ``packed`` (keys back to back: an index's
        id column); returns how many were new. Into an empty tree, as
        :meth:`add_packed_steps` builds it, all at once; else in batches of
        ``_PACKED_BATCH``."""
        with memoryview(packed) as view:
            n = len(view) >> 5
            if self._count or n <= BUILD_STEP:
                added = 0
                for start in range(0, n, _PACKED_BATCH):
                    # (a part as bytes, sliced: 0.10 us a key, 0.22 sliced from the view)
                    part = view[start << 5 : min(start + _PACKED_BATCH, n) << 5].tobytes()
                    added += self._add_list([part[i : i + DIGEST_SIZE]
                                             for i in range(0, len(part), DIGEST_SIZE)])
                return added
        for _ in self.add_packed_steps(lambda: packed, 0, n):
            pass
        return self._count

    def add_packed_steps(self, source: Callable[[], bytes | bytearray | memoryview],
                         first: int, end: int) -> Iterator[None]:
        """:meth:`add_packed` of keys ``first`` to ``end`` of ``source()`` into this tree,
        which is empty, a bounded step at a time: each step gathers the keys of one first byte
        (``source()`` asked again: a buffer the caller may grow between steps) or builds and
        digests a subtree of at most ``BUILD_STEP`` keys. The tree stays empty until the last
        step; nothing may change it meanwhile (``ContextLog.tree`` finishes the steps first).
        More than ``BUILD_STEP`` keys (fewer are one step: ``add_packed`` takes them).

        why: a loaded context's tree is made on first use from every id at once. Added 65,536
        at a time, a batch's keys mostly went one by one into leaves already built by the
        batches before, and a first batch into the empty root was sorted twice: 1M ids took
        9.5 and 12.0 CPU-s with the root, against 5.2 and 4.8 a first nibble at a time
        (alternated in one process, load ~5-9); a first byte at a time, each subtree digested
        as it is built, 2.16-2.28 against 2.59-2.83 (4 alternated rounds, load ~5). In steps,
        the first summary of a context of 1M loaded after a start no longer holds the node
        for all of it (``NodeCore.tick``)."""
        assert not self._count and end - first > BUILD_STEP, "add_packed takes these at once"
        max_leaf = self._max_leaf
        with memoryview(source()) as view:
            firsts = view[first << 5 : end << 5 : DIGEST_SIZE].tobytes()  # each key's first byte
        kids: list[_Node | None] = [None] * FANOUT
        slots = bytearray(FANOUT * DIGEST_SIZE)
        count = biggest = 0
        for nib in range(FANOUT):
            groups: list[bytes] = []  # the keys of each first byte of this nibble, sorted
            built: dict[int, tuple[_Node, bytes]] = {}  # (those past max_leaf, with digests)
            for low in range(FANOUT):
                byte = nib << 4 | low
                group = set()
                # (no view kept past the step: the buffer could not grow while one is)
                with memoryview(source()) as view, view[first << 5 : end << 5] as keys:
                    at = firsts.find(byte)
                    while at >= 0:
                        group.add(keys[at << 5 : (at + 1) << 5].tobytes())
                        at = firsts.find(byte, at + 1)
                groups.append(b"".join(sorted(group)))
                yield
                if len(group) > max_leaf:
                    built[low] = yield from self._build_steps(groups[low], 2)
            size = sum(map(len, groups)) >> 5
            if not size:
                continue
            count += size
            biggest = max(biggest, size)
            if built:  # (the node of this nibble is inner, its kids what _build would make)
                grand: list[_Node | None] = [None] * FANOUT
                grand_slots = bytearray(FANOUT * DIGEST_SIZE)
                stale = 0
                for low, keys_of in enumerate(groups):
                    if low in built:
                        grand[low], grand_slots[low << 5 : (low + 1) << 5] = built[low]
                    elif keys_of:
                        grand[low] = _bucket(keys_of, None, None)
                        stale |= 1 << low
                kid: _Node = _Inner(grand, grand_slots, stale)
            else:
                kid = self._build(b"".join(groups), None, 1)
            kids[nib] = kid
            slots[nib << 5 : (nib + 1) << 5] = _digest(kid, 1)
        assert not self._count, "the tree changed while it was built in steps"
        self._count = count
        if biggest > max_leaf:  # (a child is inner: the root is an _Inner, as _build would
            # make it; else the keys were repeats and fit a leaf)
            self._root = _Inner(kids, slots, 0)
        else:
            self._root = self._build(b"".join(_leaf_parts(kid)[0] for kid in kids
                                              if type(kid) is bytes or type(kid) is _Leaf),
                                     None, 0)
        self._root_digest = None

    @property
    def building(self) -> bool:
        """A build started by :meth:`start_steps` has steps left."""
        return self._steps is not None

    def start_steps(self, source: Callable[[], bytes | bytearray | memoryview], first: int,
                    end: int) -> None:
        """Begin :meth:`add_packed_steps` into this tree, which is empty: :meth:`step` takes
        a step, :meth:`finish_steps` the steps left; the tree must not be used otherwise
        until none is left."""
        assert self._steps is None and not self._count
        if end - first <= BUILD_STEP:  # (one step's worth: taken now)
            with memoryview(source()) as view, view[first << 5 : end << 5] as keys:
                self.add_packed(keys)
            return
        self._steps = self.add_packed_steps(source, first, end)

    def step(self) -> bool:
        """A step of the build :meth:`start_steps` began; True while steps are left."""
        if self._steps is None or next(self._steps, False) is False:
            self._steps = None
            return False
        return True

    def finish_steps(self) -> None:
        """The steps left of the build :meth:`start_steps` began, if any, at once."""
        if self._steps is not None:
            for _ in self._steps:
                pass
            self._steps = None

    def _build_steps(self, keys: bytes, depth: int) -> Generator[None, None, tuple[_Node, bytes]]:
        """:meth:`_build` of ``keys`` (sorted, no values) at ``depth`` with every digest
        computed, in steps of at most ``BUILD_STEP`` keys; returns the node and its digest."""
        if len(keys) <= max(BUILD_STEP, self._max_leaf * FANOUT) << 5:
            node = self._build(keys, None, depth)
            digest = _digest(node, depth)
            yield
            return node, digest
        # (more keys than 16 buckets hold: an inner node whatever they are)
        bounds = _bounds(keys, depth)
        kids: list[_Node | None] = [None] * FANOUT
        slots = bytearray(FANOUT * DIGEST_SIZE)
        for nib in range(FANOUT):
            lo, hi = bounds[nib], bounds[nib + 1]
            if lo != hi:
                kids[nib], slots[nib << 5 : (nib + 1) << 5] = yield from self._build_steps(
                    keys[lo << 5 : hi << 5], depth + 1)
        return _Inner(kids, slots, 0), sha256(_TAG_INNER + slots).digest()

    def _add_run(self, node: _Node, keys: list[bytes], lo: int, hi: int, depth: int) -> _Node:
        """``node`` (at ``depth``) with ``keys[lo:hi]`` added: itself or what replaces it. The
        digest of a leaf below an inner node is recomputed at once (its stale bit cleared), an
        inner node's is left stale for ``root()``."""
        if type(node) is not _Inner:
            assert type(node) is bytes or type(node) is _Leaf
            if hi - lo == 1:
                return self._add_key(node, keys[lo], depth)
            return self._add_to_leaf(node, keys, lo, hi, depth)
        kids = node.kids
        if hi - lo == 1:
            # why: a group commit's keys part ways a few levels down (128 ids into a tree
            # of 100k: ~2 of every 3 calls hold one key); one nibble read, no list of runs
            key = keys[lo]
            byte = key[depth >> 1]
            nib = byte >> 4 if depth & 1 == 0 else byte & 0x0F
            kid = kids[nib]
            if type(kid) is _Inner:
                before = self._count
                kids[nib] = self._add_run(kid, keys, lo, hi, depth + 1)
                if self._count != before:
                    node.stale |= 1 << nib
                return node
            if kid is None:
                kids[nib] = key
                self._count += 1
                digest = sha256(_TAG_BUCKET + sha256(_TAG_ITEM + key + _EMPTY_VALUE).digest()
                                ).digest()
            else:
                assert type(kid) is bytes or type(kid) is _Leaf
                added = self._add_one(kid, key, depth + 1)
                if added is None:
                    return node
                kids[nib], digest = added
            at = nib << 5
            node.slots[at : at + 32] = digest
            node.stale &= ~(1 << nib)
            return node
        slots = node.slots
        kat = (depth + 1) >> 1  # (the byte of a key's nibble at the kids' depth)
        for nib, start, end in _nibble_runs(keys, lo, hi, depth):
            kid = kids[nib]
            if type(kid) is _Inner:
                before = self._count
                kids[nib] = self._add_run(kid, keys, start, end, depth + 1)
                if self._count != before:
                    node.stale |= 1 << nib
                continue
            at = nib << 5
            if type(kid) is _Leaf and kid.slots is None and kid.values is None:
                # why: most leaves of a tree of ~1M ids are buckets of ~15 keeping their item
                # hashes, and a batch brings each 1-3 ids: spliced in here, each found by two
                # bisections of its bucket's column of bytes, the digest from the hashes once
                # per run (not one _add_key per id)
                held, hashed = kid.keys, kid.hashed
                assert hashed is not None
                count = len(held)
                for j in range(start, end):
                    key = keys[j]
                    col = held[kat::DIGEST_SIZE]
                    byte = key[kat]
                    i = bisect_left(col, byte)
                    top = bisect_left(col, byte + 1, i)
                    while i < top and held[i << 5 : (i + 1) << 5] < key:
                        i += 1
                    if i < top and held[i << 5 : (i + 1) << 5] == key:
                        continue
                    i <<= 5
                    held = held[:i] + key + held[i:]
                    hashed = hashed[:i] + sha256(_TAG_ITEM + key + _EMPTY_VALUE).digest() + \
                        hashed[i:]
                if len(held) == count:
                    continue
                self._count += (len(held) - count) >> 5
                if len(held) > self._max_leaf << 5 and depth + 1 < KEY_NIBBLES:
                    kid = kids[nib] = self._build(held, None, depth + 1, hashed)
                    if type(kid) is _Inner:
                        node.stale |= 1 << nib
                        continue
                    slots[at : at + 32] = _digest(kid, depth + 1)
                else:
                    kid.keys, kid.hashed = held, hashed
                    slots[at : at + 32] = sha256(_TAG_BUCKET + hashed).digest()
                node.stale &= ~(1 << nib)
                continue
            if kid is None:
                kid = kids[nib] = self._build(b"".join(keys[start:end]), None, depth + 1)
                self._count += end - start
                if type(kid) is _Inner:
                    node.stale |= 1 << nib
                    continue
                slots[at : at + 32] = _digest(kid, depth + 1)
                node.stale &= ~(1 << nib)
                continue
            assert type(kid) is bytes or type(kid) is _Leaf
            if end - start == 1:
                added = self._add_one(kid, keys[start], depth + 1)
                if added is None:
                    continue
                kids[nib], slots[at : at + 32] = added
            else:
                before = self._count
                kid = kids[nib] = self._add_to_leaf(kid, keys, start, end, depth + 1)
                if self._count == before:
                    continue
                if type(kid) is _Inner:
                    node.stale |= 1 << nib
                    continue
                slots[at : at + 32] = _digest(kid, depth + 1)
            node.stale &= ~(1 << nib)
        return node

    def _add_one(self, leaf: bytes | _Leaf, key: bytes, depth: int) -> tuple[_Node, bytes] | None:
        """``leaf`` (at ``depth``, below an inner node) with ``key`` added with an empty value,
        or what replaces it, and its digest; None if it held ``key`` already.

        why: the hot case of the per-context trees (a second's ids into a tree of 1M, each to
        a leaf of its own): the leaf's digest from the state the insert leaves, while the leaf
        is at hand, instead of a second walk finding its stale bits."""
        if type(leaf) is _Leaf and leaf.values is None:
            held, hashed, slots = leaf.keys, leaf.hashed, leaf.slots
            if slots is None:  # one bucket, its item hashes kept
                i, found = _find_at(held, key, depth)
                if found:
                    return None
                at = i << 5
                assert hashed is not None
                hashed = hashed[:at] + sha256(_TAG_ITEM + key + _EMPTY_VALUE).digest() + \
                    hashed[at:]
                held = held[:at] + key + held[at:]
                self._count += 1
                if len(held) > self._max_leaf << 5 and depth < KEY_NIBBLES:
                    new = self._build(held, None, depth, hashed)
                    return new, _digest(new, depth)
                leaf.keys, leaf.hashed = held, hashed
                return leaf, sha256(_TAG_BUCKET + hashed).digest()
            i, found, lo, hi = _find_grouped(held, key, depth)
            if found:
                return None
            if hi - lo >= self._max_leaf:  # (the bucket grows past max_leaf: an inner node)
                new = self._add_key(leaf, key, depth)
                return new, _digest(new, depth)
            at = i << 5
            held = held[:at] + key + held[at:]
            self._count += 1
            hi += 1
            if hashed is not None:
                hashed = hashed[:at] + sha256(_TAG_ITEM + key + _EMPTY_VALUE).digest() + \
                    hashed[at:]
                bucket = sha256(_TAG_BUCKET + hashed[lo << 5 : hi << 5]).digest()
            else:
                if _keeps_hashes(len(held) >> 5, True, None, depth):
                    hashed = _hashes(held, None, 0, len(held) >> 5)
                bucket = sha256(_TAG_BUCKET + b"".join([
                    sha256(_TAG_ITEM + held[j : j + DIGEST_SIZE] + _EMPTY_VALUE).digest()
                    for j in range(lo << 5, hi << 5, DIGEST_SIZE)])).digest()
            leaf.keys, leaf.hashed = held, hashed
            byte = key[depth >> 1]
            at = (byte >> 4 if depth & 1 == 0 else byte & 0x0F) << 5
            assert slots is not None
            slots[at : at + 32] = bucket
            if leaf.stale:
                return leaf, _digest(leaf, depth)
            return leaf, sha256(_TAG_INNER + slots).digest()
        before = self._count
        new = self._add_key(leaf, key, depth)
        if self._count == before:
            return None
        return new, _digest(new, depth)

    def _add_key(self, leaf: bytes | _Leaf, key: bytes, depth: int) -> _Node:
        """``leaf`` (at ``depth``) with ``key`` added (an empty value if it is new)."""
        if type(leaf) is bytes:
            i, found = _find(leaf, key)
            if found:
                return leaf
            at = i << 5
            self._count += 1
            return self._reshaped(leaf, leaf[:at] + key + leaf[at:], None, None, 0, depth)
        assert type(leaf) is _Leaf
        held = leaf.keys
        stale = 0  # (the bit of the key's bucket in a two-level leaf)
        if leaf.slots is None:
            i, found = _find(held, key)
        else:
            i, found, lo, hi = _find_grouped(held, key, depth)
            byte = key[depth >> 1]
            stale = 1 << (byte >> 4 if depth & 1 == 0 else byte & 0x0F)
        if found:
            return leaf
        at = i << 5
        values, hashed = leaf.values, leaf.hashed
        if values is not None:
            values.insert(i, b"")
        if hashed is not None:
            hashed = hashed[:at] + sha256(_TAG_ITEM + key + _EMPTY_VALUE).digest() + hashed[at:]
        self._count += 1
        held = held[:at] + key + held[at:]
        if leaf.slots is not None and hi - lo < self._max_leaf and (
                hashed is not None or not _keeps_hashes(len(held) >> 5, True, values, depth)):
            leaf.keys, leaf.hashed = held, hashed
            leaf.stale |= stale
            return leaf
        return self._reshaped(leaf, held, values, hashed, stale, depth)

    def _add_to_leaf(self, leaf: bytes | _Leaf, keys: list[bytes], lo: int, hi: int,
                     depth: int) -> _Node:
        """``leaf`` (at ``depth``) with ``keys[lo:hi]`` added (empty values for the new)."""
        held, values, two_level = _leaf_parts(leaf)
        n = len(held) >> 5
        if hi - lo <= n:
            if two_level and values is None and self._merge(leaf, keys, lo, hi, depth):
                return leaf
            node: _Node = leaf
            for j in range(lo, hi):
                node = self._add_run(node, keys, j, j + 1, depth)
            return node
        # (a long run, a new tree's first batch: one sort, not an insert per key)
        if values is None:
            merged = sorted({held[i : i + 32] for i in range(0, len(held), 32)}.union(keys[lo:hi]))
            if len(merged) == n:
                return leaf
            self._count += len(merged) - n
            return self._build(b"".join(merged), None, depth)
        items = dict.fromkeys(keys[lo:hi], b"")
        items.update(_items(held, values, 0, n))
        if len(items) == n:
            return leaf
        self._count += len(items) - n
        ordered = sorted(items)
        return self._build(b"".join(ordered), [items[k] for k in ordered], depth)

    def _merge(self, leaf: bytes | _Leaf, keys: list[bytes], lo: int, hi: int, depth: int
               ) -> bool:
        """Add ``keys[lo:hi]`` to ``leaf``, a two-level leaf at ``depth`` with no values, in one
        piece, their buckets marked stale; False (nothing changed) if a bucket would grow past
        ``max_leaf``.

        why: a tree of 200k-700k ids is mostly two-level leaves of 50-170 keys keeping their
        item hashes, and a second's ids bring ~5-10 to each: one insert per key copied the
        leaf's keys and hashes once per key"""
        assert type(leaf) is _Leaf
        held, hashed, max_leaf = leaf.keys, leaf.hashed, self._max_leaf
        new_keys: list[bytes] = []
        new_hashes: list[bytes] = []
        at, odd = depth >> 1, depth & 1
        # (_find_grouped, inlined: the column of bytes taken once, not once per key)
        col = held[at::DIGEST_SIZE]
        mask, step = (0xFF, 1) if odd else (0xF0, 16)
        prev = stale = count = 0
        for j in range(lo, hi):
            key = keys[j]
            byte = key[at]
            blo = bisect_left(col, byte & mask)
            bhi = bisect_left(col, (byte & mask) + step, blo)
            i = blo
            while i < bhi and held[i << 5 : (i + 1) << 5] < key:
                i += 1
            if i < bhi and held[i << 5 : (i + 1) << 5] == key:
                continue
            bit = 1 << (byte & 0x0F if odd else byte >> 4)
            count = count + 1 if stale & bit else 1
            if bhi - blo + count > max_leaf:
                return False
            stale |= bit
            new_keys += (held[prev << 5 : i << 5], key)
            if hashed is not None:
                new_hashes += (hashed[prev << 5 : i << 5],
                               sha256(_TAG_ITEM + key + _EMPTY_VALUE).digest())
            prev = i
        if not stale:
            return True
        new_keys.append(held[prev << 5 :])
        held = b"".join(new_keys)
        if hashed is not None:
            new_hashes.append(hashed[prev << 5 :])
            hashed = b"".join(new_hashes)
        elif _keeps_hashes(len(held) >> 5, True, None, depth):
            hashed = _hashes(held, None, 0, len(held) >> 5)
        self._count += (len(held) - len(leaf.keys)) >> 5
        leaf.keys, leaf.hashed = held, hashed
        leaf.stale |= stale
        return True

    def _insert(self, key: bytes, value: bytes) -> bool:
        node = self._root
        depth = 0
        path: list[tuple[_Inner, int]] = []
        while type(node) is _Inner:
            byte = key[depth >> 1]
            nib = byte >> 4 if depth & 1 == 0 else byte & 0x0F
            path.append((node, nib))
            kid = node.kids[nib]
            if kid is None:
                node.kids[nib] = key if not value else _bucket(key, [value], None)
                self._count += 1
                break
            node = kid
            depth += 1
        else:
            assert type(node) is bytes or type(node) is _Leaf
            held, values, two_level = _leaf_parts(node)
            hashed = node.hashed if type(node) is _Leaf else None
            stale = 0  # (the bit of the key's bucket in a two-level leaf)
            if two_level:
                i, found = _find_grouped(held, key, depth)[:2]
                byte = key[depth >> 1]
                stale = 1 << (byte >> 4 if depth & 1 == 0 else byte & 0x0F)
            else:
                i, found = _find(held, key)
            at = i << 5
            if found:
                if (b"" if values is None else values[i]) == value:
                    return False
                if values is None:
                    values = [b""] * (len(held) >> 5)
                values[i] = value
                values = _values_or_none(values)
                if hashed is not None:
                    hashed = hashed[:at] + _item_hash(key, value) + hashed[at + 32 :]
                if type(node) is _Leaf and hashed is not None:
                    # (a leaf with values keeps its item hashes: the node-level tree, whose
                    # values change on every commit, lands here and needs no reshaping)
                    node.values, node.hashed = values, hashed
                    if two_level:
                        node.stale |= stale
                    new: _Node = node
                else:
                    new = self._reshaped(node, held, values, hashed, stale, depth)
            else:
                held = held[:at] + key + held[at:]
                if values is None and value:
                    values = [b""] * (len(held) >> 5)
                    values[i] = value
                elif values is not None:
                    values.insert(i, value)
                if hashed is not None:
                    hashed = hashed[:at] + _item_hash(key, value) + hashed[at:]
                self._count += 1
                new = self._reshaped(node, held, values, hashed, stale, depth)
            if new is not node and path:
                inner, nib = path[-1]
                inner.kids[nib] = new
            elif new is not node:
                self._root = new
        for inner, nib in path:
            inner.stale |= 1 << nib  # every digest on the path is now stale
        self._root_digest = None
        return True

    def _reshaped(self, leaf: bytes | _Leaf, keys: bytes, values: list[bytes] | None,
                  hashed: bytes | None, stale: int, depth: int) -> _Node:
        """``leaf`` (at ``depth``) now holding ``keys``, ``values`` and (if it kept them) their
        item hashes, with the buckets of the nibbles in ``stale`` changed: itself, updated, or
        what replaces it (another kind of leaf, or an inner node if a bucket grew past
        ``max_leaf``)."""
        max_leaf = self._max_leaf
        if type(leaf) is bytes or (type(leaf) is _Leaf and leaf.slots is None):  # one bucket
            if len(keys) > max_leaf << 5 and depth < KEY_NIBBLES:
                return self._build(keys, values, depth, hashed)
            if type(leaf) is _Leaf and hashed is not None:  # (it stays what it is)
                leaf.keys, leaf.values, leaf.hashed = keys, values, hashed
                return leaf
            return _bucket(keys, values, hashed)
        assert type(leaf) is _Leaf
        if hashed is None and _keeps_hashes(len(keys) >> 5, True, values, depth):
            hashed = _hashes(keys, values, 0, len(keys) >> 5)
        leaf.keys, leaf.values, leaf.hashed = keys, values, hashed
        leaf.stale |= stale
        while stale:
            bit = stale & -stale
            stale ^= bit
            lo, hi = _group(keys, depth, bit.bit_length() - 1)
            if hi - lo > max_leaf:
                return self._split(leaf, depth)
        return leaf

    def _build(self, keys: bytes, values: list[bytes] | None, depth: int,
               hashed: bytes | None = None) -> _Node:
        """The node at ``depth`` holding ``keys`` (sorted, concatenated), ``values`` and, if
        known, their item ``hashed``; every digest in it stale."""
        max_leaf = self._max_leaf
        values = _values_or_none(values)
        n = len(keys) >> 5
        if n <= max_leaf or depth >= KEY_NIBBLES:
            return _bucket(keys, values, hashed)
        bounds = _bounds(keys, depth)
        # (the sizes in C: a bucket of 16 taking a 17th key comes here, ~1 key in 15 at 1M)
        sizes = list(map(sub, bounds[1:], bounds))
        if max(sizes) <= max_leaf and values is None:
            # (with values, the node-level tree's roots of contexts that change on every commit,
            # an _Inner of buckets: a change then splices one small bucket, not the whole leaf)
            if hashed is not None and not _keeps_hashes(n, True, values, depth):
                # why: a bucket of 16 that takes a 17th key (~1 key in 15 at 1M keys) becomes
                # a two-level leaf of 16 buckets that keeps no item hashes: its buckets'
                # digests from the hashes it had, not rehashed from their keys later
                return _Leaf(keys, values, bytearray(b"".join([
                    sha256(_TAG_BUCKET + hashed[lo << 5 : hi << 5]).digest() if lo != hi
                    else _ZERO for lo, hi in zip(bounds, bounds[1:], strict=False)])), 0,
                    None)
            if not _keeps_hashes(n, True, values, depth):
                hashed = None
            elif hashed is None:
                hashed = _hashes(keys, values, 0, n)
            return _Leaf(keys, values, bytearray(FANOUT * DIGEST_SIZE), _present(sizes), hashed)
        kids: list[_Node | None] = [None] * FANOUT
        for nib in range(FANOUT):
            lo, hi = bounds[nib], bounds[nib + 1]
            if lo != hi:
                kids[nib] = self._build(keys[lo << 5 : hi << 5],
                                        None if values is None else values[lo:hi], depth + 1,
                                        None if hashed is None else hashed[lo << 5 : hi << 5])
        return _Inner(kids, bytearray(FANOUT * DIGEST_SIZE), _present(sizes))

    def _split(self, leaf: _Leaf, depth: int) -> _Inner:
        """The ``_Inner`` replacing a two-level leaf one of whose buckets grew past
        ``max_leaf``: the same node, so it keeps the leaf's digests and stale bits."""
        keys, values, hashed = leaf.keys, leaf.values, leaf.hashed
        assert leaf.slots is not None
        bounds = _bounds(keys, depth)
        kids: list[_Node | None] = [None] * FANOUT
        stale = leaf.stale
        for nib in range(FANOUT):
            lo, hi = bounds[nib], bounds[nib + 1]
            if lo == hi:
                continue
            part = keys[lo << 5 : hi << 5]
            vals = None if values is None else _values_or_none(values[lo:hi])
            known = None if hashed is None else hashed[lo << 5 : hi << 5]
            if hi - lo > self._max_leaf:
                kids[nib] = self._build(part, vals, depth + 1, known)  # (its bit is in stale)
            else:
                kids[nib] = _bucket(part, vals, known)
        return _Inner(kids, leaf.slots, stale)

    def root(self) -> bytes:
        assert self._steps is None, "a build in steps is not finished"
        d = self._root_digest
        if d is None:
            d = self._root_digest = _digest(self._root, 0)
        return d

    def _find(self, prefix: tuple[int, ...]) -> tuple[_Node, int, _Inner | None] | None:
        """The ``_Inner`` at ``prefix``, or the leaf holding it (at a depth up to
        ``len(prefix)``), its depth and its parent; None if no key has the prefix's first
        nibbles."""
        node = self._root
        parent = None
        depth = 0
        for nib in prefix:
            if type(node) is not _Inner:
                break
            kid = node.kids[nib]
            if kid is None:
                return None
            parent, node = node, kid
            depth += 1
        return node, depth, parent

    def _digest_at(self, prefix: tuple[int, ...], depth: int, parent: _Inner | None) -> bytes:
        """The digest of the node at ``prefix[:depth]``, a child of ``parent``: kept there, not
        recomputed (a bucket's would be rehashed from its keys)."""
        if parent is None:
            return self.root()
        at = prefix[depth - 1] << 5
        return bytes(_slots(parent, depth - 1)[at : at + 32])

    def node(self, prefix: tuple[int, ...] = ()) -> NodeView | None:
        """View of the node at ``prefix``; None when no item has this prefix.

        If ``prefix`` reaches below a bucket, the view is a virtual bucket of
        the matching items (what that prefix would hash to as a bucket), so a
        caller walking two differently shaped trees can still compare.
        """
        prefix = _check_prefix(prefix)
        found = self._find(prefix)
        if found is None:
            return None
        node, depth, parent = found
        if type(node) is _Inner:
            slots = _slots(node, depth)
            return NodeView(prefix, self._digest_at(prefix, depth, parent),
                            _children(slots, [k is not None for k in node.kids]), None)
        assert type(node) is bytes or type(node) is _Leaf
        keys, values, two_level = _leaf_parts(node)
        lo, hi = 0, len(keys) >> 5
        if two_level:
            assert type(node) is _Leaf
            if depth == len(prefix):
                slots = _slots(node, depth)
                bounds = _bounds(keys, depth)
                return NodeView(prefix, self._digest_at(prefix, depth, parent), _children(
                    slots, [bounds[n] != bounds[n + 1] for n in range(FANOUT)]), None)
            nib = prefix[depth]
            lo, hi = _group(keys, depth, nib)
            depth += 1
            if depth == len(prefix) and lo != hi:
                digest = bytes(_slots(node, depth - 1)[nib << 5 : (nib + 1) << 5])
                return NodeView(prefix, digest, None, tuple(_items(keys, values, lo, hi)))
        if depth == len(prefix):
            if lo == hi:
                return None  # only the empty root bucket can be empty
            return NodeView(prefix, self._digest_at(prefix, depth, parent), None,
                            tuple(_items(keys, values, lo, hi)))
        items = tuple(kv for kv in _items(keys, values, lo, hi) if _has_prefix(kv[0], prefix))
        if not items:
            return None
        return NodeView(prefix, _bucket_digest(items), None, items)

    def items_under(self, prefix: tuple[int, ...] = ()) -> list[tuple[bytes, bytes]]:
        """All items whose key starts with ``prefix``, sorted by key."""
        prefix = _check_prefix(prefix)
        found = self._find(prefix)
        if found is None:
            return []
        node, depth, _ = found
        if type(node) is not _Inner:
            assert type(node) is bytes or type(node) is _Leaf
            keys, values, _ = _leaf_parts(node)
            items = _items(keys, values, 0, len(keys) >> 5)
            if depth < len(prefix):
                return [kv for kv in items if _has_prefix(kv[0], prefix)]
            return items
        # Children are visited in nibble order and leaves are sorted.
        out: list[tuple[bytes, bytes]] = []
        stack: list[_Node] = [node]
        while stack:
            n = stack.pop()
            if type(n) is _Inner:
                stack.extend(c for c in reversed(n.kids) if c is not None)
            else:
                assert type(n) is bytes or type(n) is _Leaf
                keys, values, _ = _leaf_parts(n)
                out += _items(keys, values, 0, len(keys) >> 5)
        return out

    def prove(self, key: bytes) -> Proof:
        """Membership proof for ``key``; KeyError if it is absent."""
        if key not in self:
            raise KeyError(key)
        levels: list[tuple[bytes | None, ...]] = []
        node = self._root
        depth = 0
        while type(node) is _Inner:
            levels.append(_children(_slots(node, depth), [k is not None for k in node.kids]))
            nxt = node.kids[_nibble(key, depth)]
            assert nxt is not None
            node = nxt
            depth += 1
        assert type(node) is bytes or type(node) is _Leaf
        keys, values, two_level = _leaf_parts(node)
        lo, hi = 0, len(keys) >> 5
        if two_level:
            assert type(node) is _Leaf
            bounds = _bounds(keys, depth)
            levels.append(_children(_slots(node, depth),
                                    [bounds[n] != bounds[n + 1] for n in range(FANOUT)]))
            nib = _nibble(key, depth)
            lo, hi = bounds[nib], bounds[nib + 1]
        levels.reverse()  # proof order is bottom-up
        return Proof(bucket=tuple(_items(keys, values, lo, hi)), levels=tuple(levels))
