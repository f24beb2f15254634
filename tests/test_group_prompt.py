"""Group chats' prompts and reply order (moechat.prompt.group, moechat.prompt.group_order): exact strings on a
three-member group with a lorebook entry and a persona, for each generation mode and reply-order strategy."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from moechat.cards.card import Card
from moechat.cards.lorebook import read_lorebook
from moechat.cards.world_info import book_rules
from moechat.commands.prompt import main as prompt_main
from moechat.errors import PromptError
from moechat.prompt.assemble import Message, Persona
from moechat.prompt.formats import get_format
from moechat.prompt.group import GenerationMode, Group, build_group_turn, group_macros, speaker_card
from moechat.prompt.group_order import Member, Said, Strategy, next_speakers, same_speaker, talkativeness, words
from moechat.prompt.turn import Lore, Mode, Turn

ALICE = Card(
    name="Alice",
    description="{{char}} is a knight of {{group}}.",
    personality="brave",
    mes_example="<START>\n{{user}}: hi\n{{char}}: Hail!",
)
BOB = Card(
    name="Bob",
    description="{{char}} bakes bread for {{user}}.",
    scenario="A market.",
    post_history_instructions="Keep it short.",
)
CARA = Card(name="Cara", description="{{char}} is a quiet witch.", personality="sly")
LORE = Lore(
    global_=book_rules(
        read_lorebook(
            {"entries": [{"keys": ["bread"], "content": "Bread costs a coin.", "id": 1, "position": "after_char"}]}
        )
    )
)
HISTORY = [
    Message("model", "Hail, Dana!", "Alice"),
    Message("user", "Bob, any bread?", "Dana"),
    Message("model", "Fresh loaves.", "Bob"),
]
NAMES = ["Alice", "Dana", "Bob"]
PERSONA = Persona("Dana", "{{user}} is a traveller.")
CHAT = (
    "\n\n### Response:\nAlice: Hail, Dana!\n\n### Instruction:\nDana: Bob, any bread?"
    "\n\n### Response:\nBob: Fresh loaves."
)


def words_count(text: str) -> int:
    return len(text.split())


def group(mode: GenerationMode, muted: frozenset[int] = frozenset({2})) -> Group:
    return Group("Market", (ALICE, BOB, CARA), muted, mode, join_prefix="[<FIELDNAME> of {{char}}]")


def prompt(
    mode: GenerationMode, speaker: int, turn_mode: Mode = "reply", muted: frozenset[int] = frozenset({2})
) -> str:
    turn = Turn(get_format("alpaca"), persona=PERSONA, system_prompt="Group: {{group}}.", mode=turn_mode)
    out = build_group_turn(group(mode, muted), speaker, HISTORY, turn, LORE, names=NAMES, count_tokens=words_count)
    return out.prompt.text


SWAP_ALICE = (
    "Group: Alice, Bob, Cara.\nAlice is a knight of Alice, Bob, Cara.\nAlice's personality: brave\n"
    "Bread costs a coin.\nDana is a traveller.\n<START>\nDana: hi\nAlice: Hail!"
    f"{CHAT}\n[Write the next reply only as Alice.]\n\n### Response:\nAlice:"
)
JOIN_ALICE = (
    "Group: Alice, Bob, Cara.\n[Description of Alice]\nAlice is a knight of Alice, Bob, Cara.\n[Description of Bob]\n"
    "Bob bakes bread for Dana.\nAlice's personality: [Personality of Alice]\nbrave\nScenario: [Scenario of Bob]\n"
    "A market.\nBread costs a coin.\nDana is a traveller.\n<START>\n[Example Messages of Alice]\n<START>\n"
    f"Dana: hi\nAlice: Hail!{CHAT}\n[Write the next reply only as Alice.]\n\n### Response:\nAlice:"
)
JOIN_MUTED_ALICE = (
    "Group: Alice, Bob, Cara.\n[Description of Alice]\nAlice is a knight of Alice, Bob, Cara.\n[Description of Bob]\n"
    "Bob bakes bread for Dana.\n[Description of Cara]\nCara is a quiet witch.\nAlice's personality: "
    "[Personality of Alice]\nbrave\n[Personality of Cara]\nsly\nScenario: [Scenario of Bob]\nA market.\n"
    "Bread costs a coin.\nDana is a traveller.\n<START>\n[Example Messages of Alice]\n<START>\n"
    f"Dana: hi\nAlice: Hail!{CHAT}\n[Write the next reply only as Alice.]\n\n### Response:\nAlice:"
)
SWAP_BOB = (
    "Group: Alice, Bob, Cara.\nBob bakes bread for Dana.\nScenario: A market.\nBread costs a coin.\n"
    f"Dana is a traveller.{CHAT}\n[Write the next reply only as Bob.]\nKeep it short.\n\n### Response:\nBob:"
)
# Cara is muted: join mode leaves her out unless she is the one speaking
JOIN_CARA = (
    "Group: Alice, Bob, Cara.\n[Description of Alice]\nAlice is a knight of Alice, Bob, Cara.\n[Description of Bob]\n"
    "Bob bakes bread for Dana.\n[Description of Cara]\nCara is a quiet witch.\nCara's personality: "
    "[Personality of Alice]\nbrave\n[Personality of Cara]\nsly\nScenario: [Scenario of Bob]\nA market.\n"
    "Bread costs a coin.\nDana is a traveller.\n<START>\n[Example Messages of Alice]\n<START>\n"
    f"Dana: hi\nAlice: Hail!{CHAT}\n[Write the next reply only as Cara.]\n\n### Response:\nCara:"
)
IMPERSONATE_BOB = (
    "Group: Alice, Bob, Cara.\nBob bakes bread for Dana.\nScenario: A market.\nBread costs a coin.\n"
    f"Dana is a traveller.{CHAT}\nKeep it short.\n\n### Instruction:\nDana:"
)


@pytest.mark.parametrize(
    ("mode", "speaker", "turn_mode", "expected"),
    [
        ("swap", 0, "reply", SWAP_ALICE),
        ("join", 0, "reply", JOIN_ALICE),
        ("join_muted", 0, "reply", JOIN_MUTED_ALICE),
        ("swap", 1, "reply", SWAP_BOB),
        ("join", 2, "reply", JOIN_CARA),
        ("swap", 1, "impersonate", IMPERSONATE_BOB),
    ],
)
def test_group_prompt_per_generation_mode(mode: GenerationMode, speaker: int, turn_mode: Mode, expected: str) -> None:
    assert prompt(mode, speaker, turn_mode) == expected


def test_other_members_are_stop_strings() -> None:
    turn = Turn(get_format("alpaca"), persona=PERSONA)
    out = build_group_turn(group("swap"), 1, HISTORY, turn, LORE, names=NAMES, count_tokens=words_count)
    assert out.prompt.stops[-2:] == ("\nAlice:", "\nCara:")
    assert "\nBob:" not in out.prompt.stops


def test_group_macro_in_lore_is_the_members_names_before_the_scan() -> None:
    """As SillyTavern substitutes an entry's macros when it fires: its text and what recursion reads name the members
    (the second entry's key is only in the first entry's `{{group}}`)."""
    entries = [
        {"keys": ["bread"], "content": "{{group}} share the bread.", "id": 1, "position": "after_char"},
        {"keys": ["Cara"], "content": "Crumbs lead to the witch.", "id": 2, "position": "after_char"},
    ]
    lore = Lore(global_=book_rules(read_lorebook({"entries": entries})))
    turn = Turn(get_format("alpaca"), persona=PERSONA)
    out = build_group_turn(group("swap"), 1, HISTORY, turn, lore, names=NAMES, count_tokens=words_count)
    assert "Crumbs lead to the witch.\nAlice, Bob, Cara share the bread.\n" in out.prompt.text
    assert out.prompt.report.lore == ("book #2: key 'Cara', recursion step 1", "book #1: key 'bread'")


def test_group_macros_and_speaker_card() -> None:
    g = group("swap")
    assert (
        group_macros("{{GROUP}} / {{charIfNotGroup}} / <group>", g)
        == "Alice, Bob, Cara / Alice, Bob, Cara / Alice, Bob, Cara"
    )
    card = speaker_card(g, 1, "Dana")
    assert card.post_history_instructions == "[Write the next reply only as {{char}}.]\nKeep it short."
    assert card.description == BOB.description  # {{char}} stays for the builder: the speaker


MEMBERS = [Member("alice.png", "Alice"), Member("bob.png", "Bob"), Member("cara.png", "Cara Lin")]
QUIET = [Member("alice.png", "Alice", 0.0), Member("bob.png", "Bob", 0.0), Member("cara.png", "Cara Lin", 0.0)]
CHATTY = [Member("alice.png", "Alice", 1.0), Member("bob.png", "Bob", 0.0), Member("cara.png", "Cara Lin", 1.0)]
BOLD = [Member("alice.png", "Alice", 1.0), Member("bob.png", "Bob", 1.0), Member("cara.png", "Cara Lin", 0.0)]
AFTER_BOB = [Said("Bread?", is_user=True, name="Dana"), Said("Loaves.", speaker="bob.png", name="Bob")]


@pytest.mark.parametrize(
    ("strategy", "members", "chat", "user_input", "allow_self", "seed", "expected"),
    [
        # natural: mentioned names first (any word of the name), then talkativeness rolls in shuffled order
        ("natural", QUIET, [], "lin and bob, hello", False, 0, ["cara.png", "bob.png"]),
        ("natural", CHATTY, [], "Bob?", False, 0, ["bob.png", "alice.png", "cara.png"]),
        ("natural", MEMBERS, [], "hello there", False, 0, ["alice.png", "bob.png"]),
        ("natural", MEMBERS, [], "hello there", False, 1, ["bob.png", "cara.png", "alice.png"]),
        # nobody rolled: one at random from the chatty ones (here none are: from all)
        ("natural", QUIET, [], "hello", False, 3, ["alice.png"]),
        # no typed input: the last message activates; its speaker may not reply to itself...
        ("natural", BOLD, AFTER_BOB, "", False, 0, ["alice.png"]),
        # ...unless self-responses are allowed
        ("natural", BOLD, AFTER_BOB, "", True, 0, ["alice.png", "bob.png"]),
        # ...but SillyTavern's last resort draws from every member, the last speaker too, when none is chatty
        ("natural", QUIET, AFTER_BOB, "", False, 0, ["bob.png"]),
        # muted members are never activated, not even by name
        ("natural", [Member("alice.png", "Alice", 0.0, muted=True), *QUIET[1:]], [], "Alice!", False, 3, ["cara.png"]),
        # list: every unmuted member in order
        ("list", MEMBERS, [], "hi", False, 0, ["alice.png", "bob.png", "cara.png"]),
        (
            "list",
            [MEMBERS[0], Member("bob.png", "Bob", muted=True), MEMBERS[2]],
            [],
            "hi",
            False,
            0,
            ["alice.png", "cara.png"],
        ),
        # manual: a typed message gets no reply; a trigger without input gets one member at random
        ("manual", MEMBERS, [], "hi", False, 0, []),
        ("manual", MEMBERS, AFTER_BOB, "", False, 1, ["bob.png"]),
        # pooled: one member who has not spoken since the user's message
        ("pooled", MEMBERS, AFTER_BOB, "", False, 0, ["cara.png"]),
        (
            "pooled",
            MEMBERS,
            [*AFTER_BOB, Said("Hm.", speaker="cara.png", name="Cara Lin")],
            "",
            False,
            0,
            ["alice.png"],
        ),
        # everyone has spoken: anyone but the last speaker
        (
            "pooled",
            MEMBERS,
            [*AFTER_BOB, Said("Hm.", speaker="cara.png"), Said("Hail.", speaker="alice.png", name="Alice")],
            "",
            False,
            0,
            ["cara.png"],
        ),
    ],
)
def test_reply_order(
    strategy: Strategy,
    members: list[Member],
    chat: list[Said],
    user_input: str,
    allow_self: bool,
    seed: int,
    expected: list[str],
) -> None:
    got = next_speakers(
        strategy, members, chat, user_input=user_input, allow_self_responses=allow_self, rng=random.Random(seed)
    )
    assert got == expected
    again = next_speakers(
        strategy, members, chat, user_input=user_input, allow_self_responses=allow_self, rng=random.Random(seed)
    )
    assert again == got  # seeded: repeatable


def test_natural_order_follows_talkativeness_over_many_turns() -> None:
    rng = random.Random(7)
    members = [Member("a", "A", 0.9), Member("b", "B", 0.1), Member("c", "C", 0.5)]
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(2000):
        for key in next_speakers("natural", members, [], user_input="hi", rng=rng):
            counts[key] += 1
    assert counts["a"] > counts["c"] > counts["b"]
    assert 1700 < counts["a"] < 1900  # 0.9 of 2000


def test_same_speaker_for_swipes() -> None:
    rng = random.Random(0)
    assert same_speaker(MEMBERS, AFTER_BOB, rng) == "bob.png"
    assert same_speaker(MEMBERS, [*AFTER_BOB, Said("and?", is_user=True)], rng) == "bob.png"
    assert same_speaker(MEMBERS, [Said("old", name="Alice")], rng) == "alice.png"  # no key: by name
    assert same_speaker(MEMBERS[:2], [Said("x", speaker="cara.png")], rng) is None  # left the group


def test_words_and_talkativeness() -> None:
    assert words("Hello, Cara-Lin! é") == ["hello", "cara", "lin"]
    assert talkativeness({"talkativeness": "0.25"}) == 0.25
    assert talkativeness({"talkativeness": True}) == 0.5
    assert talkativeness({}) == 0.5
    assert talkativeness({"talkativeness": "x"}) == 0.5


def test_prompt_cli_renders_a_group_turn_for_a_named_speaker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for c in (ALICE, BOB, CARA):
        path = tmp_path / f"{c.name}.json"
        path.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": c.model_dump()}))
        paths.append(str(path))
    chat = tmp_path / "chat.jsonl"
    lines = [{"name": n, "is_user": n == "Dana", "mes": m.text} for n, m in zip(NAMES, HISTORY, strict=True)]
    chat.write_text("\n".join(json.dumps(line) for line in lines))
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"entries": {"1": {"uid": 1, "key": ["bread"], "content": "Bread costs a coin."}}}))
    common = [paths[0], "--member", paths[1], "--member", paths[2], "--history", str(chat), "--lore", str(book)]
    common += ["--format", "alpaca", "--user", "Dana", "--persona", "{{user}} is a traveller.", "--muted", "Cara"]
    assert prompt_main([*common, "--speaker", "Bob"]) == 0
    out, err = capsys.readouterr()
    assert out == (  # alpaca's own system prompt; the World Info entry goes before the character
        "Continue this roleplay as Bob, replying to Dana in character.\nBread costs a coin.\nBob bakes bread for Dana."
        f"\nScenario: A market.\nDana is a traveller.{CHAT}\n[Write the next reply only as Bob.]\nKeep it short."
        "\n\n### Response:\nBob:"
    )
    assert 'stop strings: "\\n### Instruction:"' in err and '"\\nAlice:", "\\nCara:"' in err
    assert (
        prompt_main(
            [*common, "--speaker", "Cara", "--generation-mode", "join", "--join-prefix", "[<FIELDNAME> of {{char}}]"]
        )
        == 0
    )
    joined, _ = capsys.readouterr()
    body = JOIN_CARA.split("\n", 1)[1].replace("A market.\nBread costs a coin.\n", "A market.\n")
    assert joined == f"Continue this roleplay as Cara, replying to Dana in character.\nBread costs a coin.\n{body}"
    with pytest.raises(PromptError, match="'Dan' is not a member"):
        prompt_main([*common, "--speaker", "Dan"])
    with pytest.raises(PromptError, match="--member"):
        prompt_main([paths[0], "--speaker", "Bob"])


@pytest.mark.parametrize(
    ("strategy", "user_input", "seed", "first", "expected"),
    [
        ("natural", "Bob, any bread?", 0, "bob.png", SWAP_BOB),  # the mentioned member speaks first
        ("list", "Bob, any bread?", 0, "alice.png", SWAP_ALICE),  # the first unmuted member
        ("pooled", "Bob, any bread?", 2, "bob.png", SWAP_BOB),
        ("manual", "", 4, "bob.png", SWAP_BOB),  # a trigger without input: one member at random
    ],
)
def test_each_strategy_picks_a_speaker_whose_prompt_is_its_own(
    strategy: Strategy, user_input: str, seed: int, first: str, expected: str
) -> None:
    members = [Member("alice.png", "Alice", 0.0), Member("bob.png", "Bob", 0.0), Member("cara.png", "Cara", muted=True)]
    chat = [Said("Hail, Dana!", speaker="alice.png", name="Alice"), Said("Bob, any bread?", is_user=True, name="Dana")]
    speakers = next_speakers(strategy, members, chat, user_input=user_input, rng=random.Random(seed))
    assert speakers[0] == first and "cara.png" not in speakers
    index = [m.key for m in members].index(first)
    assert prompt("swap", index) == expected
