"""A hostile cluster member's weapons: the bundles a byzantine node sends its peers.

Theory of operation
-------------------
A byzantine member passed the cluster key and holds its own Ed25519 key, nothing else. It sees
everything on the wire: other origins (public keys), their writer chains and seqs, the Yjs
client ids and clocks in SYNC1 and ITEMS. The simulator lets it read those from the honest
ledgers directly (what it would have learned by listening) and builds, from real entries,
real signatures and real Yjs updates, one of four attacks (issue 8, defects 1, 2 and 4, and
forks):

``forge``
    an entry under another node's ``origin``, at that node's next seq of its current chain,
    with a head that claims the victim's key but carries the attacker's signature. Every
    honest node must refuse it (``ForgedEntry``): not stored, not spread.
``squat``
    a valid entry of the attacker's own, put in a Yjs item at the victim's Yjs client id and
    the next clock the target holds of it: the target's Doc then ignores the victim's real
    item at that position as already known. Convergence must not depend on Yjs positions.
``lamport``
    a valid entry of the attacker's with a Lamport time of ``2^64-1`` (``overflow``),
    ``MAX_LAMPORT + 1`` (``above``: both refused, ``LamportOutOfRange``) or exactly
    ``MAX_LAMPORT`` (``max``: accepted; every clock saturates and appends must go on).
``equivocate``
    two different entries signed for the same positions of the attacker's own current chain
    (its next two seqs), one branch to one target and one to another: a fork, which every
    honest node keeps, orders and reports identically.

Everything random is drawn from the caller's generator, so a run stays a function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pycrdt import Array, Doc, merge_updates

from ..core.bundle import decode_bundle, encode_bundle
from ..core.context_log import ARRAY_NAME, client_id_for
from ..core.entry import MAX_LAMPORT, NO_PREV, Entry, make_entry
from ..core.identity import Head, Identity
from ..core.ledger import Ledger

ATTACKS = ("forge", "squat", "lamport", "equivocate")
LAMPORTS = {"overflow": 2**64 - 1, "above": MAX_LAMPORT + 1, "max": MAX_LAMPORT}


def signed_chain(
    identity: Identity, context: str, lamports: Sequence[int], chain: int, payload: bytes,
    now_ns: int, first_seq: int = 1, prev: bytes = NO_PREV,
) -> tuple[list[Entry], Head]:
    """Entries ``first_seq``, ``first_seq + 1``... of ``identity``'s chain ``chain`` with the
    given Lamport times, each naming the one before as ``prev``, and the signed head of the
    last."""
    out = []
    for i, lamport in enumerate(lamports):
        seq = first_seq + i
        entry = make_entry(context, "byzantine", payload + b".%d" % seq, {}, lamport,
                           identity.origin, chain, seq, now_ns, prev)
        prev = bytes.fromhex(entry.id)
        out.append(entry)
    return out, identity.sign_head(context, chain, out[-1].seq, prev)


def yjs_append(records: Sequence[bytes], client_id: int, base: bytes | None = None) -> bytes:
    """A Yjs update appending ``records`` to the entries array as client ``client_id``, on top
    of a doc holding ``base`` (so the items follow what the receiver holds and take the next
    clocks of ``client_id`` in it)."""
    doc: Doc[Any] = Doc(client_id=client_id)
    if base is not None:
        doc.apply_update(base)
    before = doc.get_state()
    doc.get(ARRAY_NAME, type=Array).extend(list(records))
    return doc.get_update(before)


def _state(ledger: Ledger, context: str) -> bytes | None:
    """Everything ``ledger`` holds of ``context``, as one Yjs update (its stored rows: what
    its Doc would hold, without making one)."""
    if ledger.contexts.get(context) is None:  # (commits what it staged there, as a read does)
        return None
    rows = [decode_bundle(blob).update for blob in ledger.storage.iter_context(context)]
    return merge_updates(*rows) if rows else None


def _stranger(rng: random.Random) -> int:
    return rng.randrange(1 << 20, 1 << 32)  # a Yjs client id of nobody's


def _lamport(target: Ledger) -> int:
    return min(target.clock.time + 1, MAX_LAMPORT)


def forge(attacker: Identity, victim: Ledger, target: Ledger, context: str,
          rng: random.Random, now_ns: int) -> bytes:
    """An entry in ``victim``'s name at its next seq, "signed" with the attacker's key."""
    writer = victim.writer(context)
    chain = int(writer.split(".")[1], 16)
    ctx = victim.contexts.get(context)
    seq = ctx.max_seq(writer) if ctx is not None else 0
    last = ctx.entry_at(writer, seq) if ctx is not None else None
    entry = make_entry(context, "forged", b"in the name of %s" % victim.node_id.encode(), {},
                       _lamport(target), victim.origin, chain, seq + 1, now_ns,
                       bytes.fromhex(last.id) if last is not None else NO_PREV)
    own = attacker.sign_head(context, chain, entry.seq, bytes.fromhex(entry.id))
    claimed = Head(bytes.fromhex(victim.origin), chain, entry.seq, own.entry_id, own.signature)
    return encode_bundle((claimed,), yjs_append([entry.record], _stranger(rng),
                                                _state(target, context)))


def squat(attacker: Identity, victim: Ledger, target: Ledger, context: str,
          rng: random.Random, now_ns: int) -> bytes:
    """A valid entry of the attacker's at ``victim``'s Yjs client id and the next clock of it
    that ``target`` holds."""
    ctx = victim.contexts.get(context)
    client = ctx.client_id if ctx is not None else client_id_for(victim.instance, context)
    entries, head = signed_chain(attacker, context, [_lamport(target)], rng.getrandbits(63),
                                 b"squatting", now_ns)
    return encode_bundle((head,), yjs_append([entries[0].record], client,
                                             _state(target, context)))


def poison_lamport(attacker: Identity, target: Ledger, context: str, lamport: int,
                   rng: random.Random, now_ns: int) -> bytes:
    """A valid entry of the attacker's with Lamport time ``lamport``."""
    entries, head = signed_chain(attacker, context, [lamport], rng.getrandbits(63),
                                 b"poison", now_ns)
    return encode_bundle((head,), yjs_append([entries[0].record], _stranger(rng),
                                             _state(target, context)))


def equivocate(attacker: Ledger, targets: Sequence[Ledger], context: str,
               rng: random.Random, now_ns: int) -> list[bytes]:
    """Two branches (two entries each) signed for the attacker's next two seqs of its current
    chain in ``context``: one bundle per target, alternating branches (a lone target gets
    both, one after the other)."""
    writer = attacker.writer(context)
    chain = int(writer.split(".")[1], 16)
    ctx = attacker.contexts.get(context)
    seq = ctx.max_seq(writer) if ctx is not None else 0
    last = ctx.entry_at(writer, seq) if ctx is not None else None
    prev = bytes.fromhex(last.id) if last is not None else NO_PREV
    branches = []
    for side in (b"left", b"right"):
        lamport = max((_lamport(t) for t in targets), default=1)
        branches.append(signed_chain(attacker.identity, context, [lamport, lamport + 1
                                     if lamport < MAX_LAMPORT else lamport], chain,
                                     b"equivocating " + side, now_ns, seq + 1, prev))
    out = []
    for i, target in enumerate(targets if len(targets) > 1 else [targets[0], targets[0]]):
        entries, head = branches[i % 2]
        out.append(encode_bundle((head,), yjs_append([e.record for e in entries],
                                                     _stranger(rng), _state(target, context))))
    return out
