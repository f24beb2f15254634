"""SillyTavern chat files (.jsonl, docs/formats.md §2.7): read into ImportedChat, write from store records.

Lossless round trip: each imported line is kept (ImportedMessage.source, with `mes`/`swipes`/`swipe_info`
replaced by null placeholders that keep key order), each swipe_info entry too, and the header; writing
starts from those and overlays what moechat models. moechat's own data goes under `extra.moechat`.
Pure: no sqlite3.
"""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moechat.errors import StoreError
from moechat.store.records import (
    ChatInfo,
    GenStats,
    ImportedChat,
    ImportedMessage,
    ImportedSwipe,
    Message,
    RoutingRecord,
    SkippedLine,
    Swipe,
)

MAX_FILE_BYTES = 64 * 1024 * 1024
PLACEHOLDER_KEYS = ("mes", "swipes", "swipe_info")
_ST_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})\s*@\s*(\d{1,2})h\s*(\d{1,2})m\s*(\d{1,2})s(?:\s*(\d{1,3})\s*ms)?")
_HUMAN_FORMATS = ("%B %d, %Y %I:%M%p", "%B %d, %Y %H:%M", "%b %d, %Y %I:%M%p", "%b %d, %Y %H:%M", "%Y-%m-%d %H:%M:%S")


def parse_date(value: Any) -> float | None:
    """Unix seconds from the date forms ST and TGW write (local time unless the text has a zone).

    None for anything that is not a real date (month 13, an overflowing number, NaN, infinity)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:
            seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        except OverflowError:
            return None
        return seconds if math.isfinite(seconds) else None
    text = re.sub(r"\s+", " ", str(value)).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return parse_date(float(text))
    try:
        if m := _ST_DATE.fullmatch(text):
            y, mo, d, h, mi, s, ms = (int(g or 0) for g in m.groups())
            return datetime(y, mo, d, h, mi, s, ms * 1000).timestamp()
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        pass
    compact = re.sub(r"\s*([AaPp][Mm])$", lambda g: g.group(1).upper(), text)
    for fmt in _HUMAN_FORMATS:
        try:
            return datetime.strptime(compact, fmt).timestamp()
        except ValueError:
            continue
    return None


def format_create_date(ts: float) -> str:
    """`2024-09-28@01h02m03s`, the form ST's UI writes."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d@%Hh%Mm%Ss")


def format_send_date(ts: float) -> str:
    """`September 28, 2024 1:02am`."""
    dt = datetime.fromtimestamp(ts)
    return (
        f"{dt.strftime('%B')} {dt.day}, {dt.year} {dt.hour % 12 or 12}:{dt.minute:02d}{'am' if dt.hour < 12 else 'pm'}"
    )


def format_iso(ts: float) -> str:
    """A JS Date as JSON.stringify writes it: `2024-09-28T01:02:59.000Z`."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# reading


def read_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[ImportedChat, list[SkippedLine]]:
    """Read an ST chat file; refuses files over max_bytes. Malformed lines are skipped and reported."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise StoreError(f"{path} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB chat file limit")
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    return parse_jsonl(text, title=path.stem)


def parse_jsonl(text: str, title: str = "") -> tuple[ImportedChat, list[SkippedLine]]:
    """Parse ST JSONL text: a header line (or none, as group chats) then one message per line."""
    skipped: list[SkippedLine] = []
    header: dict[str, Any] = {}
    messages: list[ImportedMessage] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            skipped.append(SkippedLine(number, f"not valid JSON ({exc.args[0] if exc.args else exc})"))
            continue
        if not isinstance(line, dict):
            skipped.append(SkippedLine(number, "not a JSON object"))
        elif number == 1 and "mes" not in line:
            if "user_name" in line or "name" in line or "character_name" in line:
                header = line
            else:
                skipped.append(SkippedLine(number, "header has neither user_name nor name"))
        elif (message := _message(line)) is None:
            skipped.append(SkippedLine(number, "message has no 'mes' text"))
        else:
            messages.append(message)
    return _chat(header, messages, title), skipped


def _chat(header: dict[str, Any], messages: list[ImportedMessage], title: str) -> ImportedChat:
    meta = _dict(header.get("chat_metadata"))
    name = header.get("character_name")
    if not isinstance(name, str) or not name:
        name = next((m.name for m in messages if m.role != "user" and m.name), "") or title or "Imported"
    return ImportedChat(
        character_name=name,
        title=title,
        messages=tuple(messages),
        created=parse_date(header.get("create_date")),
        persona=_str(_dict(meta.get("moechat")).get("persona")),
        authors_note=_str(meta.get("note_prompt")),
        header=header,
        locked_persona=_str(meta.get("persona")),
    )


def _message(line: dict[str, Any]) -> ImportedMessage | None:
    mes = line.get("mes")
    if not isinstance(mes, str):
        return None
    texts = [s if isinstance(s, str) else json.dumps(s) for s in _list(line.get("swipes"))] or [mes]
    index = swipe_id if isinstance(swipe_id := line.get("swipe_id"), int) else 0
    if not 0 <= index < len(texts):
        texts.append(mes)
        index = len(texts) - 1
    texts[index] = mes
    infos = _list(line.get("swipe_info"))
    extra = _dict(line.get("extra"))
    swipes = []
    for i, text in enumerate(texts):
        info = infos[i] if i < len(infos) and isinstance(infos[i], dict) else {}
        timing = info if info else (line if i == index else {})
        model = _str(extra.get("model")) if i == index else ""
        started, finished = parse_date(timing.get("gen_started")), parse_date(timing.get("gen_finished"))
        stats = GenStats(model=model, gen_started=started, gen_finished=finished)
        swipes.append(ImportedSwipe(text=text, stats=stats, info=info))
    source = {key: (None if key in PLACEHOLDER_KEYS else value) for key, value in line.items()}
    return ImportedMessage(
        role="user" if line.get("is_user") else "assistant",
        name=str(line.get("name", "")),
        created=parse_date(line.get("send_date")),
        swipes=tuple(swipes),
        swipe_index=index,
        hidden=bool(line.get("is_system")),
        source=source,
    )


