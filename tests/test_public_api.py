"""The public face: what ``from p2p_ledger import ...`` offers, typed and documented."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import p2p_ledger
from p2p_ledger.core import errors
from p2p_ledger.trio.client import Client
from p2p_ledger.trio.runtime import Node

ROOT = Path(__file__).resolve().parent.parent

# Node's plain (not async) methods: they read the node's memory and return at once. On a
# Client every call is a round trip, so every one is async.
NODE_SYNC = {"get", "status", "contexts", "prove", "snapshot", "compact"}
NODE_ONLY = {"compact", "api_key", "url"}  # a Client cannot compact; url/api_key are the node's


def _public(cls: type) -> dict[str, object]:
    return {name: member for name, member in vars(cls).items() if not name.startswith("_")}


def test_the_embedding_api_imports_from_the_package() -> None:
    from p2p_ledger import Client as C
    from p2p_ledger import Cursor, Entry, LedgerError, Limits, Node, open_node  # noqa: F401

    assert C is Client
    for name in p2p_ledger.__all__:
        assert getattr(p2p_ledger, name) is not None, name
    assert sorted(p2p_ledger.__all__) == sorted(set(p2p_ledger.__all__))


def test_every_error_of_the_tree_is_exported() -> None:
    tree = {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.LedgerError)}
    assert tree <= set(p2p_ledger.__all__), tree - set(p2p_ledger.__all__)
    assert issubclass(p2p_ledger.MdnsUnavailable, p2p_ledger.LocalInputError)


def test_importing_the_package_does_not_load_the_drivers() -> None:
    """The simulator and the tools import p2p_ledger.core without trio or websockets."""
    code = ("import sys, p2p_ledger, p2p_ledger.sim; "
            "print(sorted(m for m in ('trio', 'websockets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_every_public_call_of_node_and_client_is_documented() -> None:
    for cls in (Node, Client):
        for name, member in _public(cls).items():
            function = getattr(member, "fget", None) or getattr(member, "__func__", member)
            doc = inspect.getdoc(function) or ""
            assert len(doc) > 20, f"{cls.__name__}.{name} has no docstring"


def test_node_and_client_offer_the_same_calls_and_differ_only_in_async() -> None:
    node, client = _public(Node), _public(Client)
    calls = {n for n, m in node.items() if inspect.isfunction(m)}
    assert calls - NODE_ONLY <= set(client)
    for name in calls:
        assert inspect.iscoroutinefunction(node[name]) or inspect.isasyncgenfunction(
            node[name]) or name in NODE_SYNC, f"Node.{name} is sync but not listed as such"
        assert (name in NODE_SYNC) != (inspect.iscoroutinefunction(node[name])
                                       or inspect.isasyncgenfunction(node[name])), name
        if name in client:
            member = client[name]
            assert inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member), \
                f"Client.{name} must be async (a round trip)"
        if name not in NODE_ONLY:  # the same arguments on both
            assert list(inspect.signature(node[name]).parameters) == \
                list(inspect.signature(client[name]).parameters), name


def test_type_hints_are_shipped() -> None:
    assert (ROOT / "p2p_ledger" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["p2p_ledger"]
