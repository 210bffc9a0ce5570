"""``node --config FILE.toml``: every ``node`` flag from a file, command-line flags on top.

A key is a long flag of ``p2p-ledger node`` without its dashes, its value what the flag takes::

    data = "/var/lib/p2p-ledger"
    listen = "0.0.0.0:7070"
    peer = ["ws://10.0.0.5:7070", "ws://10.0.0.6:7070"]   # a repeatable flag takes a list
    cluster-key-file = "/etc/p2p-ledger/cluster.key"
    gossip-interval = 0.5
    no-discovery = true                                  # a switch: true (false = absent)

The file becomes command-line tokens placed before the real ones and parsed by the same parser,
so every value is checked exactly as on the command line (and every flag another module adds
to ``node`` is a valid key at once). A flag given on the command line replaces the file's value
(for a repeatable flag, the whole list; for one of a mutually exclusive pair, the pair). An
unknown key or a value of the wrong type is a ``UsageError`` naming the file and the key.
Relative paths are taken from the current directory, as on the command line.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import tomllib
from collections.abc import Sequence
from typing import Any

from ..core.errors import LocalInputError

# why: a node makes a few Python objects per entry it receives, and the collector's default
# generation-0 threshold (700) ran it every few hundred entries: ~20% of catch-up CPU. With
# 50,000 / 20 / 100, in-process cold catch-up of 100k x 100 B went from 49k and 59k to 66k and
# 74k entries per CPU-second (medians of 3, two alternated runs). A process-wide setting, so the
# node command sets it (and bench --scale, which measures a node, in-process); a program
# embedding open_node decides for itself.
GC_THRESHOLDS = (50_000, 20, 100)

# why: glibc returns a freed block of more than 128 KiB to the system (its own mmap, or the
# heap's top once more than twice the largest freed block is free), so every buffer of a large
# transfer (a frame's assembly, a bundle's update, a row read or written: ~10 MB each) was new
# memory, faulted in a page at a time: a 10 MB copy cost 7.9 ms, 1.3 ms with these settings
# (2,490 page faults against 125). Catching up 1,000 x 100 KB between two node processes
# (alternated, 3 rounds, load 4-5): sender 0.53-0.69 -> 0.32-0.35 CPU-s, receiver 0.94-1.07 ->
# 0.73-0.87; peak RSS unchanged (114-121 MiB against 114-115). A 32 MiB trim threshold still
# gave the memory back between transfers (no gain). The price: up to MALLOC_TRIM_THRESHOLD of
# freed memory stays with the process. Process-wide, so the node command sets it, like
# GC_THRESHOLDS.
MALLOC_MMAP_THRESHOLD = 16 * 1024 * 1024  # blocks up to this come from the heap, reused
MALLOC_TRIM_THRESHOLD = 64 * 1024 * 1024  # free memory at the heap's top kept up to this
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)


def tune_malloc() -> bool:
    """Set MALLOC_MMAP_THRESHOLD and MALLOC_TRIM_THRESHOLD in this process when its C library
    is glibc (the MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables, when
    set, win); returns whether it did. Elsewhere it does nothing."""
    if any(f"MALLOC_{name}_THRESHOLD_" in os.environ for name in ("MMAP", "TRIM")):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


class ConfigError(LocalInputError):
    """The --config file cannot be read, is not TOML, or holds an unknown key or a bad value."""


def expand_config(node: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` (the tokens after ``node``) with ``--config FILE`` replaced by the file's flags,
    minus those the command line sets itself."""
    argv = list(argv)
    path, rest = _take_config(argv)
    if path is None:
        return argv
    table = _load(path)
    flags = {s[2:]: a for a in node._actions for s in a.option_strings if s.startswith("--")}
    for name in ("config", "help"):
        flags.pop(name, None)
    given = _dests_given(node, rest)
    tokens: list[str] = []
    for key, value in table.items():
        action = flags.get(key)
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(flags))})")
        if _group_of(node, action) & given:
            continue  # the command line says otherwise
        tokens += _tokens(path, key, action, value)
    return tokens + rest


def _take_config(argv: list[str]) -> tuple[str | None, list[str]]:
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config wants a FILE.toml")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if token.startswith("--config="):
            return token.partition("=")[2], argv[:i] + argv[i + 1:]
    return None, argv


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from None


def _dests_given(node: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    given = set()
    for token in argv:
        if token == "--":
            break
        action = node._option_string_actions.get(token.partition("=")[0])
        if action is not None:
            given.add(action.dest)
    return given


def _group_of(node: argparse.ArgumentParser, action: argparse.Action) -> set[str]:
    """The dests a command-line flag overrides: its own, and its mutually exclusive partners'."""
    for group in node._mutually_exclusive_groups:
        if action in group._group_actions:
            return {a.dest for a in group._group_actions}
    return {action.dest}


def _tokens(path: str, key: str, action: argparse.Action, value: Any) -> list[str]:
    flag = f"--{key}"
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} is a switch: true or false, got {value!r}")
        return [flag] if value else []
    repeatable = isinstance(action, argparse._AppendAction)
    values = value if repeatable and isinstance(value, list) else [value]
    tokens = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            want = "a value or a list of values" if repeatable else "one value"
            raise ConfigError(f"{path}: {key} wants {want}, got {value!r}")
        tokens.append(f"{flag}={item}")
    return tokens

