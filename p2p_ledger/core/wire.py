"""Peer-protocol messages and their binary codec.

Every frame is ``u8 WIRE_VERSION | u8 type | body`` and at most ``MAX_FRAME`` bytes (an UPDATE up
to ``LARGE_FRAME`` to a peer whose HELLO has ``FLAG_LARGE_FRAMES``). Integers are
big-endian; ``str`` is ``u16 len + UTF-8``; ``blob`` is ``u32 len + bytes``. Decoding is strict:
anything malformed, truncated, oversized or with trailing bytes raises RemoteProtocolError.

| type | name    | body                                                                      |
|------|---------|---------------------------------------------------------------------------|
| 1    | HELLO   | u16 protocol | str cluster | str label | str url | 16B nonce | u8 flags    |
|      |         | | 16B node root (truncated) | 32B origin (the node's Ed25519 public key) |
|      |         | flags: 1 = has a cluster key, 2 = takes UPDATE frames up to LARGE_FRAME,  |
|      |         | 4 = asks for the rest of an answer in parts (UPDATE flag 4)               |
| 2    | AUTH    | 64B Ed25519 signature by the origin's key over the link transcript       |
|      |         | (core/identity.py: ``link_transcript``) | u8 n (0, or 32 with a cluster  |
|      |         | key) | n B HMAC-SHA256(cluster key, "p2p-ledger-auth v7" + transcript)   |
| 3    | PEERS   | u16 n ≤ 64 × (32B origin, str label, str url)                             |
| 4    | ROOT    | u8 flags (1 reply, 2 view follows) | request: 16B node root, [top view] |
| 5    | VIEWS   | u16 n × view (see below)                                                  |
| 6    | SYNC1   | str context | u8 want_reply | blob Yjs state vector                       |
| 7    | UPDATE  | str context | u32 transfer | u32 total | u32 offset | blob chunk (≤ CHUNK B, |
|      |         | ≤ LARGE_CHUNK to a peer that takes large frames)                          |
|      |         | | u8 flags (1 = pushed: a fresh update, forwarded epidemically; 3 = |
|      |         | pushed by its origin: the sender's own append, sent on all its links; 4 = |
|      |         | an answer that stops short: ask again (SYNC1) for the rest)               |
| 8    | FLOW    | u64 bytes received so far (transport flow control, never reaches the core) |
| 9    | BYE     | str reason                                                                |
| 10   | CTREE   | str context | u16 n × view of the context's tree of entry ids           |
| 11   | WANT    | str context | u16 n ≤ MAX_IDS × 32B entry id                             |
| 12   | PRUNE   | u8 n ≤ 1 × 32B origin: stop forwarding that origin's pushed updates to me |
|      |         | (copies came); n = 0: those of origins I said nothing about               |
| 13   | GRAFT   | u16 n ≤ MAX_DIGESTS × 16B update digest: push me these recent updates and |
|      |         | forward their origins' pushes to me again (n = 0: every origin's)         |
| 14   | IHAVE   | u16 n ≤ MAX_DIGESTS × 16B update digest: recent pushed updates I hold     |
|      |         | (sent on lazy links; a GRAFT asks for any that do not come)               |

A view describes the node-level tree at a prefix: ``u8 depth | depth × u8 nibble | u8 kind``
then kind 0 EMPTY: nothing; kind 1 INNER: u16 bitmap of present children + 16B truncated digest
per present child; kind 2 ITEMS: u16 n × (str context, 16B truncated context root, u8 len +
that many bytes of the context's Yjs state vector: 0 = omitted, it is longer than MAX_SV_IN_VIEW).
CTREE views describe one context's tree of entry ids the same way, with kind 3 IDS (u16 n ≤
MAX_IDS × 32B entry id) at its leaves: when two nodes' Yjs state vectors agree but their roots do
not (a position squatted by a hostile member), the missing entries are found by id and asked
for with WANT; the answer is an UPDATE whose bundle carries the records (see core/bundle.py).

A ROOT that starts a round carries the starter's node root truncated to 16 bytes (like every
digest on the wire) and may carry its view of the top of its tree (flag 2) when the starter
already knows the roots differ: the peer then answers with the next level at once. A ROOT reply
(flag 1) is the whole body: it means "equal to the root you sent" (a differing root is answered
with VIEWS), so an in-sync round is 19 + 3 bytes. HELLO carries the sender's root too, so the
first round on a fresh link already knows whether the roots differ.

An UPDATE's ``transfer`` numbers the sender's updates on one link (a counter per session, from
1, wrapping at 2^32): every chunk of one update carries the same id, so the receiver reassembles
by transfer id and chunks of two updates can never be mixed, however they are interleaved.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ProtocolMismatch, RemoteProtocolError
from .reader import Reader

WIRE_VERSION = 1
PROTOCOL_VERSION = 9  # 2: UPDATE carries a transfer id; 3: ROOT may carry a view, ITEMS carry
# state vectors; 4: UPDATE carries a signed bundle (entry encoding v2), CTREE and WANT;
# 5: ROOT carries a 16-byte root, its reply none; HELLO carries the root; UPDATE carries a
# pushed flag; PRUNE and GRAFT (epidemic forwarding); 6: IHAVE, GRAFT carries digests,
# UPDATE flags say a push came from its origin; 7: PRUNE names an origin (a tree per origin);
# 8: HELLO carries the origin (public key), AUTH always proves it (Ed25519, plus the cluster
# key's HMAC), PEERS name origins: links are keyed by origin and the node id is only a label;
# 9: bundles of format 2 (one signature per commit: each head carries its path to the root)
MAX_FRAME = 64 * 1024  # every frame every peer takes
# An UPDATE frame may be up to LARGE_FRAME bytes to a peer whose HELLO carries
# FLAG_LARGE_FRAMES (older peers never set it and get MAX_FRAME frames). why: a frame costs both
# ends a fixed amount of work (parse, wake-ups, a FLOW, reassembly copies): 100 MB in 1 MiB
# frames cost PeerLink's receiver 0.21 CPU-s against 0.30 in 64 KiB ones (two processes); a
# node catching up 1,000 x 100 KB, sender 0.50 / receiver 1.23 CPU-s against 0.77 / 1.54
# (ARCHITECTURE.md, "Large frames, negotiated").
LARGE_FRAME = 1024 * 1024
# Update bytes per UPDATE frame: the rest of the frame holds its header (a context name is at
# most 128 bytes).
CHUNK = MAX_FRAME - 1024
LARGE_CHUNK = LARGE_FRAME - 1024
DIGEST_PREFIX = 16  # digests travel truncated to 16 bytes (roots and children alike)
NONCE_SIZE = 16
KEY_SIZE = 32  # an origin: an Ed25519 public key
SIG_SIZE = 64  # an Ed25519 signature
MAC_SIZE = 32  # HMAC-SHA256
MAX_SV_IN_VIEW = 255  # longer state vectors are left out of ITEMS views (a SYNC1 asks for them)
ROOT_REPLY, ROOT_VIEW = 1, 2  # ROOT flags
MAX_PEERS_PER_FRAME = 64  # a PEERS frame with more is a protocol error (a peer list is a hint)
FLAG_AUTH = 1  # HELLO flags: the sender has a cluster key
# HELLO flags: the sender takes UPDATE frames up to LARGE_FRAME once it has sent its AUTH (a
# peer that does not set it gets MAX_FRAME frames)
FLAG_LARGE_FRAMES = 2
# HELLO flags: the sender asks for the rest of an answer flagged UPDATE_MORE (a peer that does
# not set it gets the parts unflagged and asks for the rest in its next round)
FLAG_PARTS = 4
MAX_IDS = 1024  # entry ids in one IDS view or WANT (32 KiB)
MAX_DIGESTS = 1024  # update digests in one IHAVE or GRAFT (16 KiB)
ORIGIN_SIZE = 32  # an origin (Ed25519 public key) in a PRUNE

(HELLO, AUTH, PEERS, ROOT, VIEWS, SYNC1, UPDATE, FLOW, BYE, CTREE, WANT, PRUNE, GRAFT,
 IHAVE) = range(1, 15)
NAMES = {HELLO: "HELLO", AUTH: "AUTH", PEERS: "PEERS", ROOT: "ROOT", VIEWS: "VIEWS",
         SYNC1: "SYNC1", UPDATE: "UPDATE", FLOW: "FLOW", BYE: "BYE", CTREE: "CTREE",
         WANT: "WANT", PRUNE: "PRUNE", GRAFT: "GRAFT", IHAVE: "IHAVE"}
UPDATE_PUSHED, UPDATE_OWN, UPDATE_MORE = 1, 2, 4  # UPDATE flags (OWN only with PUSHED, MORE
# only without)
EMPTY, INNER, ITEMS, IDS = 0, 1, 2, 3


@dataclass(frozen=True)
class Hello:
    protocol: int
    cluster: str
    node_id: str  # the sender's label (only shown: two nodes may share one)
    url: str
    nonce: bytes
    flags: int
    root: bytes = bytes(DIGEST_PREFIX)  # the sender's node root, truncated
    origin: bytes = bytes(KEY_SIZE)  # the sender's Ed25519 public key: who it is


@dataclass(frozen=True)
class Auth:
    signature: bytes  # the origin's key over the link transcript
    mac: bytes = b""  # proof of the cluster key (empty without one)


@dataclass(frozen=True)
class Peers:
    peers: tuple[tuple[bytes, str, str], ...]  # (origin, label, url)


@dataclass(frozen=True)
class Root:
    is_reply: bool
    root: bytes = b""  # a request's truncated node root; a reply carries none (b"")
    view: View | None = None  # a round starter's view of its top (never on a reply)


@dataclass(frozen=True)
class View:
    prefix: tuple[int, ...]
    kind: int
    children: tuple[bytes | None, ...] = ()  # INNER: 16 slots, truncated digests
    items: tuple[tuple[str, bytes], ...] = ()  # ITEMS: (context, truncated root)
    # ITEMS: the contexts' Yjs state vectors, parallel to items; b"" (or missing) = omitted
    states: tuple[bytes, ...] = ()
    ids: tuple[bytes, ...] = ()  # IDS (a context's tree): the entry ids under the prefix


@dataclass(frozen=True)
class ContextTree:
    """Views of one context's tree of entry ids (finding entries by id)."""

    context: str
    views: tuple[View, ...]


