"""Tests for p2p_ledger.merkle.

A naive reference implementation written straight from the spec (recursive,
no caching) cross-checks the real tree; golden vectors in
``tests/core/data/merkle_vectors.json`` pin the hashing so any change is caught.
Random generators are seeded (``MERKLE_TEST_SEED``) and print their seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_ledger.core import merkle
from p2p_ledger.core.merkle import (
    DIGEST_SIZE,
    EMPTY_ROOT,
    MalformedProof,
    MerkleTree,
    NodeView,
    Proof,
    diff_children,
    root_of_keys,
    verify_proof,
)

VECTORS_PATH = Path(__file__).parent / "data" / "merkle_vectors.json"
SEED = int(os.environ.get("MERKLE_TEST_SEED", "20261127"))
HYP = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rng(tag: str) -> random.Random:
    print(f"MERKLE_TEST_SEED={SEED} ({tag})")
    return random.Random(f"{SEED}-{tag}")


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def entry_keys(n: int, prefix: str = "entry-") -> list[bytes]:
    return [h(f"{prefix}{i}".encode()) for i in range(n)]


# --------------------------------------------------------------------------
# Reference implementation, written from the spec only.


def nibble(key: bytes, i: int) -> int:
    return (key[i // 2] >> 4) if i % 2 == 0 else key[i // 2] & 0x0F


def ref_item_hash(key: bytes, value: bytes) -> bytes:
    return h(b"\x00" + key + len(value).to_bytes(4, "big") + value)


def ref_bucket(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    return h(b"\x01" + b"".join(ref_item_hash(k, v) for k, v in sorted(items)))


def ref_inner(children: Iterable[bytes | None]) -> bytes:
    return h(b"\x02" + b"".join(bytes(32) if c is None else c for c in children))


def ref_root(items: Mapping[bytes, bytes], max_leaf: int = 16) -> bytes:
    def node(group: list[tuple[bytes, bytes]], depth: int) -> bytes:
        if len(group) <= max_leaf or depth == 64:
            return ref_bucket(group)
        parts: list[list[tuple[bytes, bytes]]] = [[] for _ in range(16)]
        for k, v in group:
            parts[nibble(k, depth)].append((k, v))
        return ref_inner(node(p, depth + 1) if p else None for p in parts)

    return node(list(items.items()), 0)


# --------------------------------------------------------------------------
# Helpers


def build(items: Mapping[bytes, bytes] | Iterable[bytes], max_leaf: int = 16) -> MerkleTree:
    t = MerkleTree(max_leaf)
    if isinstance(items, Mapping):
        t.update(items.items())
    else:
        t.update((k, b"") for k in items)
    return t


def walk(t: MerkleTree) -> list[NodeView]:
    """Every node of the tree, through the public view API only."""
    out: list[NodeView] = []
    stack: list[tuple[int, ...]] = [()]
    while stack:
        view = t.node(stack.pop())
        if view is None:
            continue
        out.append(view)
        if view.children is not None:
            stack.extend(view.prefix + (n,) for n, c in enumerate(view.children) if c is not None)
    return out


def shape(t: MerkleTree) -> list[tuple[tuple[int, ...], bool, bytes]]:
    return sorted((v.prefix, v.is_leaf, v.digest) for v in walk(t))


# Keys with long shared prefixes exercise deep splits (down to 62 nibbles),
# which uniformly random keys almost never reach.
keys_st = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.builds(
        lambda head, tail: head + bytes(32 - len(head) - len(tail)) + tail,
        st.binary(max_size=3),
        st.binary(max_size=3),
    ),
)
values_st = st.binary(max_size=40)
max_leaf_st = st.sampled_from([1, 2, 3, 16])


# --------------------------------------------------------------------------
# Order independence


@HYP
@given(items=st.dictionaries(keys_st, values_st, max_size=80), max_leaf=max_leaf_st, data=st.data())
def test_any_insertion_order_gives_same_root_and_shape(
    items: dict[bytes, bytes], max_leaf: int, data: st.DataObject
) -> None:
    pairs = list(items.items())
    perm = data.draw(st.permutations(pairs))
    a = MerkleTree(max_leaf)
    for k, v in pairs:
        assert a.set(k, v)
    b = MerkleTree(max_leaf)
    for k, v in perm:
        b.set(k, v)
        if data.draw(st.booleans()):
            b.root()  # interleaved roots must not leave stale cached digests
    c = MerkleTree(max_leaf)
    assert c.update(perm) == len(pairs)
    expected = ref_root(items, max_leaf)
    assert a.root() == b.root() == c.root() == expected
    assert shape(a) == shape(b) == shape(c)
    assert len(a) == len(b) == len(c) == len(items)


@HYP
@given(ops=st.lists(st.tuples(keys_st, values_st), max_size=120), max_leaf=max_leaf_st)
def test_replacing_values_depends_only_on_final_mapping(
    ops: list[tuple[bytes, bytes]], max_leaf: int
) -> None:
    final = dict(ops)
    t = MerkleTree(max_leaf)
    for i, (k, v) in enumerate(ops):
        t.set(k, v)
        if i % 7 == 0:
            t.root()
    assert t.root() == build(final, max_leaf).root() == ref_root(final, max_leaf)
    assert {k: t.get(k) for k in final} == final


def test_bulk_update_matches_one_by_one_large() -> None:
    r = rng("bulk-vs-set")
    keys = entry_keys(5000)
    one = MerkleTree()
    for k in keys:
        one.set(k)
    shuffled = keys[:]
    r.shuffle(shuffled)
    bulk = MerkleTree()
    bulk.update((k, b"") for k in shuffled[:2500])
    bulk.root()
    bulk.update((k, b"") for k in shuffled[2500:])
    assert one.root() == bulk.root() == ref_root(dict.fromkeys(keys, b""))


# --------------------------------------------------------------------------
# Shape and views


@HYP
@given(items=st.dictionaries(keys_st, values_st, max_size=60), max_leaf=max_leaf_st)
def test_shape_rule_and_views_are_consistent(items: dict[bytes, bytes], max_leaf: int) -> None:
    t = build(items, max_leaf)
    views = walk(t)
    if not items:
        assert views == [] and t.root() == EMPTY_ROOT
        return
    assert views[0].prefix == () and views[0].digest == t.root()
    for v in views:
        under = t.items_under(v.prefix)
        depth = len(v.prefix)
        expected = sorted(
            (k, x)
            for k, x in items.items()
            if tuple(nibble(k, i) for i in range(depth)) == v.prefix
        )
        assert under == expected
        if v.is_leaf:
            assert v.children is None and v.items is not None
            assert len(v.items) <= max_leaf or len(v.prefix) == 64
            assert list(v.items) == under
            assert v.digest == ref_bucket(v.items)
        else:
            assert v.children is not None and v.items is None and len(v.children) == 16
            assert len(under) > max_leaf
            assert v.digest == ref_inner(v.children)


def test_node_and_items_under_edge_cases() -> None:
    t = MerkleTree()
    assert t.node() is None and t.items_under() == [] and t.root() == EMPTY_ROOT
    keys = entry_keys(3)
    t.update((k, b"") for k in keys)
    root = t.node()
    assert root is not None and root.is_leaf and root.items is not None and len(root.items) == 3
    k = keys[0]
    # Below a bucket: a virtual bucket of just the matching items.
    deep = tuple(nibble(k, i) for i in range(10))
    view = t.node(deep)
    assert view is not None and view.is_leaf and view.items == ((k, b""),)
    assert view.digest == ref_bucket([(k, b"")])
    assert t.items_under(deep) == [(k, b"")]
    full = tuple(nibble(k, i) for i in range(64))
    assert t.items_under(full) == [(k, b"")]
    absent = next((n,) for n in range(16) if all(nibble(x, 0) != n for x in keys))
    assert t.node(absent) is None and t.items_under(absent) == []
    for bad in [(16,), (-1,), (0,) * 65, ("a",)]:
        with pytest.raises(ValueError):
            t.node(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            t.items_under(bad)  # type: ignore[arg-type]


def test_basic_mapping_api_and_input_validation() -> None:
    t = MerkleTree(max_leaf=2)
    k = h(b"k")
    assert k not in t and t.get(k) is None and len(t) == 0
    assert t.set(k, b"v1") is True
    assert t.set(k, b"v1") is False  # no-op
    assert t.set(k, b"v2") is True  # replace
    assert t.get(k) == b"v2" and k in t and len(t) == 1
    assert "x" not in t and 5 not in t
    for bad in [b"", b"x" * 31, b"x" * 33]:
        with pytest.raises(ValueError):
            t.set(bad)
    with pytest.raises(TypeError):
        t.set("x" * 32)  # type: ignore[arg-type]
    before = t.root()
    with pytest.raises(ValueError):
        t.update([(h(b"a"), b""), (b"short", b"")])
    assert len(t) == 1 and t.root() == before  # a bad batch changes nothing
    assert t.update([(h(b"a"), b""), (h(b"a"), b"z"), (k, b"v2")]) == 1
    assert t.get(h(b"a")) == b"z"
    for bad_leaf in [0, -1]:
        with pytest.raises(ValueError):
            MerkleTree(bad_leaf)
    with pytest.raises(KeyError):
        t.prove(h(b"absent"))


class _CountingSha256:
    """Stands in for merkle's sha256 (through monkeypatch) and counts the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(merkle, "sha256", self)

    def __call__(self, data: bytes = b"") -> Any:
        self.calls += 1
        return hashlib.sha256(data)


