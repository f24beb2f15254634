"""The chats of the selected character: open one, start a new one (with the card's greetings as swipes),
rename, delete, branch at the selected message, and export (SillyTavern JSONL or Markdown).

Every event but export returns ui.outputs.ChatOpened, flattened for Gradio."""

from __future__ import annotations

import datetime as dt
import hashlib
from contextlib import AbstractContextManager
from pathlib import Path

import gradio as gr

from moechat import chat
from moechat.chatfiles.markdown import to_markdown
from moechat.chatfiles.sillytavern import to_jsonl
from moechat.chatfiles.st_groups import export_group_chat
from moechat.errors import MoechatError
from moechat.library import avatar_file, card_of, persona_avatar_file
from moechat.store.records import ChatInfo
from moechat.store.store import Store
from moechat.ui.chat import ChatUI
from moechat.ui.html import card_markdown, esc
from moechat.ui.outputs import ChatOpened
from moechat.ui.session import Session


def chat_label(c: ChatInfo) -> str:
    when = dt.datetime.fromtimestamp(c.updated).strftime("%Y-%m-%d %H:%M")
    return f"{c.title or 'chat ' + str(c.id)} · {c.message_count} messages · {when}"


class ChatList:
    def __init__(self, chat_ui: ChatUI, data_dir: Path, exports: Path) -> None:
        self.ui, self.data_dir, self.exports = chat_ui, data_dir, exports

    def _store(self, session: Session) -> AbstractContextManager[Store]:
        return self.ui.stores.lease(session.owner)

    def skip(self) -> tuple:
        return ChatOpened.skip().flat()

    def open(self, session: Session, chat_id: int | None, new_if_none: bool = False, user_name: str = "You") -> tuple:
        """Show chat_id (or a new chat of session.character_id when None and new_if_none)."""
        with self._store(session) as store:
            try:
                if chat_id is None and new_if_none and session.character_id is not None:
                    chat_id = chat.start_chat(
                        store, session.character_id, user_name=user_name, persona_id=session.persona_id
                    )
                if chat_id is not None:
                    session.character_id = store.chat(chat_id).character_id
            except MoechatError as exc:
                gr.Warning(esc(exc))
                return self.skip()
            session.chat_id, session.selected, session.shown = chat_id, None, None
            views = self.ui.views(session)
            avatars = self._avatars(store, session)
        views = views._replace(chatbot=gr.Chatbot(value=views.chatbot, avatar_images=avatars))
        return ChatOpened(views, self.picker(session), self.info(session), self.title(session)).flat()

    def _avatars(self, store: Store, session: Session) -> tuple[str | None, str | None]:
        """The chat's avatars: the persona its turns use (none: no picture) and the character. A group chat has no
        character picture: Gradio's chatbot has one per role, and every member's reply would wear the first's."""
        chosen = store.chosen_persona(session.chat_id, session.character_id, picked=session.persona_id)
        user = persona_avatar_file(store, self.data_dir, chosen.persona.id) if chosen else None
        group = session.chat_id is not None and store.chat_group(session.chat_id) is not None
        bot = avatar_file(store, self.data_dir, session.character_id) if session.character_id and not group else None
        return user, bot

    def avatars(self, session: Session) -> gr.Chatbot:
        """The chat's avatars after the persona changed (picked, locked, a new picture); the messages stay."""
        with self._store(session) as store:
            return gr.Chatbot(avatar_images=self._avatars(store, session))

    def picker(self, session: Session) -> gr.Dropdown:
        if session.character_id is None:
            return gr.Dropdown(choices=[], value=None)
        with self._store(session) as store:
            chats = [(c, store.chat_group(c.id)) for c in store.chats(session.character_id)]
        labels = [(chat_label(c) + (f" · group {g.name}" if g else ""), c.id) for c, g in chats]
        return gr.Dropdown(choices=labels, value=session.chat_id)

    def info(self, session: Session) -> str:
        if session.character_id is None:
            return "Pick a character in the gallery to start."
        with self._store(session) as store:
            card = card_of(store, self.data_dir, session.character_id)
        return card_markdown(card.name, card.tags, card.creator_notes, card.creator)

    def title(self, session: Session) -> str:
        if session.chat_id is None:
            return ""
        with self._store(session) as store:
            return store.chat(session.chat_id).title

    # ---- events -----------------------------------------------------------------------------------------
    def pick(self, session: Session, chat_id: int | None) -> tuple:
        if chat_id is None or chat_id == session.chat_id:
            return self.skip()
        return self.open(session, int(chat_id))

    def new(self, session: Session, user_name: str = "You") -> tuple:
        if session.character_id is None:
            gr.Warning("Pick a character first.")
            return self.skip()
        return self.open(session, None, new_if_none=True, user_name=user_name or "You")

    def rename(self, session: Session, title: str) -> tuple:
        if session.chat_id is None:
            return self.skip()
        try:
            with self._store(session) as store:
                store.update_chat(session.chat_id, title=title.strip())
        except MoechatError as exc:
            gr.Warning(esc(exc))
        return self.open(session, session.chat_id)

    def delete(self, session: Session) -> tuple:
        if session.chat_id is None:
            return self.skip()
        with self._store(session) as store:
            try:
                store.delete_chat(session.chat_id)
            except MoechatError as exc:
                gr.Warning(esc(exc))
                return self.skip()
            rest = store.chats(session.character_id) if session.character_id is not None else []
        return self.open(session, rest[0].id if rest else None)

    def branch(self, session: Session) -> tuple:
        """A new chat with the messages up to the selected one (or the whole chat)."""
        if session.chat_id is None or not session.message_ids:
            return self.skip()
        at = session.selected if session.selected in session.message_ids else session.message_ids[-1]
        try:
            with self._store(session) as store:
                new = store.branch(session.chat_id, at)
        except MoechatError as exc:
            gr.Warning(esc(exc))
            return self.skip()
        gr.Info("Branched: you are now in the new chat.")
        return self.open(session, new.id)

    def export(self, session: Session, fmt: str) -> str | list[str] | None:
        """The open chat as a SillyTavern JSONL file (every swipe, routing summaries under extra.moechat) or as
        Markdown, for download; a group chat as SillyTavern writes it: its JSONL and the group's JSON."""
        if session.chat_id is None:
            gr.Warning("Open a chat first.")
            return None
        folder = self.exports / f"chats-{hashlib.sha256(session.owner.encode()).hexdigest()[:16]}"
        with self._store(session) as store:
            if fmt == "jsonl" and store.chat_group(session.chat_id) is not None:
                paths = export_group_chat(store, session.chat_id, folder / f"group-chat-{session.chat_id}")
                return [str(path) for path in paths]
            info, messages = store.chat(session.chat_id), store.messages(session.chat_id)
            if fmt == "jsonl":
                routing = {s.id: r for m in messages for s in m.swipes if s.has_routing and (r := store.routing(s.id))}
                body = to_jsonl(info, messages, routing, locked_persona=store.locked_avatar(session.chat_id))
            else:
                body = to_markdown(info, messages)
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in info.character_name)[:40] or "chat"
        path = folder / f"{safe}-chat-{info.id}.{'jsonl' if fmt == 'jsonl' else 'md'}"
        path.write_text(body, encoding="utf-8")
        return str(path)

    def export_jsonl(self, session: Session) -> str | list[str] | None:
        return self.export(session, "jsonl")

    def export_markdown(self, session: Session) -> str | list[str] | None:
        return self.export(session, "md")
