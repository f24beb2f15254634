"""Lorebooks (V2 `character_book`, V3 `lorebook_v3`): a lossless model and a pure `select()`.

`select(book, messages, count_tokens)` answers which entries fire for a chat, on which key, in which
order and position, and which were dropped for the token budget (docs/formats.md §2.6, ST's behaviour).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from moechat.cards.fields import dump_set_fields
from moechat.cards.lorebook_decorators import Decorators, parse_decorators
from moechat.cards.lorebook_keys import SLASH_KEY, compile_key, key_matches, regex_matches, slash_regex
from moechat.cards.macros import scan_text
from moechat.errors import CardError

ST_POSITIONS = ("before_char", "after_char", "an_top", "an_bottom", "at_depth", "examples_top", "examples_bottom")
ST_ENTRY_MARKS = frozenset({"display_index", "selectiveLogic", "position", "probability", "useProbability"})
DEFAULT_SCAN_DEPTH = 2
DEFAULT_DEPTH = 4


class LoreEntry(BaseModel):
    """One lorebook entry; unknown fields are kept (`extra="allow"`) and written back."""

    model_config = ConfigDict(extra="allow")
    keys: list[str] = []
    content: str = ""
    extensions: dict[str, Any] = {}
    enabled: bool = True
    insertion_order: int | float = 0
    case_sensitive: bool | None = None
    name: str | None = None
    priority: int | float | None = None
    id: int | str | None = None
    comment: str | None = None
    selective: bool | None = None
    secondary_keys: list[str] | None = None
    constant: bool | None = None
    position: str | int | None = None
    use_regex: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            required = ("keys", "content", "extensions", "enabled", "insertion_order")
            return {k: v for k, v in value.items() if not (v is None and k in required)}
        return value

    def to_json(self) -> dict[str, Any]:
        """The entry as V2/V3 JSON: required keys always, optional ones when the source had them."""
        return dump_set_fields(self, ("keys", "content", "extensions", "enabled", "insertion_order"))


class Lorebook(BaseModel):
    """A V2 `character_book` / V3 lorebook; unknown fields are kept."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    description: str | None = None
    scan_depth: int | float | None = None
    token_budget: int | float | None = None
    recursive_scanning: bool | None = None
    extensions: dict[str, Any] = {}
    entries: list[LoreEntry] = []

    def to_json(self) -> dict[str, Any]:
        """The book as `character_book` JSON (entries via `LoreEntry.to_json`)."""
        out = dump_set_fields(self, ("extensions", "entries"))
        out["entries"] = [entry.to_json() for entry in self.entries]
        return out

    def to_lorebook_v3(self) -> dict[str, Any]:
        """Standalone V3 lorebook file: `{"spec": "lorebook_v3", "data": ...}`."""
        return {"spec": "lorebook_v3", "data": self.to_json()}


