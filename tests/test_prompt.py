"""Prompt assembly: system prompt override, post-history instructions, author's note, lore positions,
and trimming (definitions survive, examples go first, then the oldest messages, the report says what
went) with a word counter, a property check, and the real llama.cpp tokenizer of a generated model."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moechat.cards.card import Card
from moechat.engine.engine import Engine
from moechat.errors import PromptError
from moechat.prompt.assemble import AuthorsNote, Budget, Message, Persona, Prompt, build, estimate_tokens
from moechat.prompt.formats import Format, get_format

METHARME, VICUNA, PYGMALION = get_format("metharme"), get_format("vicuna"), get_format("pygmalion")
CARD = Card(name="Seraphina", description="A forest guardian.", personality="kind")
HISTORY = [
    Message("model", "Welcome."),
    Message("user", "Where am I?"),
    Message("model", "My glade."),
    Message("user", "Thanks."),
]


def words(text: str) -> int:
    return len(text.split())


def body(text: str) -> str:
    """The Metharme prompt after its system block."""
    return text[text.index("<|model|>") :]


@dataclass(frozen=True)
class Hit:
    content: str
    position: str
    depth: int | None = None


@pytest.mark.parametrize(
    ("card_system", "global_system", "expected"),
    [
        ("", "Be {{char}}.", "Be Seraphina."),
        ("Only {{char}}.", "Be {{char}}.", "Only Seraphina."),
        ("{{original}} Dark tone.", "Be {{char}}.", "Be Seraphina. Dark tone."),
        ("{{ORIGINAL}} Dark tone.", "", "Dark tone."),
    ],
)
def test_card_system_prompt_replaces_the_global_one(card_system: str, global_system: str, expected: str) -> None:
    card = Card(name="Seraphina", system_prompt=card_system)
    text = build(card, HISTORY[:1], fmt=VICUNA, system_prompt=global_system).text
    assert text == f"{expected} ASSISTANT: Welcome.</s>ASSISTANT:"


def test_post_history_instructions_come_right_before_the_cue() -> None:
    card = Card(name="Seraphina", post_history_instructions="{{original}} Reply as {{char}}.")
    meth = build(card, HISTORY, fmt=METHARME, post_history="Be brief.", system_prompt="")
    assert body(meth.text).endswith("<|user|>You: Thanks.<|system|>Be brief. Reply as Seraphina.<|model|>Seraphina:")
    vic = build(card, HISTORY, fmt=VICUNA, post_history="Be brief.", system_prompt="")
    assert vic.text.endswith("USER: Thanks.\nBe brief. Reply as Seraphina. ASSISTANT:")
    cont = build(card, HISTORY[:3], fmt=METHARME, post_history="", system_prompt="", mode="continue")
    assert cont.text.endswith("<|system|>Reply as Seraphina.<|model|>Seraphina: My glade.")
    assert cont.report.sections["post_history"] == estimate_tokens("Reply as Seraphina.")


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        (AuthorsNote("N", depth=0), "<|model|>Seraphina: Welcome.<|user|>You: Where am I?<|model|>Seraphina: My glade."
         "<|user|>You: Thanks.<|system|>N<|model|>Seraphina:"),
        (AuthorsNote("N", depth=2), "<|model|>Seraphina: Welcome.<|user|>You: Where am I?<|system|>N"
         "<|model|>Seraphina: My glade.<|user|>You: Thanks.<|model|>Seraphina:"),
        (AuthorsNote("N", depth=9), "<|system|>N<|model|>Seraphina: Welcome.<|user|>You: Where am I?"
         "<|model|>Seraphina: My glade.<|user|>You: Thanks.<|model|>Seraphina:"),
        (AuthorsNote("N", depth=0, interval=2), "<|user|>You: Thanks.<|system|>N<|model|>Seraphina:"),
        (AuthorsNote("N", depth=0, interval=3), "<|user|>You: Thanks.<|model|>Seraphina:"),
        (AuthorsNote("N", depth=0, interval=0), "<|user|>You: Thanks.<|model|>Seraphina:"),
        (AuthorsNote("", depth=0), "<|user|>You: Thanks.<|model|>Seraphina:"),
    ],
)  # fmt: skip
def test_authors_note_at_depth_every_k_user_messages(note: AuthorsNote, expected: str) -> None:
    text = build(CARD, HISTORY, fmt=METHARME, note=note, system_prompt="").text
    assert text.endswith(expected)


def test_authors_note_interval_counts_user_messages() -> None:
    note = AuthorsNote("N", depth=0, interval=2)
    one_user = build(CARD, HISTORY[:2], fmt=METHARME, note=note).text
    assert "<|system|>N" not in one_user
    assert build(CARD, HISTORY[:1], fmt=METHARME, note=AuthorsNote("N", depth=0)).text.count("<|system|>N") == 0


def test_lore_goes_where_its_position_says() -> None:
    card = Card(name="Seraphina", description="D.", personality="P.", scenario="S.", mes_example="{{user}}: x")
    lore = [
        Hit("before", "before_char"),
        Hit("after", "after_char"),
        Hit("odd", "somewhere_new"),
        Hit("pers", "personality"),
        Hit("scen", "scenario"),
        Hit("extop", "examples_top"),
        Hit("exbottom", "examples_bottom"),
        Hit("deep", "at_depth", 1),
        Hit("antop", "an_top"),
    ]
    prompt = build(card, HISTORY, fmt=VICUNA, lore=lore, note=AuthorsNote("AN", depth=0), system_prompt="")
    system = "before\nD.\nSeraphina's personality: P.\npers\nScenario: S.\nscen\nafter\nodd\nextop\n<START>\nYou: x"
    system += "\nexbottom"
    assert prompt.text == (
        f"{system} ASSISTANT: Welcome.</s>USER: Where am I? ASSISTANT: My glade.</s>USER: deep\nThanks.\nantop\nAN"
        " ASSISTANT:"
    )
    assert prompt.report.dropped_lore == ()
    assert prompt.report.sections["lore"] == sum(estimate_tokens(h.content) for h in lore[:8])


def test_real_lorebook_selection_plugs_in() -> None:
    from moechat.cards.lore_scan import scan
    from moechat.cards.lorebook import read_lorebook
    from moechat.cards.world_info import book_rules

    entry = {"keys": ["glade"], "content": "The glade is sacred to {{char}}.", "id": 1, "position": "before_char"}
    hits = scan(book_rules(read_lorebook({"entries": [entry]})), [m.text for m in HISTORY], words).fired
    prompt = build(CARD, HISTORY, fmt=METHARME, lore=hits, count_tokens=words)
    assert "\nThe glade is sacred to Seraphina.\n" in prompt.text


# ---- trimming ------------------------------------------------------------------------------------------
LONG = Card(
    name="Seraphina",
    description="A forest guardian who watches the old glade.",
    personality="kind and protective",
    scenario="Dawn in the glade.",
    mes_example="<START>\n{{user}}: one two three\n{{char}}: four five six\n<START>\n{{user}}: seven\n{{char}}: eight",
)
CHAT = [Message("model" if i % 2 == 0 else "user", f"message {i} " + "word " * i) for i in range(8)]


def fitted(context: int, fmt: Format = METHARME, lore: Sequence[Hit] = (), history: list[Message] = CHAT) -> Prompt:
    return build(LONG, history, fmt=fmt, lore=lore, count_tokens=words, budget=Budget(context, 0, 0))


def test_everything_fits_and_sections_add_up_to_the_total() -> None:
    prompt = fitted(10_000)
    report = prompt.report
    assert (report.dropped_examples, report.dropped_messages, report.dropped_lore) == ((), (), ())
    assert report.total == words(prompt.text) and sum(report.sections.values()) == report.total
    assert report.first_message == 0 and not report.estimated and report.budget == 10_000


@pytest.mark.parametrize("fmt", [METHARME, VICUNA, PYGMALION], ids=lambda f: f.name)
def test_examples_go_first_then_the_oldest_messages(fmt: Format) -> None:
    full = fitted(10_000, fmt).report.total
    one_less = fitted(full - 1, fmt).report
    assert (one_less.dropped_examples, one_less.dropped_messages) == ((1,), ())
    no_examples = fitted(10_000, fmt, history=CHAT).report.total - fitted(10_000, fmt).report.sections["examples"]
    tight = fitted(no_examples - 1, fmt)
    assert tight.report.dropped_examples == (0, 1)
    assert tight.report.dropped_messages == (0,) and tight.report.first_message == 1
    assert "message 0" not in tight.text and "one two three" not in tight.text
    assert "A forest guardian who watches the old glade." in tight.text and tight.report.total <= no_examples - 1


def test_definitions_and_the_newest_message_survive_the_smallest_budget() -> None:
    floor = next(n for n in range(1, 500) if _fits(n))
    prompt = fitted(floor)
    assert prompt.report.dropped_messages == tuple(range(7)) and prompt.report.dropped_examples == (0, 1)
    assert "A forest guardian who watches the old glade." in prompt.text and "message 7" in prompt.text
    with pytest.raises(PromptError, match="definitions and the newest message need about"):
        fitted(floor - 1)


def _fits(context: int) -> bool:
    try:
        fitted(context)
    except PromptError:
        return False
    return True


def test_lore_is_kept_before_history_and_dropped_when_nothing_else_is_left() -> None:
    lore = [Hit("low order lore entry", "after_char"), Hit("high order lore entry", "at_depth", 2)]
    full = fitted(10_000, lore=lore).report
    assert full.dropped_lore == () and full.sections["lore"] == 8
    floor = next(n for n in range(1, 500) if _fits(n))
    squeezed = fitted(floor + 4, lore=lore)
    assert squeezed.report.dropped_lore == (0,) and "high order lore entry" in squeezed.text
    assert squeezed.report.dropped_messages == tuple(range(7))


def test_no_tokenizer_means_an_estimate() -> None:
    report = build(LONG, CHAT, fmt=METHARME).report
    assert report.estimated and report.total == estimate_tokens(build(LONG, CHAT, fmt=METHARME).text)


def test_impossible_budgets_and_bad_modes_are_prompt_errors() -> None:
    with pytest.raises(PromptError, match="no room"):
        build(LONG, CHAT, fmt=METHARME, budget=Budget(context=512, reserve=512))
    with pytest.raises(PromptError, match="continue needs"):
        build(LONG, CHAT, fmt=METHARME, mode="continue")


@settings(max_examples=60, deadline=None)
@given(context=st.integers(min_value=60, max_value=260), name=st.sampled_from(["metharme", "vicuna", "chatml"]))
def test_any_budget_keeps_a_newest_suffix_and_an_examples_prefix(context: int, name: str) -> None:
    try:
        prompt = fitted(context, get_format(name))
    except PromptError:
        return
    report = prompt.report
    assert report.total <= context
    assert report.dropped_messages == tuple(range(report.first_message or 0))
    assert report.dropped_examples == tuple(range(2 - len(report.dropped_examples), 2))
    assert report.dropped_examples == (0, 1) or not report.dropped_messages  # examples go before messages
    assert "A forest guardian who watches the old glade." in prompt.text and "message 7" in prompt.text


# ---- the real tokenizer --------------------------------------------------------------------------------
def test_trimming_with_the_real_tokenizer(tiny_moe_path: Path) -> None:
    with Engine.load(tiny_moe_path, n_ctx=512, capture="off") as engine:
        count = engine.count_tokens
        persona = Persona("Ann", "A traveller.")

        def fit(context: int) -> Prompt:
            return build(LONG, CHAT, fmt=METHARME, persona=persona, count_tokens=count, budget=Budget(context, 0, 0))

        full = fit(100_000)
        assert full.report.total == len(engine.tokenize(full.text, add_bos=False))
        assert sum(full.report.sections.values()) == full.report.total
        one_less = fit(full.report.total - 1).report
        assert (one_less.dropped_examples, one_less.dropped_messages) == ((1,), ())
        tight = fit(full.report.total - full.report.sections["examples"] - 1)
        assert tight.report.dropped_examples == (0, 1) and tight.report.dropped_messages[:1] == (0,)
        assert tight.report.total <= full.report.total - full.report.sections["examples"] - 1
        assert tight.report.total == count(tight.text)
        assert "A forest guardian who watches the old glade." in tight.text and "message 7" in tight.text
