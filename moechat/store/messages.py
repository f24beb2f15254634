"""Messages and their swipes: the chat operations of the store (mixed into store.Store).

Every message has at least one swipe; its text is the current swipe's text. A reply is a swipe:
begin_reply writes it empty and marked stopped, append_to_swipe adds text and routing in one
transaction per call, finish_swipe records the stats, so a crash mid-reply leaves a stopped reply
holding exactly the tokens written so far.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from moechat.errors import StoreError
from moechat.store.records import ROLES, GenStats, Message, RoutingRecord, Swipe
from moechat.store.routing import insert_chunk, load

SWIPE_COLUMNS = (
    "s.id, s.message_id, s.idx, s.text, s.created, s.model, s.tokens_per_s, s.n_tokens, s.stopped,"
    " s.gen_started, s.gen_finished, s.routing_stale, s.info_json,"
    " EXISTS (SELECT 1 FROM routing r WHERE r.swipe_id = s.id)"
)
MESSAGE_COLUMNS = "m.id, m.chat_id, m.position, m.role, m.name, m.created, m.hidden, m.swipe_index, m.source_json"


def swipe_from_row(row: tuple) -> Swipe:
    stats = GenStats(row[5], row[6], row[7], bool(row[8]), row[9], row[10])
    return Swipe(
        id=row[0],
        message_id=row[1],
        index=row[2],
        text=row[3],
        created=row[4],
        stats=stats,
        routing_stale=bool(row[11]),
        has_routing=bool(row[13]),
        info=json.loads(row[12]),
    )


def message_from_row(row: tuple, swipes: tuple[Swipe, ...]) -> Message:
    return Message(
        id=row[0],
        chat_id=row[1],
        position=row[2],
        role=row[3],
        name=row[4],
        created=row[5],
        hidden=bool(row[6]),
        swipe_index=min(row[7], len(swipes) - 1),
        swipes=swipes,
        source=json.loads(row[8]),
    )


def _stats_tuple(s: GenStats) -> tuple:
    return (s.model, s.tokens_per_s, s.n_tokens, int(s.stopped), s.gen_started, s.gen_finished)


def inserted_id(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just added."""
    if cur.lastrowid is None:  # sqlite3 sets it after every INSERT that added a row
        raise StoreError("the database reported no id for a new row")
    return cur.lastrowid


def insert_swipe(
    conn: sqlite3.Connection, message_id: int, text: str, stats: GenStats, info: dict | None = None
) -> int:
    """Add a swipe at the end of a message's swipes and make it current; returns its id."""
    idx = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM swipes WHERE message_id = ?", (message_id,)).fetchone()[0]
    cur = conn.execute(
        "INSERT INTO swipes (message_id, idx, text, created, model, tokens_per_s, n_tokens, stopped,"
        " gen_started, gen_finished, info_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message_id, idx, text, time.time(), *_stats_tuple(stats), json.dumps(info or {}, ensure_ascii=False)),
    )
    conn.execute("UPDATE messages SET swipe_index = ? WHERE id = ?", (idx, message_id))
    return inserted_id(cur)


def insert_message(
    conn: sqlite3.Connection, chat_id: int, role: str, name: str, created: float, hidden: bool, source: dict
) -> int:
    if role not in ROLES:
        raise StoreError(f"message role must be one of {ROLES}, not {role!r}")
    pos = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM messages WHERE chat_id = ?", (chat_id,)).fetchone()
    cur = conn.execute(
        "INSERT INTO messages (chat_id, position, role, name, created, hidden, source_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (chat_id, pos[0], role, name, created, int(hidden), json.dumps(source, ensure_ascii=False)),
    )
    return inserted_id(cur)


def read_messages(conn: sqlite3.Connection, where: str, args: tuple) -> list[Message]:
    rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE {where} ORDER BY m.position", args).fetchall()
    swipe_rows = conn.execute(
        f"SELECT {SWIPE_COLUMNS} FROM swipes s JOIN messages m ON m.id = s.message_id WHERE {where}"
        " ORDER BY s.message_id, s.idx",
        args,
    ).fetchall()
    by_message: dict[int, list[Swipe]] = {}
    for row in swipe_rows:
        by_message.setdefault(row[1], []).append(swipe_from_row(row))
    return [message_from_row(r, tuple(by_message.get(r[0], ()))) for r in rows if r[0] in by_message]


