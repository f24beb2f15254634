"""The one function that builds the prompt of a chat turn, for the app (`moechat.chat`) and the `prompt` CLI alike
(docs/formats.md §3.6): lore scanned with SillyTavern's settings and budget, then the prompt in a built-in format
(`assemble.build`) or with SillyTavern presets (`st_preset.render`). Line endings are normalised (no `\\r`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from moechat.cards import macros
from moechat.cards.card import Card
from moechat.cards.lore_scan import LoreSettings, Selection, order_rules, scan, scan_messages
from moechat.cards.world_info import Rule, book_rules
from moechat.prompt.assemble import AuthorsNote, Budget, Message, Persona, Prompt, build
from moechat.prompt.budget import Report
from moechat.prompt.formats import Format
from moechat.prompt.st_preset import CardText, ChatLine, GroupText, Note, StPreset, render, substitute_params

Mode = Literal["reply", "continue", "impersonate"]


def estimate_tokens(text: str) -> int:
    """SillyTavern's estimate when no tokenizer is known: 3.35 characters per token."""
    return math.ceil(len(text) / 3.35)


@dataclass(frozen=True)
class Lore:
    """The books that apply to a chat: chat, character and global World Info (rules in book order)."""

    character: Sequence[Rule] = ()
    chat: Sequence[Rule] = ()
    global_: Sequence[Rule] = ()
    settings: LoreSettings = field(default_factory=LoreSettings)

    def ordered(self) -> list[Rule]:
        return order_rules(self.character, self.chat, self.global_)


@dataclass(frozen=True)
class Turn:
    """Everything a turn's prompt depends on besides the card and the history."""

    format: Format | StPreset
    persona: Persona = field(default_factory=Persona)
    note: AuthorsNote = field(default_factory=AuthorsNote)
    system_prompt: str | None = None
    context: int = 4096
    reserve: int = 512
    margin: int = 64
    mode: Mode = "reply"
    seed: int | str = 0


@dataclass(frozen=True)
class TurnPrompt:
    """The prompt with the lore that fired (and why)."""

    prompt: Prompt
    lore: Selection


def card_lore(card: Card, extra: Sequence[Rule] = ()) -> list[Rule]:
    """The character's lore: its embedded book (as SillyTavern imports it) plus attached World Info."""
    own = (
        book_rules(card.character_book, card.character_book.name or f"{card.name}'s Lorebook")
        if card.character_book
        else []
    )
    return [*own, *extra]


def clean(text: str) -> str:
    """Prompt text without carriage returns (SillyTavern strips every `\\r`)."""
    return text.replace("\r", "")


def build_turn(
    card: Card,
    history: Sequence[Message],
    turn: Turn,
    lore: Lore = Lore(),
    *,
    names: Sequence[str] | None = None,
    count_tokens: Callable[[str], int] | None = None,
    member_names: bool = False,
    group: GroupText | None = None,
) -> TurnPrompt:
    """The exact prompt for the next turn. `history` is oldest first (hidden messages left out); `names` are the
    speakers' names as stored (default: the persona's for the user, the card's for the character). The built-in
    formats name the character's replies after the card, or with `member_names` (a group chat) as stored; `group`
    is a group chat as a SillyTavern preset sees it."""
    count = count_tokens or estimate_tokens
    speakers = list(names) if names is not None else [_speaker(m, card, turn) for m in history]
    max_context = turn.context - turn.reserve
    messages = [(name, clean(m.text)) for name, m in zip(speakers, history, strict=True)]
    selection = scan(
        lore.ordered(),
        scan_messages(messages, lore.settings),
        count,
        lore.settings,
        budget=lore.settings.budget(max_context),
        substitute=_lore_macros(card, turn, group),
        rng=_rng(turn.seed),
    )
    if isinstance(turn.format, StPreset):
        prompt = _st(card, history, speakers, turn, selection, count, count_tokens is None, group)
        return TurnPrompt(_with_lore(prompt, selection), selection)
    clean_history = [
        Message(m.role, clean(m.text), name if m.role == "user" or member_names else "")
        for m, name in zip(history, speakers, strict=True)
    ]
    prompt = build(
        _clean_card(card),
        clean_history,
        fmt=turn.format,
        persona=Persona(turn.persona.name, clean(turn.persona.description)),
        lore=[replace(hit, content=clean(hit.content)) for hit in selection.fired],
        note=AuthorsNote(clean(turn.note.text), turn.note.depth, turn.note.interval),
        system_prompt=turn.system_prompt,
        budget=Budget(turn.context, turn.reserve, turn.margin),
        count_tokens=count_tokens,
        mode=turn.mode,
        seed=turn.seed,
    )
    return TurnPrompt(_with_lore(prompt, selection), selection)


def _lore_macros(card: Card, turn: Turn, group: GroupText | None) -> Callable[[str], str]:
    """The macros the scan fills in entries' keys and content (SillyTavern's `substituteParams`, so recursion reads
    names, not `{{char}}`): the preset's macros for a SillyTavern preset, else the card macros with the names the
    built-in formats use."""
    if isinstance(turn.format, StPreset):
        user, persona = turn.persona.name, turn.persona.description
        return substitute_params(turn.format, card_text(card), user=user, persona=persona, seed=turn.seed, group=group)
    char, user = card.nickname or card.name, turn.format.user_label or turn.persona.name or "You"
    persona, rng = clean(turn.persona.description), _rng(f"macros|{turn.seed}")
    return lambda text: macros.substitute(text, char=char, user=user, seed=turn.seed, rng=rng, persona=persona)


def _with_lore(prompt: Prompt, selection: Selection) -> Prompt:
    fired = tuple(f"{hit.world or 'book'} #{hit.uid}: {hit.why}" for hit in selection.fired)
    return replace(prompt, report=replace(prompt.report, lore=fired))


def _speaker(m: Message, card: Card, turn: Turn) -> str:
    return turn.persona.name if m.role == "user" else card.name


def _rng(seed: int | str) -> Any:
    import random

    return random.Random(f"lore|{seed}")


def _clean_card(card: Card) -> Card:
    fields = ("description", "personality", "scenario", "mes_example", "system_prompt", "post_history_instructions")
    return card.model_copy(update={k: clean(getattr(card, k)) for k in fields})


def card_text(card: Card) -> CardText:
    """The card as SillyTavern's prompt reads it (its name, not the nickname; the depth prompt extension)."""
    depth = card.extensions.get("depth_prompt")
    depth = depth if isinstance(depth, dict) else {}
    prompt = depth.get("prompt")
    return CardText(
        name=card.name,
        description=card.description,
        personality=card.personality,
        scenario=card.scenario,
        mes_example=card.mes_example,
        system_prompt=card.system_prompt,
        post_history_instructions=card.post_history_instructions,
        depth_prompt=prompt if isinstance(prompt, str) else "",
        depth_prompt_depth=depth["depth"] if isinstance(depth.get("depth"), int) else 4,
        depth_prompt_role=depth["role"] if isinstance(depth.get("role"), str) else "system",
    )


def _st(
    card: Card,
    history: Sequence[Message],
    speakers: Sequence[str],
    turn: Turn,
    selection: Selection,
    count: Callable[[str], int],
    estimated: bool,
    group: GroupText | None = None,
) -> Prompt:
    assert isinstance(turn.format, StPreset)
    chat = [ChatLine(name, m.role == "user", m.text) for name, m in zip(speakers, history, strict=True)]
    max_context = turn.context - turn.reserve
    out = render(
        turn.format,
        card_text(card),
        chat,
        user=turn.persona.name,
        persona=turn.persona.description,
        lore=selection,
        note=Note(turn.note.text, turn.note.depth, turn.note.interval),
        mode=turn.mode,
        max_context=max_context,
        count_tokens=count,
        seed=turn.seed,
        group=group,
    )
    total = count(out.text)
    dropped = tuple(range(len(history) - out.kept_messages)) if out.kept_messages < len(history) else ()
    report = Report(
        budget=max_context,
        total=total,
        sections={"prompt": total},
        dropped_examples=(),
        dropped_messages=dropped,
        dropped_lore=tuple(hit.index for hit in selection.dropped),
        dropped_note=False,
        first_message=len(dropped) if history else None,
        estimated=estimated,
    )
    return Prompt(out.text, out.stops, report, turn.format.name, turn.mode)
