"""Snapshots: one self-verifying context file, loaded into any ledger."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p_ledger.core.bundle import decode_bundle
from p2p_ledger.core.cursor import Cursor
from p2p_ledger.core.entry import DEFAULT_LIMITS, Limits
from p2p_ledger.core.errors import (
    AlreadyExists,
    ForgedEntry,
    IntegrityError,
    InvalidContextName,
    InvalidSnapshot,
    LedgerError,
    SnapshotError,
    UnsupportedVersion,
)
from p2p_ledger.core.identity import HEAD_SIZE
from p2p_ledger.core.merkle import MerkleTree
from p2p_ledger.core.snapshot import MAGIC, decode_snapshot, encode_snapshot
from p2p_ledger.core.storage import MemoryStorage

from .helpers import (
    append,
    chain_entries,
    heads_for,
    open_ledger,
    read_ids,
    state_of,
    sync,
    sync_all,
)

SETTINGS = settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
HEADER = len(MAGIC) + 1 + 4 + len("c1") + 32 + 8  # up to the first record's length


def source_ledger():
    a = open_ledger(MemoryStorage(), "a")
    b = open_ledger(MemoryStorage(), "b")
    append(a, "c1", "a1", "a2")
    append(b, "c1", "b1")
    append(a, "c2", "elsewhere")
    sync_all([a, b])
    append(a, "c1", "a3", key="other")
    return a


@pytest.fixture(scope="module")
def blob():
    return source_ledger().snapshot("c1")


def fresh():
    return open_ledger(MemoryStorage(), "z")


def test_round_trip_into_a_fresh_ledger():
    src = source_ledger()
    blob = src.snapshot("c1")
    dst = fresh()
    assert dst.load_snapshot(blob) == ("c1", 4)
    assert dst.context_root("c1") == src.context_root("c1")
    assert dst.get("c1")[0] == src.get("c1")[0]
    assert dst.get("c1", key="other")[0] == src.get("c1", key="other")[0]
    assert dst.verify() == []
    assert dst.clock.time >= max(e.lamport for e in src.get("c1")[0])
    # durable: a reopen of the target's storage reads the same
    again = open_ledger(dst.storage, "z", "z-2", verify=True)
    assert read_ids(again, "c1") == read_ids(src, "c1")
    # and the loaded entries replicate like any other
    sync_all([again, src])
    assert again.context_root("c1") == src.context_root("c1")


def test_decode_snapshot_returns_the_stated_root(blob):
    src = source_ledger()
    context, root, entries, heads = decode_snapshot(blob, DEFAULT_LIMITS)
    assert context == "c1" and root == src.context_root("c1")
    assert heads  # one per writer chain top: what the loader checks every entry against
    assert [e.id for e in entries] == read_ids(src, "c1")


def test_loading_twice_adds_nothing(blob):
    dst = fresh()
    dst.load_snapshot(blob)
    before = state_of(dst)
    commits = dst.storage.commits
    assert dst.load_snapshot(blob) == ("c1", 0)
    assert state_of(dst) == before and dst.storage.commits == commits


def test_loading_into_a_ledger_that_has_part_of_it():
    src = open_ledger(MemoryStorage(), "a")
    pushed = append(src, "c1", "a1", "a2").updates[0][1]  # one commit: one head, pushed with it
    first = src.get("c1")[0]
    partial = encode_snapshot("c1", _root(first), first, decode_bundle(pushed).heads)
    append(src, "c1", "a3", key="other")  # (src keeps a2's head no more: a3 vouches for a2)
    dst = fresh()
    assert dst.load_snapshot(partial) == ("c1", 2)
    assert dst.load_snapshot(src.snapshot("c1")) == ("c1", 1)
    assert dst.context_root("c1") == src.context_root("c1")


def test_fail_if_exists(blob):
    dst = fresh()
    assert dst.load_snapshot(blob, fail_if_exists=True) == ("c1", 4)
    before = state_of(dst)
    with pytest.raises(AlreadyExists):
        dst.load_snapshot(blob, fail_if_exists=True)
    assert state_of(dst) == before
    other = fresh()
    append(other, "c1", "mine")
    with pytest.raises(AlreadyExists):
        other.load_snapshot(blob, fail_if_exists=True)
    assert fresh().load_snapshot(blob, fail_if_exists=False) == ("c1", 4)


def test_snapshot_of_an_empty_or_unknown_context():
    empty = fresh().snapshot("nothing")
    context, root, entries, heads = decode_snapshot(empty, DEFAULT_LIMITS)
    assert (context, root, entries, heads) == ("nothing", MerkleTree().root(), [], [])
    dst = fresh()
    assert dst.load_snapshot(empty) == ("nothing", 0)
    assert dst.get("nothing") == ([], Cursor())
    with pytest.raises(InvalidContextName):
        fresh().snapshot("bad name")


def _root(entries):
    tree = MerkleTree()
    for e in entries:
        tree.set(bytes.fromhex(e.id))
    return tree.root()


def _refused(blob, cls):
    dst = fresh()
    append(dst, "c1", "mine")
    before = state_of(dst)
    with pytest.raises(cls):
        dst.load_snapshot(blob)
    assert state_of(dst) == before
    with pytest.raises(cls):
        decode_snapshot(blob, DEFAULT_LIMITS)


@pytest.mark.parametrize("bad", [b"", b"P2PLSNA", b"P2PLSNAQ\x01", b"NOTASNAPSHOT" * 5])
def test_bad_magic(bad):
    _refused(bad, InvalidSnapshot)


def test_every_truncation_is_invalid(blob):
    for cut in range(len(blob)):
        with pytest.raises(InvalidSnapshot):
            decode_snapshot(blob[:cut], DEFAULT_LIMITS)
    _refused(blob[:-1], InvalidSnapshot)


def test_trailing_bytes_are_invalid(blob):
    _refused(blob + b"\x00", InvalidSnapshot)


@pytest.mark.parametrize("version", [0, 1, 255])
def test_wrong_version(blob, version):
    bad = blob[: len(MAGIC)] + bytes([version]) + blob[len(MAGIC) + 1 :]
    _refused(bad, UnsupportedVersion)


def test_tampered_record_is_an_integrity_error(blob):
    size = HEAD_SIZE + 1  # a head of a one-context commit: no path
    n_heads = struct.unpack(">I", blob[-4 - 2 * size:-2 * size])[0]
    assert n_heads == 2  # a's and b's chains
    last = len(blob) - 4 - n_heads * size - 1
    for pos in (HEADER + 4, HEADER + 4 + 32 + 10, last):  # id, body, last byte of a record
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        _refused(bytes(bad), IntegrityError)


def test_tampered_root_is_an_integrity_error(blob):
    bad = bytearray(blob)
    bad[HEADER - 8 - 1] ^= 0x80  # last byte of the root
    _refused(bytes(bad), IntegrityError)


def test_missing_or_extra_entries_do_not_match_the_root():
    src = source_ledger()
    entries = src.get("c1")[0]
    root = src.context_root("c1")
    _refused(encode_snapshot("c1", root, entries[:-1]), IntegrityError)
    extra = chain_entries("q", [1], "c1")[0]
    _refused(encode_snapshot("c1", root, [*entries, extra]), IntegrityError)


def test_record_of_another_context_is_an_integrity_error():
    alien = chain_entries("q", [1], "c2")[0]
    _refused(encode_snapshot("c1", _root([alien]), [alien]), IntegrityError)


def test_invalid_context_name_in_the_header():
    for name in (b"bad name", b"", b"\xff\xfe"):
        blob = MAGIC + b"\x02" + struct.pack(">I", len(name)) + name + MerkleTree().root()
        blob += struct.pack(">Q", 0)
        with pytest.raises(InvalidSnapshot):
            decode_snapshot(blob, DEFAULT_LIMITS)


def test_count_larger_than_the_file():
    blob = MAGIC + b"\x02" + struct.pack(">I", 2) + b"c1" + MerkleTree().root()
    with pytest.raises(InvalidSnapshot):
        decode_snapshot(blob + struct.pack(">Q", 2**64 - 1), DEFAULT_LIMITS)


def test_snapshot_limits_are_the_loaders():
    big = chain_entries("q", [1], "c1", payload=lambda s: b"x" * 100)[0]
    blob = encode_snapshot("c1", _root([big]), [big], heads_for([big]))
    with pytest.raises(IntegrityError):
        open_ledger(MemoryStorage(), "z", limits=Limits(max_payload=10)).load_snapshot(blob)
    assert fresh().load_snapshot(blob) == ("c1", 1)


def test_snapshot_errors_are_ledger_errors():
    for cls in (InvalidSnapshot, UnsupportedVersion, AlreadyExists):
        assert issubclass(cls, SnapshotError) and issubclass(cls, LedgerError)
    assert issubclass(IntegrityError, LedgerError)


@SETTINGS
@given(data=st.data())
def test_mutated_snapshots_raise_ledger_errors_only(blob, data):
    mutated = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(mutated) - 1, 0)))
        if kind == "flip" and mutated:
            mutated[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and mutated:
            mutated[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            mutated[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del mutated[pos : pos + data.draw(st.integers(1, 8))]
        else:
            del mutated[pos:]
    dst = fresh()
    append(dst, "c1", "mine")
    before = state_of(dst)
    try:
        dst.load_snapshot(bytes(mutated))
    except LedgerError:
        assert state_of(dst) == before
    else:  # only possible if the mutation kept a valid snapshot (e.g. none at all)
        assert decode_snapshot(bytes(mutated), DEFAULT_LIMITS)[0] in dst.contexts


@SETTINGS
@given(tail=st.binary(max_size=120), version=st.sampled_from([1, 1, 1, 2]))
def test_random_bytes_after_the_magic_raise_ledger_errors_only(tail, version):
    with pytest.raises(LedgerError):
        fresh().load_snapshot(MAGIC + bytes([version]) + tail)


def test_entries_synced_after_a_snapshot_load_survive_reopen():
    a = open_ledger(MemoryStorage(), "a")
    append(a, "c1", "1", "2")
    storage = MemoryStorage()
    loader = open_ledger(storage, "l")
    assert loader.load_snapshot(a.snapshot("c1")) == ("c1", 2)
    assert sync(a, loader, "c1") == []  # a's structs for the same two entries: nothing new
    append(a, "c1", "3")
    assert [e.seq for e in sync(a, loader, "c1")] == [3]
    assert len(read_ids(loader, "c1")) == 3
    reopened = open_ledger(storage, "l", "l-2")
    assert read_ids(reopened, "c1") == read_ids(loader, "c1")


def test_entries_without_a_valid_signature_are_refused(blob):
    """A snapshot whose entries no signature vouches for (forged authorship, defect 4 of the
    trust issue) or whose head is tampered with is refused whole: nothing is stored."""
    forged = chain_entries("someone-else", [1, 2], "c1")
    _refused_on_load(encode_snapshot("c1", _root(forged), forged), ForgedEntry)
    bad = bytearray(blob)
    bad[-2] ^= 1  # the last byte of the last head's signature (then its depth: 0, no path)
    _refused_on_load(bytes(bad), ForgedEntry)


def _refused_on_load(blob, cls):
    dst = fresh()
    append(dst, "c1", "mine")
    before = state_of(dst)
    with pytest.raises(cls):
        dst.load_snapshot(blob)
    assert state_of(dst) == before


def test_each_refusal_names_its_problem(blob):
    """A snapshot is a file a user hands over: the one-line error says what is wrong with it."""
    cases = [
        (b"NOTASNAPSHOT", InvalidSnapshot, r"^not a p2p-ledger snapshot \(bad magic\)$"),
        (blob[:len(MAGIC)] + b"\x09" + blob[len(MAGIC) + 1:], UnsupportedVersion,
         "^snapshot format version 9; this build reads "),
        (blob + b"\x00", InvalidSnapshot, "^1 unexpected bytes after the last entry$"),
        (blob[:10], InvalidSnapshot, "^truncated snapshot: wanted 4 bytes at 9$"),
    ]
    name = b"bad name"
    header = MAGIC + blob[len(MAGIC):len(MAGIC) + 1] + struct.pack(">I", len(name)) + name
    cases.append((header + MerkleTree().root() + struct.pack(">Q", 0), InvalidSnapshot,
                  "^snapshot names no valid context: "))
    lying = MAGIC + blob[len(MAGIC):len(MAGIC) + 1] + struct.pack(">I", 2) + b"c1"
    lying += MerkleTree().root() + struct.pack(">Q", 10**6)
    cases.append((lying, InvalidSnapshot, r"^snapshot claims 1000000 entries in \d+ bytes$"))
    heads = lying[:-8] + struct.pack(">Q", 0) + struct.pack(">I", 3)
    cases.append((heads, InvalidSnapshot, "^snapshot claims 3 heads in 0 bytes$"))
    for bad, cls, message in cases:
        with pytest.raises(cls, match=message):
            decode_snapshot(bad, DEFAULT_LIMITS)
    alien = chain_entries("q", [1], "c2")[0]
    with pytest.raises(IntegrityError, match=r"^entry \w+ belongs to 'c2', not 'c1'$"):
        decode_snapshot(encode_snapshot("c1", _root([alien]), [alien]), DEFAULT_LIMITS)
    src = source_ledger()
    entries = src.get("c1")[0]
    with pytest.raises(IntegrityError, match="^snapshot of c1: entries give root [0-9a-f]{64}, "
                                             "file says [0-9a-f]{64}$"):
        decode_snapshot(encode_snapshot("c1", src.context_root("c1"), entries[:-1]),
                        DEFAULT_LIMITS)
