"""Chat events: send, regenerate, continue, impersonate, steered replies (top-1 routing, one expert only) and
stop, all streamed. A turn itself is chat.py's; this module folds its Updates into component values at a bounded
cadence, with per-refresh work proportional to the new tokens (see ui.live), and turns domain errors into
warnings. Every chat handler yields ui.outputs.ChatOutputs (gr.skip() for what did not change); the turn
handlers take the controls' values as one TurnInputs (built by the wiring).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Literal

import gradio as gr

from moechat import chat
from moechat.engine.engine import Engine
from moechat.errors import MoechatError
from moechat.moe.steering import steering_label
from moechat.ui.html import chat_message, context_html, esc, queue_place
from moechat.ui.live import LiveReply
from moechat.ui.outputs import ChatOutputs
from moechat.ui.routing import Shown, heatmap, metrics_view, share_bars, token_view
from moechat.ui.session import Session
from moechat.ui.turn_inputs import TurnInputs
from moechat.ui.views import ChatViews

log = logging.getLogger(__name__)
LIVE_EVERY_S = 0.15  # chat text and coloured tokens while streaming (and the final update)
METRICS_EVERY_S = 1.0  # routing metrics while streaming (a summary of the whole reply so far)
FIGURES_EVERY_S = 3.0  # heatmap and share bars while streaming (costly to build and to draw; final one always)
FIGURES_BUDGET = 0.02  # ... and at most this share of the streaming time goes into building them
Steer = tuple[str, int | None]  # moechat.moe.steering's mode ("top1", "solo") and expert
BUSY = "A reply is still being written in this tab: wait for it, or press Stop."


@dataclass(frozen=True)
class Action:
    """What a streamed turn does: send `text`, or regenerate or continue the last reply, optionally steered."""

    kind: Literal["send", "regenerate", "continue", "trigger"]
    text: str = ""
    steer: Steer | None = None
    speaker: int | None = None  # trigger: the group member asked to speak (None: the group's strategy picks)


class ChatUI(ChatViews):
    # ---- streamed turns (the request is Gradio's, for the per-tab stop flag) --------------------------------
    def send(
        self, session: Session, text: str, turn: TurnInputs, request: gr.Request | None = None
    ) -> Iterator[ChatOutputs[Any]]:
        if not (text or "").strip():
            yield ChatOutputs.skip()
            return
        yield from self._turn(session, turn, request, Action("send", text))

    def regenerate(
        self, session: Session, turn: TurnInputs, request: gr.Request | None = None
    ) -> Iterator[ChatOutputs[Any]]:
        yield from self._turn(session, turn, request, Action("regenerate"))

    def continue_reply(
        self, session: Session, turn: TurnInputs, request: gr.Request | None = None
    ) -> Iterator[ChatOutputs[Any]]:
        yield from self._turn(session, turn, request, Action("continue"))

    def speak(
        self, session: Session, speaker: int | None, turn: TurnInputs, request: gr.Request | None = None
    ) -> Iterator[ChatOutputs[Any]]:
        """A group member speaks next (SillyTavern's "speak" button; None: whoever the group's strategy picks)."""
        yield from self._turn(session, turn, request, Action("trigger", speaker=speaker))

    def steer_top1(
        self, session: Session, turn: TurnInputs, request: gr.Request | None = None
    ) -> Iterator[ChatOutputs[Any]]:
        """A new swipe of the last reply, generated with top-1 routing and labelled so."""
        yield from self._turn(session, turn, request, Action("regenerate", steer=("top1", None)))

    def steer_solo(
        self, session: Session, expert: str, turn: TurnInputs, request: gr.Request | None = None
    ) -> Iterator[ChatOutputs[Any]]:
        """A new swipe of the last reply written by one expert only ("solo: <name>")."""
        names = self.model.expert_names
        if expert not in names:
            gr.Warning("Pick an expert for the solo reply first.")
            yield ChatOutputs.skip()
            return
        yield from self._turn(session, turn, request, Action("regenerate", steer=("solo", names.index(expert))))

    def _lease(self, steer: Steer | None) -> AbstractContextManager[Engine]:
        if steer is None:
            return self.slot.use()
        if steer[0] == "solo":
            gr.Info("Loading the solo-expert model (built once per expert, then cached)…")
        return self.slot.use_steered(*steer)

    def _turn(
        self, session: Session, turn: TurnInputs, request: gr.Request | None, action: Action
    ) -> Iterator[ChatOutputs[Any]]:
        chat_id = session.chat_id
        if chat_id is None:
            gr.Warning("Pick a character first: click one in the gallery.")
            yield ChatOutputs.skip()
            return
        # the store lease is held until the reply is stored
        with self.turns.run(_key(request)) as cancel, self.stores.lease(session.owner) as store:
            if cancel is None:
                gr.Warning(BUSY)
                yield ChatOutputs.skip()  # a message stays in its box
                return
            options = turn.options(session.st_preset, session.persona_id)
            kind, text = action.kind, action.text
            display = self.display(session)  # the history part of the chatbot value: built once per turn
            if kind == "send":
                display += [chat_message("user", text), chat_message("assistant", "")]
            elif kind == "trigger":
                display += [chat_message("assistant", "")]
            elif display:
                display[-1] = chat_message("assistant", display[-1]["content"][0]["text"] if kind == "continue" else "")
            sent = "" if kind == "send" else gr.skip()  # the box empties as the message joins the chat
            yield ChatOutputs.skip()._replace(session=session, chatbot=list(display), msg=sent)
            last = None
            try:
                with self._lease(action.steer) as engine:
                    if action.steer is not None:
                        options = replace(options, label=steering_label(self.engine.info, *action.steer))
                    runs = {
                        "send": lambda: chat.send(engine, store, chat_id, text, options, cancel),
                        "regenerate": lambda: chat.regenerate(engine, store, chat_id, options, cancel),
                        "continue": lambda: chat.continue_reply(engine, store, chat_id, options, cancel),
                        "trigger": lambda: chat.trigger(engine, store, chat_id, action.speaker, options, cancel),
                    }
                    for upd, values in self._fold(runs[kind](), session, display, options.label):
                        last = upd
                        yield values
            except MoechatError as exc:
                gr.Warning(esc(exc))
            except Exception as exc:  # the app stays up; the log keeps the traceback
                log.exception("turn failed")
                gr.Warning(esc(f"generation failed: {exc}"))
        yield self._after_turn(session, last)

    def _fold(
        self, updates: Iterator[chat.Update], session: Session, display: list[dict], label: str = ""
    ) -> Iterator[tuple[chat.Update, ChatOutputs[Any]]]:
        """(update, outputs) at most every LIVE_EVERY_S and for the last token. Work per refresh: the new
        tokens' spans and the reply's text. Metrics every METRICS_EVERY_S; figures (slow to build) every
        FIGURES_EVERY_S, or less often when building them would take more than FIGURES_BUDGET of the time.
        The final figures and metrics come with the views after the turn, so the last token is not held up."""
        live = LiveReply(self.model, session.layer, label)
        start = time.monotonic()
        shown_live, metrics_due, figures_due = 0.0, start, start + FIGURES_EVERY_S
        sent_context = sent_user = False
        message_id, group, face = None, self.group(session) is not None, None
        for upd in updates:
            if message_id is not None and upd.message_id != message_id:  # a group's next member: a new bubble
                display.append(chat_message("assistant", ""))
                live = LiveReply(self.model, session.layer, label)
            if group and upd.message_id != message_id:  # who writes it, from its first update
                face = self.faces(session, [upd.message_id]).get(upd.message_id)
            message_id = upd.message_id
            if upd.waiting:  # no token yet: the reply bubble says where this turn is in the model's queue
                display[-1] = chat_message("assistant", queue_place(upd.waiting))
                yield upd, ChatOutputs.skip()._replace(session=session, chatbot=list(display))
                continue
            now = time.monotonic()
            final = upd.finish is not None
            if not final and now - shown_live < LIVE_EVERY_S:
                continue
            shown_live = now
            display[-1] = chat_message("assistant", upd.text, label=face[0] if face else "", face=face)
            tokens = live.tokens_html(upd.token_texts, upd.probs)
            figures, metrics = not final and now >= figures_due, not final and now >= metrics_due
            if figures or metrics:
                session.shown = live.shown("this reply", upd.token_texts, upd.probs)
            views = self._live_views(session, tokens, figures, metrics)
            if figures:
                cost = time.monotonic() - now
                figures_due = now + max(FIGURES_EVERY_S, cost / FIGURES_BUDGET)
            metrics_due = now + METRICS_EVERY_S if metrics else metrics_due
            user = gr.skip() if sent_user else self._user_live(upd)
            sent_user = sent_user or len(upd.prompt_token_texts) > 0
            context = gr.skip() if sent_context else context_html(upd.report)
            sent_context = True
            yield upd, views._replace(session=session, chatbot=list(display), user_tokens=user, context=context)

    def _live_views(self, session: Session, tokens: str, figures: bool, metrics: bool) -> ChatOutputs[Any]:
        """The routing panel while streaming (every other output skipped)."""
        shown, model = session.shown, self.model
        return ChatOutputs.skip()._replace(
            tokens=tokens,
            heatmap=heatmap(shown, model) if figures else gr.skip(),
            bars=share_bars(shown, model) if figures else gr.skip(),
            metrics=metrics_view(shown, model) if metrics else gr.skip(),
        )

    def _user_live(self, upd: chat.Update) -> object:
        if not len(upd.prompt_token_texts):
            return gr.skip()
        shown = Shown.aligned("your message", upd.prompt_token_texts, upd.prompt_probs, self.model.shape)
        return token_view(shown, self.model, None)

    def _after_turn(self, session: Session, last: chat.Update | None) -> ChatOutputs[Any]:
        if last is not None:
            session.selected, session.last_rate = last.message_id, last.tokens_per_s or session.last_rate
            if last.finish == "cancelled":
                gr.Info("Stopped: the partial reply is kept.")
        return self.views(session, reload_shown=True)

    def impersonate(self, session: Session, turn: TurnInputs, request: gr.Request | None = None) -> Iterator[str]:
        """Drafts of the user's next message, streamed into the input box (nothing is stored)."""
        chat_id = session.chat_id
        if chat_id is None:
            gr.Warning("Pick a character first.")
            return
        with self.turns.run(_key(request)) as cancel, self.stores.lease(session.owner) as store:
            if cancel is None:
                gr.Warning(BUSY)
                return
            shown, draft = 0.0, ""
            try:
                options = turn.options(session.st_preset, session.persona_id)
                with self.slot.use() as engine:
                    for draft in chat.impersonate(engine, store, chat_id, options, cancel):
                        if time.monotonic() - shown >= LIVE_EVERY_S:
                            shown = time.monotonic()
                            yield draft
            except MoechatError as exc:
                gr.Warning(esc(exc))
        yield draft

    def stop(self, request: gr.Request | None = None) -> None:
        self.turns.stop(_key(request))


def _key(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None
