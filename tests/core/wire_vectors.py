"""Golden wire vectors: JSON ⇄ messages. ``python -m tests.core.wire_vectors`` rewrites the file
from the cases below (only do that on purpose: a changed vector is a wire-format change)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from p2p_ledger.core import wire
from p2p_ledger.core.wire import (
    EMPTY,
    IDS,
    INNER,
    ITEMS,
    Auth,
    Bye,
    ContextTree,
    Flow,
    Graft,
    Hello,
    IHave,
    Message,
    Peers,
    Prune,
    Root,
    Sync1,
    UpdateChunk,
    View,
    Views,
    Want,
)

PATH = Path(__file__).parent / "data" / "wire_vectors.json"


def _b(value: str) -> bytes:
    return bytes.fromhex(value)


def _view_from(obj: dict[str, Any]) -> View:
    children = tuple(None if c is None else _b(c) for c in obj.get("children", ()))
    items = tuple((item[0], _b(item[1])) for item in obj.get("items", ()))
    states = tuple(_b(item[2]) if len(item) > 2 else b"" for item in obj.get("items", ()))
    ids = tuple(_b(i) for i in obj.get("ids", ()))
    return View(tuple(obj["prefix"]), obj["kind"], children=children, items=items,
                states=states if any(states) else (), ids=ids)


def message_from(case: dict[str, Any]) -> Message:
    f = case["fields"]
    kind = case["type"]
    if kind == "Hello":
        return Hello(f["protocol"], f["cluster"], f["node_id"], f["url"], _b(f["nonce"]),
                     f["flags"], _b(f["root"]), _b(f["origin"]))
    if kind == "Auth":
        return Auth(_b(f["signature"]), _b(f["mac"]))
    if kind == "Peers":
        return Peers(tuple((_b(o), n, u) for o, n, u in f["peers"]))
    if kind == "Root":
        view = f.get("view")
        return Root(f["is_reply"], _b(f["root"]), None if view is None else _view_from(view))
    if kind == "Views":
        return Views(tuple(_view_from(v) for v in f["views"]))
    if kind == "Sync1":
        return Sync1(f["context"], f["want_reply"], _b(f["state_vector"]))
    if kind == "UpdateChunk":
        return UpdateChunk(f["context"], f["transfer"], f["total"], f["offset"], _b(f["chunk"]),
                           f.get("pushed", False), more=f.get("more", False))
    if kind == "Flow":
        return Flow(f["received"])
    if kind == "Bye":
        return Bye(f["reason"])
    if kind == "ContextTree":
        return ContextTree(f["context"], tuple(_view_from(v) for v in f["views"]))
    if kind == "Want":
        return Want(f["context"], tuple(_b(i) for i in f["ids"]))
    if kind == "Prune":
        return Prune(_b(f["origin"]) if "origin" in f else None)
    if kind == "Graft":
        return Graft(tuple(_b(d) for d in f.get("digests", [])))
    if kind == "IHave":
        return IHave(tuple(_b(d) for d in f["digests"]))
    raise ValueError(kind)


def load() -> list[dict[str, Any]]:
    return list(json.loads(PATH.read_text())["vectors"])


def _cases() -> list[dict[str, Any]]:
    d16 = [bytes([i] * 16).hex() for i in range(16)]
    return [
        {"name": "hello-plain", "type": "Hello", "fields": {
            "protocol": 9, "cluster": "default", "node_id": "n1", "url": "ws://127.0.0.1:7001",
            "nonce": "00112233445566778899aabbccddeeff", "flags": 0,
            "root": "5a" * 16, "origin": "c1" * 32}},
        {"name": "hello-auth-unicode", "type": "Hello", "fields": {
            "protocol": 9, "cluster": "équipe", "node_id": "node-2", "url": "",
            "nonce": "ff" * 16, "flags": 1, "root": "00" * 16, "origin": "c2" * 32}},
        {"name": "auth", "type": "Auth", "fields": {"signature": bytes(range(64)).hex(),
                                                   "mac": ""}},
        {"name": "auth-with-cluster-key", "type": "Auth", "fields": {
            "signature": bytes(range(64)).hex(), "mac": bytes(range(32)).hex()}},
        {"name": "peers-empty", "type": "Peers", "fields": {"peers": []}},
        {"name": "peers-two", "type": "Peers", "fields": {
            "peers": [["c1" * 32, "n1", "ws://a:1"], ["c2" * 32, "n2", "ws://b:2"]]}},
        {"name": "root-ask", "type": "Root", "fields": {"is_reply": False, "root": "ab" * 16}},
        {"name": "root-ask-with-view", "type": "Root", "fields": {
            "is_reply": False, "root": "ef" * 16, "view": {
                "prefix": [], "kind": INNER,
                "children": [d16[i] if i in (2, 9) else None for i in range(16)]}}},
        {"name": "root-ask-with-items", "type": "Root", "fields": {
            "is_reply": False, "root": "01" * 16, "view": {
                "prefix": [], "kind": ITEMS, "items": [["notes", d16[3], "01b4c3e20205"]]}}},
        {"name": "root-reply", "type": "Root", "fields": {"is_reply": True, "root": ""}},
        {"name": "views-empty-list", "type": "Views", "fields": {"views": []}},
        {"name": "views-all-kinds", "type": "Views", "fields": {"views": [
            {"prefix": [], "kind": EMPTY},
            {"prefix": [3], "kind": INNER,
             "children": [d16[i] if i in (0, 5, 15) else None for i in range(16)]},
            {"prefix": [3, 15], "kind": ITEMS, "items": [["ctx-a", d16[1]], ["b/c", d16[2]]]},
            {"prefix": [4], "kind": ITEMS, "items": [["ctx-a", d16[1], "01b4c3e20205"],
                                                      ["b/c", d16[2]]]},
            {"prefix": [1, 2, 3], "kind": ITEMS, "items": []},
        ]}},
        {"name": "sync1-ask", "type": "Sync1", "fields": {
            "context": "notes", "want_reply": True, "state_vector": "00"}},
        {"name": "sync1-answer", "type": "Sync1", "fields": {
            "context": "a:b/c", "want_reply": False, "state_vector": "01b4c3e20205"}},
        {"name": "update-whole", "type": "UpdateChunk", "fields": {
            "context": "notes", "transfer": 1, "total": 4, "offset": 0, "chunk": "01020304"}},
        {"name": "update-middle-chunk", "type": "UpdateChunk", "fields": {
            "context": "notes", "transfer": 0x01020304, "total": 100000, "offset": 32768,
            "chunk": "ee" * 8}},
        {"name": "update-pushed", "type": "UpdateChunk", "fields": {
            "context": "notes", "transfer": 9, "total": 2, "offset": 0, "chunk": "0000",
            "pushed": True}},
        {"name": "update-part", "type": "UpdateChunk", "fields": {
            "context": "notes", "transfer": 10, "total": 2, "offset": 0, "chunk": "0000",
            "more": True}},
        {"name": "flow", "type": "Flow", "fields": {"received": 2**40 + 7}},
        {"name": "bye", "type": "Bye", "fields": {"reason": "node shutting down"}},
        {"name": "bye-empty", "type": "Bye", "fields": {"reason": ""}},
        {"name": "ctree-all-kinds", "type": "ContextTree", "fields": {"context": "notes", "views": [
            {"prefix": [], "kind": EMPTY},
            {"prefix": [7], "kind": INNER,
             "children": [d16[i] if i in (1, 14) else None for i in range(16)]},
            {"prefix": [8, 2], "kind": IDS, "ids": ["11" * 32, "22" * 32]},
            {"prefix": [9], "kind": IDS, "ids": []},
        ]}},
        {"name": "want", "type": "Want", "fields": {"context": "a:b/c",
                                                   "ids": ["aa" * 32, "bb" * 32]}},
        {"name": "prune", "type": "Prune", "fields": {}},
        {"name": "prune-origin", "type": "Prune", "fields": {"origin": "5a" * 32}},
        {"name": "graft", "type": "Graft", "fields": {}},
        {"name": "graft-asking", "type": "Graft", "fields": {"digests": [d16[1], d16[2]]}},
        {"name": "ihave", "type": "IHave", "fields": {"digests": [d16[3]]}},
        {"name": "ihave-empty", "type": "IHave", "fields": {"digests": []}},
    ]


def regenerate() -> None:
    vectors = []
    for case in _cases():
        case = dict(case, hex=wire.encode(message_from(case)).hex())
        vectors.append(case)
    doc = {"wire_version": wire.WIRE_VERSION, "protocol_version": wire.PROTOCOL_VERSION,
           "vectors": vectors}
    PATH.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    regenerate()
