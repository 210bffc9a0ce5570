"""p2p-ledger: a peer-to-peer, grow-only, durable memory for agents. The ledger never decides.

The embedding API, all importable from here::

    from p2p_ledger import open_node, Node, Client, Entry, Cursor, Limits, LedgerError

* ``open_node(data_dir, listen=..., peers=...)``: run a node inside your trio program
  (``async with``); it yields a ``Node``.
* ``Client.connect(url)``: the same calls against a node running elsewhere.
* ``Entry`` (what you read), ``Cursor`` (where you are), ``Limits`` (per-entry size limits).
* The errors, one tree rooted at ``LedgerError`` and split by who is at fault:
  ``LocalInputError`` (the caller's arguments), ``RemoteProtocolError`` (a peer or a node's
  answer), ``IntegrityError`` (bytes whose content id does not match), ``SnapshotError``,
  storage and link errors.

``p2p_ledger.testing`` has ``LocalCluster`` (real node processes to test an agent against).
The driver names (``open_node``, ``Node``, ``Client``) are imported on first use, so importing
``p2p_ledger.core`` or ``p2p_ledger.sim`` does not load trio and websockets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The pure core is light (no trio, no websockets): imported now.
from .core.cursor import Cursor
from .core.entry import DEFAULT_LIMITS, Entry, Limits
from .core.errors import (
    AlreadyExists,
    ForbiddenUpdate,
    ForgedEntry,
    IdentityError,
    IntegrityError,
    InvalidClusterKey,
    InvalidContextName,
    InvalidCursor,
    InvalidKey,
    InvalidMeta,
    InvalidNodeId,
    InvalidPayload,
    InvalidSnapshot,
    InvalidUrl,
    KeyTooLarge,
    LamportOutOfRange,
    LedgerError,
    LinkBroken,
    LinkClosed,
    ListenError,
    LocalInputError,
    MdnsUnavailable,
    MetaTooLarge,
    PayloadTooLarge,
    ProtocolMismatch,
    RemoteProtocolError,
    SnapshotError,
    StoreDamagedError,
    StoreError,
    StoreLockedError,
    TlsError,
    UnknownEntry,
    UnsupportedVersion,
)

if TYPE_CHECKING:
    from .core.proof import InvalidProof
    from .trio.client import Client
    from .trio.runtime import Node, open_node

# The drivers load trio and websockets, proofs the ledger and pycrdt: imported on first use
# (``verify --data``'s second process needs neither).
_LAZY = {"open_node": ".trio.runtime", "Node": ".trio.runtime", "Client": ".trio.client",
         "InvalidProof": ".core.proof"}

__all__ = [
    "DEFAULT_LIMITS", "AlreadyExists", "Client", "Cursor", "Entry", "ForbiddenUpdate",
    "ForgedEntry", "IdentityError", "IntegrityError", "LamportOutOfRange", "InvalidClusterKey",
    "InvalidContextName", "InvalidCursor", "InvalidKey", "InvalidMeta", "InvalidNodeId",
    "InvalidPayload", "InvalidProof", "InvalidSnapshot", "InvalidUrl",
    "KeyTooLarge", "LedgerError", "Limits", "LinkBroken", "LinkClosed", "ListenError",
    "LocalInputError", "MdnsUnavailable", "MetaTooLarge", "Node", "PayloadTooLarge",
    "ProtocolMismatch", "RemoteProtocolError", "SnapshotError", "StoreDamagedError",
    "StoreError", "StoreLockedError", "TlsError", "UnknownEntry", "UnsupportedVersion",
    "__version__", "open_node",
]


def __getattr__(name: str) -> Any:
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'p2p_ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
