"""Helpers that tests, benchmarks and embedding users share (as ``trio.testing`` is for trio).

From the smallest to the largest:

* ``SessionPair`` / ``open_pair``: two ``PeerSession``s on two ledgers with the wire between them
  in memory; ``pump()`` moves frames until both are quiet and counts flights, messages, bytes.
  Sans-I/O and deterministic: no clock, no sockets.
* ``open_raw_peer`` / ``serve_raw_peer``: a peer played by hand over a real websocket, for
  peers that misbehave once the link is open (vanish without a BYE, stop reading);
  ``HandPlayedPeer``: the HELLO and AUTH of a peer whose frames a test writes itself.
* Forged Yjs updates (``forged_update``, ``deleting_update``, ``self_deleting_update``) and
  ``foreign_entry``: what a hostile or foreign peer could send, to test the grow-only gate.
* ``LocalCluster``: real ``p2p-ledger node`` processes on loopback, driven through ``Client``.
  Test an agent against a real cluster in a few lines::

      async with LocalCluster(tmp_path) as cluster:
          a, b = await cluster.start(2)           # b seeds a
          await cluster.append(a, "notes", "hello")
          await cluster.wait_converged()
          assert [e.payload for e in await cluster.read(b, "notes")] == [b"hello"]

  The processes are ``harness.process.NodeProcess``es: stdout and stderr in files under
  ``root/logs`` (no pipe can fill), the ready line awaited with a deadline. Every wait polls a
  condition under ``trio.fail_after`` (no bare sleeps); leaving the block SIGKILLs whatever
  still runs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import trio
from pycrdt import Array, Doc

from .core.bundle import encode_bundle
from .core.cursor import Cursor
from .core.entry import NO_PREV, Entry, make_entry
from .core.identity import Head, Identity, link_transcript
from .core.ledger import Ledger
from .core.protocol import Closed, Event, LocalInfo, PeerSession, auth_mac
from .core.storage import MemoryStorage
from .core.wire import FLAG_AUTH, PROTOCOL_VERSION, Auth, Hello, decode, encode
from .harness.process import NodeFailedToStart, NodeProcess
from .trio.client import Client
from .trio.transport import Connection, open_listeners, port_of, serve_websockets

__all__ = [
    "HandPlayedPeer", "LocalCluster", "NodeFailedToStart", "NodeProcess", "SessionPair", "Side",
    "counter_ns", "deleting_update", "foreign_entry", "forged_update", "make_tls_files",
    "open_pair", "open_raw_peer", "self_deleting_update", "serve_raw_peer",
]

GOSSIP = "0.2"  # seconds between gossip rounds in LocalCluster nodes: brisk tests
POLL = 0.05


def counter_ns() -> Callable[[], int]:
    """A deterministic wall clock for ``Ledger.open(now_ns=...)``."""
    ticks = itertools.count(1_700_000_000_000_000_000, 1000)
    return lambda: next(ticks)


# ---- a pair of sessions ------------------------------------------------------------------------

@dataclass
class Side:
    session: PeerSession
    events: list[Event] = field(default_factory=list)
    frames_sent: list[bytes] = field(default_factory=list)

    @property
    def closed(self) -> list[Closed]:
        return [e for e in self.events if isinstance(e, Closed)]


class SessionPair:
    """Two PeerSessions on two ledgers; ``pump()`` moves frames between them until quiet.

    Delivery is in *flights*: every frame one side has queued is delivered to the other, then the
    other's replies form the next flight. ``round_trips`` is ``ceil(flights / 2)``. ``mangle`` may
    rewrite a flight (duplicate, reorder, drop) to test what the protocol tolerates.
    """

    def __init__(
        self,
        a: Ledger,
        b: Ledger,
        a_info: LocalInfo | None = None,
        b_info: LocalInfo | None = None,
        mangle: Callable[[list[bytes]], list[bytes]] | None = None,
        swapped: bool = False,
    ) -> None:
        self.a = Side(PeerSession(a_info or LocalInfo(a.node_id), a, b"A" * 16))
        self.b = Side(PeerSession(b_info or LocalInfo(b.node_id), b, b"B" * 16))
        # Roles: ``first`` starts and is pumped first; ``second`` answers. Swapped: b goes first.
        self.first, self.second = (self.b, self.a) if swapped else (self.a, self.b)
        self.mangle = mangle
        self.messages = 0
        self.bytes = 0
        self.flights = 0

    def sides(self) -> tuple[Side, Side]:
        return self.a, self.b

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def start(self) -> SessionPair:
        self.first.session.start()
        self.second.session.start()
        return self.pump()

    def reset_counters(self) -> None:
        self.messages = self.bytes = self.flights = 0

    @property
    def round_trips(self) -> int:
        return (self.flights + 1) // 2

    def pump(self, max_flights: int = 10_000) -> SessionPair:
        """Deliver until neither side has anything to send; events are collected per side."""
        for _ in range(max_flights):
            moved = False
            for src in (self.first, self.second):
                src.events += src.session.take_events()
                out = src.session.take_output()
                if not out:
                    continue
                moved = True
                self.flights += 1
                src.frames_sent += out
                self.messages += len(out)
                self.bytes += sum(map(len, out))
                if self.mangle is not None:
                    out = self.mangle(out)
                dst = self.other(src)
                for frame in out:
                    dst.session.receive(frame)
                dst.events += dst.session.take_events()
            if not moved:
                return self
        raise AssertionError("sessions never went quiet")

    def all_frames(self) -> list[bytes]:
        return self.a.frames_sent + self.b.frames_sent


def open_pair(a: Ledger, b: Ledger, swapped: bool = False, **kw: object) -> SessionPair:
    """An OPEN pair with its counters reset; ``pair.a`` is on ``a`` and ``pair.first`` is the
    side that starts things (``a``, or ``b`` when swapped)."""
    pair = SessionPair(a, b, swapped=swapped, **kw)  # type: ignore[arg-type]
    pair.start()
    assert pair.a.session.is_open and pair.b.session.is_open
    pair.reset_counters()
    return pair



class HandPlayedPeer:
    """A peer's half of the handshake, for tests that write frames by hand: ``hello`` is its
    HELLO frame, ``auth(their_hello)`` its AUTH answering a node's HELLO frame (a valid proof of
    ``identity``'s key, and of the cluster ``key`` when given); ``open(session)`` feeds both to
    a started ``PeerSession``, which is then open."""

    def __init__(self, identity: Identity, label: str = "b", url: str = "",
                 key: bytes | None = None, cluster: str = "default",
                 nonce: bytes = b"n" * 16) -> None:
        self.identity, self.key = identity, key
        self.hello = encode(Hello(PROTOCOL_VERSION, cluster, label, url, nonce,
                                  FLAG_AUTH if key else 0, bytes(16), identity.public))

    def auth(self, their_hello: bytes) -> bytes:
        hello = decode(their_hello)
        assert isinstance(hello, Hello)
        transcript = link_transcript(hello.nonce, self.hello, their_hello)
        mac = auth_mac(self.key, transcript) if self.key else b""
        return encode(Auth(self.identity.sign_link(transcript), mac))

    def open(self, session: PeerSession) -> None:
        session.receive(self.hello)
        session.receive(self.auth(session.hello))
        assert session.is_open, session.close_reason


async def open_raw_peer(ws: Connection, node_id: str) -> PeerSession:
    """Play a peer by hand on the websocket ``ws``: a ``PeerSession`` on an empty ledger says
    HELLO and AUTH and reads until the link is open; returns the session with what it would
    send next still queued (``take_output()``). For tests of peers that misbehave once the link
    is open: one that vanishes without a BYE, one that never reads again. It does not offer
    large frames (its websocket takes messages of MAX_FRAME), so the node sends it 64 KiB
    frames, as to a protocol 9 peer from before FLAG_LARGE_FRAMES."""
    ledger = Ledger.open(MemoryStorage(), node_id, f"{node_id}-raw")
    session = PeerSession(LocalInfo(node_id, large_frames=False), ledger,
                          (node_id.encode() * 16)[:16])
    session.start()
    while True:
        for frame in session.take_output():
            await ws.send(frame)
        if session.is_open or session.close_reason is not None:
            return session
        message = await ws.recv()
        session.receive(message if isinstance(message, bytes) else message.encode())


async def serve_raw_peer(nursery: trio.Nursery,
                         handler: Callable[[Connection], Awaitable[None]]) -> str:
    """Serve ``handler`` (a hand-played peer, see ``open_raw_peer``) on a free loopback port,
    in ``nursery``, until it is cancelled; returns the ``ws://`` URL for a node to dial."""
    listeners = await open_listeners("127.0.0.1", 0)
    server = await nursery.start(serve_websockets, handler, listeners)
    return f"ws://127.0.0.1:{port_of(server)}"

