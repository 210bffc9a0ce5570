"""p2p-ledger: a peer-to-peer, grow-only, durable memory for agents. The ledger never decides."""

__version__ = "0.1.0"
