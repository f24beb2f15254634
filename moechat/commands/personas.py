"""`python -m moechat personas import SETTINGS [--avatars DIR]` and `personas list`: carry SillyTavern personas over.

`import` reads SillyTavern's `settings.json` (or a file from its "Backup personas" button): names, descriptions
(with the rest of each descriptor kept), the default persona, and the avatar images from `--avatars` (SillyTavern's
`data/<user>/User Avatars`). A persona whose avatar id this data dir has already is left alone, as SillyTavern's
restore does. A persona connected to a character (newer SillyTavern) is locked to the stored character whose name
is that avatar file's name without its extension, when exactly one has it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moechat.chatfiles.st_personas import StPersonas, read_settings
from moechat.commands.chats import default_data_dir
from moechat.errors import MoechatError
from moechat.library import set_persona_avatar
from moechat.store.store import Store

MAX_AVATAR_BYTES = 20 * 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moechat personas", description=__doc__)
    parser.add_argument("--data-dir", type=Path, help="data dir (default: $MOECHAT_DATA_DIR or the user data dir)")
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser("import", help="import SillyTavern personas from settings.json or a persona backup")
    imp.add_argument("settings", type=Path)
    imp.add_argument("--avatars", type=Path, help="SillyTavern's User Avatars folder (images named by avatar id)")
    lst = sub.add_parser("list", help="list personas")
    lst.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    with Store.open(data_dir) as store:
        if args.action == "import":
            for line in import_personas(store, data_dir, read_settings(args.settings), args.avatars):
                print(line)
            return 0
        return _list(store, args.json)


def import_personas(store: Store, data_dir: Path, st: StPersonas, avatars: Path | None) -> list[str]:
    """Store SillyTavern's personas; returns what was done, one line each."""
    report, imported = [], 0
    for p in st.personas:
        if store.persona_by_avatar(p.avatar) is not None:
            report.append(f"{p.avatar}: skipped: a persona with this avatar id exists already")
            continue
        persona = store.add_persona(p.name, p.description, avatar=p.avatar, extra=p.extra)
        imported += 1
        image = _avatar_bytes(avatars, p.avatar)
        try:
            set_persona_avatar(store, data_dir, persona.id, image)
            picture = "its avatar image" if image is not None else "a drawn avatar (no image found)"
        except MoechatError as exc:
            set_persona_avatar(store, data_dir, persona.id, None)
            picture = f"a drawn avatar ({exc})"
        report.append(f"{p.avatar}: persona {persona.id} {p.name!r} imported with {picture}")
        for character in p.characters():
            matches = [c for c in store.characters() if c.name == Path(character).stem]
            if len(matches) == 1:
                store.lock_persona(persona.id, character_id=matches[0].id)
                report.append(f"{p.avatar}: locked to character {matches[0].id} {matches[0].name!r}")
            else:
                report.append(f"{p.avatar}: connection to {character!r} kept, not locked ({len(matches)} characters)")
    if st.default:
        default = store.persona_by_avatar(st.default)
        if default is not None:
            store.set_default_persona(default.id)
            report.append(f"default persona: {default.id} {default.name!r}")
    report += [f"skipped: {why}" for why in st.skipped]
    report.append(f"{imported} of {len(st.personas)} personas imported")
    return report


def _avatar_bytes(folder: Path | None, avatar: str) -> bytes | None:
    if folder is None or Path(avatar).name != avatar:  # an avatar id is a bare file name
        return None
    path = folder / avatar
    try:
        return path.read_bytes() if path.is_file() and path.stat().st_size <= MAX_AVATAR_BYTES else None
    except OSError:
        return None


def _list(store: Store, as_json: bool) -> int:
    default = store.persona_locks().default
    personas = store.personas()
    if as_json:
        rows = [
            {"id": p.id, "name": p.name, "avatar": p.avatar, "description": p.description, "default": p.id == default}
            for p in personas
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    print(f"{'id':>5}  {'name':<24}  {'avatar':<32}  description")
    for p in personas:
        mark = " (default)" if p.id == default else ""
        first = p.description.splitlines()[0][:60] if p.description else ""
        print(f"{p.id:>5}  {(p.name + mark)[:24]:<24}  {p.avatar[:32]:<32}  {first}")
    return 0
