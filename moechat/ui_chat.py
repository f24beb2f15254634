"""Chat events: send, regenerate, continue, impersonate and stop (streamed), swipes, and acting on the
selected message (edit, delete, hide). A turn itself is chat.py's; this module only folds its Updates into
component values at a bounded cadence and turns domain errors into warnings.

Every chat handler returns the values of `ChatUI.OUTPUTS` in that order (gr.skip() for what did not change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr

from moechat import chat
from moechat.engine import Engine, Sampling
from moechat.errors import MoechatError
from moechat.ui_html import chat_message, context_html, model_markdown
from moechat.ui_routing import Model, Shown, badge_of, drift, heatmap, metrics_view, share_bars, stored_view, token_view
from moechat.ui_session import Session, StopFlags, Stores

log = logging.getLogger(__name__)
LIVE_EVERY_S = 0.15  # chat text, coloured tokens and metrics while streaming (and the final update)
FIGURES_EVERY_S = 3.0  # heatmap and share bars while streaming (costly to build and to draw; final one always)
PRESETS: dict[str, Sampling] = {
    "Balanced": Sampling(temperature=0.8, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.05),
    "Precise": Sampling(temperature=0.3, top_p=0.9, top_k=20, min_p=0.1, repeat_penalty=1.05),
    "Creative": Sampling(temperature=1.1, top_p=0.98, top_k=0, min_p=0.02, repeat_penalty=1.1),
    "Greedy (repeatable)": Sampling(temperature=0.0),
}
N_OUT = 10  # session, chatbot, tokens, heatmap, bars, metrics, user tokens, drift, context, model panel


def skip_all() -> tuple:
    return tuple(gr.skip() for _ in range(N_OUT))


def turn_options(preset: str, max_tokens: float, seed: float | None, fmt: str, user_name: str, persona: str):
    base = PRESETS.get(preset, PRESETS["Balanced"])
    sampling = replace(base, max_tokens=int(max_tokens), seed=None if seed in (None, -1) else int(seed))
    fmt_name = None if fmt in ("", "auto", None) else fmt
    return chat.TurnOptions(sampling=sampling, format=fmt_name, user_name=user_name or "You", persona=persona or "")


class ChatUI:
    def __init__(self, engine: Engine, stores: Stores, model: Model, flags: StopFlags, data_dir: Path) -> None:
        self.engine, self.stores, self.model, self.flags, self.data_dir = engine, stores, model, flags, data_dir

    # ---- full views -------------------------------------------------------------------------------------
    def display(self, session: Session) -> list[dict]:
        """The chat as gr.Chatbot messages; also refreshes session.message_ids."""
        if session.chat_id is None:
            session.message_ids = []
            return []
        store = self.stores.get(session.owner)
        messages = store.messages(session.chat_id)
        session.message_ids = [m.id for m in messages]
        return [
            chat_message(
                m.role, m.text, badge=self._badge(session, m), swipe=(m.swipe_index, len(m.swipes)), hidden=m.hidden
            )
            for m in messages
        ]

    def _badge(self, session: Session, message) -> str:
        key = message.current.id
        if key not in session.badges:
            session.badges[key] = badge_of(self.stores.get(session.owner), message, self.model)
        return session.badges[key]

    def views(self, session: Session, *, reload_shown: bool = True) -> tuple:
        """Every chat output from the store (on chat switch, after a turn or an edit)."""
        chatbot = self.display(session)
        store = self.stores.get(session.owner)
        messages = store.messages(session.chat_id) if session.chat_id is not None else []
        if reload_shown:
            session.shown = self._stored_shown(session, messages)
        user = next((m for m in reversed(messages) if m.role == "user"), None)
        user_shown = stored_view(store, user, self.model, self._piece) if user else None
        figure_drift = drift(store, messages, self.model)
        return (
            session,
            chatbot,
            *self.routing_views(session),
            token_view(user_shown, self.model, session.layer),
            figure_drift,
            gr.skip(),
            self.model_panel(session),
        )

    def _stored_shown(self, session: Session, messages: list) -> Shown | None:
        by_id = {m.id: m for m in messages}
        target = by_id.get(session.selected) or next((m for m in reversed(messages) if m.role == "assistant"), None)
        if target is None:
            return None
        return stored_view(self.stores.get(session.owner), target, self.model, self._piece)

    def _piece(self, token_id: int) -> str:
        return self.engine.piece(token_id).decode("utf-8", "replace")

    def routing_views(self, session: Session, figures: bool = True) -> tuple:
        """tokens HTML, heatmap, share bars, metrics of session.shown."""
        shown = session.shown
        figs = (heatmap(shown, self.model), share_bars(shown, self.model)) if figures else (gr.skip(), gr.skip())
        return (token_view(shown, self.model, session.layer), *figs, metrics_view(shown, self.model))

    def model_panel(self, session: Session) -> str:
        return model_markdown(self.engine.info, self.engine.report, session.last_rate)

    # ---- streamed turns ---------------------------------------------------------------------------------
    def send(
        self,
        session: Session,
        text: str,
        preset: str,
        max_tokens: float,
        seed: float | None,
        fmt: str,
        user_name: str,
        persona: str,
        request: gr.Request = None,
    ) -> Iterator[tuple]:
        if not (text or "").strip():
            yield skip_all()
            return
        yield from self._turn("send", session, text, (preset, max_tokens, seed, fmt, user_name, persona), request)

    def regenerate(
        self,
        session: Session,
        preset: str,
        max_tokens: float,
        seed: float | None,
        fmt: str,
        user_name: str,
        persona: str,
        request: gr.Request = None,
    ) -> Iterator[tuple]:
        yield from self._turn("regenerate", session, "", (preset, max_tokens, seed, fmt, user_name, persona), request)

    def continue_reply(
        self,
        session: Session,
        preset: str,
        max_tokens: float,
        seed: float | None,
        fmt: str,
        user_name: str,
        persona: str,
        request: gr.Request = None,
    ) -> Iterator[tuple]:
        yield from self._turn("continue", session, "", (preset, max_tokens, seed, fmt, user_name, persona), request)

    def _turn(self, kind: str, session: Session, text: str, opts: tuple, request: gr.Request | None):
        if session.chat_id is None:
            gr.Warning("Pick a character first: click one in the gallery.")
            yield skip_all()
            return
        store = self.stores.get(session.owner)
        cancel = self.flags.fresh(_key(request))
        options = turn_options(*opts)
        display = self.display(session)
        if kind == "send":
            display += [chat_message("user", text), chat_message("assistant", "")]
        elif display:
            display[-1] = chat_message("assistant", display[-1]["content"][0]["text"] if kind == "continue" else "")
        yield (session, list(display), *(gr.skip() for _ in range(N_OUT - 2)))
        runs = {
            "send": lambda: chat.send(self.engine, store, session.chat_id, text, options, cancel),
            "regenerate": lambda: chat.regenerate(self.engine, store, session.chat_id, options, cancel),
            "continue": lambda: chat.continue_reply(self.engine, store, session.chat_id, options, cancel),
        }
        last = None
        try:
            for upd, values in self._fold(runs[kind](), session, display):
                last = upd
                yield values
        except MoechatError as exc:
            gr.Warning(str(exc))
        except Exception as exc:  # the app stays up; the log keeps the traceback
            log.exception("turn failed")
            gr.Warning(f"generation failed: {exc}")
        yield self._after_turn(session, last)

    def _fold(self, updates, session: Session, display: list[dict]):
        """(update, outputs) at most every LIVE_EVERY_S, figures every FIGURES_EVERY_S, and the last one."""
        shown_live = last_fig = 0.0
        context_sent = False
        for upd in updates:
            now = time.monotonic()
            if upd.finish is None and now - shown_live < LIVE_EVERY_S:
                continue
            shown_live = now
            figures = now - last_fig >= FIGURES_EVERY_S
            last_fig = now if figures else last_fig
            display[-1] = chat_message("assistant", upd.text)
            session.shown = Shown.aligned("this reply", upd.token_texts, upd.probs, self.model.shape)
            user = self._user_live(upd)
            context = gr.skip() if context_sent else context_html(upd.report)
            context_sent = True
            yield (
                upd,
                (session, list(display), *self.routing_views(session, figures), user, gr.skip(), context, gr.skip()),
            )

    def _user_live(self, upd) -> object:
        if not len(upd.prompt_token_texts):
            return gr.skip()
        shown = Shown.aligned("your message", upd.prompt_token_texts, upd.prompt_probs, self.model.shape)
        return token_view(shown, self.model, None)

    def _after_turn(self, session: Session, last) -> tuple:
        if last is not None:
            session.selected, session.last_rate = last.message_id, last.tokens_per_s or session.last_rate
            if last.finish == "cancelled":
                gr.Info("Stopped: the partial reply is kept.")
        return self.views(session, reload_shown=True)

    def impersonate(
        self,
        session: Session,
        preset: str,
        max_tokens: float,
        seed: float | None,
        fmt: str,
        user_name: str,
        persona: str,
        request: gr.Request = None,
    ) -> Iterator[str]:
        if session.chat_id is None:
            gr.Warning("Pick a character first.")
            return
        store, cancel = self.stores.get(session.owner), self.flags.fresh(_key(request))
        shown = 0.0
        draft = ""
        try:
            options = turn_options(preset, max_tokens, seed, fmt, user_name, persona)
            for draft in chat.impersonate(self.engine, store, session.chat_id, options, cancel):
                if time.monotonic() - shown >= LIVE_EVERY_S:
                    shown = time.monotonic()
                    yield draft
        except MoechatError as exc:
            gr.Warning(str(exc))
        yield draft

    def stop(self, request: gr.Request = None) -> None:
        self.flags.get(_key(request)).set()


def _key(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None
