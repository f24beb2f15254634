"""text-generation-webui chat history JSON (docs/formats.md §2.8) read into ImportedChat (pure).

`internal` (what the model saw) is preferred over `visible` (HTML-escaped); legacy `data`/`data_visible`
files are read the same way. `metadata["<role>_<row>"]["versions"]` become swipes; the greeting row is
`["<|BEGIN-VISIBLE-CHAT|>", greeting]`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from moechat.chatfiles.sillytavern import MAX_FILE_BYTES, parse_date
from moechat.errors import StoreError
from moechat.store.records import GenStats, ImportedChat, ImportedMessage, ImportedSwipe, SkippedLine

BEGIN = "<|BEGIN-VISIBLE-CHAT|>"


def read_file(
    path: str | Path, character_name: str = "", max_bytes: int = MAX_FILE_BYTES
) -> tuple[ImportedChat, list[SkippedLine]]:
    """Read a TGW history file; the character is `character_name` or the folder TGW keeps it in."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise StoreError(f"{path} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB chat file limit")
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"cannot read {path} as text-generation-webui history JSON: {exc}") from exc
    name = character_name or path.parent.name or "Assistant"
    return parse_history(data, name, title=path.stem)


def is_history(data: Any) -> bool:
    return isinstance(data, dict) and any(key in data for key in ("internal", "visible", "data", "data_visible"))


def parse_history(
    data: Any, character_name: str, title: str = "", user_name: str = "You"
) -> tuple[ImportedChat, list[SkippedLine]]:
    """Rows of [user, reply] pairs -> alternating messages; bad rows are reported by 1-based row number."""
    if not is_history(data):
        raise StoreError("not a text-generation-webui history: expected 'internal'/'visible' (or 'data') lists")
    rows, escaped = _rows(data)
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    messages: list[ImportedMessage] = []
    skipped: list[SkippedLine] = []
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 2 and all(isinstance(t, str) for t in row)):
            skipped.append(SkippedLine(i + 1, f"row {i} is not a [user, reply] pair of strings"))
            continue
        user, reply = (html.unescape(t) if escaped else t for t in row)
        if user and user != BEGIN:
            messages.append(_message("user", user_name, user, metadata.get(f"user_{i}")))
        if reply:
            messages.append(_message("assistant", character_name, reply, metadata.get(f"assistant_{i}")))
    chat = ImportedChat(character_name=character_name, title=title, messages=tuple(messages))
    return chat, skipped


def _rows(data: dict[str, Any]) -> tuple[list[Any], bool]:
    for key, escaped in (("internal", False), ("data", False), ("visible", True), ("data_visible", True)):
        if isinstance(data.get(key), list):
            return data[key], escaped
    return [], False


def _message(role: str, name: str, text: str, meta: Any) -> ImportedMessage:
    meta = meta if isinstance(meta, dict) else {}
    versions = [v for v in meta.get("versions") or [] if isinstance(v, dict)]
    texts = [_version_text(v) for v in versions] or [text]
    index = meta.get("current_version_index")
    index = index if isinstance(index, int) and 0 <= index < len(texts) else len(texts) - 1
    texts[index] = text
    times = [parse_date(v.get("timestamp")) for v in versions] or [None]
    swipes = tuple(
        ImportedSwipe(t, GenStats(gen_finished=times[i] if i < len(times) else None)) for i, t in enumerate(texts)
    )
    return ImportedMessage(
        role=role, name=name, created=parse_date(meta.get("timestamp")), swipes=swipes, swipe_index=index
    )


def _version_text(version: dict[str, Any]) -> str:
    if isinstance(version.get("content"), str):
        return version["content"]
    return html.unescape(str(version.get("visible_content", "")))
