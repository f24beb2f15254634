"""Character events: the gallery (pick a character to chat with), import a card file, export one, and the
card editor (create a new character or update the selected one). Events that change the gallery return
(gallery, *ui.outputs.ChatOpened)."""

from __future__ import annotations

import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

import gradio as gr

from moechat.cards.card import read_card
from moechat.errors import MoechatError
from moechat.library import add_card, avatar_file, card_of, edited_card, export_card
from moechat.store.store import Store
from moechat.ui.chats import ChatList
from moechat.ui.html import card_markdown, esc
from moechat.ui.outputs import ChatOpened
from moechat.ui.session import Session

EDITOR_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "tags", "creator_notes")


def _unchanged() -> tuple:
    """(gallery, *ChatOpened) with nothing changed."""
    return (gr.skip(), *ChatOpened.skip().flat())


class Characters:
    def __init__(self, chats: ChatList, data_dir: Path, max_upload_mb: int) -> None:
        self.chats, self.data_dir, self.max_bytes = chats, data_dir, max_upload_mb * 1024 * 1024
        self.exports = Path(tempfile.mkdtemp(prefix="moechat-export-"))

    def _store(self, session: Session) -> AbstractContextManager[Store]:
        return self.chats.ui.stores.lease(session.owner)

    def gallery(self, session: Session) -> list[tuple[str | None, str]]:
        """(avatar, name) per character; session.character_ids in the same order."""
        with self._store(session) as store:
            characters = store.characters()
            session.character_ids = [c.id for c in characters]
            return [(avatar_file(store, self.data_dir, c.id), c.name) for c in characters]

    def info(self, session: Session) -> str:
        if session.character_id is None:
            return "Pick a character to chat with."
        with self._store(session) as store:
            card = card_of(store, self.data_dir, session.character_id)
        return card_markdown(card.name, card.tags, card.creator_notes, card.creator)

    def editor_values(self, session: Session) -> tuple:
        if session.character_id is None:
            return tuple("" for _ in EDITOR_FIELDS)
        with self._store(session) as store:
            card = card_of(store, self.data_dir, session.character_id)
        return tuple(", ".join(card.tags) if f == "tags" else getattr(card, f) for f in EDITOR_FIELDS)

    def pick(self, session: Session, evt: gr.SelectData) -> tuple:
        """Gallery click: open the character's latest chat (a new one when it has none)."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not 0 <= index < len(session.character_ids):
            return self.chats.skip()
        return self.open_character(session, session.character_ids[index])

    def open_character(self, session: Session, character_id: int) -> tuple:
        session.character_id = character_id
        with self._store(session) as store:
            existing = store.chats(character_id)
        chat_id = existing[0].id if existing else None
        return self.chats.open(session, chat_id, new_if_none=True)

    def upload(self, session: Session, path: str | None) -> tuple:
        """Import a PNG/JSON/CHARX/YAML card and open a chat with it. Returns (gallery, *chat outputs)."""
        if not path:
            return _unchanged()
        try:
            card = read_card(Path(path), max_bytes=self.max_bytes)
            with self._store(session) as store:
                character = add_card(store, self.data_dir, card)
        except MoechatError as exc:
            gr.Warning(esc(f"could not import {Path(path).name}: {exc}"))
            return _unchanged()
        gr.Info(f"Imported {esc(character.name)}.")
        opened = self.open_character(session, character.id)
        return (self.gallery(session), *opened)

    def export(self, session: Session, fmt: str) -> str | None:
        if session.character_id is None:
            gr.Warning("Pick a character first.")
            return None
        try:
            folder = self.exports / session.owner.replace("/", "_")
            with self._store(session) as store:
                return str(export_card(store, self.data_dir, session.character_id, fmt, folder))
        except MoechatError as exc:
            gr.Warning(esc(exc))
            return None

    def save(self, session: Session, as_new: bool, *values: str) -> tuple:
        """Save the editor as a new character or over the selected one. Returns (gallery, *chat outputs)."""
        fields = dict(zip(EDITOR_FIELDS, values, strict=True))
        target = None if as_new else session.character_id
        with self._store(session) as store:
            try:
                base = card_of(store, self.data_dir, target) if target is not None else None
                character = add_card(store, self.data_dir, edited_card(base, fields), target)
            except MoechatError as exc:
                gr.Warning(esc(exc))
                return _unchanged()
        gr.Info(f"Saved {esc(character.name)}.")
        return (self.gallery(session), *self.open_character(session, character.id))

    def save_new(self, session: Session, *values: str) -> tuple:
        return self.save(session, True, *values)

    def save_existing(self, session: Session, *values: str) -> tuple:
        if session.character_id is None:
            gr.Warning("Pick a character to update, or use 'Save as new'.")
            return _unchanged()
        return self.save(session, False, *values)

    def delete(self, session: Session) -> tuple:
        if session.character_id is None:
            return _unchanged()
        try:
            with self._store(session) as store:
                store.delete_character(session.character_id)
        except MoechatError as exc:
            gr.Warning(esc(exc))
            return _unchanged()
        session.character_id = None
        return (self.gallery(session), *self.chats.open(session, None))
