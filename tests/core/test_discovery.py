"""LAN discovery, sans-I/O: the DNS-SD record parser (hostile input included) and NodeCore's
decisions on ``peer_discovered`` / ``peer_lost``, on the fake-clock ``CoreNet``."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_ledger.core.discovery import (
    MAX_ADDRESSES,
    MAX_CLUSTER,
    Announcement,
    InvalidAnnouncement,
    instance_name,
    parse_announcement,
    txt_record,
)
from p2p_ledger.core.errors import RemoteProtocolError
from p2p_ledger.core.identity import Identity
from p2p_ledger.core.node import MAX_DISCOVERED
from p2p_ledger.core.wire import PROTOCOL_VERSION

from .helpers import CoreNet

A, B, C = "ws://h/a", "ws://h/b", "ws://h/c"
B_ORIGIN = Identity.from_seed("b").origin
URL = re.compile(r"wss?://(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}")


def _txt(**changes: str | None) -> dict[bytes, bytes | None]:
    props: dict[str, str | None] = {**txt_record("b", "default", run="1234", origin=B_ORIGIN),
                                    **changes}
    return {k.encode(): None if v is None else v.encode() for k, v in props.items()}


# ---- the record parser -------------------------------------------------------------------------

def test_a_well_formed_record_gives_its_urls_in_order() -> None:
    ann = parse_announcement(_txt(), ["10.0.0.2", "fd00::2"], 7070)
    assert ann == Announcement("b", "default", PROTOCOL_VERSION,
                               ("ws://10.0.0.2:7070", "ws://[fd00::2]:7070"), B_ORIGIN)
    assert parse_announcement(_txt(scheme="wss"), ["10.0.0.2"], 443).urls == (
        "wss://10.0.0.2:443",)
    many = [f"10.0.0.{i}" for i in range(20)]
    assert len(parse_announcement(_txt(), many, 1).urls) == MAX_ADDRESSES


@pytest.mark.parametrize(("props", "addresses", "port", "message"), [
    (_txt(id=None), ["10.0.0.2"], 7070, "'id' missing"),
    ({k: v for k, v in _txt().items() if k != b"cluster"}, ["10.0.0.2"], 7070, "'cluster'"),
    (_txt(id="bad id!"), ["10.0.0.2"], 7070, "invalid node id"),
    (_txt(cluster=""), ["10.0.0.2"], 7070, "cluster name of 0"),
    (_txt(cluster="x" * 129), ["10.0.0.2"], 7070, "cluster name of 129"),
    (_txt(cluster="a\nb"), ["10.0.0.2"], 7070, "control characters"),
    (_txt(proto="three"), ["10.0.0.2"], 7070, "not a number"),
    (_txt(proto="٣"), ["10.0.0.2"], 7070, "not a number"),  # a non-ASCII digit
    (_txt(scheme="http"), ["10.0.0.2"], 7070, "scheme"),
    (_txt(), ["10.0.0.2"], 0, "port 0"),
    (_txt(), ["10.0.0.2"], 70000, "port 70000"),
    (_txt(), [], 7070, "no address"),
    (_txt(), ["evil.example/x?"], 7070, "not an IP address"),
    (_txt(), ["10.0.0.300"], 7070, "not an IP address"),
    ({**_txt(), b"id": b"\xff\xfe"}, ["10.0.0.2"], 7070, "not UTF-8"),
    (_txt(origin=None), ["10.0.0.2"], 7070, "'origin' missing"),
    (_txt(origin=B_ORIGIN[:-1]), ["10.0.0.2"], 7070, "not 64 hex digits"),
    (_txt(origin=B_ORIGIN.upper()), ["10.0.0.2"], 7070, "not 64 hex digits"),
])
def test_malformed_records_are_refused_with_a_reason(
    props: dict[bytes, bytes | None], addresses: list[str], port: int, message: str
) -> None:
    with pytest.raises(InvalidAnnouncement, match=message):
        parse_announcement(props, addresses, port)
    assert issubclass(InvalidAnnouncement, RemoteProtocolError)  # a remote party's fault


@given(st.dictionaries(st.binary(max_size=12), st.none() | st.binary(max_size=40), max_size=8),
       st.lists(st.text(max_size=50), max_size=10), st.integers(-10, 70000))
def test_garbage_records_raise_only_invalid_announcement(
    props: dict[bytes, bytes | None], addresses: list[str], port: int
) -> None:
    for candidate in (props, {**_txt(), **props}):
        try:
            ann = parse_announcement(candidate, addresses, port)
        except InvalidAnnouncement:
            continue
        assert ann.urls and all(URL.fullmatch(u) for u in ann.urls), ann.urls


# ---- NodeCore's decisions ----------------------------------------------------------------------

def _ann(node_id: str, *urls: str, cluster: str = "default",
         protocol: int = PROTOCOL_VERSION) -> Announcement:
    return Announcement(node_id, cluster, protocol, urls, Identity.from_seed(node_id).origin)


def test_a_record_of_another_version_needs_no_origin() -> None:
    """(the node refuses it by its version, logged once, not as a malformed record)"""
    ann = parse_announcement(_txt(origin=None, proto="6"), ["10.0.0.2"], 7070)
    assert (ann.protocol, ann.origin) == (6, "")


def test_two_nodes_with_one_label_are_two_instances_and_two_peers() -> None:
    """Two nodes called "agent" on one LAN: their DNS-SD instance names differ (the origin's
    start), and a node dials both."""
    one, two = Identity.from_seed("agent").origin, Identity.from_seed("agent-2").origin
    assert instance_name("agent", one) != instance_name("agent", two)
    assert len(instance_name("x" * 64, one).encode()) <= 63
    net = CoreNet(3)
    a = net.add(A)
    a.peer_discovered("agent-1", Announcement("agent", "default", PROTOCOL_VERSION, (B,), one),
                      0.0)
    a.peer_discovered("agent-2", Announcement("agent", "default", PROTOCOL_VERSION, (C,), two),
                      0.0)
    net.run_until(0.0)
    assert sorted(d for t, s, d in net.dials if s == A) == [B, C]


def test_a_discovered_peer_of_our_cluster_is_dialed_at_once_and_linked() -> None:
    net = CoreNet(1)
    a = net.add(A)
    net.add(B)
    net.run_until(1.0)
    assert net.connected(A) == set()  # no seeds: nobody to dial
    a.peer_discovered("b", _ann("b", B), net.now)
    at = net.now
    net.run_until(at + 1.0)
    assert [t for t, s, d in net.dials if s == A and d == B] == [at]
    assert net.connected(A) == {B} and net.connected(B) == {A}
    (row,) = a.status()["peers"]
    assert row["mdns"] is True and row["state"] == "connected"
    assert any("mdns: discovered b at ws://h/b" in line for line in a.take_log())


@pytest.mark.parametrize(("ann", "why"), [
    (_ann("b", B, cluster="other"), "another cluster"),
    (_ann("b", B, protocol=PROTOCOL_VERSION + 1), f"protocol {PROTOCOL_VERSION + 1}"),
])
def test_other_clusters_and_protocols_are_never_dialed(ann: Announcement, why: str) -> None:
    net = CoreNet(2)
    a = net.add(A)
    net.add(B)
    for _ in range(3):  # re-announcements log nothing new
        a.peer_discovered("b", ann, net.now)
        net.run_until(net.now + 5.0)
    assert net.dials == [] and a.peers == {} and a.discovered == {}
    assert a.take_log().count(f"mdns: ignoring b ({ann.cluster}): {why}") == 1


def test_our_own_record_and_discovery_off_are_ignored() -> None:
    net = CoreNet(3)
    a = net.add(A)
    a.peer_discovered("a", _ann("a", A), 0.0)
    off = net.add(C, discovery=False)
    net.add(B)
    off.peer_discovered("b", _ann("b", B), 0.0)
    net.run_until(5.0)
    assert net.dials == [] and a.peers == {} and off.peers == {}
    assert "mdns: ignoring b (default): discovery is off" in off.take_log()


def test_a_lost_record_keeps_the_link_and_the_peer_table_entry() -> None:
    net = CoreNet(4)
    a = net.add(A)
    net.add(B)
    a.peer_discovered("b", _ann("b", B), 0.0)
    net.run_until(1.0)
    a.peer_lost("b", net.now)
    net.run_until(30.0)
    assert net.connected(A) == {B}  # the link is not touched
    (row,) = a.status()["peers"]
    assert row["mdns"] is False and row["state"] == "connected"
    assert "mdns: b is no longer advertised" in a.take_log()
    a.peer_lost("b", net.now)  # a second goodbye is harmless
    assert a.take_log() == []


def test_a_returning_peer_is_redialed_at_once_not_after_its_backoff() -> None:
    net = CoreNet(5)
    a = net.add(A, backoff_base=1.0, backoff_max=60.0, drop_after=40.0)
    net.add(B)
    a.peer_discovered("b", _ann("b", B), 0.0)
    net.run_until(1.0)
    net.kill(B)
    a.peer_lost("b", net.now)
    net.run_until(120.0)  # long enough to be dropped (a learned peer failing for drop_after)
    assert a.peers[B].state == "dropped"
    net.add(B)  # the host comes back and announces itself again
    a.peer_discovered("b", _ann("b", B), net.now)
    back = net.now
    net.run_until(back + 0.5)
    assert [t for t, s, d in net.dials if s == A and d == B][-1] == back
    assert net.connected(A) == {B} and a.peers[B].failures == 0


def test_one_url_of_a_node_at_a_time_until_one_works() -> None:
    net = CoreNet(6)
    a = net.add(A)
    net.add(B)
    dead, alias = "ws://h/b-unreachable", "ws://h/b-alias"
    net.cores[alias] = net.cores[B]  # a second address of the same host
    net.up.add(alias)
    a.peer_discovered("b", _ann("b", dead, B, alias), 0.0)
    net.run_until(10.0)
    dials = [(t, d) for t, s, d in net.dials if s == A]
    assert dials[0] == (0.0, dead) and dials[1][1] == B  # never two of them at once
    # no duplicate link; the alias counts as connected (its node is linked), so nothing dials it
    assert net.connected(A) == {B} and a.peers[alias].state == "connected"
    assert alias not in {d for _, d in dials}


def test_the_number_of_tracked_records_is_bounded() -> None:
    net = CoreNet(7)
    a = net.add(A)
    for i in range(MAX_DISCOVERED + 10):
        a.peer_discovered(f"n{i}", _ann(f"n{i}", f"ws://h/n{i}"), 0.0)
    assert len(a.discovered) == MAX_DISCOVERED
    assert len(a.peers) == a.config.max_learned_peers  # the peer table's own bound holds too
    assert sum("too many discovered peers" in line for line in a.take_log()) == 10


def test_a_flood_of_addresses_fills_no_more_than_the_learned_peer_bound() -> None:
    net = CoreNet(8)
    a = net.add(A, max_learned_peers=10)
    urls = tuple(f"ws://h/x{i}" for i in range(8))  # the parser keeps at most 8 per record
    for i in range(5):
        a.peer_discovered(f"x{i}", _ann(f"x{i}", *(u + f"-{i}" for u in urls)), 0.0)
    assert len(a.peers) == 10 and len(a.discovered) == 5
    net.run_until(0.0)
    nodes = {p.origin for p in a.peers.values()}
    assert len([d for t, s, d in net.dials if s == A]) == len(nodes)  # one URL per node at once


def test_a_url_held_back_by_another_dial_of_its_node_is_no_deadline() -> None:
    # Regression: next_deadline() returned the held-back URL's retry time (now) while tick()
    # would not dial it: the runtime's timer spun until the first dial ended.
    net = CoreNet(9)
    a = net.add(A)
    a.peer_discovered("b", _ann("b", "ws://h/b-first", "ws://h/b-second"), 0.0)
    a.tick(0.0)
    assert [type(x).__name__ for x in a.take_actions()] == ["Dial"]  # the first URL only
    assert a.next_deadline() > 0.0


# ---- the limits, at their edges (from the mutation run) ------------------------------------------

def test_each_limit_of_a_record_holds_exactly_at_its_edge() -> None:
    ok = parse_announcement  # accepted just inside each limit, refused one step beyond
    assert ok(_txt(cluster="c"), ["10.0.0.2"], 1).cluster == "c"
    assert ok(_txt(cluster="c" * MAX_CLUSTER), ["10.0.0.2"], 65535).urls == (
        "ws://10.0.0.2:65535",)
    assert ok(_txt(proto="99999"), ["10.0.0.2"], 7070).protocol == 99999
    for props, port, what in ((_txt(cluster="c" * (MAX_CLUSTER + 1)), 7070, "cluster name"),
                              (_txt(proto="100000"), 7070, "protocol version"),
                              (_txt(), 65536, "port 65536")):
        with pytest.raises(InvalidAnnouncement, match=what):
            parse_announcement(props, ["10.0.0.2"], port)
    with pytest.raises(InvalidAnnouncement, match="^no address$"):
        parse_announcement(_txt(), [], 7070)


def test_addresses_at_the_edges_of_ipv4_and_ipv6() -> None:
    full_v6 = "FFFF:ffff:ffff:ffff:ffff:ffff:255.255.255.255"  # 45 characters, the longest
    assert len(full_v6) == 45
    ann = parse_announcement(_txt(), ["255.255.255.255", full_v6, "ABCD::1"], 7070)
    assert ann.urls == ("ws://255.255.255.255:7070", f"ws://[{full_v6}]:7070",
                        "ws://[ABCD::1]:7070")
    for bad in ("10.0.0.256", "10.0.0.0255", full_v6 + "0", "fd00::g", "fd00::X"):
        with pytest.raises(InvalidAnnouncement, match="not an IP address"):
            parse_announcement(_txt(), [bad], 7070)


def test_the_txt_record_carries_the_run_token() -> None:
    """A restarted node changes ``run``, so the others see ``updated`` and redial at once."""
    assert txt_record("b", "default", run="r1")["run"] == "r1"