# ---- forged Yjs updates ------------------------------------------------------------------------

def forged_update(records: Iterable[bytes], client_id: int = 4242) -> bytes:
    """A Yjs update from a foreign doc appending ``records`` to the "entries" array."""
    doc: Doc[Any] = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    arr.extend(list(records))
    return doc.get_update()


def deleting_update(full_state: bytes, index: int = 0, client_id: int = 4343) -> bytes:
    """Only a delete set: removes item ``index`` of a doc holding ``full_state``."""
    doc: Doc[Any] = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    doc.apply_update(full_state)
    before = doc.get_state()
    del arr[index]
    return doc.get_update(before)


def self_deleting_update(records: list[bytes], client_id: int = 4444) -> bytes:
    """A whole doc whose history appends records and then deletes the first one."""
    doc: Doc[Any] = Doc(client_id=client_id)
    arr = doc.get("entries", type=Array)
    arr.extend(records)
    del arr[0]
    return doc.get_update()


def foreign_entry(context: str, payload: bytes = b"x", origin: str = "mallory",
                  seq: int = 1) -> Entry:
    """An entry of the test identity ``origin`` (``Identity.from_seed``) that no head vouches
    for: what a member forging without the key can make."""
    prev = NO_PREV if seq == 1 else hashlib.sha256(b"%d" % seq).digest()
    return make_entry(context, "k", payload, {}, seq, Identity.from_seed(origin).origin, 1, seq,
                      1_700_000_000_000_000_000, prev)


