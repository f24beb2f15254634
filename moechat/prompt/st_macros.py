"""SillyTavern's macro substitution (`substituteParams` / `evaluateMacros`, 1.12) for prompts rendered with its
presets (docs/formats.md §3.10), and the Handlebars subset its story strings use (`renderStoryString`).

Supported: `<USER>`/`<BOT>`/`<CHAR>`, `{{user}}`, `{{char}}`, `{{group}}`/`{{charIfNotGroup}}` (and their `<GROUP>`
forms: in a group chat the members' names, else the character), `{{original}}` (once), the card fields
(`{{description}}`, `{{personality}}`, `{{scenario}}`, `{{persona}}`, `{{mesExamples}}`, `{{charPrompt}}`,
`{{charJailbreak}}`), the instruct-sequence macros, `{{newline}}`, `{{trim}}`, `{{noop}}`, `{{// comments}}`,
`{{reverse:}}`; `{{random}}`, `{{pick}}` and `{{roll}}` use moechat's macros. Time and chat-state macros are left
as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from moechat.cards import macros

Value = str | Callable[[], str]


@dataclass(frozen=True)
class MacroEnv:
    """What the macros read: names, the card's fields, instruct sequences and the context's separators."""

    user: str
    char: str
    fields: Mapping[str, str] = field(default_factory=dict)  # description, personality, ... as ST names them
    instruct: Mapping[str, str] = field(default_factory=dict)  # macro name (pipe-separated aliases) -> value
    seed: int | str = 0
    group: str | None = None  # `{{group}}` in a group chat: the members' names joined with ", " (else the char)

    @property
    def group_value(self) -> str:
        return self.char if self.group is None else self.group


def substitute(text: str, env: MacroEnv, original: str | None = None, *, card_fields: bool = True) -> str:
    """`text` with SillyTavern's macros replaced (`substituteParams(text, user, char, original)`)."""
    if not text:
        return ""
    text = re.sub("<USER>", lambda _: env.user, text, flags=re.IGNORECASE)
    for tag in ("<BOT>", "<CHAR>"):
        text = re.sub(re.escape(tag), lambda _: env.char, text, flags=re.IGNORECASE)
    for tag in ("<CHARIFNOTGROUP>", "<GROUP>"):
        text = re.sub(re.escape(tag), lambda _: env.group_value, text, flags=re.IGNORECASE)
    if "{{" not in text:
        return text
    for aliases, sequence in env.instruct.items():
        text = re.sub(r"\{\{(" + aliases + r")\}\}", _literal(sequence), text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{newline\}\}", "\n", text, flags=re.IGNORECASE)
    text = re.sub(r"(?:\r?\n)*\{\{trim\}\}(?:\r?\n)*", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{noop\}\}", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{input\}\}", "", text, flags=re.IGNORECASE)
    values: dict[str, Value] = {}
    if original is not None:
        used = [False]

        def once() -> str:
            if used[0]:
                return ""
            used[0] = True
            return original

        values["original"] = once
    if card_fields:
        values.update(env.fields)
    group = env.group_value
    values |= {"user": env.user, "char": env.char, "group": group, "charIfNotGroup": group, "model": ""}
    for name, value in values.items():
        pattern = re.compile(r"\{\{" + re.escape(name) + r"\}\}", re.IGNORECASE)
        text = pattern.sub(_literal(value), text)
    text = re.sub(r"\{\{reverse:(.+?)\}\}", lambda m: m.group(1)[::-1], text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{//([\s\S]*?)\}\}", "", text)
    return macros.substitute(text, char=env.char, user=env.user, seed=env.seed, original="{{original}}")


def _literal(value: Value) -> Callable[[re.Match[str]], str]:
    """A replacement that inserts `value` as it is (or what it returns when called), never as a template."""
    return lambda _: value() if callable(value) else value


def render_handlebars(template: str, params: Mapping[str, str], missing: Callable[[str], str]) -> str:
    """Handlebars as the story strings use it: `{{#if x}}…{{else}}…{{/if}}`, `{{#unless}}`, `{{name}}` (no
    escaping); a block tag alone on its line takes the line with it (Handlebars' standalone rule). An unknown name
    becomes `missing(name)` (SillyTavern's `helperMissing`: the macro, substituted)."""
    tokens = _tokenize(template)
    out, _ = _render(tokens, 0, params, missing, stop=())
    return out


def _tokenize(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("open"/"close"/"else"/"var", name) tokens, with standalone block lines stripped."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for m in re.finditer(r"\{\{(#(?:if|unless)\s+[^{}]+|/(?:if|unless)|else|[^{}#/][^{}]*)\}\}", template):
        body = m.group(1).strip()
        kind, name = ("var", body)
        if body.startswith("#"):
            kind, name = "open", body[1:].strip()
        elif body.startswith("/"):
            kind, name = "close", body[1:].strip()
        elif body == "else":
            kind = "else"
        start, end = m.start(), m.end()
        if kind != "var":
            line_start = template.rfind("\n", 0, start) + 1
            line_end = template.find("\n", end)
            line_end = len(template) if line_end < 0 else line_end
            if not template[line_start:start].strip(" \t") and not template[end:line_end].strip(" \t"):
                start = max(line_start, pos)
                end = min(line_end + 1, len(template))
        tokens.append(("text", template[pos:start]))
        tokens.append((kind, name))
        pos = end
    tokens.append(("text", template[pos:]))
    return tokens


def _render(
    tokens: list[tuple[str, str]],
    i: int,
    params: Mapping[str, str],
    missing: Callable[[str], str],
    stop: tuple[str, ...],
) -> tuple[str, int]:
    out = ""
    while i < len(tokens):
        kind, name = tokens[i]
        if kind in stop:
            return out, i
        i += 1
        if kind == "text":
            out += name
        elif kind == "var":
            out += params[name] if name in params else missing(name)
        elif kind == "open":
            helper, _, arg = name.partition(" ")
            truthy = bool(params.get(arg.strip(), ""))
            if helper == "unless":
                truthy = not truthy
            yes, i = _render(tokens, i, params, missing, ("else", "close"))
            no = ""
            if i < len(tokens) and tokens[i][0] == "else":
                no, i = _render(tokens, i + 1, params, missing, ("close",))
            i += 1  # the closing tag
            out += yes if truthy else no
    return out, i
