"""Exact prompt strings per format (docs/formats.md §3), hand-written: a card with examples and a 4-message
chat, an empty card, continue/impersonate endings, stop strings, and the embedded Jinja template."""

import pytest

from moechat.cards.card import Card
from moechat.errors import PromptError
from moechat.gguf.tiny import CHAT_TEMPLATE
from moechat.prompt.assemble import Message, Persona, build
from moechat.prompt.formats import default_format, format_names, get_format

CARD = Card(
    name="Seraphina",
    description="A forest guardian.",
    personality="kind",
    scenario="A glade at dawn, {{user}} nearby.",
    mes_example="<START>\n{{user}}: Hi\n{{char}}: Hello, {{user}}.",
)
HISTORY = [
    Message("model", "Welcome."),
    Message("user", "Where am I?"),
    Message("model", "My glade."),
    Message("user", "Thanks."),
]
ANN = Persona("Ann", "A traveller.")
RP = "Continue this roleplay as Seraphina, replying to Ann in character."
DEFS = "A forest guardian.\nSeraphina's personality: kind\nScenario: A glade at dawn, Ann nearby.\nA traveller."
EXAMPLE = "<START>\nAnn: Hi\nSeraphina: Hello, Ann."
SYS = f"{RP}\n{DEFS}\n{EXAMPLE}"
METHARME = (
    "<|system|>Enter RP mode. Pretend to be Seraphina whose persona follows:\n"
    f"{DEFS}\n\n"  # the blank line of the Pygmalion-2 model card; no separator after the examples
    "You shall reply to the user while staying in character, and generate long responses."
    "<|user|>Ann: Hi<|model|>Seraphina: Hello, Ann."
    "<|model|>Seraphina: Welcome.<|user|>Ann: Where am I?<|model|>Seraphina: My glade.<|user|>Ann: Thanks."
    "<|model|>Seraphina:"
)
PYGMALION = (
    "Seraphina's Persona: A forest guardian.\nSeraphina's personality: kind\n"
    "Scenario: A glade at dawn, You nearby.\nA traveller.\n"
    "<START>\nYou: Hi\nSeraphina: Hello, You.\n"
    "<START>\nSeraphina: Welcome.\nYou: Where am I?\nSeraphina: My glade.\nYou: Thanks.\nSeraphina:"
)
VICUNA = f"{SYS} ASSISTANT: Welcome.</s>USER: Where am I? ASSISTANT: My glade.</s>USER: Thanks. ASSISTANT:"
ALPACA = (
    f"{SYS}\n\n### Response:\nSeraphina: Welcome.\n\n### Instruction:\nAnn: Where am I?\n\n"
    "### Response:\nSeraphina: My glade.\n\n### Instruction:\nAnn: Thanks.\n\n### Response:\nSeraphina:"
)
CHATML = (
    f"<|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>assistant\nWelcome.<|im_end|>\n"
    "<|im_start|>user\nWhere am I?<|im_end|>\n<|im_start|>assistant\nMy glade.<|im_end|>\n"
    "<|im_start|>user\nThanks.<|im_end|>\n<|im_start|>assistant\n"
)
LLAMA2 = (
    f"[INST] <<SYS>>\n{SYS}\n<</SYS>>\n\n [/INST] Welcome. </s><s>[INST] Where am I? [/INST] My glade. </s><s>"
    "[INST] Thanks. [/INST]"
)
JINJA = (
    f"<|system|>{SYS}\n<|assistant|>Welcome.\n<|user|>Where am I?\n<|assistant|>My glade.\n<|user|>Thanks.\n"
    "<|assistant|>"
)


def fmt(name: str):
    return get_format(name, CHAT_TEMPLATE)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("metharme", METHARME),
        ("pygmalion", PYGMALION),
        ("vicuna", VICUNA),
        ("alpaca", ALPACA),
        ("chatml", CHATML),
        ("llama2", LLAMA2),
        ("jinja", JINJA),
    ],
)
def test_full_prompt_per_format(name: str, expected: str) -> None:
    assert build(CARD, HISTORY, fmt=fmt(name), persona=ANN).text == expected


EMPTY = Card(name="Bob")
HI = [Message("user", "Hi")]


