"""`python -m moechat chats import|list|export`: move chats between moechat, SillyTavern and TGW."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path

from moechat.chatfiles import markdown, sillytavern, st_groups, tgw
from moechat.errors import StoreError
from moechat.store.groups import GroupInfo
from moechat.store.records import ImportedChat, SkippedLine
from moechat.store.store import Store


def default_data_dir() -> Path:
    """MOECHAT_DATA_DIR, else $XDG_DATA_HOME/moechat, else ~/.local/share/moechat."""
    if env := os.environ.get("MOECHAT_DATA_DIR"):
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "moechat"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moechat chats", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help="data dir (default: $MOECHAT_DATA_DIR or the user data dir)")
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser(
        "import",
        help="import SillyTavern .jsonl or text-generation-webui .json chats;"
        " a SillyTavern group with its chats: GROUP.json CHAT.jsonl…",
    )
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--character", default="", help="character name for TGW files (default: their folder)")
    lst = sub.add_parser("list", help="list chats, newest first")
    lst.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    exp = sub.add_parser("export", help="write one chat as SillyTavern JSONL or Markdown")
    exp.add_argument("chat_id", type=int)
    exp.add_argument("--format", choices=("st", "md"), default="st")
    exp.add_argument("-o", "--output", type=Path, required=True, help="the file (a group chat: a folder)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    with Store.open(args.data_dir or default_data_dir()) as store:
        if args.action == "import":
            group = _group_definition(args.files[0])
            if group is not None:
                return _import_group(store, args.files[0], group, args.files[1:])
            return _import(store, args.files, args.character)
        if args.action == "list":
            return _list(store, args.json)
        return _export(store, args.chat_id, args.format, args.output)


def read_chat_file(path: Path, character: str = "") -> tuple[ImportedChat, list[SkippedLine]]:
    """ST JSONL or TGW JSON, told apart by suffix, else by content."""
    if path.suffix.lower() == ".jsonl":
        return sillytavern.read_file(path)
    if path.suffix.lower() == ".json":
        return tgw.read_file(path, character)
    try:
        if path.stat().st_size > sillytavern.MAX_FILE_BYTES:
            return sillytavern.read_file(path)  # refuses it with the size in the message
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, ValueError):
        data = None  # JSONL (or unreadable: the ST reader says why)
    return tgw.read_file(path, character) if tgw.is_history(data) else sillytavern.read_file(path)


def _import(store: Store, files: list[Path], character: str) -> int:
    failed = 0
    for path in files:
        try:
            chat, skipped = read_chat_file(path, character)
            if st_groups.is_group_chat(chat):
                speakers = ", ".join(st_groups.speaker_names(chat))
                raise StoreError(
                    f"a group chat (speakers {speakers}): import it with its group definition:"
                    f" chats import GROUP.json {path}"
                )
            info = store.import_chat(chat)
        except StoreError as exc:
            print(f"{path}: not imported: {exc}")
            failed += 1
            continue
        print(f"{path}: chat {info.id} ({info.message_count} messages, character {info.character_name!r})")
        if chat.locked_persona:
            locked = store.locked_avatar(info.id)
            said = "locked to the chat" if locked else "kept in the chat's metadata: no persona has that avatar id"
            print(f"{path}: persona {chat.locked_persona!r} {said}")
        for item in skipped:
            print(f"{path}:{item.line}: skipped: {item.reason}")
    return 1 if failed else 0


def _group_definition(path: Path) -> dict | None:
    """The group definition in `path` when it holds one (a .json file with a `members` list)."""
    if path.suffix.lower() != ".json":
        return None
    try:
        return st_groups.read_group(path)
    except StoreError:
        return None


def _import_group(store: Store, path: Path, definition: dict, files: list[Path]) -> int:
    chats, failed = [], 0
    for chat_path in files:
        try:
            chat, skipped = sillytavern.read_file(chat_path)
        except StoreError as exc:
            print(f"{chat_path}: not imported: {exc}")
            failed += 1
            continue
        chats.append(chat)
        for item in skipped:
            print(f"{chat_path}:{item.line}: skipped: {item.reason}")
    group, infos = st_groups.import_group(store, definition, chats)
    members = ", ".join(m.name for m in group.members)
    print(f"{path}: group {group.id} {group.name!r} ({members})")
    for info in infos:
        print(f"  chat {info.id} {info.title!r} ({info.message_count} messages)")
    return 1 if failed else 0


def _list(store: Store, as_json: bool) -> int:
    chats = store.chats()
    groups = {c.id: store.chat_group(c.id) for c in chats}
    if as_json:
        rows = [
            {
                "id": c.id,
                "character": c.character_name,
                "title": c.title,
                "messages": c.message_count,
                "created": c.created,
                "updated": c.updated,
                "parent_chat_id": c.parent_chat_id,
                "group": _group_row(groups[c.id]),
            }
            for c in chats
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    print(f"{'id':>6}  {'updated':<16}  {'msgs':>5}  {'character':<20}  title")
    for c in chats:
        when = datetime.fromtimestamp(c.updated).strftime("%Y-%m-%d %H:%M")
        group = groups[c.id]
        who = f"group {group.name}" if group is not None else c.character_name
        print(f"{c.id:>6}  {when:<16}  {c.message_count:>5}  {who[:20]:<20}  {c.title}")
    return 0


def _group_row(group: GroupInfo | None) -> dict | None:
    if group is None:
        return None
    return {"id": group.id, "name": group.name, "members": [m.name for m in group.members]}


def _export(store: Store, chat_id: int, fmt: str, output: Path) -> int:
    chat = store.chat(chat_id)
    messages = store.messages(chat_id)
    if fmt == "st" and store.chat_group(chat_id) is not None:
        chat_path, group_path = st_groups.export_group_chat(store, chat_id, output)
        print(f"group chat {chat_id} written to {chat_path}, its group to {group_path}")
        return 0
    if fmt == "md":
        text = markdown.to_markdown(chat, messages)
    else:
        routing = dict(store.iter_routing(chat_id))
        text = sillytavern.to_jsonl(chat, messages, routing, locked_persona=store.locked_avatar(chat_id))
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write {output}: {exc}") from exc
    print(f"chat {chat_id} written to {output}")
    return 0
