"""The peer protocol between two nodes, as a sans-I/O state machine (one per connection).

Theory of operation
-------------------
Feed every frame from the peer to ``receive()``; after each call, and after ``start()``,
``send_root()``, ``push()`` or ``close()``, drain ``take_output()`` (frames to send, in order) and
``take_events()`` (what the node should know). Nothing here reads a clock, awaits or touches a
socket, so the same code runs over websockets and in the simulator.

States (the table ``ALLOWED`` lists which messages each state accepts; anything else is a
RemoteProtocolError that closes the link with a BYE and a reason):

    HELLO_SENT --HELLO ok--> AUTH_WAIT --AUTH ok--> OPEN
    any --BYE / violation / close()--> CLOSED

Who the peer is: its HELLO names its origin (Ed25519 public key) and a label (``node_id``, only
shown: two data directories may share a label). Each side answers the other's HELLO with AUTH:
a signature by its key over the peer's fresh nonce and both HELLOs
(``identity.link_transcript``), plus, when the cluster has a key, an HMAC of that key over the
same transcript. A peer naming an origin whose key it does not hold, replaying a proof from
another link or echoing ours back fails here and the link closes; a peer with our own origin is
ourselves. Links are keyed by origin (``Established.origin``).

Anti-entropy in OPEN is stateless ping-pong, so a lost, repeated or crossed message costs at
most a wasted round, never a wrong answer:

* ROOT(r) (r = a node root truncated to 16 bytes, as every digest on the wire): equal to ours →
  reply ROOT(is_reply), which carries no root (it means "equal to yours"); different → reply
  with our VIEW of the node-level tree at the top. A ROOT(is_reply) is only noted
  (``peer_root`` := the root we sent): it answers a round and never starts anything (a quiet
  link's liveness probe is a round: see NodeCore). HELLO carries the sender's root, so
  ``peer_root`` is known from the start. A starter whose root differs from the peer's last one
  sends its top view (if INNER) with the ROOT; the peer then answers that view directly (one
  half trip saved).
* VIEWS: for each view of theirs at prefix p, compare with ours at p. Both inner → send our views
  of the children whose digests differ. Theirs inner, ours small → send our items at p.
  Theirs a list of (context, root, state vector) items → for each context whose root differs:
  with their state vector, send at once the UPDATE they lack (if any) and a SYNC1 without reply
  if they hold something we lack; without it (too long to travel in a view), SYNC1 asking for a
  reply; a context missing from a whole list of theirs is sent whole. Theirs EMPTY → send the
  whole of each of our contexts under p (they have none of them).
* SYNC1(ctx, state vector) → UPDATE with exactly what they lack (Yjs diff), and our own SYNC1
  back when asked, so both directions move. The same SYNC1 again, with our
  state unchanged, in the same or the next round, is not answered twice (the first answer is
  still on its way).
* An answer may stop short (``Ledger.bundle_diff``: a peer lacking much of a context gets it
  in parts of about ``Ledger.part_bytes``, each applicable on top of those before it); it is
  flagged MORE to a peer whose HELLO says it asks for the rest (FLAG_PARTS; we always set it),
  and a receiver that took it asks at once (SYNC1 without reply, its new state vector) for
  the next part; a peer without the flag asks in its next round. Each part ends where its
  entries are vouched for, and a context of any size goes through ``max_update_bytes``.
* With ``LocalInfo.paced`` (the runtime, the simulator) a diff asked for waits until the driver
  says the link has room (``send_waiting``), one context at a time; a question already
  answered is not answered again while the answer is on its way (``_on_its_way``).
* UPDATE chunks (≤ CHUNK bytes each, ≤ LARGE_CHUNK to a peer whose HELLO says it takes large
  frames: FLAG_LARGE_FRAMES, which we always set; older peers ignore it) are reassembled per
  transfer id
  (the sender numbers its updates) and by offset, so chunks of two updates never mix, in any
  order; then the update is applied through the ledger's grow-only gate; a bad update closes the
  link, nothing is stored. Duplicates of finished transfers are ignored. At most
  ``MAX_ASSEMBLIES`` transfers stay unfinished (the oldest is abandoned: on a lossy link it may
  never finish, and anti-entropy repairs it) holding at most ``max_update_bytes`` in all.

Epidemic forwarding (the decisions are NodeCore's; the session keeps which origins' pushes we
forward to the peer): PRUNE(origin) asks us to stop forwarding that origin's pushes (an empty
PRUNE: every origin's), GRAFT with no digests to forward every origin's again, a GRAFT listing
digests asks for those updates (``Requested``: the node also forwards their origins' pushes
again), IHAVE announces digests of recent pushes (``Announced``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .context_log import ContextLog
from .entry import Entry, check_context, check_node_id
from .errors import (
    IntegrityError,
    InvalidClusterKey,
    LedgerError,
    LocalInputError,
    RemoteProtocolError,
)
from .identity import check_link_proof, link_transcript
from .ledger import Ledger
from .wire import (
    AUTH,
    BYE,
    CHUNK,
    CTREE,
    DIGEST_PREFIX,
    EMPTY,
    FLAG_AUTH,
    FLAG_LARGE_FRAMES,
    FLAG_PARTS,
    GRAFT,
    HELLO,
    IDS,
    IHAVE,
    INNER,
    ITEMS,
    LARGE_CHUNK,
    MAX_DIGESTS,
    MAX_FRAME,
    MAX_IDS,
    MAX_PEERS_PER_FRAME,
    MAX_SV_IN_VIEW,
    NAMES,
    PEERS,
    PROTOCOL_VERSION,
    PRUNE,
    ROOT,
    SYNC1,
    UPDATE,
    VIEWS,
    WANT,
    Auth,
    Bye,
    ContextTree,
    Graft,
    Hello,
    IHave,
    Message,
    Peers,
    Prune,
    Root,
    Sync1,
    UpdateChunk,
    View,
    Views,
    Want,
    decode,
    encode,
)
from .yjs import decode_state_vector, encode_state_vector

EMPTY_STATE_VECTOR = b"\x00"
ITEMS_PER_VIEW = 200  # keeps a VIEWS frame of long names and state vectors under MAX_FRAME
MAX_ASSEMBLIES = 32  # unfinished transfers kept per link; beyond, the oldest is abandoned
DONE_MEMORY = 4096  # finished transfer ids remembered per link, to drop late duplicates
MAX_PRUNED = 1024  # origins a link is lazy for (a peer naming more only forgets the oldest)


class State(enum.Enum):
    HELLO_SENT = "hello-sent"
    AUTH_WAIT = "auth-wait"
    OPEN = "open"
    CLOSED = "closed"


ALLOWED: dict[State, frozenset[int]] = {
    State.HELLO_SENT: frozenset({HELLO, BYE}),
    State.AUTH_WAIT: frozenset({AUTH, BYE}),
    State.OPEN: frozenset({PEERS, ROOT, VIEWS, SYNC1, UPDATE, BYE, CTREE, WANT, PRUNE, GRAFT,
                            IHAVE}),
    State.CLOSED: frozenset(),
}


@dataclass(frozen=True)
class LocalInfo:
    node_id: str
    cluster: str = "default"
    url: str = ""
    key: bytes | None = None
    # Say in HELLO that we take UPDATE frames up to LARGE_FRAME (and send them to peers that
    # say so). False plays a peer from before FLAG_LARGE_FRAMES (tests).
    large_frames: bool = True
    # Say in HELLO that we ask for the rest of an answer flagged MORE (and flag ours to peers
    # that say so). False plays a peer from before FLAG_PARTS (tests).
    parts: bool = True
    # Answers (diffs) wait until the driver says the link has room (``send_waiting``); False:
    # each is built as soon as it is asked for (drivers that queue nothing).
    paced: bool = False


# ---- events --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Established:
    origin: str  # the peer's proven public key, hex: who it is
    node_id: str  # its label (shown only)
    url: str


@dataclass(frozen=True)
class PeersLearned:
    peers: tuple[tuple[str, str, str], ...]  # (origin hex, label, url)


@dataclass(frozen=True)
class PeerRoot:
    root: bytes
    agrees: bool
    asks: bool = False  # the peer started a round (not a reply)


@dataclass(frozen=True)
class EntriesReceived:
    context: str
    entries: Sequence[Entry]  # (built when read: mostly they are only counted)
    update: bytes = b""  # the update that brought them (what a forward sends on)
    pushed: bool = False  # it came as a push (a fresh update), not as an answer
    own: bool = False  # pushed by its origin (which pushes its appends on every link)


@dataclass(frozen=True)
class DuplicatePush:
    """A pushed update that brought nothing new (the node decides whether to prune, and
    forwards it if it is the first push of it here: anti-entropy may have been faster)."""
    context: str
    update: bytes
    own: bool = False


@dataclass(frozen=True)
class Announced:
    """The peer holds these recent pushed updates (IHAVE, by digest): the node starts a graft
    timer for those it lacks."""
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class Requested:
    """The peer grafted the link and asks for these recent pushed updates (by digest)."""
    digests: tuple[bytes, ...]


@dataclass(frozen=True)
class Closed:
    reason: str
    by_peer: bool
    error: bool


Event = (Established | PeersLearned | PeerRoot | EntriesReceived | DuplicatePush | Announced
         | Requested | Closed)


@dataclass
class _Assembly:
    """One update being reassembled from its chunks."""
    context: str
    total: int
    pushed: bool = False
    own: bool = False
    more: bool = False
    chunks: dict[int, bytes] = field(default_factory=dict)  # offset → chunk
    received: int = 0


MAX_URL = 256


def check_peer_url(url: str) -> str:
    """A URL a peer names (in HELLO or PEERS): ``scheme://rest``, at most MAX_URL printable ASCII
    characters without spaces. Which schemes are dialed is the driver's business (ws/wss)."""
    scheme, sep, rest = url.partition("://")
    if (not sep or not rest or not scheme.isalnum() or len(url) > MAX_URL
            or not url.isascii() or not url.isprintable() or " " in url):
        raise RemoteProtocolError(f"peer named an invalid URL {url[:80]!r}")
    return url


