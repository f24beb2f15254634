"""SillyTavern instruct and context (story string) presets as a prompt format (docs/formats.md §3.10).

`render(preset, chat, ...)` builds the text-completion prompt the way SillyTavern 1.12's `Generate` does with
instruct mode on (public/script.js, scripts/instruct-mode.js, `renderStoryString` in scripts/power-user.js): the
character's prompt and post-history instructions preferred, names as stop strings, no author's note position other
than in-chat. Without a context template or a system prompt, moechat's own (`DEFAULT_CONTEXT`, `DEFAULT_SYSTEM`)
apply. The result is checked byte for byte against SillyTavern's own code (tests/st_oracle).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from moechat.cards.lore_scan import Selection
from moechat.errors import PromptError
from moechat.prompt.formats import ROLEPLAY_SYSTEM
from moechat.prompt.st_macros import MacroEnv, render_handlebars, substitute

DEFAULT_SYSTEM = ROLEPLAY_SYSTEM
DEFAULT_STORY = (
    "{{#if system}}{{system}}\n{{/if}}{{#if wiBefore}}{{wiBefore}}\n{{/if}}{{#if description}}{{description}}\n{{/if}}"
    "{{#if personality}}Personality: {{personality}}\n{{/if}}{{#if scenario}}Setting: {{scenario}}\n{{/if}}"
    "{{#if wiAfter}}{{wiAfter}}\n{{/if}}{{#if persona}}About {{user}}: {{persona}}\n{{/if}}"
)  # moechat's own story string (tests/st_oracle/presets/context/default.json holds the same template)
DEFAULT_CONTEXT: dict[str, Any] = {
    "name": "Default",
    "story_string": DEFAULT_STORY,
    "example_separator": "[Example]",
    "chat_start": "[Chat]",
    "use_stop_strings": False,
    "allow_jailbreak": False,
    "names_as_stop_strings": True,
    "always_force_name2": True,
}
_INSTRUCT_DEFAULTS: dict[str, Any] = {
    "input_suffix": "",
    "system_sequence": "",
    "system_suffix": "",
    "user_alignment_message": "",
    "last_system_sequence": "",
    "first_input_sequence": "",
    "last_input_sequence": "",
    "skip_examples": False,
    "system_same_as_user": False,
    "names_behavior": "force",
}
_INSTRUCT_KEYS = ("input_sequence", "output_sequence", "system_sequence_prefix", "stop_sequence")
TOKEN_PADDING = 64
MAX_INJECTION_DEPTH = 1000
Mode = Literal["reply", "continue", "impersonate"]


@dataclass(frozen=True)
class StPreset:
    """An instruct preset, a context template and the system prompt (SillyTavern's three prompt settings)."""

    instruct: dict[str, Any]
    context: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONTEXT))
    system_prompt: str = DEFAULT_SYSTEM

    @property
    def name(self) -> str:
        return f"st:{self.instruct.get('name', 'instruct')}+{self.context.get('name', 'context')}"

    def seq(self, key: str) -> str:
        value = self.instruct.get(key)
        return value if isinstance(value, str) else ""


def read_instruct(obj: Any) -> dict[str, Any]:
    """A SillyTavern instruct preset, migrated as SillyTavern loads it (`migrateInstructModeSettings`)."""
    if not isinstance(obj, dict) or not any(k in obj for k in _INSTRUCT_KEYS):
        raise PromptError("not a SillyTavern instruct preset (no input_sequence/output_sequence)")
    out = dict(obj)
    if "separator_sequence" in out:
        out["output_suffix"] = out.pop("separator_sequence") or ""
    if "names" in out:
        names, force = out.pop("names"), out.pop("names_force_groups", True)
        out["names_behavior"] = "always" if names else ("force" if force else "none")
    for key, value in _INSTRUCT_DEFAULTS.items():
        out.setdefault(key, value)
    return out


