"""A chat as Markdown, for reading and sharing (pure). Hidden messages are left out, as in ST's TXT export."""

from __future__ import annotations

from datetime import datetime

from moechat.store.records import ChatInfo, Message


def to_markdown(chat: ChatInfo, messages: list[Message]) -> str:
    """`# title`, a line naming the character and date, then `**Name**: text` per shown message."""
    title = chat.title or f"Chat with {chat.character_name}"
    when = datetime.fromtimestamp(chat.created).strftime("%Y-%m-%d %H:%M")
    parts = [f"# {_escape(title)}", f"*{_escape(chat.character_name)}, {when}*"]
    for message in messages:
        if message.hidden:
            continue
        name = message.name or ("You" if message.role == "user" else chat.character_name)
        note = " *(stopped)*" if message.current.stats.stopped else ""
        parts.append(f"**{_escape(name)}**: {message.text}{note}")
    return "\n\n".join(parts) + "\n"


def _escape(text: str) -> str:
    """Escape the Markdown characters that would break a heading or bold name."""
    return "".join("\\" + ch if ch in "\\*_`#[]" else ch for ch in text)