def test_root_rehashes_only_dirty_path(monkeypatch: pytest.MonkeyPatch) -> None:
    t = build(entry_keys(3000))
    t.root()
    counter = _CountingSha256(monkeypatch)
    assert t.root() and counter.calls == 0  # fully cached
    t.set(entry_keys(3000)[5], b"")  # no change: nothing dirtied
    t.root()
    assert counter.calls == 0
    t.set(h(b"new"), b"x")
    t.root()
    depth = max(len(v.prefix) for v in walk(t))
    # One bucket (its items + itself, possibly after a split) and its ancestors.
    assert 0 < counter.calls <= 2 * (t.max_leaf + 2) + depth + 1


@pytest.mark.parametrize("n", [500, 3000, 5000])
def test_a_change_rehashes_its_bucket_and_the_path_above(
    monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """Child digests are kept; item hashes (32 B a key) only in leaves whose buckets hold more
    than a few keys (3000 keys: buckets of ~12) or in two-level leaves at depths 2-3 (5000:
    mostly inner nodes of 16 buckets of ~1 at depth 2), not elsewhere (500: such leaves at
    depth 1, buckets of ~2).
    So a new key or a replaced value costs its own item hash or its bucket's, the bucket, and
    one hash per inner node above it; a bucket that grows past max_leaf costs at most its
    items and its new buckets once."""
    t = build(entry_keys(n))
    t.root()
    counter = _CountingSha256(monkeypatch)
    exact = kept = 0
    changes = [(h(b"cached-%d" % i), b"") for i in range(20)] + [(entry_keys(n)[7], b"new")]
    for key, value in changes:
        counter.calls = 0
        t.set(key, value)
        t.root()
        calls = counter.calls
        proof = t.prove(key)  # (everything is current: no hashing)
        assert counter.calls == calls
        bucket, above = len(proof.bucket), len(proof.levels)
        assert calls <= t.max_leaf + 1 + 16 + 1 + above
        item_hashes = calls - 1 - above
        exact += item_hashes in (1, bucket)
        kept += item_hashes == 1 < bucket
    assert exact >= 15  # most changes split nothing: nothing but their bucket and path
    assert kept >= 10 if n != 500 else kept < 10
    monkeypatch.undo()
    expected = dict.fromkeys(entry_keys(n), b"")
    expected.update(changes)
    assert t.root() == ref_root(expected, t.max_leaf)


@HYP
@given(ops=st.lists(st.tuples(keys_st, values_st), max_size=120), max_leaf=max_leaf_st)
def test_root_after_every_set_matches_a_fresh_tree(
    ops: list[tuple[bytes, bytes]], max_leaf: int
) -> None:
    t = MerkleTree(max_leaf)
    current: dict[bytes, bytes] = {}
    for k, v in ops:
        t.set(k, v)
        current[k] = v
        assert t.root() == ref_root(current, max_leaf)


@HYP
@given(batches=st.lists(st.lists(st.tuples(keys_st, values_st), max_size=40), max_size=8),
       max_leaf=max_leaf_st)
def test_root_after_batches_matches_a_fresh_tree(
    batches: list[list[tuple[bytes, bytes]]], max_leaf: int
) -> None:
    """Inner nodes keep their children's digests and rehash only the children dirtied since
    (a group commit sets many keys, then asks for the root): the root after each batch is the
    root of a tree built from scratch."""
    t = MerkleTree(max_leaf)
    current: dict[bytes, bytes] = {}
    for batch in batches:
        for k, v in batch:
            t.set(k, v)
            current[k] = v
        assert t.root() == ref_root(current, max_leaf)
        for view in walk(t):  # every kept child digest is its child's current digest
            if view.children is not None:
                assert view.digest == ref_inner(view.children)


@HYP
@given(batches=st.lists(st.tuples(st.booleans(), st.lists(st.tuples(keys_st, values_st),
                                                          max_size=40)), max_size=8),
       max_leaf=max_leaf_st, read_root=st.lists(st.booleans(), min_size=8, max_size=8))
def test_add_keys_is_one_set_per_new_key(
    batches: list[tuple[bool, list[tuple[bytes, bytes]]]], max_leaf: int, read_root: list[bool]
) -> None:
    """A batch goes in either one set per item or one add_keys (keys only: a key already held
    keeps its value), mixed with set's non-empty values, and with or without a root read in
    between (so buckets hold cached item hashes or not): same root, shape and count as a
    fresh tree of the same mapping, and every kept child digest is current."""
    t = MerkleTree(max_leaf)
    current: dict[bytes, bytes] = {}
    for (bulk, batch), read in zip(batches, read_root, strict=False):
        if bulk:
            fresh = {k for k, _ in batch if k not in current}
            assert t.add_keys(k for k, _ in batch) == len(fresh)
            current.update(dict.fromkeys(fresh, b""))
        else:
            for k, v in batch:
                t.set(k, v)
                current[k] = v
        assert len(t) == len(current)
        if read:
            assert t.root() == ref_root(current, max_leaf)
    assert t.root() == ref_root(current, max_leaf)
    assert shape(t) == shape(build(current, max_leaf))
    for view in walk(t):
        if view.children is not None:
            assert view.digest == ref_inner(view.children)


@pytest.mark.parametrize("n, repeats, max_leaf, held", [
    (0, 0, 16, 0), (1, 0, 16, 0), (300, 0, 16, 0), (4096, 0, 16, 0), (4097, 0, 16, 0),
    (30_000, 0, 16, 0), (30_000, 3_000, 16, 0), (20, 5_000, 16, 0), (6_000, 0, 1, 0),
    (6_000, 0, 3, 0), (30_000, 500, 16, 2_000)])
def test_add_packed_makes_the_tree_add_keys_makes(n: int, repeats: int, max_leaf: int,
                                                  held: int) -> None:
    """Keys back to back (an index's id column), into an empty tree (built a first byte at a
    time past BUILD_STEP keys) or one holding keys already (in batches), repeats
    included: the same root, shape, count, proofs and views as add_keys, and later keys go
    in the same way."""
    r = rng(f"packed-{n}-{repeats}-{max_leaf}-{held}")
    keys = [r.randbytes(32) for _ in range(n)]
    keys += [r.choice(keys) for _ in range(repeats if keys else 0)]
    earlier = [r.randbytes(32) for _ in range(held)]
    packed, plain = MerkleTree(max_leaf), MerkleTree(max_leaf)
    packed.add_keys(earlier)
    plain.add_keys(earlier)
    assert packed.add_packed(bytearray(b"".join(keys))) == plain.add_keys(keys) == n
    assert packed.root() == plain.root() == root_of_keys(keys + earlier, max_leaf)
    assert len(packed) == n + held and shape(packed) == shape(plain)
    for key in r.sample(keys, min(len(keys), 20)):
        assert packed.prove(key) == plain.prove(key)
        assert verify_proof(packed.root(), key, b"", packed.prove(key))
    later = [r.randbytes(32) for _ in range(500)]
    packed.add_keys(later[:250])
    plain.add_keys(later[:250])
    for key in later[250:]:
        packed.set(key)
        plain.set(key)
    assert packed.root() == plain.root() and shape(packed) == shape(plain)


@pytest.mark.parametrize("n", [0, 1, 5, merkle.BUILD_STEP, merkle.BUILD_STEP + 1])
def test_a_build_in_steps_of_few_keys_is_taken_like_any_other(n: int) -> None:
    """``start_steps`` of at most BUILD_STEP keys (one step's worth) builds the same tree as
    more do. (It tripped the tree's guard against use during a build: the one step added the
    keys through ``add_packed`` while the build was open; ``ContextLog`` never starts one so
    small, but a tree's API must not depend on that.)"""
    r = rng(f"few-{n}")
    keys = [r.randbytes(32) for _ in range(n)]
    packed = b"".join(keys)
    tree = MerkleTree()
    tree.start_steps(lambda: packed, 0, n)
    while tree.step():
        pass
    assert not tree.building and len(tree) == n and tree.root() == root_of_keys(keys)
    tree.add_keys([b"\x01" * 32])  # (usable after)
    assert len(tree) == n + 1


@pytest.mark.parametrize("max_leaf", [1, 16])
def test_a_tree_built_in_steps_is_the_tree_built_at_once(max_leaf: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``add_packed_steps``: the keys first..end of a buffer asked for again at each step (it
    grows between steps, as an index's id column does), no step building more than BUILD_STEP
    keys (a first byte holding more is built a subtree at a time), the tree empty until the
    last step; then the same root, shape and proofs as add_keys, and keys added later go in
    as they would."""
    r = rng(f"steps-{max_leaf}")
    step = merkle.BUILD_STEP
    keys = [r.randbytes(32) for _ in range(6 * step)]
    keys += [b"\x7a" + r.randbytes(31) for _ in range(2 * step + 5)]  # (one first byte's)
    keys += [r.choice(keys) for _ in range(300)]  # (repeats)
    before = [r.randbytes(32) for _ in range(7)]  # (in the buffer, not taken)
    buffer = bytearray(b"".join(before + keys))
    built: list[int] = []
    real = MerkleTree._build

    def counted(self: MerkleTree, keys: bytes, *args: Any) -> Any:
        built.append(len(keys) >> 5)
        return real(self, keys, *args)

    monkeypatch.setattr(MerkleTree, "_build", counted)
    tree = MerkleTree(max_leaf)
    steps = 0
    for _ in tree.add_packed_steps(lambda: buffer, len(before), len(before) + len(keys)):
        steps += 1
        assert len(tree) == 0 and tree.root() == EMPTY_ROOT
        buffer.extend(r.randbytes(32))  # (grows; not taken)
    assert steps >= len(keys) / step and max(built) <= step
    plain = MerkleTree(max_leaf)
    plain.add_keys(keys)
    assert len(tree) == len(set(keys)) and tree.root() == plain.root() == root_of_keys(keys,
                                                                                      max_leaf)
    assert shape(tree) == shape(plain)
    for key in r.sample(keys, 20):
        assert tree.prove(key) == plain.prove(key)
    later = [r.randbytes(32) for _ in range(300)]
    tree.add_keys(later)
    plain.add_keys(later)
    assert tree.root() == plain.root() and shape(tree) == shape(plain)


@HYP
@given(seed=st.integers(0, 2**32 - 1), held=st.sampled_from([0, 40, 300, 1_500, 4_000]),
       max_leaf=st.sampled_from([4, 16]), sizes=st.lists(st.sampled_from([1, 2, 7, 60, 700]),
                                                         min_size=1, max_size=6),
       clustered=st.booleans(), read_root=st.booleans())
def test_leaves_rehashed_in_the_walk_give_the_spec_digests(
    seed: int, held: int, max_leaf: int, sizes: list[int], clustered: bool, read_root: bool
) -> None:
    """add_keys computes a changed leaf's digest in its walk (kept in the inner node above it)
    and leaves only inner nodes to root(): through every kind of leaf (a small bucket, one
    keeping its item hashes, one growing into a two-level leaf from its kept hashes, a
    two-level leaf with and without them, a bucket in one splitting into an inner node,
    clusters of keys sharing many nibbles), the root and every node view after each batch are
    the spec's for the same keys, and every kept child digest is current."""
    r = random.Random(seed)
    heads = [r.randbytes(r.choice([1, 2, 3])) for _ in range(3)]

    def fresh() -> bytes:
        head = r.choice(heads) if clustered and r.random() < 0.5 else b""
        return head + r.randbytes(32 - len(head))

    keys = [fresh() for _ in range(held)]
    t = MerkleTree(max_leaf)
    t.add_keys(keys)
    if read_root:
        t.root()
    current = set(keys)
    for size in sizes:
        batch = [fresh() for _ in range(size)] + r.sample(keys, min(len(keys), 2))
        assert t.add_keys(batch) == len(set(batch) - current)
        current.update(batch)
        assert t.root() == root_of_keys(current, max_leaf)
    items = dict.fromkeys(current, b"")
    assert {v.prefix: v for v in walk(t)} == ref_views(items, max_leaf)


def test_add_keys_checks_every_key_before_it_changes_anything() -> None:
    t = build(entry_keys(40))
    root = t.root()
    with pytest.raises(merkle.LocalInputError, match="32 bytes"):
        t.add_keys([*entry_keys(5, "new-"), b"short"])
    assert t.root() == root and len(t) == 40
    assert t.add_keys([]) == 0
    assert t.add_keys([bytearray(h(b"x"))]) == 1 and h(b"x") in t


def ref_views(items: Mapping[bytes, bytes], max_leaf: int) -> dict[tuple[int, ...], NodeView]:
    """Every node of the tree holding ``items``, from the spec (as ``ref_root``)."""
    out: dict[tuple[int, ...], NodeView] = {}

    def node(group: list[tuple[bytes, bytes]], prefix: tuple[int, ...]) -> bytes:
        if len(group) <= max_leaf or len(prefix) == 64:
            bucket = tuple(sorted(group))
            digest = ref_bucket(bucket)
            out[prefix] = NodeView(prefix, digest, None, bucket)
            return digest
        parts: list[list[tuple[bytes, bytes]]] = [[] for _ in range(16)]
        for k, v in group:
            parts[nibble(k, len(prefix))].append((k, v))
        children = tuple(node(p, (*prefix, n)) if p else None for n, p in enumerate(parts))
        digest = ref_inner(children)
        out[prefix] = NodeView(prefix, digest, children, None)
        return digest

    if items:
        node(list(items.items()), ())
    return out


def ref_proof(views: dict[tuple[int, ...], NodeView], key: bytes) -> Proof:
    prefix: tuple[int, ...] = ()
    levels = []
    while (view := views[prefix]).children is not None:
        levels.append(view.children)
        prefix = (*prefix, nibble(key, len(prefix)))
    assert view.items is not None
    return Proof(bucket=view.items, levels=tuple(reversed(levels)))


@pytest.mark.parametrize("max_leaf", [4, 16])
@pytest.mark.parametrize("bulk", [False, True])
def test_a_bucket_keeping_its_item_hashes_splits_deep_correctly(max_leaf: int, bulk: bool) -> None:
    """A bucket big enough to keep its item hashes grows past max_leaf while all its keys share
    the next nibbles: it splits several levels down at once, handing each piece its hashes."""
    r = rng(f"deep-kept-{max_leaf}-{bulk}")
    head = r.randbytes(20)
    keys = [head + bytes([i >> 4, (i & 15) << 4]) + r.randbytes(10) for i in range(4 * max_leaf)]
    t = MerkleTree(max_leaf)
    current: dict[bytes, bytes] = {}
    for i, key in enumerate(keys):
        if bulk:
            t.add_keys([key])
            current[key] = b""
        else:
            current[key] = b"v%d" % i if i % 3 == 0 else b""
            t.set(key, current[key])
        assert t.root() == ref_root(current, max_leaf)
    assert {v.prefix: v for v in walk(t)} == ref_views(current, max_leaf)


@pytest.mark.parametrize("max_leaf", [4, 16])
def test_runs_of_keys_into_buckets_keeping_item_hashes(max_leaf: int) -> None:
    """Batches bring 1-6 keys each to buckets that keep their item hashes under an inner node
    (a tree of ~1M ids: 1-3 each), some keys held already, some taking a bucket past max_leaf
    at once, into a two-level leaf or, when they share the next nibbles, inner nodes several
    levels down: after every batch, the spec's root and views."""
    r = rng(f"bucket-runs-{max_leaf}")
    # (first nibble 0 holds more than 16 buckets do, so the root is an inner node whose other
    # children are buckets of max_leaf - 1 keys: big enough to keep their item hashes)
    keys = [bytes([r.randrange(16)]) + r.randbytes(31) for _ in range(20 * max_leaf)]
    for first in range(1, 16):
        keys += [bytes([first << 4]) + r.randbytes(31) for _ in range(max_leaf - 1)]
    t = MerkleTree(max_leaf)
    t.add_keys(keys)
    current = dict.fromkeys(keys, b"")
    assert t.root() == root_of_keys(current, max_leaf)
    for round_ in range(12):
        batch = []
        for first in range(1, 16):
            shared = bytes([first << 4 | (round_ % 3), r.randrange(2)])  # (clusters deep)
            batch += [shared + r.randbytes(30) if r.random() < 0.4
                      else bytes([first << 4 | r.randrange(16)]) + r.randbytes(31)
                      for _ in range(r.choice([1, 2, 3, 6]))]
            batch += r.sample([k for k in current if k[0] >> 4 == first], 1)  # held
        fresh = {k for k in batch if k not in current}
        assert t.add_keys(batch) == len(fresh)
        current.update(dict.fromkeys(fresh, b""))
        assert len(t) == len(current)
        assert t.root() == root_of_keys(current, max_leaf)
        assert {v.prefix: v for v in walk(t)} == ref_views(current, max_leaf)


@pytest.mark.parametrize("max_leaf", [1, 2, 3, 16])
def test_random_growth_matches_the_spec_at_every_size(max_leaf: int) -> None:
    """The tree is kept in pieces bigger than its nodes (buckets as one byte string, two-level
    leaves, inner nodes): grown in random batches through every kind of change (add_keys
    runs of 1 to 600 keys, set with and without values, replaced values, keys in clusters
    that split deep), its root, every node view, views below buckets, items_under, get and
    proofs are those computed from the spec for the same items."""
    r = rng(f"growth-{max_leaf}")
    clusters = [r.randbytes(r.choice([1, 2, 3, 6, 31])) for _ in range(6)]

    def fresh_key() -> bytes:
        head = r.choice(clusters) if r.random() < 0.3 else b""
        return head + r.randbytes(32 - len(head))

    t = MerkleTree(max_leaf)
    current: dict[bytes, bytes] = {}
    target = {1: 900, 2: 1500, 3: 1500, 16: 6000}[max_leaf]
    checks = 0
    while len(current) < target:
        kind = r.random()
        if kind < 0.6:
            batch = [fresh_key() for _ in range(r.choice([1, 2, 5, 17, 128, 600]))]
            batch += r.sample(sorted(current), min(len(current), r.randrange(3)))  # held
            fresh = {k for k in batch if k not in current}
            assert t.add_keys(batch) == len(fresh)
            current.update(dict.fromkeys(fresh, b""))
        else:
            for _ in range(r.choice([1, 3, 40])):
                key = r.choice(sorted(current)) if current and r.random() < 0.3 else fresh_key()
                value = r.choice([b"", b"", b"v", r.randbytes(r.randrange(1, 40))])
                assert t.set(key, value) == (current.get(key) != value)
                current[key] = value
        assert len(t) == len(current)
        if r.random() < 0.5:
            expected = (root_of_keys(current, max_leaf) if not any(current.values())
                        else ref_root(current, max_leaf))
            assert t.root() == expected
        if r.random() < 0.1 or len(current) >= target:
            checks += 1
            views = ref_views(current, max_leaf)
            assert {v.prefix: v for v in walk(t)} == views
            for key in r.sample(sorted(current), min(20, len(current))):
                assert t.get(key) == current[key] and key in t
                proof = t.prove(key)
                assert proof == ref_proof(views, key)
                assert verify_proof(t.root(), key, current[key], proof)
                deep = tuple(nibble(key, i) for i in range(r.randrange(65)))
                hexed = "".join(f"{n:x}" for n in deep)
                under = sorted((k, v) for k, v in current.items() if k.hex().startswith(hexed))
                assert t.items_under(deep) == under
                view = t.node(deep)
                assert view is not None
                if deep not in views:  # below a bucket: a virtual bucket of what matches
                    assert view == NodeView(deep, ref_bucket(under), None, tuple(under))
    assert checks >= 2


# --------------------------------------------------------------------------
# Proofs


@pytest.mark.parametrize("max_leaf", [2, 16])
@pytest.mark.parametrize("n", [0, 1, 2, 17, 300, 2000])
def test_every_proof_verifies(n: int, max_leaf: int) -> None:
    r = rng(f"proofs-{n}-{max_leaf}")
    items = {k: r.randbytes(r.randrange(0, 8)) for k in entry_keys(n)}
    t = build(items, max_leaf)
    root = t.root()
    assert root == ref_root(items, max_leaf)
    for k, v in items.items():
        p = t.prove(k)
        assert (k, v) in p.bucket
        assert verify_proof(root, k, v, p)
        q = Proof.decode(p.encode())
        assert q == p and verify_proof(root, k, v, q)
    if n == 0:
        with pytest.raises(KeyError):
            t.prove(h(b"x"))


def test_changes_change_the_root() -> None:
    keys = entry_keys(500)
    items = dict.fromkeys(keys, b"")
    base = build(items, 4).root()
    changed = build({**items, keys[123]: b"x"}, 4).root()
    missing = build({k: v for k, v in items.items() if k != keys[321]}, 4).root()
    added = build({**items, h(b"extra"): b""}, 4).root()
    assert len({base, changed, missing, added}) == 4
    # And the live tree moves too, each time.
    t = build(items, 4)
    seen = {t.root()}
    t.set(keys[0], b"y")
    seen.add(t.root())
    t.set(h(b"extra2"))
    seen.add(t.root())
    assert len(seen) == 3


@pytest.fixture(scope="module")
def forge_tree() -> MerkleTree:
    return build(entry_keys(500), max_leaf=4)


def sample_keys(t: MerkleTree, n: int, tag: str) -> list[bytes]:
    keys = [k for k, _ in t.items_under()]
    return rng(tag).sample(keys, n)


def test_forged_bucket_fails(forge_tree: MerkleTree) -> None:
    root = forge_tree.root()
    for k in sample_keys(forge_tree, 20, "forge-bucket"):
        p = forge_tree.prove(k)
        assert verify_proof(root, k, b"", p)
        assert not verify_proof(root, k, b"x", p)  # wrong value
        i = next(j for j, (kk, _) in enumerate(p.bucket) if kk == k)
        b = list(p.bucket)
        forgeries = [
            b[:i] + [(k, b"x")] + b[i + 1 :],  # value changed inside the proof
            b[:i] + b[i + 1 :],  # the item itself missing
            b + [(b"\xff" * 32, b"")],  # an extra item
            b + [b[i]],  # duplicated
            list(reversed(b)) if len(b) > 1 else [],  # not canonical order
        ]
        others = [j for j in range(len(b)) if j != i]
        if others:
            j = others[0]
            forgeries.append(b[:j] + [(b[j][0], b"tampered")] + b[j + 1 :])  # neighbour value
            forgeries.append(b[:j] + b[j + 1 :])  # neighbour dropped
        for forged in forgeries:
            assert not verify_proof(root, k, b"", Proof(tuple(forged), p.levels)), forged


def test_forged_levels_fail(forge_tree: MerkleTree) -> None:
    root = forge_tree.root()
    for k in sample_keys(forge_tree, 10, "forge-levels"):
        p = forge_tree.prove(k)
        assert p.levels, "tree should be deep enough to have levels"
        for li, level in enumerate(p.levels):
            for slot in range(16):
                d = level[slot]
                alt: list[bytes | None] = list(level)
                if d is None:
                    alt[slot] = h(b"phantom")
                else:
                    alt[slot] = bytes([d[0] ^ 1]) + d[1:]
                forged = p.levels[:li] + (tuple(alt),) + p.levels[li + 1 :]
                assert not verify_proof(root, k, b"", Proof(p.bucket, forged))
                if d is not None:
                    alt[slot] = None
                    forged = p.levels[:li] + (tuple(alt),) + p.levels[li + 1 :]
                    assert not verify_proof(root, k, b"", Proof(p.bucket, forged))
        # Dropping or adding a level moves the bucket to the wrong depth.
        assert not verify_proof(root, k, b"", Proof(p.bucket, p.levels[1:]))
        assert not verify_proof(root, k, b"", Proof(p.bucket, p.levels[:-1]))
        assert not verify_proof(root, k, b"", Proof(p.bucket, (p.levels[0], *p.levels)))
        assert not verify_proof(h(b"other root"), k, b"", p)
        assert not verify_proof(EMPTY_ROOT, k, b"", p)


def test_proof_for_another_key_fails(forge_tree: MerkleTree) -> None:
    root = forge_tree.root()
    keys = sample_keys(forge_tree, 30, "forge-other")
    for a, b in itertools.pairwise(keys):
        pa = forge_tree.prove(a)
        same_bucket = any(k == b for k, _ in pa.bucket)
        # A bucket proof proves every member of that bucket, by design.
        assert verify_proof(root, b, b"", pa) is same_bucket
    absent = h(b"not in tree")
    for k in keys[:5]:
        assert not verify_proof(root, absent, b"", forge_tree.prove(k))


def test_truncated_and_bitflipped_encodings_fail(forge_tree: MerkleTree) -> None:
    root = forge_tree.root()
    k = sample_keys(forge_tree, 1, "forge-bytes")[0]
    enc = forge_tree.prove(k).encode()

    def rejected(data: bytes) -> bool:
        try:
            p = Proof.decode(data)
        except ValueError:
            return True
        return not verify_proof(root, k, b"", p)

    for cut in range(len(enc)):
        assert rejected(enc[:cut]), cut
    assert rejected(enc + b"\x00")
    for i in range(len(enc)):
        for bit in range(8):
            flipped = enc[:i] + bytes([enc[i] ^ (1 << bit)]) + enc[i + 1 :]
            assert rejected(flipped), (i, bit)


def test_decode_errors_are_value_errors_and_remote_errors() -> None:
    from p2p_ledger.core.errors import RemoteProtocolError

    with pytest.raises(MalformedProof) as exc:
        Proof.decode(b"")
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, RemoteProtocolError)
    with pytest.raises(ValueError):
        Proof.decode(b"\x02" + bytes(10))  # unknown version
    with pytest.raises(ValueError):
        Proof.decode(b"\x01\xff\xff\xff\xff")  # absurd item count
    with pytest.raises(ValueError):
        Proof.decode(b"\x01\x00\x00\x00\x00\x41")  # 65 levels
    with pytest.raises(ValueError):
        Proof.decode("not bytes")  # type: ignore[arg-type]


@HYP
@given(data=st.binary(max_size=600))
def test_garbage_decode_only_raises_value_error(data: bytes) -> None:
    try:
        p = Proof.decode(data)
    except ValueError:
        return
    assert p.encode() == data  # the encoding is canonical
    # Nothing is proven to be in the empty tree, whatever the proof says.
    assert verify_proof(EMPTY_ROOT, b"\x00" * 32, b"", p) is False


@pytest.fixture(scope="module")
def valid_encoding() -> tuple[bytes, bytes, bytes]:
    t = build(entry_keys(300), max_leaf=3)
    k = entry_keys(300)[42]
    return t.root(), k, t.prove(k).encode()


@HYP
@given(
    pos=st.integers(min_value=0, max_value=10_000),
    cut=st.integers(min_value=0, max_value=40),
    insert=st.binary(max_size=40),
)
def test_mutated_encoding_never_verifies(
    valid_encoding: tuple[bytes, bytes, bytes], pos: int, cut: int, insert: bytes
) -> None:
    root, k, enc = valid_encoding
    pos %= len(enc) + 1
    mutated = enc[:pos] + insert + enc[pos + cut :]
    if mutated == enc:
        return
    try:
        p = Proof.decode(mutated)
    except ValueError:
        return
    assert not verify_proof(root, k, b"", p)


junk = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=3),
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
)
junk_items = st.one_of(
    st.tuples(st.binary(min_size=32, max_size=32), st.binary(max_size=8)),
    st.tuples(junk, junk),
    st.tuples(junk),
    junk,
)
junk_levels = st.one_of(
    st.tuples(*[st.one_of(st.none(), st.binary(min_size=32, max_size=32))] * 16),
    st.lists(junk, max_size=17).map(tuple),
    st.lists(junk, max_size=17),
    junk,
)