class MessagesMixin:
    """Message operations; Store provides owner, _read and _write."""

    owner: str
    _read: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def _owned_chat(self, conn: sqlite3.Connection, chat_id: int) -> None:
        row = conn.execute("SELECT 1 FROM chats WHERE id = ? AND owner = ?", (chat_id, self.owner)).fetchone()
        if row is None:
            raise StoreError(f"chat {chat_id} not found (deleted, or never created in this data dir)")

    def _owned_message(self, conn: sqlite3.Connection, message_id: int) -> int:
        row = conn.execute(
            "SELECT m.chat_id FROM messages m JOIN chats c ON c.id = m.chat_id WHERE m.id = ? AND c.owner = ?",
            (message_id, self.owner),
        ).fetchone()
        if row is None:
            raise StoreError(f"message {message_id} not found (deleted, or in another chat)")
        return int(row[0])

    def _owned_swipe(self, conn: sqlite3.Connection, swipe_id: int) -> tuple[int, int]:
        row = conn.execute(
            "SELECT s.message_id, m.chat_id FROM swipes s JOIN messages m ON m.id = s.message_id"
            " JOIN chats c ON c.id = m.chat_id WHERE s.id = ? AND c.owner = ?",
            (swipe_id, self.owner),
        ).fetchone()
        if row is None:
            raise StoreError(f"swipe {swipe_id} not found (its message may have been deleted)")
        return int(row[0]), int(row[1])

    @staticmethod
    def _touch(conn: sqlite3.Connection, chat_id: int) -> None:
        conn.execute("UPDATE chats SET updated = ? WHERE id = ?", (time.time(), chat_id))

    def messages(self, chat_id: int) -> list[Message]:
        """The chat's messages in order, each with all its swipes (routing blobs not read)."""
        with self._read() as conn:
            self._owned_chat(conn, chat_id)
            return read_messages(conn, "m.chat_id = ?", (chat_id,))

    def message(self, message_id: int) -> Message:
        with self._read() as conn:
            self._owned_message(conn, message_id)
            return read_messages(conn, "m.id = ?", (message_id,))[0]

    def add_message(
        self, chat_id: int, role: str, text: str, *, name: str = "", hidden: bool = False, stats: GenStats | None = None
    ) -> Message:
        """Append a finished message (a user turn, a note...); committed when this returns."""
        with self._write() as conn:
            self._owned_chat(conn, chat_id)
            message_id = insert_message(conn, chat_id, role, name, time.time(), hidden, {})
            insert_swipe(conn, message_id, text, stats or GenStats())
            self._touch(conn, chat_id)
        return self.message(message_id)

    def begin_reply(
        self, chat_id: int, *, name: str, model: str = "", message_id: int | None = None, role: str = "assistant"
    ) -> Swipe:
        """Start a reply: a new message, or with message_id a new (current) swipe of it (regenerate).

        The swipe starts empty and stopped; stream into it with append_to_swipe, end with finish_swipe.
        """
        stats = GenStats(model=model, stopped=True, gen_started=time.time())
        with self._write() as conn:
            self._owned_chat(conn, chat_id)
            if message_id is None:
                message_id = insert_message(conn, chat_id, role, name, time.time(), False, {})
            elif self._owned_message(conn, message_id) != chat_id:
                raise StoreError(f"message {message_id} is not in chat {chat_id}")
            swipe_id = insert_swipe(conn, message_id, "", stats)
            self._touch(conn, chat_id)
        return self.swipe(swipe_id)

    def append_to_swipe(self, swipe_id: int, text: str, routing: RoutingRecord | None = None) -> None:
        """Append text (and the routing of its tokens, offsets relative to `text`) in one transaction.

        Also how `continue` works: append to the current swipe of the last reply.
        """
        with self._write() as conn:
            _message_id, chat_id = self._owned_swipe(conn, swipe_id)
            base = conn.execute("SELECT length(text) FROM swipes WHERE id = ?", (swipe_id,)).fetchone()[0]
            conn.execute("UPDATE swipes SET text = text || ? WHERE id = ?", (text, swipe_id))
            if routing is not None:
                insert_chunk(conn, swipe_id, "reply", routing, base)
            self._touch(conn, chat_id)

    def finish_swipe(
        self, swipe_id: int, *, stopped: bool, tokens_per_s: float | None = None, n_tokens: int | None = None
    ) -> Swipe:
        """Record how a streamed reply ended (finished, or stopped by the user) and its speed."""
        with self._write() as conn:
            _message_id, chat_id = self._owned_swipe(conn, swipe_id)
            conn.execute(
                "UPDATE swipes SET stopped = ?, tokens_per_s = ?, n_tokens = ?, gen_finished = ? WHERE id = ?",
                (int(stopped), tokens_per_s, n_tokens, time.time(), swipe_id),
            )
            self._touch(conn, chat_id)
        return self.swipe(swipe_id)

    def add_reply(
        self,
        chat_id: int,
        text: str,
        *,
        name: str,
        stats: GenStats,
        routing: RoutingRecord | None = None,
        message_id: int | None = None,
    ) -> Message:
        """A whole reply in one transaction: a new message, or with message_id a new current swipe."""
        with self._write() as conn:
            self._owned_chat(conn, chat_id)
            if message_id is None:
                message_id = insert_message(conn, chat_id, "assistant", name, time.time(), False, {})
            elif self._owned_message(conn, message_id) != chat_id:
                raise StoreError(f"message {message_id} is not in chat {chat_id}")
            swipe_id = insert_swipe(conn, message_id, text, stats)
            if routing is not None:
                insert_chunk(conn, swipe_id, "reply", routing, 0)
            self._touch(conn, chat_id)
        return self.message(message_id)

    def swipe(self, swipe_id: int) -> Swipe:
        with self._read() as conn:
            self._owned_swipe(conn, swipe_id)
            row = conn.execute(f"SELECT {SWIPE_COLUMNS} FROM swipes s WHERE s.id = ?", (swipe_id,)).fetchone()
            return swipe_from_row(row)

    def select_swipe(self, message_id: int, index: int) -> Message:
        """Show swipe `index` (0-based) of a message."""
        with self._write() as conn:
            chat_id = self._owned_message(conn, message_id)
            n = conn.execute("SELECT COUNT(*) FROM swipes WHERE message_id = ?", (message_id,)).fetchone()[0]
            if not 0 <= index < n:
                raise StoreError(f"message {message_id} has {n} swipe(s); there is no swipe {index}")
            conn.execute("UPDATE messages SET swipe_index = ? WHERE id = ?", (index, message_id))
            self._touch(conn, chat_id)
        return self.message(message_id)

    def step_swipe(self, message_id: int, delta: int) -> Message:
        """Swipe left (-1) or right (+1), wrapping around; regenerate to get a new one."""
        current = self.message(message_id)
        return self.select_swipe(message_id, (current.swipe_index + delta) % len(current.swipes))

    def edit_message(self, message_id: int, text: str) -> Message:
        """Replace the current swipe's text; its routing no longer matches, so it is marked stale."""
        with self._write() as conn:
            chat_id = self._owned_message(conn, message_id)
            conn.execute(
                "UPDATE swipes SET text = ?, routing_stale = 1 WHERE message_id = ?"
                " AND idx = (SELECT swipe_index FROM messages WHERE id = ?)",
                (text, message_id, message_id),
            )
            self._touch(conn, chat_id)
        return self.message(message_id)

    def set_hidden(self, message_id: int, hidden: bool) -> Message:
        with self._write() as conn:
            chat_id = self._owned_message(conn, message_id)
            conn.execute("UPDATE messages SET hidden = ? WHERE id = ?", (int(hidden), message_id))
            self._touch(conn, chat_id)
        return self.message(message_id)

    def delete_message(self, message_id: int) -> None:
        """Delete a message with its swipes and routing."""
        with self._write() as conn:
            chat_id = self._owned_message(conn, message_id)
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            self._touch(conn, chat_id)

    def set_prompt_routing(self, message_id: int, routing: RoutingRecord) -> None:
        """Store the routing of a (user) message's prompt tokens on its current swipe, replacing any."""
        with self._write() as conn:
            self._owned_message(conn, message_id)
            swipe_id = conn.execute(
                "SELECT s.id FROM swipes s JOIN messages m ON m.id = s.message_id AND s.idx = m.swipe_index"
                " WHERE m.id = ?",
                (message_id,),
            ).fetchone()[0]
            conn.execute("DELETE FROM routing WHERE swipe_id = ? AND kind = 'prompt'", (swipe_id,))
            insert_chunk(conn, swipe_id, "prompt", routing, 0)

    def routing(self, swipe_id: int, kind: str = "reply") -> RoutingRecord | None:
        """A swipe's routing ("reply": generated tokens; "prompt": a user message's prompt tokens)."""
        with self._read() as conn:
            self._owned_swipe(conn, swipe_id)
            return load(conn, swipe_id, kind)

    def iter_routing(self, chat_id: int) -> Iterator[tuple[int, RoutingRecord]]:
        """(swipe id, reply routing) for every swipe of a chat that has one (for exports)."""
        for message in self.messages(chat_id):
            for swipe in message.swipes:
                if swipe.has_routing:
                    record = self.routing(swipe.id)
                    if record is not None:
                        yield swipe.id, record
