"""Group chats in the store: groups (members in order, muted members, reply order, generation mode, the keys of
an imported SillyTavern group kept), which chats are a group's, and which member said each message.

A group chat is a chat whose character is the group's first member (so every chat query stays as it is), linked
to its group in `group_chats`; each member's message names its character in `message_speakers`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from moechat.errors import StoreError
from moechat.store.messages import insert_message, insert_swipe, inserted_id
from moechat.store.records import ChatInfo, ImportedChat, ImportedSwipe

STRATEGIES = ("natural", "list", "manual", "pooled")  # as moechat.prompt.group_order names them
GENERATION_MODES = ("swap", "join", "join_muted")  # as moechat.prompt.group names them
GROUP_FIELDS = ("name", "strategy", "generation_mode", "allow_self_responses", "join_prefix", "join_suffix")


@dataclass(frozen=True, slots=True)
class GroupMember:
    character_id: int
    name: str
    avatar: str  # SillyTavern's member key (the avatar file name); "" for members added here
    muted: bool


@dataclass(frozen=True, slots=True)
class GroupInfo:
    id: int
    owner: str
    name: str
    members: tuple[GroupMember, ...]
    strategy: str
    generation_mode: str
    allow_self_responses: bool
    join_prefix: str
    join_suffix: str
    created: float
    updated: float
    source: dict[str, Any] = field(default_factory=dict)  # an imported SillyTavern group's JSON, kept losslessly

    def member(self, character_id: int) -> GroupMember:
        found = next((m for m in self.members if m.character_id == character_id), None)
        if found is None:
            raise StoreError(f"character {character_id} is not a member of group {self.name!r}")
        return found


@dataclass(frozen=True, slots=True)
class Greeting:
    """A member's greeting: its swipes (first message and alternate greetings)."""

    character_id: int
    name: str
    swipes: tuple[str, ...]


def _check(fields: dict[str, Any]) -> None:
    if "name" in fields and not str(fields["name"]).strip():
        raise StoreError("a group needs a name")
    if fields.get("strategy", "natural") not in STRATEGIES:
        raise StoreError(f"reply order must be one of {', '.join(STRATEGIES)}, not {fields['strategy']!r}")
    if fields.get("generation_mode", "swap") not in GENERATION_MODES:
        mode = fields["generation_mode"]
        raise StoreError(f"generation mode must be one of {', '.join(GENERATION_MODES)}, not {mode!r}")


