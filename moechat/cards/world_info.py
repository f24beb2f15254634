"""SillyTavern World Info files (docs/formats.md §2.6.1): read and written losslessly, and every lore source as `Rule`s.

A World Info file is `{"entries": {"<uid>": {uid, key, keysecondary, content, order, position, disable, ...}}, ...}`.
`WorldInfo` keeps the parsed JSON as it is, so writing it back gives the same JSON; `rules()` reads its entries with
SillyTavern's defaults. A card's `character_book` becomes rules the way SillyTavern's "Import Card Lore" converts it
(`convertCharacterBook`), and back (`to_character_book`, as its server embeds a linked world in an exported card).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moechat.cards.lorebook import Lorebook, LoreEntry, read_lorebook
from moechat.errors import CardError

DEFAULT_DEPTH = 4
DEFAULT_WEIGHT = 100
POSITIONS = ("before_char", "after_char", "an_top", "an_bottom", "at_depth", "examples_top", "examples_bottom")
MAX_WORLD_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Rule:
    """One lore entry with SillyTavern's meaning of every field (`position` indexes `POSITIONS`; role 0 system,
    1 user, 2 assistant; None in the three match fields means the global setting)."""

    uid: str
    world: str
    keys: tuple[str, ...]
    content: str
    order: float = 100
    position: int = 0
    secondary: tuple[str, ...] = ()
    selective: bool = True
    logic: int = 0
    constant: bool = False
    disabled: bool = False
    comment: str = ""
    depth: int = DEFAULT_DEPTH
    role: int = 0
    exclude_recursion: bool = False
    prevent_recursion: bool = False
    delay_until_recursion: int = 0
    probability: float = 100
    use_probability: bool = True
    group: str = ""
    group_override: bool = False
    group_weight: float = DEFAULT_WEIGHT
    scan_depth: int | None = None
    case_sensitive: bool | None = None
    match_whole_words: bool | None = None
    use_group_scoring: bool | None = None
    delay: int | None = None
    sticky: int | None = None
    cooldown: int | None = None
    regex_only: bool = False  # a V3 `use_regex` entry: keys[0] is a regex, `constant` and secondary keys are ignored


class WorldInfo:
    """A SillyTavern World Info file, kept exactly as parsed."""

    def __init__(self, data: dict[str, Any], name: str = "", newline: bool = False) -> None:
        self.data = data
        self.name = name
        self.newline = newline  # the file ended with a newline (SillyTavern's shipped files do; it writes none)

    def to_json(self) -> dict[str, Any]:
        return self.data

    def dumps(self) -> str:
        """The file's text as SillyTavern writes it (`JSON.stringify(data, null, 4)`)."""
        return json.dumps(self.data, ensure_ascii=False, indent=4) + "\n" * self.newline

    def rules(self) -> list[Rule]:
        """Entries in file order (SillyTavern keeps the object's key order; integer keys first, ascending)."""
        entries = self.data["entries"]
        keys = sorted((k for k in entries if _array_index(k)), key=int) + [k for k in entries if not _array_index(k)]
        return [_from_world_entry(entries[k], k, self.name) for k in keys if isinstance(entries[k], dict)]


def _array_index(key: str) -> bool:
    return key.isdigit() and (key == "0" or not key.startswith("0")) and int(key) < 2**32 - 1


def is_world_info(obj: Any) -> bool:
    """A SillyTavern World Info object: `entries` is an object (a card book's `entries` is a list)."""
    return isinstance(obj, dict) and isinstance(obj.get("entries"), dict)


def read_world_info(raw: bytes | str, name: str = "") -> WorldInfo:
    """A World Info file from its bytes; CardError when it is not one."""
    if len(raw) > MAX_WORLD_BYTES:
        raise CardError(f"world info {name or ''}: larger than {MAX_WORLD_BYTES // (1024 * 1024)} MiB")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CardError(f"world info {name}: not JSON ({exc})".replace("  ", " ")) from None
    if not is_world_info(obj):
        raise CardError('world info: expected SillyTavern\'s {"entries": {"0": {...}, ...}} (entries by uid)')
    bad = [k for k, v in obj["entries"].items() if not isinstance(v, dict)]
    if bad:
        raise CardError(f"world info: entry {bad[0]!r} is not an object")
    end = raw[-1:] if isinstance(raw, str) else raw[-1:].decode("latin-1")
    return WorldInfo(obj, name, end == "\n")