@pytest.mark.parametrize(
    ("name", "system", "expected"),
    [
        (
            "metharme",
            None,
            "<|system|>Enter RP mode. Pretend to be Bob whose persona follows:\n\nYou shall reply to the user while "
            "staying in character, and generate long responses.<|user|>You: Hi<|model|>Bob:",
        ),
        (
            "metharme",
            "",
            "<|system|>You shall reply to the user while staying in character, and generate long responses."
            "<|user|>You: Hi<|model|>Bob:",
        ),
        ("pygmalion", None, "<START>\nYou: Hi\nBob:"),
        ("vicuna", None, "Continue this roleplay as Bob, replying to You in character. USER: Hi ASSISTANT:"),
        ("vicuna", "", "USER: Hi ASSISTANT:"),
        ("alpaca", "", "### Instruction:\nYou: Hi\n\n### Response:\nBob:"),
        ("chatml", "", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        ("llama2", "", "[INST] Hi [/INST]"),
        ("jinja", "", "<|user|>Hi\n<|assistant|>"),
    ],
)
def test_empty_card_fields_leave_no_empty_lines(name: str, system: str | None, expected: str) -> None:
    assert build(EMPTY, HI, fmt=fmt(name), system_prompt=system).text == expected


@pytest.mark.parametrize(
    ("name", "ending"),
    [
        ("metharme", "<|user|>Ann: Where am I?<|model|>Seraphina: My gla"),
        ("pygmalion", "You: Where am I?\nSeraphina: My gla"),
        ("vicuna", "USER: Where am I? ASSISTANT: My gla"),
        ("alpaca", "### Instruction:\nAnn: Where am I?\n\n### Response:\nSeraphina: My gla"),
        ("chatml", "<|im_start|>user\nWhere am I?<|im_end|>\n<|im_start|>assistant\nMy gla"),
        ("llama2", "[INST] Where am I? [/INST] My gla"),
        ("jinja", "<|user|>Where am I?\n<|assistant|>My gla"),
    ],
)
def test_continue_leaves_the_last_reply_open(name: str, ending: str) -> None:
    history = [*HISTORY[:2], Message("model", "My gla")]
    text = build(CARD, history, fmt=fmt(name), persona=ANN, mode="continue").text
    assert text.endswith(ending)


@pytest.mark.parametrize(
    ("name", "ending"),
    [
        ("metharme", "<|model|>Seraphina: My glade.<|user|>Ann:"),
        ("pygmalion", "Seraphina: My glade.\nYou:"),
        ("vicuna", "ASSISTANT: My glade.</s>USER:"),
        ("alpaca", "### Response:\nSeraphina: My glade.\n\n### Instruction:\nAnn:"),
        ("chatml", "<|im_start|>assistant\nMy glade.<|im_end|>\n<|im_start|>user\n"),
        ("llama2", "[/INST] My glade. </s><s>[INST]"),
        ("jinja", "<|assistant|>My glade.\n<|user|>"),
    ],
)
def test_impersonate_cues_the_user(name: str, ending: str) -> None:
    text = build(CARD, HISTORY[:3], fmt=fmt(name), persona=ANN, mode="impersonate").text
    assert text.endswith(ending)


@pytest.mark.parametrize(
    ("name", "stops"),
    [
        ("metharme", ("<|user|>", "<|system|>", "<|model|>", "</s>", "\nAnn:")),
        ("pygmalion", ("\nYou:", "\n<START>", "</s>")),
        ("vicuna", ("</s>", "\nUSER:", "USER:", "\nAnn:")),
        ("alpaca", ("\n### Instruction:", "### Instruction:", "</s>", "\nAnn:")),
        ("chatml", ("<|im_end|>", "<|im_start|>", "</s>", "\nAnn:")),
        ("llama2", ("</s>", "[INST]", "\nAnn:")),
        ("jinja", ("</s>", "<|user|>", "\nAnn:")),
    ],
)
def test_stop_strings_keep_the_model_out_of_the_users_lines(name: str, stops: tuple[str, ...]) -> None:
    assert build(CARD, HISTORY, fmt=fmt(name), persona=ANN).stops == stops


def test_aliases_and_unknown_names() -> None:
    assert get_format("Pygmalion-2").name == "metharme"
    assert get_format("xwin").name == "vicuna"
    with pytest.raises(PromptError, match="known formats: metharme, pygmalion, vicuna, alpaca, chatml, llama2, jinja"):
        get_format("mistral")
    with pytest.raises(PromptError, match="has none; choose one of: metharme"):
        get_format("jinja", None)
    assert format_names()[-1] == "jinja"


@pytest.mark.parametrize(
    ("model", "template", "expected"),
    [
        ("PygWin 2x7B", None, "metharme"),
        ("pygwin-2x7b.Q4_K_M", CHAT_TEMPLATE, "metharme"),
        ("Pygmalion-2-7B", None, "metharme"),
        ("Xwin-LM-7B-V0.2", None, "vicuna"),
        ("pygmalion-6b", None, "pygmalion"),
        ("tiny", CHAT_TEMPLATE, "jinja"),
        ("some model", None, "metharme"),
    ],
)
def test_default_format_from_model_name_then_template(model: str, template: str | None, expected: str) -> None:
    assert default_format(model, template) == expected


STRICT = (  # Llama-2's own template: raises unless roles alternate starting with the user
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% endif %}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def test_strict_jinja_template_gets_alternating_roles_and_no_leading_bos() -> None:
    history = [Message("model", "Welcome."), Message("user", "Hi")]
    text = build(EMPTY, history, fmt=get_format("jinja", STRICT), system_prompt="Be Bob.").text
    assert text == "[INST] Be Bob. [/INST] Welcome. </s><s>[INST] Hi [/INST]"


def test_jinja_template_runs_sandboxed() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(PromptError, match="chat template"):
        build(EMPTY, HI, fmt=get_format("jinja", evil))


def test_nickname_names_the_character() -> None:
    card = Card(name="Seraphina Greenleaf", nickname="Sera", description="{{char}} guards the glade.")
    text = build(card, HI, fmt=get_format("metharme"), system_prompt="").text
    assert text == (
        "<|system|>Sera guards the glade.\n\nYou shall reply to the user while staying in character, and generate "
        "long responses.<|user|>You: Hi<|model|>Sera:"
    )
