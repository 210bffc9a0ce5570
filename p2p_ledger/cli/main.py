"""The ``p2p-ledger`` command: run a node, talk to a running one, check a stopped one's store.

Each subcommand is a thin shell: ``node`` over ``runtime.open_node``, the client commands over
``client.Client``, ``verify`` over ``Ledger.verify`` (``--data``) or the API
(``--node``), ``demo`` over ``demo.run_demo``; ``scenario`` and ``bench`` are plugins, imported
only when asked for.

Output contract (scripts and tests rely on it):

* stdout carries data only: one JSON object per line (``--format json``, the default whatever
  stdout is), text for a person with ``--format text`` (or ``P2P_LEDGER_FORMAT=text``), or the
  node's single ``ready`` line; renderings live in ``output.py``;
* stderr carries logs, errors, and progress (only when stderr is a terminal);
* an error is ONE stderr line, ``p2p-ledger: error: <ErrorClass>: message``, with exit status 2
  for usage and input errors (bad context name, payload too large, bad cursor, bad file...) and 1
  for runtime failures (node unreachable, integrity failure, data directory in use...);
  Ctrl-C exits 130 (``node`` treats SIGINT/SIGTERM as a clean stop and exits 0).

Why argparse and not click: no extra dependency (the package needs three), every helper and
plugin already adds flags to this one parser (``scenario`` and ``bench`` hang their own
subparsers on it), and the two things click would bring are cheap here: consistent help comes
from ``Formatter`` and the rule that every subcommand has a description and an example (a test
checks it); one-line errors come from ``_Parser.error`` and ``_report``. Shell completion is
the one loss; ``argcomplete`` can add it to an argparse parser later without a rewrite.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import logging
import math
import os
import signal
import sqlite3
import sys
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ..core.cursor import Cursor
from ..core.entry import DEFAULT_LIMITS, Entry, check_context, check_node_id
from ..core.errors import (
    InvalidMeta,
    InvalidSnapshot,
    LedgerError,
    LinkBroken,
    LocalInputError,
    PayloadTooLarge,
    UnsupportedVersion,
)
from ..core.ledger import DEFAULT_MEMORY_BUDGET
from .config import GC_THRESHOLDS, expand_config, tune_malloc
from .logformat import LOG_FORMATS, setup_logging
from .output import (
    ENV_FORMAT,
    FORMATS,
    Output,
    Progress,
    contexts_text,
    entry_text,
    status_text,
)

# why: trio, websockets and the protocol are imported by the commands that use them, not here:
# they were ~0.2 of the ~0.45 CPU-s every command spent importing (`verify --data` and `repair`
# never need them; process time, on the loaded 2-core machine)
if TYPE_CHECKING:
    import trio

    from ..trio.client import Client

PROG = "p2p-ledger"
ENV_KEY = "P2P_LEDGER_CLUSTER_KEY"
ENV_NODE = "P2P_LEDGER_NODE"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 130, 141
# Batches for `append -`: bounded in lines and bytes so huge inputs stream in bounded memory.
BATCH_LINES = 500
BATCH_BYTES = 8 * 1024 * 1024
READ_PAGE = 500
MAX_LINE = 64 * 1024 * 1024  # far above any node's payload limit; bounds memory on garbage input
PROGRESS_AFTER = 2000  # lines; smaller inputs finish before a progress line would help

log = logging.getLogger("p2p_ledger.cli")


class UsageError(LocalInputError):
    """The command line itself is wrong (bad option value, missing file...)."""


# ---- argument parsing ------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other error of this tool (argparse would print the usage too).
        self.exit(EXIT_USAGE, f"{PROG}: error: UsageError: {message} (see '{self.prog} --help')\n")


class Formatter(argparse.HelpFormatter):
    """Wrap prose; keep multi-line text (the examples in epilogs) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return int(text)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2,
               "mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3}


def byte_size(text: str) -> int:
    """``256MB``, ``1.5GiB``, ``300000000``: a size in bytes (KB/MB/GB powers of 1000, K/M/G
    and KiB/MiB/GiB of 1024)."""
    number = text.strip().rstrip("BbIiKkMmGg")
    unit = text.strip()[len(number):].lower()
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"wants a size like 256MB, 1GiB or 300000000, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive size, got {text!r}")
    return int(value)


def _listen(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"wants HOST:PORT (port 0 picks a free one), got {text!r}")
    return text


def _client_options() -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument("--node", metavar="URL", default=os.environ.get(ENV_NODE),
                       help=f"the node's API URL, e.g. ws://127.0.0.1:7070 (env {ENV_NODE})")
    _key_option(group)
    group.add_argument("--tls-ca", metavar="PEM",
                       help="CA certificate(s) a wss:// node's certificate must chain to "
                            "(default: the system's trust store)")
    group.add_argument("--timeout", type=positive_float, default=10.0, metavar="S",
                       help="seconds to wait for the node to connect and answer each request "
                            "(default 10)")
    _format_option(common)
    return common


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=FORMATS, default=os.environ.get(ENV_FORMAT) or "json",
        help=f"json: one JSON object per line, for scripts (default); text: for people "
             f"(env {ENV_FORMAT})")


def _key_option(group: argparse._ActionsContainer) -> None:
    keys = group.add_mutually_exclusive_group()
    keys.add_argument("--cluster-key-file", metavar="PATH",
                      help="read the cluster's shared secret from this file (a trailing newline "
                           f"is not part of it); or set {ENV_KEY}")
    keys.add_argument("--cluster-key", metavar="KEY",
                      help="the shared secret itself: visible to other local users in `ps`, "
                           "prefer --cluster-key-file (default: none, an open cluster)")


