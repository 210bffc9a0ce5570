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
child digests top-down, descending only where they differ.

Digests are sha256 with a one-byte domain tag so that no value of one kind
can be reinterpreted as another kind (an item as a bucket, a bucket as an
inner node)::

    item   = H(0x00 || key || len(value):u32be || value)
    bucket = H(0x01 || item hashes of its items, sorted by key)
    inner  = H(0x02 || 16 child digests, 32 zero bytes for an empty child)

An empty tree is an empty bucket, so its root is ``H(0x01)``.

Inserting walks one path (O(depth) = O(log16 n)) and clears the cached
digest of every node on it; ``root()`` then rehashes only those dirty
nodes.  A bucket that grows past ``max_leaf`` is split one nibble down
(recursively, if all its keys still share the next nibble).  Items are never
removed, so an inner node never has to turn back into a bucket.

A :class:`Proof` is the whole bucket holding the key plus, for every inner
node from the bucket's parent up to the root, all 16 child digests.  A
verifier holding only the root rebuilds the path itself, taking the slot at
each depth from the key's own nibbles, so a proof cannot move an item to a
different place in the tree.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from hashlib import sha256

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


def _item_hashes(bucket: _Bucket) -> bytes:
    """The item hashes of a bucket's keys, in key order, concatenated."""
    keys = bucket.keys
    if bucket.values is None:
        # why: every value is empty in the context trees (keys only), and the per-item
        # (key, value) tuple, two slices through methods and a call per key were ~1/4 of the
        # tree's share of a cold catch-up (cProfile, 20k keys in 20 contexts)
        return b"".join([sha256(_TAG_ITEM + keys[i : i + DIGEST_SIZE] + _EMPTY_VALUE).digest()
                         for i in range(0, len(keys), DIGEST_SIZE)])
    return b"".join([_item_hash(k, v) for k, v in bucket.items()])


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


class _Bucket:
    """A leaf: its keys sorted and concatenated (32 bytes each), their values (None while every
    value is empty: the per-context trees of entry ids), and once hashed, the item hashes in
    key order concatenated (``hashed``), kept exact on every insert, replace and split, so a
    set costs one item hash and rehashing a dirty bucket is one sha256 over ``hashed``.

    why: a bucket as a dict of keys (plus a flat dict of every key in the tree) held ~400 B
    per entry of a context (100k entry ids, measured with sys.getsizeof over the structure):
    a key object, dict slots twice, a list slot and the cached hash. Keys and hashes as two
    byte strings per bucket hold 64 B per key plus the bucket itself (buckets hold ~2 keys on
    average: a bucket of 17 splits into 16), ~170 B per entry.
    """

    __slots__ = ("digest", "hashed", "keys", "values")

    def __init__(self, keys: bytes = b"", values: list[bytes] | None = None,
                 hashed: bytes | None = None) -> None:
        self.keys = keys
        self.values = values
        self.hashed = hashed
        self.digest: bytes | None = None

    def __len__(self) -> int:
        return len(self.keys) >> 5

    def key(self, i: int) -> bytes:
        return self.keys[i << 5 : (i + 1) << 5]

    def value(self, i: int) -> bytes:
        return b"" if self.values is None else self.values[i]

    def find(self, key: bytes) -> tuple[int, bool]:
        """Where ``key`` is (True) or would go (False), by binary search."""
        keys = self.keys
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

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(self.key(i), self.value(i)) for i in range(len(self))]


class _Inner:
    """An inner node: 16 children (None for an empty one). Once hashed it keeps its 16 child
    digests (``slots``, 32 zero bytes for an empty child) and the nibbles of the children
    dirtied since (``dirty``), so rehashing it rehashes only those children and splices their
    digests in. Counts only grow, so once a node is split it stays inner."""

    __slots__ = ("children", "digest", "dirty", "slots")

    def __init__(self) -> None:
        self.children: list[_Bucket | _Inner | None] = [None] * FANOUT
        self.digest: bytes | None = None
        self.slots: bytearray | None = None
        self.dirty: set[int] = set()  # (a set costs ~200 B; inner nodes are few)


