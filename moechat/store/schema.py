"""Chat database schema: append-only migrations, the count applied kept in PRAGMA user_version.

Never edit a migration that has shipped: append a new one.
"""

from __future__ import annotations

import sqlite3

from moechat.errors import StoreError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: characters, chats, messages, swipes, routing
        """CREATE TABLE characters (
            id INTEGER PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, card_json TEXT NOT NULL,
            created REAL NOT NULL, updated REAL NOT NULL)""",
        "CREATE INDEX characters_owner_name ON characters(owner, name)",
        """CREATE TABLE chats (
            id INTEGER PRIMARY KEY, owner TEXT NOT NULL,
            character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
            title TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL,
            format TEXT NOT NULL DEFAULT '', persona TEXT NOT NULL DEFAULT '',
            authors_note TEXT NOT NULL DEFAULT '',
            parent_chat_id INTEGER REFERENCES chats(id) ON DELETE SET NULL,
            branch_message_id INTEGER, header_json TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX chats_owner_updated ON chats(owner, updated)",
        "CREATE INDEX chats_character ON chats(character_id)",
        "CREATE INDEX chats_parent ON chats(parent_chat_id)",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            position INTEGER NOT NULL, role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
            name TEXT NOT NULL DEFAULT '', created REAL NOT NULL, hidden INTEGER NOT NULL DEFAULT 0,
            swipe_index INTEGER NOT NULL DEFAULT 0, source_json TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX messages_chat_position ON messages(chat_id, position)",
        """CREATE TABLE swipes (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL, text TEXT NOT NULL, created REAL NOT NULL,
            model TEXT NOT NULL DEFAULT '', tokens_per_s REAL, n_tokens INTEGER,
            stopped INTEGER NOT NULL DEFAULT 0, gen_started REAL, gen_finished REAL,
            routing_stale INTEGER NOT NULL DEFAULT 0, info_json TEXT NOT NULL DEFAULT '{}',
            UNIQUE (message_id, idx))""",
        """CREATE TABLE routing (
            id INTEGER PRIMARY KEY,
            swipe_id INTEGER NOT NULL REFERENCES swipes(id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('reply', 'prompt')), start INTEGER NOT NULL,
            n_tokens INTEGER NOT NULL, n_layers INTEGER NOT NULL, n_experts INTEGER NOT NULL,
            k INTEGER NOT NULL, experts_dtype TEXT NOT NULL,
            probs BLOB NOT NULL, experts BLOB NOT NULL, token_ids BLOB NOT NULL, offsets BLOB NOT NULL)""",
        "CREATE INDEX routing_swipe ON routing(swipe_id, kind, start)",
    ),
    (  # 2: World Info books and where they are attached (global, a character, a chat)
        """CREATE TABLE worlds (
            id INTEGER PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, json TEXT NOT NULL,
            created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (owner, name))""",
        """CREATE TABLE world_links (
            world_id INTEGER NOT NULL REFERENCES worlds(id) ON DELETE CASCADE,
            scope TEXT NOT NULL CHECK (scope IN ('global', 'character', 'chat')),
            character_id INTEGER REFERENCES characters(id) ON DELETE CASCADE,
            chat_id INTEGER REFERENCES chats(id) ON DELETE CASCADE,
            UNIQUE (world_id, scope, character_id, chat_id))""",
        "CREATE INDEX world_links_character ON world_links(character_id)",
        "CREATE INDEX world_links_chat ON world_links(chat_id)",
    ),
    (  # 3: personas (per owner), the default one, and personas locked to a chat or a character
        """CREATE TABLE personas (
            id INTEGER PRIMARY KEY, owner TEXT NOT NULL, avatar TEXT NOT NULL, name TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '', extra_json TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (owner, avatar))""",
        """CREATE TABLE persona_defaults (
            owner TEXT PRIMARY KEY, persona_id INTEGER NOT NULL REFERENCES personas(id) ON DELETE CASCADE)""",
        """CREATE TABLE persona_locks (
            persona_id INTEGER NOT NULL REFERENCES personas(id) ON DELETE CASCADE,
            chat_id INTEGER UNIQUE REFERENCES chats(id) ON DELETE CASCADE,
            character_id INTEGER UNIQUE REFERENCES characters(id) ON DELETE CASCADE,
            CHECK ((chat_id IS NULL) <> (character_id IS NULL)))""",
        "CREATE INDEX persona_locks_persona ON persona_locks(persona_id)",
        # SillyTavern chats imported before: their chat_metadata.persona (an avatar id) was read as a description
        """UPDATE chats SET persona = '' WHERE persona != ''
            AND json_valid(header_json) AND persona = json_extract(header_json, '$.chat_metadata.persona')""",
    ),
    (  # 4: group chats: groups, their members in order, which chats are a group's, which member said a message
        """CREATE TABLE groups (
            id INTEGER PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL,
            strategy TEXT NOT NULL DEFAULT 'natural', generation_mode TEXT NOT NULL DEFAULT 'swap',
            allow_self_responses INTEGER NOT NULL DEFAULT 0, join_prefix TEXT NOT NULL DEFAULT '',
            join_suffix TEXT NOT NULL DEFAULT '', source_json TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL, updated REAL NOT NULL)""",
        "CREATE INDEX groups_owner ON groups(owner, name)",
        """CREATE TABLE group_members (
            group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
            character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
            position INTEGER NOT NULL, muted INTEGER NOT NULL DEFAULT 0, avatar TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (group_id, character_id))""",
        "CREATE INDEX group_members_character ON group_members(character_id)",
        """CREATE TABLE group_chats (
            chat_id INTEGER PRIMARY KEY REFERENCES chats(id) ON DELETE CASCADE,
            group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE)""",
        "CREATE INDEX group_chats_group ON group_chats(group_id)",
        """CREATE TABLE message_speakers (
            message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
            character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE)""",
        "CREATE INDEX message_speakers_character ON message_speakers(character_id)",
    ),
)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Apply the missing migrations, each in its own transaction; returns the schema version."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{path} has schema version {version}, newer than this moechat knows "
                    f"({len(MIGRATIONS)}): upgrade moechat or use another data dir"
                )
            if version == len(MIGRATIONS):
                conn.execute("COMMIT")
                return version
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
