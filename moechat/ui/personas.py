"""The persona panel (SillyTavern's Persona Management): pick a persona, create, edit (the "Your name" and "Your
persona" boxes are its editor), delete, set the default, lock it to the open chat or to its character, unlock, and
its avatar (uploaded, or drawn from the name). The pick is `Session.persona_id`; which persona a turn uses is
`store.personas.choose` (a lock wins, then the pick, then the default). Every handler returns `PersonaPanel.values`
order: (picker, name, description, avatar, status)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from moechat.errors import MoechatError
from moechat.library import delete_persona, persona_avatar_file, set_persona_avatar
from moechat.store.store import Store
from moechat.ui.html import esc
from moechat.ui.session import Session, Stores

NONE = ""  # the picker's value for "no stored persona: the name typed below"
WHY = {
    "chat lock": "locked to this chat",
    "character lock": "locked to this character",
    "picked": "picked",
    "default": "the default",
}
MAX_AVATAR_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class PersonaPanel:
    pick: gr.Dropdown
    avatar: gr.Image
    status: gr.HTML
    user_name: gr.Textbox
    persona: gr.Textbox
    new: gr.Button
    save: gr.Button
    delete: gr.Button
    default: gr.Button
    lock_chat: gr.Button
    lock_character: gr.Button
    unlock: gr.Button

    def values(self) -> list[Any]:
        """The components every handler fills, in order."""
        return [self.pick, self.user_name, self.persona, self.avatar, self.status]


def persona_panel() -> PersonaPanel:
    """The panel's components (in Blocks context)."""
    with gr.Row(equal_height=True):
        pick = gr.Dropdown(
            [("(none: the name below)", NONE)], value=NONE, label="Persona", elem_id="persona_pick", scale=3
        )
        avatar = gr.Image(
            label="Avatar", type="filepath", sources=["upload"], elem_id="persona_avatar", height=110, scale=1
        )
    status = gr.HTML(elem_id="persona_status")
    user_name = gr.Textbox("You", label="Your name", elem_id="user_name")
    persona = gr.Textbox(label="Your persona (sent to the model)", lines=2, elem_id="persona")
    with gr.Row():
        new = gr.Button("Save as new persona", elem_id="persona_new", size="sm")
        save = gr.Button("Update persona", elem_id="persona_save", size="sm")
        delete = gr.Button("Delete persona", elem_id="persona_delete", size="sm", variant="stop")
    with gr.Row():
        default = gr.Button("Default on/off", elem_id="persona_default", size="sm")
        lock_chat = gr.Button("Lock to this chat", elem_id="persona_lock_chat", size="sm")
        lock_character = gr.Button("Lock to this character", elem_id="persona_lock_character", size="sm")
        unlock = gr.Button("Unlock", elem_id="persona_unlock", size="sm")
    return PersonaPanel(pick, avatar, status, user_name, persona, new, save, delete, default, lock_chat,
                        lock_character, unlock)  # fmt: skip


