"""`python -m moechat prompt CARD_FILE ...`: print exactly what the model will see (stdout) and the
token budget report (stderr). Token counts use the model's tokenizer with `--model`, else an estimate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moechat.cards import macros
from moechat.cards.card import Card, read_card
from moechat.cards.world_info import read_lore_file
from moechat.commands.model_arg import add_data_dir_argument, add_model_argument, resolve_spec
from moechat.errors import PromptError
from moechat.prompt.assemble import Message, Persona
from moechat.prompt.formats import Format, default_format, format_names, get_format
from moechat.prompt.group import GENERATION_MODES, Group, build_group_turn
from moechat.prompt.st_preset import StPreset, load_preset
from moechat.prompt.turn import Lore, Turn, TurnPrompt, build_turn, card_lore

DEFAULT_CONTEXT = 4096


@dataclass(frozen=True)
class StChat:
    """What the prompt needs of a SillyTavern chat file: the user's name and the visible messages."""

    user_name: str | None
    messages: list[Message]
    names: list[str]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m moechat prompt", description=__doc__)
    p.add_argument("card", type=Path, help="character card (.png, .json, .charx, .yaml)")
    p.add_argument(
        "--format",
        help=f"prompt format: {', '.join(format_names())}, or a SillyTavern instruct preset .json "
        "(default: from the model)",
    )
    p.add_argument(
        "--context-template", type=Path, help="a SillyTavern context template .json (with a preset --format)"
    )
    p.add_argument(
        "--lore",
        type=Path,
        action="append",
        default=[],
        help="World Info / lorebook .json attached to the chat (repeatable)",
    )
    p.add_argument("--history", type=Path, help="SillyTavern chat (.jsonl) to continue")
    p.add_argument("--message", help="a new user message to send")
    p.add_argument("--user", help="the user's name (default: the chat's user_name, else 'You')")
    p.add_argument("--persona", default="", help="the user's persona description")
    add_model_argument(p, "--model", what="the model whose tokenizer counts the tokens (and picks the format)")
    p.add_argument("--context", type=int, help=f"context size in tokens (default: {DEFAULT_CONTEXT})")
    p.add_argument(
        "--reserve", type=int, help="tokens reserved for the reply (default: a quarter of the context, <= 512)"
    )
    p.add_argument("--mode", choices=("reply", "continue", "impersonate"), default="reply")
    g = p.add_argument_group("group chats", "a group's turn: CARD and each --member are the members, in order")
    g.add_argument("--member", type=Path, action="append", default=[], help="another member's card (repeatable)")
    g.add_argument("--speaker", help="the member who speaks (default: the first)")
    g.add_argument("--generation-mode", choices=GENERATION_MODES, default="swap", help="whose card definitions")
    g.add_argument("--muted", action="append", default=[], help="a muted member's name (repeatable)")
    g.add_argument("--join-prefix", default="", help="before each member's field in the join modes")
    g.add_argument("--join-suffix", default="", help="after each member's field in the join modes")
    add_data_dir_argument(p)
    return p


def main(argv: list[str]) -> int:
    """Run the command; PromptError/CardError/EngineError reach the dispatcher as one-line messages."""
    args = parser().parse_args(argv)
    card = read_card(args.card)
    chat = read_st_chat(args.history) if args.history else None
    persona = Persona(args.user or (chat.user_name if chat else None) or "You", args.persona)
    history = chat.messages if chat else greeting(card, persona.name)
    names = chat.names if chat else [card.name] * len(history)
    if args.message:
        history, names = [*history, Message("user", args.message)], [*names, persona.name]
    group, speaker = _group(args, card)
    if group is not None:
        card = group.members[speaker]
        history = [
            m if m.role == "user" else Message("model", m.text, name) for m, name in zip(history, names, strict=True)
        ]
    lore = Lore(card_lore(card), [rule for path in args.lore for rule in read_lore_file(path).rules])
    if args.model:
        return _with_model(args, card, history, names, persona, lore, group, speaker)
    context = args.context or DEFAULT_CONTEXT
    fmt = _format(args, None)
    turn = _turn(args, fmt, persona, context)
    out = _build(card, history, turn, lore, names, group, speaker, None)
    return _print(out, "estimated, no --model: about 3.35 characters per token")


def _group(args: argparse.Namespace, card: Card) -> tuple[Group | None, int]:
    """The group of CARD and the --member cards, and the speaker's index; (None, 0) without --member."""
    if not args.member:
        if args.speaker or args.muted:
            raise PromptError("--speaker and --muted are for a group's turn: name the other members with --member")
        return None, 0
    cards = (card, *(read_card(path) for path in args.member))
    names = [c.name for c in cards]
    unknown = [n for n in [args.speaker or names[0], *args.muted] if n not in names]
    if unknown:
        raise PromptError(f"{unknown[0]!r} is not a member; the members are {', '.join(names)}")
    muted = frozenset(i for i, n in enumerate(names) if n in args.muted)
    group = Group("group", cards, muted, args.generation_mode, args.join_prefix, args.join_suffix)
    return group, names.index(args.speaker or names[0])


