"""Fitting a prompt into the token budget, for `moechat.prompt`: what to keep, the kept parts as turns,
and the report of tokens per section and of what was dropped.

The parts come already substituted (macros done) from `prompt.build`; nothing here reads cards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from moechat.errors import PromptError
from moechat.prompt.formats import Format, Mode, Turn, cue, render, render_turn

Counter = Callable[[str], int]


@dataclass(frozen=True)
class Report:
    """What fit: tokens per section (standalone counts; `format` = wrappers and joins, the rest of
    `total`), and indexes of what was dropped (examples: blocks of `mes_example`; messages: `history`;
    lore: the `lore` argument). `estimated` when no tokenizer was given (chars / 3.5)."""

    budget: int
    total: int
    sections: dict[str, int]
    dropped_examples: tuple[int, ...]
    dropped_messages: tuple[int, ...]
    dropped_lore: tuple[int, ...]
    dropped_note: bool
    first_message: int | None
    estimated: bool
    lore: tuple[str, ...] = ()  # what fired and why ("world #uid: key 'x', recursion step 1"), set by prompt.turn


@dataclass(frozen=True)
class Line:
    section: str
    text: str
    lore: int | None = None


@dataclass(frozen=True)
class Inject:
    depth: int
    text: str
    lore: tuple[int, ...] = ()


@dataclass(frozen=True)
class Parts:
    fmt: Format
    mode: Mode
    char: str
    user: str
    before: tuple[Line, ...]  # system block lines before the examples
    after: tuple[Line, ...]  # system block lines after the examples
    examples: tuple[tuple[Turn, ...], ...]
    messages: tuple[Turn, ...]
    lore_inject: tuple[Inject, ...]
    note: Inject | None
    post: str


@dataclass(frozen=True)
class Keep:
    lore: frozenset[int]
    note: bool
    first: int  # index of the oldest history message kept
    examples: int  # number of leading example blocks kept


def cue_text(parts: Parts) -> str:
    if parts.mode == "continue":
        return ""
    return cue(parts.fmt, "model", parts.char) if parts.mode == "reply" else cue(parts.fmt, "user", parts.user)


def block_text(fmt: Format, block: tuple[Turn, ...]) -> str:
    return "".join(render_turn(fmt, turn) for turn in block)


def lore_costs(parts: Parts, count: Counter) -> dict[int, int]:
    """Tokens of each droppable lore entry (system block lines and `at_depth` injections)."""
    costs = {line.lore: count(line.text) for line in parts.before + parts.after if line.lore is not None}
    return costs | {inject.lore[0]: count(inject.text) for inject in parts.lore_inject}


def fit(parts: Parts, count: Counter, available: int) -> Keep:
    """What to keep, by standalone token counts: fixed parts, lore, note, newest history, examples."""
    costs = [count(render_turn(parts.fmt, turn)) for turn in parts.messages]
    defs = sum(count(line.text) for line in parts.before + parts.after if line.lore is None)
    fixed = defs + count(parts.post) + count(cue_text(parts)) + (costs[-1] if costs else 0)
    if fixed > available:
        raise PromptError(
            f"the character's definitions and the newest message need about {fixed} tokens but only {available} "
            "fit: raise the context size, lower the reply reserve, or shorten the card"
        )
    left = available - fixed
    lore: set[int] = set()
    for index, cost in sorted(lore_costs(parts, count).items(), reverse=True):
        if cost <= left:
            lore.add(index)
            left -= cost
    note = parts.note is not None and count(parts.note.text) <= left
    left -= count(parts.note.text) if note and parts.note else 0
    first = max(len(costs) - 1, 0)
    while first > 0 and costs[first - 1] <= left:
        first -= 1
        left -= costs[first]
    examples = 0
    for block in parts.examples if first == 0 else ():
        cost = count(block_text(parts.fmt, block))
        if cost > left:
            break
        examples, left = examples + 1, left - cost
    return Keep(frozenset(lore), note, first, examples)


def grow(parts: Parts, keep: Keep, count: Counter, available: int) -> Keep:
    """Add back older messages, then examples, while the whole text still fits (standalone counts
    overestimate where the tokenizer merges across turn boundaries)."""
    while True:
        if keep.first > 0:
            bigger = replace(keep, first=keep.first - 1)
        elif keep.examples < len(parts.examples):
            bigger = replace(keep, examples=keep.examples + 1)
        else:
            return keep
        if render_prompt(parts, bigger, count)[1] > available:
            return keep
        keep = bigger


def shrink(parts: Parts, keep: Keep, total: int, available: int) -> Keep:
    """One step smaller when the whole text came out longer than the standalone counts said."""
    if keep.examples:
        return replace(keep, examples=keep.examples - 1)
    if keep.first < len(parts.messages) - 1:
        return replace(keep, first=keep.first + 1)
    if keep.note:
        return replace(keep, note=False)
    if keep.lore:
        return replace(keep, lore=keep.lore - {min(keep.lore)})
    raise PromptError(
        f"the prompt needs {total} tokens with only the definitions and the newest message, but {available} fit: "
        "raise the context size, lower the reply reserve, or shorten the card"
    )


def assemble(parts: Parts, keep: Keep) -> list[Turn]:
    """The kept parts as turns: the system block, example turns, then the chat with injections."""
    kept = parts.examples[: keep.examples]
    lines = [line.text for line in parts.before if line.lore is None or line.lore in keep.lore]
    if not parts.fmt.examples_as_turns:
        lines += [block[0].text for block in kept]
    lines += [line.text for line in parts.after if line.lore is None or line.lore in keep.lore]
    system = "\n".join(text for text in lines if text).lstrip("\n")
    turns = [Turn("system", system)] if system else []
    if parts.fmt.examples_as_turns:
        turns += [turn for block in kept for turn in block]
    return turns + chat_turns(parts, keep)


def chat_turns(parts: Parts, keep: Keep) -> list[Turn]:
    """Kept history with the author's note and `at_depth` lore N messages from its end, then the
    post-history instructions (before the open last message when continuing)."""
    chat = list(parts.messages[keep.first :])
    injects = [inject for inject in parts.lore_inject if inject.lore[0] in keep.lore]
    injects += [parts.note] if parts.note is not None and keep.note else []
    last = len(chat) - (1 if parts.mode == "continue" else 0)
    out: list[Turn] = []
    for pos in range(len(chat) + 1):
        out += [Turn("system", i.text) for i in injects if min(max(len(chat) - i.depth, 0), last) == pos]
        out += chat[pos : pos + 1]
    if parts.post:
        out.insert(len(out) - (1 if parts.mode == "continue" else 0), Turn("system", parts.post))
    return out


def render_prompt(parts: Parts, keep: Keep, count: Counter) -> tuple[str, int]:
    text = render(parts.fmt, assemble(parts, keep), parts.mode, char=parts.char, user=parts.user)
    return text, count(text)


SECTIONS = (
    *("system", "description", "personality", "scenario", "persona", "lore", "examples", "history"),
    *("authors_note", "post_history", "cue", "format"),
)


def report(parts: Parts, keep: Keep, count: Counter, total: int, available: int, estimated: bool) -> Report:
    sections = dict.fromkeys(SECTIONS, 0)
    for line in parts.before + parts.after:
        if line.lore is None or line.lore in keep.lore:
            sections[line.section] += count(line.text)
    sections["examples"] = sum(count(block_text(parts.fmt, b)) for b in parts.examples[: keep.examples])
    sections["history"] = sum(count(render_turn(parts.fmt, t)) for t in parts.messages[keep.first :])
    sections["lore"] += sum(count(i.text) for i in parts.lore_inject if i.lore[0] in keep.lore)
    sections["authors_note"] = count(parts.note.text) if parts.note and keep.note else 0
    sections["post_history"], sections["cue"] = count(parts.post), count(cue_text(parts))
    sections["format"] = total - sum(sections.values())
    dropped_lore = set(lore_costs(parts, count)) - keep.lore
    dropped_lore |= set(parts.note.lore) if parts.note and not keep.note else set()
    return Report(
        budget=available,
        total=total,
        sections=sections,
        dropped_examples=tuple(range(keep.examples, len(parts.examples))),
        dropped_messages=tuple(range(keep.first)),
        dropped_lore=tuple(sorted(dropped_lore)),
        dropped_note=parts.note is not None and not keep.note,
        first_message=keep.first if parts.messages else None,
        estimated=estimated,
    )
