"""Plain HTTP on the node's own port: health, readiness, metrics and the dashboard.

websockets calls ``process_request`` for every incoming request before its opening handshake;
a request that asks for a websocket upgrade goes on (peers and API clients), any other GET is
answered here and the connection closed:

* ``/healthz``: 200 ``ok``, the process is alive and serving;
* ``/readyz``: 200 ``ready`` when the store answers and, if the node has peers, at least one
  linked peer last reported our root (caught up); else 503 naming what is missing;
* ``/metrics``: the Prometheus text format (``metrics.py``);
* ``/``: the dashboard page (``dashboard/``, package data), which talks to the node through
  the JSON API over a websocket, like any client.

Neither ``/readyz`` nor ``/metrics`` shows entry contents. With a cluster key they need
``Authorization: Bearer TOKEN`` with TOKEN = hex HMAC-SHA256(key, "p2p-ledger-metrics")
(``metrics_token``; the key itself never travels), unless the node runs with
``public_metrics`` (``--public-metrics``). ``/healthz`` and the page itself are always open:
the page asks for the key and authenticates over the API.
"""

from __future__ import annotations

import hashlib
import hmac
import http
from collections.abc import Callable
from importlib import resources
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .metrics import CONTENT_TYPE

Node = Any  # runtime.Node (imported by name only: runtime imports this module)

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}


def metrics_token(key: bytes) -> str:
    """The bearer token /metrics and /readyz want when the cluster has a key."""
    return hmac.new(key, b"p2p-ledger-metrics", hashlib.sha256).hexdigest()


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _text(status: int, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


def ready(node: Node) -> tuple[bool, str]:
    """(ready?, why): the store answers, and with peers, one linked peer agrees with our root."""
    try:
        node.ledger.storage.get_meta("node_id")
    except Exception as exc:  # any store failure means not ready  # noqa: BLE001
        return False, f"store not answering: {exc}"
    core = node.core
    if not core.peers and not core.links:
        return True, "no peers"
    root = node.ledger.root()
    if any(link.session.is_open and link.session.agrees_with(root)
           for link in core.links.values()):
        return True, "caught up with a peer"
    return False, "not caught up with any peer yet"


def process_request(get_node: Callable[[], Node], public_metrics: bool = False,
                    ) -> Callable[[object, Request], Response | None]:
    """The ``process_request`` hook of the node's websockets server."""

    def handle(connection: object, request: Request) -> Response | None:
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None  # a peer or an API client: go on with the handshake
        node = get_node()
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return _text(200, "ok\n")
        if path in ("/readyz", "/metrics"):
            key = node.core.config.key
            if key is not None and not public_metrics:
                given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given, metrics_token(key)):
                    return _text(401, "this node has a cluster key: send Authorization: "
                                      "Bearer HMAC-SHA256(key, 'p2p-ledger-metrics') in hex\n")
            if path == "/metrics":
                return _response(200, node.metrics.render(), CONTENT_TYPE)
            ok, why = ready(node)
            return _text(200 if ok else 503, ("ready: " if ok else "not ready: ") + why + "\n")
        if path in STATIC:
            name, content_type = STATIC[path]
            body = resources.files(__package__).joinpath("dashboard", name).read_bytes()
            return _response(200, body, content_type)
        return _text(404, "not found: try /, /healthz, /readyz or /metrics\n")

    return handle
