"""Edges of ``core/context_log.py`` found by its mutation run (README "Mutation testing")."""

from __future__ import annotations

from p2p_ledger.core.context_log import client_id_for


def test_client_ids_keep_their_format_and_fit_a_js_number() -> None:
    """Golden vector: a (node incarnation, context)'s Yjs client id is in every update it
    writes; it is the top 53 bits of a SHA-256, so it survives JS numbers and uses their range."""
    assert client_id_for("a-1", "notes") == 2299785071953147
    ids = [client_id_for(f"node-{i}", "ctx") for i in range(64)]
    assert max(ids) < 2**53 and max(i.bit_length() for i in ids) == 53
    assert len(set(ids)) == len(ids) and client_id_for("node-0", "other") != ids[0]
