"""Cluster keys: an empty key is refused, a key file works, and a key on the command line
(visible to every local user in ``ps``) is warned about.

Regression (issue 8, item 7): ``--cluster-key ""`` (what an unset shell variable gives) used to
run an open node without a word.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_ledger.core.errors import InvalidClusterKey
from p2p_ledger.core.protocol import cluster_key_bytes

from .conftest import Procs, assert_one_line_error, json_lines, ok, run


@pytest.mark.parametrize("args, env", [
    (["--cluster-key", ""], {}),
    ([], {"P2P_LEDGER_CLUSTER_KEY": ""}),
    (["--cluster-key-file", "{empty}"], {}),
])
def test_empty_cluster_key_is_refused(tmp_path: Path, args: list[str], env: dict[str, str],
                                      ) -> None:
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    args = [a.replace("{empty}", str(empty)) for a in args]
    result = run("node", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0", *args, env=env)
    assert_one_line_error(result, 2, "InvalidClusterKey")
    assert not (tmp_path / "d").exists()  # refused before anything was created
    client = run("status", "--node", "ws://127.0.0.1:1", *args, env=env)
    assert_one_line_error(client, 2, "InvalidClusterKey")


def test_library_refuses_empty_keys() -> None:
    for key in ("", b""):
        with pytest.raises(InvalidClusterKey):
            cluster_key_bytes(key)
    assert cluster_key_bytes(None) is None
    assert cluster_key_bytes("s3cret") == b"s3cret"


def test_key_file_and_env(procs: Procs, tmp_path: Path) -> None:
    key_file = tmp_path / "cluster.key"
    key_file.write_text("s3cret-from-file\n")  # the trailing newline is not part of the key
    key_file.chmod(0o600)
    n = procs.node("kf", "--cluster-key-file", str(key_file))
    assert "visible" not in n.log_text()  # no ps warning for a key file
    refused = run("status", "--node", n.url)
    assert refused.returncode == 1 and "cluster key" in refused.stderr
    [status] = json_lines(ok(run("status", "--node", n.url, "--cluster-key-file",
                                 str(key_file))).stdout)
    assert status["node_id"] == n.node_id
    ok(run("status", "--node", n.url, env={"P2P_LEDGER_CLUSTER_KEY": "s3cret-from-file"}))
    both = run("status", "--node", n.url, "--cluster-key", "x", "--cluster-key-file",
               str(key_file))
    assert both.returncode == 2 and "not allowed with" in both.stderr
    missing = run("status", "--node", n.url, "--cluster-key-file", str(tmp_path / "nope"))
    assert_one_line_error(missing, 2, "UsageError")


def test_key_on_command_line_is_warned_about(procs: Procs) -> None:
    n = procs.node("kc", "--cluster-key", "s3cret")
    assert "visible to other local users" in n.log_text()
    ok(run("status", "--node", n.url, "--cluster-key", "s3cret"))
