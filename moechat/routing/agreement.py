"""Agreement between two routing runs on the same token sequence (pure numpy).

Two runs (quantizations, seeds, GPU vs CPU) teacher-forced on the same tokens give probs_a, probs_b [T, L, E].
Run a is the reference. Per layer, over the positions routed in both runs (docs/routing.md, "Metrics"):
top-1 agreement, Cohen's kappa with p_e = sum_i F_a[l, i] F_b[l, i], mean |p_a - p_b|, and the Pearson
correlation of the logit margins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moechat.routing.metrics import first_choice, one_hot


@dataclass(frozen=True, slots=True, eq=False)
class Agreement:
    """Per-layer agreement of run b with reference run a; NaN for a layer with too few common positions."""

    top1: np.ndarray  # [L] fraction of positions with the same first choice
    kappa: np.ndarray  # [L] Cohen's kappa (1 = perfect, 0 = chance level, < 0 = worse than chance)
    mean_abs_dp: np.ndarray  # [L] mean over positions and experts of |p_a - p_b|
    margin_corr: np.ndarray  # [L] Pearson correlation of the logit margins (see logit_margin)
    n_tokens: np.ndarray  # int [L] positions routed in both runs

    def means(self) -> dict[str, float]:
        """Each metric averaged over layers (layers without a value are skipped)."""
        return {name: _nanmean(getattr(self, name)) for name in ("top1", "kappa", "mean_abs_dp", "margin_corr")}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: per-layer lists (NaN as None) and the layer means."""
        fields = ("top1", "kappa", "mean_abs_dp", "margin_corr", "n_tokens")
        per_layer = {name: [_json_number(v) for v in getattr(self, name).tolist()] for name in fields}
        return {"per_layer": per_layer, "mean": {k: _json_number(v) for k, v in self.means().items()}}


def compare(
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    *,
    experts_a: np.ndarray | None = None,
    experts_b: np.ndarray | None = None,
    logits_a: np.ndarray | None = None,
    logits_b: np.ndarray | None = None,
) -> Agreement:
    """Agreement of two runs [T, L, E]. Margins come from the logits when both are given, else from log p."""
    if probs_a.shape != probs_b.shape:
        raise ValueError(f"runs differ in shape: {probs_a.shape} vs {probs_b.shape}")
    c_a, c_b = first_choice(probs_a, experts_a), first_choice(probs_b, experts_b)
    ok = (c_a >= 0) & (c_b >= 0)  # routed in both runs
    c_a, c_b = np.where(ok, c_a, -1), np.where(ok, c_b, -1)
    n = ok.sum(axis=0)
    agree = ((c_a == c_b) & ok).sum(axis=0)
    dp = np.abs(probs_a.astype(np.float64) - probs_b).mean(axis=-1)
    if logits_a is not None and logits_b is not None:
        m_a, m_b = logit_margin(logits_a, logits=True), logit_margin(logits_b, logits=True)
    else:
        m_a, m_b = logit_margin(probs_a, logits=False), logit_margin(probs_b, logits=False)
    return Agreement(
        top1=_ratio(agree, n),
        kappa=cohen_kappa(c_a, c_b, probs_a.shape[-1]),
        mean_abs_dp=_ratio(np.where(ok, dp, 0.0).sum(axis=0), n),
        margin_corr=masked_correlation(m_a, m_b, ok),
        n_tokens=n,
    )


def cohen_kappa(c_a: np.ndarray, c_b: np.ndarray, n_experts: int) -> np.ndarray:
    """Per-layer kappa of first choices [T, L] (-1 = missing in either run: both must carry the same mask).

    kappa = (p_o - p_e) / (1 - p_e), computed exactly on integer counts. When p_e = 1 (both runs always pick the
    same single expert, hence p_o = 1) kappa is taken as 1.
    """
    n = (c_a >= 0).sum(axis=0)
    agree = ((c_a == c_b) & (c_a >= 0)).sum(axis=0)
    n_a = one_hot(c_a, n_experts).sum(axis=0).astype(np.int64)
    n_b = one_hot(c_b, n_experts).sum(axis=0).astype(np.int64)
    chance = (n_a * n_b).sum(axis=-1)  # n^2 p_e
    num, den = n * agree - chance, n * n - chance
    kappa = np.divide(num, den, out=np.ones(n.shape), where=den != 0)
    return np.where(n > 0, kappa, np.nan)


def logit_margin(x: np.ndarray, *, logits: bool = False) -> np.ndarray:
    """[T, L] router margin from logits or probabilities (log p differs from z by a per-row constant).

    2 experts: z1 - z0 = log(p1 / p0), signed. More experts: top-1 minus top-2 logit (the router's confidence).
    One expert: NaN.
    """
    if x.shape[-1] < 2:
        return np.full(x.shape[:-1], np.nan)
    z = x.astype(np.float64)
    z = z if logits else np.log(np.clip(z, np.finfo(np.float32).tiny, None))
    if z.shape[-1] == 2:
        return z[..., 1] - z[..., 0]
    top2 = -np.sort(-z, axis=-1)[..., :2]
    return top2[..., 0] - top2[..., 1]


def masked_correlation(x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per-layer Pearson correlation of x, y [T, L] over the finite positions where ok; NaN if < 2 or no spread."""
    ok = ok & np.isfinite(x) & np.isfinite(y)
    n = ok.sum(axis=0)
    dx = np.where(ok, x - _ratio(np.where(ok, x, 0.0).sum(axis=0), n), 0.0)
    dy = np.where(ok, y - _ratio(np.where(ok, y, 0.0).sum(axis=0), n), 0.0)
    cov, var_x, var_y = (dx * dy).sum(axis=0), (dx * dx).sum(axis=0), (dy * dy).sum(axis=0)
    den = np.sqrt(var_x * var_y)
    corr = np.divide(cov, den, out=np.full(cov.shape, np.nan), where=(den > 0) & (n >= 2))
    return np.clip(corr, -1.0, 1.0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=den > 0)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _json_number(value: float) -> float | int | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value
