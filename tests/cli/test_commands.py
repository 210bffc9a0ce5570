"""append / read / watch / status / snapshot / load end to end against real node processes.

The CLI runs as a subprocess (``cli``) where the real entry point matters, in-process
(``run``, same ``cli.main``) elsewhere to keep the suite fast. Tests sharing a node use their
own contexts.
"""

from __future__ import annotations

import base64
import signal
import time
from pathlib import Path

from p2p_ledger.cli.main import main

from .conftest import NodeProc, Procs, cli, json_lines, ok, read_line, run


def test_append_then_read_and_status(node: NodeProc) -> None:
    out = ok(cli("append", "--node", node.url, "agent/notes", "hello wörld",
                 "--key", "greeting", "--meta", "lang=en", "--meta", "by=test")).stdout
    [entry] = json_lines(out)
    assert entry["payload"] == "hello wörld" and entry["key"] == "greeting"
    assert entry["meta"] == {"lang": "en", "by": "test"} and len(entry["origin"]) == 64
    assert len(entry["id"]) == 64 and entry["seq"] == 1

    [line] = json_lines(ok(cli("read", "--node", node.url, "agent/notes")).stdout)
    writer = f"{entry['origin']}.{entry['chain']}"
    assert line["id"] == entry["id"] and line["cursor"] == f"{writer}:1"

    [status] = json_lines(ok(cli("status", "--node", node.url)).stdout)
    assert status["node_id"] == "n1" and status["url"] == node.url
    assert status["origin"] == entry["origin"] and status["forks"] == []
    assert status["entries"] == 1 and status["contexts"] == 1
    assert len(bytes.fromhex(status["root"])) == 32 and status["peers"] == []


def test_host_port_shorthand_and_env_node(shared_node: NodeProc) -> None:
    hostport = shared_node.url.removeprefix("ws://")
    [entry] = json_lines(ok(run("append", "--node", hostport, "shorthand", "x")).stdout)
    [read] = json_lines(ok(run("read", "shorthand", env={"P2P_LEDGER_NODE": shared_node.url}))
                        .stdout)
    assert read["id"] == entry["id"]


def test_stdin_batch_appends_one_entry_per_line(shared_node: NodeProc) -> None:
    lines = [f"line {i}".encode() for i in range(1234)]
    lines[7] = b"\xff\xfe not utf-8"
    raw = b"\n".join(lines[:600]) + b"\n\n   \n" + b"\r\n".join(lines[600:])  # blank lines, CRLF
    out = json_lines(ok(run("append", "--node", shared_node.url, "batch", "-", "--key", "k",
                            stdin=raw)).stdout)
    assert len(out) == len(lines)
    assert [o["seq"] for o in out] == list(range(1, len(lines) + 1))
    assert out[0]["payload"] == "line 0" and out[-1]["payload"] == "line 1233"
    assert base64.b64decode(out[7]["payload_b64"]) == lines[7]
    assert all(o["key"] == "k" for o in out)
    read = json_lines(ok(run("read", "--node", shared_node.url, "batch")).stdout)
    assert [r["id"] for r in read] == [o["id"] for o in out]


def test_stdin_batch_through_a_real_pipe(shared_node: NodeProc) -> None:
    out = json_lines(ok(cli("append", "--node", shared_node.url, "piped", "-",
                            stdin="a\nb")).stdout)  # no trailing newline
    assert [o["payload"] for o in out] == ["a", "b"]
    assert ok(run("append", "--node", shared_node.url, "piped", "-", stdin="")).stdout == ""


def test_read_pages_with_after_and_limit(shared_node: NodeProc) -> None:
    url = shared_node.url
    ok(run("append", "--node", url, "pages", "-", stdin="".join(f"p{i}\n" for i in range(25))))
    ok(run("append", "--node", url, "pages", "keyed", "--key", "special"))
    full = json_lines(ok(run("read", "--node", url, "pages")).stdout)
    assert len(full) == 26
    got: list[dict[str, object]] = []
    cursor = ""
    while True:
        args = ["read", "--node", url, "pages", "--limit", "10"]
        page = json_lines(ok(run(*args, *(["--after", cursor] if cursor else []))).stdout)
        got += page
        if len(page) < 10:
            break
        cursor = str(page[-1]["cursor"])
    assert [g["id"] for g in got] == [f["id"] for f in full]  # no gap, no duplicate
    assert len(got) == 26
    keyed = json_lines(ok(run("read", "--node", url, "pages", "--key", "special")).stdout)
    assert [k["payload"] for k in keyed] == ["keyed"]
    assert ok(run("read", "--node", url, "pages", "--limit", "0")).stdout == ""
    assert ok(run("read", "--node", url, "nothing-here")).stdout == ""


