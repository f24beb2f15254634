"""Routing per character over a group chat (moechat.routing.characters) against a plain numpy computation, and
its figures (moechat.plots)."""

from __future__ import annotations

import numpy as np

from moechat import plots
from moechat.routing.characters import by_character


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def replies() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    out = []
    for name, n in (("Alice", 5), ("Bob", 3), ("Alice", 4), ("Bob", 2), ("Alice", 1)):
        probs = softmax(rng.normal(size=(n, 3, 4)))
        out.append((name, probs))
    out[1][1][0, 2] = np.nan  # one token lost its routing at layer 2
    return out


def test_weight_split_per_character_matches_numpy() -> None:
    data = replies()
    got = by_character(data, ["Alice", "Bob", "Cara"])
    assert got.names == ("Alice", "Bob", "Cara")
    for c, name in enumerate(("Alice", "Bob")):
        probs = np.concatenate([p for s, p in data if s == name]).astype(np.float64)
        layer = np.stack([np.nanmean(probs[:, l_, :], axis=0) for l_ in range(3)])  # NaN rows skipped per layer
        np.testing.assert_allclose(got.layer_share[c], layer)
        np.testing.assert_allclose(got.share[c], layer.mean(axis=0))
        np.testing.assert_allclose(got.share[c].sum(), 1.0)
        own = [p for s, p in data if s == name]
        expected = np.stack([np.stack([np.nanmean(p[:, l_, :], axis=0) for l_ in range(3)]).mean(axis=0) for p in own])
        np.testing.assert_allclose(got.drift[c], expected)
    assert got.tokens.tolist() == [10, 5, 0]
    assert np.isnan(got.share[2]).all() and got.drift[2].shape == (0, 4)


def test_default_order_and_empty_chat() -> None:
    assert by_character(replies()).names == ("Alice", "Bob")
    empty = by_character([], ["Alice"])
    assert empty.share.shape == (1, 0) and empty.tokens.tolist() == [0]


def test_character_figures_escape_names() -> None:
    got = by_character(replies(), ["<b>Alice</b>", "Bob"])
    fig = plots.character_layers_figure(got.layer_share, got.names, ["a", "b", "c", "d"])
    assert len(fig.data) == 8 and fig.layout.annotations[0].text == "&lt;b&gt;Alice&lt;/b&gt;"
    drift = plots.character_drift_figure(got.drift, got.names, ["a", "b", "c", "d"])
    assert len(drift.data) == 8 and list(drift.data[4].y) == list(got.drift[1][:, 0])


def test_character_table_is_escaped_and_filled() -> None:
    from moechat.ui.groups import character_table

    got = by_character(replies(), ["<img src=x onerror=alert(1)>", "Alice", "Bob"])
    html = character_table(got, ["Xwin", "<b>P</b>"])
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;P&lt;/b&gt;" in html
    assert html.count("<tr>") == 4 and "<td>0</td>" in html and "–" in html  # a member without replies: no shares
    assert f"<td>{got.share[1][0]:.0%}</td>" in html
