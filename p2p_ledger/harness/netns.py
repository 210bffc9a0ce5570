"""A multi-host test bed in Linux network namespaces: separate network stacks, one LAN, faults
made by the kernel.

Theory of operation
-------------------
``TestBed(["a", "b", "c"])`` (a context manager; root and ``ip`` from iproute2 required) makes
one namespace per host and one more for the switch::

    host ns "<prefix>-h0"            switch ns "<prefix>-sw"
      eth0 10.77.0.1/24  ── veth ──  p0 ─┐
    host ns "<prefix>-h1"                ├─ br0 (a Linux bridge; br1, br2... during partitions)
      eth0 10.77.0.2/24  ── veth ──  p1 ─┘

The addresses exist only inside these namespaces (every test bed uses the same private range,
which cannot collide: nothing outside sees it) and no host has a default route, so nothing
leaves the bed. Names carry the creating process id and a random tag, so parallel runs never
collide; a bed left behind by a process that no longer exists (SIGKILL) is removed by the next
``TestBed`` made on the machine. Leaving the ``with`` block, normally, on an exception or on
Ctrl-C, SIGKILLs every process still inside the bed's namespaces and deletes them (which
deletes their interfaces).

Faults are the kernel's, not a relay's:

* ``set_cuts(cuts)`` takes the directed pairs (a, b) whose packets must not arrive. Hosts cut
  from each other both ways, transitively, sit on separate bridges: their ports are moved to
  ``br1``, ``br2``...; neither unicast nor multicast crosses, and open TCP connections see only
  silence, exactly as behind a failed switch. A one-way cut inside one bridge (a's packets to b
  vanish, b's to a arrive) is a policy rule in b's namespace, ``ip rule add pref 10 from A iif
  eth0 blackhole`` (each host's ``lookup local`` rule is moved from pref 0 to 100 so the drop
  comes first): a's packets are dropped on arrival, silently, so a's connects time out as on a
  real one-way failure, and a TCP connection either way stalls (its ACKs cannot cross). It
  applies to unicast only. (A blackhole *route* in a's namespace fails a's sends at once with
  EINVAL instead; the bridge has no VLAN filtering and ``tc`` no classifiers on this kernel.)
* ``unplug(host)`` / ``plug(host)``: the switch side of the host's veth goes down / up (the
  host sees NO-CARRIER, like a pulled cable).
* Latency and loss cannot be emulated here: ``tc qdisc add ... netem`` fails with "Specified
  qdisc kind is unknown" (the kernel has no sch_netem; of the qdiscs only pfifo, htb and tbf
  exist, and no tc classifier or action at all). To check another kernel:
  ``ip netns exec HOST tc qdisc add dev eth0 root netem delay 10ms`` in a bed's host.

Programs run in a host with ``host.command(argv)`` (``ip netns exec``); this process opens
sockets in a host with ``host.socket()`` (``setns`` on the calling thread, around the
``socket()`` call only: a socket stays in the namespace it was made in), so a test can reach a
node's API from inside the node's own host without any route into the bed.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from ..sim.scenario import Scenario, cut_groups
from ..trio.client import Client
from .real import REQUEST_TIMEOUT, RealNode

PREFIX = "p2pl"
SUBNET = "10.77.0"  # /24; host i is .(i+1)
MAX_HOSTS = 200
CLONE_NEWNET = 0x40000000
IP_TIMEOUT = 20.0
NODE_PORT = 7000  # every host's node listens here (each host has its own address)


class NetnsError(Exception):
    """A test bed could not be made or changed (the message has ``ip``'s own words)."""


def netns_unavailable() -> str | None:
    """Why a test bed cannot be made on this machine, or None if it can (tests skip with it)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root, as CI does)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    name = f"{PREFIX}-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except NetnsError as exc:
        return f"`ip netns add` does not work here: {exc}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Host:
    name: str
    index: int
    netns: str
    address: str
    port: str  # the switch side of its veth

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host (``ip netns exec``, which execs: the pid is argv's)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def socket(self, family: int = socket.AF_INET,
               kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket in this host's network stack (connect it to the host's own address)."""
        return socket_in(self.netns, family, kind)


@dataclass
class TestBed:
    names: Sequence[str]
    hosts: dict[str, Host] = field(default_factory=dict)
    prefix: str = ""
    switch: str = ""
    _bridges: int = 0
    _cuts: set[tuple[str, str]] = field(default_factory=set)
    _rules: set[tuple[str, str]] = field(default_factory=set)  # one-way cuts (drop rules)
    _made: list[str] = field(default_factory=list)

    __test__ = False  # not a pytest class

    def __enter__(self) -> TestBed:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- making and removing ---------------------------------------------------------------

    def create(self) -> None:
        names = list(self.names)
        if not 0 < len(names) <= MAX_HOSTS or len(set(names)) != len(names):
            raise NetnsError(f"a test bed needs 1..{MAX_HOSTS} distinct host names")
        remove_stale_beds()
        self.prefix = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-sw"
        self._add_netns(self.switch)
        self._ip_in(self.switch, "link", "set", "lo", "up")
        self._bridge(0)
        for i, name in enumerate(names):
            host = Host(name, i, f"{self.prefix}-h{i}", f"{SUBNET}.{i + 1}", f"p{i}")
            self._add_netns(host.netns)
            self._ip_in(self.switch, "link", "add", host.port, "type", "veth", "peer", "name",
                        "eth0", "netns", host.netns)
            self._ip_in(host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            self._ip_in(host.netns, "link", "set", "lo", "up")
            self._ip_in(host.netns, "link", "set", "eth0", "up")
            self._ip_in(host.netns, "rule", "add", "pref", "100", "lookup", "local")
            self._ip_in(host.netns, "rule", "del", "pref", "0")
            self._ip_in(self.switch, "link", "set", host.port, "master", "br0")
            self._ip_in(self.switch, "link", "set", host.port, "up")
            self.hosts[name] = host

    def close(self) -> None:
        """SIGKILL whatever still runs in the bed, then delete every namespace it made."""
        for netns in self._made:
            kill_inside(netns)
        for netns in reversed(self._made):
            _ip("netns", "del", netns, check=False)
        self._made.clear()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)

    def _bridge(self, k: int) -> str:
        while self._bridges <= k:
            name = f"br{self._bridges}"
            self._ip_in(self.switch, "link", "add", name, "type", "bridge")
            # why: a fresh bridge waits 15 s (forward_delay, STP off) before forwarding; 0 now
            self._ip_in(self.switch, "link", "set", name, "type", "bridge", "forward_delay", "0")
            self._ip_in(self.switch, "link", "set", name, "up")
            self._bridges += 1
        return f"br{k}"

    # ---- faults ------------------------------------------------------------------------------

    @property
    def cuts(self) -> set[tuple[str, str]]:
        return set(self._cuts)

    def set_cuts(self, cuts: Iterable[tuple[str, str]]) -> None:
        """Make exactly these directed pairs unreachable (see the module doc); ``set()`` heals."""
        cuts = {(a, b) for a, b in cuts if a != b}
        unknown = {n for pair in cuts for n in pair} - self.hosts.keys()
        if unknown:
            raise NetnsError(f"unknown hosts {sorted(unknown)}")
        groups = cut_groups(list(self.hosts), cuts)
        for k, group in enumerate(groups):
            bridge = self._bridge(k)
            for name in group:
                self._ip_in(self.switch, "link", "set", self.hosts[name].port, "master", bridge)
        where = {name: k for k, group in enumerate(groups) for name in group}
        rules = {(a, b) for a, b in cuts if where[a] == where[b]}
        for verb, pairs in (("del", self._rules - rules), ("add", rules - self._rules)):
            for a, b in sorted(pairs):
                self._ip_in(self.hosts[b].netns, "rule", verb, "pref", "10", "from",
                            self.hosts[a].address, "iif", "eth0", "blackhole")
        self._rules, self._cuts = rules, cuts

    def unplug(self, name: str) -> None:
        self._ip_in(self.switch, "link", "set", self.hosts[name].port, "down")

    def plug(self, name: str) -> None:
        self._ip_in(self.switch, "link", "set", self.hosts[name].port, "up")

    # ---- observation -------------------------------------------------------------------------

    def traffic(self) -> tuple[int, int]:
        """(packets, bytes) the hosts have sent into the switch so far (its ports' rx)."""
        out = _ip("-n", self.switch, "-s", "-j", "link", "show", "type", "veth")
        packets = size = 0
        for link in json.loads(out or "[]"):
            rx = link.get("stats64", {}).get("rx", {})
            packets += int(rx.get("packets", 0))
            size += int(rx.get("bytes", 0))
        return packets, size

    def _ip_in(self, netns: str, *args: str) -> None:
        _ip("-n", netns, *args)


# ---- namespaces, processes, sockets ------------------------------------------------------------

def _ip(*args: str, check: bool = True) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"ip {' '.join(args)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def kill_inside(netns: str) -> None:
    """SIGKILL every process in a namespace this module made (and wait until they are gone)."""
    for _ in range(50):
        pids = [int(p) for p in _ip("netns", "pids", netns, check=False).split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # why: it exited between `ip netns pids` and the kill: what we wanted
        time.sleep(0.02)  # the kernel reaps asynchronously; bounded (50 × 20 ms)


def remove_stale_beds() -> None:
    """Delete beds whose creating process is gone (names hold its pid)."""
    for line in _ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        if not _alive(int(parts[1])):
            kill_inside(name)
            _ip("netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(netns: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside ``netns``; the calling thread is back in its own namespace when
    this returns (nothing else runs on the thread in between: no await, no callback)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                return socket.socket(family, kind)
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


# ---- the scenario runner's network -------------------------------------------------------------

class NetnsNetwork:
    """``RealRun``'s network for ``scenario run --netns``: every scenario node is a host of a
    ``TestBed`` and its node process listens on ``ADDRESS:NODE_PORT`` there, seeded with the
    topology's peers' addresses, with peer exchange on (as in the simulator: nothing bypasses
    a cut here, the kernel drops the packets). Steps map to:

    * ``partition`` / ``cut`` / ``heal`` — ``TestBed.set_cuts``: separate bridges, one-way
      cuts as drop rules; open TCP connections are not closed, they go silent until the heal
      (or until the nodes' idle timeout closes them);
    * ``crash`` — SIGKILL of the process (the host and its network stay: its kernel answers
      for the dead sockets); ``restart`` — the same data directory, address and port;
    * ``link`` and ``[links]`` — not emulated: the kernel has no netem (see the module doc);
      the report counts ``link_steps_ignored``.

    The runner reaches each node's API from inside the node's own host (``Host.socket``), so
    API traffic never crosses the switch or a fault. ``messages``/``bytes`` in the report are
    the packets and bytes the hosts sent into the switch (peer traffic, with TCP/IP headers and
    ARP).
    """

    mode = "netns"

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        unavailable = netns_unavailable()
        if unavailable is not None:
            raise NetnsError(unavailable)
        self.scenario = scenario
        self.bed = TestBed(scenario.nodes)
        self.ignored_links = 0

    async def start(self, nursery: trio.Nursery) -> None:
        self.bed.create()

    def url(self, name: str) -> str:
        return f"ws://{self.bed.hosts[name].address}:{NODE_PORT}"

    def node_command(self, name: str, argv: list[str]) -> list[str]:
        host = self.bed.hosts[name]
        argv = [*argv, "--listen", f"{host.address}:{NODE_PORT}"]
        for peer in self.scenario.seeds[name]:
            argv += ["--peer", self.url(peer)]
        return host.command(argv)

    def started(self, node: RealNode) -> None:
        pass

    def stopped(self, node: RealNode) -> None:
        pass

    def set_cuts(self, cuts: set[tuple[str, str]]) -> None:
        self.bed.set_cuts(cuts)

    def set_links(self, pairs: list[tuple[str, str]] | None, changes: Mapping[str, float]) -> None:
        self.ignored_links += 1

    @asynccontextmanager
    async def connect(self, node: RealNode) -> AsyncIterator[Client]:
        host = self.bed.hosts[node.name]
        sock = trio.socket.from_stdlib_socket(host.socket())
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                await sock.connect((host.address, NODE_PORT))
        except BaseException:
            sock.close()
            raise
        stream = trio.SocketStream(sock)
        async with Client.connect(node.url, timeout=REQUEST_TIMEOUT, stream=stream) as client:
            yield client

    def traffic(self) -> tuple[int, int, dict[str, int]]:
        try:
            packets, size = self.bed.traffic() if self.bed.switch else (0, 0)
        except NetnsError:  # the bed was never fully made: the run reports that error
            packets = size = 0
        return packets, size, {"link_steps_ignored": self.ignored_links}

    def close(self) -> None:
        self.bed.close()
