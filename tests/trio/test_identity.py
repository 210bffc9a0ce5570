"""The data directory's identity: created on first open (0600), kept, and paired with its store."""

from __future__ import annotations

import os
import stat

import pytest

from p2p_ledger.core.errors import IdentityError, StoreDamagedError
from p2p_ledger.trio.identity import KEY_FILE, open_identity
from p2p_ledger.trio.runtime import open_node
from p2p_ledger.trio.store import SqliteStore


def _open(path):
    store = SqliteStore(path, synchronous="OFF")
    try:
        return open_identity(path, store)
    finally:
        store.close()


def test_first_open_creates_a_private_key_and_later_opens_keep_it(tmp_path):
    first = _open(tmp_path)
    mode = stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert _open(tmp_path).origin == first.origin
    assert _open(tmp_path / "other").origin != first.origin  # a new directory, a new origin


def test_a_key_whose_store_vanished_or_was_emptied_is_refused(tmp_path):
    _open(tmp_path)
    (tmp_path / "ledger.sqlite3").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"ledger.sqlite3{suffix}").unlink(missing_ok=True)
    with pytest.raises(IdentityError, match="empty"):
        _open(tmp_path)
    (tmp_path / "ledger.sqlite3").write_bytes(b"")  # a 0-byte store next to the key
    with pytest.raises((IdentityError, StoreDamagedError), match="empty"):
        _open(tmp_path)


def test_a_store_whose_key_is_missing_or_another_is_refused(tmp_path):
    _open(tmp_path / "a")
    _open(tmp_path / "b")
    os.replace(tmp_path / "b" / KEY_FILE, tmp_path / "a" / KEY_FILE)
    with pytest.raises(IdentityError, match="belongs to origin"):
        _open(tmp_path / "a")
    with pytest.raises(IdentityError, match="missing"):
        _open(tmp_path / "b")


def test_a_key_readable_by_others_or_garbled_is_refused(tmp_path):
    _open(tmp_path)
    key = tmp_path / KEY_FILE
    key.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        _open(tmp_path)
    key.chmod(0o600)
    key.write_text("not a key\n")
    with pytest.raises(IdentityError, match="not a p2p-ledger identity key"):
        _open(tmp_path)


def test_a_crash_between_writing_the_key_and_renaming_it_is_completed(tmp_path):
    identity = _open(tmp_path)
    os.replace(tmp_path / KEY_FILE, tmp_path / (KEY_FILE + ".new"))
    assert _open(tmp_path).origin == identity.origin
    assert (tmp_path / KEY_FILE).exists()


async def test_the_node_id_is_a_label_and_a_wiped_directory_is_a_new_origin(tmp_path):
    async with open_node(tmp_path / "n", node_id="alice") as node:
        first = await node.append("c", "one")
        assert node.node_id == "alice" and first.origin == node.ledger.origin
    async with open_node(tmp_path / "n", node_id="alice-renamed") as node:
        again = await node.append("c", "two")
        assert node.node_id == "alice-renamed"
        assert again.origin == first.origin and again.writer != first.writer and again.seq == 1
    for name in os.listdir(tmp_path / "n"):
        os.unlink(tmp_path / "n" / name)
    async with open_node(tmp_path / "n", node_id="alice") as node:
        assert (await node.append("c", "three")).origin != first.origin