@HYP
@given(
    bucket=st.one_of(st.lists(junk_items, max_size=5).map(tuple), junk),
    levels=st.one_of(st.lists(junk_levels, max_size=5).map(tuple), junk),
    root=junk,
    key=junk,
    value=junk,
)
def test_verify_never_raises_on_junk(
    bucket: Any, levels: Any, root: Any, key: Any, value: Any
) -> None:
    p = Proof(bucket, levels)
    assert verify_proof(root, key, value, p) is False
    assert verify_proof(EMPTY_ROOT, b"\x00" * 32, b"", p) is False
    assert verify_proof(EMPTY_ROOT, b"\x00" * 32, b"", bucket) is False


# --------------------------------------------------------------------------
# Domain separation


def test_domain_separation_blocks_node_type_confusion() -> None:
    # 1. A full bucket (16 items) and an inner node both hash 512 bytes.
    #    Untagged, a bucket would be indistinguishable from an inner node
    #    whose 16 children are its item hashes; the tags keep them apart.
    keys = entry_keys(16)
    bucket_tree = build(keys)
    root_view = bucket_tree.node()
    assert root_view is not None and root_view.is_leaf
    payload = b"".join(ref_item_hash(k, b"") for k in sorted(keys))
    assert len(payload) == 16 * DIGEST_SIZE
    fake_level = tuple(ref_item_hash(x, b"") for x in sorted(keys))
    untagged_bucket, untagged_inner = h(payload), h(b"".join(fake_level))
    assert untagged_bucket == untagged_inner  # the ambiguity tags remove
    assert bucket_tree.root() == h(b"\x01" + payload)
    assert bucket_tree.root() != h(b"\x02" + payload)
    # A proof claiming the bucket is an inner node (its item hashes as the
    # children) with the key in a one-item bucket one level down is refused.
    k = min(keys)
    assert not verify_proof(bucket_tree.root(), k, b"", Proof(((k, b""),), (fake_level,)))

    # 2. An inner node with all 16 children present: a peer could pick the
    #    item (key=c0, value=c1..c15), whose unframed, untagged preimage is
    #    exactly the inner node's preimage. Tag + length framing prevent it.
    inner_tree = build(entry_keys(400), max_leaf=1)
    view = inner_tree.node()
    assert view is not None and view.children is not None
    children = [c for c in view.children if c is not None]
    assert len(children) == 16
    c0, rest = children[0], b"".join(children[1:])
    assert h(c0 + rest) == h(b"".join(children))  # untagged: a collision
    forged_item = (c0, rest)
    assert ref_item_hash(*forged_item) != view.digest
    assert ref_bucket([forged_item]) != view.digest
    t = MerkleTree()
    t.set(*forged_item)
    assert t.root() != view.digest
    # ... and an inner node's children can't pass as bucket content either.
    assert h(b"\x01" + b"".join(children)) != view.digest

    # 3. Presenting an inner node where a bucket belongs (proof cut short).
    key = entry_keys(400)[7]
    p = inner_tree.prove(key)
    assert verify_proof(inner_tree.root(), key, b"", p)
    assert not verify_proof(inner_tree.root(), key, b"", Proof(p.bucket, p.levels[1:]))


