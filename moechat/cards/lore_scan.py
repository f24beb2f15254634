"""Which lore entries fire for a chat, as SillyTavern 1.12's `checkWorldInfo` decides (docs/formats.md §2.6).

`scan(rules, messages, count_tokens, settings)` scans the newest messages (and, recursively, the content of what
fired) for each entry's keys, applies the per-entry overrides, inclusion groups, probability, `delay`, the
recursion flags and the token budget, and returns what fired (in prompt order), on which key and at which step.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from moechat.cards.lorebook_decorators import parse_decorators
from moechat.cards.lorebook_keys import SLASH_KEY, compile_key, regex_matches, slash_regex
from moechat.cards.macros import scan_text
from moechat.cards.world_info import DEFAULT_WEIGHT, POSITIONS, Rule

MATCHER = "\x01"
ROLES = ("system", "user", "assistant")
_DECORATOR_POSITIONS = {"before_desc": "before_char", "after_desc": "after_char", "personality": "personality"}
_DECORATOR_POSITIONS["scenario"] = "scenario"


@dataclass(frozen=True)
class LoreSettings:
    """SillyTavern's World Info settings; the defaults are those it ships (default/content/settings.json)."""

    depth: int = 2
    budget_percent: float = 25
    budget_cap: int = 0
    include_names: bool = True
    recursive: bool = True
    case_sensitive: bool = False
    match_whole_words: bool = True
    max_recursion_steps: int = 0  # 0: until nothing new fires
    regex_timeout: float = 0.25

    def budget(self, max_context: int) -> int:
        """Tokens for lore: a share of the context left after the reply (ST rounds, minimum 1), capped."""
        value = round(self.budget_percent * max_context / 100) or 1
        return self.budget_cap if 0 < self.budget_cap < value else value


@dataclass(frozen=True)
class Fired:
    """An entry that fired. `key` is the primary key that matched (None: constant or `@@activate`); `step` is the
    scan that found it (1: the chat, 2 and on: recursion into fired content); `position` is one of
    `world_info.POSITIONS` or `personality`/`scenario` (V3 decorators); `depth`/`role` are set for `at_depth`."""

    index: int
    uid: str
    world: str
    comment: str
    key: str | None
    step: int
    order: float
    position: str
    depth: int | None
    role: str | None
    content: str
    tokens: int

    @property
    def why(self) -> str:
        how = f"key {self.key!r}" if self.key is not None else "constant"
        return how if self.step == 1 else f"{how}, recursion step {self.step - 1}"


@dataclass(frozen=True)
class Selection:
    """`fired` in SillyTavern's prompt order (ascending `order`); `dropped`: fired but over the budget."""

    fired: list[Fired]
    dropped: list[Fired]
    budget: int | None

    def at(self, position: str) -> list[Fired]:
        return [hit for hit in self.fired if hit.position == position]

    def text(self, position: str) -> str:
        return "\n".join(hit.content for hit in self.at(position) if hit.content)


@dataclass
class _Entry:
    index: int
    rule: Rule
    content: str
    activate: bool
    dont: bool
    key: str | None = None
    step: int = 0
    scan_view: str = ""  # what recursion reads: hidden keys kept, comments removed (moechat's V3 macros)
    place: tuple[str, int | None, str | None] = ("before_char", None, None)


@dataclass
class _Buffer:
    messages: list[str]  # newest first
    settings: LoreSettings
    recurse: list[str] = field(default_factory=list)

    def text(self, rule: Rule) -> str:
        depth = rule.scan_depth if rule.scan_depth is not None else self.settings.depth
        if depth <= 0:
            return ""
        out = MATCHER + ("\n" + MATCHER).join(self.messages[:depth])
        return out + "".join("\n" + MATCHER + text for text in self.recurse)

    def matches(self, haystack: str, key: str, rule: Rule) -> bool:
        if SLASH_KEY.match(key):
            return regex_matches(slash_regex(key, True), haystack, self.settings.regex_timeout)
        sensitive = rule.case_sensitive if rule.case_sensitive is not None else self.settings.case_sensitive
        if not sensitive:
            haystack, key = haystack.lower(), key.lower()
        whole = rule.match_whole_words if rule.match_whole_words is not None else self.settings.match_whole_words
        if whole and len(key.split()) <= 1:
            return re.search(rf"(?:^|\W)({re.escape(key)})(?:\Z|\W)", haystack, re.ASCII) is not None
        return key in haystack


