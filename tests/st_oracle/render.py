"""moechat's side of the oracle: the prompt and stop strings moechat builds for a case of cases.json (the same
inputs oracle.mjs gives SillyTavern), through the app's own turn builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moechat.cards.card import card_from_json
from moechat.cards.lore_scan import LoreSettings
from moechat.prompt.assemble import Message, Persona
from moechat.prompt.group import GENERATION_MODES, Group, build_group_turn
from moechat.prompt.st_preset import StPreset, read_context, read_instruct
from moechat.prompt.turn import Lore, Mode, Turn, build_turn, card_lore

MODES: dict[str, Mode] = {"normal": "reply", "impersonate": "impersonate", "continue": "continue"}


def read_preset_file(base: Path, ref: str) -> dict[str, Any]:
    """A preset file named in cases.json (relative to `base`, cases.json's folder, or absolute)."""
    data: dict[str, Any] = json.loads((base / ref).read_text(encoding="utf-8"))
    return data


def lore_settings(data: dict[str, Any]) -> LoreSettings:
    """The World Info settings the cases ran with in SillyTavern, as moechat's `LoreSettings`."""
    wi = data["settings"]["world_info_settings"]
    return LoreSettings(
        depth=wi["world_info_depth"],
        budget_percent=wi["world_info_budget"],
        budget_cap=wi["world_info_budget_cap"],
        include_names=wi["world_info_include_names"],
        recursive=wi["world_info_recursive"],
        case_sensitive=wi["world_info_case_sensitive"],
        match_whole_words=wi["world_info_match_whole_words"],
        max_recursion_steps=wi["world_info_max_recursion_steps"],
    )


def preset_for(case: dict[str, Any], base: Path) -> StPreset:
    context = read_preset_file(base, case["context"]) | case.get("context_overrides", {})
    system = read_preset_file(base, case["sysprompt"])["content"]
    return StPreset(read_instruct(read_preset_file(base, case["instruct"])), read_context(context), system)


def render_case(case: dict[str, Any], data: dict[str, Any], base: Path) -> tuple[str, tuple[str, ...]]:
    """The prompt text and stop strings for `case`; `data` is cases.json, `base` its folder."""
    card = card_from_json(data["cards"][case["card"]])
    lines = data["chats"][case.get("chat", case["card"])][1:]
    history = [Message("user" if m["is_user"] else "model", m["mes"]) for m in lines]
    turn = Turn(
        preset_for(case, base),
        persona=Persona(data["user"], data["persona"]),
        context=data["max_context"],
        reserve=data["amount_gen"],
        mode=MODES[case.get("type", "normal")],
    )
    lore = Lore(card_lore(card), settings=lore_settings(data))
    out = build_turn(card, history, turn, lore, names=[m["name"] for m in lines])
    return out.prompt.text, out.prompt.stops


def render_group_case(case: dict[str, Any], data: dict[str, Any], base: Path) -> tuple[str, tuple[str, ...]]:
    """The prompt text and stop strings for the speaker's reply in a group case of group_cases.json (`data`), through
    the app's group turn builder."""
    spec = data["groups"][case["group"]]
    keys = spec["members"]
    group = Group(
        spec["name"],
        tuple(card_from_json(data["cards"][key]) for key in keys),
        muted=frozenset(keys.index(key) for key in spec["muted"]),
        mode=GENERATION_MODES[spec["generation_mode"]],
        join_prefix=spec["join_prefix"],
        join_suffix=spec["join_suffix"],
    )
    speaker = keys.index(case["speaker"])
    lines = data["chats"][case["chat"]]
    history = [Message("user" if m["is_user"] else "model", m["mes"], m["name"]) for m in lines]
    turn = Turn(
        preset_for(case, base),
        persona=Persona(data["user"], data["persona"]),
        context=data["max_context"],
        reserve=data["amount_gen"],
        mode=MODES[case.get("type", "normal")],
    )
    lore = Lore(card_lore(group.members[speaker]), settings=lore_settings(data))
    out = build_group_turn(group, speaker, history, turn, lore, names=[m["name"] for m in lines])
    return out.prompt.text, out.prompt.stops
