"""The routing panel's content: what is shown (tokens + routing of one message) and the four views of it
(coloured tokens, heatmap, per-layer share bars, metrics), plus the chat's drift figure. No gradio here:
ui.build wires these values to components; figures come from moechat.plots, HTML from moechat.ui.html.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from moechat import plots
from moechat.plots import Figure
from moechat.routing import summary
from moechat.store.records import Message
from moechat.store.store import Store
from moechat.ui.html import metrics_html, no_routing_html, token_texts_from_offsets, tokens_html

MEAN = "mean over layers"


@dataclass(frozen=True, eq=False)
class Shown:
    """Tokens of one message and their routing probs [tokens, layers, experts] (NaN rows: no routing)."""

    title: str
    token_texts: tuple[str, ...]
    probs: np.ndarray
    note: str = ""  # what to say when there is no routing to show (e.g. a solo-expert reply)

    @property
    def routed(self) -> bool:
        """Whether any token has routing (a solo-expert or capture-off reply has none)."""
        return len(self.token_texts) > 0 and bool(np.isfinite(self.probs).all(axis=(1, 2)).any())

    @classmethod
    def aligned(cls, title: str, token_texts: Sequence[str], probs: np.ndarray, shape: tuple[int, int]) -> Shown:
        """Pad or cut probs to one row per token (a token without routing gets a NaN row)."""
        n = len(token_texts)
        rows = np.full((n, *shape), np.nan, np.float32)
        if probs.ndim == 3 and probs.shape[1:] == shape:
            m = min(n, len(probs))
            rows[:m] = probs[:m]
        return cls(title, tuple(token_texts), rows)


@dataclass(frozen=True)
class Model:
    """What the views need to know about the model."""

    expert_names: tuple[str, ...]
    n_layers: int
    k: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_layers, len(self.expert_names))


def layer_choices(n_layers: int) -> list[str]:
    return [MEAN, *(f"layer {i}" for i in range(n_layers))]


def parse_layer(choice: str | None) -> int | None:
    """ "layer 3" -> 3; the mean (or anything else) -> None."""
    if choice and choice.startswith("layer "):
        return int(choice.removeprefix("layer "))
    return None


def token_view(shown: Shown | None, model: Model, layer: int | None) -> str:
    if shown is None:
        return tokens_html((), np.zeros((0, *model.shape)), model.expert_names)
    if not shown.routed:
        return no_routing_html(shown.note or f"{shown.title}: no routing was recorded for this message.")
    return tokens_html(shown.token_texts, shown.probs, model.expert_names, layer=layer, k=model.k)


def summary_of(shown: Shown | None, model: Model) -> summary.Summary | None:
    if shown is None or not shown.routed:
        return None
    return summary.summarize(shown.probs, model.expert_names)


def metrics_view(shown: Shown | None, model: Model) -> str:
    return metrics_html(summary_of(shown, model), shown.title if shown else "this message")


def heatmap(shown: Shown | None, model: Model) -> Figure | None:
    if shown is None or not shown.routed:
        return None
    title = f"{shown.title}: router weight, layers × tokens"
    return plots.heatmap_figure(shown.probs, shown.token_texts, model.expert_names, title=title)


def share_bars(shown: Shown | None, model: Model) -> Figure | None:
    s = summary_of(shown, model)
    if s is None:
        return None
    return plots.share_bars_figure(s.layer_share, model.expert_names, title="share of each expert per layer")


def stored_view(store: Store, message: Message, model: Model, piece: Callable[[int], str]) -> Shown | None:
    """The stored routing of a message: a reply's generated tokens, or a user message's own prompt tokens.
    `piece(token_id) -> str` names tokens that are not in the text (prompt template tokens)."""
    kind = "prompt" if message.role == "user" else "reply"
    record = store.routing(message.current.id, kind)
    if record is None or record.probs.shape[1:] != model.shape:
        return unrouted(message)
    texts = token_texts_from_offsets(message.text, record.offsets)
    if kind == "prompt":
        texts = [piece(int(t)) for t in record.token_ids]
    who = "your message" if kind == "prompt" else f"{message.name or 'reply'}"
    stale = " (edited since: routing is of the original text)" if message.current.routing_stale else ""
    return Shown(f"{who} #{message.position}{stale}", tuple(texts), record.probs.astype(np.float32))


def unrouted(message: Message) -> Shown:
    """A message without (usable) routing: the views say why instead of showing nothing."""
    label = message.current.stats.model if message.role == "assistant" else ""
    why = f"it was written by {label}, which has no router" if label.startswith("solo") else "none was recorded"
    note = f"No routing for {message.name or 'this message'} #{message.position}: {why}."
    return Shown(f"{message.name or 'message'} #{message.position}", (), np.zeros((0, 0, 0), np.float32), note)
