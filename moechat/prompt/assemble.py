"""Prompt assembly (docs/formats.md §3.6): card, persona, lore, examples and history become the exact text the
model sees, its stop strings and a report of what fit the token budget.

Order: system prompt (a card's `system_prompt` replaces the global one, `{{original}}` inserts it),
lore `before_char`, description, personality, scenario, lore `after_char`, user persona, example
dialogue, greeting and history (the author's note and `at_depth` lore N messages from the end), the
post-history instructions, then the cue. The format decides the strings (`moechat.formats`).

Budget = context - reserve (reply tokens) - margin. Definitions, post-history instructions and the
newest message are never dropped. The rest is kept in this order while it fits: lore (highest
insertion order first), the author's note, history newest-first, then examples in order; so examples
go first, then the oldest messages. A final count of the whole text makes the fit exact.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from moechat.cards import macros
from moechat.errors import PromptError
from moechat.prompt.budget import Inject, Line, Parts, Report, fit, grow, render_prompt, report, shrink
from moechat.prompt.formats import Format, Mode, Role, Turn, stop_strings

Counter = Callable[[str], int]
__all__ = ["AuthorsNote", "Budget", "Message", "Persona", "Prompt", "Report", "build", "estimate_tokens"]
LINE_POSITIONS = ("before_char", "personality", "scenario", "after_char", "examples_top", "examples_bottom")


@dataclass(frozen=True)
class Message:
    """One chat message as the prompt sees it (hidden/system messages are left out by the caller)."""

    role: Literal["user", "model"]
    text: str
    name: str = ""  # a user message's speaker as stored (a persona renamed later keeps old messages' name)


@dataclass(frozen=True)
class Persona:
    """The user: `{{user}}` and the speaker name; the description goes after the card's definitions."""

    name: str = "You"
    description: str = ""


@dataclass(frozen=True)
class AuthorsNote:
    """Text inserted `depth` messages from the end on every `interval`-th user message (0 = never)."""

    text: str = ""
    depth: int = 4
    interval: int = 1


@dataclass(frozen=True)
class Budget:
    """Context size, tokens reserved for the reply, and a safety margin (BOS, tokenizer drift)."""

    context: int = 4096
    reserve: int = 512
    margin: int = 64

    @property
    def available(self) -> int:
        return self.context - self.reserve - self.margin


class CardLike(Protocol):
    """What the builder reads of a card (`moechat.cards.Card` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def nickname(self) -> str | None: ...
    @property
    def description(self) -> str: ...
    @property
    def personality(self) -> str: ...
    @property
    def scenario(self) -> str: ...
    @property
    def mes_example(self) -> str: ...
    @property
    def system_prompt(self) -> str: ...
    @property
    def post_history_instructions(self) -> str: ...


class LoreHit(Protocol):
    """A lore entry chosen for this turn (`moechat.cards.lore_scan.Fired` has it). Positions: before_char,
    after_char, personality, scenario, examples_top, examples_bottom, an_top, an_bottom, at_depth."""

    @property
    def content(self) -> str: ...
    @property
    def position(self) -> str: ...
    @property
    def depth(self) -> int | None: ...


@dataclass(frozen=True)
class Prompt:
    """The exact prompt text (without the BOS the tokenizer adds), stop strings and the budget report."""

    text: str
    stops: tuple[str, ...]
    report: Report
    format: str
    mode: Mode


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 3.5 characters per token."""
    return math.ceil(len(text) / 3.5)


def build(
    card: CardLike,
    history: Sequence[Message],
    *,
    fmt: Format,
    persona: Persona = Persona(),
    lore: Sequence[LoreHit] = (),
    note: AuthorsNote = AuthorsNote(),
    system_prompt: str | None = None,
    post_history: str = "",
    budget: Budget = Budget(),
    count_tokens: Counter | None = None,
    mode: Mode = "reply",
    seed: int | str = 0,
) -> Prompt:
    """The prompt for the next turn. `system_prompt`/`post_history` are the global settings (None: the
    format's default system prompt); `count_tokens` is the model's tokenizer (None: an estimate);
    `mode` "reply" cues the character, "continue" leaves the last (character) message open,
    "impersonate" cues the user. `seed` makes `{{pick}}`/`{{random}}` macros repeatable."""
    if budget.available <= 0:
        raise PromptError(
            f"a context of {budget.context} tokens leaves no room after reserving {budget.reserve} for the reply "
            f"and {budget.margin} as margin: raise the context size or lower the reserve"
        )
    if mode == "continue" and (not history or history[-1].role != "model"):
        raise PromptError("continue needs the last message to be the character's")
    count = functools.lru_cache(maxsize=4096)(count_tokens or estimate_tokens)
    parts = _parts(_Request(card, history, fmt, persona, lore, note, system_prompt, post_history, mode, seed))
    keep = grow(parts, fit(parts, count, budget.available), count, budget.available)
    text, total = render_prompt(parts, keep, count)
    while total > budget.available:
        keep = shrink(parts, keep, total, budget.available)
        text, total = render_prompt(parts, keep, count)
    summary = report(parts, keep, count, total, budget.available, estimated=count_tokens is None)
    return Prompt(text, stop_strings(fmt, char=parts.char, user=parts.user), summary, fmt.name, mode)


