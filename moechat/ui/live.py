"""The streaming reply's views, built incrementally (no gradio): each refresh renders only the tokens that
arrived since the last one, so its cost does not grow with the reply or with the chat.

    live = LiveReply(model, layer)
    live.tokens_html(update)  # coloured tokens: new spans rendered, old ones reused
    live.shown(update)        # the Shown of the reply so far (no copy of the routing)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moechat.ui.html import no_routing_html, token_spans, tokens_block
from moechat.ui.routing import Model, Shown

NO_ROUTING = "This reply has no routing: {label} runs without a router (one dense FFN), so there is nothing to colour."


class LiveReply:
    """Coloured-token HTML and the shown routing of one streaming reply."""

    def __init__(self, model: Model, layer: int | None, label: str = "") -> None:
        self.model, self.layer, self.label = model, layer, label
        self._spans: list[str] = []

    def routed(self, probs: np.ndarray) -> bool:
        """Whether this reply's routing has the model's shape (a solo-expert reply has none)."""
        return probs.ndim == 3 and probs.shape[1:] == self.model.shape

    def tokens_html(self, token_texts: Sequence[str], probs: np.ndarray) -> str:
        if not self.routed(probs):
            return no_routing_html(NO_ROUTING.format(label=self.label or "this model"))
        done = len(self._spans)
        if len(token_texts) > done:
            names = self.model.expert_names
            self._spans += token_spans(token_texts[done:], probs[done:], names, layer=self.layer, k=self.model.k)
        if not self._spans:
            return no_routing_html("The reply is starting…")
        return tokens_block(self.model.expert_names, self._spans, layer=self.layer, k=self.model.k)

    def shown(self, title: str, token_texts: Sequence[str], probs: np.ndarray) -> Shown:
        """The reply so far; probs are used as they are (one row per token, as chat.Update promises)."""
        if not self.routed(probs):
            empty = np.zeros((0, *self.model.shape), np.float32)
            return Shown(title, (), empty, NO_ROUTING.format(label=self.label or "this model"))
        return Shown(title, tuple(token_texts), probs)
