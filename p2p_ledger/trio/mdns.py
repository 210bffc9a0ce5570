"""LAN discovery driver (opt-in, ``open_node(mdns=True)`` / ``node --mdns``): the only module
that imports ``zeroconf``. It advertises this node as a DNS-SD service and reports what it
browses to the core (``NodeCore.peer_discovered`` / ``peer_lost``), which decides.

Theory of operation
-------------------
``advertised_addresses(host)`` runs before the node opens anything: it refuses (``MdnsUnavailable``)
a listen address that is loopback or not an IP literal, and turns a wildcard (``0.0.0.0``,
``::``) into the address of every interface that is up and not loopback (IPv6 link-local
addresses left out: a URL cannot carry their zone). Multicast is sent and received on exactly
those interfaces; none at all (an offline machine listening on ``0.0.0.0``) means a warning and
no mDNS, so the node still starts.

``run_mdns`` is one task in the node's nursery::

    run_mdns
    ├── zeroconf's own thread   its asyncio loop: sockets on 224.0.0.251:5353 / ff02::fb,
    │                           probing, announcing, answering, the browser's queries
    └── resolver (this task)    waits for browse events, resolves, calls the core

zeroconf calls the browser's handler on its own thread. The handler only hands the event to
trio with ``TrioToken.run_sync_soon`` (non-blocking: zeroconf's thread never waits for trio,
so closing zeroconf from trio cannot deadlock); on the trio thread it lands in ``pending``,
one slot per DNS-SD instance keeping the latest state (added/updated/removed), bounded by
``MAX_PENDING``. The resolver takes the slots; for added/updated it asks zeroconf for the
record (from its cache, or a query of at most ``RESOLVE_TIMEOUT``) on a worker thread, checks
it with ``discovery.parse_announcement`` and calls ``core.peer_discovered``; for removed,
``core.peer_lost``. A malformed record is logged once per instance and ignored. Leaving the
nursery unregisters the service (goodbye packets: the others drop it at once) and closes
zeroconf, on a worker thread, shielded, within ``CLOSE_TIMEOUT``.

Records carry a random ``run`` TXT value per process: a node that restarts (even after a
SIGKILL, with no goodbye) changes its record, so the others see an update and redial it at once
instead of after their backoff.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import ifaddr
import trio
from zeroconf import Error as ZeroconfError
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from ..core.discovery import (
    SERVICE_TYPE,
    InvalidAnnouncement,
    instance_name,
    parse_announcement,
    txt_record,
)
from ..core.errors import MdnsUnavailable

if TYPE_CHECKING:
    from ..core.node import NodeCore

log = logging.getLogger("p2p_ledger")

MAX_PENDING = 1024  # browse events not yet handled (one per instance)
RESOLVE_TIMEOUT_MS = 3000
CLOSE_TIMEOUT = 5.0


def advertised_addresses(host: str | None) -> list[str]:
    """The addresses to advertise for a node listening on ``host`` (see the module doc)."""
    if host is None:
        raise MdnsUnavailable("mdns needs a listen address (--listen) to advertise")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise MdnsUnavailable(
            f"mdns needs --listen with an IP address or 0.0.0.0, not {host!r}") from None
    if ip.is_loopback:
        raise MdnsUnavailable(
            f"mdns will not multicast for a loopback-only listen ({host}): listen on a LAN "
            "address or 0.0.0.0")
    if not ip.is_unspecified:
        return [str(ip)]
    return interface_addresses(ipv6=ip.version == 6)


def interface_addresses(ipv6: bool) -> list[str]:
    """Every non-loopback address of this host's interfaces (IPv4 first; IPv6 too if asked,
    link-local excluded)."""
    v4: list[str] = []
    v6: list[str] = []
    for adapter in ifaddr.get_adapters():
        for addr in adapter.ips:
            if isinstance(addr.ip, str):
                ip4 = ipaddress.IPv4Address(addr.ip)
                if not ip4.is_loopback and not ip4.is_link_local:
                    v4.append(str(ip4))
            elif ipv6:
                ip6 = ipaddress.IPv6Address(addr.ip[0])
                if not ip6.is_loopback and not ip6.is_link_local:
                    v6.append(str(ip6))
    return list(dict.fromkeys(v4)) + list(dict.fromkeys(v6))  # without repeats, in order


class _Discovery:
    """The trio side: pending browse events, the resolver, the core calls."""

    def __init__(self, core: NodeCore, flush: Callable[[], None], zc: Zeroconf) -> None:
        self.core = core
        self.flush = flush  # carries out what the core decided (the runtime's Node._flush)
        self.zc = zc
        self.token = trio.lowlevel.current_trio_token()
        self.pending: dict[str, ServiceStateChange] = {}
        self.wake = trio.Event()
        self.bad: set[str] = set()  # instances whose malformed record was logged

    # zeroconf's thread
    def on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        try:
            self.token.run_sync_soon(self._note, name, state_change)
        except trio.RunFinishedError:
            pass  # the node is gone; zeroconf is being closed

    # trio's thread
    def _note(self, name: str, change: ServiceStateChange) -> None:
        log.debug("mdns: %s %s", change.name, name)
        if name in self.pending or len(self.pending) < MAX_PENDING:
            self.pending[name] = change
            self.wake.set()

    async def resolver(self) -> None:
        core = self.core
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            pending, self.pending = self.pending, {}
            for name, change in pending.items():
                if change is ServiceStateChange.Removed:
                    self.bad.discard(name)
                    core.peer_lost(name, trio.current_time())
                else:
                    try:
                        info = await trio.to_thread.run_sync(
                            self.zc.get_service_info, SERVICE_TYPE, name, RESOLVE_TIMEOUT_MS,
                            abandon_on_cancel=True)
                        if info is None or info.port is None:
                            continue  # gone before it answered
                        ann = parse_announcement(info.properties, info.parsed_addresses(),
                                                 info.port)
                    except (InvalidAnnouncement, ZeroconfError, OSError, ValueError) as exc:
                        if name not in self.bad and len(self.bad) < MAX_PENDING:
                            self.bad.add(name)
                            log.info("mdns: ignoring %s: %s", name, exc)
                        continue
                    core.peer_discovered(name, ann, trio.current_time())
                self.flush()


async def run_mdns(core: NodeCore, flush: Callable[[], None], addresses: list[str], port: int,
                   *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Advertise the node of ``core`` on ``addresses``:``port`` and feed what is browsed to
    ``core`` (then ``flush()``, so the runtime carries out its decisions), until cancelled.
    Failing to start (no multicast, port 5353 refused...) is logged and ends only this task:
    the node runs on without LAN discovery."""
    if not addresses:
        log.warning("mdns: no interface other than loopback is up: not advertising or "
                    "browsing (the node runs without LAN discovery)")
        task_status.started()
        return
    config = core.config
    v6 = any(":" in a for a in addresses)
    info = ServiceInfo(
        SERVICE_TYPE, f"{instance_name(config.node_id, core.ledger.origin)}.{SERVICE_TYPE}",
        addresses=[socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
                   for a in addresses],
        port=port,
        properties=txt_record(config.node_id, config.cluster, run=secrets.token_hex(4),
                              scheme="wss" if config.url.startswith("wss:") else "ws",
                              origin=core.ledger.origin),
        server=f"p2p-ledger-{core.ledger.origin[:16]}.local.")
    try:
        zc = await trio.to_thread.run_sync(lambda: Zeroconf(
            interfaces=list(addresses), ip_version=IPVersion.All if v6 else IPVersion.V4Only))
    except OSError as exc:
        log.error("mdns: cannot start (%s); the node runs without LAN discovery", exc)
        task_status.started()
        return
    browser: ServiceBrowser | None = None
    try:
        discovery = _Discovery(core, flush, zc)
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[discovery.on_change])
        task_status.started()
        log.info("mdns: advertising %s on %s port %d (cluster %s)", info.name,
                 ", ".join(addresses), port, config.cluster)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discovery.resolver)
            # why: probing and announcing take about a second (three probes 250 ms apart):
            # on a worker thread, so the node serves meanwhile
            await trio.to_thread.run_sync(_register, zc, info, abandon_on_cancel=True)
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await trio.to_thread.run_sync(_close, zc, browser, abandon_on_cancel=True)


def _register(zc: Zeroconf, info: ServiceInfo) -> None:
    try:
        zc.register_service(info, allow_name_change=True)
    except (ZeroconfError, OSError) as exc:
        log.error("mdns: cannot advertise %s: %s", info.name, exc)


def _close(zc: Zeroconf, browser: ServiceBrowser | None) -> None:
    if browser is not None:
        browser.cancel()
    zc.unregister_all_services()  # goodbye packets: peers drop the record at once
    zc.close()