# --------------------------------------------------------------------------
# Golden vectors


def vector_items(vec: dict[str, Any]) -> dict[bytes, bytes]:
    if "items" in vec:
        return {bytes.fromhex(k): bytes.fromhex(v) for k, v in vec["items"]}
    keys = entry_keys(vec["count"], vec["key_prefix"])
    if "value_prefix" in vec:
        return {k: h(f"{vec['value_prefix']}{i}".encode()) for i, k in enumerate(keys)}
    if "value_repeat" in vec:
        fill = vec["value_repeat"].encode()
        return {k: fill * i for i, k in enumerate(keys)}
    return dict.fromkeys(keys, b"")


def test_golden_vectors() -> None:
    data = json.loads(VECTORS_PATH.read_text())
    assert data["version"] == 1
    assert bytes.fromhex(data["empty_root"]) == EMPTY_ROOT == h(b"\x01")
    assert MerkleTree().root() == EMPTY_ROOT
    by_name = {}
    for vec in data["vectors"]:
        items = vector_items(vec)
        t = build(items, vec["max_leaf"])
        assert t.root().hex() == vec["root"], vec["name"]
        assert ref_root(items, vec["max_leaf"]).hex() == vec["root"], vec["name"]
        by_name[vec["name"]] = (t, items)
    for pv in data["proofs"]:
        t, items = by_name[pv["vector"]]
        key = bytes.fromhex(pv["key"])
        enc = bytes.fromhex(pv["proof"])
        assert t.prove(key).encode() == enc
        assert verify_proof(t.root(), key, items[key], Proof.decode(enc))