def _num(value: Any, default: float) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _from_world_entry(e: dict[str, Any], key: str, world: str) -> Rule:
    delay_rec = e.get("delayUntilRecursion", 0)
    return Rule(
        uid=str(e.get("uid", key)),
        world=world,
        keys=_strings(e.get("key", [])),
        content=str(e.get("content") or ""),
        order=_num(e.get("order"), 100),
        position=int(_num(e.get("position"), 0)),
        secondary=_strings(e.get("keysecondary", [])),
        selective=e.get("selective", True) is not False,
        logic=int(_num(e.get("selectiveLogic"), 0)),
        constant=e.get("constant") is True,
        disabled=e.get("disable") is True,
        comment=str(e.get("comment") or ""),
        depth=int(_num(e.get("depth"), DEFAULT_DEPTH)),
        role=int(_num(e.get("role"), 0)),
        exclude_recursion=e.get("excludeRecursion") is True,
        prevent_recursion=e.get("preventRecursion") is True,
        delay_until_recursion=1 if delay_rec is True else int(_num(delay_rec, 0)),
        probability=_num(e.get("probability"), 100),
        use_probability=e.get("useProbability", True) is not False,
        group=str(e.get("group") or ""),
        group_override=e.get("groupOverride") is True,
        group_weight=_num(e.get("groupWeight"), DEFAULT_WEIGHT),
        scan_depth=_opt_int(e.get("scanDepth")),
        case_sensitive=_opt_bool(e.get("caseSensitive")),
        match_whole_words=_opt_bool(e.get("matchWholeWords")),
        use_group_scoring=_opt_bool(e.get("useGroupScoring")),
        delay=_opt_int(e.get("delay")),
        sticky=_opt_int(e.get("sticky")),
        cooldown=_opt_int(e.get("cooldown")),
    )


ST_ENTRY_MARKS = frozenset({"display_index", "selectiveLogic", "position", "probability", "useProbability"})


def book_rules(book: Lorebook, world: str = "") -> list[Rule]:
    """A card's `character_book` as SillyTavern's `convertCharacterBook` reads it, in book order."""
    return [_from_book_entry(entry, index, world) for index, entry in enumerate(book.entries)]


def _from_book_entry(entry: LoreEntry, index: int, world: str) -> Rule:
    ext = entry.extensions
    raw_position = ext.get("position")
    position = (
        int(raw_position)
        if isinstance(raw_position, int | float) and not isinstance(raw_position, bool)
        else (0 if entry.position == "before_char" else 1)
    )
    case = entry.case_sensitive if entry.case_sensitive is not None else _opt_bool(ext.get("case_sensitive"))
    delay_rec = ext.get("delay_until_recursion", False)
    return Rule(
        uid=str(entry.id if entry.id is not None else index),
        world=world,
        keys=tuple(entry.keys),
        content=entry.content,
        order=_num(entry.insertion_order, 100),
        position=position,
        secondary=tuple(entry.secondary_keys or ()),
        selective=entry.selective is True,
        logic=int(_num(ext.get("selectiveLogic"), 0)),
        constant=entry.constant is True,
        disabled=not entry.enabled,
        comment=entry.comment or "",
        depth=int(_num(ext.get("depth"), DEFAULT_DEPTH)),
        role=int(_num(ext.get("role"), 0)),
        exclude_recursion=ext.get("exclude_recursion") is True,
        prevent_recursion=ext.get("prevent_recursion") is True,
        delay_until_recursion=1 if delay_rec is True else int(_num(delay_rec, 0)),
        probability=_num(ext.get("probability"), 100),
        use_probability=ext.get("useProbability", True) is not False,
        group=str(ext.get("group") or ""),
        group_override=ext.get("group_override") is True,
        group_weight=_num(ext.get("group_weight"), DEFAULT_WEIGHT),
        scan_depth=_opt_int(ext.get("scan_depth")),
        case_sensitive=case,
        match_whole_words=_opt_bool(ext.get("match_whole_words")),
        use_group_scoring=_opt_bool(ext.get("use_group_scoring")),
        delay=_opt_int(ext.get("delay")),
        sticky=_opt_int(ext.get("sticky")),
        cooldown=_opt_int(ext.get("cooldown")),
        regex_only=entry.use_regex is True and not (ST_ENTRY_MARKS & ext.keys()),
    )


