"""Routing blobs: RoutingRecord <-> rows of the routing table, stored as chunks appended per write.

A reply streamed token by token appends one chunk per write, so a write never rewrites earlier tokens;
reading concatenates a swipe's chunks in order. Listing chats and messages never selects these rows.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from moechat.errors import StoreError
from moechat.store.records import RoutingRecord

KINDS = ("reply", "prompt")


def _experts_dtype(n_experts: int) -> np.dtype:
    return np.dtype(np.int8) if n_experts <= 127 else np.dtype(np.int16)


def insert_chunk(conn: sqlite3.Connection, swipe_id: int, kind: str, routing: RoutingRecord, base: int) -> None:
    """Append one chunk; non-negative offsets are shifted by `base` (where the chunk's text starts)."""
    if kind not in KINDS:
        raise StoreError(f"routing kind must be one of {KINDS}, not {kind!r}")
    n_tok, n_layers, n_experts = routing.probs.shape
    if n_tok == 0:
        return
    prev = conn.execute(
        "SELECT COALESCE(MAX(start + n_tokens), 0), MIN(n_layers), MIN(n_experts), MIN(k) "
        "FROM routing WHERE swipe_id = ? AND kind = ?",
        (swipe_id, kind),
    ).fetchone()
    k = routing.experts.shape[2]
    if prev[1] is not None and (prev[1], prev[2], prev[3]) != (n_layers, n_experts, k):
        raise StoreError(
            f"routing shape [layers={n_layers}, experts={n_experts}, k={k}] does not match the earlier "
            f"tokens of this swipe [layers={prev[1]}, experts={prev[2]}, k={prev[3]}]"
        )
    dtype = _experts_dtype(n_experts)
    offsets = np.asarray(routing.offsets, dtype=np.int64)
    offsets = np.where(offsets >= 0, offsets + base, -1).astype("<i4")
    conn.execute(
        "INSERT INTO routing (swipe_id, kind, start, n_tokens, n_layers, n_experts, k, experts_dtype,"
        " probs, experts, token_ids, offsets) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            swipe_id,
            kind,
            prev[0],
            n_tok,
            n_layers,
            n_experts,
            k,
            dtype.str,
            np.ascontiguousarray(routing.probs, dtype="<f2").tobytes(),
            np.ascontiguousarray(routing.experts, dtype=dtype.newbyteorder("<")).tobytes(),
            np.ascontiguousarray(routing.token_ids, dtype="<i4").tobytes(),
            offsets.tobytes(),
        ),
    )


def load(conn: sqlite3.Connection, swipe_id: int, kind: str) -> RoutingRecord | None:
    """All chunks of one swipe's routing of one kind, concatenated; None when there is none."""
    rows = conn.execute(
        "SELECT n_tokens, n_layers, n_experts, k, experts_dtype, probs, experts, token_ids, offsets "
        "FROM routing WHERE swipe_id = ? AND kind = ? ORDER BY start",
        (swipe_id, kind),
    ).fetchall()
    if not rows:
        return None
    probs, experts, ids, offsets = [], [], [], []
    for n, layers, n_exp, k, dtype, p, e, t, o in rows:
        probs.append(np.frombuffer(p, dtype="<f2").reshape(n, layers, n_exp))
        experts.append(np.frombuffer(e, dtype=np.dtype(dtype)).reshape(n, layers, k))
        ids.append(np.frombuffer(t, dtype="<i4"))
        offsets.append(np.frombuffer(o, dtype="<i4"))
    return RoutingRecord(
        probs=np.concatenate(probs),
        experts=np.concatenate(experts),
        token_ids=np.concatenate(ids),
        offsets=np.concatenate(offsets),
    )


def copy_for_swipe(conn: sqlite3.Connection, old_swipe_id: int, new_swipe_id: int) -> None:
    """Copy every routing chunk of one swipe onto another (used by branching)."""
    conn.execute(
        "INSERT INTO routing (swipe_id, kind, start, n_tokens, n_layers, n_experts, k, experts_dtype,"
        " probs, experts, token_ids, offsets) SELECT ?, kind, start, n_tokens, n_layers, n_experts, k,"
        " experts_dtype, probs, experts, token_ids, offsets FROM routing WHERE swipe_id = ?",
        (new_swipe_id, old_swipe_id),
    )