# --------------------------------------------------------------------------
# Finding differences by descending only into differing children


def find_differences(a: MerkleTree, b: MerkleTree) -> tuple[set[bytes], int, int]:
    """Keys whose presence or value differs; plus node views and items fetched."""
    diff: set[bytes] = set()
    views = items_fetched = 0
    stack: list[tuple[int, ...]] = [()]
    while stack:
        prefix = stack.pop()
        va, vb = a.node(prefix), b.node(prefix)
        views += 2
        if va is not None and vb is not None:
            if va.digest == vb.digest:
                continue
            if not va.is_leaf and not vb.is_leaf:
                stack.extend(prefix + (n,) for n in diff_children(va, vb))
                continue
        # A bucket on either side (or nothing): compare the items directly.
        ia = dict(va.items if va is not None and va.items is not None else a.items_under(prefix))
        ib = dict(vb.items if vb is not None and vb.items is not None else b.items_under(prefix))
        items_fetched += len(ia) + len(ib)
        diff |= {k for k in ia.keys() | ib.keys() if ia.get(k) != ib.get(k)}
    return diff, views, items_fetched


def test_diff_children_basics() -> None:
    a = build(entry_keys(200))
    b = build(entry_keys(201))
    va, vb = a.node(), b.node()
    assert va is not None and vb is not None
    changed = diff_children(va, vb)
    assert changed == [nibble(entry_keys(201)[200], 0)]
    assert diff_children(va, va) == []
    gone = NodeView((), va.digest, (None,) * 16, None)
    assert va.children is not None
    assert diff_children(va, gone) == [n for n in range(16) if va.children[n] is not None]
    leaf = build(entry_keys(3)).node()
    assert leaf is not None
    with pytest.raises(ValueError):
        diff_children(va, leaf)


