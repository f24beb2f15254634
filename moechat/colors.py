"""Expert colours shared by every routing view: figures and coloured tokens (pure numpy, no plotting library).

2 experts: a diverging scale, expert 0 at one end, expert 1 at the other, an even split in the neutral middle.
More experts: a fixed categorical palette (Tableau 10 less its grey, which marks missing routing; cycled).
"""

from __future__ import annotations

import numpy as np

from moechat.routing.metrics import valid

EXPERT_0, NEUTRAL, EXPERT_1 = "#4393c3", "#f7f7f7", "#d6604d"  # readable behind dark text at both ends
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
MISSING = "#bdbdbd"  # a token with no routing at the chosen layer(s)


def expert_colors(n_experts: int) -> tuple[str, ...]:
    """The colour of each expert, the same in every figure and in the coloured tokens."""
    if n_experts == 2:
        return (EXPERT_0, EXPERT_1)
    return tuple(PALETTE[i % len(PALETTE)] for i in range(n_experts))


def diverging_scale() -> list[list[float | str]]:
    """The 2-expert scale over p(expert 1) in [0, 1], as a Plotly colorscale."""
    return [[0.0, EXPERT_0], [0.5, NEUTRAL], [1.0, EXPERT_1]]


def token_colors(probs: np.ndarray, layer: int | None = None, k: int | None = None) -> list[str]:
    """One CSS hex colour per token of probs [T, L, E], at one layer or (None) averaged over the routed layers.

    When every expert runs for every token (k == E, the default when k is None) the colour is continuous: the
    neutral colour blended toward the top expert's colour by how far its probability rises above 1/E (for 2
    experts exactly the diverging scale over p(expert 1)). Otherwise (top-k routing, k < E) the top-1 expert's
    colour. Tokens without routing get MISSING.
    """
    p = _at_layer(probs, layer)
    n = p.shape[-1]
    ok = np.isfinite(p).all(axis=-1)
    top = np.argmax(np.where(ok[:, None], p, -np.inf), axis=-1) if n else np.zeros(len(p), np.int64)
    colors = _rgb(expert_colors(n))[top] if n else np.zeros((len(p), 3))
    if (k is None or k == n) and n > 1:
        weight = (np.take_along_axis(np.nan_to_num(p), top[:, None], axis=-1) - 1 / n) / (1 - 1 / n)
        colors = _rgb([NEUTRAL]) + np.clip(weight, 0.0, 1.0) * (colors - _rgb([NEUTRAL]))
    return _hex(np.where(ok[:, None], colors, _rgb([MISSING])))


def _at_layer(probs: np.ndarray, layer: int | None) -> np.ndarray:
    """[T, E]: probs at one layer, or the mean over each token's routed layers (NaN if it has none)."""
    if layer is not None:
        return probs[:, layer].astype(np.float64)
    ok = valid(probs)
    total = np.where(ok[..., None], probs, 0.0).sum(axis=1, dtype=np.float64)
    count = ok.sum(axis=1)[:, None]
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _rgb(hex_colors: tuple[str, ...] | list[str]) -> np.ndarray:
    """["#rrggbb", ...] -> float [n, 3] in 0..255."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in hex_colors], dtype=np.float64)


def _hex(rgb: np.ndarray) -> list[str]:
    """float [n, 3] in 0..255 -> ["#rrggbb", ...]."""
    r, g, b = np.rint(np.clip(rgb, 0, 255)).astype(np.int64).T
    return np.char.mod("#%06x", (r << 16) | (g << 8) | b).tolist()