def read_context(obj: Any) -> dict[str, Any]:
    """A SillyTavern context template; missing switches take the defaults SillyTavern's selector applies."""
    if not isinstance(obj, dict) or not isinstance(obj.get("story_string"), str):
        raise PromptError("not a SillyTavern context template (no story_string)")
    out = dict(obj)
    for key in ("use_stop_strings", "allow_jailbreak", "names_as_stop_strings", "always_force_name2"):
        out.setdefault(key, DEFAULT_CONTEXT[key])
    return out


def load_preset(instruct_text: str, context_text: str | None = None, system_prompt: str = DEFAULT_SYSTEM) -> StPreset:
    """A preset from the JSON text of an instruct preset and, optionally, a context template."""
    try:
        instruct = read_instruct(json.loads(instruct_text))
        context = read_context(json.loads(context_text)) if context_text is not None else dict(DEFAULT_CONTEXT)
    except json.JSONDecodeError as exc:
        raise PromptError(f"preset: not JSON ({exc})") from None
    return StPreset(instruct, context, system_prompt)


@dataclass(frozen=True)
class ChatLine:
    """A message as SillyTavern's prompt sees it (hidden messages are left out by the caller)."""

    name: str
    is_user: bool
    text: str
    narrator: bool = False


@dataclass(frozen=True)
class CardText:
    """The card fields the prompt reads, as written in the card (SillyTavern trims and strips `\\r` itself)."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    depth_prompt: str = ""
    depth_prompt_depth: int = 4
    depth_prompt_role: str = "system"


@dataclass(frozen=True)
class GroupText:
    """A group chat as SillyTavern's prompt sees it (docs/formats.md §3.12): the members' names in order (`{{group}}`,
    and every other member's name a stop string); in the join modes every member's depth prompt (muted members' left
    out unless they speak), each with its own `{{char}}` (`getGroupDepthPrompts`), else the speaker's own."""

    members: tuple[str, ...]
    depth_prompts: tuple[CardText, ...] | None = None


@dataclass(frozen=True)
class Note:
    """The author's note: in-chat at `depth` as a system message, every `interval` user messages (0: off)."""

    text: str = ""
    depth: int = 4
    interval: int = 1


@dataclass(frozen=True)
class Rendered:
    """The prompt text and its stop strings."""

    text: str
    stops: tuple[str, ...]
    kept_messages: int
    kept_examples: int


_ROLE_IDS = {"system": 0, "user": 1, "assistant": 2}


def render(
    preset: StPreset,
    card: CardText,
    chat: Sequence[ChatLine],
    *,
    user: str,
    persona: str = "",
    lore: Selection | None = None,
    note: Note = Note(),
    mode: Mode = "reply",
    max_context: int = 1_000_000,
    count_tokens: Callable[[str], int] = lambda text: len(text) // 3,
    seed: int | str = 0,
    group: GroupText | None = None,
) -> Rendered:
    """The prompt SillyTavern sends for `chat` (oldest first, ending with the user's message for a reply).
    `max_context` is the context minus the reply length (SillyTavern's `this_max_context`); `group` for a member's
    reply in a group chat."""
    r = _Renderer(preset, card, user, persona, seed, group)
    return r.render(list(chat), lore, note, mode, max_context, count_tokens)


def substitute_params(
    preset: StPreset,
    card: CardText,
    *,
    user: str,
    persona: str = "",
    seed: int | str = 0,
    group: GroupText | None = None,
) -> Callable[[str], str]:
    """SillyTavern's `substituteParams` as `render` applies it for this card, user and group (what the World Info scan
    fills in entries' keys and content)."""
    return _Renderer(preset, card, user, persona, seed, group).sub


class _Renderer:
    def __init__(
        self, preset: StPreset, card: CardText, user: str, persona: str, seed: int | str, group: GroupText | None
    ) -> None:
        self.p, self.card, self.user, self.char, self.group = preset, card, user, card.name, group
        self.ins = preset.instruct
        self.wrap = self.ins.get("wrap") is True
        # names_behavior "force": SillyTavern names every member's messages in a group chat
        self.forced = group is not None and self.ins.get("names_behavior") == "force"
        self.group_names = ", ".join(name for name in group.members if name) if group else None
        # a preset's "macro" switch is not applied: ST 1.12.6's preset selector skips it and its setting is on
        bare = MacroEnv(user, card.name, seed=seed, group=self.group_names)
        base = {k: self.base(getattr(card, k), bare) for k in ("description", "personality", "scenario")}
        self.fields = {
            "charPrompt": self.base(card.system_prompt, bare),
            "charJailbreak": self.base(card.post_history_instructions, bare),
            **base,
            "persona": self.base(persona, bare),
            "mesExamples": self.base(card.mes_example, bare),
            "charVersion": "",
            "char_version": "",
        }
        self.env = MacroEnv(user, card.name, self.fields, self._instruct_macros(), seed, self.group_names)

    def base(self, value: str, env: MacroEnv | None = None) -> str:
        """`baseChatReplace`: trimmed, macros without the card fields, no `\\r`."""
        value = value.strip()
        return substitute(value, env or self.env, card_fields=False).replace("\r", "") if value else value

    def sub(self, text: str, original: str | None = None) -> str:
        return substitute(text, self.env, original)

    def _instruct_macros(self) -> dict[str, str]:
        s = self.p.seq
        return {
            "instructSystemPromptPrefix": s("system_sequence_prefix"),
            "instructSystemPromptSuffix": s("system_sequence_suffix"),
            "instructInput|instructUserPrefix": s("input_sequence"),
            "instructUserSuffix": s("input_suffix"),
            "instructOutput|instructAssistantPrefix": s("output_sequence"),
            "instructSeparator|instructAssistantSuffix": s("output_suffix"),
            "instructSystemPrefix": s("system_sequence"),
            "instructSystemSuffix": s("system_suffix"),
            "instructFirstOutput|instructFirstAssistantPrefix": s("first_output_sequence") or s("output_sequence"),
            "instructLastOutput|instructLastAssistantPrefix": s("last_output_sequence") or s("output_sequence"),
            "instructStop": s("stop_sequence"),
            "instructUserFiller": s("user_alignment_message"),
            "instructSystemInstructionPrefix": s("last_system_sequence"),
            "instructFirstInput|instructFirstUserPrefix": s("first_input_sequence") or s("input_sequence"),
            "instructLastInput|instructLastUserPrefix": s("last_input_sequence") or s("input_sequence"),
            "systemPrompt": self.p.system_prompt,
            "defaultSystemPrompt|instructSystem|instructSystemPrompt": self.p.system_prompt,
            "exampleSeparator": str(self.p.context.get("example_separator") or ""),
            "chatStart": str(self.p.context.get("chat_start") or ""),
        }

    # ---- instruct-mode.js -------------------------------------------------------------------------------------
    def format_chat(self, name: str | None, mes: str, is_user: bool, narrator: bool, force: str = "") -> str:
        s = self.p.seq
        include = not narrator and (self.ins.get("names_behavior") == "always" or (self.forced and name != self.user))
        if narrator:
            prefix = s("input_sequence") if self.ins.get("system_same_as_user") else s("system_sequence")
            suffix = s("input_suffix") if self.ins.get("system_same_as_user") else s("system_suffix")
        elif is_user:
            prefix = {"first": s("first_input_sequence"), "last": s("last_input_sequence")}.get(force, "")
            prefix, suffix = prefix or s("input_sequence"), s("input_suffix")
        else:
            prefix = {"first": s("first_output_sequence"), "last": s("last_output_sequence")}.get(force, "")
            prefix, suffix = prefix or s("output_sequence"), s("output_suffix")
        prefix = re.sub(r"\{\{name\}\}", lambda _: name or "System", self.sub(prefix), flags=re.IGNORECASE)
        suffix = re.sub(r"\{\{name\}\}", lambda _: name or "System", self.sub(suffix), flags=re.IGNORECASE)
        if not suffix and self.wrap:
            suffix = "\n"
        sep = "\n" if self.wrap else ""
        parts = [prefix, f"{name}: {mes}{suffix}" if include and name else mes + suffix]
        return sep.join(x for x in parts if x)

    def format_system(self, system: str) -> str:
        sep = "\n" if self.wrap else ""
        if prefix := self.p.seq("system_sequence_prefix"):
            system = re.sub(r"\{\{name\}\}", "System", prefix, flags=re.IGNORECASE) + sep + system
        if suffix := self.p.seq("system_sequence_suffix"):
            system = system + sep + suffix
        return system

    def format_examples(self, blocks: list[str]) -> list[str]:
        heading = self._example_heading()
        if self.ins.get("skip_examples"):
            return [re.sub(r"<START>\n", lambda _: heading, b, count=1, flags=re.IGNORECASE) for b in blocks]
        s, always = self.p.seq, self.ins.get("names_behavior") == "always" or self.forced
        ins, outs, in_suf, out_suf = s("input_sequence"), s("output_sequence"), s("input_suffix"), s("output_suffix")
        ins = re.sub(r"\{\{name\}\}", lambda _: self.user, self.sub(ins), flags=re.IGNORECASE)
        outs = re.sub(r"\{\{name\}\}", lambda _: self.char, self.sub(outs), flags=re.IGNORECASE)
        in_suf = re.sub(r"\{\{name\}\}", lambda _: self.user, self.sub(in_suf), flags=re.IGNORECASE)
        out_suf = re.sub(r"\{\{name\}\}", lambda _: self.char, self.sub(out_suf), flags=re.IGNORECASE)
        in_suf = in_suf or ("\n" if self.wrap else "")
        out_suf = out_suf or ("\n" if self.wrap else "")
        sep = "\n" if self.wrap else ""
        out: list[str] = []
        for block in blocks:
            cleaned = re.sub(r"<START>", "{Example Dialogue:}", block, count=1, flags=re.IGNORECASE).replace("\r", "")
            turns = _individual(cleaned, self.user, self.char, self.group is not None)
            if not turns:
                continue
            if heading:
                out.append(heading)
            for is_user, content in turns:
                named = always or (self.ins.get("names_behavior") == "force" and is_user)
                name = self.user if is_user else self.char
                text = f"{name}: {content}" if named else content
                parts = [ins if is_user else outs, text + (in_suf if is_user else out_suf)]
                out.append(sep.join(x for x in parts if x))
        if not out:
            return [re.sub(r"<START>\n", lambda _: heading, b, count=1, flags=re.IGNORECASE) for b in blocks]
        return out

    def _example_heading(self) -> str:
        separator = str(self.p.context.get("example_separator") or "")
        return f"{self.sub(separator)}\n" if separator else ""

    def format_cue(self, name: str, impersonate: bool) -> str:
        s = self.p.seq
        include = bool(name) and (self.ins.get("names_behavior") == "always" or self.forced)
        sequence = s("input_sequence") if impersonate else (s("last_output_sequence") or s("output_sequence"))
        filler = ""
        last, out = s("last_output_sequence"), s("output_sequence")
        if include and last and out and sequence == last and out[-1:].isspace() and not last[-1:].isspace():
            filler = out[-1]
        sequence = re.sub(r"\{\{name\}\}", lambda _: name or "System", self.sub(sequence), flags=re.IGNORECASE)
        sep = "\n" if self.wrap else ""
        text = sep + sequence + sep + filler + f"{name}:" if include else sep + sequence
        return (text.rstrip() if self.wrap else text) + ("" if include else sep)

    def stops(self, impersonate: bool, continuing_user: bool) -> tuple[str, ...]:
        out: list[str] = []
        if self.p.context.get("names_as_stop_strings", True):
            char_s, user_s = f"\n{self.char}:", f"\n{self.user}:"
            out += [char_s if impersonate else user_s, user_s] + ([char_s] if continuing_user else [])
            if self.group:  # every other member's name
                out += [f"\n{name}:" for name in self.group.members if name and name != self.char]
        s = self.p.seq
        named = {
            "input_sequence": self.user,
            "output_sequence": self.char,
            "first_output_sequence": self.char,
            "last_output_sequence": self.char,
            "system_sequence": "System",
            "last_system_sequence": "System",
        }
        lines = [s("stop_sequence")]
        lines += [re.sub(r"\{\{name\}\}", n.replace("\\", "\\\\"), s(k), flags=re.IGNORECASE) for k, n in named.items()]
        for line in dict.fromkeys("\n".join(lines).split("\n")):
            if line.strip():
                seq = ("\n" + line) if self.wrap else line
                out.append(self.sub(seq))
        if self.p.context.get("use_stop_strings"):
            for key in ("chat_start", "example_separator"):
                if value := self.p.context.get(key):
                    out.append("\n" + self.sub(str(value)))
        if self.p.context.get("single_line"):
            out.insert(0, "\n")
        return tuple(dict.fromkeys(out))

    # ---- script.js Generate -----------------------------------------------------------------------------------
    def examples(self, text: str) -> list[str]:
        """`parseMesExamples`: blocks with their heading, each ending in a newline."""
        if not text or text == "<START>":
            return []
        if not text.startswith("<START>"):
            text = "<START>\n" + text.strip()
        heading = self._example_heading() or "<START>\n"
        return [f"{heading}{block.strip()}\n" for block in re.split(r"<START>", text, flags=re.IGNORECASE)[1:]]

    def render(
        self,
        chat: list[ChatLine],
        lore: Selection | None,
        note: Note,
        mode: Mode,
        max_context: int,
        count: Callable[[str], int],
    ) -> Rendered:
        cont, imp = mode == "continue", mode == "impersonate"
        if chat:
            chat[0] = ChatLine(chat[0].name, chat[0].is_user, self.sub(chat[0].text), chat[0].narrator)
        examples = self.examples(self.fields["mesExamples"])
        for position, content in _example_lore(lore):
            blocks = self.examples(self.base(content))
            examples = [*blocks, *examples] if position == "examples_top" else [*examples, *blocks]
        raw_examples = list(examples)
        examples = self.format_examples(examples)
        core = [ChatLine(m.name, m.is_user, m.text, m.narrator) for m in chat]
        injected = self._inject(core, lore, note, cont)
        jailbreak = self.fields["charJailbreak"]
        if self.p.context.get("allow_jailbreak") and jailbreak:
            line = ChatLine("", True, self.sub(jailbreak, original=""))
            core.insert(len(core) - 1 if cont else len(core), line)
        chat2 = self._history(core, cont)
        user_indices = [
            len(core) - 1 - j for j, m in enumerate(core) if m.is_user and not (cont and j == len(core) - 1)
        ]
        alignment = ""
        if self.ins.get("user_alignment_message"):
            alignment = self.format_chat(self.user, self.p.seq("user_alignment_message"), True, False, "first")
        story = self.story(examples, raw_examples, lore)
        if not chat2:
            chat2 = [""]
        chat_start = str(self.p.context.get("chat_start") or "")
        preamble = self.sub(chat_start + "\n") if chat_start else ""
        cycle = chat2.pop(0) if cont and len(chat2) > 1 else ""
        if cycle.lstrip().startswith(f"{self.char}:"):  # cleanupPromptCache
            cycle = cycle.replace(f"{self.char}:", "", 1).lstrip()
        cue_name = self.user if imp else self.char
        cue = "" if cont else self.format_cue(cue_name, imp)

        def total(chat_string: str, examples_string: str = "") -> int:
            text = (story + examples_string + alignment + chat_string + cue + cycle).replace("\r", "")
            return count(text) + TOKEN_PADDING

        chat_string = preamble
        kept: list[str | None] = [None] * len(chat2)
        tokens = total(chat_string)
        for index in [i for i in injected if i < len(chat2)] + list(range(len(chat2))):
            if kept[index] is not None:
                continue
            tokens += count(chat2[index].replace("\r", ""))
            if tokens >= max_context:
                break
            chat_string += chat2[index]
            kept[index] = chat2[index]
        last_added = max((i for i, item in enumerate(kept) if item is not None), default=-1)
        messages = [item for item in kept if item is not None]
        if alignment and last_added not in user_indices:
            chat_string = alignment + chat_string
            messages.append(alignment)
        tokens, fitted = total(chat_string), 0
        for block in examples:
            tokens += count(block.replace("\r", ""))
            if tokens >= max_context:
                break
            fitted += 1
        send = list(reversed(messages))
        if send and not cont and self.wrap:
            send[-1] = re.sub(r"\n?\Z", "", send[-1], count=1)
        if send:
            send[-1] += cue
        text = story + "".join(examples[:fitted]) + preamble + "".join(send) + cycle
        return Rendered(
            text.replace("\r", ""), self.stops(imp, cont and bool(chat) and chat[-1].is_user), len(send), fitted
        )

    def _history(self, core: list[ChatLine], cont: bool) -> list[str]:
        """`chat2`: newest first, the oldest with the first output sequence, the last user message with the last
        input sequence, a continued message without its suffix."""
        last_user = max((j for j, m in enumerate(core) if m.is_user), default=-1)
        out = [""] * len(core)
        for j, m in enumerate(core):
            i = len(core) - 1 - j
            force = "first" if j == 0 else ""
            force = "last" if last_user >= 0 and j == last_user else force
            item = self.format_chat(
                m.name or (self.user if m.is_user else self.char), m.text, m.is_user, m.narrator, force
            )
            if m.is_user and not m.name:
                item = self.format_chat(None, m.text, True, m.narrator, force)
            if i == 0 and cont:
                item = self.format_chat(m.name or self.char, m.text, m.is_user, m.narrator, "last")
                item = item[: item.rfind(m.text) + len(m.text)]
            out[i] = item
        return out

    def story(self, examples: list[str], raw: list[str], lore: Selection | None) -> str:
        params = {
            "description": self.fields["description"],
            "personality": self.fields["personality"],
            "persona": self.fields["persona"],
            "scenario": self.fields["scenario"],
            "system": self.format_system(
                self.sub(self.fields["charPrompt"] or self.base(self.p.system_prompt), original=self.p.system_prompt)
            ),
            "char": self.char,
            "user": self.user,
            "wiBefore": self._lore(lore, "before_char"),
            "wiAfter": self._lore(lore, "after_char"),
            "mesExamples": "".join(examples),
            "mesExamplesRaw": "".join(raw),
        }
        params["loreBefore"], params["loreAfter"] = params["wiBefore"], params["wiAfter"]
        template = str(self.p.context.get("story_string") or "")
        out = render_handlebars(template, params, self._helper)
        out = re.sub(r"^\n+", "", self.sub(out))
        if out and not out.endswith("\n") and self.wrap:
            out += "\n"
        return out

    def _helper(self, name: str) -> str:
        """SillyTavern's Handlebars helpers: `trim` stays for the macro pass, other names are macros."""
        return "{{trim}}" if name == "trim" else self.sub("{{" + name + "}}")

    def _lore(self, lore: Selection | None, position: str) -> str:
        return "\n".join(self.sub(hit.content) for hit in lore.at(position)) if lore else ""

    def _inject(self, core: list[ChatLine], lore: Selection | None, note: Note, cont: bool) -> list[int]:
        """`doChatInject`: in-chat prompts (author's note, the card's depth prompt, `at_depth` lore) placed N
        messages from the end, system before user before assistant; returns the indexes in chat2 (newest first)."""
        prompts: dict[str, tuple[int, int, str]] = {}
        users = sum(1 for m in core if m.is_user)
        last = 1 if note.interval == 1 else users
        due = note.interval > 0 and last > 0
        if due and (last % note.interval if last >= note.interval else note.interval - last) == 0:
            top = [self.sub(h.content) for h in lore.at("an_top")] if lore else []
            bottom = [self.sub(h.content) for h in lore.at("an_bottom")] if lore else []
            text = re.sub(r"(^\n)|(\n\Z)", "", "\n".join(top) + "\n" + note.text + "\n" + "\n".join(bottom))
            prompts["2_floating_prompt"] = (note.depth, 0, text)
        if self.group and self.group.depth_prompts:  # the join modes: every member's, with its own {{char}}
            for index, member in enumerate(m for m in self.group.depth_prompts if m.depth_prompt.strip()):
                env = MacroEnv(self.user, member.name, seed=self.env.seed, group=self.group_names)
                text = self.base(member.depth_prompt, env)
                prompts[f"DEPTH_PROMPT_{index}"] = (
                    member.depth_prompt_depth,
                    _ROLE_IDS.get(member.depth_prompt_role, 0),
                    text,
                )
        elif self.card.depth_prompt.strip():
            depth_role = _ROLE_IDS.get(self.card.depth_prompt_role, 0)
            prompts["DEPTH_PROMPT"] = (self.card.depth_prompt_depth, depth_role, self.base(self.card.depth_prompt))
        groups: dict[tuple[int, int], list[str]] = {}
        for hit in lore.at("at_depth") if lore else []:
            groups.setdefault((hit.depth or 0, _ROLE_IDS.get(hit.role or "system", 0)), []).append(
                self.sub(hit.content)
            )
        for (depth, role), texts in groups.items():
            prompts[f"customDepthWI-{depth}-{role}"] = (depth, role, "\n".join(texts))
        names = {0: "", 1: self.user, 2: self.char}
        reversed_chat = list(reversed(core))
        indices: list[int] = []
        inserted = 0
        for depth in sorted({d for d, _, _ in prompts.values() if 0 <= d <= MAX_INJECTION_DEPTH}):
            batch = []
            for role in (0, 1, 2):
                values = [v.strip() for k, (d, r, v) in sorted(prompts.items()) if d == depth and r == role and v]
                text = self.sub("\n".join(values)).lstrip() if values else ""
                if text:
                    batch.append(ChatLine(names[role], role == 1, text, narrator=role == 0))
            if batch:
                at = (1 if cont and depth == 0 else depth) + inserted
                reversed_chat[at:at] = batch
                indices += range(at, at + len(batch))
                inserted += len(batch)
        core[:] = list(reversed(reversed_chat))
        return indices


def _example_lore(lore: Selection | None) -> list[tuple[str, str]]:
    """Example-position lore in the order SillyTavern inserts it (each one prepended or appended in turn)."""
    if lore is None:
        return []
    hits = [h for h in lore.fired if h.position in ("examples_top", "examples_bottom")]
    return [(h.position, h.content) for h in hits]


def _individual(block: str, user: str, char: str, group: bool = False) -> list[tuple[bool, str]]:
    """`parseExampleIntoIndividual`: a block's turns (is_user, text); the first line is the block heading. In a group
    chat each turn keeps its speaker's name (`Name: text`; with names on, SillyTavern names it twice)."""
    lines = block.split("\n")
    out: list[tuple[bool, str]] = []
    current: list[str] = []
    in_user = in_bot = False

    def add(name: str, is_user: bool) -> None:
        text = "\n".join(current).replace(name + ":", "", 1).strip()
        out.append((is_user, f"{name}: {text}" if group else text))
        current.clear()

    for line in lines[1:]:
        if line.startswith(user + ":"):
            in_user = True
            if in_bot:
                add(char, False)
            in_bot = False
        elif line.startswith(char + ":"):
            in_bot = True
            if in_user:
                add(user, True)
            in_user = False
        current.append(line)
    if in_user:
        add(user, True)
    elif in_bot:
        add(char, False)
    return out
