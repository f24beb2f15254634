"""The chat's views built from the store (no streaming here): the chatbot value, the routing panel of the
selected message, the user's message routing, the drift figure and the model panel.

Store reads happen on chat switch, after a turn and after an edit; never while a reply streams. Each swipe's
routing summary (badge, drift share) is computed once per session and cached: routing never changes.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from moechat.engine.engine import Engine
from moechat.errors import StoreError
from moechat.gguf.info import expert_labels
from moechat.library import avatar_file
from moechat.models.slot import ModelSlot
from moechat.plots import Figure, drift_figure
from moechat.routing.summary import Summary, summarize
from moechat.store.groups import GroupInfo
from moechat.store.records import Message
from moechat.ui.html import chat_message, file_url, model_markdown
from moechat.ui.outputs import ChatOutputs
from moechat.ui.routing import Model, Shown, heatmap, metrics_view, share_bars, stored_view, token_view
from moechat.ui.session import Session, Stores, Turns


def model_of(engine: Engine) -> Model:
    info = engine.info
    return Model(expert_labels(info), info.n_layers, info.n_experts_used)


class ChatViews:
    def __init__(self, slot: ModelSlot, stores: Stores, turns: Turns, data_dir: Path) -> None:
        self.slot, self.stores, self.turns, self.data_dir = slot, stores, turns, data_dir
        self._model: tuple[int, Model] | None = None

    @property
    def engine(self) -> Engine:
        return self.slot.get()

    @property
    def model(self) -> Model:
        """The current model's shape and expert names (recomputed after a model switch)."""
        if self._model is None or self._model[0] != self.slot.generation:
            self._model = (self.slot.generation, model_of(self.engine))
        return self._model[1]

    # ---- chatbot ----------------------------------------------------------------------------------------
    def messages(self, session: Session) -> list[Message]:
        if session.chat_id is None:
            return []
        with self.stores.lease(session.owner) as store:
            return store.messages(session.chat_id)

    def display(self, session: Session, messages: list[Message] | None = None) -> list[dict]:
        """The chat as gr.Chatbot messages; also refreshes session.message_ids."""
        messages = self.messages(session) if messages is None else messages
        session.message_ids = [m.id for m in messages]
        name = self.engine.info.name
        if self.group(session) is None:
            return [self.bubble(session, m, name) for m in messages]
        faces = self.faces(session, [m.id for m in messages if m.role == "assistant"])
        return [self.bubble(session, m, name, named=True, face=faces.get(m.id)) for m in messages]

    def faces(self, session: Session, message_ids: list[int]) -> dict[int, tuple[str, str]]:
        """A group chat's replies: message id -> (the member's name, their picture's URL), for the messages that
        record who said them (and whose character still exists)."""
        if session.chat_id is None:
            return {}
        members: dict[int, tuple[str, str]] = {}  # each member looked up once, however many messages are theirs
        with self.stores.lease(session.owner) as store:
            speakers = store.speakers(session.chat_id)
            for cid in {speakers[m] for m in message_ids if m in speakers}:
                with suppress(StoreError):  # a member deleted since: the name alone
                    members[cid] = (store.character(cid).name, file_url(avatar_file(store, self.data_dir, cid)))
        return {m: members[speakers[m]] for m in message_ids if speakers.get(m) in members}

    def group(self, session: Session) -> GroupInfo | None:
        """The open chat's group (None: a one-to-one chat, or no chat)."""
        if session.chat_id is None:
            return None
        with self.stores.lease(session.owner) as store:
            return store.chat_group(session.chat_id)

    def bubble(
        self, session: Session, m: Message, model_name: str, named: bool = False, face: tuple[str, str] | None = None
    ) -> dict:
        label = m.current.stats.model if m.role == "assistant" else ""
        shown_label = label if label and label != model_name else ""
        if named and m.role == "assistant":  # a group chat: who said it
            shown_label = f"{m.name} · {shown_label}" if shown_label else m.name
        s = self.summary(session, m)
        return chat_message(
            m.role, m.text, badge=s.badge if s else "", swipe=(m.swipe_index, len(m.swipes)), hidden=m.hidden,
            label=shown_label, face=face,
        )  # fmt: skip

    def summary(self, session: Session, m: Message) -> Summary | None:
        """The routing summary of a reply's current swipe (cached per swipe), None without routing."""
        key = m.current.id
        if key not in session.summaries:
            session.summaries[key] = self._summarize(session, m)
        return session.summaries[key]

    def _summarize(self, session: Session, m: Message) -> Summary | None:
        if m.role != "assistant" or not m.current.has_routing:
            return None
        with self.stores.lease(session.owner) as store:
            record = store.routing(m.current.id)
        if record is None or record.probs.shape[-1] < 1:
            return None
        names = expert_labels_for(record.probs.shape[-1], self.model)
        s = summarize(record.probs.astype(np.float32), names)
        return s if s.n_tokens else None

    # ---- every view -------------------------------------------------------------------------------------
    def views(self, session: Session, *, reload_shown: bool = True) -> ChatOutputs[Any]:
        """Every chat output from the store (on chat switch, after a turn or an edit)."""
        messages = self.messages(session)
        chatbot = self.display(session, messages)
        if reload_shown:
            session.shown = self._stored_shown(session, messages)
        user = next((m for m in reversed(messages) if m.role == "user"), None)
        user_shown = self._stored(session, user) if user else None
        tokens, heat, bars, metrics = self.routing_views(session)
        return ChatOutputs(
            session=session,
            chatbot=chatbot,
            tokens=tokens,
            heatmap=heat,
            bars=bars,
            metrics=metrics,
            user_tokens=token_view(user_shown, self.model, session.layer),
            drift=self.drift(session, messages),
            context=gr.skip(),
            model_panel=self.model_panel(session),
            msg=gr.skip(),
        )

    def drift(self, session: Session, messages: list[Message]) -> Figure | None:
        shares, labels = [], []
        n = len(self.model.expert_names)
        for m in messages:
            s = self.summary(session, m)
            if s is not None and len(s.share) == n:
                shares.append(s.share)
                labels.append(f"{m.name}: {m.text[:40]}")
        return drift_figure(np.array(shares), self.model.expert_names, labels) if shares else None

    def _stored_shown(self, session: Session, messages: list[Message]) -> Shown | None:
        by_id = {m.id: m for m in messages}
        selected = by_id.get(session.selected) if session.selected is not None else None
        target = selected or next((m for m in reversed(messages) if m.role == "assistant"), None)
        return self._stored(session, target) if target is not None else None

    def _stored(self, session: Session, message: Message) -> Shown | None:
        with self.stores.lease(session.owner) as store:
            return stored_view(store, message, self.model, self._piece)

    def _piece(self, token_id: int) -> str:
        return self.engine.piece(token_id).decode("utf-8", "replace")

    def routing_views(self, session: Session, figures: bool = True) -> tuple:
        """tokens HTML, heatmap, share bars, metrics of session.shown."""
        shown = session.shown
        figs = (heatmap(shown, self.model), share_bars(shown, self.model)) if figures else (gr.skip(), gr.skip())
        return (token_view(shown, self.model, session.layer), *figs, metrics_view(shown, self.model))

    def model_panel(self, session: Session) -> str:
        engine = self.engine
        return model_markdown(engine.info, engine.report, session.last_rate, engine.occupancy())


def expert_labels_for(n: int, model: Model) -> tuple[str, ...]:
    """The current model's expert names when a record has its shape, else generic ones (an older model's)."""
    return model.expert_names if len(model.expert_names) == n else tuple(f"expert {i}" for i in range(n))