def _build(
    card: Card,
    history: list[Message],
    turn: Turn,
    lore: Lore,
    names: list[str],
    group: Group | None,
    speaker: int,
    count: Callable[[str], int] | None,
) -> TurnPrompt:
    if group is None:
        return build_turn(card, history, turn, lore, names=names, count_tokens=count)
    return build_group_turn(group, speaker, history, turn, lore, names=names, count_tokens=count)


def _turn(args: argparse.Namespace, fmt: Format | StPreset, persona: Persona, context: int) -> Turn:
    reserve = args.reserve if args.reserve is not None else min(512, context // 4)
    return Turn(fmt, persona=persona, context=context, reserve=reserve, margin=min(64, context // 16), mode=args.mode)


def _format(args: argparse.Namespace, info: Any, bos: str = "<s>", eos: str = "</s>") -> Format | StPreset:
    """A built-in format by name, or SillyTavern presets from files."""
    if args.format and args.format.lower().endswith(".json"):
        context = args.context_template.read_text(encoding="utf-8") if args.context_template else None
        return load_preset(Path(args.format).read_text(encoding="utf-8"), context)
    if args.context_template:
        raise PromptError("--context-template goes with a SillyTavern instruct preset: --format INSTRUCT.json")
    if info is None:
        return get_format(args.format or default_format())
    name = args.format or default_format(f"{info.name} {info.path.name}", info.chat_template)
    return get_format(name, info.chat_template, bos=bos, eos=eos)


def _with_model(
    args: argparse.Namespace,
    card: Card,
    history: list[Message],
    names: list[str],
    persona: Persona,
    lore: Lore,
    group: Group | None = None,
    speaker: int = 0,
) -> int:
    """Count with the model's tokenizer; the format defaults from its name and chat template."""
    from moechat.engine.engine import Engine  # llama.cpp loads only when asked for

    with Engine.load(resolve_spec(args.model, args.data_dir), n_ctx=args.context or 0, capture="off") as engine:
        info = engine.info
        bos, eos = _token_text(info.path, info.bos_id, "<s>"), _token_text(info.path, info.eos_id, "</s>")
        turn = _turn(args, _format(args, info, bos, eos), persona, args.context or engine.n_ctx)
        out = _build(card, history, turn, lore, names, group, speaker, engine.count_tokens)
        return _print(out, f"counted with the tokenizer of {info.path.name}")


def _token_text(path: Path, token_id: int | None, default: str) -> str:
    """A special token's text (BOS/EOS) from the GGUF's vocabulary, for rendering its chat template."""
    from moechat.gguf.info import field, open_reader

    tokens = field(open_reader(path), "tokenizer.ggml.tokens", [])
    return str(tokens[token_id]) if token_id is not None and 0 <= token_id < len(tokens) else default


def greeting(card: Card, user: str) -> list[Message]:
    """A new chat: the card's first message, macros filled in (none when the card has no greeting)."""
    text = macros.substitute(card.first_mes, char=card.nickname or card.name, user=user).strip()
    return [Message("model", text)] if text else []


def read_st_chat(path: Path) -> StChat:
    """A SillyTavern JSONL chat: the header's `user_name`, and messages not marked `is_system`."""
    try:
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptError(f"{path}: not a readable SillyTavern .jsonl chat ({exc})") from exc
    if not lines or not all(isinstance(line, dict) for line in lines):
        raise PromptError(f"{path}: expected one JSON object per line (a header, then messages)")
    header = lines[0] if "mes" not in lines[0] else {}
    body = lines[1:] if header else lines
    shown = [m for m in body if not m.get("is_system")]
    messages = [Message("user" if m.get("is_user") else "model", str(m.get("mes", ""))) for m in shown]
    return StChat(header.get("user_name"), messages, [str(m.get("name", "")) for m in shown])


def _print(out: TurnPrompt, how: str) -> int:
    prompt = out.prompt
    sys.stdout.write(prompt.text)
    sys.stdout.flush()
    report = prompt.report
    lines = [f"\n--- format {prompt.format}, {report.total} of {report.budget} tokens ({how})"]
    lines += [f"  {name:<13}{tokens:>7}" for name, tokens in report.sections.items() if tokens]
    dropped = (
        ("examples", report.dropped_examples),
        ("messages", report.dropped_messages),
        ("lore entries", report.dropped_lore),
    )
    lines += [f"  dropped {what}: {', '.join(map(str, which))}" for what, which in dropped if which]
    lines += ["  dropped the author's note"] if report.dropped_note else []
    lines += [f"  lore: {hit.world or 'book'} #{hit.uid} ({hit.why})" for hit in out.lore.fired]
    lines += [f"  stop strings: {', '.join(json.dumps(s) for s in prompt.stops)}"]
    print("\n".join(lines), file=sys.stderr)
    return 0
