"""Plotly figures of routing: the only module that imports plotly. Pure functions from arrays to Figures.

Token texts and expert names are untrusted (model and user text): Plotly renders a few HTML tags and entities in
labels and hover text, so every such string goes through `label`/`safe_text`, which escape & < > (shown as text).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moechat.colors import diverging_scale, expert_colors, token_colors
from moechat.routing.metrics import first_choice

Figure = go.Figure  # what the figure functions return, for modules that must not import plotly

__all__ = [
    "character_drift_figure",
    "character_layers_figure",
    "drift_figure",
    "fidelity_figure",
    "heatmap_figure",
    "label",
    "safe_text",
    "share_bars_figure",
    "token_colors",
]

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LAYOUT = {"template": "plotly_white", "margin": {"l": 50, "r": 20, "t": 40, "b": 40}}


def safe_text(text: str) -> str:
    """Text that Plotly shows literally: & < > escaped, template fields (%{...}) and MathJax ($...$) disarmed."""
    text = html.escape(text, quote=False).replace("%{", "%\u200b{")
    return "\u200b" + text if text.startswith("$") else text


def label(token: str, limit: int = 24) -> str:
    """A token as a tick/hover label: whitespace made visible, control characters replaced, long ones cut."""
    shown = "".join(_VISIBLE.get(ch, ch) for ch in token)
    shown = _CONTROL.sub("\ufffd", shown) or "∅"
    return safe_text(shown if len(shown) <= limit else shown[: limit - 1] + "…")


def heatmap_figure(
    probs: np.ndarray,
    tokens: Sequence[str],
    expert_names: Sequence[str],
    *,
    experts: np.ndarray | None = None,
    title: str | None = None,
    categorical: bool | None = None,
) -> go.Figure:
    """Layers (y) x tokens (x) of probs [T, L, E]. 2 experts: p(expert 1) on the diverging scale, names at both
    ends. More (or categorical=True): the first-choice expert in categorical colours. Hover: token, layer, every
    expert's probability."""
    n_tokens, n_layers, n_experts = probs.shape
    if len(tokens) != n_tokens or len(expert_names) != n_experts:
        raise ValueError(f"{len(tokens)} tokens, {len(expert_names)} names for probs of shape {probs.shape}")
    categorical = n_experts != 2 if categorical is None else categorical
    labels = [label(t) for t in tokens]
    names = [safe_text(n) for n in expert_names]
    trace = go.Heatmap(
        x=np.arange(n_tokens),
        y=np.arange(n_layers),
        text=np.broadcast_to(np.array(labels, dtype=object), (n_layers, n_tokens)),
        customdata=np.transpose(probs, (1, 0, 2)),
        hovertemplate=_heatmap_hover(names),
        **(_choice_cells(probs, experts, names) if categorical else _weight_cells(probs, names)),
    )
    fig = go.Figure(trace)
    fig.update_layout(title=safe_text(title) if title else None, **_LAYOUT)
    fig.update_xaxes(title_text="token", tickmode="array", tickvals=np.arange(n_tokens), ticktext=labels)
    fig.update_yaxes(title_text="layer")
    return fig


def _heatmap_hover(names: Sequence[str]) -> str:
    lines = [f"{name}: %{{customdata[{i}]:.3f}}" for i, name in enumerate(names)]
    return "<br>".join(["%{text} (token %{x}, layer %{y})", *lines]) + "<extra></extra>"


def _weight_cells(probs: np.ndarray, names: Sequence[str]) -> dict[str, object]:
    """2 experts: z = p(expert 1), continuous."""
    colorbar = {"tickvals": [0.0, 0.5, 1.0], "ticktext": [names[0], "even", names[1]], "title": {"text": "weight"}}
    return {"z": probs[..., 1].T, "zmin": 0.0, "zmax": 1.0, "colorscale": diverging_scale(), "colorbar": colorbar}


def _choice_cells(probs: np.ndarray, experts: np.ndarray | None, names: Sequence[str]) -> dict[str, object]:
    """Any other count: z = first-choice expert id (NaN where missing), one colour band per expert."""
    choice = first_choice(probs, experts).T.astype(np.float64)
    n = len(names)
    colors = expert_colors(n)
    scale = [[edge / n, colors[i]] for i in range(n) for edge in (i, i + 1)]
    colorbar = {"tickvals": list(range(n)), "ticktext": list(names), "title": {"text": "first choice"}}
    z = np.where(choice >= 0, choice, np.nan)
    return {"z": z, "zmin": -0.5, "zmax": n - 0.5, "colorscale": scale, "colorbar": colorbar}


def share_bars_figure(layer_share: np.ndarray, expert_names: Sequence[str], title: str | None = None) -> go.Figure:
    """One stacked bar per layer from layer_share [L, E] (soft share W[l, i]), one colour per expert."""
    colors = expert_colors(len(expert_names))
    layers = np.arange(layer_share.shape[0])
    fig = go.Figure()
    for i, name in enumerate(expert_names):
        shown = safe_text(name)
        fig.add_bar(
            x=layers,
            y=layer_share[:, i],
            name=shown,
            marker_color=colors[i],
            hovertemplate=f"{shown}<br>layer %{{x}}: %{{y:.1%}}<extra></extra>",
        )
    fig.update_layout(barmode="stack", title=safe_text(title) if title else None, **_LAYOUT)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="soft share", range=[0, 1], tickformat=".0%")
    return fig


