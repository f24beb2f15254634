"""Personas in the store: who the user is in a chat (name, description, avatar), stored per owner, one of them the
owner's default, and personas locked to a chat or to a character. `choose` is the rule that picks the persona of a
turn (docs/formats.md §3.11): a chat lock, else a character lock, else the one picked in the UI, else the default.

A persona's `avatar` is SillyTavern's avatar id (the image's file name in `User Avatars/`), unique per owner: it is
how SillyTavern's settings and a chat's `chat_metadata.persona` name a persona. Deleting a persona removes its
locks and, when it was the default, the default."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from moechat.errors import StoreError

Why = Literal["chat lock", "character lock", "picked", "default"]
COLUMNS = "id, owner, avatar, name, description, extra_json, created, updated"


@dataclass(frozen=True, slots=True)
class PersonaRecord:
    """A stored persona. `extra` keeps SillyTavern's descriptor keys besides the description (position, depth,
    role, lorebook, connections...) as imported."""

    id: int
    owner: str
    avatar: str
    name: str
    description: str
    extra: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0


@dataclass(frozen=True, slots=True)
class PersonaLocks:
    """Persona ids: locked to the chat, locked to its character, the owner's default (None: none)."""

    chat: int | None = None
    character: int | None = None
    default: int | None = None


@dataclass(frozen=True, slots=True)
class Chosen:
    persona: PersonaRecord
    why: Why


def choose(personas: Mapping[int, PersonaRecord], locks: PersonaLocks, picked: int | None = None) -> Chosen | None:
    """The persona of a turn: the chat's lock, else the character's lock, else `picked` (the UI's pick), else the
    default; None when none of them exists (the turn uses the name typed in the UI). A lock or default whose persona
    is gone is passed over."""
    order: tuple[tuple[int | None, Why], ...] = (
        (locks.chat, "chat lock"),
        (locks.character, "character lock"),
        (picked, "picked"),
        (locks.default, "default"),
    )
    for persona_id, why in order:
        if persona_id is not None and persona_id in personas:
            return Chosen(personas[persona_id], why)
    return None