def scan(
    rules: Sequence[Rule],
    messages: Sequence[str],
    count_tokens: Callable[[str], int],
    settings: LoreSettings = LoreSettings(),
    *,
    budget: int | None = None,
    substitute: Callable[[str], str] = lambda text: text,
    rng: random.Random | None = None,
) -> Selection:
    """The entries of `rules` (already in SillyTavern's order: see `order_rules`) that fire for `messages` (oldest
    first, as the scan sees them: `Name: text` when `settings.include_names`). `budget` in tokens (None: no cap);
    `substitute` fills macros in keys and content; `rng` rolls probability and inclusion groups."""
    draw = rng or random.Random()
    entries = [_entry(i, rule) for i, rule in enumerate(rules)]
    buffer = _Buffer([m.strip() for m in reversed(messages)], settings)
    delay_levels = sorted({e.rule.delay_until_recursion for e in entries if e.rule.delay_until_recursion})
    level = delay_levels.pop(0) if delay_levels else 0
    activated: list[_Entry] = []
    failed: set[int] = set()
    dropped: list[_Entry] = []
    all_text = ""
    state, step = "initial", 0
    while state:
        if settings.max_recursion_steps and settings.max_recursion_steps <= step:
            break
        step += 1
        done = {e.index for e in activated} | failed
        now = [e for e in entries if e.index not in done and _fires(e, buffer, state, level, len(messages), substitute)]
        for e in now:
            e.step = step
        now = _groups(now, activated, buffer, draw)
        new_content, overflowed, accepted = "", False, []
        base = count_tokens(all_text) if all_text else 0
        for e in now:
            if e.rule.use_probability and e.rule.probability != 100 and draw.random() * 100 > e.rule.probability:
                failed.add(e.index)
                continue
            e.scan_view, e.content = substitute(scan_text(e.content)), substitute(e.content)
            new_content += e.content + "\n"
            if budget is not None and base + count_tokens(new_content) >= budget:
                overflowed = True
                dropped.extend(x for x in now[now.index(e) :] if x.index not in failed)
                break
            accepted.append(e)
        activated += accepted
        for_recursion = [e for e in now if e.index not in failed and not e.rule.prevent_recursion]
        state = "recursion" if settings.recursive and not overflowed and for_recursion else ""
        if not state and delay_levels:
            state, level = "recursion", delay_levels.pop(0)
        if state:
            text = "\n".join(e.scan_view or e.content for e in for_recursion)
            buffer.recurse.append(text)
            all_text = text + "\n" + all_text
    return Selection(_in_prompt_order(activated, count_tokens), _in_prompt_order(dropped, count_tokens), budget)


def _entry(index: int, rule: Rule) -> _Entry:
    dec = parse_decorators(rule.content)
    entry = _Entry(index, rule, dec.content, "activate" in dec.values, "dont_activate" in dec.values)
    entry.place = _place(rule, dec.values)
    if "scan_depth" in dec.values and rule.scan_depth is None:
        depth = dec.values["scan_depth"].strip()
        entry.rule = replace(rule, scan_depth=int(depth)) if depth.isdigit() else rule
    return entry


def _place(rule: Rule, values: dict[str, str]) -> tuple[str, int | None, str | None]:
    role = values.get("role") or (ROLES[rule.role] if 0 <= rule.role < len(ROLES) else "system")
    if "depth" in values:
        depth = values["depth"].strip()
        return "at_depth", int(depth) if depth.isdigit() else rule.depth, role
    if values.get("position") in _DECORATOR_POSITIONS:
        return _DECORATOR_POSITIONS[values["position"]], None, None
    position = POSITIONS[rule.position] if 0 <= rule.position < len(POSITIONS) else "unknown"
    return (position, rule.depth, role) if position == "at_depth" else (position, None, None)


def _fires(
    e: _Entry, buffer: _Buffer, state: str, level: int, chat_length: int, substitute: Callable[[str], str]
) -> bool:
    rule = e.rule
    if rule.disabled or (rule.delay and chat_length < rule.delay):
        return False
    if rule.delay_until_recursion and (state != "recursion" or rule.delay_until_recursion > level):
        return False
    if state == "recursion" and buffer.settings.recursive and rule.exclude_recursion:
        return False
    if e.activate:
        return True
    if e.dont:
        return False
    if rule.constant and not rule.regex_only:
        return True
    keys = rule.keys[:1] if rule.regex_only else rule.keys
    if not keys:
        return False
    haystack = buffer.text(rule)
    if rule.regex_only:
        found = keys[0] if _regex_key(keys[0], haystack, rule, buffer) else None
    else:
        found = next((k for k in keys if (s := substitute(k).strip()) and buffer.matches(haystack, s, rule)), None)
    if found is None:
        return False
    e.key = found
    if rule.regex_only or not (rule.selective and rule.secondary):
        return True
    hits = [bool(s := substitute(k).strip()) and buffer.matches(haystack, s, rule) for k in rule.secondary]
    return {0: any(hits), 1: not all(hits), 2: not any(hits), 3: all(hits)}.get(rule.logic, False)