@dataclass(frozen=True)
class _Request:
    card: CardLike
    history: Sequence[Message]
    fmt: Format
    persona: Persona
    lore: Sequence[LoreHit]
    note: AuthorsNote
    system_prompt: str | None
    post_history: str
    mode: Mode
    seed: int | str


@dataclass(frozen=True)
class _Macros:
    """Macro substitution for one prompt: the speaker names and one random stream."""

    char: str
    user: str
    seed: int | str
    rng: random.Random
    persona: str = ""

    def __call__(self, text: str, original: str = "") -> str:
        sub = macros.substitute(
            text, char=self.char, user=self.user, original=original, seed=self.seed, rng=self.rng, persona=self.persona
        )
        return sub.strip()

    def overriding(self, own: str, global_text: str) -> str:
        """A card field that replaces a global setting when set; `{{original}}` inserts the setting."""
        return self(own, original=global_text) if own.strip() else self(global_text)


def _parts(req: _Request) -> Parts:
    card, fmt = req.card, req.fmt
    sub = _Macros(
        card.nickname or card.name,
        fmt.user_label or req.persona.name or "You",
        req.seed,
        random.Random(str(req.seed)),
        req.persona.description,
    )
    system = fmt.default_system if req.system_prompt is None else req.system_prompt
    lines = _lines(req, sub, sub.overriding(card.system_prompt, system))
    split = next(i for i, line in enumerate(lines) if line.section == "examples")
    blocks = [sub(block) for block in macros.split_examples(card.mes_example)]
    names = {"user": sub.user, "model": sub.char}
    lore = enumerate(req.lore)
    return Parts(
        fmt=fmt,
        mode=req.mode,
        char=sub.char,
        user=sub.user,
        before=tuple(lines[:split]),
        after=tuple(lines[split + 1 :]),
        examples=tuple(_example(fmt, block, sub.char, sub.user) for block in blocks if block),
        messages=tuple(Turn(m.role, m.text, _speaker(m, fmt, names)) for m in req.history),
        lore_inject=tuple(Inject(h.depth or 0, sub(h.content), (i,)) for i, h in lore if _at(h, "at_depth")),
        note=_note(req, sub),
        post=sub.overriding(card.post_history_instructions, req.post_history),
    )


def _at(hit: LoreHit, position: str) -> bool:
    known = (*LINE_POSITIONS, "an_top", "an_bottom", "at_depth")
    return (hit.position if hit.position in known else "after_char") == position


def _speaker(m: Message, fmt: Format, names: dict[str, str]) -> str:
    """A message's stored name (as SillyTavern's prompt does: a user message's, a group member's reply), unless the
    format names the user itself."""
    if m.role == "user":
        return m.name if m.name and not fmt.user_label else names["user"]
    return m.name or names["model"]


def _lines(req: _Request, sub: _Macros, system: str) -> list[Line]:
    """The system block: definitions, positioned lore, an `examples` marker, the closing line."""
    card = req.card
    labels = [label.replace("{{char}}", sub.char) for label in req.fmt.labels]

    def lore_at(position: str) -> list[Line]:
        return [Line("lore", sub(hit.content), i) for i, hit in enumerate(req.lore) if _at(hit, position)]

    def labelled(section: str, label: str, text: str) -> list[Line]:
        return [Line(section, label + sub(text))] if text.strip() else []

    return [
        Line("system", system),
        *lore_at("before_char"),
        *labelled("description", labels[0], card.description),
        *labelled("personality", labels[1], card.personality),
        *lore_at("personality"),
        *labelled("scenario", labels[2], card.scenario),
        *lore_at("scenario"),
        *lore_at("after_char"),
        *labelled("persona", "", req.persona.description),
        *lore_at("examples_top"),
        Line("examples", ""),
        *lore_at("examples_bottom"),
        Line("system", "\n" * req.fmt.closing.startswith("\n") + sub(req.fmt.closing)),  # Metharme: a blank line
    ]


def _example(fmt: Format, block: str, char: str, user: str) -> tuple[Turn, ...]:
    """One example conversation: turns after the chat's speakers, or one `<START>` text for the system block."""
    if not fmt.examples_as_turns:
        return (Turn("system", f"<START>\n{block}", raw=True),)
    roles: dict[str, tuple[Role, str]] = {"user": ("user", user), "char": ("model", char), "": ("system", "")}
    turns = tuple(
        Turn(roles[who][0], text, roles[who][1]) for who, text in macros.split_turns(block, char=char, user=user)
    )
    return (*turns, Turn("system", fmt.separator, raw=True))


def _note(req: _Request, sub: _Macros) -> Inject | None:
    """The author's note (with an_top/an_bottom lore) when this turn is due for it."""
    note, lore = req.note, req.lore
    users = sum(1 for m in req.history if m.role == "user")
    if note.interval <= 0 or users < note.interval or users % note.interval:
        return None
    top = [(i, sub(h.content)) for i, h in enumerate(lore) if _at(h, "an_top")]
    bottom = [(i, sub(h.content)) for i, h in enumerate(lore) if _at(h, "an_bottom")]
    texts = [text for _, text in top] + [sub(note.text)] + [text for _, text in bottom]
    text = "\n".join(t for t in texts if t)
    return Inject(max(note.depth, 0), text, tuple(i for i, _ in top + bottom)) if text else None
