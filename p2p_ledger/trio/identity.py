"""The data directory's identity key file: created on first open (mode 0600), checked after.

The key and the store belong together. The store records the origin (public key) it was created
for; opening refuses, with a one-line IdentityError, a key whose store has vanished or been
emptied (starting would silently make a new node: its peers would see entries vanish from its
history and a stranger in its place), a store whose key file is missing, and a pair that does
not match. Creation is ordered so that a crash at any point leaves a state the next open
completes: the key goes to a temporary file (fsynced), the origin into the store (committed),
then the file is renamed into place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..core.errors import IdentityError
from ..core.identity import Identity
from ..core.storage import Storage
from .store import fsync_dir

KEY_FILE = "identity.key"
_HEADER = "p2p-ledger ed25519 private key v1"


def open_identity(data_dir: Path, store: Storage, create: bool = True) -> Identity:
    """The identity of ``data_dir`` (whose store is open as ``store``), created if new (and
    ``create``)."""
    path = data_dir / KEY_FILE
    pending = data_dir / (KEY_FILE + ".new")
    recorded = store.get_meta("origin")
    if not path.exists() and pending.exists() and recorded is not None:
        candidate = _read(pending)
        if candidate.origin == recorded:  # a crash between the commit and the rename
            os.replace(pending, path)
    if path.exists():
        identity = _read(path)
        if recorded is None:
            raise IdentityError(
                f"{path} holds the identity of origin {identity.origin[:16]}… but the ledger "
                f"store next to it is empty (vanished, emptied or replaced): refusing to start "
                f"as a new node. Restore the store, or move the key away to start a new node.")
        if recorded != identity.origin:
            raise IdentityError(
                f"{path} is the key of origin {identity.origin[:16]}… but the store belongs to "
                f"origin {recorded[:16]}…")
        return identity
    if recorded is not None:
        raise IdentityError(
            f"the store in {data_dir} belongs to origin {recorded[:16]}… but its key file "
            f"{path} is missing: restore it (a node cannot sign without its key)")
    if not create:
        raise IdentityError(f"{data_dir} has no identity key: it is not a p2p-ledger node's "
                            f"data directory")
    identity = Identity.generate()
    _write(pending, identity)
    store.set_meta("origin", identity.origin)
    os.replace(pending, path)
    fsync_dir(data_dir)
    return identity


def _read(path: Path) -> Identity:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): "
                            f"chmod 600 it")
    try:
        header, key_hex = _parts(path)
        if header != _HEADER:
            raise ValueError("unknown header")
        return Identity.from_private_bytes(bytes.fromhex(key_hex))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"{path} is not a p2p-ledger identity key: {exc}") from None


def _parts(path: Path) -> tuple[str, str]:
    lines = path.read_text("ascii").splitlines()
    if len(lines) != 2:
        raise ValueError(f"{len(lines)} lines, expected 2")
    return lines[0], lines[1].strip()


def _write(path: Path, identity: Identity) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{_HEADER}\n{identity.private_bytes().hex()}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