def _digest(node: _Bucket | _Inner) -> bytes:
    d = node.digest
    if d is not None:
        return d
    if type(node) is _Bucket:
        hashed = node.hashed
        if hashed is None:
            hashed = node.hashed = _item_hashes(node)
        d = sha256(_TAG_BUCKET + hashed).digest()
    else:
        assert type(node) is _Inner
        children, dirty = node.children, node.dirty
        slots = node.slots
        if slots is None:
            slots = node.slots = bytearray(b"".join([
                _ZERO if c is None else (c.digest or _digest(c)) for c in children
            ]))
        else:
            # why: rebuilding all 16 digests of every dirty inner node was about half of
            # root()'s time at 100k keys committed 128 at a time (~2 dirty inner nodes per
            # key, each with one or two dirty children)
            for nib in dirty:
                child = children[nib]
                assert child is not None
                at = nib << 5
                slots[at : at + 32] = child.digest or _digest(child)
        dirty.clear()
        d = sha256(_TAG_INNER + slots).digest()
    node.digest = d
    return d


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


_EMPTY_ITEM = _U32.pack(0)


def _nibble_runs(keys: list[bytes], lo: int, hi: int, depth: int
                 ) -> Iterator[tuple[int, int, int]]:
    """``(nibble, start, end)`` for each non-empty run of ``keys[lo:hi]`` (sorted, sharing their
    first ``depth`` nibbles) that has that nibble at ``depth``: 15 bisections, no per-key work."""
    first = keys[lo]
    byte_at, low = divmod(depth, 2)
    head = first[:byte_at]
    start = lo
    for nib in range(_nibble(first, depth), FANOUT):
        if nib == FANOUT - 1:
            end = hi
        else:
            # the first key whose nibble at ``depth`` is above ``nib``
            nxt = nib + 1
            bound = head + bytes([(first[byte_at] & 0xF0) | nxt if low else nxt << 4])
            end = bisect_left(keys, bound, start, hi)
        if end != start:
            yield nib, start, end
        if end == hi:
            return
        start = end


def _sorted_digest(keys: list[bytes], lo: int, hi: int, depth: int, max_leaf: int) -> bytes:
    """Digest of the node at depth ``depth`` holding ``keys[lo:hi]`` (sorted, sharing their
    first ``depth`` nibbles): a bucket when at most ``max_leaf`` keys (or no nibble left),
    else an inner node of the 16 groups by the next nibble."""
    if hi - lo <= max_leaf or depth == KEY_NIBBLES:
        return sha256(_TAG_BUCKET + b"".join(
            [sha256(_TAG_ITEM + k + _EMPTY_ITEM).digest() for k in keys[lo:hi]])).digest()
    children: list[bytes | None] = [None] * FANOUT
    for nib, start, end in _nibble_runs(keys, lo, hi, depth):
        children[nib] = _sorted_digest(keys, start, end, depth + 1, max_leaf)
    return _inner_digest(children)