@pytest.mark.parametrize("n", [1000, 20_000])
@pytest.mark.parametrize("d", [0, 1, 5, 25])
@pytest.mark.parametrize("max_leaf", [4, 16])
def test_descent_finds_exactly_the_difference_cheaply(n: int, d: int, max_leaf: int) -> None:
    r = rng(f"diff-{n}-{d}-{max_leaf}")
    keys = entry_keys(n)
    base = dict.fromkeys(keys, b"")
    a_items, b_items = dict(base), dict(base)
    expected: set[bytes] = set()
    for i in range(d):
        kind = r.randrange(3)
        if kind == 0:
            k = h(f"only-a-{i}".encode())
            a_items[k] = b""
        elif kind == 1:
            k = h(f"only-b-{i}".encode())
            b_items[k] = b""
        else:
            k = r.choice(keys)
            b_items[k] = b"changed"
        expected.add(k)
    a, b = build(a_items, max_leaf), build(b_items, max_leaf)
    found, views, items_fetched = find_differences(a, b)
    assert found == expected
    total_nodes = len(walk(a)) + len(walk(b))
    depth = max(len(v.prefix) for v in walk(a) + walk(b)) + 1
    assert depth <= math.log(n, 16) + 4  # uniform keys: a shallow trie
    if d == 0:
        assert views == 2 and a.root() == b.root()
        return
    # O(d log n): one root-to-bucket path per differing key, on both sides.
    assert views <= 2 * (1 + d * depth), (views, d, depth)
    assert views < total_nodes / 4
    # Each differing key leads to at most one bucket comparison.
    assert items_fetched <= d * 2 * (max_leaf + d)