def new_avatar_id(name: str, now: float) -> str:
    """An avatar id as SillyTavern makes one for a new persona: `<milliseconds>-<name>.png`."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "persona"
    return f"{int(now * 1000)}-{safe}.png"


def _record(row: tuple) -> PersonaRecord:
    return PersonaRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])


class PersonasMixin:
    """Persona operations; Store provides owner, _read and _write."""

    owner: str
    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def add_persona(
        self, name: str, description: str = "", *, avatar: str = "", extra: dict[str, Any] | None = None
    ) -> PersonaRecord:
        """A new persona; `avatar` is its SillyTavern avatar id (made up from the name when empty)."""
        if not name.strip():
            raise StoreError("a persona needs a name")
        now = time.time()
        with self._write() as conn:
            avatar = avatar or _free_avatar(conn, self.owner, name, now)
            if _by_avatar(conn, self.owner, avatar) is not None:
                raise StoreError(f"a persona with the avatar {avatar!r} exists already")
            cur = conn.execute(
                "INSERT INTO personas (owner, avatar, name, description, extra_json, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.owner, avatar, name, description, json.dumps(extra or {}, ensure_ascii=False), now, now),
            )
            persona_id = cur.lastrowid
        assert persona_id is not None
        return self.persona(persona_id)

    def persona(self, persona_id: int) -> PersonaRecord:
        with self._read() as conn:
            return _owned(conn, self.owner, persona_id)

    def persona_by_avatar(self, avatar: str) -> PersonaRecord | None:
        with self._read() as conn:
            return _by_avatar(conn, self.owner, avatar)

    def personas(self) -> list[PersonaRecord]:
        """This owner's personas by name."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM personas WHERE owner = ? ORDER BY name, id", (self.owner,)
            ).fetchall()
        return [_record(row) for row in rows]

    def update_persona(
        self,
        persona_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> PersonaRecord:
        """Rename or redescribe a persona. Messages already written keep the name they were written with."""
        if name is not None and not name.strip():
            raise StoreError("a persona needs a name")
        extra_json = None if extra is None else json.dumps(extra, ensure_ascii=False)
        with self._write() as conn:
            _owned(conn, self.owner, persona_id)
            conn.execute(
                "UPDATE personas SET name = COALESCE(?, name), description = COALESCE(?, description),"
                " extra_json = COALESCE(?, extra_json), updated = ? WHERE id = ?",
                (name, description, extra_json, time.time(), persona_id),
            )
        return self.persona(persona_id)

    def delete_persona(self, persona_id: int) -> None:
        """Delete a persona with its locks (and the default, when it was the default)."""
        with self._write() as conn:
            _owned(conn, self.owner, persona_id)
            _forget_imported_lock(conn, "IN (SELECT chat_id FROM persona_locks WHERE persona_id = ?)", persona_id)
            conn.execute("DELETE FROM personas WHERE id = ?", (persona_id,))

    def set_default_persona(self, persona_id: int | None) -> None:
        """Make a persona the owner's default (None: no default)."""
        with self._write() as conn:
            conn.execute("DELETE FROM persona_defaults WHERE owner = ?", (self.owner,))
            if persona_id is not None:
                _owned(conn, self.owner, persona_id)
                conn.execute("INSERT INTO persona_defaults (owner, persona_id) VALUES (?, ?)", (self.owner, persona_id))

    def lock_persona(
        self, persona_id: int | None, *, chat_id: int | None = None, character_id: int | None = None
    ) -> None:
        """Lock a persona to a chat or to a character (one of them); None unlocks it."""
        if (chat_id is None) == (character_id is None):
            raise StoreError("a persona is locked to a chat or to a character: give exactly one")
        table, target = ("chats", chat_id) if chat_id is not None else ("characters", character_id)
        column = "chat_id" if chat_id is not None else "character_id"
        with self._write() as conn:
            owned = conn.execute(f"SELECT 1 FROM {table} WHERE id = ? AND owner = ?", (target, self.owner))
            if owned.fetchone() is None:
                raise StoreError(f"{table[:-1]} {target} not found")
            conn.execute(f"DELETE FROM persona_locks WHERE {column} = ?", (target,))
            if chat_id is not None:
                _forget_imported_lock(conn, "= ?", chat_id)
            if persona_id is not None:
                _owned(conn, self.owner, persona_id)
                conn.execute(f"INSERT INTO persona_locks (persona_id, {column}) VALUES (?, ?)", (persona_id, target))

    def persona_locks(self, chat_id: int | None = None, character_id: int | None = None) -> PersonaLocks:
        """The locks that apply to a chat (and to its character) or to a character, and the default."""
        with self._read() as conn:
            if chat_id is not None and character_id is None:
                row = conn.execute("SELECT character_id FROM chats WHERE id = ? AND owner = ?", (chat_id, self.owner))
                found = row.fetchone()
                character_id = found[0] if found else None
            default = conn.execute("SELECT persona_id FROM persona_defaults WHERE owner = ?", (self.owner,)).fetchone()
            return PersonaLocks(
                chat=_lock(conn, self.owner, "chat_id", chat_id),
                character=_lock(conn, self.owner, "character_id", character_id),
                default=default[0] if default else None,
            )

    def chosen_persona(
        self, chat_id: int | None = None, character_id: int | None = None, picked: int | None = None
    ) -> Chosen | None:
        """`choose` over this owner's personas and the locks of the chat (or of the character, before a chat)."""
        personas = {p.id: p for p in self.personas()}
        return choose(personas, self.persona_locks(chat_id, character_id), picked)

    def locked_avatar(self, chat_id: int) -> str:
        """The avatar id of the persona locked to the chat ("" when none): SillyTavern's `chat_metadata.persona`."""
        locked = self.persona_locks(chat_id).chat
        return self.persona(locked).avatar if locked is not None else ""

    @staticmethod
    def lock_imported_persona(conn: sqlite3.Connection, owner: str, chat_id: int, avatar: str) -> None:
        """An imported chat's locked persona (SillyTavern's `chat_metadata.persona`), locked when this owner has a
        persona with that avatar id; otherwise the id stays only in the chat's kept metadata."""
        persona = _by_avatar(conn, owner, avatar) if avatar else None
        if persona is not None:
            conn.execute("INSERT INTO persona_locks (persona_id, chat_id) VALUES (?, ?)", (persona.id, chat_id))


def _owned(conn: sqlite3.Connection, owner: str, persona_id: int) -> PersonaRecord:
    row = conn.execute(f"SELECT {COLUMNS} FROM personas WHERE id = ? AND owner = ?", (persona_id, owner)).fetchone()
    if row is None:
        raise StoreError(f"persona {persona_id} not found (deleted, or never created in this data dir)")
    return _record(row)


def _by_avatar(conn: sqlite3.Connection, owner: str, avatar: str) -> PersonaRecord | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM personas WHERE owner = ? AND avatar = ?", (owner, avatar)).fetchone()
    return _record(row) if row else None


def _free_avatar(conn: sqlite3.Connection, owner: str, name: str, now: float) -> str:
    avatar, bump = new_avatar_id(name, now), 0
    while _by_avatar(conn, owner, avatar) is not None:
        bump += 1
        avatar = new_avatar_id(name, now + bump / 1000)
    return avatar


def _forget_imported_lock(conn: sqlite3.Connection, which: str, arg: int) -> None:
    """Chats unlocked here (or whose persona is deleted) lose SillyTavern's lock kept in their imported header,
    as SillyTavern deletes `chat_metadata.persona`."""
    conn.execute(
        "UPDATE chats SET header_json = json_remove(header_json, '$.chat_metadata.persona')"
        f" WHERE id {which} AND json_valid(header_json)",
        (arg,),
    )


def _lock(conn: sqlite3.Connection, owner: str, column: str, target: int | None) -> int | None:
    if target is None:
        return None
    row = conn.execute(
        f"SELECT l.persona_id FROM persona_locks l JOIN personas p ON p.id = l.persona_id"
        f" WHERE l.{column} = ? AND p.owner = ?",
        (target, owner),
    ).fetchone()
    return row[0] if row else None