@dataclass(frozen=True)
class Want:
    """Send me these entries of this context (by id)."""

    context: str
    ids: tuple[bytes, ...]


@dataclass(frozen=True)
class Views:
    views: tuple[View, ...]


@dataclass(frozen=True)
class Sync1:
    context: str
    want_reply: bool
    state_vector: bytes


@dataclass(frozen=True)
class UpdateChunk:
    context: str
    transfer: int  # sender's id of this update on this link; the same for all its chunks
    total: int
    offset: int
    chunk: bytes
    pushed: bool = False  # a fresh update (a local append or a forward), not an answer
    own: bool = False  # pushed by its origin (a local append: it went to every link)
    more: bool = False  # an answer that stops short: the receiver asks again for the rest


@dataclass(frozen=True)
class Flow:
    received: int


@dataclass(frozen=True)
class Bye:
    reason: str


@dataclass(frozen=True)
class Prune:
    """Stop forwarding pushed updates of ``origin`` (a 32-byte public key) to me on this link
    (one came twice); None: of every origin."""

    origin: bytes | None = None


@dataclass(frozen=True)
class Graft:
    """Push me these recent updates (by digest: an IHAVE announced them and they did not come
    by push in time) and forward their origins' pushes to me again; none: every origin's."""

    digests: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class IHave:
    """Recent pushed updates the sender holds (by digest), announced on a link that is not
    eager (Plumtree's lazy push)."""

    digests: tuple[bytes, ...]


