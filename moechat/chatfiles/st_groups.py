"""SillyTavern group chats (docs/formats.md §2.7.1): the group definition JSON (`groups/ID.json`) and its chats'
JSONL (`group chats/ID.jsonl`: message lines only, no header, no trailing newline), imported and exported.

Members are SillyTavern avatar file names. On import each is matched to a member already imported with that file
name, else to a character of that name (the file name's stem, or the name its messages carry), else becomes a new
character of that name; the file name is kept with the member. Every key of the definition is kept and written
back; messages keep theirs as one-to-one chats do (`sillytavern.py`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moechat.chatfiles import sillytavern
from moechat.errors import StoreError
from moechat.store.groups import GENERATION_MODES, STRATEGIES, GroupInfo
from moechat.store.records import ChatInfo, ImportedChat, Message, RoutingRecord
from moechat.store.store import Store

MAX_GROUP_BYTES = 4 * 1024 * 1024


def is_group_definition(data: Any) -> bool:
    """A group definition: an object with a `members` list of avatar file names."""
    members = data.get("members") if isinstance(data, dict) else None
    return isinstance(members, list) and all(isinstance(m, str) for m in members)


def read_group(path: str | Path) -> dict[str, Any]:
    """A group definition JSON file, as parsed (every key kept)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_GROUP_BYTES:
            raise StoreError(f"{path} is over the {MAX_GROUP_BYTES // 2**20} MiB group file limit")
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"cannot read the group definition {path}: {exc}") from exc
    if not is_group_definition(data):
        raise StoreError(f"{path} is not a SillyTavern group definition (no 'members' list of avatar file names)")
    return data


def speaker_names(chat: ImportedChat) -> list[str]:
    """The names of the characters who speak in a chat, in order of first message."""
    return list(dict.fromkeys(m.name for m in chat.messages if m.role == "assistant" and not m.hidden and m.name))


def is_group_chat(chat: ImportedChat) -> bool:
    """A chat file without a header whose messages come from several characters (or name their avatars)."""
    avatars = {m.source.get("original_avatar") for m in chat.messages if m.role == "assistant"} - {None}
    return not chat.header and (len(speaker_names(chat)) > 1 or len(avatars) > 1)


def _number(value: Any, names: Sequence[str]) -> str:
    return (
        names[value] if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names) else names[0]
    )


def _avatar_names(definition: dict[str, Any], chats: Sequence[ImportedChat]) -> dict[str, str]:
    """Each member's name: the one its messages carry, else its avatar file name without `.png`."""
    names: dict[str, str] = {}
    for chat in chats:
        for m in chat.messages:
            avatar = m.source.get("original_avatar")
            if isinstance(avatar, str) and m.role == "assistant" and m.name:
                names.setdefault(avatar, m.name)
    return {a: names.get(a) or Path(a).stem or a for a in definition["members"]}


def import_group(
    store: Store, definition: dict[str, Any], chats: Sequence[ImportedChat]
) -> tuple[GroupInfo, list[ChatInfo]]:
    """Store a group with its chats; members matched to (or added as) characters."""
    avatars = list(dict.fromkeys(definition["members"]))
    if len(avatars) < 2:
        raise StoreError("a group needs two or more members; this definition lists fewer")
    names = _avatar_names(definition, chats)
    known = {m.avatar: m.character_id for g in store.groups() for m in g.members if m.avatar}
    ids = []
    for avatar in avatars:
        found = known.get(avatar) or next(
            (c.id for c in store.characters() if c.name in (names[avatar], Path(avatar).stem)), None
        )
        if found is None:
            minimal = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": names[avatar]}}
            found = store.add_character(names[avatar], minimal).id
        ids.append(found)
    muted = [ids[avatars.index(a)] for a in definition.get("disabled_members") or [] if a in avatars]
    group = store.create_group(
        str(definition.get("name") or "Group"),
        ids,
        strategy=_number(definition.get("activation_strategy"), STRATEGIES),
        generation_mode=_number(definition.get("generation_mode"), GENERATION_MODES),
        allow_self_responses=bool(definition.get("allow_self_responses")),
        join_prefix=str(definition.get("generation_mode_join_prefix") or ""),
        join_suffix=str(definition.get("generation_mode_join_suffix") or ""),
        muted=muted,
        avatars=avatars,
        source=definition,
    )
    by_avatar = dict(zip(avatars, ids, strict=True))
    by_name = {names[a]: ids[i] for i, a in enumerate(avatars)}
    imported = []
    for chat in chats:
        speakers = []
        for m in chat.messages:
            avatar = m.source.get("original_avatar")
            speaker = by_avatar.get(avatar) if isinstance(avatar, str) else None
            speakers.append(None if m.role == "user" else speaker or by_name.get(m.name))
        imported.append(store.import_group_chat(group.id, chat, speakers))
    return group, imported


