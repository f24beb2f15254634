"""Prompt formats as data (docs/formats.md §3) and their rendering: a list of `Turn`s becomes prompt text.

A `Format` is the strings around each role, whether speaker names are written (`You: hi`), whether the
format has system turns mid-chat (else they are folded into the nearest user turn), where example
dialogue goes, the default system prompt and the stop strings. The GGUF's own Jinja chat template is
one more format, rendered in a sandbox. Nothing here knows cards or budgets: see `moechat.prompt`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from moechat.errors import PromptError

Role = Literal["system", "user", "model"]
Mode = Literal["reply", "continue", "impersonate"]
ROLEPLAY_SYSTEM = "Continue this roleplay as {{char}}, replying to {{user}} in character."
MARK = "\x00moechat-cut\x00"  # cut point when rendering partial turns through a Jinja template


@dataclass(frozen=True)
class Turn:
    """One item of the prompt: `raw` turns (conversation separators) are written verbatim."""

    role: Role
    text: str
    name: str = ""
    raw: bool = False


@dataclass(frozen=True)
class Format:
    """A prompt format. Wrappers are (prefix, suffix); `{{user}}`/`{{char}}` in `stops` and
    `labels` stand for the speaker names. `labels` prefix description, personality and scenario."""

    name: str
    title: str
    system: tuple[str, str]
    user: tuple[str, str]
    model: tuple[str, str]
    stops: tuple[str, ...]
    names: bool = False
    system_turns: bool = True
    system_in_user: bool = False
    examples_as_turns: bool = False
    separator: str = ""
    default_system: str = ROLEPLAY_SYSTEM
    closing: str = ""
    user_label: str | None = None
    labels: tuple[str, str, str] = ("", "{{char}}'s personality: ", "Scenario: ")
    template: str | None = None
    bos: str = "<s>"
    eos: str = "</s>"


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "metharme",
            "Metharme / Pygmalion-2 (<|system|> <|user|> <|model|>)",
            ("<|system|>", ""),
            ("<|user|>", ""),
            ("<|model|>", ""),
            ("<|user|>", "<|system|>", "<|model|>", "</s>", "\n{{user}}:"),
            names=True,
            examples_as_turns=True,
            default_system="Enter RP mode. Pretend to be {{char}} whose persona follows:",
            closing="\nYou shall reply to the user while staying in character, and generate long responses.",
        ),
        Format(
            "pygmalion",
            "classic Pygmalion persona (Persona:, <START>, You:)",
            ("", "\n"),
            ("", "\n"),
            ("", "\n"),
            ("\nYou:", "\n<START>", "</s>"),
            names=True,
            examples_as_turns=True,
            separator="<START>\n",
            default_system="",
            closing="<START>",
            user_label="You",
            labels=("{{char}}'s Persona: ", "{{char}}'s personality: ", "Scenario: "),
        ),
        Format(
            "vicuna",
            "Vicuna v1.1 / Xwin (USER: ASSISTANT:)",
            ("", " "),
            ("USER: ", " "),
            ("ASSISTANT: ", "</s>"),
            ("</s>", "\nUSER:", "USER:", "\n{{user}}:"),
            system_turns=False,
        ),
        Format(
            "alpaca",
            "Alpaca (### Instruction: ### Response:)",
            ("", "\n\n"),
            ("### Instruction:\n", "\n\n"),
            ("### Response:\n", "\n\n"),
            ("\n### Instruction:", "### Instruction:", "</s>", "\n{{user}}:"),
            names=True,
            system_turns=False,
        ),
        Format(
            "chatml",
            "ChatML (<|im_start|>role ... <|im_end|>)",
            ("<|im_start|>system\n", "<|im_end|>\n"),
            ("<|im_start|>user\n", "<|im_end|>\n"),
            ("<|im_start|>assistant\n", "<|im_end|>\n"),
            ("<|im_end|>", "<|im_start|>", "</s>", "\n{{user}}:"),
        ),
        Format(
            "llama2",
            "Llama-2 chat ([INST] <<SYS>>)",
            ("<<SYS>>\n", "\n<</SYS>>\n\n"),
            ("[INST] ", " [/INST]"),
            (" ", " </s><s>"),
            ("</s>", "[INST]", "\n{{user}}:"),
            system_turns=False,
            system_in_user=True,
        ),
    )
}
ALIASES = {"pygmalion-2": "metharme", "pyg2": "metharme", "xwin": "vicuna", "vicuna-1.1": "vicuna", "llama-2": "llama2"}
JINJA = "jinja"


def format_names() -> list[str]:
    """Every name `get_format` accepts (aliases aside)."""
    return [*FORMATS, JINJA]


def get_format(
    name: str, chat_template: str | None = None, *, bos: str = "<s>", eos: str = "</s>", ends: tuple[str, ...] = ()
) -> Format:
    """The format called `name`; "jinja" needs the model's `chat_template` (and its BOS/EOS text, and the
    text of its other end-of-turn tokens as `ends`)."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key == JINJA:
        if not chat_template:
            raise PromptError(
                f"format 'jinja' needs the model's embedded chat template and this model has none; "
                f"choose one of: {', '.join(FORMATS)}"
            )
        return jinja_format(chat_template, bos=bos, eos=eos, ends=ends)
    if key not in FORMATS:
        raise PromptError(f"unknown prompt format {name!r}; known formats: {', '.join(format_names())}")
    return FORMATS[key]