def bundled(update: bytes, heads: Sequence[Head] = ()) -> bytes:
    """A Yjs update as a bundle (with ``heads``, none by default: what a forger sends)."""
    return encode_bundle(heads, update)


# ---- a cluster of real node processes --------------------------------------------------------

class LocalCluster:
    """Real node processes on loopback, addressed by index (0, 1, ...) in start order.

    Use it as ``async with LocalCluster(dir) as cluster:`` (or call ``close()``): every process
    still running is SIGKILLed at the end; data and logs stay under ``dir``. ``nodes[i]`` is the
    ``harness.process.NodeProcess`` of node ``i`` (``url``, ``name``, ``log_text()``, ...).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.nodes: list[NodeProcess] = []
        self._keys: list[str | None] = []  # each node's cluster key

    async def __aenter__(self) -> LocalCluster:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ---- processes ---------------------------------------------------------------------------

    async def add(
        self,
        node_id: str | None = None,
        peers: Sequence[str | int] = (),
        key: str | None = None,
        extra: Sequence[str] = (),
    ) -> int:
        """Start a new node; ``peers`` are URLs or indexes of running nodes. Returns its index."""
        node_id = node_id or f"n{len(self.nodes) + 1}"
        urls = [self.nodes[p].url if isinstance(p, int) else p for p in peers]
        args = ["--gossip-interval", GOSSIP, *(["--cluster-key", key] if key else []), *extra]
        node = NodeProcess(node_id, self.root / node_id, self.root / "logs", urls, args)
        self.nodes.append(node)
        self._keys.append(key)
        await node.start()
        return len(self.nodes) - 1

    async def start(self, n: int, chain: bool = True, key: str | None = None) -> list[int]:
        """``n`` nodes; with ``chain`` each seeds the previous one (n2→n1, n3→n2, ...)."""
        out: list[int] = []
        for _ in range(n):
            peers = [out[-1]] if chain and out else []
            out.append(await self.add(peers=peers, key=key))
        return out

    def kill(self, i: int) -> None:
        """SIGKILL: no BYE, no clean shutdown; whatever was committed is on disk."""
        self.nodes[i].kill()

    def stop(self, i: int, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait: the clean way down. Returns the exit status."""
        return self.nodes[i].stop(timeout)

    async def restart(self, i: int, same_port: bool = False, attempts: int = 10) -> None:
        """Start node ``i`` again on its data directory (killing it first if it runs).

        ``same_port`` listens on the old port again (retrying while it is still busy)."""
        await self.nodes[i].restart(same_port, attempts)

    def close(self) -> None:
        """SIGKILL every node still running."""
        for node in self.nodes:
            node.kill()

    # ---- the API -----------------------------------------------------------------------------

    @asynccontextmanager
    async def client(self, i: int, key: str | None | bool = True) -> AsyncIterator[Client]:
        """A Client on node ``i``; ``key=True`` uses the node's own cluster key."""
        use = self._keys[i] if key is True else (key or None)
        async with Client.connect(self.nodes[i].url, use, timeout=10) as client:
            yield client

    async def append(self, i: int, context: str, payload: bytes | str, key: str = "") -> Entry:
        async with self.client(i) as c:
            return await c.append(context, payload, key)

    async def read(self, i: int, context: str, after: Cursor | str | None = None,
                   ) -> list[Entry]:
        async with self.client(i) as c:
            entries, _ = await c.get(context, after=after)
            return entries

    async def read_ids(self, i: int, context: str) -> list[str]:
        return [e.id for e in await self.read(i, context)]

    async def status(self, i: int) -> dict[str, Any]:
        async with self.client(i) as c:
            return await c.status()

    def running(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.alive]

    async def wait_for(self, condition: Callable[[], Awaitable[bool]], timeout: float,
                       what: str = "condition") -> None:
        """Poll an async condition until it holds; TooSlowError (naming ``what``) if it doesn't."""
        try:
            with trio.fail_after(timeout):
                while not await condition():
                    await trio.sleep(POLL * 2)
        except trio.TooSlowError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None

    async def roots(self, nodes: Sequence[int] | None = None) -> dict[int, str]:
        return {i: (await self.status(i))["root"] for i in (nodes or self.running())}

    async def wait_converged(self, timeout: float = 30.0,
                             nodes: Sequence[int] | None = None) -> str:
        """Wait until every running node (or ``nodes``) reports the same root; returns it."""
        roots: dict[int, str] = {}

        async def same() -> bool:
            nonlocal roots
            roots = await self.roots(nodes)
            return len(set(roots.values())) == 1

        try:
            await self.wait_for(same, timeout, "convergence")
        except AssertionError:
            raise AssertionError(f"not converged after {timeout}s: {roots}") from None
        return next(iter(roots.values()))

    async def wait_connected(self, i: int, others: Sequence[int], timeout: float = 20.0) -> None:
        want = {self.nodes[j].name for j in others}

        async def linked() -> bool:
            peers = (await self.status(i))["peers"]
            return want <= {p["node_id"] for p in peers if p["state"] == "connected"}

        await self.wait_for(linked, timeout, f"{self.nodes[i].name} connected to {want}")


def make_tls_files(directory: str | os.PathLike[str], hosts: Sequence[str] = ("127.0.0.1",
                   "localhost"), name: str = "p2p-ledger test") -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate it signs for ``hosts`` (IP addresses or DNS names),
    written as PEM files; returns (ca.pem, cert.pem, key.pem). For tests and local clusters:
    ``node --tls-cert cert.pem --tls-key key.pem``, peers and clients ``--tls-ca ca.pem``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = out / "ca.pem", out / "cert.pem", out / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths
