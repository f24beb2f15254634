"""The prompt of a group chat's reply, built for the member who speaks (docs/formats.md §3.12) with the one turn
builder (`prompt/turn.py`), as SillyTavern's `Generate` does for the drafted member:

- swap (SillyTavern's generation mode 0): the speaker's card alone;
- join (1) and join with muted members (2): description, personality, scenario and example messages are every
  member's, each with its own `{{char}}` and wrapped in the join prefix and suffix (`<FIELDNAME>` is the field's
  name), as `getGroupCharacterCards` joins them; muted members are left out in join mode unless they speak;
- system prompt, post-history instructions and lore are always the speaker's; `{{char}}` is the speaker,
  `{{group}}` and `{{charIfNotGroup}}` the members' names joined with ", " (in lore entries too, before the scan);
- the group nudge (`[Write the next reply only as {{char}}.]`) goes after the history, before the post-history
  instructions (not for impersonation); every other member's `\\nName:` is a stop string.

With a SillyTavern preset the turn is what SillyTavern's text completion sends (tests/st_oracle): no nudge, the join
separator a newline only with the preset's wrap on, every member's depth prompt in the join modes, and names,
`{{group}}` and stop strings as `st_preset.render` has them for a `GroupText`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from moechat.cards import macros
from moechat.cards.card import Card
from moechat.cards.world_info import Rule
from moechat.prompt.assemble import Message, Persona
from moechat.prompt.st_preset import CardText, GroupText, StPreset
from moechat.prompt.turn import Lore, Mode, Turn, TurnPrompt, build_turn, card_text

GenerationMode = Literal["swap", "join", "join_muted"]
GENERATION_MODES: tuple[GenerationMode, ...] = ("swap", "join", "join_muted")  # SillyTavern's numbers 0, 1, 2
GROUP_NUDGE = "[Write the next reply only as {{char}}.]"
JOINED_FIELDS = (
    ("description", "Description"),
    ("personality", "Personality"),
    ("scenario", "Scenario"),
    ("mes_example", "Example Messages"),
)
_GROUP_MACRO = re.compile(r"\{\{(?:group|charIfNotGroup)\}\}|<GROUP>|<CHARIFNOTGROUP>", re.IGNORECASE)


@dataclass(frozen=True)
class Group:
    """What a group reply's prompt depends on besides the turn: the members' cards in order and the settings."""

    name: str
    members: tuple[Card, ...]
    muted: frozenset[int] = frozenset()  # indexes into members
    mode: GenerationMode = "swap"
    join_prefix: str = ""
    join_suffix: str = ""
    nudge: str = GROUP_NUDGE

    @property
    def names(self) -> str:
        """`{{group}}`: the members' names, in order."""
        return ", ".join(card.name for card in self.members if card.name)


def group_macros(text: str, group: Group) -> str:
    """`{{group}}` and `{{charIfNotGroup}}` (and their `<GROUP>` forms) replaced by the members' names."""
    return _GROUP_MACRO.sub(lambda _: group.names, text)


def speaker_card(
    group: Group,
    speaker: int,
    user: str,
    mode: Mode = "reply",
    seed: int | str = 0,
    *,
    preset: StPreset | None = None,
) -> Card:
    """The card the speaker's prompt is built from: its own, with joined fields in the join modes, the nudge
    before its post-history instructions, and the group macros replaced. With a SillyTavern `preset` as SillyTavern's
    text completion has it: no nudge, the joined parts separated by a newline only with the preset's wrap on."""
    card = group.members[speaker]
    fields = {name: getattr(card, name) for name, _ in JOINED_FIELDS}
    separator = "\n" if preset is None or preset.instruct.get("wrap") is True else ""
    if group.mode != "swap":
        fields = {name: _joined(group, speaker, user, name, label, seed, separator) for name, label in JOINED_FIELDS}
    nudge = group.nudge if mode != "impersonate" and preset is None else ""
    post = "\n".join(text for text in (nudge.strip(), card.post_history_instructions.strip()) if text)
    fields |= {"system_prompt": card.system_prompt, "post_history_instructions": post}
    return card.model_copy(update={name: group_macros(text, group) for name, text in fields.items()})


def _joined(group: Group, speaker: int, user: str, field: str, label: str, seed: int | str, separator: str) -> str:
    """One field over the members, as `getGroupCharacterCards` joins it (`separator` between the prefix, the text
    and the suffix; members' parts one a line)."""
    rng = random.Random(f"join|{seed}|{field}")

    def sub(text: str, name: str) -> str:
        return macros.substitute(text.replace("<FIELDNAME>", label).strip(), char=name, user=user, seed=seed, rng=rng)

    parts = []
    for i, card in enumerate(group.members):
        if i in group.muted and i != speaker and group.mode != "join_muted":
            continue
        value = getattr(card, field).strip()
        if not value:
            continue
        prefix, suffix = sub(group.join_prefix, card.name), sub(group.join_suffix, card.name)
        parts.append(
            f"{prefix + separator if prefix else ''}{sub(value, card.name)}{separator + suffix if suffix else ''}"
        )
    return "\n".join(part for part in parts if part)


def build_group_turn(
    group: Group,
    speaker: int,
    history: Sequence[Message],
    turn: Turn,
    lore: Lore | None = None,
    *,
    names: Sequence[str] | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> TurnPrompt:
    """The exact prompt for member `speaker`'s reply. `names` are the messages' speakers as stored (a reply's: the
    member who said it; default: the messages' own `name`); `lore` is the speaker's (SillyTavern scans only the drafted
    member's books)."""
    preset = turn.format if isinstance(turn.format, StPreset) else None
    card = speaker_card(group, speaker, turn.persona.name, turn.mode, turn.seed, preset=preset)
    system = turn.system_prompt
    turn = replace(
        turn,
        persona=Persona(turn.persona.name, group_macros(turn.persona.description, group)),
        note=replace(turn.note, text=group_macros(turn.note.text, group)) if turn.note.text else turn.note,
        system_prompt=group_macros(system, group) if system is not None else None,
    )
    lore = _group_lore(lore or Lore(), group)
    if names is None:  # default: the names the messages carry
        names = [m.name or (turn.persona.name if m.role == "user" else card.name) for m in history]
    if preset is not None:  # SillyTavern's own group handling: names, {{group}}, depth prompts, stop strings
        st_group = GroupText(tuple(c.name for c in group.members), _depth_prompts(group, speaker))
        return build_turn(card, history, turn, lore, names=names, count_tokens=count_tokens, group=st_group)
    out = build_turn(card, history, turn, lore, names=names, count_tokens=count_tokens, member_names=True)
    others = tuple(
        f"\n{c.name}:" for i, c in enumerate(group.members) if i != speaker and c.name and c.name != card.name
    )
    return replace(out, prompt=replace(out.prompt, stops=tuple(dict.fromkeys((*out.prompt.stops, *others)))))


def _depth_prompts(group: Group, speaker: int) -> tuple[CardText, ...] | None:
    """The join modes' depth prompts, as `getGroupDepthPrompts` collects them: every member's but a muted one's
    (unless it speaks, in either join mode); None in swap mode (the speaker's own)."""
    if group.mode == "swap":
        return None
    return tuple(card_text(c) for i, c in enumerate(group.members) if i not in group.muted or i == speaker)


def _group_lore(lore: Lore, group: Group) -> Lore:
    """The lore with `{{group}}` filled in its entries' keys and content before the scan (SillyTavern substitutes an
    entry's macros when it fires, so recursion reads the members' names, and every key's when it matches)."""

    def keys(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(group_macros(key, group) for key in values)

    def filled(rules: Sequence[Rule]) -> tuple[Rule, ...]:
        return tuple(
            replace(r, content=group_macros(r.content, group), keys=keys(r.keys), secondary=keys(r.secondary))
            for r in rules
        )

    return replace(lore, character=filled(lore.character), chat=filled(lore.chat), global_=filled(lore.global_))
