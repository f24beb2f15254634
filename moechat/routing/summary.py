"""One message's routing in a few numbers, and the badge shown under it (pure numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moechat.routing import metrics


@dataclass(frozen=True, slots=True, eq=False)
class Summary:
    """Routing of one message [T, L, E]. Scalars are means over the layers that have a value (NaN if none)."""

    expert_names: tuple[str, ...]
    n_tokens: int  # tokens routed at one layer at least
    share: tuple[float, ...]  # soft share per expert, mean over layers (sums to 1)
    layer_share: np.ndarray  # [L, E] soft share W[l, i]
    entropy: float  # normalised router entropy, in [0, 1]
    layer_entropy: np.ndarray  # [L]
    mutual_information: float  # in units of ln E, in [0, 1]
    layer_mutual_information: np.ndarray  # [L]
    repeat_rate: float  # R1: adjacent tokens with the same first choice
    repeat_baseline: float  # sum_i F^2: what R1 would be by chance
    layer_repeat_rate: np.ndarray  # [L]
    layer_repeat_baseline: np.ndarray  # [L]

    @property
    def badge(self) -> str:
        """e.g. "61% Pygmalion · 39% Xwin"; "" when nothing was routed."""
        return badge(self.share, short_names(self.expert_names))


def summarize(
    probs: np.ndarray,
    expert_names: Sequence[str],
    *,
    experts: np.ndarray | None = None,
    segments: np.ndarray | None = None,
) -> Summary:
    """Summary of probs [T, L, E] (NaN rows = missing routing, ignored); experts [T, L, k] and segments as in
    metrics.repeat_rate."""
    if len(expert_names) != probs.shape[-1]:
        raise ValueError(f"{len(expert_names)} expert names for {probs.shape[-1]} experts")
    layer_share = metrics.soft_share(probs)
    layer_entropy = metrics.layer_entropy(probs)
    layer_mi = metrics.mutual_information(probs)
    layer_repeat = metrics.repeat_rate(probs, experts, segments)
    layer_baseline = metrics.repeat_baseline(probs, experts)
    share = _layer_mean(layer_share)
    return Summary(
        expert_names=tuple(expert_names),
        n_tokens=int(metrics.valid(probs).any(axis=1).sum()),
        share=tuple(float(s) for s in share),
        layer_share=layer_share,
        entropy=float(_layer_mean(layer_entropy)),
        layer_entropy=layer_entropy,
        mutual_information=float(_layer_mean(layer_mi)),
        layer_mutual_information=layer_mi,
        repeat_rate=float(_layer_mean(layer_repeat)),
        repeat_baseline=float(_layer_mean(layer_baseline)),
        layer_repeat_rate=layer_repeat,
        layer_repeat_baseline=layer_baseline,
    )


def _layer_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the rows without NaN (NaN when there is none), without numpy's empty-slice warning."""
    ok = ~np.isnan(values).reshape(len(values), -1).any(axis=1) if values.size else np.zeros(len(values), bool)
    rows = values[ok]
    return rows.mean(axis=0) if len(rows) else np.full(values.shape[1:], math.nan)


def badge(shares: Sequence[float], names: Sequence[str], limit: int = 3) -> str:
    """ "61% Pygmalion · 39% Xwin": the `limit` largest shares, whole percentages that add up to 100 over all
    experts (largest remainder), largest first; "" when the shares are missing."""
    values = np.asarray(shares, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all() or values.sum() <= 0:
        return ""
    percent = _whole_percentages(values / values.sum())
    order = np.argsort(-values, kind="stable")[:limit]
    return " · ".join(f"{percent[i]}% {names[i]}" for i in order)


def _whole_percentages(fractions: np.ndarray) -> np.ndarray:
    """Round fractions (summing to 1) to integers summing to 100, by largest remainder."""
    exact = fractions * 100.0
    floor = np.floor(exact).astype(np.int64)
    short = 100 - int(floor.sum())
    bump = np.argsort(-(exact - floor), kind="stable")[:short]
    floor[bump] += 1
    return floor


def short_name(name: str) -> str:
    """A model id as a short label: "PygmalionAI/pygmalion-2-7b" -> "Pygmalion", "Xwin-LM/Xwin-LM-7B" -> "Xwin"."""
    stem = name.rstrip("/").rsplit("/", 1)[-1]
    head = stem.split("-", 1)[0] or stem
    return head[:1].upper() + head[1:] if head.islower() else head


def short_names(names: Sequence[str]) -> tuple[str, ...]:
    """short_name of each, unless two would collide: then the full names are kept."""
    short = tuple(short_name(n) for n in names)
    return short if len(set(short)) == len(short) else tuple(names)
