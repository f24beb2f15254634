"""Macros in lore entries are filled before recursion reads them, as SillyTavern's `checkWorldInfo` does
(`substituteParams` on each key and on a firing entry's content): in every format, outside groups and in them."""

from __future__ import annotations

from pathlib import Path

import pytest

from moechat.cards.card import Card
from moechat.cards.lore_scan import LoreSettings
from moechat.cards.lorebook import read_lorebook
from moechat.cards.world_info import book_rules
from moechat.prompt.assemble import Message, Persona
from moechat.prompt.formats import Format, get_format
from moechat.prompt.group import Group, build_group_turn
from moechat.prompt.st_preset import StPreset, read_context, read_instruct
from moechat.prompt.turn import Lore, Turn, build_turn
from tests.st_oracle.render import read_preset_file

ORACLE = Path(__file__).parent / "st_oracle"
WREN = Card(name="Wren", description="{{char}} keeps the ferry.")
# names left out of the scanned text, so only recursion into a filled macro can find the names
SETTINGS = LoreSettings(include_names=False)
ENTRIES = [
    {"keys": ["bell"], "content": "{{char}} rings the bell.", "id": 1, "position": "after_char"},
    {"keys": ["Wren"], "content": "The keeper never sleeps.", "id": 2, "position": "after_char"},
    {"keys": ["letter"], "content": "{{user}} wrote the letter.", "id": 3, "position": "after_char"},
    {"keys": ["Ann"], "content": "She lent {{user}}'s coin.", "id": 4, "position": "after_char"},
    {"keys": ["{{user}}'s coin"], "content": "A debt is a debt.", "id": 5, "position": "after_char"},
]
LORE = Lore(character=book_rules(read_lorebook({"entries": ENTRIES})), settings=SETTINGS)
HISTORY = [Message("model", "Who comes?"), Message("user", "I bring a letter. Ring the bell!")]
# in prompt order: activation order (ties on `order`) reversed
FIRED = (
    'book #5: key "{{user}}\'s coin", recursion step 2',
    "book #4: key 'Ann', recursion step 1",
    "book #2: key 'Wren', recursion step 1",
    "book #3: key 'letter'",
    "book #1: key 'bell'",
)
LORE_TEXT = (
    "A debt is a debt.\nShe lent Ann's coin.\nThe keeper never sleeps.\nAnn wrote the letter.\nWren rings the bell."
)


def st_preset() -> StPreset:
    def read(kind: str, name: str) -> dict:
        return read_preset_file(ORACLE, f"presets/{kind}/{name}.json")

    return StPreset(read_instruct(read("instruct", "turn")), read_context(read("context", "turn")), "")


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize("fmt", [get_format("alpaca"), get_format("chatml"), st_preset()], ids=lambda f: f.name)
def test_char_and_user_in_an_entry_are_names_when_recursion_reads_it(fmt: Format | StPreset) -> None:
    """`{{char}}`/`{{user}}` in a fired entry trigger, one step later, the entries keyed on the character's and the
    user's names; a key's `{{user}}` is the user's name too. The prompt shows the filled text."""
    turn = Turn(fmt, persona=Persona("Ann"))
    out = build_turn(WREN, HISTORY, turn, LORE, count_tokens=words)
    assert out.prompt.report.lore == FIRED
    assert "\n".join(hit.content for hit in out.lore.fired) == LORE_TEXT
    assert LORE_TEXT in out.prompt.text


def test_the_builtin_formats_fill_the_nickname_and_the_formats_user_label() -> None:
    """The names the built-in prompt shows are the names recursion reads: the card's nickname, the format's user
    label (here "You" instead of the persona's name, so the entry keyed "Ann" stays out)."""
    card = WREN.model_copy(update={"nickname": "Wenna"})
    entries = [
        {"keys": ["bell"], "content": "{{char}} and {{user}} ring the bell.", "id": 1},
        {"keys": ["Wenna and You"], "content": "Two ringers.", "id": 2},
        {"keys": ["Wren", "Ann"], "content": "Never: no such names here.", "id": 3},
    ]
    lore = Lore(character=book_rules(read_lorebook({"entries": entries})), settings=SETTINGS)
    fmt = get_format("pygmalion")
    assert fmt.user_label == "You"
    out = build_turn(card, HISTORY, Turn(fmt, persona=Persona("Ann")), lore, count_tokens=words)
    assert out.prompt.report.lore == ("book #2: key 'Wenna and You', recursion step 1", "book #1: key 'bell'")


@pytest.mark.parametrize("fmt", [get_format("alpaca"), st_preset()], ids=lambda f: f.name)
def test_in_a_group_char_is_the_speaker_and_group_the_members(fmt: Format | StPreset) -> None:
    entries = [
        {"keys": ["bell"], "content": "{{char}} rings for {{group}}.", "id": 1, "position": "after_char"},
        {"keys": ["Bram rings"], "content": "The speaker rings.", "id": 2, "position": "after_char"},
        {"keys": ["for Wren, Bram"], "content": "The whole group hears.", "id": 3, "position": "after_char"},
        {"keys": ["{{group}}"], "content": "A key of members.", "id": 4, "position": "after_char"},
    ]
    lore = Lore(character=book_rules(read_lorebook({"entries": entries})), settings=SETTINGS)
    group = Group("Crossing", (WREN, Card(name="Bram", description="{{char}} rows.")))
    history = [Message("model", "Who comes?", "Wren"), Message("user", "Ring the bell!", "Ann")]
    turn = Turn(fmt, persona=Persona("Ann"))
    out = build_group_turn(group, 1, history, turn, lore, count_tokens=words)
    assert out.prompt.report.lore == (
        "book #4: key 'Wren, Bram', recursion step 1",  # the group's keys are filled before the scan
        "book #3: key 'for Wren, Bram', recursion step 1",
        "book #2: key 'Bram rings', recursion step 1",
        "book #1: key 'bell'",
    )
    assert "Bram rings for Wren, Bram." in out.prompt.text