def jinja_format(template: str, *, bos: str = "<s>", eos: str = "</s>", ends: tuple[str, ...] = ()) -> Format:
    """The GGUF's embedded chat template as a format. It keeps system messages mid-chat when the template
    writes them there; it stops on EOS, the other end-of-turn texts and the template's user prefix."""
    plain = Format(JINJA, "the model's embedded chat template", ("", ""), ("", ""), ("", ""), (), template=template)
    fmt = dataclasses.replace(plain, bos=bos, eos=eos, system_turns=False)
    stops = tuple(dict.fromkeys(s for s in (eos, *ends, _user_prefix(fmt), "\n{{user}}:") if s))
    return dataclasses.replace(fmt, stops=stops, system_turns=_writes_mid_chat_system(fmt))


def _user_prefix(fmt: Format) -> str:
    """What the template writes before a user message that follows a reply (not the opening system block
    some templates add to a conversation's start); "" when the template cannot tell."""
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    try:
        before = _apply_template(fmt, chat, False)
        after = _apply_template(fmt, [*chat, {"role": "user", "content": MARK}], False)
    except PromptError:
        return ""
    if not after.startswith(before) or MARK not in after:
        return ""
    return after[len(before) :].split(MARK, 1)[0].strip()


def _writes_mid_chat_system(fmt: Format) -> bool:
    roles = [("user", "a"), ("assistant", "b"), ("system", MARK), ("user", "c")]
    try:
        text = _apply_template(fmt, [{"role": role, "content": text} for role, text in roles], True)
    except PromptError:
        return False
    return MARK in text


def default_format(model_name: str = "", chat_template: str | None = None) -> str:
    """The format a model was trained on, guessed from its name, else its template, else Metharme."""
    name = model_name.lower()
    rules = (
        (("pygwin", "pygmalion-2", "pygmalion2", "metharme", "mythalion"), "metharme"),
        (("xwin", "vicuna", "wizard-vicuna"), "vicuna"),
        (("pygmalion",), "pygmalion"),
        (("alpaca",), "alpaca"),
        (("llama-2-7b-chat", "llama-2-13b-chat", "llama2-chat", "llama-2-chat"), "llama2"),
    )
    for needles, fmt in rules:
        if any(needle in name for needle in needles):
            return fmt
    if chat_template:
        return JINJA
    return "metharme"


def stop_strings(fmt: Format, *, char: str, user: str) -> tuple[str, ...]:
    """The format's stop strings with the speaker names filled in, duplicates removed."""
    filled = (s.replace("{{user}}", user).replace("{{char}}", char) for s in fmt.stops)
    return tuple(dict.fromkeys(filled))


def wrapper(fmt: Format, role: Role) -> tuple[str, str]:
    return {"system": fmt.system, "user": fmt.user, "model": fmt.model}[role]


def spoken(fmt: Format, turn: Turn) -> str:
    """The turn's text, after `Name: ` when the format writes speaker names."""
    return f"{turn.name}: {turn.text}" if fmt.names and turn.name and turn.role != "system" else turn.text


