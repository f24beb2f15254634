"""Router decisions as numpy arrays, and the metrics of ../shared/ROUTING.md (pure numpy).

Shapes: one token's routing is probs [layers, experts] and experts [layers, k]; a sequence stacks
them to [tokens, layers, experts] and [tokens, layers, k].
"""

from __future__ import annotations

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


def from_logits(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Router logits [..., experts] -> (probabilities, top-k expert ids), as softmax gating does."""
    probs = softmax(logits)
    return probs, top_k(probs, k)
