"""Routing figures (moechat.plots) asserted as Plotly objects, and the expert colours (moechat.colors)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from moechat import colors, plots
from moechat.routing.metrics import soft_share

HOSTILE = "<img src=x onerror=alert(1)>"
NAN = math.nan


def probs_of(p1: list[list[float]]) -> np.ndarray:
    """[T][L] values of p(expert 1) -> probs [T, L, 2]."""
    p = np.asarray(p1, dtype=np.float64)
    return np.stack([1 - p, p], axis=-1).astype(np.float32)


# 3 tokens x 2 layers, the second token's last layer missing
PROBS = probs_of([[0.2, 0.7], [0.6, NAN], [0.1, 0.4]])
TOKENS = [HOSTILE, " the", " the"]


def all_strings(fig: go.Figure) -> list[str]:
    """Every label-like string in a figure that Plotly would render as (HTML-ish) text."""
    out: list[str] = []
    for trace in fig.data:
        out += [trace.name or "", trace.hovertemplate or ""]
        text = trace.text
        out += [str(t) for t in np.ravel(np.asarray(text, dtype=object))] if text is not None else []
    out += list(fig.layout.xaxis.ticktext or [])
    return out


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        ("hello", "hello"),
        (" the", "␣the"),
        ("\n\t", "↵⇥"),
        ("", "∅"),
        ("\x01", "\ufffd"),
        ("a&b", "a&amp;b"),
        ("<b>", "&lt;b&gt;"),
        ("$x^2$", "\u200b$x^2$"),  # no MathJax
        ("%{x}", "%\u200b{x}"),  # no hover template field
        ("x" * 30, "x" * 23 + "…"),
        ("<" * 30, "&lt;" * 23 + "…"),  # cut before escaping: never half an entity
    ],
)
def test_label(token, shown):
    assert plots.label(token) == shown


def test_heatmap_two_experts():
    fig = plots.heatmap_figure(PROBS, TOKENS, ["Xwin", "Pygmalion"])
    (trace,) = fig.data
    assert isinstance(trace, go.Heatmap)
    assert trace.z.shape == (2, 3)  # layers x tokens
    np.testing.assert_allclose(trace.z, [[0.2, 0.6, 0.1], [0.7, NAN, 0.4]], rtol=1e-6)
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)
    assert [c for _, c in trace.colorscale] == [colors.EXPERT_0, colors.NEUTRAL, colors.EXPERT_1]
    assert list(trace.colorbar.ticktext) == ["Xwin", "even", "Pygmalion"]
    assert fig.layout.xaxis.title.text == "token" and fig.layout.yaxis.title.text == "layer"
    # repeated tokens keep their own column: numeric x with the texts as tick labels
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2]
    assert list(fig.layout.xaxis.ticktext)[1:] == ["␣the", "␣the"]


def test_heatmap_hover_shows_every_expert():
    fig = plots.heatmap_figure(PROBS, TOKENS, ["Xwin", "Pygmalion"])
    trace = fig.data[0]
    assert "Xwin: %{customdata[0]:.3f}" in trace.hovertemplate
    assert "Pygmalion: %{customdata[1]:.3f}" in trace.hovertemplate
    assert "%{text}" in trace.hovertemplate and "layer %{y}" in trace.hovertemplate
    assert trace.customdata.shape == (2, 3, 2)  # [layer][token] -> every expert's probability
    np.testing.assert_allclose(trace.customdata[1, 2], [0.6, 0.4], rtol=1e-6)
    assert trace.text.shape == (2, 3) and trace.text[1, 1] == "␣the"


def test_hostile_token_text_is_escaped():
    fig = plots.heatmap_figure(PROBS, TOKENS, ["<b>Xwin</b>", "%{x}"])
    escaped = "&lt;img␣src=x␣onerror=aler…"
    assert fig.layout.xaxis.ticktext[0] == escaped
    assert fig.data[0].text[0, 0] == escaped
    assert "&lt;b&gt;Xwin&lt;/b&gt;: " in fig.data[0].hovertemplate
    assert "%\u200b{x}: " in fig.data[0].hovertemplate
    for text in all_strings(fig):
        assert "<img" not in text and "<b>" not in text
        assert "<" not in text.replace("<br>", "").replace("<extra></extra>", "")


def test_heatmap_many_experts_is_categorical():
    probs = np.full((2, 3, 4), NAN, np.float32)
    probs[0] = [[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.0, 0.5, 0.5, 0.0]]
    probs[1, :2] = [[0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.1, 0.9]]
    names = ["a", "b", "c", "d"]
    (trace,) = plots.heatmap_figure(probs, ["x", "y"], names).data
    # first choices, layers x tokens; 50/50 tie -> lower id; layer 2 of token 1 missing
    np.testing.assert_array_equal(trace.z, [[3, 0], [0, 3], [1, NAN]])
    assert (trace.zmin, trace.zmax) == (-0.5, 3.5)
    assert len(trace.colorscale) == 8 and trace.colorscale[2] == (0.25, colors.PALETTE[1])
    assert list(trace.colorbar.ticktext) == names
    assert all(f"{n}: %{{customdata[{i}]" in trace.hovertemplate for i, n in enumerate(names))
    experts = np.zeros((2, 3, 2), np.int64)  # llama.cpp said expert 0 everywhere
    np.testing.assert_array_equal(plots.heatmap_figure(probs, ["x", "y"], names, experts=experts).data[0].z[0], [0, 0])


def test_heatmap_two_experts_categorical_view():
    (trace,) = plots.heatmap_figure(PROBS, TOKENS, ["Xwin", "Pygmalion"], categorical=True).data
    np.testing.assert_array_equal(trace.z, [[0, 1, 0], [1, NAN, 0]])
    assert [c for _, c in trace.colorscale] == [colors.EXPERT_0] * 2 + [colors.EXPERT_1] * 2
    assert list(trace.colorbar.ticktext) == ["Xwin", "Pygmalion"]


def test_heatmap_shapes_are_checked_and_empty_works():
    with pytest.raises(ValueError, match="tokens"):
        plots.heatmap_figure(PROBS, ["a"], ["x", "y"])
    with pytest.raises(ValueError, match="names"):
        plots.heatmap_figure(PROBS, TOKENS, ["x"])
    fig = plots.heatmap_figure(np.zeros((0, 4, 2), np.float32), [], ["x", "y"])
    assert fig.data[0].z.shape == (4, 0)


def test_share_bars():
    layer_share = soft_share(PROBS)  # layer 0: (0.7, 0.3); layer 1: (0.45, 0.55)
    fig = plots.share_bars_figure(layer_share, ["Xwin", HOSTILE])
    assert [type(t) for t in fig.data] == [go.Bar, go.Bar]
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["Xwin", "&lt;img src=x onerror=alert(1)&gt;"]
    np.testing.assert_allclose(fig.data[1].y, [0.3, 0.55], rtol=1e-6)
    assert list(fig.data[0].x) == [0, 1]
    assert [t.marker.color for t in fig.data] == [colors.EXPERT_0, colors.EXPERT_1]
    assert fig.layout.xaxis.title.text == "layer" and tuple(fig.layout.yaxis.range) == (0, 1)


def test_drift():
    shares = np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    fig = plots.drift_figure(shares, ["Xwin", "Pygmalion"], ["user: hi", HOSTILE, "ok"])
    assert [type(t) for t in fig.data] == [go.Scatter, go.Scatter]
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.data[1].y) == [0.4, 0.5, 0.8]
    assert fig.data[0].text[1].startswith("&lt;img")
    assert "%{text}" in fig.data[0].hovertemplate and fig.data[1].line.color == colors.EXPERT_1
    assert fig.layout.xaxis.title.text == "message"
    assert plots.drift_figure(shares, ["a", "b"]).data[0].text is None


def test_fidelity():
    fig = plots.fidelity_figure(np.array([1.0, 0.75]), np.array([1.0, -0.5]), np.array([0.0, 0.15]))
    assert [t.name for t in fig.data] == ["top-1 agreement", "Cohen's kappa", "mean |Δp|"]
    assert list(fig.data[1].y) == [1.0, -0.5]
    assert fig.layout.yaxis.range[0] < -0.5 and fig.layout.xaxis.title.text == "layer"
    nan_only = plots.fidelity_figure(np.array([NAN]), np.array([NAN]))
    assert len(nan_only.data) == 2 and tuple(nan_only.layout.yaxis.range) == (-0.02, 1.02)


# --- colours -----------------------------------------------------------------------------------------------------


def test_expert_colors_are_consistent():
    assert colors.expert_colors(2) == (colors.EXPERT_0, colors.EXPERT_1)
    assert colors.expert_colors(3) == colors.PALETTE[:3]
    assert colors.expert_colors(20)[len(colors.PALETTE)] == colors.PALETTE[0]


def test_token_colors_two_experts_diverging():
    probs = probs_of([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.75, NAN], [NAN, NAN]])
    # layer 0. 0.75 is half-way from the neutral (247,247,247) to expert 1 (214,96,77): (230.5,171.5,162),
    # rounded half to even -> (230,172,162) = #e6aca2
    assert plots.token_colors(probs, 0) == [colors.EXPERT_0, colors.NEUTRAL, colors.EXPERT_1, "#e6aca2", colors.MISSING]
    # mean over the routed layers: 0.5, 0.5, 0.5, 0.75 (layer 1 missing), none
    assert plots.token_colors(probs, None) == [colors.NEUTRAL] * 3 + ["#e6aca2", colors.MISSING]
    assert plots.token_colors(probs, -1)[:3] == [colors.EXPERT_1, colors.NEUTRAL, colors.EXPERT_0]


def test_token_colors_top_k_is_categorical():
    probs = np.array([[[0.1, 0.2, 0.7]], [[0.5, 0.3, 0.2]], [[NAN, NAN, NAN]]])
    assert colors.token_colors(probs, 0, k=2) == [colors.PALETTE[2], colors.PALETTE[0], colors.MISSING]
    assert colors.token_colors(probs_of([[0.9], [0.4]]), 0, k=1) == [colors.EXPERT_1, colors.EXPERT_0]
    # all 3 run (k = E): the neutral for a uniform split, the expert's own colour when it takes everything
    every = np.array([[[1 / 3, 1 / 3, 1 / 3]], [[0.0, 1.0, 0.0]]])
    assert colors.token_colors(every, 0) == [colors.NEUTRAL, colors.PALETTE[1]]
    assert colors.token_colors(np.zeros((0, 2, 2)), None) == []