def test_descent_against_empty_and_identical_trees() -> None:
    a = build(entry_keys(100), 4)
    found, _, _ = find_differences(a, MerkleTree(4))
    assert found == set(entry_keys(100))
    found, views, _ = find_differences(a, build(entry_keys(100), 4))
    assert found == set() and views == 2


# --------------------------------------------------------------------------
# Shapes and messages pinned by mutation testing (each test below killed a
# mutant that the suite above let live).


def _deepest_pair() -> tuple[MerkleTree, bytes, bytes]:
    """Two keys equal in all but the last nibble: with max_leaf=1 the tree
    splits down to depth 64, the deepest a bucket can sit."""
    a = h(b"deep")
    b = a[:-1] + bytes([a[-1] ^ 0x01])
    return build([a, b], max_leaf=1), a, b


def test_a_proof_at_the_full_key_depth_verifies_and_round_trips() -> None:
    t, a, b = _deepest_pair()
    for k in (a, b):
        p = t.prove(k)
        assert len(p.levels) == 64
        assert verify_proof(t.root(), k, b"", p)
        assert Proof.decode(p.encode()) == p
    # One level more than a key has nibbles is refused, never followed.
    p = t.prove(a)
    deeper = Proof(p.bucket, (p.levels[0], *p.levels))
    assert verify_proof(t.root(), a, b"", deeper) is False
    with pytest.raises(merkle.LocalInputError, match="^too many levels$"):
        deeper.encode()
    with pytest.raises(MalformedProof, match="^too many levels$"):
        Proof.decode(b"\x01" + bytes(4) + b"\x41")


def test_a_root_bucket_of_empty_values_round_trips() -> None:
    """Items of empty values take 36 bytes each: the item-count bound must
    admit exactly that."""
    t = build(entry_keys(5))
    k = entry_keys(5)[0]
    p = t.prove(k)
    assert p.levels == ()
    assert Proof.decode(p.encode()) == p and verify_proof(t.root(), k, b"", p)


def test_proof_decode_errors_say_what_is_wrong() -> None:
    for data, message in (
        ("not bytes", "proof must be bytes"),
        (b"", "truncated proof: wanted 1 bytes at 0"),
        (b"\x02" + bytes(10), "unsupported proof version"),
        (b"\x01\xff\xff\xff\xff", "truncated proof"),
        (b"\x01" + bytes(4) + b"\x00\x00", "trailing bytes after proof"),
    ):
        with pytest.raises(MalformedProof) as info:
            Proof.decode(data)  # type: ignore[arg-type]
        assert str(info.value) == message


