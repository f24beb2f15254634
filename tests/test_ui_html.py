"""Pure UI helpers: every text is escaped, tokens carry colours and per-layer hover, offsets map to texts."""

import numpy as np
import pytest

from moechat.routing.summary import summarize
from moechat.ui.html import (
    card_markdown,
    chat_message,
    context_html,
    display_text,
    metrics_html,
    token_texts_from_offsets,
    tokens_html,
)
from moechat.ui.routing import Shown, parse_layer

HOSTILE = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", '" onmouseover="alert(1)', "&amp;<b>"]


def _probs(n: int, layers: int = 2) -> np.ndarray:
    p1 = np.linspace(0.1, 0.9, n * layers).reshape(n, layers)
    return np.stack([1 - p1, p1], axis=-1).astype(np.float32)


@pytest.mark.parametrize("text", HOSTILE)
def test_tokens_html_escapes_tokens_and_expert_names(text: str) -> None:
    out = tokens_html([text, "ok"], _probs(2), [text, "Pygmalion"])
    assert "<img" not in out and "<script" not in out and 'onmouseover="' not in out and "<b>" not in out
    assert out.count('class="moe-tok"') == 2


def test_tokens_html_colours_and_hover() -> None:
    out = tokens_html(["a", "b", "\n"], _probs(3), ["Xwin", "Pygmalion"], layer=1)
    assert out.count("background:#") == 3 and "layer 1" in out
    assert "L1: Pygmalion" in out and "↵" in out


def test_tokens_html_missing_routing_and_empty() -> None:
    probs = _probs(2)
    probs[1] = np.nan
    out = tokens_html(["a", "b"], probs, ["Xwin", "Pygmalion"])
    assert "#bdbdbd" in out and "L0: -" in out
    assert "No routing yet" in tokens_html([], np.zeros((0, 2, 2)), ["Xwin", "Pygmalion"])


def test_categorical_legend_for_top_k() -> None:
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=(3, 2)).astype(np.float32)
    out = tokens_html(["a", "b", "c"], probs, ["e0", "e1", "e2", "e3"], k=2)
    assert out.count("moe-swatch") == 4


@pytest.mark.parametrize("text", HOSTILE)
def test_chat_message_card_and_metrics_escape(text: str) -> None:
    msg = chat_message("assistant", text, badge=text, swipe=(1, 3))
    body = msg["content"][0]["text"]
    assert "<img" not in body and "<script" not in body and "swipe 2/3" in body
    assert "<img" not in card_markdown(text, [text], text, text)
    s = summarize(_probs(4), [text, "Pygmalion"])
    assert "<img" not in metrics_html(s, title=text) and "<script" not in metrics_html(s, title=text)


def test_display_text_keeps_markdown_but_not_html() -> None:
    assert display_text("*waves* <b>hi</b>") == "*waves* &lt;b&gt;hi&lt;/b&gt;"


def test_context_meter_reports_drops() -> None:
    from types import SimpleNamespace

    report = SimpleNamespace(
        budget=1000,
        total=600,
        estimated=False,
        sections={"description": 200, "history": 400, "lore": 0},
        dropped_messages=(0, 1),
        dropped_examples=(),
        dropped_lore=(3,),
        dropped_note=True,
    )
    out = context_html(report)
    assert "600 / 1000" in out and "2 old messages" in out and "lore entries 3" in out and "author" in out
    assert "lore</th>" not in out  # empty sections are left out


@pytest.mark.parametrize(
    ("text", "offsets", "expected"),
    [
        ("hello world", [0, 5, 6], ["hello", " ", "world"]),
        ("ab", [-1, 0, 0, 1], ["", "", "a", "b"]),
        ("é!", [0, 0, 1], ["", "é", "!"]),
        ("", [], []),
    ],
)
def test_token_texts_from_offsets(text: str, offsets: list[int], expected: list[str]) -> None:
    assert token_texts_from_offsets(text, offsets) == expected


def test_shown_aligned_pads_missing_rows_and_parse_layer() -> None:
    shown = Shown.aligned("r", ["a", "b", "c"], _probs(2), (2, 2))
    assert shown.probs.shape == (3, 2, 2) and np.isnan(shown.probs[2]).all()
    assert parse_layer("layer 3") == 3 and parse_layer("mean over layers") is None


def test_live_reply_renders_only_new_tokens_and_matches_the_full_view() -> None:
    from moechat.ui.live import LiveReply
    from moechat.ui.routing import Model

    model = Model(("Xwin", "Pygmalion"), 2, 2)
    texts, probs = ["a", "<b>", "c", "\n"], _probs(4)
    live = LiveReply(model, None)
    live.tokens_html(texts[:2], probs[:2])
    out = live.tokens_html(texts, probs)
    assert out == tokens_html(texts, probs, model.expert_names, k=2)
    solo = LiveReply(model, None, "solo: Xwin")
    assert "no routing" in solo.tokens_html(["a"], np.full((1, 2, 1), np.nan, np.float32)).lower()
    assert not solo.shown("r", ["a"], np.full((1, 2, 1), np.nan)).routed


def test_steered_label_and_gpu_note() -> None:
    from moechat.engine.types import LoadReport
    from moechat.ui.html import gpu_note

    body = chat_message("assistant", "hi", swipe=(1, 2), label="solo: <Xwin>")["content"][0]["text"]
    assert "swipe 2/2" in body and "solo: &lt;Xwin&gt;" in body
    assert "CMAKE_ARGS" in gpu_note(LoadReport(False, 0, "fast", 2))
    assert gpu_note(LoadReport(True, 7, "fast", 2)) == ""


def test_markdown_images_in_untrusted_text_are_never_fetched():
    from moechat.ui.html import card_markdown, display_text

    shown = display_text("look ![pixel](https://evil.example/p.png) and [a link](https://example.org)")
    assert "![" not in shown and "!\\[pixel]" in shown
    assert "[a link](https://example.org)" in shown
    assert "![" not in card_markdown("Eve", [], "![x](https://evil.example/x.png)")


def test_a_group_members_picture_is_one_image_whatever_the_name() -> None:
    name = '"><img src=x onerror=alert(1)>'
    body = chat_message("assistant", "hi", label=name, face=(name, "gradio_api/file=/d/avatars/a b.png"))
    text = body["content"][0]["text"]
    assert text.count("<img") == 1 and text.startswith('<img class="moe-face" src="gradio_api/file=/d/avatars/a b.png"')
    assert 'alt="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in text