class MerkleTree:
    """Mutable, insertion-order-independent Merkle trie (see module doc)."""

    def __init__(self, max_leaf: int = 16) -> None:
        if type(max_leaf) is not int or max_leaf < 1:
            raise LocalInputError("max_leaf must be a positive int")
        self._max_leaf = max_leaf
        self._root: _Bucket | _Inner = _Bucket()
        self._count = 0

    @property
    def max_leaf(self) -> int:
        return self._max_leaf

    def __len__(self) -> int:
        return self._count

    def _bucket_of(self, key: bytes) -> _Bucket:
        node = self._root
        depth = 0
        while type(node) is _Inner:
            child = node.children[_nibble(key, depth)]
            if child is None:
                return _Bucket()
            node = child
            depth += 1
        assert type(node) is _Bucket
        return node

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes) or len(key) != DIGEST_SIZE:
            return False
        return self._bucket_of(key).find(key)[1]

    def get(self, key: bytes) -> bytes | None:
        if not isinstance(key, bytes) or len(key) != DIGEST_SIZE:
            return None
        bucket = self._bucket_of(key)
        i, found = bucket.find(key)
        return bucket.value(i) if found else None

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
        ordered = sorted({k if type(k) is bytes and len(k) == DIGEST_SIZE else _check_key(k)
                          for k in keys})
        if not ordered:
            return 0
        before = self._count
        self._root = self._add_run(self._root, ordered, 0, len(ordered), 0)
        return self._count - before

    def _add_run(self, node: _Bucket | _Inner, keys: list[bytes], lo: int, hi: int,
                 depth: int) -> _Bucket | _Inner:
        """``node`` (at ``depth``) with ``keys[lo:hi]`` added, or the inner node replacing it."""
        node.digest = None
        if type(node) is _Inner:
            children, dirty = node.children, node.dirty
            if hi - lo == 1:
                # why: a group commit's keys part ways a few levels down (128 ids into a tree
                # of 100k: ~2 of every 3 calls hold one key); one nibble read, not 15 bisections
                # through a generator
                byte = keys[lo][depth >> 1]
                nib = byte >> 4 if depth & 1 == 0 else byte & 0x0F
                child = children[nib]
                children[nib] = self._add_run(_Bucket() if child is None else child,
                                              keys, lo, hi, depth + 1)
                dirty.add(nib)
                return node
            for nib, start, end in _nibble_runs(keys, lo, hi, depth):
                child = children[nib]
                children[nib] = self._add_run(_Bucket() if child is None else child,
                                              keys, start, end, depth + 1)
                dirty.add(nib)
            return node
        assert type(node) is _Bucket
        if not node.keys and node.values is None:  # a new node, built from the sorted run
            if hi - lo > self._max_leaf and depth < KEY_NIBBLES:
                # (by bisection: splitting one full bucket looked at every key at every level)
                inner = _Inner()
                for nib, start, end in _nibble_runs(keys, lo, hi, depth):
                    inner.children[nib] = self._add_run(_Bucket(), keys, start, end, depth + 1)
                return inner
            node.keys, node.hashed = b"".join(keys[lo:hi]), None  # hashed when read
            self._count += hi - lo
            return node
        for key in keys[lo:hi]:
            i, found = node.find(key)
            if not found:
                self._put(node, i, key, b"")
        if len(node) > self._max_leaf and depth < KEY_NIBBLES:
            return self._split(node, depth)
        return node

    def _insert(self, key: bytes, value: bytes) -> bool:
        node = self._root
        parent: _Inner | None = None
        nib = 0
        depth = 0
        path: list[tuple[_Inner, int]] = []
        while type(node) is _Inner:
            byte = key[depth >> 1]
            nib = byte >> 4 if depth & 1 == 0 else byte & 0x0F
            path.append((node, nib))
            child = node.children[nib]
            if child is None:
                child = node.children[nib] = _Bucket()
            parent, node = node, child
            depth += 1
        assert type(node) is _Bucket
        i, found = node.find(key)
        if found:
            if node.value(i) == value:
                return False
            if node.values is None:
                node.values = [b""] * len(node)
            node.values[i] = value
            if node.hashed is not None:
                at = i << 5
                node.hashed = node.hashed[:at] + _item_hash(key, value) + node.hashed[at + 32:]
        else:
            self._put(node, i, key, value)
        node.digest = None
        for inner, slot in path:
            inner.digest = None  # every node on the path is now dirty
            inner.dirty.add(slot)
        if not found and len(node) > self._max_leaf and depth < KEY_NIBBLES:
            split = self._split(node, depth)
            if parent is None:
                self._root = split
            else:
                parent.children[nib] = split
        return True

    def _put(self, node: _Bucket, i: int, key: bytes, value: bytes) -> None:
        """Splice a new ``key`` into ``node`` at index ``i``, keeping its hashes exact."""
        at = i << 5
        values = node.values
        if values is not None:
            values.insert(i, value)
        elif value:
            node.values = [b""] * len(node)
            node.values.insert(i, value)
        node.keys = node.keys[:at] + key + node.keys[at:]
        if node.hashed is not None:
            node.hashed = node.hashed[:at] + _item_hash(key, value) + node.hashed[at:]
        self._count += 1

    def _split(self, node: _Bucket, depth: int) -> _Inner:
        """The inner node replacing an overflowing bucket at ``depth`` (recursively, if all
        its keys still share the next nibble); cached item hashes are handed down."""
        groups: list[list[int]] = [[] for _ in range(FANOUT)]
        keys = node.keys
        at = depth >> 1
        for i in range(len(node)):
            byte = keys[(i << 5) + at]
            groups[byte >> 4 if depth & 1 == 0 else byte & 0x0F].append(i)
        inner = _Inner()
        hashed, values = node.hashed, node.values
        for nib, members in enumerate(groups):
            if not members:
                continue
            child = _Bucket(
                b"".join([keys[i << 5 : (i + 1) << 5] for i in members]),
                None if values is None else [values[i] for i in members],
                None if hashed is None else b"".join([hashed[i << 5 : (i + 1) << 5]
                                                      for i in members]))
            inner.children[nib] = (self._split(child, depth + 1) if len(child) > self._max_leaf
                                   and depth + 1 < KEY_NIBBLES else child)
        return inner

    def root(self) -> bytes:
        return _digest(self._root)

    def _find(self, prefix: tuple[int, ...]) -> tuple[_Bucket | _Inner, int] | None:
        """Deepest existing node on ``prefix`` and its depth (None if empty)."""
        node = self._root
        depth = 0
        for nib in prefix:
            if type(node) is not _Inner:
                break  # prefix reaches below a bucket
            child = node.children[nib]
            if child is None:
                return None
            node = child
            depth += 1
        return node, depth

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
        node, depth = found
        if type(node) is _Inner:
            children = tuple(None if c is None else _digest(c) for c in node.children)
            return NodeView(prefix, _digest(node), children, None)
        assert type(node) is _Bucket
        if depth == len(prefix):
            if not len(node):
                return None  # only the empty root bucket can be empty
            return NodeView(prefix, _digest(node), None, tuple(node.items()))
        items = tuple(kv for kv in node.items() if _has_prefix(kv[0], prefix))
        if not items:
            return None
        return NodeView(prefix, _bucket_digest(items), None, items)

    def items_under(self, prefix: tuple[int, ...] = ()) -> list[tuple[bytes, bytes]]:
        """All items whose key starts with ``prefix``, sorted by key."""
        prefix = _check_prefix(prefix)
        found = self._find(prefix)
        if found is None:
            return []
        node, depth = found
        if depth < len(prefix):
            assert type(node) is _Bucket
            return [kv for kv in node.items() if _has_prefix(kv[0], prefix)]
        # Children are visited in nibble order and buckets are sorted.
        out: list[tuple[bytes, bytes]] = []
        stack = [node]
        while stack:
            n = stack.pop()
            if type(n) is _Bucket:
                out += n.items()
            else:
                assert type(n) is _Inner
                stack.extend(c for c in reversed(n.children) if c is not None)
        return out

    def prove(self, key: bytes) -> Proof:
        """Membership proof for ``key``; KeyError if it is absent."""
        if key not in self:
            raise KeyError(key)
        levels: list[tuple[bytes | None, ...]] = []
        node = self._root
        depth = 0
        while type(node) is _Inner:
            levels.append(tuple(None if c is None else _digest(c) for c in node.children))
            nxt = node.children[_nibble(key, depth)]
            assert nxt is not None
            node = nxt
            depth += 1
        assert type(node) is _Bucket
        levels.reverse()  # proof order is bottom-up
        return Proof(bucket=tuple(node.items()), levels=tuple(levels))