def file_id(chat: ChatInfo) -> str:
    """The chat's SillyTavern file name without `.jsonl`: its title (the imported file's name), else its id."""
    name = chat.title.strip()
    return name if name and "/" not in name and "\\" not in name and name not in (".", "..") else f"moechat-{chat.id}"


def definition_of(group: GroupInfo, chat_ids: Sequence[str]) -> dict[str, Any]:
    """The group definition: the imported one's keys kept, moechat's settings written over them."""
    out = copy.deepcopy(group.source)
    avatars = [avatar_of(m.avatar, m.name) for m in group.members]
    out.setdefault("id", str(int(group.created * 1000)))
    out["name"] = group.name
    out["members"] = avatars
    out["disabled_members"] = [a for a, m in zip(avatars, group.members, strict=True) if m.muted]
    out["allow_self_responses"] = group.allow_self_responses
    out["activation_strategy"] = STRATEGIES.index(group.strategy) if group.strategy in STRATEGIES else 0
    out["generation_mode"] = (
        GENERATION_MODES.index(group.generation_mode) if group.generation_mode in GENERATION_MODES else 0
    )
    out["generation_mode_join_prefix"] = group.join_prefix
    out["generation_mode_join_suffix"] = group.join_suffix
    listed = out.get("chats")
    chats: list[Any] = listed if isinstance(listed, list) else []
    out["chats"] = [*chats, *(c for c in chat_ids if c not in chats)]
    if not isinstance(out.get("chat_id"), str) and chat_ids:
        out["chat_id"] = chat_ids[0]
    return out


def avatar_of(avatar: str, name: str) -> str:
    """A member's SillyTavern key: its imported avatar file name, else `NAME.png`."""
    return avatar or f"{name}.png"


def to_group_jsonl(
    messages: list[Message], speakers: dict[int, str], routing: dict[int, RoutingRecord], user_name: str = "You"
) -> str:
    """A group chat's JSONL (`speakers`: message id -> the member's avatar key, written as `original_avatar` on
    messages written here)."""
    lines = []
    for m in messages:
        line = sillytavern.message_line(m, routing)
        if not m.source and m.id in speakers:
            line["original_avatar"] = speakers[m.id]
        lines.append(line)
    return "\n".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) for line in lines)


def export_group_chat(store: Store, chat_id: int, folder: Path) -> tuple[Path, Path]:
    """Write a group chat's JSONL and its group's definition into `folder`; returns both paths."""
    group = store.chat_group(chat_id)
    if group is None:
        raise StoreError(f"chat {chat_id} is not a group chat")
    chat = store.chat(chat_id)
    keys = {m.character_id: avatar_of(m.avatar, m.name) for m in group.members}
    speakers = {message_id: keys[c] for message_id, c in store.speakers(chat_id).items() if c in keys}
    stem = file_id(chat)
    text = to_group_jsonl(store.messages(chat_id), speakers, dict(store.iter_routing(chat_id)))
    definition = definition_of(group, [stem])
    gid = str(definition["id"])
    safe = gid.strip() and "/" not in gid and "\\" not in gid and gid not in (".", "..")
    chat_path, group_path = folder / f"{stem}.jsonl", folder / f"{gid if safe else f'moechat-group-{group.id}'}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        chat_path.write_text(text, encoding="utf-8")
        group_path.write_text(json.dumps(definition, ensure_ascii=False, indent=4), encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write into {folder}: {exc}") from exc
    return chat_path, group_path