def to_world_info(book: Lorebook, name: str = "") -> WorldInfo:
    """A card's book as a World Info file, field for field as SillyTavern's "Import Card Lore" writes it."""
    entries: dict[str, Any] = {}
    for index, (entry, rule) in enumerate(zip(book.entries, book_rules(book, name), strict=True)):
        entries[rule.uid] = {
            "uid": entry.id if entry.id is not None else index,
            "key": list(rule.keys),
            "keysecondary": list(rule.secondary),
            "comment": rule.comment,
            "content": rule.content,
            "constant": rule.constant,
            "vectorized": entry.extensions.get("vectorized", False),
            "selective": rule.selective,
            "selectiveLogic": rule.logic,
            "addMemo": bool(rule.comment),
            "order": entry.insertion_order,
            "position": rule.position,
            "disable": rule.disabled,
            "excludeRecursion": rule.exclude_recursion,
            "preventRecursion": rule.prevent_recursion,
            "delayUntilRecursion": entry.extensions.get("delay_until_recursion", False),
            "probability": rule.probability,
            "useProbability": rule.use_probability,
            "depth": rule.depth,
            "group": rule.group,
            "groupOverride": rule.group_override,
            "groupWeight": rule.group_weight,
            "scanDepth": rule.scan_depth,
            "caseSensitive": rule.case_sensitive,
            "matchWholeWords": rule.match_whole_words,
            "useGroupScoring": rule.use_group_scoring,
            "automationId": entry.extensions.get("automation_id", ""),
            "role": rule.role,
            "sticky": rule.sticky,
            "cooldown": rule.cooldown,
            "delay": rule.delay,
            "displayIndex": entry.extensions.get("display_index", index),
        }
    return WorldInfo({"entries": entries, "originalData": book.to_json()}, name)


def to_character_book(world: WorldInfo) -> Lorebook:
    """A World Info file as a card's `character_book` (SillyTavern's server `convertWorldInfoToCharacterBook`)."""
    entries = []
    for rule, raw in zip(world.rules(), _raw_entries(world), strict=True):
        entries.append(
            {
                "id": raw.get("uid", rule.uid),
                "keys": list(rule.keys),
                "secondary_keys": list(rule.secondary),
                "comment": rule.comment,
                "content": rule.content,
                "constant": rule.constant,
                "selective": rule.selective,
                "insertion_order": raw.get("order", 100),
                "enabled": not rule.disabled,
                "position": "before_char" if rule.position == 0 else "after_char",
                "use_regex": True,
                "extensions": {
                    "position": rule.position,
                    "exclude_recursion": rule.exclude_recursion,
                    "display_index": raw.get("displayIndex"),
                    "probability": rule.probability,
                    "useProbability": rule.use_probability,
                    "depth": rule.depth,
                    "selectiveLogic": rule.logic,
                    "group": rule.group,
                    "group_override": rule.group_override,
                    "group_weight": rule.group_weight,
                    "prevent_recursion": rule.prevent_recursion,
                    "delay_until_recursion": raw.get("delayUntilRecursion", False),
                    "scan_depth": rule.scan_depth,
                    "match_whole_words": rule.match_whole_words,
                    "use_group_scoring": rule.use_group_scoring,
                    "case_sensitive": rule.case_sensitive,
                    "automation_id": raw.get("automationId", ""),
                    "role": rule.role,
                    "vectorized": raw.get("vectorized", False),
                    "sticky": rule.sticky,
                    "cooldown": rule.cooldown,
                    "delay": rule.delay,
                },
            }
        )
    return Lorebook.model_validate({"name": world.name, "entries": entries, "extensions": {}})


def _raw_entries(world: WorldInfo) -> list[dict[str, Any]]:
    entries = world.data["entries"]
    keys = sorted((k for k in entries if _array_index(k)), key=int) + [k for k in entries if not _array_index(k)]
    return [entries[k] for k in keys if isinstance(entries[k], dict)]


@dataclass(frozen=True)
class LoreFile:
    """A lore file as read: SillyTavern World Info, or a V2/V3 book kept in its own shape."""

    name: str
    world: WorldInfo | None
    book: Lorebook | None

    @property
    def rules(self) -> list[Rule]:
        return self.world.rules() if self.world is not None else book_rules(self.book or Lorebook(), self.name)


def parse_lore(raw: bytes | str, name: str) -> LoreFile:
    """World Info (entries by uid), a `lorebook_v3` file or a bare V2 book; CardError when it is none of these."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CardError(f"{name}: not JSON ({exc})") from None
    if is_world_info(obj):
        return LoreFile(name, read_world_info(raw, name), None)
    book = read_lorebook(obj)
    return LoreFile(book.name or name, None, book)


def read_lore_file(path: Any) -> LoreFile:
    """A lore file from disk (see `parse_lore`), named after the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_WORLD_BYTES:
        raise CardError(f"{path}: larger than {MAX_WORLD_BYTES // (1024 * 1024)} MiB")
    return parse_lore(raw, path.stem)
