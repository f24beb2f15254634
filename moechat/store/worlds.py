"""World Info books in the store and where they are attached: globally, to a character, to a chat (as in
SillyTavern). The book's JSON text is kept byte for byte (docs/formats.md §2.6.1)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

from moechat.errors import StoreError

Scope = Literal["global", "character", "chat"]


@dataclass(frozen=True, slots=True)
class World:
    """A stored book: its name and its JSON text."""

    id: int
    name: str
    json: str


class WorldsMixin:
    """World Info operations; Store provides owner, _read and _write."""

    owner: str
    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def save_world(self, name: str, text: str) -> World:
        """Add a book, or replace the one of that name (its attachments stay)."""
        if not name.strip():
            raise StoreError("a World Info book needs a name")
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO worlds (owner, name, json, created, updated) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (owner, name) DO UPDATE SET json = excluded.json, updated = excluded.updated",
                (self.owner, name, text, now, now),
            )
        return self.world(name)

    def world(self, name: str) -> World:
        with self._read() as conn:
            row = conn.execute(
                "SELECT id, name, json FROM worlds WHERE owner = ? AND name = ?", (self.owner, name)
            ).fetchone()
        if row is None:
            raise StoreError(f"no World Info book named {name!r}")
        return World(*row)

    def worlds(self) -> list[World]:
        with self._read() as conn:
            rows = conn.execute("SELECT id, name, json FROM worlds WHERE owner = ? ORDER BY name", (self.owner,))
            return [World(*row) for row in rows.fetchall()]

    def delete_world(self, name: str) -> None:
        world = self.world(name)
        with self._write() as conn:
            conn.execute("DELETE FROM worlds WHERE id = ?", (world.id,))

    def attach_world(self, name: str, scope: Scope, target: int | None = None, *, attached: bool = True) -> None:
        """Attach (or detach) a book globally, to character `target` or to chat `target`."""
        world = self.world(name)
        if (scope == "global") != (target is None):
            raise StoreError(f"attaching to {scope!r} needs {'no' if scope == 'global' else 'a'} target id")
        character = target if scope == "character" else None
        chat = target if scope == "chat" else None
        with self._write() as conn:
            self._owns_target(conn, character, chat)
            conn.execute(
                "DELETE FROM world_links WHERE world_id = ? AND scope = ? AND character_id IS ? AND chat_id IS ?",
                (world.id, scope, character, chat),
            )
            if attached:
                conn.execute(
                    "INSERT INTO world_links (world_id, scope, character_id, chat_id) VALUES (?, ?, ?, ?)",
                    (world.id, scope, character, chat),
                )

    def _owns_target(self, conn: sqlite3.Connection, character: int | None, chat: int | None) -> None:
        for table, target in (("characters", character), ("chats", chat)):
            if target is not None:
                row = conn.execute(f"SELECT 1 FROM {table} WHERE id = ? AND owner = ?", (target, self.owner))
                if row.fetchone() is None:
                    raise StoreError(f"{table[:-1]} {target} not found")

    def attached_worlds(self, scope: Scope, target: int | None = None) -> list[World]:
        """The books attached in `scope` (to character/chat `target`), by name."""
        column = {"global": "1", "character": "l.character_id = ?", "chat": "l.chat_id = ?"}[scope]
        args: tuple = (self.owner, scope) if scope == "global" else (self.owner, scope, target)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT w.id, w.name, w.json FROM world_links l JOIN worlds w ON w.id = l.world_id"
                f" WHERE w.owner = ? AND l.scope = ? AND {column} ORDER BY w.name",
                args,
            ).fetchall()
        return [World(*row) for row in rows]
