"""Chat completion messages as prompt text: SillyTavern's trailing Continue/Impersonate instruction is never
glued onto the character's message, and the stop strings are the model's own (pure: formats, no model)."""

from __future__ import annotations

import pytest

from moechat.api.chat_prompt import chat_prompt
from moechat.api.schema import ChatRequest
from moechat.prompt import formats

CHATML = (  # Qwen-style: a default system block when the chat has none
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
STRICT = (  # Mistral-style: user/assistant only, alternating
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
NUDGE = "[Continue the following message. Do not include ANY parts of the original message.]"
CHAT = [
    {"role": "user", "content": "Where am I?"},
    {"role": "assistant", "content": "In my glade. I am determined to"},
    {"role": "system", "content": NUDGE},
]


def render(messages: list[dict], fmt: formats.Format) -> tuple[str, tuple[str, ...]]:
    return chat_prompt(ChatRequest(messages=messages), fmt)


def chatml() -> formats.Format:
    return formats.get_format("jinja", CHATML, bos="<|endoftext|>", eos="<|im_end|>", ends=("<|endoftext|>",))


def test_a_chatml_template_keeps_the_instruction_as_its_own_system_turn():
    text, _ = render(CHAT, chatml())
    assert "I am determined to<|im_end|>\n<|im_start|>system\n" + NUDGE + "<|im_end|>\n<|im_start|>assistant\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_a_template_without_system_turns_gets_the_instruction_as_a_user_turn():
    fmt = formats.get_format("jinja", STRICT)
    assert not fmt.system_turns
    text, _ = render(CHAT, fmt)
    assert text == "[INST] Where am I? [/INST]In my glade. I am determined to</s>[INST] " + NUDGE + " [/INST]"


@pytest.mark.parametrize(
    ("name", "expected_end"),
    [
        ("metharme", "I am determined to<|system|>" + NUDGE + "<|model|>"),
        ("vicuna", "I am determined to</s>USER: " + NUDGE + " ASSISTANT:"),
        (
            "chatml",
            "I am determined to<|im_end|>\n<|im_start|>system\n" + NUDGE + "<|im_end|>\n<|im_start|>assistant\n",
        ),
    ],
)
def test_builtin_formats_never_glue_the_instruction_to_the_reply(name, expected_end):
    text, _ = render(CHAT, formats.get_format(name))
    assert text.endswith(expected_end)


def test_impersonate_instruction_after_a_user_message_joins_it_where_no_system_turns():
    messages = [*CHAT[:2], {"role": "user", "content": "Tell me."}, {"role": "system", "content": "[Write as Ann.]"}]
    text, _ = render(messages, formats.get_format("vicuna"))
    assert text.endswith("USER: Tell me.\n[Write as Ann.] ASSISTANT:")


def test_the_templates_own_stops_without_a_guessed_user_name():
    _, stops = render(CHAT[:1], chatml())
    assert stops == ("<|im_end|>", "<|endoftext|>", "<|im_start|>user")  # not the default system block


def test_the_user_name_stop_comes_from_name_fields_or_names_in_content():
    named = [{"role": "user", "content": "Hi", "name": "Ann"}]
    assert render(named, chatml())[1][-1] == "\nAnn:"
    in_content = [{"role": "user", "content": "Ann: Hi"}, {"role": "assistant", "content": "Hello"},
                  {"role": "user", "content": "Ann: Where am I?"}]  # fmt: skip
    assert render(in_content, chatml())[1][-1] == "\nAnn:"
    once = [{"role": "user", "content": "Note: be brief"}]  # one message is no evidence of a name
    assert not any(s.startswith("\n") for s in render(once, chatml())[1])