def _regex_key(pattern: str, haystack: str, rule: Rule, buffer: _Buffer) -> bool:
    sensitive = rule.case_sensitive if rule.case_sensitive is not None else buffer.settings.case_sensitive
    text = haystack.replace(MATCHER, "")
    return regex_matches(compile_key(pattern, sensitive), text, buffer.settings.regex_timeout)


def _score(e: _Entry, buffer: _Buffer) -> int:
    haystack = buffer.text(e.rule)
    primary = sum(buffer.matches(haystack, k, e.rule) for k in e.rule.keys)
    secondary = sum(buffer.matches(haystack, k, e.rule) for k in e.rule.secondary)
    if not e.rule.keys:
        return 0
    if e.rule.secondary and e.rule.logic == 0:
        return primary + secondary
    if e.rule.secondary and e.rule.logic == 3:
        return primary + secondary if secondary == len(e.rule.secondary) else primary
    return primary


def _groups(now: list[_Entry], activated: list[_Entry], buffer: _Buffer, draw: random.Random) -> list[_Entry]:
    """Inclusion groups: one entry per group, by priority, else by score when asked, else by weighted chance."""
    groups: dict[str, list[_Entry]] = {}
    for e in now:
        for name in (g for g in re.split(r",\s*", e.rule.group) if g):
            groups.setdefault(name, []).append(e)
    out = list(now)
    for name, group in groups.items():
        if any(e.rule.use_group_scoring for e in group):
            scores = [_score(e, buffer) for e in group]
            best = max(scores)
            losers = [e for e, s in zip(group, scores, strict=True) if e.rule.use_group_scoring and s < best]
            out = [e for e in out if e not in losers]
            group = [e for e in group if e not in losers]
        if any(a.rule.group == name for a in activated):
            out = [e for e in out if e not in group]
            continue
        if len(group) <= 1:
            continue
        prios = sorted((e for e in group if e.rule.group_override), key=lambda e: -e.rule.order)
        winner = prios[0] if prios else _weighted(group, draw)
        if winner is not None:
            out = [e for e in out if e not in group or e is winner]
    return out


def _weighted(group: list[_Entry], draw: random.Random) -> _Entry | None:
    total = sum(e.rule.group_weight if e.rule.group_weight is not None else DEFAULT_WEIGHT for e in group)
    roll, seen = draw.random() * total, 0.0
    for e in group:
        seen += e.rule.group_weight
        if roll <= seen:
            return e
    return None


def _in_prompt_order(entries: list[_Entry], count_tokens: Callable[[str], int]) -> list[Fired]:
    """SillyTavern sorts by order (highest first, stably) and then prepends each: ascending, ties reversed."""
    ranked = sorted(entries, key=lambda e: -e.rule.order)
    out = []
    for e in reversed(ranked):
        if not e.content:
            continue
        position, depth, role = e.place
        tokens = count_tokens(e.content)
        r = e.rule
        out.append(
            Fired(e.index, r.uid, r.world, r.comment, e.key, e.step, r.order, position, depth, role, e.content, tokens)
        )
    return out


def order_rules(character: Sequence[Rule], chat: Sequence[Rule] = (), global_: Sequence[Rule] = ()) -> list[Rule]:
    """SillyTavern's scan order: chat lore first, then the character's, then global ("character first"), each sorted
    by `order`, highest first (stable)."""

    def by_order(rules: Sequence[Rule]) -> list[Rule]:
        return sorted(rules, key=lambda r: -r.order)

    return [*by_order(chat), *by_order(character), *by_order(global_)]


def scan_messages(messages: Sequence[tuple[str, str]], settings: LoreSettings) -> list[str]:
    """What the scan reads of `(name, text)` messages: `Name: text` when names are included (ST's default)."""
    return [f"{name}: {text}" if settings.include_names else text for name, text in messages]
