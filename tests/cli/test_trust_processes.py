"""Issue 8's defects 1-4 against real ``p2p-ledger node`` processes (regression tests).

Each one was first reproduced against real processes; the ledger-level tests are in
``tests/core/test_trust.py``, the simulated ones in ``tests/sim/test_byzantine.py``. A hostile
member is played by hand: a ``PeerSession`` on an empty ledger over a real websocket
(``testing.open_raw_peer``), holding only its own key, sending bundles built by the simulator's
``sim/byzantine.py`` from real entries and signatures. Every wait is a bounded poll of the
nodes' API or a deadline on the websocket.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from websockets.exceptions import ConnectionClosed

from p2p_ledger.core.bundle import encode_bundle
from p2p_ledger.core.entry import MAX_LAMPORT, make_entry
from p2p_ledger.core.identity import Head, Identity
from p2p_ledger.core.merkle import MerkleTree
from p2p_ledger.core.protocol import PeerSession
from p2p_ledger.core.snapshot import encode_snapshot
from p2p_ledger.core.yjs import decode_state_vector
from p2p_ledger.sim.byzantine import signed_chain, yjs_append
from p2p_ledger.testing import open_raw_peer
from p2p_ledger.trio.transport import Connection, dial

from .conftest import ROOT, NodeProc, Procs, _env, assert_one_line_error, json_lines, ok, run

pytestmark = pytest.mark.slow
MALLORY = Identity.from_seed("mallory")
NOW_NS = 1_800_000_000 * 10**9
DEADLINE = 30.0


# ---- helpers ---------------------------------------------------------------------------------

def _as_member(url: str, until: Callable[[PeerSession], bool],
               act: Callable[[PeerSession], None] | None = None) -> PeerSession:
    """Join ``url`` as the member "mallory", run ``act`` once the link is open, then move frames
    (asking for a round whenever the link is quiet for 0.3 s) until ``until(session)`` holds or
    the node closes the link; returns the session (``close_reason`` says why it ended)."""

    async def main() -> PeerSession:
        async with dial(url, timeout=10) as ws:
            session = await open_raw_peer(ws, "mallory")
            if act is not None:
                act(session)
            with trio.fail_after(DEADLINE):
                while True:
                    try:
                        for frame in session.take_output():
                            await ws.send(frame)
                    except ConnectionClosed:
                        # The node closed first: what it sent before (its BYE, if any) may
                        # still wait in the connection's queue of received messages.
                        await _take_the_rest(ws, session)
                        break
                    if until(session) or session.close_reason is not None:
                        break
                    with trio.move_on_after(0.3) as quiet:
                        try:
                            message = await ws.recv()
                        except ConnectionClosed:
                            break
                        session.receive(message if isinstance(message, bytes)
                                        else message.encode())
                    if quiet.cancelled_caught:
                        session.send_root()
            return session

    return trio.run(main)


async def _take_the_rest(ws: Connection, session: PeerSession) -> None:
    """Give ``session`` the messages a closed connection still holds (recv returns them, then
    raises ConnectionClosed)."""
    try:
        while session.close_reason is None:
            message = await ws.recv()
            session.receive(message if isinstance(message, bytes) else message.encode())
    except ConnectionClosed:
        pass


def _refused(url: str, context: str, bundle: bytes) -> str:
    """Push ``bundle`` as a member; the node must close the link: returns its BYE reason."""
    session = _as_member(url, lambda s: False, lambda s: s.push(context, bundle))
    reason = session.close_reason or ""
    assert reason.startswith("peer said: "), f"the node did not refuse it: {reason!r}"
    return reason


def _read(node: NodeProc, context: str) -> list[dict[str, object]]:
    return json_lines(ok(run("read", "--node", node.url, context)).stdout)


def _status(node: NodeProc) -> dict[str, object]:
    return json_lines(ok(run("status", "--node", node.url)).stdout)[0]


def _until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` (each call asks the nodes over their API) until it holds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _converged(*nodes: NodeProc) -> bool:
    return len({_status(n)["root"] for n in nodes}) == 1


def _append(node: NodeProc, context: str, *payloads: str) -> list[dict[str, object]]:
    return json_lines(ok(run("append", "--node", node.url, context, "-",
                             stdin="".join(p + "\n" for p in payloads))).stdout)


def _clean_log(node: NodeProc) -> None:
    text = node.log_text()
    # (websockets logs a close as "1011 (internal error)"; a bare "1011" matched a port, 41011)
    assert "Traceback" not in text and "1011 (internal error)" not in text, text[-3000:]


def _snapshot_file(tmp: Path, context: str, entries: list, heads: list[Head]) -> Path:  # noqa: ANN001
    tree = MerkleTree()
    for entry in entries:
        tree.set(bytes.fromhex(entry.id), b"")
    path = tmp / f"{context.replace('/', '_')}.snapshot"
    path.write_bytes(encode_snapshot(context, tree.root(), entries, heads))
    return path


# ---- defect 1: one entry stops every write ----------------------------------------------------

def test_lamport_poison_from_a_peer_or_load_never_stops_appends(procs: Procs,
                                                                tmp_path: Path) -> None:
    a = procs.node("a", "--node-id", "a")
    _append(a, "c1", "before")
    # From a peer: 2^64-1 is refused by name, the link closes, nothing is stored.
    entries, head = signed_chain(MALLORY, "c1", [2**64 - 1], 7, b"poison", NOW_NS)
    reason = _refused(a.url, "c1", encode_bundle([head], yjs_append([entries[0].record], 4242)))
    assert "LamportOutOfRange" in reason
    # Through the API: load of a crafted snapshot, a one-line named error.
    path = _snapshot_file(tmp_path, "c1", entries, [head])
    assert_one_line_error(run("load", "--node", a.url, str(path)), 1, "LamportOutOfRange")
    assert len(_read(a, "c1")) == 1
    # The highest legal time is accepted: every clock saturates, appends go on.
    top, top_head = signed_chain(MALLORY, "c2", [MAX_LAMPORT], 8, b"at the limit", NOW_NS)
    ok(run("load", "--node", a.url, str(_snapshot_file(tmp_path, "c2", top, [top_head]))))
    after = _append(a, "c2", "still writing", "and again")
    assert [e["lamport"] for e in after] == [MAX_LAMPORT, MAX_LAMPORT]
    assert a.stop() == 0
    again = procs.node("a", data=a.data)
    [later] = _append(again, "c2", "after a restart")
    assert later["lamport"] == MAX_LAMPORT and later["seq"] == 1  # a new chain per open
    assert len(_read(again, "c2")) == 4
    _clean_log(a)
    _clean_log(again)


# ---- defect 4: entries bound to their author --------------------------------------------------

def test_an_entry_in_another_nodes_name_is_refused(procs: Procs, tmp_path: Path) -> None:
    a = procs.node("a", "--node-id", "a")
    b = procs.node("b", "--node-id", "b", "--peer", a.url)
    [first] = _append(a, "c1", "real")
    _until(lambda: _converged(a, b), "b to hold a's entry")
    fake = make_entry("c1", "k", b"forged", {}, 5, str(first["origin"]), int(str(first["chain"]),
                      16), 2, NOW_NS, bytes.fromhex(str(first["id"])))
    wrong = MALLORY.sign_head("c1", fake.chain, 2, bytes.fromhex(fake.id))
    claimed = Head(bytes.fromhex(fake.origin), fake.chain, 2, wrong.entry_id, wrong.signature)
    for node in (a, b):  # from a peer, to the origin itself and to another node
        reason = _refused(node.url, "c1", encode_bundle([claimed],
                                                        yjs_append([fake.record], 4343)))
        assert "ForgedEntry" in reason
    path = _snapshot_file(tmp_path, "c1", [fake], [claimed])
    assert_one_line_error(run("load", "--node", b.url, str(path)), 1, "ForgedEntry")
    [second] = _append(a, "c1", "next")
    assert second["seq"] == 2  # the forgery did not take a's next seq
    _until(lambda: _converged(a, b), "convergence")
    for node in (a, b):
        assert [e["payload"] for e in _read(node, "c1")] == ["real", "next"]
        _clean_log(node)


# ---- defect 2: a squatted Yjs position -------------------------------------------------------

def test_a_squatted_yjs_position_cannot_stop_convergence(procs: Procs) -> None:
    """Mallory learns t's Yjs client id (the only client in t's context) from t itself, then
    gives w, which has never seen t, a valid entry of her own at t's first position. When w
    meets t, Yjs says w already has that position; the nodes must still converge."""
    t = procs.node("t", "--node-id", "t")
    acked = [e["id"] for e in _append(t, "c1", "t0", "t1", "t2")]
    w = procs.node("w", "--node-id", "w")
    learned = _as_member(t.url, lambda s: "c1" in s.ledger.contexts
                         and len(s.ledger.contexts["c1"]) == 3)
    [client] = decode_state_vector(learned.ledger.contexts["c1"].state_vector())
    entries, head = signed_chain(MALLORY, "c1", [1], 9, b"squat", NOW_NS)
    squat = encode_bundle([head], yjs_append([entries[0].record], client))
    _as_member(w.url, lambda s: True, lambda s: s.push("c1", squat))
    _until(lambda: len(_read(w, "c1")) == 1, "w to hold the squatting entry")
    assert w.stop() == 0
    w = procs.node("w", "--peer", t.url, data=w.data)
    _until(lambda: _converged(t, w), "t and w to converge despite the squatted position")
    ids = [e["id"] for e in _read(w, "c1")]
    assert set(acked) <= set(ids) and entries[0].id in ids
    assert ids == [e["id"] for e in _read(t, "c1")]
    _clean_log(t)
    _clean_log(w)


# ---- defect 3: a node loses the tail of its store ---------------------------------------------

def test_a_node_that_lost_its_wal_or_its_data_rejoins_without_divergence(
        procs: Procs, tmp_path: Path) -> None:
    a = procs.node("a", "--node-id", "a")
    b = procs.node("b", "--node-id", "b", "--peer", a.url)
    _append(a, "c1", *(f"settled {i}" for i in range(20)))
    _until(lambda: _converged(a, b), "b to hold a's first entries")
    assert a.stop() == 0  # a clean stop checkpoints the WAL into the database
    a = procs.node("a", "--node-id", "a", "--peer", b.url, data=a.data)
    before = _status(a)["origin"]
    # Kill -9 in the middle of a stream of appends, then lose the WAL (a disk that lied).
    writer = subprocess.Popen(
        [sys.executable, "-m", "p2p_ledger", "append", "--node", a.url, "c1", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
        cwd=ROOT)
    try:
        assert writer.stdin is not None and writer.stdout is not None
        for i in range(200):
            writer.stdin.write(f"streamed {i}\n".encode())
            writer.stdin.flush()
            if i == 100:
                assert writer.stdout.readline(), "the stream was acknowledged"
                a.proc.send_signal(signal.SIGKILL)
                break
        a.proc.wait(timeout=10)
    finally:
        writer.kill()
        writer.communicate(timeout=10)
    for suffix in ("-wal", "-shm"):
        (a.data / f"ledger.sqlite3{suffix}").unlink(missing_ok=True)
    a = procs.node("a", "--node-id", "a", "--peer", b.url, data=a.data)
    assert _status(a)["origin"] == before  # the same key: the same node, a new writer chain
    fresh = [e["id"] for e in _append(a, "c1", "after the loss 1", "after the loss 2")]
    _until(lambda: _converged(a, b), "a and b to converge after the tail loss")
    ids = [e["id"] for e in _read(b, "c1")]
    assert set(fresh) <= set(ids) and ids == [e["id"] for e in _read(a, "c1")]
    assert _status(b)["forks"] == [] and _status(a)["forks"] == []
    # Wiped: the same label on an empty data directory is a new origin, and nothing diverges.
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    shutil.rmtree(a.data)
    a = procs.node("a", "--node-id", "a", "--peer", b.url, data=a.data)
    assert _status(a)["origin"] != before
    [reborn] = _append(a, "c1", "a new node under an old name")
    assert reborn["seq"] == 1
    _until(lambda: _converged(a, b), "the wiped node and b to converge")
    ids = [e["id"] for e in _read(a, "c1")]
    assert reborn["id"] in ids and set(fresh) <= set(ids)
    assert ids == [e["id"] for e in _read(b, "c1")]
    for node in (a, b):
        _clean_log(node)


# ---- the node id is a label: two data directories under one label ----------------------------

def test_two_nodes_with_one_label_and_a_third_all_converge(procs: Procs) -> None:
    """Two laptops both called "agent" (or a wiped data directory that came back under its
    label while the old one still runs elsewhere): before protocol 8, links were keyed by the
    label, so the two refused each other ("connected to ourselves") and a third node kept only
    one of them. Now each is its origin: all three link, converge, and status shows both."""
    hub = procs.node("hub", "--node-id", "hub")
    one = procs.node("agent-1", "--node-id", "agent", "--peer", hub.url)
    two = procs.node("agent-2", "--node-id", "agent", "--peer", hub.url, "--peer", one.url)
    assert one.node_id == two.node_id == "agent"
    origins = {_status(n)["origin"] for n in (one, two)}
    assert len(origins) == 2

    def linked(node: NodeProc, want: set[object]) -> bool:
        peers = _status(node)["peers"]
        assert isinstance(peers, list)
        return want <= {p["origin"] for p in peers if p["state"] == "connected"}

    _until(lambda: linked(hub, origins), "the hub to link both agents")
    _until(lambda: linked(two, {_status(one)["origin"], _status(hub)["origin"]}),
           "agent 2 to link agent 1 and the hub")
    peers = _status(hub)["peers"]
    assert isinstance(peers, list)
    assert sorted(p["node_id"] for p in peers if p["state"] == "connected") == \
        ["agent", "agent"]
    written = [e["id"] for n in (one, two, hub) for e in _append(n, "shared", f"from {n.url}")]
    _until(lambda: _converged(hub, one, two), "the three nodes to converge")
    for node in (hub, one, two):
        assert sorted(e["id"] for e in _read(node, "shared")) == sorted(written)
        log = node.log_text()
        assert "connected to ourselves" not in log
        _clean_log(node)