def _dict(value: object) -> dict[str, Any]:
    """value when it is a JSON object, else a new empty one."""
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    """value when it is a JSON array, else a new empty one."""
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    """value when it is a JSON string, else ""."""
    return value if isinstance(value, str) else ""


# writing


def to_jsonl(
    chat: ChatInfo,
    messages: list[Message],
    routing: dict[int, RoutingRecord],
    user_name: str = "You",
    *,
    locked_persona: str = "",
) -> str:
    """The chat as ST JSONL; `routing` maps swipe ids to their reply routing (summarised under extra.moechat).
    `locked_persona` is the avatar id of the persona locked to the chat, written as `chat_metadata.persona` ("": the
    header's as kept, which the store removes when the chat is unlocked)."""
    lines = [_header(chat, user_name, locked_persona)]
    lines += [_line(m, routing) for m in messages]
    return "\n".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) for line in lines) + "\n"


def _header(chat: ChatInfo, user_name: str, locked_persona: str) -> dict[str, Any]:
    header = copy.deepcopy(chat.header)
    header.setdefault("user_name", user_name)
    header["character_name"] = chat.character_name
    header.setdefault("create_date", format_create_date(chat.created))
    meta = header.setdefault("chat_metadata", {})
    if isinstance(meta, dict):
        if chat.authors_note or "note_prompt" in meta:
            meta["note_prompt"] = chat.authors_note
        if locked_persona:
            meta["persona"] = locked_persona
        if chat.persona and isinstance(meta.setdefault("moechat", {}), dict):
            meta["moechat"]["persona"] = chat.persona
        if chat.parent_chat_id is not None:
            meta.setdefault("moechat", {}).update(
                parent_chat_id=chat.parent_chat_id, branch_message_id=chat.branch_message_id
            )
    return header


def message_line(message: Message, routing: dict[int, RoutingRecord]) -> dict[str, Any]:
    """One message as its JSONL line (as `to_jsonl` writes it)."""
    return _line(message, routing)


def _line(message: Message, routing: dict[int, RoutingRecord]) -> dict[str, Any]:
    new = not message.source
    line = copy.deepcopy(message.source) or {"name": message.name}
    line["name"] = message.name
    for key, value in (("is_user", message.role == "user"), ("is_system", message.hidden)):
        if new or key in line or value:
            line[key] = value
    if "send_date" not in line:
        line["send_date"] = format_send_date(message.created)
    line["mes"] = message.text
    extra = _dict(line.get("extra"))
    current = message.current
    if new and current.stats.model:
        extra["model"] = current.stats.model
    if (summary := _moechat(current, routing)) is not None:
        extra["moechat"] = summary
    if extra or "extra" in line:
        line["extra"] = extra
    assistant_new = new and message.role != "user"
    if line.get("swipes", 0) is None or assistant_new or len(message.swipes) > 1:
        line["swipes"] = [s.text for s in message.swipes]
        line["swipe_id"] = message.swipe_index
    if line.get("swipe_info", 0) is None or assistant_new or (new and len(message.swipes) > 1):
        line["swipe_info"] = [_swipe_info(s, routing) for s in message.swipes]
    for key in PLACEHOLDER_KEYS:
        if line.get(key, 0) is None:
            del line[key]
    if new:
        _timing(line, current.stats)
    return line


def _timing(target: dict[str, Any], stats: GenStats) -> None:
    if stats.gen_started is not None:
        target["gen_started"] = format_iso(stats.gen_started)
    if stats.gen_finished is not None:
        target["gen_finished"] = format_iso(stats.gen_finished)


def _swipe_info(swipe: Swipe, routing: dict[int, RoutingRecord]) -> dict[str, Any]:
    info = copy.deepcopy(swipe.info)
    if not info:
        info = {"send_date": format_send_date(swipe.created)}
        _timing(info, swipe.stats)
        info["extra"] = {"model": swipe.stats.model} if swipe.stats.model else {}
    summary = _moechat(swipe, routing)
    if summary is not None:
        extra = _dict(info.get("extra"))
        extra["moechat"] = summary
        info["extra"] = extra
    return info


def _moechat(swipe: Swipe, routing: dict[int, RoutingRecord]) -> dict[str, Any] | None:
    """moechat's data for one swipe, or None when it has none (imported, never generated here)."""
    record = routing.get(swipe.id)
    stats = swipe.stats
    if record is None and stats.tokens_per_s is None and not stats.stopped:
        return None
    summary: dict[str, Any] = {"model": stats.model, "tokens_per_s": stats.tokens_per_s, "stopped": stats.stopped}
    if stats.n_tokens is not None:
        summary["n_tokens"] = stats.n_tokens
    if record is not None:
        summary["routing"] = record.summary()
        summary["routing_stale"] = swipe.routing_stale
    return summary
