"""The chat view's outputs: one contract, in one order, for the wiring and the handlers.

The wiring fills these tuples with components (`ChatOutputs[Component]`, passed to Gradio as the event's
outputs); a handler returns the same tuple filled with new values (`ChatOutputs[Any]`), gr.skip() for an output
that did not change. Fields are matched by name, so the order lives here only.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

import gradio as gr

T = TypeVar("T")


class ChatOutputs(NamedTuple, Generic[T]):
    """What every chat event updates."""

    session: T
    chatbot: T
    tokens: T  # the shown message's coloured tokens
    heatmap: T
    bars: T  # share of each expert per layer
    metrics: T
    user_tokens: T  # the user's last message's routing
    drift: T
    context: T  # the context meter
    model_panel: T
    msg: T  # the message box: a send empties it as its message joins the chat (a send that never ran keeps it)

    @classmethod
    def skip(cls) -> ChatOutputs[Any]:
        """Nothing changes."""
        return ChatOutputs._make(gr.skip() for _ in cls._fields)


class ChatOpened(NamedTuple, Generic[T]):
    """What opening a chat updates: the chat view, then the chat picker, the character info and the chat title."""

    view: ChatOutputs[T]
    picker: T
    info: T
    title: T

    def flat(self) -> tuple[T, ...]:
        """The values (or components) in Gradio's order."""
        return (*self.view, self.picker, self.info, self.title)

    @classmethod
    def skip(cls) -> ChatOpened[Any]:
        return ChatOpened(ChatOutputs.skip(), gr.skip(), gr.skip(), gr.skip())
