"""The chat database: one SQLite file (WAL) in the data dir holding characters, chats, messages,
swipes and routing. The only modules that import sqlite3 are store.py and its store_*.py parts.

A Store is bound to one owner: every query filters by it, and another owner's chat is reported
exactly like a missing one. Every write is one short IMMEDIATE transaction, so two processes can
write the same file; a crash loses at most the write in flight.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from moechat.errors import StoreError
from moechat.store.groups import GroupsMixin, copy_group_links
from moechat.store.messages import MessagesMixin, insert_message, insert_swipe, inserted_id, read_messages
from moechat.store.personas import PersonasMixin
from moechat.store.records import LOCAL_OWNER, Character, ChatInfo, GenStats, ImportedChat, ImportedSwipe
from moechat.store.routing import copy_for_swipe
from moechat.store.schema import migrate
from moechat.store.worlds import WorldsMixin

DB_NAME = "moechat.sqlite3"
BUSY_TIMEOUT_MS = 10_000
CHAT_COLUMNS = (
    "c.id, c.owner, c.character_id, ch.name, c.title, c.created, c.updated, c.format, c.persona,"
    " c.authors_note, c.parent_chat_id, c.branch_message_id,"
    " (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id), c.header_json"
)


def _chat_from_row(row: tuple) -> ChatInfo:
    return ChatInfo(
        id=row[0],
        owner=row[1],
        character_id=row[2],
        character_name=row[3],
        title=row[4],
        created=row[5],
        updated=row[6],
        format=row[7],
        persona=row[8],
        authors_note=row[9],
        parent_chat_id=row[10],
        branch_message_id=row[11],
        message_count=row[12],
        header=json.loads(row[13]),
    )


def _card_text(card: str | dict[str, Any]) -> str:
    if isinstance(card, str):
        try:
            json.loads(card)
        except ValueError as exc:
            raise StoreError(f"the character card is not valid JSON ({exc})") from exc
        return card
    return json.dumps(card, ensure_ascii=False)


class Store(MessagesMixin, WorldsMixin, PersonasMixin, GroupsMixin):
    """Open with Store.open(data_dir) or Store(path); use as a context manager or call close()."""

    def __init__(self, path: str | Path, owner: str = LOCAL_OWNER) -> None:
        if not owner:
            raise StoreError("a store needs an owner id (the local user is 'local')")
        self.path = Path(path)
        self.owner = owner
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self.version = migrate(self._conn, str(self.path))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the chat database {self.path}: {exc}") from exc

    @classmethod
    def open(cls, data_dir: str | Path, owner: str = LOCAL_OWNER) -> Store:
        """The store in `data_dir` (created if missing)."""
        data_dir = Path(data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data dir {data_dir}: {exc}") from exc
        return cls(data_dir / DB_NAME, owner)

    def for_owner(self, owner: str) -> Store:
        """Another handle on the same file, bound to another owner."""
        return Store(self.path, owner)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute(begin)
            except sqlite3.OperationalError as exc:
                raise StoreError(f"the chat database {self.path} is busy ({exc}); try again") from exc
            try:
                yield self._conn
            except sqlite3.DatabaseError as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(_db_error(self.path, exc)) from exc
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:  # e.g. disk full at commit: nothing of this change is kept
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreError(_db_error(self.path, exc)) from exc

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._tx("BEGIN")

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._tx("BEGIN IMMEDIATE")

    # characters

    def add_character(self, name: str, card: str | dict[str, Any]) -> Character:
        """Store a card (JSON text kept byte for byte, or a dict) under a display name."""
        text, now = _card_text(card), time.time()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO characters (owner, name, card_json, created, updated) VALUES (?, ?, ?, ?, ?)",
                (self.owner, name, text, now, now),
            )
        return self.character(inserted_id(cur))

    def update_character(self, character_id: int, card: str | dict[str, Any], name: str | None = None) -> Character:
        text = _card_text(card)
        with self._write() as conn:
            self._owned_character(conn, character_id)
            conn.execute(
                "UPDATE characters SET card_json = ?, name = COALESCE(?, name), updated = ? WHERE id = ?",
                (text, name, time.time(), character_id),
            )
        return self.character(character_id)

    def _owned_character(self, conn: sqlite3.Connection, character_id: int) -> tuple:
        row = conn.execute(
            "SELECT id, owner, name, card_json, created, updated FROM characters WHERE id = ? AND owner = ?",
            (character_id, self.owner),
        ).fetchone()
        if row is None:
            raise StoreError(f"character {character_id} not found (deleted, or never added in this data dir)")
        return row

    def character(self, character_id: int) -> Character:
        with self._read() as conn:
            return Character(*self._owned_character(conn, character_id))

    def characters(self) -> list[Character]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, owner, name, card_json, created, updated FROM characters WHERE owner = ? ORDER BY name, id",
                (self.owner,),
            ).fetchall()
        return [Character(*row) for row in rows]

    def find_character(self, name: str) -> Character | None:
        """The oldest of this owner's characters with exactly this name, if any."""
        return next((c for c in self.characters() if c.name == name), None)

    def delete_character(self, character_id: int) -> None:
        """Delete a character and all its chats; its groups lose the member and keep their chats."""
        with self._write() as conn:
            self._owned_character(conn, character_id)
            self._leave_groups(conn, character_id)
            conn.execute("DELETE FROM characters WHERE id = ?", (character_id,))

    # chats

    def create_chat(
        self,
        character_id: int,
        *,
        title: str = "",
        greetings: tuple[str, ...] | list[str] = (),
        format: str = "",
        persona: str = "",
        authors_note: str = "",
    ) -> ChatInfo:
        """A new chat; `greetings` (first_mes + alternate_greetings) become the swipes of message 0."""
        now = time.time()
        with self._write() as conn:
            name = self._owned_character(conn, character_id)[2]
            cur = conn.execute(
                "INSERT INTO chats (owner, character_id, title, created, updated, format, persona, authors_note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.owner, character_id, title, now, now, format, persona, authors_note),
            )
            chat_id = inserted_id(cur)
            if greetings:
                message_id = insert_message(conn, chat_id, "assistant", name, now, False, {})
                for text in greetings:
                    insert_swipe(conn, message_id, text, GenStats())
                conn.execute("UPDATE messages SET swipe_index = 0 WHERE id = ?", (message_id,))
        return self.chat(chat_id)

    def chat(self, chat_id: int) -> ChatInfo:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {CHAT_COLUMNS} FROM chats c JOIN characters ch ON ch.id = c.character_id"
                " WHERE c.id = ? AND c.owner = ?",
                (chat_id, self.owner),
            ).fetchone()
        if row is None:
            raise StoreError(f"chat {chat_id} not found (deleted, or never created in this data dir)")
        return _chat_from_row(row)

    def chats(self, character_id: int | None = None) -> list[ChatInfo]:
        """This owner's chats, most recently updated first (never reads messages' text or routing)."""
        args: tuple[str | int, ...]
        where, args = "c.owner = ?", (self.owner,)
        if character_id is not None:
            where, args = where + " AND c.character_id = ?", (*args, character_id)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {CHAT_COLUMNS} FROM chats c JOIN characters ch ON ch.id = c.character_id"
                f" WHERE {where} ORDER BY c.updated DESC, c.id DESC",
                args,
            ).fetchall()
        return [_chat_from_row(row) for row in rows]

    def update_chat(self, chat_id: int, **fields: str) -> ChatInfo:
        """Change title, format, persona and/or authors_note."""
        allowed = {"title", "format", "persona", "authors_note"}
        if not fields or not set(fields) <= allowed:
            raise StoreError(f"update_chat takes {sorted(allowed)}, got {sorted(fields)}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as conn:
            self._owned_chat(conn, chat_id)
            conn.execute(f"UPDATE chats SET {sets}, updated = ? WHERE id = ?", (*fields.values(), time.time(), chat_id))
        return self.chat(chat_id)

    def delete_chat(self, chat_id: int) -> None:
        """Delete a chat with its messages, swipes and routing (branches of it lose their parent link)."""
        with self._write() as conn:
            self._owned_chat(conn, chat_id)
            conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def branch(self, chat_id: int, message_id: int, title: str | None = None) -> ChatInfo:
        """A new chat holding copies of messages up to and including `message_id` (swipes and routing too)."""
        with self._write() as conn:
            if self._owned_message(conn, message_id) != chat_id:
                raise StoreError(f"message {message_id} is not in chat {chat_id}")
            parent = conn.execute("SELECT * FROM chats WHERE id = ?", (chat_id,)).fetchone()
            now = time.time()
            cur = conn.execute(
                "INSERT INTO chats (owner, character_id, title, created, updated, format, persona, authors_note,"
                " parent_chat_id, branch_message_id, header_json)"
                " SELECT owner, character_id, ?, ?, ?, format, persona, authors_note, id, ?, header_json"
                " FROM chats WHERE id = ?",
                (title if title is not None else f"{parent[3] or 'chat'} (branch)", now, now, message_id, chat_id),
            )
            new_id = inserted_id(cur)
            conn.execute(  # a branch keeps its chat's locked persona, as SillyTavern's branches keep chat_metadata
                "INSERT INTO persona_locks (persona_id, chat_id)"
                " SELECT persona_id, ? FROM persona_locks WHERE chat_id = ?",
                (new_id, chat_id),
            )
            position = conn.execute("SELECT position FROM messages WHERE id = ?", (message_id,)).fetchone()[0]
            copied = {
                message.id: self._copy_message(conn, message, new_id)
                for message in read_messages(conn, "m.chat_id = ? AND m.position <= ?", (chat_id, position))
            }
            copy_group_links(conn, chat_id, new_id, copied)
        return self.chat(new_id)

    @staticmethod
    def _copy_message(conn: sqlite3.Connection, message: Any, chat_id: int) -> int:
        new_message = insert_message(
            conn, chat_id, message.role, message.name, message.created, message.hidden, message.source
        )
        for swipe in message.swipes:
            new_swipe = insert_swipe(conn, new_message, swipe.text, swipe.stats, swipe.info)
            conn.execute("UPDATE swipes SET routing_stale = ? WHERE id = ?", (int(swipe.routing_stale), new_swipe))
            copy_for_swipe(conn, swipe.id, new_swipe)
        conn.execute("UPDATE messages SET swipe_index = ? WHERE id = ?", (message.swipe_index, new_message))
        return new_message

    def import_chat(self, chat: ImportedChat, card: str | dict[str, Any] | None = None) -> ChatInfo:
        """Store an imported chat in one transaction (all or nothing), under the character of that
        name (created with `card`, or a minimal V2 card, when this owner has none)."""
        existing = self.find_character(chat.character_name)
        now = time.time()
        header = json.dumps(chat.header, ensure_ascii=False)
        note_persona = (chat.persona, chat.authors_note)
        minimal = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": chat.character_name}}
        with self._write() as conn:
            if existing is None:
                cur = conn.execute(
                    "INSERT INTO characters (owner, name, card_json, created, updated) VALUES (?, ?, ?, ?, ?)",
                    (self.owner, chat.character_name, _card_text(card or minimal), now, now),
                )
            character_id = existing.id if existing else inserted_id(cur)
            cur = conn.execute(
                "INSERT INTO chats (owner, character_id, title, created, updated, persona, authors_note, header_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.owner, character_id, chat.title, chat.created or now, now, *note_persona, header),
            )
            chat_id = inserted_id(cur)
            self.lock_imported_persona(conn, self.owner, chat_id, chat.locked_persona)
            for m in chat.messages:
                message_id = insert_message(conn, chat_id, m.role, m.name, m.created or now, m.hidden, m.source)
                for swipe in m.swipes or (ImportedSwipe(""),):
                    insert_swipe(conn, message_id, swipe.text, swipe.stats, swipe.info)
                index = min(max(m.swipe_index, 0), len(m.swipes) - 1)
                conn.execute("UPDATE messages SET swipe_index = ? WHERE id = ?", (index, message_id))
        return self.chat(chat_id)


def _db_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc):
        return f"the disk holding the chat database {path} is full: free some space (this change was not saved)"
    return f"chat database error in {path}: {exc}"
