"""Who replies in a group chat, in what order: SillyTavern's reply-order strategies (`group-chats.js`:
`activateNaturalOrder`, `activateListOrder`, `activatePooledOrder`, the manual strategy, `activateSwipe`),
with muted members and self-responses as it has them (docs/formats.md §3.12). Randomness comes from the
`random.Random` passed in, so a seeded turn is repeatable. Pure: members are keys (avatar file names or ids).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

Strategy = Literal["natural", "list", "manual", "pooled"]
STRATEGIES: tuple[Strategy, ...] = ("natural", "list", "manual", "pooled")  # SillyTavern's numbers 0, 1, 2, 3
TALKATIVENESS_DEFAULT = 0.5
T = TypeVar("T")


@dataclass(frozen=True)
class Member:
    """A group member as the order rules see it."""

    key: str  # what identifies it (SillyTavern: the avatar file name)
    name: str
    talkativeness: float = TALKATIVENESS_DEFAULT
    muted: bool = False


@dataclass(frozen=True)
class Said:
    """A chat message as the order rules see it: who said it (a member key; None for the user or unknown)."""

    text: str
    is_user: bool = False
    speaker: str | None = None
    name: str = ""
    hidden: bool = False  # SillyTavern's is_system


def words(text: str) -> list[str]:
    """SillyTavern's `extractAllWords`: every `\\b\\w+\\b` (ASCII word characters, as JavaScript's), lowercased."""
    return [w.lower() for w in re.findall(r"\b\w+\b", text, re.ASCII)]


def talkativeness(extensions: object) -> float:
    """A card's `extensions.talkativeness` as SillyTavern reads it (a number or numeric text), else 0.5."""
    value = extensions.get("talkativeness") if isinstance(extensions, dict) else None
    try:
        number = float(value) if isinstance(value, int | float | str) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    return TALKATIVENESS_DEFAULT if number is None or number != number else number


def next_speakers(
    strategy: Strategy,
    members: Sequence[Member],
    chat: Sequence[Said],
    *,
    user_input: str = "",
    allow_self_responses: bool = False,
    rng: random.Random,
) -> list[str]:
    """The members who reply, in order, after the user sent `user_input` ("" when no one typed, e.g. a
    trigger or auto mode: then the last message is the activation text). Muted members never reply here."""
    enabled = list(dict.fromkeys(m.key for m in members if not m.muted))
    by_key = {m.key: m for m in members}
    if strategy == "list":
        return enabled
    if strategy == "manual":  # a typed message gets no reply; otherwise one enabled member at random
        return [] if user_input else _shuffled(enabled, rng)[:1]
    last = chat[-1] if chat else None
    if strategy == "pooled":
        return _pooled(enabled, chat, last, bool(user_input), rng)
    visible_last = last if last is not None and not last.hidden else None
    text = user_input or (visible_last.text if visible_last else "")
    return _natural([by_key[k] for k in enabled], text, last, allow_self_responses, bool(user_input), rng)


def _natural(
    members: list[Member], text: str, last: Said | None, allow_self: bool, is_user_input: bool, rng: random.Random
) -> list[str]:
    banned = None if allow_self or is_user_input or last is None or last.is_user else last.name
    activated: list[str] = []
    for word in words(text):  # mentions first, in the order the words come
        for member in members:
            if member.name != banned and word in words(member.name):
                activated.append(member.key)
                break
    chatty = []
    for member in _shuffled(members, rng):
        if member.name == banned:
            continue
        if member.talkativeness >= rng.random():
            activated.append(member.key)
        if member.talkativeness > 0:
            chatty.append(member.key)
    pool = chatty or [m.key for m in members]
    retries = 0
    while not activated and (retries := retries + 1) <= len(pool):
        activated.append(pool[int(rng.random() * len(pool))])
    return list(dict.fromkeys(activated))


def _pooled(
    enabled: list[str], chat: Sequence[Said], last: Said | None, is_user_input: bool, rng: random.Random
) -> list[str]:
    if not enabled:
        return []
    spoken: list[str] = []
    for message in reversed(chat):
        if message.is_user or is_user_input:
            break
        if not message.hidden and message.speaker is not None:
            spoken.append(message.speaker)
    not_yet = [k for k in enabled if k not in spoken]
    if not_yet:
        return [not_yet[int(rng.random() * len(not_yet))]]
    last_key = last.speaker if len(enabled) > 1 and last is not None and not last.is_user else None
    pool = [k for k in enabled if k != last_key] if last_key else enabled
    return [pool[int(rng.random() * len(pool))]]


def same_speaker(members: Sequence[Member], chat: Sequence[Said], rng: random.Random) -> str | None:
    """SillyTavern's `activateSwipe`: who swipes, regenerates or continues the last reply (its speaker; after a
    user message, the last member who spoke, else one at random). Muted members too; None when it left the group."""
    keys = [m.key for m in members]
    if not chat:
        return None
    last = chat[-1]
    if last.is_user or last.hidden:
        earlier = next((m.speaker for m in reversed(chat) if not m.is_user and not m.hidden and m.speaker), None)
        if earlier is not None:
            return earlier if earlier in keys else None
        return _shuffled(keys, rng)[0] if keys else None
    if last.speaker is not None:
        return last.speaker if last.speaker in keys else None
    return next((m.key for m in members if m.name == last.name), None)


def _shuffled(items: Sequence[T], rng: random.Random) -> list[T]:
    out = list(items)
    rng.shuffle(out)
    return out
