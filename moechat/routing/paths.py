"""Routing across layers: which layers vote together (G[l, m]) and the paths tokens take (pure numpy).

A token's routing path is the string of its first-choice experts at every layer, layer 0 first: with 2 experts
the L-bit string of docs/routing.md ("0110..."). Experts 0-35 are written as one character each (0-9, a-z);
with more experts the ids are joined by ".".
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from moechat.routing.metrics import first_choice, one_hot

_DIGITS = string.digits + string.ascii_lowercase


def cross_layer_agreement(probs: np.ndarray, experts: np.ndarray | None = None) -> np.ndarray:
    """G[l, m] = mean_t 1[c[t, l] = c[t, m]] over tokens routed at both layers: [L, L], symmetric, 1 on the diagonal.

    NaN where no token is routed at both layers.
    """
    choice = first_choice(probs, experts)
    hot = one_hot(choice, probs.shape[-1])
    ok = (choice >= 0).astype(np.float64)
    same = np.einsum("tle,tme->lm", hot, hot)
    both = ok.T @ ok
    return np.divide(same, both, out=np.full(same.shape, np.nan), where=both > 0)


@dataclass(frozen=True, slots=True)
class Paths:
    """Distinct routing paths, most frequent first (ties: lexicographic), and the entropy of their distribution."""

    paths: tuple[str, ...]
    counts: tuple[int, ...]
    entropy_bits: float  # -sum_p f ln f / ln 2 over path frequencies f; 0 when all tokens share one path
    n_tokens: int  # tokens counted: those routed at every layer

    @property
    def n_paths(self) -> int:
        return len(self.paths)


def routing_paths(probs: np.ndarray, experts: np.ndarray | None = None) -> Paths:
    """Count each token's first-choice path through the layers; tokens with any missing layer are left out."""
    choice = first_choice(probs, experts)
    complete = choice[(choice >= 0).all(axis=1)]
    if complete.size == 0:
        return Paths((), (), 0.0, 0)
    rows, counts = np.unique(complete, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")  # np.unique sorts rows lexicographically: ties stay in that order
    rows, counts = rows[order], counts[order]
    freq = counts / counts.sum()
    entropy = float(-(freq * np.log2(freq)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0
    return Paths(_path_strings(rows, probs.shape[-1]), tuple(int(n) for n in counts), entropy, int(counts.sum()))


def _path_strings(rows: np.ndarray, n_experts: int) -> tuple[str, ...]:
    """One string per distinct path (a loop over distinct paths, not over tokens)."""
    if n_experts <= len(_DIGITS):
        symbols = np.array(list(_DIGITS))[rows]
        return tuple("".join(row) for row in symbols)
    return tuple(".".join(map(str, row)) for row in rows.tolist())
