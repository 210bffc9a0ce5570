"""How the command line prints: JSON lines for scripts, text for people, progress for terminals.

* ``Output`` writes one record at a time to stdout, as a JSON object on one line (``--format
  json``, the default) or as text for a person (``--format text``, or ``P2P_LEDGER_FORMAT=text``
  once in a shell profile). JSON stays the default whatever stdout is: a command copied from a
  terminal into a pipeline must print what the pipeline expects.
* The ``*_text`` functions are the text renderings; they never carry more than the JSON does.
* ``Progress`` is a self-overwriting line on stderr, shown only when stderr is a terminal (a
  script's stderr stays clean), for work that takes more than a moment.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TextIO

from ..core.cursor import Cursor
from ..core.entry import Entry

ENV_FORMAT = "P2P_LEDGER_FORMAT"
FORMATS = ("json", "text")
PAYLOAD_SHOWN = 2000  # characters of a payload a text line shows (the JSON has it all)


class Output:
    """One record per call, flushed at once (consumers act on each line as it comes)."""

    def __init__(self, fmt: str = "json", stream: TextIO | None = None) -> None:
        self.format = fmt
        self.stream = stream

    @property
    def text(self) -> bool:
        return self.format == "text"

    def record(self, obj: Mapping[str, Any], text: str | None = None) -> None:
        """Print ``obj`` as a JSON line, or ``text`` (default: ``key: value`` lines) as text."""
        out = self.stream or sys.stdout  # looked up late: tests swap sys.stdout
        if self.text:
            out.write((text if text is not None else mapping_text(obj)) + "\n")
        else:
            out.write(json.dumps(obj) + "\n")
        out.flush()

    def records(self, objs: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> None:
        """Several records in one write (bulk append prints a batch at once)."""
        out = self.stream or sys.stdout
        lines = texts if self.text else [json.dumps(o) for o in objs]
        out.write("".join(line + "\n" for line in lines))
        out.flush()


def mapping_text(obj: Mapping[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in obj.items())


def entry_text(entry: Entry, cursor: Cursor | None = None) -> str:
    """``HH:MM:SS origin:seq [key] payload {meta}`` (the origin's first 12 hex digits, enough for
    a person); the cursor to resume after it, if given."""
    when = datetime.fromtimestamp(entry.appended_at_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    try:
        payload = entry.payload.decode("utf-8")
        shown = printable(payload[:PAYLOAD_SHOWN])
        if len(payload) > PAYLOAD_SHOWN:
            shown += f"… ({len(entry.payload):,} bytes)"
    except UnicodeDecodeError:
        shown = f"<{len(entry.payload):,} bytes, not UTF-8>"
    parts = [when, f"{entry.origin[:12]}:{entry.seq}"]
    if entry.key:
        parts.append(f"[{printable(entry.key)}]")
    parts.append(shown)
    if entry.meta:
        meta = ", ".join(f"{k}={v}" for k, v in sorted(entry.meta.items()))
        parts.append("{" + printable(meta) + "}")
    if cursor is not None:
        parts.append(f"(cursor {cursor})")
    return " ".join(parts)


def printable(text: str) -> str:
    """``text`` on one line with no control characters: a payload must not be able to move the
    cursor or recolour a terminal (newline and tab show as \\n and \\t, others as \\xNN)."""
    return text.translate(_CONTROL)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), *range(0x7F, 0xA0)]} | {
    0x0A: "\\n", 0x09: "\\t"}


def status_text(status: Mapping[str, Any]) -> str:
    lines = [f"node {status.get('node_id')} [{str(status.get('origin', ''))[:8]}] at "
             f"{status.get('url') or '(not listening)'}",
             f"  {status.get('entries', 0):,} entries in {status.get('contexts', 0):,} contexts, "
             f"root {str(status.get('root', ''))[:16]}"]
    peers = status.get("peers") or []
    if not peers:
        lines.append("  no peers")
    for peer in peers:
        agrees = {True: "in sync", False: "roots differ", None: "root unknown"}[
            peer.get("root_agrees")]
        error = f" - last error: {peer['last_error']}" if peer.get("last_error") else ""
        # (the label and the start of the origin: two nodes may share a label)
        who = f"{peer.get('node_id') or '?'} [{str(peer.get('origin') or '?')[:8]}]"
        lines.append(f"  peer {who} {peer.get('url') or '(inbound)'}: "
                     f"{peer.get('state')}, {agrees}{error}")
    return "\n".join(lines)


def contexts_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "(no contexts)"
    width = max(len("CONTEXT"), *(len(r["context"]) for r in rows))
    lines = [f"{'CONTEXT':<{width}}  {'ENTRIES':>9}  ROOT"]
    lines += [f"{r['context']:<{width}}  {r['entries']:>9,}  {r['root'][:16]}" for r in rows]
    return "\n".join(lines)


class Progress:
    """A self-overwriting progress line on stderr, only when stderr is a terminal.

    ``update(text)`` shows a line (at most 5 a second); ``ticking(text)`` shows ``text`` and
    the elapsed seconds while a blocking call runs; ``done(text)`` ends the line with a summary
    (or clears it)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.started = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._shown < 0.2):
            return
        self._write(f"\r\x1b[K{text}")
        self._shown = now

    def done(self, text: str | None = None) -> None:
        if self.enabled and self._shown:
            self._write("\r\x1b[K" + (f"{text}\n" if text else ""))
            self._shown = 0.0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @contextmanager
    def ticking(self, text: str) -> Iterator[None]:
        """Show ``text (Ns)`` every half second until the block ends (a thread does it, so the
        block may be one long blocking call)."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()
        started = time.monotonic()

        def tick() -> None:
            while not stop.wait(0.5):
                self.update(f"{text} ({time.monotonic() - started:.0f}s)", force=True)

        thread = threading.Thread(target=tick, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.done()

    def _write(self, text: str) -> None:
        with self._lock:
            try:
                self.stream.write(text)
                self.stream.flush()
            except OSError:
                self.enabled = False  # the terminal went away; the work goes on