def drift_figure(shares: np.ndarray, expert_names: Sequence[str], messages: Sequence[str] | None = None) -> go.Figure:
    """How the split drifts over a chat: shares [M, E] (each message's soft share), one line per expert.

    messages: optional hover label per message (e.g. "user: hello…"), shown as text."""
    colors = expert_colors(len(expert_names))
    turns = np.arange(1, shares.shape[0] + 1)
    text = [label(m, limit=40) for m in messages] if messages is not None else None
    where = "<br>message %{x}" + ("<br>%{text}" if text else "") + "<extra></extra>"
    fig = go.Figure()
    for i, name in enumerate(expert_names):
        shown = safe_text(name)
        fig.add_scatter(
            x=turns,
            y=shares[:, i],
            mode="lines+markers",
            name=shown,
            line_color=colors[i],
            text=text,
            hovertemplate=f"{shown}: %{{y:.1%}}" + where,
        )
    fig.update_layout(title="expert share per message", **_LAYOUT)
    fig.update_xaxes(title_text="message", tickmode="linear", dtick=1)
    fig.update_yaxes(title_text="soft share", range=[0, 1], tickformat=".0%")
    return fig


def fidelity_figure(
    top1: np.ndarray, kappa: np.ndarray, mean_abs_dp: np.ndarray | None = None, title: str | None = None
) -> go.Figure:
    """Two runs compared per layer (moechat.agreement.Agreement's arrays): top-1 agreement, Cohen's kappa and
    optionally mean |Δp|, one line each over the layers."""
    layers = np.arange(len(top1))
    series = [("top-1 agreement", top1, "#4e79a7"), ("Cohen's kappa", kappa, "#f28e2b")]
    if mean_abs_dp is not None:
        series.append(("mean |Δp|", mean_abs_dp, "#59a14f"))
    fig = go.Figure()
    for name, values, color in series:
        fig.add_scatter(
            x=layers,
            y=values,
            mode="lines+markers",
            name=name,
            line_color=color,
            hovertemplate=f"{name}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>",
        )
    finite = np.concatenate([np.ravel(v) for _, v, _ in series])
    finite = finite[np.isfinite(finite)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    fig.update_layout(title=safe_text(title) if title else "routing fidelity", **_LAYOUT)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="agreement", range=[low - 0.02, 1.02])
    return fig


def character_layers_figure(layer_share: np.ndarray, names: Sequence[str], expert_names: Sequence[str]) -> go.Figure:
    """Per-layer shares per character: layer_share [C, L, E], one row of stacked bars per character."""
    rows = max(len(names), 1)
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=[safe_text(n) for n in names])
    colors = expert_colors(len(expert_names))
    layers = np.arange(layer_share.shape[1]) if layer_share.ndim == 3 else np.arange(0)
    for c in range(len(names)):
        for i, expert in enumerate(expert_names):
            shown = safe_text(expert)
            fig.add_bar(
                x=layers,
                y=layer_share[c, :, i],
                name=shown,
                legendgroup=shown,
                showlegend=c == 0,
                marker_color=colors[i],
                hovertemplate=f"{safe_text(names[c])} · {shown}<br>layer %{{x}}: %{{y:.1%}}<extra></extra>",
                row=c + 1,
                col=1,
            )
        fig.update_yaxes(range=[0, 1], tickformat=".0%", row=c + 1, col=1)
    fig.update_layout(
        barmode="stack", title="expert share per layer, per character", height=140 + 160 * rows, **_LAYOUT
    )
    fig.update_xaxes(title_text="layer", row=rows, col=1)
    return fig


def character_drift_figure(drift: Sequence[np.ndarray], names: Sequence[str], expert_names: Sequence[str]) -> go.Figure:
    """How each character's split drifts over its replies: drift[c] [M_c, E], one panel per character."""
    rows = max(len(names), 1)
    fig = make_subplots(rows=rows, cols=1, subplot_titles=[safe_text(n) for n in names])
    colors = expert_colors(len(expert_names))
    for c, shares in enumerate(drift):
        replies = np.arange(1, shares.shape[0] + 1)
        for i, expert in enumerate(expert_names):
            shown = safe_text(expert)
            fig.add_scatter(
                x=replies,
                y=shares[:, i],
                mode="lines+markers",
                name=shown,
                legendgroup=shown,
                showlegend=c == 0,
                line_color=colors[i],
                hovertemplate=f"{safe_text(names[c])} · {shown}<br>reply %{{x}}: %{{y:.1%}}<extra></extra>",
                row=c + 1,
                col=1,
            )
        fig.update_yaxes(range=[0, 1], tickformat=".0%", row=c + 1, col=1)
        fig.update_xaxes(tickmode="linear", dtick=1, row=c + 1, col=1)
    fig.update_layout(title="expert share per reply, per character", height=140 + 160 * rows, **_LAYOUT)
    fig.update_xaxes(title_text="the character's reply", row=rows, col=1)
    return fig
