"""LAN discovery records (DNS-SD over mDNS), sans-I/O: what a node advertises and how a record
read off the network is checked before the node's policy (``NodeCore.peer_discovered``) sees it.

Theory of operation
-------------------
A node started with ``mdns`` registers one DNS-SD service instance of type ``SERVICE_TYPE``
(``_p2p-ledger._tcp.local.``) whose SRV/A/AAAA records carry the addresses and port it listens
on, and whose TXT record carries the keys below. The driver (``trio/mdns.py``, the only user of
the ``zeroconf`` package) browses the same type and hands every resolved instance to
``parse_announcement``; whatever comes back is a well-formed ``Announcement`` (else
``InvalidAnnouncement``: anyone on the LAN can multicast anything). Whether to dial it — own
cluster, own protocol version, not ourselves — is decided by ``NodeCore``, never here.

TXT keys (DNS-SD style: short ASCII keys, each value ≤ 255 bytes):

=========  ==========================================================
``proto``  the peer protocol version (``wire.PROTOCOL_VERSION``), decimal
``cluster`` the cluster name (only peers of our own cluster are dialed)
``id``     the node id: a label, shown only (two nodes may share one)
``origin`` the node's public key (64 hex digits): who it is; the handshake proves it
``scheme`` ``ws`` or ``wss``
``run``    random per process: a restarted node's record changes, so the others see an update
=========  ==========================================================

The record proves nothing: with a cluster key the handshake (HELLO/AUTH) still authenticates
every link, and a node that lies about its id is refused there like any other peer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .entry import NODE_ID_RE
from .errors import RemoteProtocolError
from .wire import PROTOCOL_VERSION

SERVICE_TYPE = "_p2p-ledger._tcp.local."
MAX_ADDRESSES = 8  # per announcement; more are ignored (a host has a few interfaces)
MAX_CLUSTER = 128
SCHEMES = ("ws", "wss")


class InvalidAnnouncement(RemoteProtocolError):
    """A DNS-SD record of our service type that is malformed (missing or bad TXT keys...)."""


@dataclass(frozen=True)
class Announcement:
    node_id: str  # its label
    cluster: str
    protocol: int
    urls: tuple[str, ...]  # in the order given (the driver puts IPv4 first)
    origin: str = ""  # its public key, hex ("" in a record of another protocol version)


def txt_record(node_id: str, cluster: str, run: str, scheme: str = "ws",
               origin: str = "") -> dict[str, str]:
    """The TXT properties a node advertises (``run``: a random token per process)."""
    return {"proto": str(PROTOCOL_VERSION), "cluster": cluster, "id": node_id,
            "origin": origin, "scheme": scheme, "run": run}


def instance_name(node_id: str, origin: str) -> str:
    """The DNS-SD instance label: the node id and the start of its origin (two nodes may share
    a label on one LAN), within 63 bytes (the DNS label limit)."""
    return f"{node_id[:54]}-{origin[:8]}"


def parse_announcement(
    properties: Mapping[bytes, bytes | None], addresses: Sequence[str], port: int
) -> Announcement:
    """Check one resolved record: TXT keys, port, addresses (textual IPv4/IPv6, as the driver
    decoded them from A/AAAA records). Raises ``InvalidAnnouncement`` naming the problem."""
    def text(key: str) -> str:
        raw = properties.get(key.encode())
        if raw is None:
            raise InvalidAnnouncement(f"TXT key {key!r} missing")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidAnnouncement(f"TXT key {key!r} is not UTF-8") from None
        if not value.isprintable():
            raise InvalidAnnouncement(f"TXT key {key!r} has control characters")
        return value

    node_id, cluster, proto, scheme = text("id"), text("cluster"), text("proto"), text("scheme")
    if not NODE_ID_RE.fullmatch(node_id):
        raise InvalidAnnouncement(f"invalid node id {node_id!r}")
    if not 0 < len(cluster) <= MAX_CLUSTER:
        raise InvalidAnnouncement(f"cluster name of {len(cluster)} characters")
    if not (proto.isascii() and proto.isdigit() and len(proto) <= 5):
        raise InvalidAnnouncement(f"protocol version {proto!r} is not a number")
    if scheme not in SCHEMES:
        raise InvalidAnnouncement(f"scheme {scheme!r} is not ws or wss")
    if not 0 < port < 65536:
        raise InvalidAnnouncement(f"port {port} out of range")
    urls = []
    for address in addresses[:MAX_ADDRESSES]:
        host = _host(address)
        if host is None:
            raise InvalidAnnouncement(f"address {address!r} is not an IP address")
        urls.append(f"{scheme}://{host}:{port}")
    if not urls:
        raise InvalidAnnouncement("no address")
    origin = ""
    if int(proto) == PROTOCOL_VERSION:  # (another version is refused by the node, by name)
        origin = text("origin")
        if len(origin) != 64 or not all(c in "0123456789abcdef" for c in origin):
            raise InvalidAnnouncement(f"origin {origin[:80]!r} is not 64 hex digits")
    return Announcement(node_id, cluster, int(proto), tuple(urls), origin)


def _host(address: str) -> str | None:
    """The URL host for a textual IP address, or None if it is not one. (Pure string checks:
    the driver already decoded the address from 4 or 16 record bytes.)"""
    parts = address.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) < 256
                               for p in parts):
        return address
    if ":" in address and len(address) <= 45 and all(
            c in "0123456789abcdefABCDEF:." for c in address):
        return f"[{address}]"
    return None