def test_proof_encode_refuses_malformed_proofs() -> None:
    level = (None,) * 16
    for proof, message in (
        (Proof(((b"k", b""),), ()), "bad key length in bucket"),
        (Proof((), ((None,) * 15,)), "a level must have 16 slots"),
        (Proof((), ((b"short",) + level[1:],)), "bad digest length in level"),
    ):
        with pytest.raises(merkle.LocalInputError) as info:
            proof.encode()
        assert str(info.value) == message


def test_valid_proof_with_one_field_of_the_wrong_shape_is_refused(
    forge_tree: MerkleTree,
) -> None:
    """Every field is type-checked: a proof that is right except for one
    field's shape is False, and nothing raises."""
    root = forge_tree.root()
    # A key whose root-level slot is 15, so a 15-slot root level cannot
    # even be indexed on its path.
    k = next(k for k in sample_keys(forge_tree, 500, "shape") if k[0] >> 4 == 15)
    p = forge_tree.prove(k)
    assert verify_proof(root, k, b"", p) and len(p.bucket) > 1
    other = next(i for i, (kk, _) in enumerate(p.bucket) if kk != k)
    top = p.levels[-1]
    spare = next(i for i in range(16) if i != 15)

    def with_item(item: Any) -> Proof:
        b = list(p.bucket)
        b[other] = item
        return Proof(tuple(b), p.levels)

    forgeries = [
        with_item((p.bucket[other][0], b"", b"")),  # a 3-tuple item
        with_item(list(p.bucket[other])),  # a list, not a tuple
        with_item(("k" * 32, b"")),  # a str key
        with_item((p.bucket[other][0], "value")),  # a str value
        Proof(p.bucket, (*p.levels[:-1], top[:15])),  # 15 slots
        Proof(p.bucket, (*p.levels[:-1], list(top))),  # a list level
        Proof(p.bucket, (*p.levels[:-1], top[:spare] + (b"x" * 31,) + top[spare + 1:])),
    ]
    for forged in forgeries:
        assert verify_proof(root, k, b"", forged) is False
    for bad_key in ("k" * 32, k[:31], None):
        assert verify_proof(root, bad_key, b"", p) is False  # type: ignore[arg-type]
    assert verify_proof(root[:31], k, b"", p) is False
    assert verify_proof(root, k, "", p) is False  # type: ignore[arg-type]


def test_local_input_errors_of_the_tree_say_what_is_wrong() -> None:
    t = build(entry_keys(40))
    with pytest.raises(merkle.LocalInputError, match="^prefix longer than 64 nibbles$"):
        t.node((0,) * 65)
    with pytest.raises(merkle.LocalInputError,
                       match=r"^prefix nibbles must be ints in 0\.\.15, got 16$"):
        t.node((16,))
    leaf = build(entry_keys(3)).node()
    inner = t.node()
    assert leaf is not None and inner is not None
    with pytest.raises(merkle.LocalInputError, match="^diff_children needs two inner nodes$"):
        diff_children(inner, leaf)
    absent = h(b"absent")
    with pytest.raises(KeyError) as info:
        t.prove(absent)
    assert info.value.args == (absent,)


def test_a_view_below_a_bucket_keeps_its_prefix() -> None:
    t = build(entry_keys(3))  # one root bucket
    k = entry_keys(3)[0]
    prefix = (nibble(k, 0), nibble(k, 1))
    view = t.node(prefix)
    assert view is not None and view.prefix == prefix and view.items is not None
    assert all(kk[:1] == k[:1] for kk, _ in view.items)
@pytest.mark.parametrize("n", [0, 1, 16, 17, 300, 3000])
@pytest.mark.parametrize("shared", [0, 5, 31])
def test_root_of_keys_is_the_tree_root(n: int, shared: int) -> None:
    """``root_of_keys`` (verify's root from sorted ids) equals the tree's root, for deep
    splits too (keys sharing a long prefix), given each key more than once."""
    r = rng(f"root_of_keys-{n}-{shared}")
    prefix = r.randbytes(shared)
    keys = [prefix + r.randbytes(32 - shared) for _ in range(n)]
    tree = MerkleTree()
    tree.update((k, b"") for k in keys)
    assert root_of_keys([*keys, *keys[:5]]) == tree.root()
    assert root_of_keys(keys, max_leaf=4) == _tree_of(keys, 4).root()


@pytest.mark.parametrize("n", [0, 1, 16, 17, 40, 3000])
@pytest.mark.parametrize("spread", ["every byte", "one byte", "one nibble", "two bytes"])
def test_root_of_byte_parts_is_root_of_keys(n: int, spread: str) -> None:
    """The root from keys kept apart by first byte (verify's spilled ids) is ``root_of_keys``:
    keys spread over every byte, all under one byte, under one first nibble (16 small parts
    make one bucket at depth 1), under two bytes; buckets of 16 and of 1."""
    r = rng(f"root_of_byte_parts-{n}-{spread}")
    keys = set()
    while len(keys) < n:
        key = bytearray(r.randbytes(32))
        if spread == "one byte":
            key[0] = 0x07
        elif spread == "one nibble":
            key[0] = 0x30 | key[0] & 0x0F
        elif spread == "two bytes":
            key[0] = r.choice(b"\x11\x12")
        keys.add(bytes(key))
    parts: dict[int, list[bytes]] = {}
    for key in keys:
        parts.setdefault(key[0], []).append(key)
    counts = [len(parts.get(b, ())) for b in range(256)]
    for max_leaf in (1, 16):
        assert merkle.root_of_byte_parts(lambda b: sorted(parts[b]), counts, max_leaf) == \
            root_of_keys(keys, max_leaf)
    with pytest.raises(merkle.LocalInputError):
        merkle.root_of_byte_parts(lambda b: [], [0] * 16)


def _tree_of(keys: list[bytes], max_leaf: int) -> MerkleTree:
    tree = MerkleTree(max_leaf=max_leaf)
    tree.update((k, b"") for k in keys)
    return tree


def test_bytes_like_keys_and_values_are_stored_as_bytes_and_errors_say_why() -> None:
    k = h(b"bytes-like")
    t = MerkleTree()
    assert t.set(bytearray(k), memoryview(b"v"))
    assert t.get(k) == b"v" and type(t.get(k)) is bytes and k in t
    assert t.update([(memoryview(h(b"other")), bytearray(b"w"))]) == 1
    assert [type(x) for kv in t.items_under() for x in kv] == [bytes] * 4
    assert t.root() == build({k: b"v", h(b"other"): b"w"}).root()
    for call, error, message in (
        (lambda: t.set("k" * 32), TypeError, "^key must be bytes, not str$"),
        (lambda: t.set(k, "v"), TypeError, "^value must be bytes, not str$"),
        (lambda: t.set(b"abc"), merkle.LocalInputError, "^key must be 32 bytes, got 3$"),
        (lambda: MerkleTree(0), merkle.LocalInputError, "^max_leaf must be a positive int$"),
    ):
        with pytest.raises(error, match=message):
            call()
