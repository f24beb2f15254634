"""Router decisions as numpy arrays, and the metrics of docs/routing.md (pure numpy).

Shapes: one token's routing is probs [layers, experts] and experts [layers, k]; a sequence stacks
them to [tokens, layers, experts] and [tokens, layers, k].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, eq=False)
class Routing:
    """One token's routing at every layer: softmax probabilities and the top-k selected experts."""

    probs: np.ndarray  # float32 [layers, experts]
    experts: np.ndarray  # int32 [layers, k], highest probability first


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32, stable for large logits."""
    z = logits.astype(np.float32, copy=False)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values on the last axis, largest first (ties: lower index first)."""
    order = np.argsort(-probs, axis=-1, kind="stable")
    return order[..., :k].astype(np.int32)


def stack(
    records: Sequence[Routing], n_layers: int = 0, n_experts: int = 0, k: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token records -> (probs [T, L, E] float32, experts [T, L, k] int32); the sizes shape an empty result."""
    if not records:
        return np.zeros((0, n_layers, n_experts), np.float32), np.zeros((0, n_layers, k), np.int32)
    probs = np.stack([r.probs for r in records]).astype(np.float32, copy=False)
    return probs, np.stack([r.experts for r in records]).astype(np.int32, copy=False)


def from_logits(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Router logits [..., experts] -> (probabilities, top-k expert ids), as softmax gating does."""
    probs = softmax(logits)
    return probs, top_k(probs, k)


# --- masks and first choices -------------------------------------------------------------------------------------
# A position (t, l) is "missing" when any of its probabilities is not finite (e.g. the last layer of a prompt token,
# which llama.cpp never routes): every metric ignores it. Layers with no valid position give NaN.


def valid(probs: np.ndarray) -> np.ndarray:
    """bool [T, L]: the positions whose routing was captured (all probabilities finite)."""
    return np.isfinite(probs).all(axis=-1)


def first_choice(probs: np.ndarray, experts: np.ndarray | None = None) -> np.ndarray:
    """int [T, L]: the first-choice expert c[t, l] (experts[..., 0] when given, else argmax p); -1 where missing
    (probabilities not finite, or a negative expert id)."""
    ok = valid(probs)
    if experts is not None:
        choice = np.asarray(experts)[..., 0]
    else:
        choice = np.argmax(np.where(ok[..., None], probs, -np.inf), axis=-1)
    return np.where(ok & (choice >= 0), choice, -1).astype(np.int64)


def one_hot(choice: np.ndarray, n_experts: int) -> np.ndarray:
    """float [T, L, E]: 1 at each first choice; an all-zero row where the choice is -1 (missing)."""
    return (choice[..., None] == np.arange(n_experts)).astype(np.float64)


def layer_mean(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Mean over tokens (axis 0) of values [T, L, ...] where ok [T, L]; NaN for a layer with no valid token."""
    mask = ok.reshape(ok.shape + (1,) * (values.ndim - ok.ndim))
    total = np.where(mask, values, 0.0).sum(axis=0, dtype=np.float64)
    count = np.broadcast_to(mask, values.shape).sum(axis=0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


# --- shares ------------------------------------------------------------------------------------------------------


def soft_share(probs: np.ndarray) -> np.ndarray:
    """W[l, i] = mean_t p[t, l, i]: [L, E], each row sums to 1 (NaN rows for layers with no routing)."""
    return layer_mean(probs.astype(np.float64), valid(probs))


def first_choice_share(probs: np.ndarray, experts: np.ndarray | None = None) -> np.ndarray:
    """F[l, i] = mean_t 1[c[t, l] = i]: [L, E], the fraction of tokens whose first choice is expert i."""
    choice = first_choice(probs, experts)
    return layer_mean(one_hot(choice, probs.shape[-1]), choice >= 0)


def dominance(probs: np.ndarray, experts: np.ndarray | None = None) -> np.ndarray:
    """d[l] = 2 F[l, 1] - 1 in [-1, 1] (2 experts only): +1 when expert 1 always wins, -1 when expert 0 does."""
    if probs.shape[-1] != 2:
        raise ValueError(f"dominance is defined for 2 experts, got {probs.shape[-1]}")
    return 2.0 * first_choice_share(probs, experts)[:, 1] - 1.0


# --- entropy and mutual information ------------------------------------------------------------------------------


def entropy(p: np.ndarray) -> np.ndarray:
    """-sum_i p ln p / ln E over the last axis, in [0, 1] (0 ln 0 = 0; 0 when E = 1; NaN where p is missing)."""
    p = p.astype(np.float64)
    n = p.shape[-1]
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h = -plogp.sum(axis=-1) / np.log(n) if n > 1 else np.zeros(p.shape[:-1])
    return np.where(np.isfinite(p).all(axis=-1), np.clip(h, 0.0, 1.0), np.nan)


def layer_entropy(probs: np.ndarray) -> np.ndarray:
    """[L]: mean over tokens of the normalised per-token router entropy H[t, l]."""
    return layer_mean(entropy(probs), valid(probs))


def mutual_information(probs: np.ndarray) -> np.ndarray:
    """I[l] = H(W[l, .]) - mean_t H[t, l], in units of ln E (so in [0, 1]; multiply by ln E for nats).

    0 when every token gets the same split; high when routing is confident and token-dependent.
    """
    mi = entropy(soft_share(probs)) - layer_entropy(probs)
    return np.where(np.isnan(mi), np.nan, np.maximum(mi, 0.0))


# --- locality ----------------------------------------------------------------------------------------------------


def segment_ids(lengths: np.ndarray | list[int]) -> np.ndarray:
    """Per-token segment (message) ids from segment lengths: [2, 3] -> [0, 0, 1, 1, 1]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.repeat(np.arange(len(lengths)), lengths)


def repeat_rate(probs: np.ndarray, experts: np.ndarray | None = None, segments: np.ndarray | None = None) -> np.ndarray:
    """R1[l]: fraction of adjacent token pairs (t, t+1) with the same first choice (Mixtral paper, Table 5).

    segments: per-token message ids [T]; pairs that straddle two messages are never counted, nor pairs with a
    missing position. NaN for a layer with no countable pair.
    """
    choice = first_choice(probs, experts)
    a, b = choice[:-1], choice[1:]
    pair_ok = (a >= 0) & (b >= 0)
    if segments is not None:
        seg = np.asarray(segments)
        if seg.shape != choice.shape[:1]:
            raise ValueError(f"segments has shape {seg.shape}, expected ({choice.shape[0]},)")
        pair_ok &= (seg[:-1] == seg[1:])[:, None]
    return layer_mean((a == b).astype(np.float64), pair_ok)


def repeat_baseline(probs: np.ndarray, experts: np.ndarray | None = None) -> np.ndarray:
    """sum_i F[l, i]^2: the repeat rate expected if first choices were drawn independently from their marginals."""
    return (first_choice_share(probs, experts) ** 2).sum(axis=-1)
