"""A chat completion's messages as prompt text in the model's format, and the stop strings that go with it.

- The format is the model's usual one (moechat.prompt.formats), or `moechat.format`; the model's own Jinja
  template gets its real BOS/EOS and end-of-turn token texts from the GGUF, so its stop strings are what
  the model writes (`<|im_end|>`, not `</s>`).
- System messages stay where they are when the format writes system turns mid-chat (ChatML and templates
  that accept them); otherwise a note joins the next user message. SillyTavern's Continue and Impersonate
  instructions arrive as trailing system messages after the character's message: in a format without
  mid-chat system turns they become a user message of their own, never part of the character's message.
- A last assistant message is continued rather than answered.
- Speaker names come from `name` fields, or from a "Name: " that starts every user message (SillyTavern's
  "names in message content"); a stop on the user's name is only added when the name is known.
"""

from __future__ import annotations

import dataclasses
import re

from moechat.api.schema import ChatMessage, ChatRequest
from moechat.engine.engine import Engine
from moechat.prompt import formats

ROLES: dict[str, formats.Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "model"}
CONTENT_NAME = re.compile(r"^([^\n:]{1,40}): ")


def model_format(engine: Engine, name: str | None = None) -> formats.Format:
    """The format `name` (default: the model's usual one), with the model's own special-token texts."""
    info, tokens = engine.info, engine.template_tokens()
    fmt_name = name or formats.default_format(info.name, info.chat_template)
    return formats.get_format(fmt_name, info.chat_template, bos=tokens.bos, eos=tokens.eos, ends=tokens.ends)


def chat_prompt(req: ChatRequest, fmt: formats.Format) -> tuple[str, tuple[str, ...]]:
    """The prompt text for the request's messages in `fmt`, and the format's stop strings."""
    messages = req.messages
    turns = [formats.Turn(ROLES[m.role], m.text(), name=m.name or "") for m in messages]
    if not fmt.system_turns:
        turns = _trailing_notes_as_user(turns)
    char = next((m.name for m in reversed(messages) if m.role == "assistant" and m.name), "")
    user = next((m.name for m in reversed(messages) if m.role == "user" and m.name), "") or _content_name(messages)
    mode: formats.Mode = "continue" if messages[-1].role == "assistant" else "reply"
    text = formats.render(fmt, turns, mode, char=char, user=user or "User")
    if not user:  # no persona name: a "\nUser:" stop would be a guess
        fmt = dataclasses.replace(fmt, stops=tuple(s for s in fmt.stops if "{{user}}" not in s))
    return text, formats.stop_strings(fmt, char=char, user=user)


def _trailing_notes_as_user(turns: list[formats.Turn]) -> list[formats.Turn]:
    """System messages after the last non-system message that follow a reply: one user message."""
    end = len(turns)
    while end > 1 and turns[end - 1].role == "system":
        end -= 1
    if end == len(turns) or turns[end - 1].role != "model":
        return turns
    note = "\n".join(t.text for t in turns[end:])
    return [*turns[:end], formats.Turn("user", note)]


def _content_name(messages: list[ChatMessage]) -> str:
    """The speaker name every user message starts with ("Ann: ..."), when there are two or more of them."""
    users = [m.text() for m in messages if m.role == "user"]
    names = {match.group(1) for match in map(CONTENT_NAME.match, users) if match}
    ok = len(users) >= 2 and len(names) == 1 and all(CONTENT_NAME.match(u) for u in users)
    return names.pop() if ok else ""