def _cluster_key(args: argparse.Namespace, *, warn: bool = False) -> bytes | None:
    """The key from --cluster-key, --cluster-key-file or the environment, in that order; an
    empty one is refused (InvalidClusterKey), never taken as "no key"."""
    from ..core.protocol import cluster_key_bytes

    if args.cluster_key is not None:
        if warn and args.cluster_key:
            log.warning("a --cluster-key on the command line is visible to other local users "
                        "(ps); prefer --cluster-key-file or %s", ENV_KEY)
        return cluster_key_bytes(args.cluster_key)
    if args.cluster_key_file is not None:
        try:
            raw = Path(args.cluster_key_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --cluster-key-file {args.cluster_key_file}: "
                             f"{exc.strerror or exc}") from None
        return cluster_key_bytes(raw.rstrip(b"\r\n"))
    return cluster_key_bytes(os.environ.get(ENV_KEY))


EPILOG = """\
examples:
  p2p-ledger node --data ./n1 --listen 127.0.0.1:7070
  p2p-ledger node --data ./n2 --listen 127.0.0.1:7071 --peer ws://127.0.0.1:7070
  p2p-ledger append --node ws://127.0.0.1:7070 agent/notes "the build is green"
  p2p-ledger read --node ws://127.0.0.1:7071 agent/notes --limit 10
  p2p-ledger watch --node ws://127.0.0.1:7071 agent/notes
  p2p-ledger demo                      # a live 3-node cluster on this machine

exit status: 0 ok, 1 runtime failure, 2 usage or input error, 130 interrupted.
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; ``command`` (the subcommand about to run) decides which plugins load."""
    parser = _Parser(
        prog=PROG, formatter_class=Formatter, epilog=EPILOG,
        description="A peer-to-peer, grow-only, durable memory for agents. Run a node per "
                    "machine (or per agent); append entries to named contexts; every node "
                    "converges on the same set of entries.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    client = _client_options()

    p = sub.add_parser(
        "node", help="run a node (until SIGINT/SIGTERM)", formatter_class=Formatter,
        description="Run a node on a data directory: serve peers and API clients on --listen, "
                    "dial the --peer URLs (and peers learned from them). Prints one line, "
                    "'ready URL NODE_ID' ('ready - NODE_ID' without --listen), once it accepts "
                    "connections; logs go to stderr. SIGINT/SIGTERM stop it cleanly (exit 0).",
        epilog="examples:\n"
               "  p2p-ledger node --data ./n1 --listen 127.0.0.1:0      # any free port\n"
               "  p2p-ledger node --data ./n2 --listen 0.0.0.0:7071 --peer ws://10.0.0.5:7070 "
               "--cluster-key-file ./cluster.key\n"
               "  p2p-ledger node --data ./n3 --listen 0.0.0.0:7070 --mdns --cluster lab   "
               "# zero-config LAN\n")
    p.add_argument("--config", metavar="FILE.toml",
                   help="take node flags from a TOML file: keys are the long flags without "
                        "dashes (peer = [...] for a repeatable one, no-discovery = true for a "
                        "switch); flags given here override it; unknown keys are an error")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="data directory (created if missing; one process at a time)")
    p.add_argument("--listen", type=_listen, metavar="HOST:PORT",
                   help="where to accept peers and API clients; port 0 picks a free port")
    p.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="a peer to dial, e.g. ws://10.0.0.5:7070 (repeatable; more are learned)")
    p.add_argument("--node-id", metavar="ID",
                   help="this node's id (default: the stored one, else random node-XXXXXXXX)")
    p.add_argument("--cluster", default="default", metavar="NAME",
                   help="cluster name; peers of another cluster are refused (default: default)")
    _key_option(p)
    tls = p.add_argument_group("TLS (wss://)")
    tls.add_argument("--tls-cert", metavar="PEM",
                     help="serve wss:// with this certificate (chain); needs --tls-key")
    tls.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    tls.add_argument("--tls-ca", metavar="PEM",
                     help="CA certificate(s) that wss:// peers' certificates must chain to "
                          "(default: the system's trust store); host names are checked too")
    p.add_argument("--gossip-interval", type=positive_float, default=1.0, metavar="S",
                   help="seconds between anti-entropy rounds per peer (default 1)")
    p.add_argument("--no-discovery", dest="discovery", action="store_false",
                   help="dial only the --peer seeds; ignore peers learned from others")
    p.add_argument("--memory-budget", type=byte_size, default=DEFAULT_MEMORY_BUDGET,
                   metavar="SIZE",
                   help="memory for contexts loaded from the store, e.g. 256MB or 1GiB (default "
                        "256MiB): beyond it the least recently used are unloaded and reload "
                        "from disk when next needed; the estimate counts a context of up to 128 "
                        "entries 6.2 KB + 100 B per entry, a larger one 170 B per entry, plus "
                        "50 B per entry and 1x its stored bytes for a context that needed its "
                        "Yjs Doc")
    p.add_argument("--verify-in-background", action="store_true",
                   help="run the full integrity check (content ids, signatures, stored roots) a "
                        "context at a time while serving; `status` shows its progress (a start "
                        "itself checks nothing: it reads the stored summaries)")
    p.add_argument("--mdns", action="store_true",
                   help="find and join peers of the same --cluster on the LAN (advertise and "
                        "browse DNS-SD _p2p-ledger._tcp by multicast; needs a --listen address "
                        "that is not loopback, 0.0.0.0 advertises every interface)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="stderr log level")
    p.add_argument("--public-metrics", action="store_true",
                   help="with a cluster key, serve /metrics and /readyz without the bearer "
                        "token (they never show entry contents)")
    p.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                   help="stderr lines: text, or json (one object per line: ts, level, logger, "
                        "msg; peer changes add event, peer, url, reason, retry_in_s)")
    p.set_defaults(run=_cmd_node)

    p = sub.add_parser(
        "append", parents=[client], formatter_class=Formatter,
        help="append an entry (or one per stdin line, or a file's content)",
        description="Append PAYLOAD to CONTEXT and print the entry. With PAYLOAD '-', append one "
                    "entry per non-blank stdin line (batched, streamed) and print one line per "
                    "entry. With --file, append the file's whole content (any bytes, newlines "
                    "included, up to the node's payload limit, 4 MiB by default) as one entry. "
                    "Exits 0 only once every entry is durable on the node.",
        epilog="examples:\n"
               "  p2p-ledger append --node ws://127.0.0.1:7070 agent/notes 'hello' "
               "--key greeting --meta lang=en\n"
               "  tail -f events.log | p2p-ledger append --node ws://127.0.0.1:7070 ops/events -\n"
               "  p2p-ledger append --node ws://127.0.0.1:7070 agent/plans --file plan.md "
               "--key plan\n")
    p.add_argument("context", metavar="CONTEXT",
                   help="context name: 1-128 of A-Z a-z 0-9 . _ : / -")
    p.add_argument("payload", metavar="PAYLOAD", nargs="?",
                   help="the entry's text, or '-' for stdin lines (or use --file)")
    p.add_argument("--file", metavar="PATH",
                   help="append this file's content as one entry ('-': all of stdin)")
    p.add_argument("--key", default="", help="an optional key to read by (default: none)")
    p.add_argument("--meta", action="append", default=[], metavar="K=V",
                   help="metadata pair (repeatable)")
    p.set_defaults(run=_async(_append))

    p = sub.add_parser(
        "read", parents=[client], formatter_class=Formatter,
        help="print a context's entries in causal order",
        description="Print CONTEXT's entries in causal order (the same order on every node), "
                    "each with the 'cursor' to pass to --after (or watch --since) to resume "
                    "right after it.",
        epilog="examples:\n"
               "  p2p-ledger read --node ws://127.0.0.1:7070 agent/notes --limit 100\n"
               "  p2p-ledger read --node ws://127.0.0.1:7070 agent/notes --tail 5 --format text\n"
               "  p2p-ledger read --node ws://127.0.0.1:7070 agent/notes --after "
               "'node-1a2b3c4d:100'\n")
    p.add_argument("context", metavar="CONTEXT")
    p.add_argument("--key", default=None, help="only entries with this key")
    p.add_argument("--after", default=None, metavar="CURSOR",
                   help="start after this cursor (from a previous line's 'cursor')")
    ends = p.add_mutually_exclusive_group()
    ends.add_argument("--limit", type=non_negative_int, default=None, metavar="N",
                      help="print at most N entries (the first N)")
    ends.add_argument("--tail", type=non_negative_int, default=None, metavar="N",
                      help="print only the last N entries (reads the context through once)")
    p.set_defaults(run=_async(_read))

    p = sub.add_parser(
        "watch", parents=[client], formatter_class=Formatter,
        help="print entries as they arrive",
        description="Print CONTEXT's entries after --since, then each new one as it arrives "
                    "(local or from a peer), each with its 'cursor'. Runs until Ctrl-C, or exits "
                    "0 after --limit entries. On a terminal, says on stderr what it watches.",
        epilog="example:\n"
               "  p2p-ledger watch --node ws://127.0.0.1:7070 agent/notes --since "
               "'node-1a2b3c4d:100' --limit 1\n")
    p.add_argument("context", metavar="CONTEXT")
    p.add_argument("--key", default=None, help="only entries with this key")
    p.add_argument("--since", default=None, metavar="CURSOR",
                   help="skip what this cursor covers (default: the whole context)")
    p.add_argument("--limit", type=non_negative_int, default=None, metavar="N",
                   help="exit 0 after N entries")
    p.set_defaults(run=_async(_watch))

    p = sub.add_parser(
        "status", parents=[client], formatter_class=Formatter,
        help="print a node's status",
        description="Print one object: node_id, url, root (hex), contexts, entries and "
                    "peers (node_id, url, state, root_agrees, ...).",
        epilog="example:\n  p2p-ledger status --node ws://127.0.0.1:7070 --format text\n")
    p.set_defaults(run=_async(_status))

    p = sub.add_parser(
        "prove", parents=[client], formatter_class=Formatter,
        help="print an inclusion proof of an entry (JSON), checkable offline",
        description="Ask the node for a proof that entry ID is in CONTEXT: the entry's record, "
                    "the context's Merkle root, the path between them, and the root signed by "
                    "the node's key (its 'origin' in status) with the time it signed. Anyone "
                    "can check it without trusting the node: 'p2p-ledger check-proof FILE "
                    "--key ORIGIN' (or --root HEX).",
        epilog="example:\n  p2p-ledger prove --node ws://127.0.0.1:7070 agent/notes 3f2a... "
               "> proof.json\n")
    p.add_argument("context", metavar="CONTEXT")
    p.add_argument("entry_id", metavar="ID", help="the entry's id (hex, from read)")
    p.set_defaults(run=_async(_prove))

    p = sub.add_parser(
        "check-proof", formatter_class=Formatter,
        help="check an inclusion proof offline (no node needed)",
        description="Check a proof from 'prove': the record hashes to its id, belongs to the "
                    "context, the Merkle path leads from the id to the context root, and the "
                    "root's signature is valid. With --key, the root must be signed by that "
                    "public key (a node's 'origin', obtained from someone you trust); with "
                    "--root, the root must be the one you trust (e.g. read from 'contexts' on "
                    "another node). Exit 0 and the entry when it holds; exit 1 naming what "
                    "failed (InvalidProof) otherwise.",
        epilog="examples:\n  p2p-ledger check-proof proof.json --key 3b6a27bc...\n"
               "  p2p-ledger check-proof proof.json --root 9c41...\n")
    p.add_argument("file", metavar="FILE", help="the proof (JSON), or '-' for stdin")
    p.add_argument("--root", metavar="HEX", help="the context root you trust")
    p.add_argument("--key", metavar="HEX",
                   help="the public key (64 hex digits: a node's origin) whose signature on "
                        "the root you trust")
    _format_option(p)
    p.set_defaults(run=_cmd_check_proof)

    p = sub.add_parser(
        "contexts", parents=[client], formatter_class=Formatter,
        help="list a node's contexts with their entry counts and roots",
        description="Print every context the node holds, sorted by name: its name, number of "
                    "entries and Merkle root (hex). Two nodes hold the same entries of a "
                    "context iff its roots are equal.",
        epilog="example:\n  p2p-ledger contexts --node ws://127.0.0.1:7070 --format text\n")
    p.set_defaults(run=_async(_contexts))

    p = sub.add_parser(
        "verify", parents=[client], formatter_class=Formatter,
        help="check a node's entries and Merkle roots (stopped: --data; running: --node)",
        description="With --data, re-check every stored entry's content id and every Merkle "
                    "root of a STOPPED node's data directory. With --node, ask a RUNNING node to "
                    "re-derive every root from the entries it holds. Exit 0 with a summary when "
                    "sound; exit 1 naming the bad context and entry otherwise.",
        epilog="examples:\n  p2p-ledger verify --data ./n1\n"
               "  p2p-ledger verify --node ws://127.0.0.1:7070\n")
    p.add_argument("--data", metavar="DIR", help="a stopped node's data directory")
    p.set_defaults(run=_cmd_verify)

    p = sub.add_parser(
        "repair", formatter_class=Formatter,
        help="rebuild a damaged store from what still verifies (a stopped node)",
        description="For a STOPPED node whose store is damaged (StoreDamagedError): move the "
                    "damaged files into DIR/damaged-TIME/ (nothing is deleted), salvage every "
                    "stored update that can still be read, keep those that pass the same checks "
                    "as an update from a peer, and write them to a new store. The node then "
                    "starts and fetches what was dropped from its peers. Prints a report.",
        epilog="example:\n  p2p-ledger repair --data ./n1 && p2p-ledger verify --data ./n1\n")
    p.add_argument("--data", required=True, metavar="DIR", help="the node's data directory")
    _format_option(p)
    p.set_defaults(run=_cmd_repair)

    p = sub.add_parser(
        "snapshot", parents=[client], formatter_class=Formatter,
        help="save a context to a self-verifying file",
        description="Write CONTEXT as a snapshot file (every entry and the Merkle root). The "
                    "file is checked before it is written; '-' writes to stdout. A context the "
                    "node does not hold is an error (UnknownContext, with near names).",
        epilog="example:\n  p2p-ledger snapshot --node ws://127.0.0.1:7070 agent/notes "
               "--out notes.snap\n")
    p.add_argument("context", metavar="CONTEXT")
    p.add_argument("--out", required=True, metavar="FILE", help="output file, or '-'")
    p.set_defaults(run=_async(_snapshot))

    p = sub.add_parser(
        "load", parents=[client], formatter_class=Formatter,
        help="add a snapshot's entries to a node",
        description="Send a snapshot file to the node, which verifies it whole and adds the "
                    "entries it lacks. Prints the context and how many entries were added.",
        epilog="example:\n  p2p-ledger load --node ws://127.0.0.1:7071 notes.snap\n")
    p.add_argument("file", metavar="FILE", help="snapshot file, or '-' for stdin")
    p.add_argument("--fail-if-exists", action="store_true",
                   help="refuse (AlreadyExists) if the node already has entries in the context")
    p.set_defaults(run=_async(_load))

    p = sub.add_parser(
        "demo", formatter_class=Formatter,
        help="run a live local cluster demo (well under a minute)",
        description="Start N real node processes on 127.0.0.1 with temporary data, every link "
                    "through a relay of its own so the demo can cut it. Then: write on every "
                    "node and watch the roots converge (a live status table); SIGKILL the "
                    "middle node and keep writing; restart it and watch it catch up; cut n1 off "
                    "from the rest (a partition), write on both sides, heal and watch them "
                    "converge; finally check every acknowledged entry is on every node. Exit 0 "
                    "when every phase passed. Stops every process and removes its data, "
                    "whatever happens.",
        epilog="example:\n  p2p-ledger demo --nodes 3 --entries 200\n")
    p.add_argument("--nodes", type=int, default=3, choices=range(3, 10), metavar="N",
                   help="number of nodes, 3-9 (default 3)")
    p.add_argument("--entries", type=non_negative_int, default=100, metavar="N",
                   help="entries each node writes per round (default 100)")
    p.set_defaults(run=_cmd_demo)

    _add_plugin(sub, command, "scenario", "p2p_ledger.cli.scenario", "add_scenario_commands",
                "run simulator scenarios (deterministic, seeded)")
    _add_plugin(sub, command, "bench", "p2p_ledger.cli.bench", "add_bench_command",
                "run benchmarks")
    return parser


