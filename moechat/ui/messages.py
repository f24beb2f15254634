"""Acting on one message of the open chat: select it (its routing is shown), edit, delete, hide it from the
model, swipe the last reply left or right, and pick the layer the tokens are coloured by. Store calls only."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import gradio as gr

from moechat.errors import MoechatError
from moechat.store.store import Store
from moechat.ui.chat import ChatUI
from moechat.ui.html import esc
from moechat.ui.outputs import ChatOutputs
from moechat.ui.routing import parse_layer, token_view
from moechat.ui.session import Session


class MessageActions:
    def __init__(self, chat_ui: ChatUI) -> None:
        self.ui = chat_ui

    def _store(self, session: Session) -> AbstractContextManager[Store]:
        return self.ui.stores.lease(session.owner)

    def select(self, session: Session, evt: gr.SelectData) -> tuple:
        """Show the clicked message's routing; load its text into the edit box. Returns (*ChatOutputs, text, hidden)."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not 0 <= index < len(session.message_ids):
            return (*ChatOutputs.skip(), gr.skip(), gr.skip())
        session.selected = session.message_ids[index]
        with self._store(session) as store:
            message = store.message(session.selected)
        return (*self.ui.views(session), message.text, message.hidden)

    def _selected_or_warn(self, session: Session) -> int | None:
        if session.selected is None or session.selected not in session.message_ids:
            gr.Warning("Click a message in the chat first.")
            return None
        return session.selected

    def _act(self, session: Session, action: Callable[[Store, int], object]) -> ChatOutputs[Any]:
        message_id = self._selected_or_warn(session)
        if message_id is None:
            return ChatOutputs.skip()
        try:
            with self._store(session) as store:
                action(store, message_id)
        except MoechatError as exc:
            gr.Warning(esc(exc))
            return ChatOutputs.skip()
        return self.ui.views(session)

    def save_edit(self, session: Session, text: str) -> ChatOutputs[Any]:
        return self._act(session, lambda store, mid: store.edit_message(mid, text))

    def delete(self, session: Session) -> ChatOutputs[Any]:
        def drop(store: Store, mid: int) -> None:
            store.delete_message(mid)
            session.selected = None

        return self._act(session, drop)

    def set_hidden(self, session: Session, hidden: bool) -> ChatOutputs[Any]:
        return self._act(session, lambda store, mid: store.set_hidden(mid, bool(hidden)))

    def swipe(self, session: Session, delta: int) -> ChatOutputs[Any]:
        """Step the last reply's swipes (← -1, → +1, wrapping); regenerate makes a new one."""
        if not session.message_ids:
            return ChatOutputs.skip()
        last = session.message_ids[-1]
        with self._store(session) as store:
            try:
                message = store.message(last)
                if message.role != "assistant":
                    gr.Warning("The last message is yours: there is no reply to swipe.")
                    return ChatOutputs.skip()
                store.step_swipe(last, delta)
            except MoechatError as exc:
                gr.Warning(esc(exc))
                return ChatOutputs.skip()
        session.selected = last
        return self.ui.views(session)

    def swipe_left(self, session: Session) -> ChatOutputs[Any]:
        return self.swipe(session, -1)

    def swipe_right(self, session: Session) -> ChatOutputs[Any]:
        return self.swipe(session, +1)

    def layer(self, session: Session, choice: str) -> tuple:
        """Colour tokens by one layer or the mean: returns (session, tokens HTML)."""
        session.layer = parse_layer(choice)
        return session, token_view(session.shown, self.ui.model, session.layer)