class GroupsMixin:
    """Group operations; Store provides owner, _read, _write and the ownership checks."""

    owner: str
    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _owned_character: Callable[[sqlite3.Connection, int], tuple]
    _owned_chat: Callable[[sqlite3.Connection, int], None]
    _owned_message: Callable[[sqlite3.Connection, int], int]
    chat: Callable[[int], ChatInfo]

    def create_group(
        self,
        name: str,
        character_ids: Sequence[int],
        *,
        strategy: str = "natural",
        generation_mode: str = "swap",
        allow_self_responses: bool = False,
        join_prefix: str = "",
        join_suffix: str = "",
        muted: Sequence[int] = (),
        avatars: Sequence[str] | None = None,
        source: dict[str, Any] | None = None,
    ) -> GroupInfo:
        """A group of two or more of this owner's characters, in this order."""
        _check({"name": name, "strategy": strategy, "generation_mode": generation_mode})
        now = time.time()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO groups (owner, name, strategy, generation_mode, allow_self_responses, join_prefix,"
                " join_suffix, source_json, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.owner,
                    name.strip(),
                    strategy,
                    generation_mode,
                    int(allow_self_responses),
                    join_prefix,
                    join_suffix,
                    json.dumps(source or {}, ensure_ascii=False),
                    now,
                    now,
                ),
            )
            group_id = inserted_id(cur)
            self._put_members(conn, group_id, character_ids, set(muted), avatars)
        return self.group(group_id)

    def _put_members(
        self,
        conn: sqlite3.Connection,
        group_id: int,
        character_ids: Sequence[int],
        muted: set[int],
        avatars: Sequence[str] | None,
    ) -> None:
        if len(set(character_ids)) < 2 or len(set(character_ids)) != len(character_ids):
            raise StoreError("a group needs two or more different characters")
        names = avatars if avatars is not None else [""] * len(character_ids)
        conn.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
        for position, (character_id, avatar) in enumerate(zip(character_ids, names, strict=True)):
            self._owned_character(conn, character_id)
            conn.execute(
                "INSERT INTO group_members (group_id, character_id, position, muted, avatar) VALUES (?, ?, ?, ?, ?)",
                (group_id, character_id, position, int(character_id in muted), avatar),
            )

    def _leave_groups(self, conn: sqlite3.Connection, character_id: int) -> None:
        """Before a character is deleted: its groups lose the member but keep their chats (as SillyTavern drops a
        deleted character from its groups). A group chat's row names the group's first member, so chats that named
        this one move to the next member; a group with no other member keeps nothing and goes with its chats."""
        groups = conn.execute("SELECT group_id FROM group_members WHERE character_id = ?", (character_id,)).fetchall()
        for (group_id,) in groups:
            others = conn.execute(
                "SELECT character_id FROM group_members WHERE group_id = ? AND character_id != ? ORDER BY position",
                (group_id, character_id),
            ).fetchall()
            if not others:
                conn.execute("DELETE FROM groups WHERE id = ?", (group_id,))
                continue
            conn.execute(
                "UPDATE chats SET character_id = ? WHERE character_id = ?"
                " AND id IN (SELECT chat_id FROM group_chats WHERE group_id = ?)",
                (others[0][0], character_id, group_id),
            )

    def _owned_group(self, conn: sqlite3.Connection, group_id: int) -> tuple:
        row = conn.execute(
            "SELECT id, owner, name, strategy, generation_mode, allow_self_responses, join_prefix, join_suffix,"
            " created, updated, source_json FROM groups WHERE id = ? AND owner = ?",
            (group_id, self.owner),
        ).fetchone()
        if row is None:
            raise StoreError(f"group {group_id} not found (deleted, or never created in this data dir)")
        return tuple(row)

    def group(self, group_id: int) -> GroupInfo:
        with self._read() as conn:
            row = self._owned_group(conn, group_id)
            members = conn.execute(
                "SELECT g.character_id, c.name, g.avatar, g.muted FROM group_members g"
                " JOIN characters c ON c.id = g.character_id WHERE g.group_id = ? ORDER BY g.position",
                (group_id,),
            ).fetchall()
        return GroupInfo(
            id=row[0],
            owner=row[1],
            name=row[2],
            members=tuple(GroupMember(m[0], m[1], m[2], bool(m[3])) for m in members),
            strategy=row[3],
            generation_mode=row[4],
            allow_self_responses=bool(row[5]),
            join_prefix=row[6],
            join_suffix=row[7],
            created=row[8],
            updated=row[9],
            source=json.loads(row[10]),
        )

    def groups(self) -> list[GroupInfo]:
        with self._read() as conn:
            ids = conn.execute("SELECT id FROM groups WHERE owner = ? ORDER BY name, id", (self.owner,)).fetchall()
        return [self.group(row[0]) for row in ids]

    def update_group(self, group_id: int, **fields: Any) -> GroupInfo:
        """Change name, strategy, generation_mode, allow_self_responses, join_prefix and/or join_suffix."""
        if not fields or not set(fields) <= set(GROUP_FIELDS):
            raise StoreError(f"update_group takes {list(GROUP_FIELDS)}, got {sorted(fields)}")
        _check(fields)
        values = [int(v) if k == "allow_self_responses" else v for k, v in fields.items()]
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as conn:
            self._owned_group(conn, group_id)
            conn.execute(f"UPDATE groups SET {sets}, updated = ? WHERE id = ?", (*values, time.time(), group_id))
        return self.group(group_id)

    def set_group_members(self, group_id: int, character_ids: Sequence[int]) -> GroupInfo:
        """The members, in this order (muted members and SillyTavern keys of those staying are kept)."""
        old = {m.character_id: m for m in self.group(group_id).members}
        with self._write() as conn:
            self._owned_group(conn, group_id)
            muted = {c for c in character_ids if c in old and old[c].muted}
            avatars = [old[c].avatar if c in old else "" for c in character_ids]
            self._put_members(conn, group_id, character_ids, muted, avatars)
        return self.group(group_id)

    def mute_member(self, group_id: int, character_id: int, muted: bool = True) -> GroupInfo:
        self.group(group_id).member(character_id)
        with self._write() as conn:
            conn.execute(
                "UPDATE group_members SET muted = ? WHERE group_id = ? AND character_id = ?",
                (int(muted), group_id, character_id),
            )
            conn.execute("UPDATE groups SET updated = ? WHERE id = ?", (time.time(), group_id))
        return self.group(group_id)

    def delete_group(self, group_id: int) -> None:
        """Delete a group with its chats."""
        with self._write() as conn:
            self._owned_group(conn, group_id)
            conn.execute(
                "DELETE FROM chats WHERE id IN (SELECT chat_id FROM group_chats WHERE group_id = ?)", (group_id,)
            )
            conn.execute("DELETE FROM groups WHERE id = ?", (group_id,))

    def create_group_chat(self, group_id: int, greetings: Sequence[Greeting] = (), *, title: str = "") -> ChatInfo:
        """A new chat of the group, opening with the members' greetings in order."""
        chat = ImportedChat(character_name="", title=title, messages=())
        messages = [(g.character_id, g.name, tuple(ImportedSwipe(s) for s in g.swipes)) for g in greetings if g.swipes]
        return self._group_chat(group_id, chat, [(c, name, swipes, 0, None) for c, name, swipes in messages])

    def import_group_chat(self, group_id: int, chat: ImportedChat, speakers: Sequence[int | None]) -> ChatInfo:
        """Store an imported group chat in one transaction; `speakers` has each message's member (None: the user,
        or a speaker that is not a member)."""
        if len(speakers) != len(chat.messages):
            raise StoreError("import_group_chat needs one speaker per message")
        rows = [(s, m.name, m.swipes, m.swipe_index, m) for s, m in zip(speakers, chat.messages, strict=True)]
        return self._group_chat(group_id, chat, rows)

    def _group_chat(self, group_id: int, chat: ImportedChat, rows: list[tuple]) -> ChatInfo:
        now = time.time()
        group = self.group(group_id)
        with self._write() as conn:
            self._owned_group(conn, group_id)
            cur = conn.execute(
                "INSERT INTO chats (owner, character_id, title, created, updated, persona, authors_note, header_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.owner,
                    group.members[0].character_id,
                    chat.title,
                    chat.created or now,
                    now,
                    chat.persona,
                    chat.authors_note,
                    json.dumps(chat.header, ensure_ascii=False),
                ),
            )
            chat_id = inserted_id(cur)
            conn.execute("INSERT INTO group_chats (chat_id, group_id) VALUES (?, ?)", (chat_id, group_id))
            for speaker, name, swipes, index, imported in rows:
                role = imported.role if imported is not None else "assistant"
                created = (imported.created if imported is not None else None) or now
                hidden = imported.hidden if imported is not None else False
                source = imported.source if imported is not None else {}
                message_id = insert_message(conn, chat_id, role, name, created, hidden, source)
                for swipe in swipes or (ImportedSwipe(""),):
                    insert_swipe(conn, message_id, swipe.text, swipe.stats, swipe.info)
                conn.execute(
                    "UPDATE messages SET swipe_index = ? WHERE id = ?",
                    (min(max(index, 0), max(len(swipes) - 1, 0)), message_id),
                )
                if speaker is not None:
                    conn.execute(
                        "INSERT INTO message_speakers (message_id, character_id) VALUES (?, ?)", (message_id, speaker)
                    )
        return self.chat(chat_id)

    def chat_group(self, chat_id: int) -> GroupInfo | None:
        """The group a chat belongs to, or None for a one-to-one chat."""
        with self._read() as conn:
            self._owned_chat(conn, chat_id)
            row = conn.execute("SELECT group_id FROM group_chats WHERE chat_id = ?", (chat_id,)).fetchone()
        return self.group(row[0]) if row else None

    def group_chats(self, group_id: int) -> list[int]:
        """The group's chat ids, most recently updated first."""
        with self._read() as conn:
            self._owned_group(conn, group_id)
            rows = conn.execute(
                "SELECT c.id FROM group_chats g JOIN chats c ON c.id = g.chat_id WHERE g.group_id = ?"
                " ORDER BY c.updated DESC, c.id DESC",
                (group_id,),
            ).fetchall()
        return [row[0] for row in rows]

    def set_speaker(self, message_id: int, character_id: int) -> None:
        """Record which character said a message."""
        with self._write() as conn:
            self._owned_message(conn, message_id)
            self._owned_character(conn, character_id)
            conn.execute(
                "INSERT INTO message_speakers (message_id, character_id) VALUES (?, ?)"
                " ON CONFLICT (message_id) DO UPDATE SET character_id = excluded.character_id",
                (message_id, character_id),
            )

    def speakers(self, chat_id: int) -> dict[int, int]:
        """Message id -> the character who said it, for the chat's messages that record one."""
        with self._read() as conn:
            self._owned_chat(conn, chat_id)
            rows = conn.execute(
                "SELECT s.message_id, s.character_id FROM message_speakers s JOIN messages m ON m.id = s.message_id"
                " WHERE m.chat_id = ?",
                (chat_id,),
            ).fetchall()
        return {row[0]: row[1] for row in rows}


def copy_group_links(conn: sqlite3.Connection, chat_id: int, new_chat_id: int, messages: dict[int, int]) -> None:
    """A branch of a group chat stays the group's, its messages keep their speakers (`messages`: old id -> new)."""
    conn.execute(
        "INSERT INTO group_chats (chat_id, group_id) SELECT ?, group_id FROM group_chats WHERE chat_id = ?",
        (new_chat_id, chat_id),
    )
    for old, new in messages.items():
        conn.execute(
            "INSERT INTO message_speakers (message_id, character_id)"
            " SELECT ?, character_id FROM message_speakers WHERE message_id = ?",
            (new, old),
        )