def _add_plugin(sub: Any, command: str | None, name: str, module: str, func: str,
                help_text: str) -> None:
    """Subcommands owned by other modules, imported only when asked for (they may be heavy)."""
    reason = "not asked for"
    if command == name:
        try:
            getattr(import_module(module), func)(sub)
            return
        except (ImportError, AttributeError) as exc:
            reason = f"{module}.{func} cannot be loaded ({type(exc).__name__}: {exc})"
    # A stand-in so `--help` lists it and `p2p-ledger NAME ...` reaches the real one (or says why).
    p = sub.add_parser(name, help=help_text, add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(run=lambda _args: _fail("ImportError",
                                           f"the {name} command is unavailable: {reason}"))


def _fail(kind: str, message: str, code: int = EXIT_FAILURE) -> int:
    _error_line(kind, message)
    return code


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("p2p-ledger")
    except Exception:  # not installed (run from a checkout): still answer --version
        return "unknown"


# ---- entry point -------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command)
    try:
        if command == "node":
            at = args_list.index("node") + 1
            args_list[at:] = expand_config(_subparser(parser, "node"), args_list[at:])
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except LedgerError as exc:  # a bad --config file
        return _report(exc)
    if getattr(args, "format", "json") not in FORMATS:  # argparse checks flags, not defaults
        return _fail("UsageError", f"{ENV_FORMAT}={args.format!r}: want one of "
                                   f"{', '.join(FORMATS)}", EXIT_USAGE)
    # Our commands set `run`; the plugins (scenario, bench) set `func`.
    runner: Callable[[argparse.Namespace], object] | None = (
        getattr(args, "run", None) or getattr(args, "func", None))
    if runner is None:
        return _fail("UsageError", f"{command}: nothing to run")
    try:
        result = runner(args)
    except BaseException as exc:  # noqa: B036 - sorted below; unexpected ones are re-raised
        return _report(exc)
    return result if isinstance(result, int) else EXIT_OK


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return cast(argparse.ArgumentParser, action.choices[name])
    raise KeyError(name)


def _async(fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import trio

        result = trio.run(fn, args)
        return result if isinstance(result, int) else EXIT_OK

    return run


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


_INPUT_ERRORS = (LocalInputError, InvalidSnapshot, UnsupportedVersion)
# sqlite3.Error: a damaged database file is the environment's fault, not a bug of ours.
_EXPECTED = (LedgerError, OSError, sqlite3.Error, KeyboardInterrupt)


def _cancelled() -> tuple[type[BaseException], ...]:
    """``trio.Cancelled`` once a command has imported trio (before, nothing can raise it)."""
    trio = sys.modules.get("trio")
    return () if trio is None else (trio.Cancelled,)


def _report(exc: BaseException) -> int:
    """Turn an expected failure into one stderr line and an exit status; re-raise bugs."""
    if isinstance(exc, SystemExit):
        raise exc
    cancelled = _cancelled()
    leaves = [e for e in _leaves(exc) if not isinstance(e, cancelled)]
    if not leaves or not all(isinstance(e, _EXPECTED + cancelled) for e in leaves):
        raise exc  # a bug: the traceback is the useful output
    if any(isinstance(e, KeyboardInterrupt) for e in leaves):
        _error_line(None, "interrupted")
        return EXIT_INTERRUPTED
    first = leaves[0]
    if isinstance(first, BrokenPipeError):
        # stdout's reader left (e.g. `| head`): stop quietly, as Unix tools do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    _error_line(type(first).__name__, str(first) or type(first).__name__)
    return EXIT_USAGE if isinstance(first, _INPUT_ERRORS) else EXIT_FAILURE


def _error_line(kind: str | None, message: str) -> None:
    text = " ".join(message.split())  # one line, whatever the message held
    prefix = f"{PROG}: error: {kind}: " if kind else f"{PROG}: "
    with contextlib.suppress(OSError):
        sys.stderr.write(prefix + text + "\n")
        sys.stderr.flush()


# ---- shared helpers ----------------------------------------------------------------------------

def _entry_line(entry: Entry, cursor: Cursor) -> dict[str, Any]:
    return {**entry.to_json(), "cursor": str(cursor)}


def _node_url(args: argparse.Namespace) -> str:
    url = args.node
    if not url:
        raise UsageError(f"--node URL is required (or set {ENV_NODE})")
    if "://" not in url:
        url = f"ws://{url}"  # HOST:PORT is accepted as shorthand
    from ..trio.transport import check_url

    return check_url(str(url), "--node")


def _parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidMeta(f"--meta wants NAME=VALUE, got {pair!r}")
        if name in meta:
            raise InvalidMeta(f"--meta {name} given twice")
        meta[name] = value
    return meta


@contextmanager
def _within(seconds: float, what: str) -> Iterator[None]:
    import trio

    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise LinkBroken(f"{what}: no answer within {seconds:g}s (see --timeout)") from None


@asynccontextmanager
async def _client(args: argparse.Namespace) -> AsyncIterator[Client]:
    # The connect is bounded by its own timeout. Not by a cancel scope around the `async with`:
    # the connection runs a nursery, and a scope that closes around it corrupts trio's stack.
    from ..trio.client import Client

    url, key = _node_url(args), _cluster_key(args)
    async with Client.connect(url, key, timeout=args.timeout, tls_ca=args.tls_ca) as client:
        yield client


def _output_file(path: str) -> Path:
    """``path`` as a file to (over)write, refused with a clear reason before any work is done."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--out {path} is a directory; name a file (e.g. {out / 'x.snap'})")
    if not out.parent.is_dir():
        raise UsageError(f"--out {path}: directory {out.parent} does not exist")
    return out


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


# ---- node --------------------------------------------------------------------------------------


def _cmd_node(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    gc.set_threshold(*GC_THRESHOLDS)
    tune_malloc()
    import trio

    return int(trio.run(_run_node, args))


async def _run_node(args: argparse.Namespace) -> int:
    import trio

    from ..trio.runtime import open_node  # the client commands do not need the runtime
    from ..trio.transport import check_url

    # Before open_node creates the data directory (it checks again, naming no flag).
    if args.node_id is not None:
        check_node_id(args.node_id)
    for url in args.peer:
        check_url(url, "--peer")
    cluster_key = _cluster_key(args, warn=True)
    # Opened before the node so a signal during start-up is handled, not lost.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(
            args.data, listen=args.listen, peers=args.peer, node_id=args.node_id,
            cluster=args.cluster, cluster_key=cluster_key, tls_cert=args.tls_cert,
            tls_key=args.tls_key, tls_ca=args.tls_ca,
            gossip_interval=args.gossip_interval, discovery=args.discovery, mdns=args.mdns,
            public_metrics=args.public_metrics, memory_budget=args.memory_budget,
            verify_in_background=args.verify_in_background,
        ) as node:
            log.info("node %s ready at %s (data %s, %d entries in %d contexts, peers %s)",
                     node.node_id, node.url or "-", args.data, node.ledger.entry_count(),
                     len(node.ledger.contexts), ", ".join(args.peer) or "none")
            sys.stdout.write(f"ready {node.url or '-'} {node.node_id}\n")
            sys.stdout.flush()
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
    log.info("stopped")
    return EXIT_OK


# ---- client commands ---------------------------------------------------------------------------

async def _append(args: argparse.Namespace) -> int:
    check_context(args.context)
    meta = _parse_meta(args.meta)
    if args.payload is not None and args.file is not None:
        raise UsageError("append takes a PAYLOAD or --file PATH, not both")
    if args.payload is None and args.file is None:
        raise UsageError("append wants a PAYLOAD ('-' for one entry per stdin line) or "
                         "--file PATH")
    payload = _payload(_read_payload_file(args.file)) if args.file is not None else args.payload
    out = Output(args.format)
    async with _client(args) as client:
        if payload == "-" and args.file is None:
            return await _append_lines(args, client, meta, out)
        with _within(args.timeout + _transfer_seconds(payload), client.url):
            entry = await client.append(args.context, payload, args.key, meta)
        out.record(entry.to_json(), entry_text(entry))
    return EXIT_OK


def _read_payload_file(path: str) -> bytes:
    """A whole file (or stdin) as one payload, refused before reading when it cannot fit."""
    if path != "-":
        with contextlib.suppress(OSError):
            size = Path(path).stat().st_size
            if size > MAX_LINE:
                raise PayloadTooLarge(f"--file {path} is {size:,} bytes; no node accepts "
                                      f"payloads over {MAX_LINE:,} bytes")
        return _read_input(path)
    data = sys.stdin.buffer.read(MAX_LINE + 1)
    if len(data) > MAX_LINE:
        raise PayloadTooLarge(f"stdin is over {MAX_LINE:,} bytes; no node accepts that payload")
    return data


def _transfer_seconds(payload: bytes | str) -> float:
    # A big payload takes a while to send and commit: allow 10 MB/s on top of --timeout.
    return len(payload) / 10e6


async def _append_lines(args: argparse.Namespace, client: Client, meta: dict[str, str],
                        out: Output) -> int:
    """One entry per non-blank stdin line, in batches; stdin is read while batches commit."""
    import trio

    send, receive = trio.open_memory_channel[tuple[int, bytes]](4 * BATCH_LINES)
    progress = Progress()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_lines, send)
        done = 0
        async with receive:
            async for first in receive:
                batch = [first]
                size = len(first[1])
                # Take what is already read, up to a batch: trickling input goes out at once.
                while len(batch) < BATCH_LINES and size < BATCH_BYTES:
                    try:
                        item = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(item)
                    size += len(item[1])
                items = [(args.context, _payload(line), args.key, meta) for _, line in batch]
                try:
                    # Per batch, not for the whole input: a big input takes as long as it takes.
                    with _within(args.timeout, client.url):
                        entries = await client.append_many(items)
                except LedgerError as exc:
                    lines = f"{batch[0][0]}-{batch[-1][0]}" if len(batch) > 1 else batch[0][0]
                    progress.done()
                    raise _with_note(exc, f"(stdin line{'s' if len(batch) > 1 else ''} {lines}; "
                                          f"{done} entries appended before)") from None
                out.records([e.to_json() for e in entries], [entry_text(e) for e in entries])
                done += len(entries)
                if done >= PROGRESS_AFTER:
                    progress.update(f"appended {done:,} entries "
                                    f"({done / max(progress.elapsed, 1e-9):,.0f}/s)")
    progress.done(f"appended {done:,} entries in {progress.elapsed:.1f}s")
    return EXIT_OK


async def _read_lines(send: trio.MemorySendChannel[tuple[int, bytes]]) -> None:
    """Send (line number, line) for each non-blank stdin line; the channel's bound is the
    backpressure that keeps a huge input from being read faster than it is appended."""
    import trio

    stdin = sys.stdin.buffer
    read = getattr(stdin, "read1", stdin.read)
    async with send:
        partial = bytearray()  # a line still waiting for its newline
        number = 0
        while True:
            # A thread, so a slow producer (tail -f) never blocks the websocket's keepalive.
            chunk = await trio.to_thread.run_sync(read, 1 << 16, abandon_on_cancel=True)
            if not chunk:
                lines = [bytes(partial)] if partial else []
            else:
                lines = chunk.split(b"\n")
                partial += lines[0]
                if len(lines) == 1:
                    if len(partial) > MAX_LINE:
                        raise PayloadTooLarge(f"stdin line {number + 1} is over {MAX_LINE} bytes")
                    continue
                lines[0] = bytes(partial)
                partial = bytearray(lines.pop())
            for line in lines:
                number += 1
                line = line.removesuffix(b"\r")
                if line.strip():
                    await send.send((number, line))
            if not chunk:
                return


def _payload(data: bytes) -> bytes | str:
    try:
        return data.decode("utf-8")  # text travels as JSON text; other bytes as base64
    except UnicodeDecodeError:
        return data


def _with_note(exc: LedgerError, note: str) -> LedgerError:
    try:
        return type(exc)(f"{exc} {note}")
    except TypeError:  # an error class with another signature: keep it as it is
        return exc


async def _read(args: argparse.Namespace) -> int:
    check_context(args.context)
    cursor = Cursor.parse(args.after)
    remaining = args.limit
    out = Output(args.format)
    # --tail N: page through, keeping the last N (the API pages forward from a cursor only).
    tail: deque[tuple[Entry, Cursor]] | None = None if args.tail is None else deque(
        maxlen=args.tail)
    progress = Progress()
    seen = 0
    async with _client(args) as client:
        while remaining is None or remaining > 0:
            page = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            with _within(args.timeout, client.url):
                entries, _ = await client.get(args.context, args.key, cursor, page)
            rows = []
            for entry in entries:
                cursor = cursor.advanced((entry,))
                rows.append((entry, cursor))
            if tail is not None:
                tail.extend(rows)
                seen += len(rows)
                progress.update(f"read {seen:,} entries for the last {args.tail:,}")
            else:
                _print_entries(out, rows)
            if remaining is not None:
                remaining -= len(entries)
            if len(entries) < page:
                break
    if tail is not None:
        progress.done()
        _print_entries(out, tail)
    return EXIT_OK


def _print_entries(out: Output, rows: Iterable[tuple[Entry, Cursor]]) -> None:
    rows = list(rows)
    out.records([_entry_line(e, c) for e, c in rows], [entry_text(e, c) for e, c in rows])


async def _watch(args: argparse.Namespace) -> int:
    check_context(args.context)
    since = Cursor.parse(args.since)
    if args.limit == 0:
        return EXIT_OK
    seen = 0
    out = Output(args.format)
    async with _client(args) as client:
        if sys.stderr.isatty():  # a person is looking: say what this waits for, and where
            what = f"{args.context}" + (f" (key {args.key!r})" if args.key else "")
            start = f"after cursor {since}" if since else "from the start"
            sys.stderr.write(f"watching {what} on {client.url} (node {client.node_id}), "
                             f"{start}; Ctrl-C to stop\n")
            sys.stderr.flush()
        # No deadline here: waiting for the next entry is the point (connects are bounded).
        stream = cast(AsyncGenerator[tuple[Entry, Cursor], None],
                      client.watch(args.context, args.key, since))
        async with contextlib.aclosing(stream):  # closes the watch's own connection on break
            async for entry, cursor in stream:
                out.record(_entry_line(entry, cursor), entry_text(entry, cursor))
                seen += 1
                if args.limit is not None and seen >= args.limit:
                    break
    return EXIT_OK


async def _status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        with _within(args.timeout, client.url):
            status = await client.status()
    Output(args.format).record(status, status_text(status))
    return EXIT_OK


async def _prove(args: argparse.Namespace) -> int:
    check_context(args.context)
    async with _client(args) as client:
        with _within(args.timeout, client.url):
            proof = await client.prove(args.context, args.entry_id)
    Output(args.format).record(proof)
    return EXIT_OK


def _cmd_check_proof(args: argparse.Namespace) -> int:
    import datetime
    import json

    from ..core.proof import InvalidProof, check_proof, signed_root

    key = None
    if args.key is not None:
        try:
            key = bytes.fromhex(args.key)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise UsageError(f"--key {args.key[:80]!r} is not a public key (64 hex digits)")
    text = _read_input(args.file)  # UsageError when it cannot be read
    try:
        doc = json.loads(text)
        root = None if args.root is None else bytes.fromhex(args.root)
    except ValueError as exc:
        raise InvalidProof(f"{args.file}: {exc}") from None
    entry = check_proof(doc, root, key)
    signed = signed_root(doc)
    row = {"ok": True, "context": entry.context, "entry_id": entry.id,
           "context_root": doc["context_root"], "entry": entry.to_json(),
           "signed_by": signed.key.hex() if signed else None,
           "signed_at_ns": signed.signed_at_ns if signed else None,
           "key_trusted": key is not None, "root_trusted": root is not None}
    text_line = (f"ok: entry {entry.id[:16]} is in context {entry.context} under root "
                 f"{doc['context_root'][:16]}")
    if signed is not None:
        when = datetime.datetime.fromtimestamp(signed.signed_at_ns / 1e9, datetime.UTC)
        text_line += (f", signed by {signed.key.hex()[:16]} at {when:%Y-%m-%d %H:%M:%S} UTC "
                      f"({signed.entries} entries)")
    if key is None and root is None:
        text_line += " (nothing you trust was given: pass --key or --root)"
    Output(args.format).record(row, text_line)
    return EXIT_OK


async def _contexts(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        with _within(args.timeout, client.url):
            rows = await client.contexts()
    out = Output(args.format)
    if out.text:
        out.record({}, contexts_text(rows))
    else:
        out.records(rows, [])
    return EXIT_OK


class UnknownContext(LocalInputError):
    """The node holds no context of that name (the message lists near names)."""


async def _snapshot(args: argparse.Namespace) -> int:
    from ..core.snapshot import decode_snapshot

    check_context(args.context)
    out = None if args.out == "-" else _output_file(args.out)  # before asking the node
    async with _client(args) as client:
        with _within(args.timeout, client.url):
            blob = await client.snapshot(args.context)
            # Check what the node sent before anyone relies on the file.
            context, root, entries, _heads = decode_snapshot(blob, DEFAULT_LIMITS)
            if not entries:  # a context exists once it has an entry: this one does not
                names = [row["context"] for row in await client.contexts()]
                raise UnknownContext(_unknown_context(args.context, names, client.url))
    if out is None:
        sys.stdout.buffer.write(blob)
        sys.stdout.buffer.flush()
        return EXIT_OK
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # write + rename: a crash never leaves half a snapshot
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    row = {"context": context, "entries": len(entries), "root": root.hex(), "bytes": len(blob),
           "out": str(out)}
    Output(args.format).record(row, f"wrote {out}: {len(entries):,} entries of {context}, "
                                    f"{len(blob):,} bytes, root {root.hex()[:16]}")
    return EXIT_OK


def _unknown_context(name: str, names: Sequence[str], url: str) -> str:
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if near:
        hint = "did you mean " + " or ".join(repr(n) for n in near) + "?"
    elif names:
        hint = f"it holds {len(names)} other contexts (p2p-ledger contexts --node {url})"
    else:
        hint = "it holds no context yet"
    return f"node at {url} has no context {name!r}; {hint}"


async def _load(args: argparse.Namespace) -> int:
    blob = _read_input(args.file)
    progress = Progress()
    async with _client(args) as client:
        # Verifying a big snapshot takes the node a while: allow more than one request's worth.
        with _within(args.timeout + _transfer_seconds(blob), client.url), \
                progress.ticking(f"loading {len(blob):,} bytes into {client.url}"):
            context, added = await client.load(blob, args.fail_if_exists)
    Output(args.format).record({"context": context, "added": added},
                               f"loaded {context}: {added:,} entries added")
    return EXIT_OK


# ---- verify ------------------------------------------------------------------------------------

def _cmd_verify(args: argparse.Namespace) -> int:
    if args.data is None:
        if not args.node:
            raise UsageError(f"verify wants --data DIR (a stopped node) or --node URL (a "
                             f"running one; or set {ENV_NODE})")
        import trio

        return int(trio.run(_verify_running, args))
    import secrets
    import tempfile

    from ..core.entry import DEFAULT_LIMITS
    from ..trio.store import SqliteStore, refuse_vanished
    from ..trio.verify import second_process, spilling

    data = Path(args.data)
    refuse_vanished(data)  # a store gone from next to its WAL files: StoreDamagedError
    if not (data / "ledger.sqlite3").is_file():
        # Opening the store would create an empty one: say what is wrong instead.
        raise UsageError(f"{data} is not a p2p-ledger data directory (no ledger.sqlite3)")
    started = time.monotonic()
    store = SqliteStore(data)  # StoreLockedError if the node is running
    try:
        node_id = store.get_meta("node_id") or "?"
        # A second process takes a share of the work (started now: its start overlaps the
        # open), and a context's ids go to files past 64k (``trio/verify.py``): two cores,
        # memory bounded whatever the size.
        with tempfile.TemporaryDirectory(prefix="p2p-ledger-verify-") as tmp, \
                second_process(data / "ledger.sqlite3", DEFAULT_LIMITS, Path(tmp)) as apart:
            from ..core.ledger import Ledger  # (pycrdt: while the second process starts)
            from ..trio.identity import open_identity

            identity = open_identity(data, store, create=False)  # IdentityError: no key
            # Opens from the stored summaries (a store without them gets them computed once),
            # then checks: every content id, signature, root and summary.
            ledger = Ledger.open(store, identity, secrets.token_hex(16), DEFAULT_LIMITS,
                                 label=node_id)
            progress = Progress()
            problems = ledger.verify(lambda done, total, entries: progress.update(
                f"verifying {data}: {done:,}/{total:,} contexts, {entries:,} entries"),
                spilling(tmp), apart)
        progress.done()
    finally:
        store.close()
    return _verified(args, problems, node_id, ledger.entry_count(), len(ledger.contexts),
                     ledger.root().hex(), time.monotonic() - started)


async def _verify_running(args: argparse.Namespace) -> int:
    started = time.monotonic()
    async with _client(args) as client:
        with _within(args.timeout, client.url):
            status = await client.status()
        # Re-deriving every root takes a while on a big node: allow ~1 s per 100k entries.
        with _within(args.timeout + status["entries"] / 1e5, client.url), \
                Progress().ticking(f"{client.url} verifying {status['entries']:,} entries"):
            problems = await client.verify()
    return _verified(args, problems, status["node_id"], status["entries"], status["contexts"],
                     status["root"], time.monotonic() - started)


def _verified(args: argparse.Namespace, problems: Sequence[str], node_id: str, entries: int,
              contexts: int, root: str, seconds: float) -> int:
    if problems:
        from ..core.errors import IntegrityError

        raise IntegrityError("; ".join(problems))
    row = {"ok": True, "node_id": node_id, "entries": entries, "contexts": contexts,
           "root": root, "seconds": round(seconds, 3)}
    Output(args.format).record(row, f"ok: node {node_id}: {entries} entries in {contexts} "
                                    f"contexts verified, root {root[:16]}, {seconds:.2f}s")
    return EXIT_OK


def _cmd_repair(args: argparse.Namespace) -> int:
    from ..trio.repair import repair

    with Progress().ticking(f"repairing {args.data}"):
        report = repair(args.data)
    Output(args.format).record(
        report.to_json(), f"repaired {args.data}: kept {report.kept} updates "
                          f"({report.entries} entries in {report.contexts} contexts), dropped "
                          f"{report.dropped}; damaged files kept in {report.damaged_copy}")
    return EXIT_OK


# ---- demo --------------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(nodes=args.nodes, entries=args.entries)


if __name__ == "__main__":
    sys.exit(main())