Message = (Hello | Auth | Peers | Root | Views | Sync1 | UpdateChunk | Flow | Bye | ContextTree
           | Want | Prune | Graft | IHave)

_U16, _U32, _U64 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


def _s(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("string too long for the wire")
    return _U16.pack(len(raw)) + raw


def _blob(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _digest(root: bytes) -> bytes:
    """A root on the wire: a node root truncated to DIGEST_PREFIX bytes by the caller."""
    if len(root) != DIGEST_PREFIX:
        raise ValueError(f"a root on the wire has {DIGEST_PREFIX} bytes, got {len(root)}")
    return root


def _view(v: View) -> bytes:
    out = [bytes([len(v.prefix)]), bytes(v.prefix), bytes([v.kind])]
    if v.kind == INNER:
        bitmap = sum(1 << i for i, d in enumerate(v.children) if d is not None)
        out.append(_U16.pack(bitmap))
        out += [d[:DIGEST_PREFIX] for d in v.children if d is not None]
    elif v.kind == ITEMS:
        out.append(_U16.pack(len(v.items)))
        for i, (name, root) in enumerate(v.items):
            sv = v.states[i] if i < len(v.states) else b""
            if len(sv) > MAX_SV_IN_VIEW:
                sv = b""
            out += [_s(name), root[:DIGEST_PREFIX], bytes([len(sv)]), sv]
    elif v.kind == IDS:
        out += [_U16.pack(len(v.ids)), *v.ids]
    return b"".join(out)


def _ids(ids: tuple[bytes, ...]) -> bytes:
    if len(ids) > MAX_IDS or any(len(i) != 32 for i in ids):
        raise ValueError(f"at most {MAX_IDS} ids of 32 bytes")
    return _U16.pack(len(ids)) + b"".join(ids)


def _key(origin: bytes) -> bytes:
    if len(origin) != KEY_SIZE:
        raise ValueError(f"an origin on the wire has {KEY_SIZE} bytes, got {len(origin)}")
    return origin


def _digests(digests: tuple[bytes, ...]) -> bytes:
    if len(digests) > MAX_DIGESTS or any(len(d) != DIGEST_PREFIX for d in digests):
        raise ValueError(f"at most {MAX_DIGESTS} digests of {DIGEST_PREFIX} bytes")
    return _U16.pack(len(digests)) + b"".join(digests)


def encode(msg: Message) -> bytes:
    """One frame for one message."""
    if isinstance(msg, Hello):
        t, body = HELLO, b"".join([_U16.pack(msg.protocol), _s(msg.cluster), _s(msg.node_id),
                                   _s(msg.url), msg.nonce, bytes([msg.flags]),
                                   _digest(msg.root), _key(msg.origin)])
    elif isinstance(msg, Auth):
        if len(msg.signature) != SIG_SIZE or len(msg.mac) not in (0, MAC_SIZE):
            raise ValueError(f"AUTH is a {SIG_SIZE}-byte signature and a {MAC_SIZE}-byte MAC "
                             "or none")
        t, body = AUTH, msg.signature + bytes([len(msg.mac)]) + msg.mac
    elif isinstance(msg, Peers):
        if len(msg.peers) > MAX_PEERS_PER_FRAME:
            raise ValueError(f"PEERS of {len(msg.peers)} entries (at most {MAX_PEERS_PER_FRAME})")
        t, body = PEERS, _U16.pack(len(msg.peers)) + b"".join(
            _key(o) + _s(n) + _s(u) for o, n, u in msg.peers)
    elif isinstance(msg, Root):
        if msg.view is not None and msg.is_reply:
            raise ValueError("a ROOT reply carries no view")
        flags = (ROOT_REPLY if msg.is_reply else 0) | (ROOT_VIEW if msg.view is not None else 0)
        root = b"" if msg.is_reply else _digest(msg.root)
        t, body = ROOT, bytes([flags]) + root + (b"" if msg.view is None else _view(msg.view))
    elif isinstance(msg, Views):
        t, body = VIEWS, _U16.pack(len(msg.views)) + b"".join(_view(v) for v in msg.views)
    elif isinstance(msg, Sync1):
        t, body = SYNC1, _s(msg.context) + bytes([msg.want_reply]) + _blob(msg.state_vector)
    elif isinstance(msg, UpdateChunk):
        t, body = UPDATE, b"".join([_s(msg.context), _U32.pack(msg.transfer),
                                    _U32.pack(msg.total), _U32.pack(msg.offset), _blob(msg.chunk),
                                    bytes([(UPDATE_PUSHED if msg.pushed else 0)
                                           | (UPDATE_OWN if msg.pushed and msg.own else 0)
                                           | (UPDATE_MORE if msg.more and not msg.pushed
                                              else 0)])])
    elif isinstance(msg, Flow):
        t, body = FLOW, _U64.pack(msg.received)
    elif isinstance(msg, Bye):
        t, body = BYE, _s(msg.reason[:1000])
    elif isinstance(msg, ContextTree):
        t, body = CTREE, (_s(msg.context) + _U16.pack(len(msg.views))
                          + b"".join(_view(v) for v in msg.views))
    elif isinstance(msg, Want):
        t, body = WANT, _s(msg.context) + _ids(msg.ids)
    elif isinstance(msg, Prune):
        if msg.origin is not None and len(msg.origin) != ORIGIN_SIZE:
            raise ValueError(f"a PRUNE names a {ORIGIN_SIZE}-byte origin")
        t, body = PRUNE, bytes([1]) + msg.origin if msg.origin is not None else bytes([0])
    elif isinstance(msg, Graft):
        t, body = GRAFT, _digests(msg.digests)
    elif isinstance(msg, IHave):
        t, body = IHAVE, _digests(msg.digests)
    else:  # pragma: no cover - the Union is closed
        raise TypeError(msg)
    frame = bytes([WIRE_VERSION, t]) + body
    if len(frame) > _limit(t):
        raise ValueError(f"{NAMES[t]} frame of {len(frame)} bytes exceeds {_limit(t)}")
    return frame


def _limit(frame_type: int) -> int:
    """The largest frame of a type: LARGE_FRAME for UPDATE (only to peers that said they take
    it, FLAG_LARGE_FRAMES), MAX_FRAME for every other."""
    return LARGE_FRAME if frame_type == UPDATE else MAX_FRAME


class _Reader(Reader):
    """A frame's fields: a short read or a bad field is the peer's fault."""

    __slots__ = ()

    def __init__(self, frame: bytes) -> None:
        super().__init__(frame, RemoteProtocolError, "frame")

    def s(self) -> str:
        try:
            return self.take(self.u16()).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("string is not UTF-8") from None

    def blob(self) -> bytes:
        return self.take(self.u32())

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise RemoteProtocolError(f"flag byte {value} is not 0 or 1")
        return value == 1


def _read_ids(r: _Reader) -> tuple[bytes, ...]:
    n = r.u16()
    if n > MAX_IDS:
        raise RemoteProtocolError(f"{n} entry ids in one message; the limit is {MAX_IDS}")
    return tuple(r.take(32) for _ in range(n))


def _read_digests(r: _Reader) -> tuple[bytes, ...]:
    n = r.u16()
    if n > MAX_DIGESTS:
        raise RemoteProtocolError(f"{n} update digests in one message; the limit is {MAX_DIGESTS}")
    return tuple(r.take(DIGEST_PREFIX) for _ in range(n))


def _read_view(r: _Reader, tree: bool = False) -> View:
    """A view of the node-level tree, or (``tree``) of one context's tree of entry ids."""
    depth = r.u8()
    if depth > 64:
        raise RemoteProtocolError(f"view depth {depth} exceeds 64 nibbles")
    prefix = tuple(r.take(depth))
    if any(n > 15 for n in prefix):
        raise RemoteProtocolError("view prefix holds a value that is not a nibble")
    kind = r.u8()
    if kind == EMPTY:
        return View(prefix, EMPTY)
    if kind == INNER:
        bitmap = r.u16()
        children = tuple(r.take(DIGEST_PREFIX) if bitmap >> i & 1 else None for i in range(16))
        return View(prefix, INNER, children=children)
    if kind == IDS and tree:
        return View(prefix, IDS, ids=_read_ids(r))
    if kind == ITEMS and not tree:
        items, states = [], []
        for _ in range(r.u16()):
            items.append((r.s(), r.take(DIGEST_PREFIX)))
            size = r.u8()
            if size > MAX_SV_IN_VIEW:
                raise RemoteProtocolError(f"state vector of {size} bytes in a view")
            states.append(r.take(size))
        return View(prefix, ITEMS, items=tuple(items), states=tuple(states) if any(states) else ())
    raise RemoteProtocolError(f"unknown view kind {kind}")


def decode(frame: bytes) -> Message:
    """Parse one frame; RemoteProtocolError for anything that is not exactly one valid message."""
    if not isinstance(frame, (bytes, bytearray)):
        raise RemoteProtocolError("peer frames are binary")
    if len(frame) < 2:
        raise RemoteProtocolError("frame shorter than its header")
    if len(frame) > _limit(frame[1]):
        raise RemoteProtocolError(f"frame of {len(frame)} bytes exceeds {_limit(frame[1])}")
    if frame[0] != WIRE_VERSION:
        raise RemoteProtocolError(f"unsupported wire version {frame[0]} (we speak {WIRE_VERSION})")
    r = _Reader(bytes(frame))
    r.pos = 2
    t = frame[1]
    msg: Message
    if t == HELLO:
        protocol = r.u16()
        if protocol != PROTOCOL_VERSION:
            # why: another version's HELLO may have other fields; what matters is the version,
            # refused by name here rather than as "truncated" or "trailing bytes" below
            raise ProtocolMismatch(f"peer speaks protocol {protocol}, we speak "
                                   f"{PROTOCOL_VERSION}")
        msg = Hello(protocol, r.s(), r.s(), r.s(), r.take(NONCE_SIZE), r.u8(),
                    r.take(DIGEST_PREFIX), r.take(KEY_SIZE))
    elif t == AUTH:
        signature, size = r.take(SIG_SIZE), r.u8()
        if size not in (0, MAC_SIZE):
            raise RemoteProtocolError(f"AUTH carries a MAC of {size} bytes (0 or {MAC_SIZE})")
        msg = Auth(signature, r.take(size))
    elif t == PEERS:
        count = r.u16()
        if count > MAX_PEERS_PER_FRAME:
            raise RemoteProtocolError(f"PEERS of {count} entries (at most {MAX_PEERS_PER_FRAME})")
        msg = Peers(tuple((r.take(KEY_SIZE), r.s(), r.s()) for _ in range(count)))
    elif t == ROOT:
        flags = r.u8()
        if flags not in (0, ROOT_REPLY, ROOT_VIEW):
            raise RemoteProtocolError(f"ROOT flags {flags} are not 0, 1 or 2")
        if flags == ROOT_REPLY:
            msg = Root(True)
        else:
            root = r.take(DIGEST_PREFIX)
            msg = Root(False, root, _read_view(r) if flags == ROOT_VIEW else None)
    elif t == VIEWS:
        msg = Views(tuple(_read_view(r) for _ in range(r.u16())))
    elif t == SYNC1:
        msg = Sync1(r.s(), r.flag(), r.blob())
    elif t == UPDATE:
        context, transfer, total, offset, chunk = r.s(), r.u32(), r.u32(), r.u32(), r.blob()
        if offset + len(chunk) > total or (not chunk and total):
            raise RemoteProtocolError(f"update chunk {offset}+{len(chunk)} outside {total}")
        flags = r.u8()
        if flags not in (0, UPDATE_PUSHED, UPDATE_PUSHED | UPDATE_OWN, UPDATE_MORE):
            raise RemoteProtocolError(f"UPDATE flags {flags} are not 0, 1, 3 or 4")
        msg = UpdateChunk(context, transfer, total, offset, chunk, flags & UPDATE_PUSHED != 0,
                          flags & UPDATE_OWN != 0, flags == UPDATE_MORE)
    elif t == FLOW:
        msg = Flow(r.u64())
    elif t == BYE:
        msg = Bye(r.s())
    elif t == CTREE:
        context = r.s()
        msg = ContextTree(context, tuple(_read_view(r, tree=True) for _ in range(r.u16())))
    elif t == WANT:
        msg = Want(r.s(), _read_ids(r))
    elif t == PRUNE:
        n = r.u8()
        if n > 1:
            raise RemoteProtocolError(f"a PRUNE names {n} origins; at most 1")
        msg = Prune(r.take(ORIGIN_SIZE) if n else None)
    elif t == GRAFT:
        msg = Graft(_read_digests(r))
    elif t == IHAVE:
        msg = IHave(_read_digests(r))
    else:
        raise RemoteProtocolError(f"unknown message type {t}")
    if r.pos != len(frame):
        raise RemoteProtocolError(f"{len(frame) - r.pos} trailing bytes after {NAMES[t]}")
    return msg
