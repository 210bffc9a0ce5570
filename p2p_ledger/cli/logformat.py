"""How a node's log lines look on stderr: ``text`` (one readable line) or ``json`` (one JSON
object per line, for log collectors).

JSON fields, always present: ``ts`` (UTC, ISO 8601 with milliseconds), ``level`` (lower case),
``logger``, ``msg`` (the text line). Peer state changes (``NodeCore``'s ``PeerEvent``) add
``event`` (connected | lost | unreachable | refused | dropped), ``peer`` (its node id, a label,
"" when not known yet), ``origin`` (its public key, hex: who it is, "" when not known yet),
``url`` (the dialed URL, or "inbound"), ``reason`` and ``retry_in_s`` (seconds to the next
dial, or null). An exception adds ``exc`` (its formatted traceback).
"""

from __future__ import annotations

import json
import logging
import sys
import time

LOG_FORMATS = ("text", "json")
EVENT_FIELDS = ("event", "peer", "origin", "url", "reason", "retry_in_s")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    if level != "debug":
        # websockets logs every API connection at info: noise next to the node's own lines.
        logging.getLogger("websockets").setLevel(logging.WARNING)
