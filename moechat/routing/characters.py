"""Routing per character over a group chat (pure numpy): each member's weight split over the experts (all its
replies' tokens together), its per-layer shares, and its drift (one share row per reply of its).

A share is the soft share W[l, i] = mean_t p[t, l, i] over the character's routed tokens, averaged over the layers
that have routing (as `summary.Summary.share`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moechat.routing import metrics


@dataclass(frozen=True, slots=True, eq=False)
class CharacterRouting:
    """Rows follow `names` (the characters, in the group's order)."""

    names: tuple[str, ...]
    tokens: np.ndarray  # int [C]: routed tokens over the chat
    share: np.ndarray  # [C, E]: the weight split over the chat (NaN rows for a character without routing)
    layer_share: np.ndarray  # [C, L, E]
    drift: tuple[np.ndarray, ...]  # per character [M_c, E]: each of its replies' share, in chat order


def _mean_over_layers(layer_share: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(layer_share).any(axis=-1)
    rows = layer_share[ok]
    return rows.mean(axis=0) if len(rows) else np.full(layer_share.shape[-1], np.nan)


def by_character(replies: Sequence[tuple[str, np.ndarray]], names: Sequence[str] | None = None) -> CharacterRouting:
    """`replies`: (speaker name, probs [T, L, E]) for each reply in chat order (NaN rows: no routing). `names`:
    the characters to show, in order (default: the speakers in order of first reply); others are left out."""
    order = tuple(dict.fromkeys(names if names is not None else (name for name, _ in replies)))
    shapes = {p.shape[1:] for _, p in replies}
    if len(shapes) > 1:
        raise ValueError(f"replies' routing shapes differ: {sorted(shapes)}")
    n_layers, n_experts = next(iter(shapes)) if shapes else (0, 0)
    tokens = np.zeros(len(order), np.int64)
    layer_share = np.full((len(order), n_layers, n_experts), np.nan)
    drift: list[np.ndarray] = []
    for c, name in enumerate(order):
        own = [p for speaker, p in replies if speaker == name]
        if own:
            pooled = np.concatenate(own, axis=0)
            layer_share[c] = metrics.soft_share(pooled)
            tokens[c] = int(metrics.valid(pooled).any(axis=1).sum())
        rows = [_mean_over_layers(metrics.soft_share(p)) for p in own if metrics.valid(p).any()]
        drift.append(np.array(rows).reshape(len(rows), n_experts))
    share = np.stack([_mean_over_layers(ls) for ls in layer_share]) if order else np.zeros((0, n_experts))
    return CharacterRouting(order, tokens, share, layer_share, tuple(drift))