def render_turn(fmt: Format, turn: Turn, *, open_end: bool = False) -> str:
    """One turn as text; `open_end` leaves off the end-of-turn suffix (continue)."""
    if turn.raw:
        return turn.text
    prefix, suffix = wrapper(fmt, turn.role)
    return prefix + spoken(fmt, turn) + ("" if open_end else suffix)


def cue(fmt: Format, role: Role, name: str) -> str:
    """What makes the model speak as `role`: the prefix and `Name:`, or the prefix without its
    trailing space (a SentencePiece model writes the space as part of its first word)."""
    prefix = wrapper(fmt, role)[0]
    return f"{prefix}{name}:" if fmt.names and name else prefix.rstrip(" ")


def fold_system(fmt: Format, turns: list[Turn]) -> list[Turn]:
    """Turns the format can write: without mid-chat system turns, a note joins the next user turn,
    else the previous turn; with `system_in_user`, the opening system block opens the first user turn."""
    out = list(turns)
    start = 1 if out and out[0].role == "system" and not out[0].raw else 0
    i = start
    while i < len(out):
        if out[i].role == "system" and not out[i].raw and not fmt.system_turns:
            note = out.pop(i)
            if i < len(out) and out[i].role == "user":
                out[i] = dataclasses.replace(out[i], text=f"{note.text}\n{out[i].text}")
            elif i > 0:
                out[i - 1] = dataclasses.replace(out[i - 1], text=f"{out[i - 1].text}\n{note.text}")
            else:
                out.insert(i, dataclasses.replace(note, role="user"))
                i += 1
            continue
        i += 1
    if start and fmt.system_in_user:
        block = fmt.system[0] + out.pop(0).text + fmt.system[1]
        if out and out[0].role == "user":
            out[0] = dataclasses.replace(out[0], text=block + out[0].text)
        else:
            out.insert(0, Turn("user", block))
    return out


def render(fmt: Format, turns: list[Turn], mode: Mode, *, char: str = "", user: str = "") -> str:
    """The prompt text for `turns`, ending as `mode` asks: a reply cue for `char`, the last turn left
    open (continue), or a user cue for `user` (impersonate). The initial BOS is not included."""
    turns = fold_system(fmt, turns)
    if fmt.template is not None:
        return _render_jinja(fmt, turns, mode)
    if mode == "continue":
        if not turns or turns[-1].role != "model":
            raise PromptError("continue needs a last message from the character to continue")
        body = "".join(render_turn(fmt, t) for t in turns[:-1])
        return body + render_turn(fmt, turns[-1], open_end=True)
    body = "".join(render_turn(fmt, t) for t in turns)
    return body + (cue(fmt, "model", char) if mode == "reply" else cue(fmt, "user", user))


JINJA_ROLES = {"system": "system", "user": "user", "model": "assistant"}


def _render_jinja(fmt: Format, turns: list[Turn], mode: Mode) -> str:
    messages = [{"role": JINJA_ROLES[t.role], "content": t.text} for t in turns if not t.raw]
    if mode == "continue":
        if not messages or messages[-1]["role"] != "assistant":
            raise PromptError("continue needs a last message from the character to continue")
        messages[-1] = {"role": "assistant", "content": messages[-1]["content"] + MARK}
    elif mode == "impersonate":
        messages.append({"role": "user", "content": MARK})
    try:
        text = _apply_template(fmt, messages, mode == "reply")
    except PromptError:
        text = _apply_template(fmt, _alternating(messages), mode == "reply")
    text = text.split(MARK, 1)[0] if MARK in text else text
    return text.removeprefix(fmt.bos) if fmt.bos else text


def _alternating(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For strict templates: the system text opens the first user message, roles alternate from user."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    if not rest or rest[0]["role"] != "user":
        rest.insert(0, {"role": "user", "content": ""})
    if system:
        rest[0] = {"role": "user", "content": "\n".join([*system, rest[0]["content"]]).strip("\n")}
    out: list[dict[str, str]] = []
    for m in rest:
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n" + m["content"]}
        else:
            out.append(dict(m))
    return out


def _raise(message: str) -> None:
    raise PromptError(f"the model's chat template refused the chat: {message}")


def _apply_template(fmt: Format, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    try:
        template = env.from_string(fmt.template or "")
        return template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=fmt.bos, eos_token=fmt.eos
        )
    except jinja2.TemplateError as exc:
        raise PromptError(f"the model's chat template could not be rendered: {exc}") from exc