class PersonasUI:
    def __init__(self, stores: Stores, data_dir: Path) -> None:
        self.stores, self.data_dir = stores, data_dir

    def _store(self, session: Session) -> AbstractContextManager[Store]:
        return self.stores.lease(session.owner)

    def show(self, session: Session, chat_id: int | None = None, character_id: int | None = None) -> tuple:
        """The panel for session.persona_id in the open chat (or `chat_id`, just opened)."""
        chat_id = chat_id if chat_id is not None else session.chat_id
        character_id = character_id if character_id is not None else session.character_id
        with self._store(session) as store:
            personas = store.personas()
            locks = store.persona_locks(chat_id, character_id)
            if session.persona_id not in {p.id for p in personas}:
                session.persona_id = None
            chosen = store.chosen_persona(chat_id, character_id, picked=session.persona_id)
            picked = next((p for p in personas if p.id == session.persona_id), None)
            avatar = persona_avatar_file(store, self.data_dir, picked.id) if picked else None
        marks = {locks.default: " · default", locks.character: " · locked to the character", locks.chat: " · locked"}
        choices = [("(none: the name below)", NONE), *((p.name + marks.get(p.id, ""), str(p.id)) for p in personas)]
        if chosen is None:
            status = "Turns use the name and persona typed below."
        else:
            status = f"Turns use <b>{esc(chosen.persona.name)}</b> ({WHY[chosen.why]})."
            if picked is not None and chosen.persona.id != picked.id:
                status += f" Unlock to use {esc(picked.name)}."
        return (
            gr.Dropdown(choices=choices, value=str(picked.id) if picked else NONE),
            picked.name if picked else gr.skip(),
            picked.description if picked else gr.skip(),
            avatar,
            f'<div class="persona-status">{status}</div>',
        )

    def opened(self, session: Session, chat_value: Any = None) -> tuple:
        """A chat was opened (`chat_value`: the chat picker's new value, which may arrive before the session knows
        the chat): its locked persona, else its character's, else the default, else the pick as it was
        (SillyTavern selects the persona when a chat opens)."""
        chat_id = chat_value if isinstance(chat_value, int) else session.chat_id
        try:
            with self._store(session) as store:
                character_id = store.chat(chat_id).character_id if chat_id is not None else session.character_id
                applied = store.chosen_persona(chat_id, character_id)
        except MoechatError:  # the chat is gone meanwhile
            return self.show(session)
        if applied is not None:
            session.persona_id = applied.persona.id
        return self.show(session, chat_id, character_id)

    def pick(self, session: Session, value: str | None) -> tuple:
        session.persona_id = int(value) if value else None
        return self.show(session)

    def create(self, session: Session, name: str, description: str) -> tuple:
        return self._act(session, lambda store: self._create(store, session, name, description), "Saved {}.")

    def _create(self, store: Store, session: Session, name: str, description: str) -> str:
        persona = store.add_persona((name or "").strip(), description or "")
        set_persona_avatar(store, self.data_dir, persona.id, None)
        session.persona_id = persona.id
        return persona.name

    def save(self, session: Session, name: str, description: str) -> tuple:
        def update(store: Store) -> str:
            return store.update_persona(self._picked(session), name=(name or "").strip(), description=description).name

        return self._act(session, update, "Updated {}. Messages already sent keep the name they were sent with.")

    def delete(self, session: Session) -> tuple:
        def remove(store: Store) -> str:
            persona = store.persona(self._picked(session))
            delete_persona(store, self.data_dir, persona.id)
            applied = store.chosen_persona(session.chat_id, session.character_id)  # a lock or the default, if any
            session.persona_id = applied.persona.id if applied else None
            return persona.name

        return self._act(session, remove, "Deleted {} and its locks.")

    def toggle_default(self, session: Session) -> tuple:
        def toggle(store: Store) -> str:
            persona_id = self._picked(session)
            was = store.persona_locks().default == persona_id
            store.set_default_persona(None if was else persona_id)
            return f"{store.persona(persona_id).name} is {'no longer' if was else 'now'} the default"

        return self._act(session, toggle, "{}.")

    def lock(self, session: Session, *, to: str) -> tuple:
        def lock(store: Store) -> str:
            persona_id, target = self._picked(session), session.chat_id if to == "chat" else session.character_id
            if target is None:
                raise MoechatError(f"open a chat first: there is no {to} to lock to")
            if to == "chat":
                store.lock_persona(persona_id, chat_id=target)
            else:
                store.lock_persona(persona_id, character_id=target)
            return store.persona(persona_id).name

        return self._act(session, lock, "{} is locked to this " + to + ".")

    def lock_chat(self, session: Session) -> tuple:
        return self.lock(session, to="chat")

    def lock_character(self, session: Session) -> tuple:
        return self.lock(session, to="character")

    def unlock(self, session: Session) -> tuple:
        def unlock(store: Store) -> str:
            if session.chat_id is not None:
                store.lock_persona(None, chat_id=session.chat_id)
            if session.character_id is not None:
                store.lock_persona(None, character_id=session.character_id)
            return "this chat and its character"

        return self._act(session, unlock, "Unlocked {}.")

    def upload_avatar(self, session: Session, path: str | None) -> tuple:
        def keep(store: Store) -> str:
            persona_id = self._picked(session)
            if not path or Path(path).stat().st_size > MAX_AVATAR_BYTES:
                raise MoechatError(f"an avatar image must be at most {MAX_AVATAR_BYTES // 2**20} MiB")
            set_persona_avatar(store, self.data_dir, persona_id, Path(path).read_bytes())
            return store.persona(persona_id).name

        return self._act(session, keep, "New avatar for {}.")

    @staticmethod
    def _picked(session: Session) -> int:
        if session.persona_id is None:
            raise MoechatError("pick a persona first (or save the name below as a new persona)")
        return session.persona_id

    def _act(self, session: Session, action: Any, done: str) -> tuple:
        try:
            with self._store(session) as store:
                said = action(store)
        except MoechatError as exc:
            gr.Warning(esc(exc))
            return self.show(session)
        gr.Info(done.format(esc(said)))
        return self.show(session)
