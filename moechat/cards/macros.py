"""Pure text macros of character cards (docs/formats.md §3.4) and example-dialogue splitting (§3.5).

All macros are case-insensitive. `substitute` handles `{{char}}`/`<BOT>`/`<CHAR>`, `{{user}}`/`<USER>`,
`{{original}}`, `{{persona}}` (the user persona's description, where given) and the V3 "CBS" set:
`{{random:a,b}}` (`\\,` escapes a comma; ST's `{{random::a::b}}` too), `{{pick:a,b}}` (stable for a given seed,
e.g. the chat id), `{{roll:N}}`/`{{roll:dN}}`/`{{roll:XdN}}`, and removes `{{// ...}}`, `{{comment: ...}}` and
`{{hidden_key: ...}}`.
"""

from __future__ import annotations

import random
import re

_COMMENT = re.compile(r"\{\{//.*?\}\}", re.DOTALL)
_INVISIBLE = re.compile(r"\{\{(?:comment|hidden_key):.*?\}\}", re.DOTALL | re.IGNORECASE)
_HIDDEN_KEY = re.compile(r"\{\{hidden_key:(.*?)\}\}", re.DOTALL | re.IGNORECASE)
_CHAR = re.compile(r"\{\{char\}\}|<bot>|<char>", re.IGNORECASE)
_USER = re.compile(r"\{\{user\}\}|<user>", re.IGNORECASE)
_ORIGINAL = re.compile(r"\{\{original\}\}", re.IGNORECASE)
_PERSONA = re.compile(r"\{\{persona\}\}", re.IGNORECASE)
_CHOICE = re.compile(r"\{\{(random|pick)(::?)((?:[^{}]|\{(?!\{)|\}(?!\}))*)\}\}", re.IGNORECASE)
_ROLL = re.compile(r"\{\{roll[: ]\s*(\d*)\s*(?:d\s*(\d+))?\s*\}\}", re.IGNORECASE)
_START = re.compile(r"<start>", re.IGNORECASE)
MAX_ROLL = 10**9


def substitute(
    text: str,
    *,
    char: str,
    user: str,
    original: str = "",
    seed: int | str = 0,
    rng: random.Random | None = None,
    persona: str | None = None,
) -> str:
    """`text` with every macro replaced.

    `char` is the name to show for the character (pass the card's nickname when set: `card.char_name`).
    `seed` makes `{{pick}}` stable (pass the chat id); `{{random}}`/`{{roll}}` draw from `rng`
    (a fresh unseeded one when None). `persona` replaces `{{persona}}` (left as it is when None).
    """
    draw = rng if rng is not None else random.Random()
    text = _INVISIBLE.sub("", _COMMENT.sub("", text))
    text = _ORIGINAL.sub(lambda _: original, text)
    text = _CHAR.sub(lambda _: char, text)
    text = _USER.sub(lambda _: user, text)
    if persona is not None:
        text = _PERSONA.sub(lambda _: persona, text)
    counter = iter(range(1_000_000))
    text = _CHOICE.sub(lambda m: _choose(m, draw, seed, next(counter)), text)
    return _ROLL.sub(lambda m: _roll(m, draw), text)


def _choose(match: re.Match[str], draw: random.Random, seed: int | str, occurrence: int) -> str:
    kind, separator, body = match.group(1).lower(), match.group(2), match.group(3)
    options = body.split("::") if separator == "::" else _split_commas(body)
    if not options:
        return ""
    if kind == "pick":
        return random.Random(f"{seed}|{occurrence}|{body}").choice(options)
    return draw.choice(options)


def _split_commas(body: str) -> list[str]:
    parts = re.split(r"(?<!\\),", body)
    return [part.replace("\\,", ",") for part in parts]


def _roll(match: re.Match[str], draw: random.Random) -> str:
    count_text, sides_text = match.group(1), match.group(2)
    if sides_text is None:
        if not count_text:
            return match.group(0)
        count, sides = 1, int(count_text)
    else:
        count, sides = int(count_text or 1), int(sides_text)
    if sides < 1 or count < 1 or sides > MAX_ROLL or count > 100:
        return match.group(0)
    return str(sum(draw.randint(1, sides) for _ in range(count)))


def scan_text(text: str) -> str:
    """What lorebook scanning sees of `text`: `{{// }}` and `{{comment:}}` removed, hidden keys kept."""
    text = _COMMENT.sub("", text)
    text = _HIDDEN_KEY.sub(lambda m: m.group(1), text)
    return re.sub(r"\{\{comment:.*?\}\}", "", text, flags=re.DOTALL | re.IGNORECASE)


def comments(text: str) -> list[str]:
    """The `{{comment: ...}}` texts, to show to the user inline (they never reach the prompt)."""
    return [m.strip() for m in re.findall(r"\{\{comment:(.*?)\}\}", text, re.DOTALL | re.IGNORECASE)]


def split_examples(mes_example: str) -> list[str]:
    """Example conversations: blocks split on `<START>` (case-insensitive), trimmed, empty ones dropped.

    Text before the first `<START>` counts as a block (as if the text started with `<START>`).
    """
    return [block.strip() for block in _START.split(mes_example) if block.strip()]


def split_turns(block: str, *, char: str, user: str) -> list[tuple[str, str]]:
    """One example block as `(speaker, text)` turns, speaker `"user"`, `"char"` or `""` (narration).

    A turn starts at a line beginning with `{{user}}:`/`<USER>:` or `{{char}}:`/`<BOT>:` (or the
    substituted names); following lines without a speaker continue the turn.
    """
    labels = {"user": [r"\{\{user\}\}", "<user>", *_literal(user)]}
    labels["char"] = [r"\{\{char\}\}", "<bot>", "<char>", *_literal(char)]
    pattern = "|".join(f"(?P<{who}>{'|'.join(alts)})" for who, alts in labels.items())
    turn_start = re.compile(rf"^(?:{pattern}):[ \t]?", re.IGNORECASE | re.MULTILINE)
    turns: list[tuple[str, str]] = []
    cursor, speaker = 0, ""
    for match in turn_start.finditer(block):
        if match.start() > cursor or speaker:
            turns.append((speaker, block[cursor : match.start()].strip()))
        speaker, cursor = ("user" if match.group("user") else "char"), match.end()
    turns.append((speaker, block[cursor:].strip()))
    return [(who, text) for who, text in turns if text or who]


def _literal(name: str) -> list[str]:
    return [re.escape(name)] if name.strip() else []