def test_watch_limit_then_resume_from_cursor(shared_node: NodeProc, procs: Procs) -> None:
    url = shared_node.url
    ok(run("append", "--node", url, "w", "-", stdin="a\nb\nc\n"))
    first = json_lines(ok(run("watch", "--node", url, "w", "--limit", "2")).stdout)
    assert [f["payload"] for f in first] == ["a", "b"]
    # A live watch (real process) from the cursor: c from the backlog, then d and e as they come.
    watcher = procs.popen("watch", "--node", url, "w", "--since", first[-1]["cursor"],
                          "--limit", "3")
    deadline = time.monotonic() + 20
    seen = [json_lines(read_line(watcher.stdout, deadline, "watch"))[0]]
    assert seen[0]["payload"] == "c"  # the watch is live now
    ok(run("append", "--node", url, "w", "-", stdin="d\ne\n"))
    seen += [json_lines(read_line(watcher.stdout, deadline, "watch"))[0] for _ in range(2)]
    assert watcher.wait(timeout=20) == 0
    assert [s["payload"] for s in first + seen] == ["a", "b", "c", "d", "e"]
    full = json_lines(ok(run("read", "--node", url, "w")).stdout)
    assert [s["id"] for s in first + seen] == [f["id"] for f in full]
    assert [s["cursor"] for s in first + seen] == [f["cursor"] for f in full]


def test_entries_replicate_between_nodes(procs: Procs) -> None:
    a = procs.node("a", "--node-id", "a", "--gossip-interval", "0.2")
    b = procs.node("b", "--node-id", "b", "--peer", a.url, "--gossip-interval", "0.2")
    [entry] = json_lines(ok(run("append", "--node", a.url, "shared", "from a")).stdout)
    # watch on b returns once the entry has arrived there: replication with no sleep.
    [seen] = json_lines(ok(run("watch", "--node", b.url, "shared", "--limit", "1")).stdout)
    assert seen["id"] == entry["id"]
    [status] = json_lines(ok(run("status", "--node", b.url)).stdout)
    assert [(p["node_id"], p["url"], p["state"]) for p in status["peers"]] == \
        [("a", a.url, "connected")]
    # A snapshot of a loads into c, a node that never met a or b.
    c = procs.node("c", "--node-id", "c")
    _snapshot_roundtrip(a, c, procs.tmp)


def _snapshot_roundtrip(a: NodeProc, b: NodeProc, tmp: Path) -> None:
    ok(run("append", "--node", a.url, "snap/ctx", "-", stdin="".join(f"s{i}\n" for i in range(40))))
    out = tmp / "ctx.snap"
    [info] = json_lines(ok(run("snapshot", "--node", a.url, "snap/ctx", "--out", str(out))).stdout)
    assert info["context"] == "snap/ctx" and info["entries"] == 40
    assert info["bytes"] == out.stat().st_size
    [loaded] = json_lines(ok(run("load", "--node", b.url, str(out))).stdout)
    assert loaded == {"context": "snap/ctx", "added": 40}
    [again] = json_lines(ok(run("load", "--node", b.url, str(out))).stdout)
    assert again == {"context": "snap/ctx", "added": 0}  # loading twice adds nothing
    refused = run("load", "--node", b.url, str(out), "--fail-if-exists")
    assert refused.returncode == 1 and "AlreadyExists" in refused.stderr
    ids_a = [e["id"] for e in json_lines(ok(run("read", "--node", a.url, "snap/ctx")).stdout)]
    ids_b = [e["id"] for e in json_lines(ok(run("read", "--node", b.url, "snap/ctx")).stdout)]
    assert ids_a == ids_b and len(ids_a) == 40
    # The same snapshot through stdout and stdin.
    piped = ok(run("snapshot", "--node", a.url, "snap/ctx", "--out", "-"))
    assert piped.stdout.startswith("P2PLSNAP")
    [from_stdin] = json_lines(ok(run("load", "--node", b.url, "-", stdin=out.read_bytes())).stdout)
    assert from_stdin["added"] == 0


def test_cluster_key_is_required_and_accepted(procs: Procs) -> None:
    n = procs.node("k", "--cluster-key", "s3cret")
    refused = run("status", "--node", n.url)
    assert refused.returncode == 1 and "cluster key" in refused.stderr
    bad = run("status", "--node", n.url, "--cluster-key", "wrong")
    assert bad.returncode == 1 and bad.stderr.startswith("p2p-ledger: error: ")
    ok(run("status", "--node", n.url, "--cluster-key", "s3cret"))
    ok(run("status", "--node", n.url, env={"P2P_LEDGER_CLUSTER_KEY": "s3cret"}))


def test_node_without_listen_and_clean_signals(procs: Procs) -> None:
    quiet = procs.node("q", "--node-id", "q", listen=None)
    assert quiet.url == "-" and quiet.node_id == "q"
    assert quiet.stop() == 0  # SIGTERM: clean shutdown
    loud = procs.node("q", "--node-id", "q")  # same data dir, free again
    assert loud.stop(signal.SIGINT) == 0
    assert "shutting down" in loud.log_text() and "Traceback" not in loud.log_text()


def test_help_version_and_plugins_in_process() -> None:
    assert main(["--version"]) == 0
    assert main([]) == 2
    for command in ("node", "append", "read", "watch", "status", "verify", "snapshot", "load",
                    "demo"):
        result = run(command, "--help")
        assert result.returncode == 0 and "example" in result.stdout, command
    scenario = run("scenario", "--help")
    assert scenario.returncode == 0 and "run" in scenario.stdout, scenario.stderr
    bench = run("bench", "--help")
    assert bench.returncode == 0 and "--quick" in bench.stdout, bench.stderr
