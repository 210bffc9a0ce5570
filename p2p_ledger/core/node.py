"""A node's decisions, sans-I/O: which peers to dial, when to gossip, what to push, when to give up.

Theory of operation
-------------------
The driver (trio runtime or simulator) owns sockets and time and reports what happened:
``connection_accepted`` / ``connection_made`` / ``dial_failed`` / ``frame_received`` /
``connection_lost``, plus ``tick(now)`` whenever ``next_deadline()`` passes. Local appends go
through ``append``. After any call the driver drains ``take_actions()``: ``Send`` a frame on a
connection, ``Close`` one, or ``Dial`` a URL under a connection id the core picked. Every
connection runs one ``PeerSession``; this class adds the node-wide policy:

* peer table: seeds and peers learned by peer exchange, each ``connecting``, ``connected``,
  ``backoff`` or ``dropped`` (non-seed peers failing for longer than ``drop_after``; seeds are
  retried forever); learned peers are bounded: ``max_learned_peers`` in all,
  ``max_learned_per_link`` from one link, room made only by forgetting dropped ones;
* healing (see AGENTS.md, "Healing"): a peer that could not be reached is redialed
  ``backoff_base``·2^(failures-1) after the previous attempt *started*, capped at
  ``probe_interval`` (1 s), minus up to 20% jitter (jitter only shortens, so the cap is a
  bound): however long a cut lasted, a healed peer is dialed within ``probe_interval``. A
  dial still unresolved after ``dial_timeout`` is abandoned, so a dial lost in a cut cannot
  hold the next one back. A dial to a dead peer is a refused or unanswered TCP connect: cheap.
  A peer that answered and *refused* us (other cluster, bad key, other protocol) backs off up
  to ``backoff_max`` instead: retrying cannot help until someone changes a configuration. A
  sign that the network works skips the wait: a handshake completed on any link (we dialed or
  were dialed) retries every unreachable peer at once, and a peer named in peer exchange is
  retried at once;
* one link per peer pair: when two links to the same node open, both ends keep the one dialed
  by the smaller node id, so the race resolves the same way on both sides;
* anti-entropy: one end of each link (picked by a hash of the two node ids, the same on both
  ends) starts its rounds (sends its node root); the other end only answers. The first round
  starts as soon as the link opens; then the node starts one round every ``gossip_interval``
  (±10%) on the link it gossips on whose last round is oldest, unless it took part in a round
  (either end) within the last 0.8 interval; and one ``push_gossip_delay`` after a local append,
  unless the push was the only change (every peer it gossips with last told it the pre-append
  root) or a round took place since. An end that heard nothing for ``idle_timeout / 2`` (the
  gossiping end; 2/3 for the other) starts a round on the link, which the peer answers at once
  (one question and its answer tell both ends the other is alive); a link silent for
  ``idle_timeout`` is closed;
* live push: a committed local append's Yjs update goes to every open session at once; a
  peer's pushed update, the first push of it here, is forwarded to every other open link
  still eager for its origin (epidemic forwarding, Plumtree with one tree per origin: a peer
  that pushed us an origin's update gets that origin's pushes another way, so we stop
  forwarding them to it; copies that keep coming make us ask the peer to stop too, PRUNE).
  Lazy links get the update's digest in a batched IHAVE instead (a batch nobody asked from
  makes that link's next one wait twice as long, up to ``ihave_max``); an announced update
  that does not come by push within ``graft_timeout`` is asked for with a GRAFT, which makes
  that link eager for its origin again, and losing a link that was an origin's path to us
  asks the other peers to forward everything again. A fresh push that brought nothing (Yjs
  could not take it: an earlier update is missing) asks its sender for what we lack at once;
* LAN discovery (mDNS, opt-in): the driver reports ``peer_discovered`` / ``peer_lost`` for
  DNS-SD records (``discovery.py``). A record of our cluster and protocol adds its URLs as
  learned peers, dialed at once (one URL of a node at a time); a peer in backoff or dropped is
  retried at once, since its (re-)announcement says it is back. A record that goes away is only
  dropped from ``discovered``: the peer table keeps the peer and its usual backoff;
* settling (``Ledger.open``): the contexts a crash left with summaries lagging their rows are
  recomputed ``SETTLE_STEPS`` audit steps a tick, a tick every ``SETTLE_PAUSE``, while the
  node serves (a read or a peer's question about one settles it at once);
* idle summaries: summaries that lag their rows (``Ledger.summary_lag_ns``) are stored by a
  tick once the node has committed nothing for ``SUMMARY_LAG`` (``_committed``);
* trees in steps: the Merkle tree of a big context loaded since a start (a load's ids), which
  the summary store needs, is built a step a tick, a tick every ``SETTLE_PAUSE``
  (``Ledger.builds_trees``, ``Ledger.tree_step``), whether appends keep coming (a commit that
  finds the summaries due starts it, and leaves them lagging until it is built) or the node is
  idle (the idle store starts it, and stores once it is built).
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .bundle import first_origin
from .discovery import Announcement
from .ledger import SUMMARY_LAG, Appended, AppendRequest, Ledger
from .protocol import (
    MAX_PRUNED,
    Announced,
    Closed,
    DuplicatePush,
    EntriesReceived,
    Established,
    LocalInfo,
    PeerRoot,
    PeerSession,
    PeersLearned,
    Requested,
)
from .wire import DIGEST_PREFIX, NAMES, PROTOCOL_VERSION

MAX_DISCOVERED = 256  # DNS-SD instances tracked at once (anyone on the LAN can announce)


PRUNE_AFTER = 2  # copies in a row from a peer we no longer forward to before it gets a PRUNE
PRUNE_ALL_AFTER = 3  # copies in a row of any origin before the peer gets an empty PRUNE
PUSH_MEMORY = 4096  # pushed updates remembered (by digest) to tell which duplicates prune
PUSH_CACHE_BYTES = 8 * 1024 * 1024  # recent pushed updates kept to answer a GRAFT's request
MAX_MISSING = 1024  # announced updates we wait for (graft timers) in all ...
MAX_MISSING_PER_LINK = 256  # ... and announced by one link (a hostile IHAVE flood is bounded)
ANNOUNCERS = 3  # links remembered per announced update (asked one after the other)
SERVED_MEMORY = 1024  # digests a link's GRAFTs already got an answer for (each is sent once)
# With paced_answers, a driver builds a link's next waiting answer (``NodeCore.send_room``)
# while it holds fewer than ROOM_BYTES unsent for that link. why: about a part of an answer
# (``ledger.PART_BYTES``): the next answer (~30-40 ms of CPU for 10 MB) is built before the
# link runs dry, and a link holds at most this plus one answer.
ROOM_BYTES = 8 * 1024 * 1024
# why: a step audits 256 entries (~2.2 ms of CPU at 1M entries in a context): 4 a tick hold the
# loop ~9 ms, and the pause between ticks lets the driver serve what came meanwhile.
SETTLE_STEPS = 4
SETTLE_PAUSE = 0.001


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    cluster: str = "default"
    url: str = ""  # our advertised listen URL ("" = we accept no connections)
    seeds: tuple[str, ...] = ()
    key: bytes | None = None
    gossip_interval: float = 1.0
    push_gossip_delay: float = 0.5
    handshake_timeout: float = 10.0
    idle_timeout: float = 10.0
    backoff_base: float = 0.2
    probe_interval: float = 1.0  # longest redial delay of an unreachable peer (heal bound)
    backoff_max: float = 30.0  # longest redial delay of a peer that refused us
    dial_timeout: float = 2.0  # a dial not connected by then is abandoned (and retried)
    drop_after: float = 300.0
    max_update_bytes: int = 256 * 1024 * 1024
    # False: dial only the seeds, never peers learned by exchange or from an inbound HELLO
    # (a test harness routing every link through its own relay needs that).
    discovery: bool = True
    # Peer exchange is a hint from other members, so what it can cost is bounded: at most
    # max_learned_peers learned (non-seed) peers in the table, at most max_learned_per_link of
    # them from one link's lifetime (one hostile member cannot fill the table alone). why: 2000
    # made-up URLs in PEERS frames gave a 2001-entry table (+26 MB) and 2000 dials.
    max_learned_peers: int = 64
    max_learned_per_link: int = 32
    # False: never forward a peer's pushed update (the bench's same-run baseline: dissemination
    # by direct push and anti-entropy only)
    forward: bool = True
    # Lazy push (Plumtree's IHAVE): the digests of fresh pushed updates go to links that are
    # not eager for their origin, batched for ihave_delay (doubled per batch the peer asked
    # nothing from, up to ihave_max); an announced update that has not come by push
    # graft_timeout after its announcement is asked for with a GRAFT (which makes that link
    # eager for its origin again). ihave_fanout: lazy links that announce each update.
    # why: fanout 1 (3 before) and the doubling: 12 -> 5 IHAVEs per append in the sparse
    # random graph (bench, 3 seeds), p99 392 ms with fanout 1 against 397 ms with 3
    ihave_delay: float = 0.25
    ihave_max: float = 2.0
    graft_timeout: float = 0.1
    ihave_fanout: int = 1
    # Diffs asked for wait until the driver says the link has room (``answers_waiting``,
    # ``send_room``); False: every answer is built at once (a driver that queues nothing).
    paced_answers: bool = False


@dataclass(frozen=True)
class Send:
    conn: int
    frame: bytes


@dataclass(frozen=True)
class Close:
    conn: int
    reason: str


@dataclass(frozen=True)
class Dial:
    conn: int
    url: str


Action = Send | Close | Dial


@dataclass(frozen=True)
class PeerEvent:
    """A peer's state changed; the driver logs it (one line per change, never per retry).

    ``kind``: ``connected`` (a handshake finished), ``lost`` (an open link ended: ``reason``),
    ``unreachable`` (dialing failed: ``reason``, next dial in ``retry_in`` seconds), ``refused``
    (the handshake ended in a refusal, either side: ``reason``, ``retry_in``; ``url`` is
    ``inbound`` for a peer that dialed us) or ``dropped`` (a learned peer failed for
    ``drop_after``: no longer dialed). A peer that keeps failing the same way reports once."""

    kind: str
    url: str
    node_id: str = ""  # the peer's label ("" until known)
    reason: str = ""
    retry_in: float | None = None
    origin: str = ""  # who the peer is (its public key, hex; "" until known)

    def text(self) -> str:
        who = self.node_id or self.url
        where = f" ({self.url})" if self.node_id and self.url else ""
        out = f"peer {who}{where} {self.kind}"
        if self.reason:
            out += f": {self.reason}"
        if self.retry_in is not None:
            out += f"; next try in {self.retry_in:.1f}s"
        return out


class PeerState(StrEnum):
    """Where a known peer URL stands (``status()`` shows the value)."""

    NEW = "new"  # not dialed yet, or vouched for again: dial when due
    CONNECTING = "connecting"  # a dial is under way
    CONNECTED = "connected"  # a link to it is open
    BACKOFF = "backoff"  # failed: dialed again at retry_at
    DROPPED = "dropped"  # a learned peer that kept failing for drop_after: no longer dialed
    SELF = "self"  # the URL reaches this very node: never dialed again


@dataclass
class PeerInfo:
    url: str
    seed: bool
    origin: str = ""  # the node at this URL (its public key, hex), once known
    label: str = ""  # its node id (shown only)
    state: PeerState = PeerState.NEW
    failures: int = 0
    retry_at: float = 0.0
    failing_since: float | None = None
    last_error: str = ""
    refused: bool = False  # the last failure was the peer refusing us, not a network failure
    reported: str = ""  # the last PeerEvent kind reported for it (one event per change)
    attempt_at: float = float("-inf")  # when the last dial started


@dataclass
class Link:
    session: PeerSession
    url: str  # the URL we dialed, or "" for an accepted connection until the peer names one
    dialed: bool
    opened_at: float
    last_heard: float
    next_gossip: float = float("inf")  # the round due at once when the link opens
    origin: str = ""  # the peer's proven public key (hex), once the handshake is done
    label: str = ""  # its node id (shown only)
    gossiper: bool = False  # we start this link's rounds (exactly one end does)
    last_round: float = float("-inf")  # when we last started a round on it
    last_probe: float = float("-inf")  # when we last asked a silent peer for a sign of life
    learned: int = 0  # peers added to the table from this link (max_learned_per_link)
    refused: bool = False  # the handshake ended in a refusal (a BYE or a bad HELLO/AUTH)
    ihave: dict[bytes, None] = field(default_factory=dict)  # digests to announce (lazy push)
    # per origin: copies in a row of its pushes that came here after we stopped forwarding
    # them to the peer (PRUNE_AFTER ask the peer to stop too)
    copies: OrderedDict[bytes, int] = field(default_factory=OrderedDict)
    duplicates: int = 0  # copies in a row (of any origin) since the peer last brought one first
    ihave_due: float = float("inf")  # when the batch in ``ihave`` goes out
    ihave_wait: float = 0.0  # this link's batching time (ihave_delay, doubled per idle batch)
    grafted: bool = False  # the peer asked for announced updates since our last IHAVE
    pending: int = 0  # announced updates we wait for with this link among the announcers
    served: OrderedDict[bytes, None] = field(default_factory=OrderedDict)  # digests its GRAFTs got


@dataclass
class Missing:
    """An update announced (IHAVE) that has not come by push: at ``deadline`` the first
    announcer still linked is asked for it (GRAFT), then the next one."""
    deadline: float
    announcers: list[int]


@dataclass
class Counters:
    messages_sent: int = 0
    bytes_sent: int = 0
    entries_received: int = 0
    links_refused: dict[str, int] = field(default_factory=dict)  # by the reason's first word
    # Per wire message type name (ROOT, VIEWS, UPDATE, ...): frames and bytes, each way.
    frames_sent: dict[str, int] = field(default_factory=dict)
    bytes_sent_by_type: dict[str, int] = field(default_factory=dict)
    frames_received: dict[str, int] = field(default_factory=dict)
    bytes_received_by_type: dict[str, int] = field(default_factory=dict)
    rounds: int = 0  # anti-entropy rounds started here or answered here
    heals: list[float] = field(default_factory=list)  # disagreement → agreement, seconds
    # (the driver drains ``heals`` into its histogram)


def _count(counts: dict[str, int], frame: bytes, amount: int) -> None:
    kind = NAMES.get(frame[1], "?") if len(frame) > 1 else "?"
    counts[kind] = counts.get(kind, 0) + amount


def _digest(update: bytes) -> bytes:
    """A pushed update's name on the wire (IHAVE, GRAFT) and in the node's memory."""
    return hashlib.sha256(update).digest()[:DIGEST_PREFIX]


class NodeCore:
    def __init__(self, ledger: Ledger, config: NodeConfig, rng: random.Random) -> None:
        self.ledger = ledger
        self.config = config
        self.rng = rng
        self.local = LocalInfo(config.node_id, config.cluster, config.url, config.key,
                               paced=config.paced_answers)
        self.peers: dict[str, PeerInfo] = {}
        self.links: dict[int, Link] = {}
        self.by_origin: dict[str, int] = {}  # a linked peer's origin → its link
        self.counters = Counters()
        self.log: list[str] = []  # info-level lines for the driver to print
        self.events: list[PeerEvent] = []  # peer state changes, for the driver to log
        self.agreed_since: float | None = None  # see _check_agreement
        self._disagreed_at: float | None = None
        self._actions: list[Action] = []
        self._next_conn = 1
        self._dialing: dict[int, tuple[str, float]] = {}  # conn → (URL, started), unresolved
        self._next_round = float("inf")  # the node's gossip timer (one round per interval)
        self._settle_at = 0.0  # the next settle steps (while ``ledger.settling()``)
        self._summaries_at = float("inf")  # see _committed
        self._build_at = 0.0  # the next step of a tree built in steps (``ledger.building()``)
        self._last_round = float("-inf")  # when we last took part in a round (either end)
        self._after_push: float | None = None  # a local append at this time brought the
        # next round forward
        # digests (sha256, truncated) of recently pushed updates (ours and forwarded ones) →
        # the link they first came on by push (0 = our own append): tells a cycle's
        # duplicate from a repaired one
        # (OrderedDicts: the oldest goes in O(1), see _remember_push)
        self._pushes: OrderedDict[bytes, int] = OrderedDict()
        # those whose first push came from their origin
        self._direct: OrderedDict[bytes, None] = OrderedDict()
        # The recent pushed updates themselves (digest → context, update), within
        # PUSH_CACHE_BYTES, to answer a GRAFT asking for them; and the announced ones we lack.
        self._recent: OrderedDict[bytes, tuple[str, bytes]] = OrderedDict()
        self._recent_bytes = 0
        self._missing: dict[bytes, Missing] = {}
        # per origin, the link its last forwarded push came on first (its tree's path to us):
        # losing that link asks the other peers to forward everything again (GRAFT)
        self._via: OrderedDict[bytes, int] = OrderedDict()
        self._shutting_down = False
        self.discovered: dict[str, str] = {}  # DNS-SD instance → origin, while advertised
        self._ignored: dict[str, str] = {}  # instance → why it is not dialed (logged once)
        for url in config.seeds:
            if url != config.url:
                self.peers[url] = PeerInfo(url, seed=True)

    # ---- driver → core -----------------------------------------------------------------------

    def take_actions(self) -> list[Action]:
        """What the driver must carry out now, after committing what the ledger staged: an
        answer or a forward built from a received update leaves only once it is durable here
        (``Ledger.defer_commits``). Raises what the commit raised (the actions stay queued)."""
        self.ledger.flush()
        actions, self._actions = self._actions, []
        return actions

    def take_events(self) -> list[PeerEvent]:
        events, self.events = self.events, []
        return events

    def take_log(self) -> list[str]:
        lines, self.log = self.log, []
        if self.ledger.fork_log:
            lines += self.ledger.fork_log
            self.ledger.fork_log.clear()
        return lines

    def connection_accepted(self, now: float) -> int:
        """A peer dialed us; returns the connection id to use from now on."""
        conn = self._new_conn()
        self._open_link(conn, "", dialed=False, now=now)
        return conn

    def connection_made(self, conn: int, now: float) -> None:
        """A ``Dial`` succeeded (one we already abandoned is closed: see ``dial_timeout``)."""
        dialing = self._dialing.pop(conn, None)
        if dialing is None:
            self._actions.append(Close(conn, "dial abandoned"))
            return
        self._open_link(conn, dialing[0], dialed=True, now=now)

    def dial_failed(self, conn: int, now: float, reason: str) -> None:
        dialing = self._dialing.pop(conn, None)
        peer = self.peers.get(dialing[0]) if dialing else None
        if peer is not None:
            self._backoff(peer, now, reason)

    def frame_received(self, conn: int, frame: bytes, now: float) -> None:
        link = self.links.get(conn)
        if link is None:
            return
        link.last_heard = now
        _count(self.counters.frames_received, frame, 1)
        _count(self.counters.bytes_received_by_type, frame, len(frame))
        link.session.receive(frame)
        if self.ledger.has_staged():  # (a received update: its rows commit next; not a
            # round's or a probe's frame, which would put the idle store off for ever)
            self._committed(now)
        self._drain(conn, link, now)

    def answers_waiting(self) -> list[int]:
        """The links whose answers wait for room (``NodeConfig.paced_answers``): call
        ``send_room`` for each while the driver holds fewer than ROOM_BYTES unsent for it."""
        return [conn for conn, link in self.links.items() if link.session.answers_waiting]

    def send_room(self, conn: int, now: float, room: int = ROOM_BYTES) -> None:
        """The driver holds ``ROOM_BYTES - room`` bytes unsent for ``conn`` (fewer than
        ROOM_BYTES): build its waiting answers until they make ``room`` bytes of frames
        (``PeerSession.send_waiting``), then take the actions."""
        link = self.links.get(conn)
        if link is not None:
            link.session.send_waiting(room)
            self._drain(conn, link, now)

    def takes_large_frames(self, conn: int) -> bool:
        """Whether the driver must now take UPDATE frames up to LARGE_FRAME on ``conn``
        (``PeerSession.takes_large_frames``); ask after each ``frame_received`` until true."""
        link = self.links.get(conn)
        return link is not None and link.session.takes_large_frames

    def connection_lost(self, conn: int, now: float, reason: str = "connection lost") -> None:
        # Actions still queued for it (held while received updates were staged) cannot be
        # carried out any more: the driver no longer knows the connection.
        self._actions = [a for a in self._actions if a.conn != conn]
        link = self.links.pop(conn, None)
        if link is None:
            return
        self._forget_link(conn, link, now, reason)

    def tick(self, now: float) -> None:
        """Run every timer that is due; call again at ``next_deadline()``."""
        if now >= self._settle_at and self.ledger.settling():
            for _ in range(SETTLE_STEPS):
                if not self.ledger.settle_step():
                    break
            self._settle_at = now + SETTLE_PAUSE
            if not self.ledger.settling():
                self._committed(now)  # (what settled is stored once the node is idle)
        if now >= self._build_at and self.ledger.building():
            self.ledger.tree_step()  # (a big tree in steps, served and committed between)
            self._build_at = now + SETTLE_PAUSE
        if now >= self._summaries_at and self.ledger.builds_trees():
            # (stored once the trees are built; a first step taken)
            self._summaries_at = self._build_at = now + SETTLE_PAUSE
        elif now >= self._summaries_at:
            self._summaries_at = float("inf")
            try:
                self.ledger.write_summaries()
            except Exception as exc:  # storage can fail
                # (the rows are durable; the next open settles the contexts they lag)
                self.log.append(f"storing the contexts' summaries failed: {exc}")
        for conn, (url, started) in list(self._dialing.items()):
            if now >= started + self.config.dial_timeout:
                del self._dialing[conn]
                self._actions.append(Close(conn, "dial timed out"))
                peer = self.peers.get(url)
                if peer is not None:
                    self._backoff(peer, now, f"no answer from {url} within "
                                             f"{self.config.dial_timeout:g}s")
        for conn, link in list(self.links.items()):
            session = link.session
            if not session.is_open:
                # why: same float sum as next_deadline(), or a tick at that deadline does nothing
                if now >= link.opened_at + self.config.handshake_timeout:
                    self.close(conn, "handshake timed out", now)
                continue
            if now >= link.last_heard + self.config.idle_timeout:  # why: as above
                self.close(conn, f"peer silent for {self.config.idle_timeout:g}s", now)
                continue
            if link.gossiper and now >= link.next_gossip:
                self._start_round(conn, link, now)
            elif now >= self._probe_at(link):
                link.last_probe = now
                session.send_root()
                self._drain(conn, link, now)
            if now >= link.ihave_due:
                session.announce(tuple(link.ihave))
                link.ihave.clear()
                link.ihave_due = float("inf")
                # why: on a link outside the trees the peer already holds what we announce
                # (sparse random graph: 12 IHAVEs per append, nearly none answered); a batch
                # nobody asked from makes the next one wait twice as long, up to ihave_max,
                # and a GRAFT brings it back to ihave_delay
                link.ihave_wait = (self.config.ihave_delay if link.grafted else
                                   min(self.config.ihave_max, 2 * link.ihave_wait))
                link.grafted = False
                self._drain(conn, link, now)
        self._graft_missing(now)
        if now >= self._next_round:
            self._next_round = now + self._jitter(self.config.gossip_interval, 0.1)
            self._gossip_round(now, self._after_push)
            self._after_push = None
        busy = self._dialing_nodes()
        for peer in self.peers.values():
            if self._may_dial(peer, busy) and peer.retry_at <= now:
                self._dial(peer, now)
                if peer.origin:
                    busy.add(peer.origin)

    def next_deadline(self) -> float:
        deadlines = [self._next_round]
        for link in self.links.values():
            if link.session.is_open:
                if link.gossiper:
                    deadlines.append(link.next_gossip)
                deadlines += [link.last_heard + self.config.idle_timeout, self._probe_at(link),
                              link.ihave_due]
            else:
                deadlines.append(link.opened_at + self.config.handshake_timeout)
        busy = self._dialing_nodes()
        deadlines += [p.retry_at for p in self.peers.values() if self._may_dial(p, busy)]
        deadlines += [started + self.config.dial_timeout for _, started in self._dialing.values()]
        deadlines += [m.deadline for m in self._missing.values()]
        if self.ledger.settling():
            deadlines.append(self._settle_at)
        if self.ledger.building():
            deadlines.append(self._build_at)
        deadlines.append(self._summaries_at)
        return min(deadlines)

    def append(self, requests: Sequence[AppendRequest], now: float) -> Appended:
        """Append durably, push to every open link, and bring the next gossip round forward to
        ``push_gossip_delay`` from now, unless every peer we gossip with last told us the
        pre-append root (then the push was the only change)."""
        # why: the node root costs a rehash of the node tree's dirty paths (3.7% of ingest
        # spread over 10,000 contexts, 128 contexts per commit); only open links need it.
        # And not while summaries lag (``Ledger.settled_root``): read before every append, it
        # computed the summaries of every context committed to since, so with a peer linked
        # each commit paid them, SUMMARY_LAG or not (spread over 10,000 contexts, one per
        # entry). The ledger then changed since our peers last heard its root: the append
        # counts as a change (at worst one round more).
        links = [(conn, link) for conn, link in self.links.items() if link.session.is_open]
        before = self.ledger.settled_root() if links else None
        appended = self.ledger.append(requests)
        self._committed(now)
        if not links:
            # Pushed to no one: nothing to remember it by (a push coming back, a GRAFT for it)
            # and no bundle to build (``Appended.updates``).
            return appended
        for context, update in appended.updates:
            self._remember_push(_digest(update), 0, context, update)
        differed = False
        for conn, link in links:
            for context, update in appended.updates:
                link.session.push(context, update, own=True)
            differed |= link.gossiper and (before is None
                                           or link.session.agrees_with(before) is not True)
            self._drain(conn, link, now)
        soon = now + self.config.push_gossip_delay
        if differed and soon < self._next_round:
            self._next_round, self._after_push = soon, now
        return appended

    def peer_discovered(self, name: str, announcement: Announcement, now: float) -> None:
        """A DNS-SD instance ``name`` was resolved (again). A peer of our cluster speaking our
        protocol is added as a learned peer and dialed at once; one already known but in
        backoff or dropped is retried at once. Other clusters, other protocol versions and our
        own record are ignored (logged once per instance)."""
        ann = announcement
        if ann.origin == self.ledger.origin:
            return
        why = ("another cluster" if ann.cluster != self.config.cluster else
               f"protocol {ann.protocol}" if ann.protocol != PROTOCOL_VERSION else
               "discovery is off" if not self.config.discovery else
               "too many discovered peers" if name not in self.discovered
               and len(self.discovered) >= MAX_DISCOVERED else "")
        if why:
            if self._ignored.get(name) != why and len(self._ignored) < MAX_DISCOVERED:
                self._ignored[name] = why
                self.log.append(f"mdns: ignoring {ann.node_id} ({ann.cluster}): {why}")
            return
        self._ignored.pop(name, None)
        if self.discovered.get(name) != ann.origin:
            self.log.append(f"mdns: discovered {ann.node_id} at {' '.join(ann.urls)}")
        self.discovered[name] = ann.origin
        for url in ann.urls:
            peer = self.peers.get(url)
            if url == self.config.url or (peer is not None and peer.state is PeerState.SELF):
                continue
            if peer is None:  # within max_learned_peers, like peers learned by exchange
                self._add_learned(None, url, ann.origin, ann.node_id, now)
            elif peer.state in (PeerState.NEW, PeerState.BACKOFF, PeerState.DROPPED):
                peer.origin, peer.label = ann.origin, ann.node_id
                peer.state, peer.failures, peer.failing_since = PeerState.NEW, 0, None
                peer.retry_at = now

    def peer_lost(self, name: str, now: float) -> None:
        """A DNS-SD instance went away (goodbye or expiry). The peer stays in the peer table:
        an open link stays open, a closed one is redialed with the usual backoff."""
        self._ignored.pop(name, None)
        if self.discovered.pop(name, None) is not None:
            self.log.append(f"mdns: {name} is no longer advertised")

    def close(self, conn: int, reason: str, now: float) -> None:
        link = self.links.get(conn)
        if link is not None:
            link.session.close(reason)
            self._drain(conn, link, now)

    def shutdown(self, now: float) -> None:
        self._shutting_down = True
        for conn in list(self.links):
            self.close(conn, "node shutting down", now)

    # ---- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        root = self.ledger.root()
        peers = []
        advertised = set(self.discovered.values())
        for peer in sorted(self.peers.values(), key=lambda p: p.url):
            if peer.state is PeerState.SELF:
                continue
            conn = self.by_origin.get(peer.origin) if peer.origin else None
            link = self.links.get(conn) if conn is not None else None
            agrees = None if link is None else link.session.agrees_with(root)
            peers.append({"node_id": peer.label, "origin": peer.origin, "url": peer.url,
                          "state": peer.state.value, "root_agrees": agrees,
                          "failures": peer.failures, "last_error": peer.last_error,
                          "mdns": peer.origin in advertised})
        # Peers that dialed us without a listen URL still count.
        for origin, conn in sorted(self.by_origin.items()):
            link = self.links[conn]
            if not link.url:
                agrees = link.session.agrees_with(root)
                peers.append({"node_id": link.label, "origin": origin, "url": "",
                              "state": PeerState.CONNECTED.value, "root_agrees": agrees,
                              "failures": 0, "last_error": "", "mdns": origin in advertised})
        return {
            "node_id": self.config.node_id,
            "origin": self.ledger.origin,
            "url": self.config.url,
            "root": root.hex(),
            "contexts": len(self.ledger.contexts),
            "entries": self.ledger.entry_count(),
            "settling": self.ledger.settling(),
            "peers": peers,
            "agreed_since": self.agreed_since,
            "messages_sent": self.counters.messages_sent,
            "bytes_sent": self.counters.bytes_sent,
            "forks": self.ledger.forks(),
        }

    # ---- internals ---------------------------------------------------------------------------

    def _new_conn(self) -> int:
        conn, self._next_conn = self._next_conn, self._next_conn + 1
        return conn

    def _dialing_nodes(self) -> set[str]:
        """Origins with a dial in flight. One dial at a time per origin: a node announced
        under several addresses is tried one URL after the other, not all at once."""
        return {p.origin for p in self.peers.values()
                if p.origin and p.state is PeerState.CONNECTING}

    def _may_dial(self, peer: PeerInfo, busy: set[str]) -> bool:
        """Whether ``peer`` waits for its ``retry_at`` (the same rule for ``tick`` and
        ``next_deadline``: a URL held back by another dial of its node is no deadline, or the
        timer would spin until that dial ends; its end wakes the timer anyway)."""
        return (peer.state in (PeerState.NEW, PeerState.BACKOFF) and not self._connected(peer)
                and peer.origin not in busy)

    def _connected(self, peer: PeerInfo) -> bool:
        return bool(peer.origin) and peer.origin in self.by_origin

    def _dial(self, peer: PeerInfo, now: float) -> None:
        conn = self._new_conn()
        peer.state = PeerState.CONNECTING
        peer.attempt_at = now
        self._dialing[conn] = (peer.url, now)
        self._actions.append(Dial(conn, peer.url))

    def _open_link(self, conn: int, url: str, dialed: bool, now: float) -> None:
        nonce = self.rng.getrandbits(128).to_bytes(16, "big")
        session = PeerSession(self.local, self.ledger, nonce, self.config.max_update_bytes)
        link = self.links[conn] = Link(session, url, dialed, now, now)
        session.start()
        self._drain(conn, link, now)

    def _drain(self, conn: int, link: Link, now: float) -> None:
        session = link.session
        for event in session.take_events():
            if isinstance(event, Established):
                self._established(conn, link, event, now)
            elif isinstance(event, PeersLearned):
                self._learn(link, event.peers, now)
            elif isinstance(event, EntriesReceived):
                self.counters.entries_received += len(event.entries)
                if event.pushed:
                    self._pushed(conn, link, event, now)
            elif isinstance(event, Announced):
                if self.config.forward:
                    self._announced(conn, link, event.digests, now)
            elif isinstance(event, Requested):
                self._requested(link, event.digests)
            elif isinstance(event, DuplicatePush):
                self._pushed(conn, link, event, now)
            elif isinstance(event, PeerRoot):  # (the root is kept on the session, for status)
                if event.asks:
                    self._last_round = now
                    self.counters.rounds += 1
                self._check_agreement(now)
            elif isinstance(event, Closed):
                # A refusal: the handshake ended in a BYE from the peer or a HELLO/AUTH we
                # refused (not a timeout, not a broken connection).
                link.refused = not session.was_open and (event.by_peer or event.error)
        for frame in session.take_output():
            self.counters.messages_sent += 1
            self.counters.bytes_sent += len(frame)
            _count(self.counters.frames_sent, frame, 1)
            _count(self.counters.bytes_sent_by_type, frame, len(frame))
            self._actions.append(Send(conn, frame))
        if session.close_reason is not None and conn in self.links:
            del self.links[conn]
            self._actions.append(Close(conn, session.close_reason))
            self._forget_link(conn, link, now, session.close_reason)

    def _established(self, conn: int, link: Link, event: Established, now: float) -> None:
        origin = event.origin
        link.origin, link.label = origin, event.node_id
        if not link.url and event.url:
            link.url = event.url
        other = self.by_origin.get(origin)
        if other is not None and other != conn:
            # Two links to one peer: keep the one dialed by the smaller origin, on both ends.
            if link.dialed != (self.ledger.origin < origin):
                link.session.close("duplicate connection")  # the caller's _drain finishes it
                return
            self.by_origin[origin] = conn
            old = self.links[other]
            old.session.close("duplicate connection")
            self._drain(other, old, now)
        self.by_origin[origin] = conn
        self.events.append(PeerEvent("connected", link.url or "inbound", event.node_id,
                                     origin=origin))
        peer = self.peers.get(link.url) if link.url else None
        if peer is None and link.url and self.config.discovery:
            peer = self._add_learned(link, link.url, origin, event.node_id, now)
        if peer is not None:
            peer.origin = origin
        for peer in self.peers.values():
            if peer.origin == origin:
                peer.label = event.node_id  # (the label it gives itself now)
            if peer.origin == origin and peer.state not in (PeerState.DROPPED, PeerState.SELF):
                # Any of its URLs: the link (ours or theirs) reaches it, no dial is needed.
                peer.state, peer.failures, peer.refused = PeerState.CONNECTED, 0, False
                peer.failing_since, peer.last_error, peer.reported = None, "", "connected"
        # why: a handshake just crossed the network, which is what a heal looks like from
        # here: peers that were unreachable may be back, and waiting out their redial delay
        # was what made heals slow (60 s cut: 14-15 s to converge with a 30 s cap).
        self._retry_unreachable(now)
        # why: the first round starts at once from the timer (due now); a send_root() here as
        # well started two rounds per link open, and each moved the whole difference again.
        # Only one end of a link runs its gossip timer: when both did, every difference crossed
        # twice (each end's round sent it), and the background rounds cost twice as much.
        link.gossiper = self._gossips_on(origin)
        link.next_gossip = now if link.gossiper else float("inf")
        if link.gossiper and self._next_round == float("inf"):
            self._next_round = now + self._jitter(self.config.gossip_interval, 0.1)
        known = [(p.origin, p.label, p.url) for p in self.peers.values()
                 if p.origin and p.state not in (PeerState.DROPPED, PeerState.SELF)]
        if self.config.url:
            known.append((self.ledger.origin, self.config.node_id, self.config.url))
        link.session.send_peers(known)

    def _pushed(self, conn: int, link: Link, event: EntriesReceived | DuplicatePush,
                now: float) -> None:
        """A pushed update arrived on ``conn``, bringing new entries or not."""
        if not self.config.forward:
            return
        digest = _digest(event.update)
        origin = first_origin(event.update)
        first = self._pushes.get(digest)
        if origin and first != conn:
            # One tree per origin, built from what pushes show: the peer pushed this origin's
            # update, so it gets that origin's pushes another way (or wrote it), and forwarding
            # them to it would only send it copies. On a link outside the origin's tree both
            # ends forward the origin's first push and each stops at the other's copy: no
            # PRUNE frame. A copy arriving although we already stopped means the peer still
            # forwards to us: ask it to stop (PRUNE). A peer repeating a push (the same link
            # twice) shows nothing.
            # why: one tree shared by every origin never settled when appends came from
            # anywhere (duplicates pruned one origin's paths that another origin needed: 8
            # copies per append in the sparse random graph, and each GRAFT that repaired a
            # path undid a prune); per origin, a link is pruned once and stays pruned.
            tell = False
            if first is None:
                link.copies.pop(origin, None)
                link.duplicates = 0
            elif digest in self._direct and not link.session.lazy_all_theirs:
                # A dense neighbourhood: copies in a row of pushes that came to us straight
                # from their origin (the peer is a neighbour of those origins too) make us ask
                # the peer not to forward a new origin's pushes that came straight from it
                # (an empty PRUNE).
                # why: learning one tree per origin costs each origin's first push a flood
                # (a full mesh: 550 copies per new origin); a default learned from all copies
                # (Plumtree's one shared tree) cut a sparse graph's new origins off (a 4.3 s
                # p99), but a neighbour's copy of a direct push says little there
                link.duplicates += 1
                if link.duplicates >= PRUNE_ALL_AFTER:
                    link.session.prune_all()
            if first is not None and not link.session.eager_for(origin):
                # why: a copy can be late because the push that beat it came on a link whose
                # peer stopped forwarding to us meanwhile (two appends of one origin in
                # flight); asking at the first such copy left a node with no path in (a 1.6 s
                # p99 in the sparse random graph), so only PRUNE_AFTER in a row ask
                count = link.copies[origin] = link.copies.pop(origin, 0) + 1
                if len(link.copies) > MAX_PRUNED:
                    link.copies.popitem(last=False)
                tell = count >= PRUNE_AFTER
                if tell:
                    del link.copies[origin]
            link.session.prune(origin, tell=tell)
        if first is None:
            # The first push of it here, even when anti-entropy brought its entries first:
            # why: forwarding only pushes that were new to us stopped the push wave at every
            # node a round had reached first, and a leaf behind it waited for its own round
            # (10% loss, random graph: a 7 s p99)
            self._remember_push(digest, conn, event.context, event.update, event.own)
            if origin and not event.own:
                self._via[origin] = conn
                if len(self._via) > MAX_PRUNED:
                    self._via.popitem(last=False)
            self._forward(conn, digest, origin, event, now)
            if isinstance(event, DuplicatePush) or not event.entries:
                # why: it brought nothing; if Yjs could not take it, an earlier update of its
                # writer is missing here, and a leaf waited for its own round to get it,
                # seconds on a node with several links (random graph: a 1.5 s p99 against
                # 0.25 s of hops)
                link.session.ask_missing(event.context)

    def commit_ended(self, now: float) -> None:
        """The driver's ``append`` returned at ``now``: the node is idle from then on, not from
        the ``now`` the append was given (which its commit may be long past: the first append
        into a cold context of 1M entries loads it, ~1 s)."""
        self._committed(now)

    def _committed(self, now: float) -> None:
        """Something was (or is staged to be) committed at ``now``: summaries that lag their
        rows (``Ledger.summary_lag_ns``) are stored by a later commit, or by ``tick`` once the
        node has committed nothing for SUMMARY_LAG (a crash then leaves nothing to settle)."""
        if self.ledger.lags() or self.ledger.has_staged():
            self._summaries_at = now + SUMMARY_LAG

    def _remember_push(self, digest: bytes, conn: int, context: str, update: bytes,
                       direct: bool = False) -> None:
        # why: a plain dict's oldest key, ``next(iter(d))``, is found past every slot deleted
        # before it (until the dict resizes): 4.7 µs per push remembered at PUSH_MEMORY
        # against 0.6 µs for OrderedDict.popitem, measured; an append over 10,000 contexts
        # remembers one push per context per commit (~9 µs of every entry there)
        self._pushes[digest] = conn
        if len(self._pushes) > PUSH_MEMORY:
            self._pushes.popitem(last=False)
        if direct:
            self._direct[digest] = None
            if len(self._direct) > PUSH_MEMORY:
                self._direct.popitem(last=False)
        self._drop_missing(digest)
        if len(update) <= PUSH_CACHE_BYTES:
            self._recent[digest] = (context, update)
            self._recent_bytes += len(update)
            while self._recent_bytes > PUSH_CACHE_BYTES or len(self._recent) > PUSH_MEMORY:
                _, old = self._recent.popitem(last=False)
                self._recent_bytes -= len(old[1])

    def _forward(self, came_from: int, digest: bytes, origin: bytes,
                 event: EntriesReceived | DuplicatePush, now: float) -> None:
        """Epidemic forwarding: the first push of an update here (whatever it brought: a
        round may have been faster, or Yjs holds it back until an earlier update arrives) goes
        on to every other open link still eager for its origin, so a write crosses any
        topology in hops × latency instead of waiting for anti-entropy rounds. Each node
        forwards each update (by digest) at most once, so a peer repeating a push gets nothing
        forwarded; the pushes that come back prune the links that carry them (``_pushed``).
        Lazy links (at most ``ihave_fanout`` of them, those with a batch under way first) get
        its digest in their next IHAVE batch instead; none of them when it came straight from
        its origin and we have more lazy links than that (a dense neighbourhood, where the
        origin, which pushes its appends on all its links, reached them directly)."""
        lazy = []
        for conn, link in list(self.links.items()):
            if conn == came_from or not link.session.is_open:
                continue
            if link.session.eager_for(origin, event.own):
                link.session.push(event.context, event.update)
                self._drain(conn, link, now)
            elif digest not in link.ihave:
                lazy.append(conn)
        if len(lazy) > self.config.ihave_fanout:
            # why: a dense neighbourhood (a full mesh: 24 links, most of them lazy) announced
            # every update on 3 links per node, 70 IHAVEs per append where the origin's own
            # push had reached everyone already
            # Links with a batch under way first: a digest joins a frame that goes anyway.
            self.rng.shuffle(lazy)
            lazy.sort(key=lambda conn: not self.links[conn].ihave)
            lazy = [] if event.own else lazy[:self.config.ihave_fanout]
        for conn in lazy:
            link = self.links[conn]
            link.ihave[digest] = None
            if link.ihave_due == float("inf"):
                link.ihave_wait = link.ihave_wait or self.config.ihave_delay
                link.ihave_due = now + link.ihave_wait

    def _announced(self, conn: int, link: Link, digests: Sequence[bytes], now: float) -> None:
        """An IHAVE: for each update we lack, wait ``graft_timeout`` for it to come by push,
        then ask (``_graft_missing``). What a hostile peer can make us hold is bounded: at most
        MAX_MISSING updates wait, MAX_MISSING_PER_LINK of them announced by one link, each
        asked for once per announcer (one GRAFT frame per due batch, never more than it sent)."""
        for digest in digests:
            if digest in self._pushes:
                continue
            missing = self._missing.get(digest)
            if link.pending >= MAX_MISSING_PER_LINK:
                return
            if missing is None:
                if len(self._missing) >= MAX_MISSING:
                    return
                missing = self._missing[digest] = Missing(now + self.config.graft_timeout, [])
            if conn not in missing.announcers and len(missing.announcers) < ANNOUNCERS:
                missing.announcers.append(conn)
                link.pending += 1

    def _drop_missing(self, digest: bytes) -> None:
        missing = self._missing.pop(digest, None)
        for conn in missing.announcers if missing is not None else ():
            if conn in self.links:
                self.links[conn].pending -= 1

    def _graft_missing(self, now: float) -> None:
        """Announced updates still missing at their deadline: the push that should have
        brought them was lost or its link pruned, so ask the first announcer still linked for
        them (GRAFT, which also makes that link eager again: Plumtree's repair of the tree),
        and wait ``graft_timeout`` more before asking the next."""
        asks: dict[int, list[bytes]] = {}
        for digest, missing in list(self._missing.items()):
            if missing.deadline > now:
                continue
            while missing.announcers:
                conn = missing.announcers.pop(0)
                link = self.links.get(conn)
                if link is not None:
                    link.pending -= 1
                    if link.session.is_open:
                        asks.setdefault(conn, []).append(digest)
                        break
            if missing.announcers:
                missing.deadline = now + self.config.graft_timeout
            else:
                del self._missing[digest]
        for conn, digests in asks.items():
            link = self.links[conn]
            link.session.graft(tuple(digests))
            self._drain(conn, link, now)

    def _requested(self, link: Link, digests: Sequence[bytes]) -> None:
        """A GRAFT asking for recent pushed updates: push each we still hold, once per link
        (a peer repeating its GRAFT gets nothing twice)."""
        for digest in digests:
            recent = self._recent.get(digest)
            if recent is None or digest in link.served:
                continue
            link.served[digest] = None
            if len(link.served) > SERVED_MEMORY:
                link.served.popitem(last=False)
            link.session.unprune(first_origin(recent[1]))
            link.session.push(*recent)
            link.grafted = True

    def _regraft(self, lost: int, now: float) -> None:
        """A link that was some origin's path to us closed: those origins' trees lost a branch
        here, so every other peer is asked to forward every origin's pushes to us again (GRAFT
        with no digests); the copies that then come twice prune the links again. Links that
        only carried their peer's own appends (a full mesh) need nothing: the peer was the
        origin."""
        orphans = [origin for origin, conn in self._via.items() if conn == lost]
        if not orphans or self._shutting_down:
            return
        for origin in orphans:
            del self._via[origin]
        for conn, link in list(self.links.items()):
            if conn != lost and link.session.is_open:
                link.session.graft(())
                self._drain(conn, link, now)

    def _probe_at(self, link: Link) -> float:
        """When we ask a quiet peer for a sign of life: a ROOT that starts a round, which every
        peer answers at once. Liveness needs each end to hear the other; one question and its
        answer do both, so only the end that has heard nothing asks: the gossiping end after
        idle_timeout / 2 of silence, the other end (which then usually heard the question)
        after 2/3; unanswered, again every idle_timeout / 6, so two lost frames in a row do not
        close a live link. A link carrying traffic both ways (pushes, rounds) needs none."""
        timeout = self.config.idle_timeout
        after = timeout / 2 if link.gossiper else timeout * 2 / 3
        return max(link.last_heard + after, link.last_probe + timeout / 6)

    def _check_agreement(self, now: float) -> None:
        """Track whether every open link's peer last reported our root: ``agreed_since`` (when
        they all started agreeing, None while some differ) and, per disagreement that ended,
        its length in ``counters.heals``."""
        root = self.ledger.root()
        agree = all(link.session.agrees_with(root) for link in self.links.values()
                    if link.session.is_open)
        if agree and self.agreed_since is None:
            if self._disagreed_at is not None:
                self.counters.heals.append(now - self._disagreed_at)
            self.agreed_since, self._disagreed_at = now, None
        elif not agree and self.agreed_since is not None:
            self.agreed_since, self._disagreed_at = None, now

    def _start_round(self, conn: int, link: Link, now: float) -> None:
        link.session.send_root()
        link.next_gossip = float("inf")
        link.last_round = self._last_round = now
        self.counters.rounds += 1
        self._drain(conn, link, now)

    def _gossip_round(self, now: float, after_push: float | None) -> None:
        """The node's round, on the link we gossip on whose last round is oldest. It is skipped
        when we took part in a round (as either end: a round moves data both ways) since the
        append that brought it forward, or else within the last 0.8 interval."""
        since = after_push if after_push is not None else now - 0.8 * self.config.gossip_interval
        if self._last_round > since:
            return
        candidates = [(link.last_round, conn) for conn, link in self.links.items()
                      if link.gossiper and link.session.is_open]
        if not candidates:
            if not any(link.gossiper for link in self.links.values()):
                self._next_round = float("inf")  # restarted when such a link opens
            return
        conn = min(candidates)[1]
        self._start_round(conn, self.links[conn], now)

    def _gossips_on(self, peer_id: str) -> bool:
        """Whether we (not the peer) run the gossip timer of our link to ``peer_id``: the same
        answer on both ends, and about half of a node's links (a hash of the pair picks)."""
        low, high = sorted((self.ledger.origin, peer_id))
        low_gossips = hashlib.sha256(f"{low}\n{high}".encode()).digest()[0] & 1 == 0
        return (self.ledger.origin == low) == low_gossips

    def _learn(self, link: Link, peers: Sequence[tuple[str, str, str]], now: float) -> None:
        """Peers named by an open (so, with a cluster key, authenticated) link's PEERS."""
        if not self.config.discovery:
            return
        for origin, label, url in peers:
            if origin == self.ledger.origin or url == self.config.url or not url:
                continue
            known = self.peers.get(url)
            if known is None:
                self._add_learned(link, url, origin, label, now)
            elif known.state is PeerState.BACKOFF and not known.refused:
                self._retry_now(known, now)  # a live peer knows it: it may be back
            elif known.state is PeerState.DROPPED:
                # A live peer vouches for it again: after a long partition it is worth a retry.
                known.state, known.failures, known.failing_since = PeerState.NEW, 0, None
                known.retry_at = now

    def _add_learned(self, link: Link | None, url: str, origin: str, label: str,
                     now: float) -> PeerInfo | None:
        """A new non-seed peer from ``link``'s PEERS (None: from mDNS), within the bounds (None
        when over them): a full table makes room by forgetting a dropped peer, never a live one."""
        if link is not None and link.learned >= self.config.max_learned_per_link:
            return None
        learned = [p for p in self.peers.values() if not p.seed]
        if len(learned) >= self.config.max_learned_peers:
            dropped = next((p for p in learned if p.state is PeerState.DROPPED), None)
            if dropped is None:
                return None
            del self.peers[dropped.url]
        if link is not None:
            link.learned += 1
        peer = self.peers[url] = PeerInfo(url, seed=False, origin=origin, label=label,
                                          retry_at=now)
        return peer

    def _forget_link(self, conn: int, link: Link, now: float, reason: str) -> None:
        self._regraft(conn, now)
        if self.by_origin.get(link.origin) == conn:
            del self.by_origin[link.origin]
        self._dialing.pop(conn, None)
        peer = self.peers.get(link.url) if link.url else None
        if peer is not None and peer.state is PeerState.DROPPED:
            peer = None
        if peer is not None and link.session.reached_self:
            peer.state = PeerState.SELF
            return
        if link.origin and link.origin in self.by_origin:
            if peer is not None:
                peer.state = PeerState.CONNECTED  # the surviving duplicate
            return
        if link.session.was_open:
            self.events.append(PeerEvent("lost", link.url or "inbound", link.label, reason,
                                         origin=link.origin))
        elif link.refused and peer is None:  # someone dialed us and one side refused
            self.events.append(PeerEvent("refused", "inbound", link.label, reason,
                                         origin=link.origin))
        # The link's own URL, and any other URL of the node that this link made "connected".
        affected = [peer] if peer is not None else []
        if link.origin:
            affected += [p for p in self.peers.values() if p is not peer
                         and p.origin == link.origin and p.state is PeerState.CONNECTED]
        for p in affected:
            if link.session.was_open:
                p.failures = 0  # it worked: retry soon
                p.attempt_at = now  # (the delay counts from the loss, not from the old dial)
                p.reported = "lost"
            self._backoff(p, now, reason, refused=link.refused)

    def _backoff(self, peer: PeerInfo, now: float, reason: str, refused: bool = False) -> None:
        """Schedule the next dial of a peer that failed: ``backoff_base``·2^(failures-1) after
        the failed attempt started, capped at ``probe_interval`` (unreachable) or
        ``backoff_max`` (refused), shortened by up to 20% jitter, never before now."""
        peer.failures += 1
        peer.last_error = reason
        peer.refused = refused
        if peer.failing_since is None:
            peer.failing_since = now
        if not peer.seed and now - peer.failing_since >= self.config.drop_after:
            peer.state = PeerState.DROPPED
            self.events.append(PeerEvent("dropped", peer.url, peer.label,
                                         f"failing for {now - peer.failing_since:.0f}s",
                                         origin=peer.origin))
            return
        cap = self.config.backoff_max if refused else self.config.probe_interval
        # why: an unbounded exponent overflows float after ~1000 failures (a seed down for hours)
        delay = min(cap, self.config.backoff_base * 2 ** min(peer.failures - 1, 60))
        peer.state = PeerState.BACKOFF
        # why: jitter only shortens the delay, so the cap bounds how long a healed peer waits
        peer.retry_at = max(now, peer.attempt_at + delay * (1 - self.rng.uniform(0, 0.2)))
        kind = "refused" if refused else "unreachable"
        if peer.reported != kind:
            peer.reported = kind
            self.events.append(PeerEvent(kind, peer.url, peer.label, reason,
                                         round(peer.retry_at - now, 3), peer.origin))

    def _retry_unreachable(self, now: float) -> None:
        for peer in self.peers.values():
            if peer.state is PeerState.BACKOFF and not peer.refused and not self._connected(peer):
                self._retry_now(peer, now)

    def _retry_now(self, peer: PeerInfo, now: float) -> None:
        """Dial at the next tick, unless the last attempt started under ``backoff_base`` ago
        (evidence arriving in a burst must not turn into a burst of dials)."""
        peer.retry_at = min(peer.retry_at, max(now, peer.attempt_at + self.config.backoff_base))

    def _jitter(self, value: float, spread: float) -> float:
        return value * (1 + self.rng.uniform(-spread, spread))