def cluster_key_bytes(key: bytes | str | None) -> bytes | None:
    """The cluster key as bytes; None is an open cluster. An empty key is refused: it is what
    ``--cluster-key "$UNSET"`` gives, and it used to run an open node without a word."""
    if key is None:
        return None
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if not raw:
        raise InvalidClusterKey("the cluster key is empty (an unset variable?): give a "
                                "non-empty key, or none for an open cluster")
    return raw


def auth_mac(key: bytes, transcript: bytes) -> bytes:
    """Proof of the cluster key bound to the link transcript (the verifier's fresh nonce and
    both HELLOs, the prover's first); the key never travels."""
    return hmac.new(key, b"p2p-ledger-auth v7" + transcript, hashlib.sha256).digest()


class PeerSession:
    def __init__(
        self,
        local: LocalInfo,
        ledger: Ledger,
        nonce: bytes,
        max_update_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.local = local
        self.ledger = ledger
        self.nonce = nonce
        self.max_update_bytes = max_update_bytes
        self.state = State.HELLO_SENT
        self.peer: Hello | None = None
        self.peer_root: bytes | None = None  # the peer's last known root, truncated
        self._sent_root = b""  # the truncated root of our last ROOT (what a reply agrees with)
        self.was_open = False
        self.reached_self = False  # the peer's HELLO carried our own origin
        self.hello = b""  # our HELLO frame, and the peer's (the link transcript covers both)
        self._peer_hello = b""
        self.close_reason: str | None = None  # set once CLOSED
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._next_transfer = 0  # id of the last update we sent (UPDATE.transfer)
        # The peer's unfinished transfers by transfer id, oldest first, and the ids of its
        # latest finished or abandoned ones (late duplicates of those are ignored).
        self._assembly: dict[int, _Assembly] = {}
        self._assembly_bytes = 0
        self._done: OrderedDict[int, None] = OrderedDict()
        # Rounds seen (ROOTs sent or received that start one) and, per context, the last SYNC1
        # we answered: (their state vector, want_reply, our state vector, round).
        self._round = 0
        self._answered: dict[str, tuple[bytes, bool, bytes, int]] = {}
        self._offered: dict[str, tuple[bytes, bytes, int]] = {}  # the same for ITEMS answers
        # per context answered in parts: the peer's state vector once it takes the part sent
        # before the last, and once it takes the last (None: the last was the end)
        self._ahead: dict[str, tuple[dict[int, int], dict[int, int] | None]] = {}
        self._gaps: dict[str, tuple[bytes, int]] = {}  # per context: (our state vector, round)
        # when we last asked for what a held-back push waits for
        # Epidemic forwarding (Plumtree's eager/lazy push, one tree per origin): per origin,
        # whether we forward its pushes to the peer (``per_origin``, at most MAX_PRUNED
        # origins: beyond, the oldest is forgotten); origins not in it follow the link's
        # default, eager until an empty PRUNE makes it lazy (``lazy_all``).
        self.per_origin: OrderedDict[bytes, bool] = OrderedDict()
        self.lazy_all = False
        self.lazy_all_theirs = False  # we sent an empty PRUNE (and no GRAFT since)
        self.sent_by_type: dict[str, int] = {}  # frame bytes sent per type (the sync bench)
        self._chunk = CHUNK  # update bytes per UPDATE frame: LARGE_CHUNK if the peer takes it
        self._peer_parts = False  # the peer asks for the rest of an answer flagged MORE
        # (paced) the answers still to build, oldest first: context → the state vector to
        # answer (None: the peer holds nothing of it)
        self._waiting: dict[str, bytes | None] = {}
        self._leaving: set[str] = set()  # answered while answers still wait (_on_its_way)

    # ---- driver API --------------------------------------------------------------------------

    def start(self) -> None:
        """Queue our HELLO; then feed the peer's frames to ``receive``."""
        flags = ((FLAG_AUTH if self.local.key else 0)
                 | (FLAG_LARGE_FRAMES if self.local.large_frames else 0)
                 | (FLAG_PARTS if self.local.parts else 0))
        self._send(Hello(PROTOCOL_VERSION, self.local.cluster, self.local.node_id,
                         self.local.url, self.nonce, flags, self.ledger.root()[:DIGEST_PREFIX],
                         self.ledger.identity.public))
        self.hello = self._out[-1]

    def take_output(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    @property
    def takes_large_frames(self) -> bool:
        """True once the peer's HELLO is accepted: our HELLO said we take UPDATE frames up to
        LARGE_FRAME, and the peer may send them as soon as our AUTH reaches it. The driver
        raises its message limit when this turns true, before it sends our AUTH."""
        return self.local.large_frames and self.peer is not None

    @property
    def answers_waiting(self) -> bool:
        """(``LocalInfo.paced``) answers wait for room on the link: call ``send_waiting``."""
        return bool(self._waiting) and self.is_open

    def send_waiting(self, room: int = 1) -> None:
        """Build the answers waiting (``LocalInfo.paced``), oldest first, until they make
        ``room`` bytes of frames or none is left; the driver calls this while it holds less
        than ``ROOM_BYTES`` unsent for this link (``room``: what it lacks to hold that much)
        and answers are waiting.

        why: a fresh node asking for 10 contexts of 10 MB got all ten answers built before
        the first frame left (0.3-0.6 s of the sender's time, the receiver idle); built as
        the link drains, the first leaves at once and the next is built while the peer takes
        the one before. (One answer per call cost the sender of 2,000 small contexts 26% more
        CPU: the driver's pass per answer.)"""
        made = 0
        while self._waiting and self.is_open and made < room:
            sent = len(self._out)
            context = next(iter(self._waiting))
            self._send_diff(context, self._waiting.pop(context))
            made += sum(map(len, self._out[sent:]))
            self._leaving.add(context)
            if not self._waiting:
                # The last has left: the answers are on their way for this round and the next
                # (_on_its_way), counted from now, not from the rounds they were asked in.
                for name in self._leaving:
                    offered, answered = self._offered.get(name), self._answered.get(name)
                    if offered is not None:
                        self._offered[name] = (*offered[:2], self._round)
                    if answered is not None:
                        self._answered[name] = (*answered[:3], self._round)
                self._leaving.clear()

    def _on_its_way(self, context: str, noted: int) -> bool:
        """Whether our answer to a question about ``context`` noted in round ``noted`` is still
        on its way: noted in this round or the one before, or (paced) answered while answers
        still wait to leave.

        why: a catch-up of 10 × 10 MB at load 8 spans rounds (1 s each), and each round's view
        showed the contexts not applied yet: those already answered were sent again (the
        first two of ten twice, 20% more bytes and CPU at both ends)."""
        return noted >= self._round - 1 or context in self._leaving

    def agrees_with(self, root: bytes) -> bool | None:
        """Whether the peer's last known root is ``root`` (None: not known yet)."""
        return None if self.peer_root is None else self.peer_root == root[:DIGEST_PREFIX]

    def receive(self, frame: bytes) -> None:
        """Handle one frame. Violations close the session (a Closed event) and never raise."""
        if self.state is State.CLOSED:
            return
        try:
            msg = decode(frame)
            kind = frame[1]
            if len(frame) > MAX_FRAME and not self.local.large_frames:
                raise RemoteProtocolError(f"a frame of {len(frame)} bytes, but we take at most "
                                          f"{MAX_FRAME}")
            if kind not in ALLOWED[self.state]:
                raise RemoteProtocolError(f"{NAMES[kind]} not allowed in state {self.state.value}")
            if kind == HELLO:
                self._peer_hello = bytes(frame)
            self._handle(msg)
        except (RemoteProtocolError, IntegrityError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}")

    def send_root(self) -> None:
        """Start an anti-entropy round (the gossip timer calls this). When the peer's last
        root differs from ours, the round is likely to differ: the top view of our tree (when it
        is INNER) goes along and saves a half trip (an in-sync peer still answers with its
        ROOT). Not knowing the peer's root (a fresh link), we send the bare ROOT: an in-sync
        round stays one small round trip."""
        if self.is_open:
            self._round += 1
            root = self.ledger.root()[:DIGEST_PREFIX]
            view = None
            if self.peer_root is not None and self.peer_root != root:
                top = self._view(())
                # why: only a deep tree gains from it; a top bucket (small ledger) answers in
                # one view anyway, and in a busy cluster the peer's last root is often stale, so
                # its items and state vectors would ride along on rounds that find no difference
                view = top if top.kind == INNER else None
            self._sent_root = root
            self._send(Root(False, root, view))

    def send_peers(self, peers: Iterable[tuple[str, str, str]]) -> None:
        """Peer exchange: (origin hex, label, url) of the peers we know."""
        if self.is_open:
            known = tuple((bytes.fromhex(origin), label, url) for origin, label, url in peers)
            step = MAX_PEERS_PER_FRAME
            for start in range(0, max(len(known), 1), step):
                self._send(Peers(known[start:start + step]))

    def push(self, context: str, update: bytes, own: bool = False) -> None:
        """Live push of a fresh update: a local append's (``own``), or a forward of a peer's
        push (the node forwards only on ``eager`` links)."""
        if self.is_open:
            self._send_update(context, update, pushed=True, own=own)

    def close(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self._send(Bye(reason))
            self._closed(Closed(reason, by_peer=False, error=False))

    # ---- internals ---------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        frame = encode(msg)
        self._out.append(frame)
        name = NAMES[frame[1]]
        self.sent_by_type[name] = self.sent_by_type.get(name, 0) + len(frame)

    def _fail(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self._send(Bye(reason))
            self._closed(Closed(reason, by_peer=False, error=True))

    def _closed(self, event: Closed) -> None:
        self.state = State.CLOSED
        self.close_reason = event.reason
        self._events.append(event)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Hello):
            self._on_hello(msg)
        elif isinstance(msg, Auth):
            peer = self.peer
            assert peer is not None
            transcript = link_transcript(self.nonce, self._peer_hello, self.hello)
            if self.local.key is not None:
                # (the HMAC first: cheap, so a stranger cannot make us check a signature)
                if not hmac.compare_digest(msg.mac, auth_mac(self.local.key, transcript)):
                    raise RemoteProtocolError("cluster key proof does not match")
            elif msg.mac:
                raise RemoteProtocolError("peer sent a cluster key proof and we have no key")
            check_link_proof(peer.origin, msg.signature, transcript)
            self._open()
        elif isinstance(msg, Bye):
            self._closed(Closed(f"peer said: {msg.reason}", by_peer=True, error=False))
        elif isinstance(msg, Peers):
            for _, node_id, url in msg.peers:
                with _peer_at_fault():
                    check_node_id(node_id)
                check_peer_url(url)
            self._events.append(PeersLearned(tuple(
                (origin.hex(), node_id, url) for origin, node_id, url in msg.peers)))
        elif isinstance(msg, Prune):
            if msg.origin is None:
                self.lazy_all = True
            else:
                self._set(msg.origin, False)
        elif isinstance(msg, Graft):
            if msg.digests:
                self._events.append(Requested(msg.digests))
            else:
                self.eager = True
        elif isinstance(msg, IHave):
            self._events.append(Announced(msg.digests))
        elif isinstance(msg, Root):
            self._on_root(msg)
        elif isinstance(msg, Views):
            _disjoint(msg.views)
            for view in msg.views:
                self._on_view(view)
        elif isinstance(msg, ContextTree):
            self._on_ctree(msg)
        elif isinstance(msg, Want):
            with _peer_at_fault():
                check_context(msg.context)
            self._send_update(msg.context, self.ledger.bundle_records(msg.context, msg.ids))
        elif isinstance(msg, Sync1):
            self._on_sync1(msg)
        elif isinstance(msg, UpdateChunk):
            self._on_chunk(msg)

    def _on_hello(self, hello: Hello) -> None:
        # (another protocol version is refused by decode: ProtocolMismatch)
        if hello.cluster != self.local.cluster:
            raise RemoteProtocolError(
                f"peer is in cluster {hello.cluster!r}, we are in {self.local.cluster!r}")
        with _peer_at_fault():
            check_node_id(hello.node_id)
        if hello.url:
            check_peer_url(hello.url)
        if hello.origin == self.ledger.identity.public:
            # why: the origin, not the label: two data directories may share a label (a wiped
            # one that came back, two laptops called "agent"), and used to refuse each other
            self.reached_self = True
            raise RemoteProtocolError("connected to ourselves")
        self.peer = hello
        self.peer_root = hello.root
        if self.local.large_frames and hello.flags & FLAG_LARGE_FRAMES:
            self._chunk = LARGE_CHUNK
        self._peer_parts = bool(hello.flags & FLAG_PARTS)
        peer_has_key = bool(hello.flags & FLAG_AUTH)
        if self.local.key is None and peer_has_key:
            raise RemoteProtocolError("peer requires a cluster key and we have none")
        if self.local.key is not None and not peer_has_key:
            raise RemoteProtocolError("peer has no cluster key and ours requires one")
        transcript = link_transcript(hello.nonce, self.hello, self._peer_hello)
        mac = auth_mac(self.local.key, transcript) if self.local.key is not None else b""
        self._send(Auth(self.ledger.identity.sign_link(transcript), mac))
        self.state = State.AUTH_WAIT

    def _open(self) -> None:
        assert self.peer is not None
        self.state = State.OPEN
        self.was_open = True
        self._events.append(Established(self.peer.origin.hex(), self.peer.node_id,
                                        self.peer.url))

    def _on_root(self, msg: Root) -> None:
        mine = self.ledger.root()[:DIGEST_PREFIX]
        if msg.is_reply:
            # An answer: the peer held the root we sent. It asks nothing (the next round
            # repairs whatever changed since).
            if self._sent_root:
                self.peer_root = self._sent_root
            self._events.append(PeerRoot(self._sent_root, self._sent_root == mine, False))
            return
        self.peer_root = msg.root
        self._round += 1
        self._events.append(PeerRoot(msg.root, msg.root == mine, True))
        if msg.root == mine:
            self._send(Root(True))
            return
        if msg.view is not None:
            # The starter knew the roots differ and showed its top: answer with the next level
            # (saves a half trip, and the ITEMS with state vectors land on the right side).
            if msg.view.prefix:
                raise RemoteProtocolError("a ROOT carries only the view of the top")
            sent = len(self._out)
            self._on_view(msg.view)
            if len(self._out) > sent:
                return
        self._send(Views((self._view(()),)))

    def _view(self, prefix: tuple[int, ...]) -> View:
        node = self.ledger.tree.node(prefix)
        if node is None:
            return View(prefix, EMPTY)
        if node.children is not None:
            return View(prefix, INNER, children=tuple(
                None if d is None else d[:DIGEST_PREFIX] for d in node.children))
        return self._items_views(prefix)[0]

    def _items(self, prefix: tuple[int, ...]) -> tuple[tuple[str, bytes], ...]:
        names = self.ledger.names
        return tuple((names[k], v[:DIGEST_PREFIX]) for k, v in self.ledger.tree.items_under(prefix))

    def _items_views(self, prefix: tuple[int, ...]) -> list[View]:
        """Our (context, root, state vector) items under ``prefix``, in views of at most
        ITEMS_PER_VIEW items; when split, every part holds at least ITEMS_PER_VIEW // 2, so a
        view of fewer is the whole list (its absentees are contexts the sender lacks)."""
        # why: a state vector read commits the rows its context holds staged, and the tree
        # shows the last commit: read first, a root and a state vector told apart made the
        # peer descend the context's tree and load it whole (83 s for 10M entries)
        self.ledger.flush()
        items = self._items(prefix)
        states = tuple(_short_sv(self.ledger.state_vector(name)) for name, _ in items)
        parts = max(1, -(-len(items) // ITEMS_PER_VIEW))
        size = -(-len(items) // parts) if items else 0
        return [View(prefix, ITEMS, items=items[i:i + size], states=states[i:i + size])
                for i in range(0, max(len(items), 1), max(size, 1))]

    def _on_view(self, theirs: View) -> None:
        prefix = theirs.prefix
        self.ledger.flush()  # (our roots and state vectors as of one commit: _items_views)
        mine = self.ledger.tree.node(prefix)
        if theirs.kind == INNER and mine is not None and mine.children is not None:
            ours = [None if d is None else d[:DIGEST_PREFIX] for d in mine.children]
            differing = [i for i in range(16) if ours[i] != theirs.children[i]]
            if differing:
                self._send(Views(tuple(self._view(prefix + (i,)) for i in differing)))
        elif theirs.kind == INNER and mine is None:
            self._send(Views((View(prefix, EMPTY),)))  # we have nothing here: send it all
        elif theirs.kind == INNER:
            # Our side is small here: show our items and let them compare.
            for view in self._items_views(prefix):
                self._send(Views((view,)))
        elif theirs.kind == EMPTY:
            for name, _ in self._items(prefix) if mine is not None else ():
                # (noted as offered, as below: a view of the next round that still lacks it
                # does not send it twice while it is on its way)
                if self._first_answer(name, EMPTY_STATE_VECTOR, self.ledger.state_vector(name)):
                    self._answer(name, None)
        else:
            their_roots = dict(theirs.items)
            their_svs = {name: sv for (name, _), sv in zip(theirs.items, theirs.states,
                                                           strict=False) if sv}
            whole = len(theirs.items) < ITEMS_PER_VIEW // 2
            our_roots = dict(self._items(prefix)) if mine is not None else {}
            for name in sorted(their_roots.keys() | our_roots.keys()):
                if their_roots.get(name) != our_roots.get(name):
                    if name not in their_roots and whole:
                        sv = self.ledger.state_vector(name)
                        if self._first_answer(name, EMPTY_STATE_VECTOR, sv):
                            self._answer(name, None)
                    else:
                        self._reconcile(name, their_svs.get(name))

    def _reconcile(self, name: str, their_sv: bytes | None) -> None:
        """One context differs. Knowing their state vector, send at once what they lack and ask
        (SYNC1 without reply) only when they hold something we lack; else ask with a SYNC1."""
        if their_sv is None:
            self._request(name)
            return
        with _peer_at_fault():
            check_context(name)
        held = name in self.ledger.contexts
        ours = self.ledger.state_vector(name)  # (from its summary: nothing is loaded yet)
        mine, theirs = decode_state_vector(ours), decode_state_vector(their_sv)
        we_have_more = any(clock > theirs.get(client, 0) for client, clock in mine.items())
        they_have_more = any(clock > mine.get(client, 0) for client, clock in theirs.items())
        if held and we_have_more and self._first_answer(name, their_sv, ours):
            self._answer(name, their_sv)
        if they_have_more:
            self._send(Sync1(name, False, ours))
        elif not we_have_more:
            # why: equal vectors, different roots: a position of some Yjs client holds another
            # entry here than there (a member squatted it, or a node lost a tail it had
            # shipped). State vectors cannot say which entries differ; the entry ids can.
            self._send_ctree(name, self.ledger.contexts.get(name))

    def _request(self, name: str) -> None:
        with _peer_at_fault():
            check_context(name)
        self._send(Sync1(name, True, self.ledger.state_vector(name)))

    def _first_answer(self, name: str, their_sv: bytes, our_sv: bytes) -> bool:
        """Whether to send what a peer with ``their_sv`` lacks, seen in its ITEMS view: not when
        we sent it for the same two state vectors in this round or the one before (it is still
        on its way: a big context takes longer than a round, like a repeated SYNC1)."""
        last = self._offered.get(name)
        if last is not None and last[:2] == (their_sv, our_sv) and \
                self._on_its_way(name, last[2]):
            return False
        asked = self._answered.get(name)  # (a SYNC1 with the same state vector, answered)
        if asked is not None and (asked[0], asked[2]) == (their_sv, our_sv) and \
                self._on_its_way(name, asked[3]):
            return False
        self._offered[name] = (their_sv, our_sv, self._round)
        return True

    def _on_sync1(self, msg: Sync1) -> None:
        with _peer_at_fault():
            check_context(msg.context)
        held = msg.context in self.ledger.contexts
        sv = self.ledger.state_vector(msg.context)
        last = self._answered.get(msg.context)
        if last is not None and last[:3] == (msg.state_vector, msg.want_reply, sv) and \
                self._on_its_way(msg.context, last[3]):
            # why: the same question with nothing changed on either side, in this round or the
            # one before: our answer to it is still on its way (two crossing rounds asked it
            # twice, and the missing data crossed twice). A lost answer is sent again a round
            # later.
            return
        self._answered[msg.context] = (msg.state_vector, msg.want_reply, sv, self._round)
        offered = self._offered.get(msg.context)
        if held and not (offered is not None and offered[:2] == (msg.state_vector, sv)
                         and self._on_its_way(msg.context, offered[2])):
            # (not when a view showing the same state vector was answered in this round or
            # the one before: a peer taking a context in parts asks for the next one with a
            # SYNC1 and may show the same state vector in a round meanwhile)
            self._answer(msg.context, msg.state_vector)
        if msg.want_reply:
            if decode_state_vector(msg.state_vector) == decode_state_vector(sv):
                # as in _reconcile: look at the ids
                self._send_ctree(msg.context, self.ledger.contexts.get(msg.context))
            else:
                self._send(Sync1(msg.context, False, sv))

    # ---- finding entries by id (a context's tree of entry ids) ---------------------------------

    def _send_ctree(self, name: str, ctx: ContextLog | None) -> None:
        """Show the peer the top of our tree of ``name``'s entry ids: it descends where the
        digests differ, asks (WANT) for the ids it lacks and sends those we lack."""
        self._send(ContextTree(name, (self._ctx_view(ctx, ()),)))

    def _ctx_view(self, ctx: ContextLog | None, prefix: tuple[int, ...]) -> View:
        node = ctx.tree.node(prefix) if ctx is not None else None
        if node is None or ctx is None:
            return View(prefix, EMPTY)
        if node.children is not None:
            return View(prefix, INNER, children=tuple(
                None if d is None else d[:DIGEST_PREFIX] for d in node.children))
        return View(prefix, IDS, ids=tuple(k for k, _ in ctx.tree.items_under(prefix)))

    def _on_ctree(self, msg: ContextTree) -> None:
        with _peer_at_fault():
            check_context(msg.context)
        _disjoint(msg.views)
        name = msg.context
        ctx = self.ledger.contexts.get(name)
        for theirs in msg.views:
            prefix = theirs.prefix
            mine = ctx.tree.node(prefix) if ctx is not None else None
            if theirs.kind == INNER and mine is not None and mine.children is not None:
                short = [None if d is None else d[:DIGEST_PREFIX] for d in mine.children]
                differing = [i for i in range(16) if theirs.children[i] != short[i]]
                if differing:
                    self._send(ContextTree(name, tuple(
                        self._ctx_view(ctx, prefix + (i,)) for i in differing)))
            elif theirs.kind == INNER:
                self._send(ContextTree(name, (self._ctx_view(ctx, prefix),)))
            else:  # EMPTY or IDS: compare the ids themselves
                ours = {k for k, _ in ctx.tree.items_under(prefix)} if mine is not None \
                    and ctx is not None else set()
                lacking = sorted(set(theirs.ids) - ours)
                for start in range(0, len(lacking), MAX_IDS):
                    self._send(Want(name, tuple(lacking[start:start + MAX_IDS])))
                extra = ours - set(theirs.ids)
                if extra:
                    self._send_update(name, self.ledger.bundle_records(name, sorted(extra)))

    def _answer(self, context: str, state_vector: bytes | None) -> None:
        """Send what a peer with ``state_vector`` lacks of ``context`` now, or (paced) once the
        link has room: a later question about the same context replaces the one waiting (the
        answer is built from what is stored then, for the latest state vector)."""
        if self.local.paced:
            self._waiting[context] = state_vector
        else:
            self._send_diff(context, state_vector)

    def _send_diff(self, context: str, state_vector: bytes | None) -> None:
        """Send what a peer with ``state_vector`` lacks of ``context`` (``Ledger.bundle_diff``),
        flagged MORE when that is a part of it, and then at once the part after it (the diff
        for the state vector the peer will have after the first): one part stays ahead, so
        the sender builds the next part while the receiver applies one. A question for the
        state vector a part sent ahead answers is answered with the part after that one.

        why: with the parts one question apart, a fresh node took 100k × 100 B in 19-20 s
        against 15-17 s as one answer (the two ends' work serialized; load ~11 on 2 cores)."""
        ahead = self._ahead.pop(context, None)
        reaches: list[dict[int, int] | None] = []  # after each part sent ahead and now
        if ahead is not None and state_vector and \
                decode_state_vector(state_vector) == ahead[0]:
            if ahead[1] is None:
                return  # the part it asks for is on its way, and it is the last
            reaches.append(ahead[1])
            state_vector = encode_state_vector(ahead[1])
        while len(reaches) < 2:
            update = self.ledger.bundle_diff(context, state_vector)
            more = self.ledger.last_diff_partial
            self._send_update(context, update, more=more and self._peer_parts)
            if not more:
                reaches.append(None)
                break
            reaches.append(self.ledger.last_diff_reach)
            state_vector = encode_state_vector(self.ledger.last_diff_reach)
        if len(reaches) == 2 and reaches[0] is not None:
            self._ahead[context] = (reaches[0], reaches[1])

    def _send_update(self, context: str, update: bytes | None, pushed: bool = False,
                     own: bool = False, more: bool = False) -> None:
        """Send a bundle (a Yjs update and its signatures) in chunks; None is nothing to send."""
        if update is None:
            return
        self._next_transfer = self._next_transfer % 0xFFFFFFFF + 1  # 1, 2, … 2^32-1, 1, …
        total = len(update)
        chunk = self._chunk
        for offset in range(0, total, chunk):
            self._send(UpdateChunk(context, self._next_transfer, total, offset,
                                   update[offset:offset + chunk], pushed, own, more))

    def _on_chunk(self, msg: UpdateChunk) -> None:
        if msg.total > self.max_update_bytes:
            raise RemoteProtocolError(
                f"update of {msg.total} bytes for {msg.context} exceeds {self.max_update_bytes}")
        transfer = msg.transfer
        if transfer in self._done:
            return  # a late duplicate of a transfer already applied or given up (lossy links)
        assembly = self._assembly.get(transfer)
        if assembly is None:
            if msg.offset == 0 and len(msg.chunk) == msg.total:  # the whole update at once
                self._remember_done(transfer)
                self._apply(msg.context, msg.chunk, msg.pushed, msg.own, msg.more)
                return
            while len(self._assembly) >= MAX_ASSEMBLIES:
                # why: a transfer missing a lost chunk never finishes; the oldest goes, and
                # anti-entropy repairs whatever it carried.
                oldest = next(iter(self._assembly))
                self._assembly_bytes -= self._assembly.pop(oldest).received
                self._remember_done(oldest)
            assembly = self._assembly[transfer] = _Assembly(msg.context, msg.total, msg.pushed,
                                                            msg.own, msg.more)
        elif (assembly.context, assembly.total) != (msg.context, msg.total):
            raise RemoteProtocolError(f"chunks of transfer {transfer} disagree on context or size")
        if msg.offset in assembly.chunks:
            return  # a duplicate
        if self._assembly_bytes + len(msg.chunk) > self.max_update_bytes:
            raise RemoteProtocolError("too many unfinished update bytes from this peer")
        assembly.chunks[msg.offset] = msg.chunk
        assembly.received += len(msg.chunk)
        self._assembly_bytes += len(msg.chunk)
        if assembly.received < assembly.total:
            return
        del self._assembly[transfer]
        self._assembly_bytes -= assembly.received
        self._remember_done(transfer)
        update = b"".join(assembly.chunks[o] for o in sorted(assembly.chunks))
        if len(update) != assembly.total:
            raise RemoteProtocolError(f"update chunks for {msg.context} overlap")
        self._apply(msg.context, update, assembly.pushed, assembly.own, assembly.more)

    def _remember_done(self, transfer: int) -> None:
        self._done[transfer] = None
        if len(self._done) > DONE_MEMORY:
            self._done.popitem(last=False)  # (O(1): see node._remember_push)

    def _apply(self, context: str, update: bytes, pushed: bool = False,
               own: bool = False, more: bool = False) -> None:
        with _peer_at_fault():
            check_context(context)
            new = self.ledger.apply_remote(context, update)
        if more and self.ledger.last_update_took:
            # a part of an answer, taken: ask for the next one (the diff for our new state
            # vector). A part that brought nothing asks nothing: no loop with a peer that
            # sends the same part again, or lies; the next round asks anyway.
            self._send(Sync1(context, False, self.ledger.state_vector(context)))
        if new or (pushed and self.ledger.last_update_took):
            # (a push Yjs holds back, waiting for an earlier one, is new too: forwarding waits
            # for no one; without it, out-of-order pushes stopped at the first node they
            # reached early)
            self._events.append(EntriesReceived(context, new, update, pushed, own))
        elif pushed:
            self._events.append(DuplicatePush(context, update, own))

    def ask_missing(self, context: str) -> None:
        """Ask the peer at once for what we lack in ``context`` (SYNC1 without reply), at
        most once per state vector of ours and round: the node calls it when a fresh push
        brought nothing, which means either that anti-entropy was faster or that Yjs could
        not take it (an earlier update of its writer never reached us: a push lost, or cut
        off on its way)."""
        ctx = self.ledger.contexts.get(context)
        sv = ctx.state_vector() if ctx is not None else EMPTY_STATE_VECTOR
        if self.is_open and self._gaps.get(context) != (sv, self._round):
            self._gaps[context] = (sv, self._round)
            self._send(Sync1(context, False, sv))

    def announce(self, digests: tuple[bytes, ...]) -> None:
        """Lazy push (Plumtree's IHAVE): tell the peer which recent pushed updates we hold, by
        digest, in frames of at most MAX_DIGESTS."""
        if self.is_open:
            for start in range(0, len(digests), MAX_DIGESTS):
                self._send(IHave(digests[start:start + MAX_DIGESTS]))

    def graft(self, digests: tuple[bytes, ...]) -> None:
        """Ask the peer for these updates it announced: they did not come by push in time, so
        our eager path for their origins is broken (the peer forwards their origins' pushes to
        us again). No digests: ask it to forward every origin's pushes to us again."""
        if self.is_open:
            if not digests:
                self.lazy_all_theirs = False
            for start in range(0, max(len(digests), 1), MAX_DIGESTS):
                self._send(Graft(digests[start:start + MAX_DIGESTS]))

    def prune(self, origin: bytes, tell: bool = False) -> None:
        """Stop forwarding ``origin``'s pushes to the peer (it gets them another way); with
        ``tell``, also ask the peer to stop forwarding them to us (PRUNE naming it)."""
        if self.is_open:
            self._set(origin, False)
            if tell:
                self._send(Prune(origin))

    def prune_all(self) -> None:
        """Ask the peer to forward us no pushes of origins it has no word about from us (an
        empty PRUNE; ours to it stay as they are)."""
        if self.is_open and not self.lazy_all_theirs:
            self.lazy_all_theirs = True
            self._send(Prune())

    def eager_for(self, origin: bytes, direct: bool = True) -> bool:
        """Whether we forward ``origin``'s pushes to the peer; ``direct``: one that came to us
        straight from its origin (the link's default covers only those)."""
        return self.per_origin.get(origin, not (self.lazy_all and direct))

    def unprune(self, origin: bytes) -> None:
        """Forward ``origin``'s pushes to the peer again (it asked: GRAFT)."""
        self._set(origin, True)

    @property
    def eager(self) -> bool:
        """Whether we forward every origin's pushes to the peer."""
        return not self.lazy_all and all(self.per_origin.values())

    @eager.setter
    def eager(self, value: bool) -> None:
        self.per_origin.clear()
        self.lazy_all = not value

    def _set(self, origin: bytes, forward: bool) -> None:
        self.per_origin.pop(origin, None)
        self.per_origin[origin] = forward
        if len(self.per_origin) > MAX_PRUNED:
            self.per_origin.popitem(last=False)


@contextmanager
def _peer_at_fault() -> Iterator[None]:
    """Run a check of what the peer sent: an error we would blame on local input (a bad context
    name, node id, ...) or on our own state is the peer's fault here, so it becomes a
    RemoteProtocolError (the link closes, nothing is stored); integrity errors stay as they are."""
    try:
        yield
    except (RemoteProtocolError, IntegrityError):
        raise
    except LocalInputError as exc:
        raise RemoteProtocolError(str(exc)) from None
    except LedgerError as exc:
        raise RemoteProtocolError(f"{type(exc).__name__}: {exc}") from None


def _disjoint(views: Iterable[View]) -> None:
    # why: an EMPTY view asks for everything under its prefix; repeated or nested prefixes in
    # one frame made us build many copies of the ledger (604 B in, 303 MB out) inside one
    # receive(). Honest VIEWS (and CTREEs) hold disjoint prefixes.
    prefixes = sorted(v.prefix for v in views)
    for p, q in zip(prefixes, prefixes[1:], strict=False):
        if q[:len(p)] == p:
            raise RemoteProtocolError(f"views overlap at prefix {list(p)}")


def _short_sv(sv: bytes) -> bytes:
    return sv if len(sv) <= MAX_SV_IN_VIEW else b""