def read_lorebook(obj: Any) -> Lorebook:
    """A lorebook from parsed JSON: a `lorebook_v3` file, a bare book, or a card's `character_book`."""
    if isinstance(obj, dict) and obj.get("spec") == "lorebook_v3":
        obj = obj.get("data")
    if not isinstance(obj, dict):
        raise CardError("lorebook: expected a JSON object with an 'entries' list")
    try:
        return Lorebook.model_validate(obj)
    except ValidationError as exc:
        raise CardError(f"lorebook: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"


@dataclass(frozen=True)
class Fired:
    """An entry chosen by `select`.

    `key` is the key that fired (None for constant / `@@activate` entries), `position` is one of
    `before_char`, `after_char`, `personality`, `scenario`, `an_top`, `an_bottom`, `at_depth`,
    `examples_top`, `examples_bottom`; `depth`/`role` are set for `at_depth`. `content` has the
    decorators stripped (macros are left for the prompt builder to substitute).
    """

    index: int
    entry: LoreEntry
    key: str | None
    order: int | float
    position: str
    depth: int | None
    role: str | None
    content: str
    tokens: int
    recursive: bool = False


@dataclass(frozen=True)
class Selection:
    """`fired`: entries to insert, in insertion order (ascending `insertion_order`);
    `dropped`: entries that fired but did not fit the token budget; `budget`: the budget applied."""

    fired: list[Fired]
    dropped: list[Fired]
    budget: int | float | None

    def at(self, position: str) -> list[Fired]:
        """The fired entries for one position, in insertion order."""
        return [hit for hit in self.fired if hit.position == position]


@dataclass(frozen=True)
class _Rules:
    scan_depth: int
    case_sensitive: bool
    timeout: float


def select(
    book: Lorebook,
    messages: list[str],
    count_tokens: Callable[[str], int],
    *,
    scan_depth: int | None = None,
    budget: int | None = None,
    case_sensitive: bool = False,
    recursive: bool | None = None,
    regex_timeout: float = 0.25,
) -> Selection:
    """Which entries of `book` fire for `messages` (oldest first), within the token budget.

    The book's own `scan_depth`/`recursive_scanning` win over the arguments (app defaults: 2 messages,
    no recursion); the budget is the smaller of the book's `token_budget` and `budget` (None: no cap).
    Entries are accepted by priority (falling back to `insertion_order`), highest first, until one does
    not fit: it and every lower one are `dropped` (ST). `fired` is in ascending `insertion_order`.
    """
    depth = _number(book.scan_depth, scan_depth if scan_depth is not None else DEFAULT_SCAN_DEPTH)
    rules = _Rules(int(depth), case_sensitive, regex_timeout)
    recurse = book.recursive_scanning if book.recursive_scanning is not None else bool(recursive)
    found = _activate(book, messages, rules, recurse)
    hits = [_fired(i, entry, key, dec, count_tokens, again) for i, entry, key, dec, again in found]
    hits = [hit for hit in hits if hit.content.strip()]
    caps = [cap for cap in (book.token_budget, budget) if cap is not None]
    limit = min(caps) if caps else None
    fired, dropped = _apply_budget(hits, limit)
    return Selection(sorted(fired, key=lambda h: (h.order, h.index)), dropped, limit)


def _number(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


_Found = tuple[int, LoreEntry, str | None, Decorators, bool]


def _activate(book: Lorebook, messages: list[str], rules: _Rules, recurse: bool) -> list[_Found]:
    found: dict[int, _Found] = {}
    for index, entry in enumerate(book.entries):
        if not entry.enabled:
            continue
        dec = parse_decorators(entry.content)
        own_depth = _number(dec.values.get("scan_depth", "").strip() or None, rules.scan_depth)
        own_depth = _number(entry.extensions.get("scan_depth"), own_depth)
        text = "\n".join(messages[-own_depth:]) if own_depth > 0 else ""
        fires, key = _decide(entry, dec, text, rules, allow_always=True)
        if fires:
            found[index] = (index, entry, key, dec, False)
    new = list(found.values())
    while recurse and new:
        text = "\n".join(scan_text(f[3].content) for f in new if not f[1].extensions.get("prevent_recursion"))
        new = []
        for index, entry in enumerate(book.entries):
            if index in found or not entry.enabled or entry.extensions.get("exclude_recursion"):
                continue
            dec = parse_decorators(entry.content)
            fires, key = _decide(entry, dec, text, rules, allow_always=False)
            if fires:
                found[index] = (index, entry, key, dec, True)
                new.append(found[index])
    return list(found.values())


def _decide(
    entry: LoreEntry, dec: Decorators, text: str, rules: _Rules, *, allow_always: bool
) -> tuple[bool, str | None]:
    if "dont_activate" in dec.values:
        return False, None
    regex_mode = entry.use_regex is True and not (ST_ENTRY_MARKS & entry.extensions.keys())
    if allow_always and ("activate" in dec.values or (entry.constant and not regex_mode)):
        return True, None
    sensitive = _case_sensitive(entry, rules.case_sensitive)
    keys = entry.keys[:1] if regex_mode else entry.keys
    key = next((k for k in keys if _hit(k, text, entry, regex_mode, sensitive, rules)), None)
    if key is None:
        return False, None
    if regex_mode or not entry.selective or not entry.secondary_keys:
        return True, key
    hits = [_hit(k, text, entry, False, sensitive, rules) for k in entry.secondary_keys]
    logic = entry.extensions.get("selectiveLogic", 0)
    passes = {1: not all(hits), 2: not any(hits), 3: all(hits)}.get(logic, any(hits))
    return passes, key if passes else None


def _case_sensitive(entry: LoreEntry, default: bool) -> bool:
    if entry.case_sensitive is not None:
        return entry.case_sensitive
    mirror = entry.extensions.get("case_sensitive")
    return mirror if isinstance(mirror, bool) else default


def _hit(key: str, text: str, entry: LoreEntry, regex_mode: bool, sensitive: bool, rules: _Rules) -> bool:
    if not text:
        return False
    if regex_mode:
        return regex_matches(compile_key(key, sensitive), text, rules.timeout)
    if SLASH_KEY.match(key):
        return regex_matches(slash_regex(key, sensitive), text, rules.timeout)
    whole = entry.extensions.get("match_whole_words") is True
    return key_matches(key, text, case_sensitive=sensitive, whole_words=whole)


def _fired(
    index: int, entry: LoreEntry, key: str | None, dec: Decorators, count: Callable[[str], int], again: bool
) -> Fired:
    position, depth, role = _place(entry, dec)
    tokens = count(dec.content) if dec.content.strip() else 0
    order = entry.insertion_order
    return Fired(index, entry, key, order, position, depth, role, dec.content, tokens, again)


_DECORATOR_POSITIONS = {
    "before_desc": "before_char",
    "after_desc": "after_char",
    "personality": "personality",
    "scenario": "scenario",
}
_ST_ROLES = {0: "system", 1: "user", 2: "assistant"}


def _place(entry: LoreEntry, dec: Decorators) -> tuple[str, int | None, str | None]:
    ext = entry.extensions
    role = dec.values.get("role") or _ST_ROLES.get(ext.get("role"))  # type: ignore[arg-type]
    if "depth" in dec.values:
        return "at_depth", max(0, _number(_to_int(dec.values["depth"]), DEFAULT_DEPTH)), role or "system"
    if dec.values.get("position") in _DECORATOR_POSITIONS:
        return _DECORATOR_POSITIONS[dec.values["position"]], None, None
    raw = ext.get("position", entry.position)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(ST_POSITIONS):
        position = ST_POSITIONS[raw]
    else:
        position = entry.position if entry.position in ("before_char", "after_char") else "before_char"
    if position != "at_depth":
        return position, None, None
    return position, max(0, _number(ext.get("depth"), DEFAULT_DEPTH)), role or "system"


def _to_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _apply_budget(hits: list[Fired], limit: int | float | None) -> tuple[list[Fired], list[Fired]]:
    def rank(hit: Fired) -> tuple[float, float, int]:
        priority = hit.entry.priority if hit.entry.priority is not None else hit.order
        return (-priority, -hit.order, hit.index)

    accepted: list[Fired] = []
    used = 0
    ranked = sorted(hits, key=rank)
    for n, hit in enumerate(ranked):
        if limit is not None and used + hit.tokens > limit:
            return accepted, ranked[n:]
        used += hit.tokens
        accepted.append(hit)
    return accepted, []
