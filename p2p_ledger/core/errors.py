"""One exception tree, split by who is at fault.

LedgerError
├── LocalInputError        the caller passed something invalid (bad name, too big, bad cursor)
│   ├── InvalidContextName, InvalidKey, KeyTooLarge, InvalidPayload, PayloadTooLarge,
│   │   MetaTooLarge, InvalidMeta, InvalidCursor, InvalidNodeId, InvalidClusterKey,
│   │   InvalidUrl, TlsError, UnknownEntry
├── IntegrityError         stored or received bytes do not match their content address / root
│   ├── ForgedEntry        an entry no valid signature of its origin vouches for
│   └── LamportOutOfRange  an entry's Lamport time is beyond MAX_LAMPORT
├── RemoteProtocolError    a peer or a file sent something malformed or forbidden
│   └── ForbiddenUpdate    a Yjs update that would delete or rewrite (the ledger only grows)
├── SnapshotError          InvalidSnapshot, UnsupportedVersion, AlreadyExists
├── StoreError             the data directory cannot be used (not a directory, not SQLite)
│   ├── StoreLockedError   another process holds the data directory
│   └── StoreDamagedError  the store is truncated, malformed, emptied or vanished
├── ListenError            the node cannot accept connections where it was told to (port in use)
├── IdentityError          the data directory's key file is unreadable, or its store vanished
└── LinkClosed / LinkBroken  a peer link ended cleanly / failed (trio naming: Closed vs Broken)
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error p2p-ledger raises on purpose."""


class LocalInputError(LedgerError, ValueError):
    """The local caller passed invalid input; nothing was changed."""


class InvalidContextName(LocalInputError):
    pass


class InvalidKey(LocalInputError):
    pass


class KeyTooLarge(LocalInputError):
    pass


class InvalidPayload(LocalInputError):
    pass


class PayloadTooLarge(LocalInputError):
    pass


class MetaTooLarge(LocalInputError):
    pass


class InvalidMeta(LocalInputError):
    pass


class InvalidCursor(LocalInputError):
    pass


class InvalidNodeId(LocalInputError):
    pass


class InvalidClusterKey(LocalInputError):
    """An empty cluster key (what an unset shell variable gives): refused, never an open node."""


class InvalidUrl(LocalInputError):
    """Not a ws:// or wss:// URL with a host (a --peer or --node value)."""


class UnknownEntry(LocalInputError):
    """No entry with that id in that context on this node (``prove``)."""


class TlsError(LocalInputError):
    """A TLS certificate, key or CA file that cannot be used (missing, unreadable, mismatched)."""


class MdnsUnavailable(LocalInputError):
    """mDNS was asked for where it cannot work (no listen address, or a loopback-only one)."""


class IntegrityError(LedgerError):
    """Bytes do not match the content address (or Merkle root) they claim."""


class ForgedEntry(IntegrityError):
    """An entry that no valid signature of its origin vouches for (or a bad signature)."""


class LamportOutOfRange(IntegrityError):
    """An entry whose Lamport time is beyond ``entry.MAX_LAMPORT``: refused, so no entry can
    drive a clock to where appends fail."""


class RemoteProtocolError(LedgerError):
    """A peer (or a file from elsewhere) sent something malformed or forbidden."""


class ProtocolMismatch(RemoteProtocolError):
    """The peer speaks another protocol version (its HELLO says which): the link is refused."""


class ForbiddenUpdate(RemoteProtocolError):
    """A Yjs update that deletes or rewrites; refused before it touches the document."""


class SnapshotError(LedgerError):
    pass


class InvalidSnapshot(SnapshotError):
    pass


class UnsupportedVersion(SnapshotError):
    pass


class AlreadyExists(SnapshotError):
    pass


class StoreError(LedgerError):
    """The data directory cannot be used: not a directory, or its database is not SQLite."""


class StoreLockedError(StoreError):
    """Another process already has this data directory open."""


class StoreDamagedError(StoreError):
    """The store cannot be read (truncated, malformed), was emptied, or vanished next to its
    WAL files: refused, never replaced by a new node (``p2p-ledger repair`` keeps what
    verifies)."""


class ListenError(LedgerError):
    """The node cannot listen where it was told to (address in use, unknown host...)."""


class IdentityError(LedgerError):
    """The data directory's identity key is unreadable or invalid, or the key is there and the
    ledger store it belongs to is gone (starting would silently make a new node)."""


class LinkClosed(LedgerError):
    """A peer link was closed on purpose (by us or by the peer)."""


class LinkBroken(LedgerError):
    """A peer link failed (network error, timeout, protocol violation)."""
