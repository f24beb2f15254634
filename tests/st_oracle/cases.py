"""The inputs of the SillyTavern oracle, all ours: three cards, their chats, the cases to render, and the instruct
presets, context templates and system prompts under presets/ (written for these tests; none of SillyTavern's own).

`python tests/st_oracle/cases.py` writes cases.json beside it; `node tests/st_oracle/oracle.mjs ST cases.json
goldens.json` then records what SillyTavern sends for each case (see oracle.mjs). Preset references are paths relative
to cases.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
# (instruct, context, system prompt) under presets/: each instruct preset with its own context template, two with
# moechat's default context (the one `load_preset` uses without a template)
PAIRS = (
    ("turn", "turn", "default"),
    ("turn-names", "turn", "stage"),
    ("brief", "brief", "stage"),
    ("header", "header", "default"),
    ("persona", "persona", "empty"),
    ("bracket", "bracket", "stage"),
    ("plain", "plain", "default"),
    ("scroll", "scroll", "stage"),
    ("persona", "default", "default"),
    ("bracket", "default", "empty"),
)
OTHER_SYSTEM = {"default": "stage", "stage": "empty", "empty": "default"}
# SillyTavern settings the cases run with (the oracle sets them over the checkout's defaults); moechat's defaults
# (LoreSettings, st_preset.TOKEN_PADDING) must be the same, which tests/test_st_presets.py checks
ST_SETTINGS = {
    "world_info_settings": {
        "world_info_depth": 2,
        "world_info_budget": 25,
        "world_info_budget_cap": 0,
        "world_info_include_names": True,
        "world_info_recursive": True,
        "world_info_case_sensitive": False,
        "world_info_match_whole_words": True,
        "world_info_max_recursion_steps": 0,
    },
    "power_user": {
        "prefer_character_prompt": True,
        "prefer_character_jailbreak": True,
        "token_padding": 64,
        "persona_description_position": 0,
    },
}


def entry(uid: int, keys: list[str], content: str, order: int, position: int, **ext: Any) -> dict[str, Any]:
    enabled, secondary, constant = ext.pop("enabled", True), ext.pop("secondary", []), ext.pop("constant", False)
    return {
        "id": uid,
        "keys": keys,
        "content": content,
        "extensions": {"position": position, **ext},
        "enabled": enabled,
        "insertion_order": order,
        "comment": f"entry {uid}",
        "selective": bool(secondary),
        "secondary_keys": secondary,
        "constant": constant,
    }


LUMI_BOOK = {
    "name": "Glade lore",
    "entries": [
        entry(0, ["glade"], "The glade is warded by {{char}}'s old magic.", 100, 0),
        entry(1, ["magic"], "Magic here answers to the Moon Court.", 90, 1),
        entry(2, ["Moon Court"], "The Moon Court meets at dusk.", 80, 1),
        entry(3, ["dusk"], "Dusk falls early in winter.", 70, 1, exclude_recursion=True),
        entry(4, ["Wolf"], "Wolves never enter.", 60, 1, case_sensitive=True),
        entry(5, [], "{{user}} is a traveller.", 10, 4, constant=True, depth=2, role=0),
        entry(6, ["tea"], "<START>\n{{user}}: Tea?\n{{char}}: Always, with honey.", 50, 6, match_whole_words=False),
        entry(7, ["glade"], "Disabled entry.", 40, 1, enabled=False),
        entry(8, ["river"], "The river sings at night.", 30, 0, scan_depth=10),
        entry(9, ["safe"], "Nothing is safe after dark.", 20, 2),
        entry(10, ["lantern"], "Never fires: needs 'oil' too.", 15, 1, secondary=["oil"], selectiveLogic=3),
        entry(11, ["glade"], "Spirits watch the glade.", 100, 1, prevent_recursion=True),
    ],
}
LUMI = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Lumi",
        "description": "Lumi is a forest spirit.\r\nShe guards a hidden glade.\r\n",
        "personality": "gentle, curious\r\n",
        "scenario": "{{user}} wanders into Lumi's glade at dusk.",
        "first_mes": "*Lumi looks up.*\r\nWelcome, {{user}}. Few find this place.",
        "mes_example": "<START>\r\n{{user}}: Who are you?\r\n{{char}}: I am Lumi.\r\nI keep the glade.\r\n"
        "<START>\r\n{{user}}: Can I stay?\r\n{{char}}: For a night, {{user}}.",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "Stay in character as {{char}}; keep replies short.",
        "alternate_greetings": [],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {"talkativeness": "0.5", "fav": False, "world": "", "depth_prompt": {"prompt": "", "depth": 4}},
        "character_book": LUMI_BOOK,
    },
}
BRAM = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Bram",
        "description": "Bram is a ferryman on a grey river.",
        "personality": "",
        "scenario": "",
        "first_mes": "Fare, {{user}}?",
        "mes_example": "{{user}}: How far?\n{{char}}: Far enough.",
        "creator_notes": "",
        "system_prompt": "{{original}} Bram speaks in short sentences.",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {"depth_prompt": {"prompt": "Bram is tired.", "depth": 1, "role": "system"}},
    },
}

# recursion that only macros make: the chat never names "Tove rings", "Ann wrote", "Ann's coin" or the ferry; the
# entries' {{char}}, {{user}}, <USER> and {{description}} filled, and a key's {{user}}, do
TOVE_BOOK = {
    "name": "Pier lore",
    "entries": [
        entry(0, ["bell"], "{{char}} rings the bell at the pier.", 100, 1),
        entry(1, ["Tove rings"], "Every ring calls the ferry.", 90, 1),
        entry(2, ["letter"], "<USER> wrote the letter in haste.", 80, 0),
        entry(3, ["Ann wrote"], "The letter asks for {{user}}'s coin.", 70, 0),
        entry(4, ["{{user}}'s coin"], "A debt is a debt.", 60, 0),
        entry(5, ["ferry"], "Keeper: {{description}}", 50, 1),
        entry(6, ["keeps the lamp"], "The lamp never goes out.", 40, 1),
    ],
}
TOVE = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Tove",
        "description": "{{char}} keeps the lamp of the north pier.",
        "personality": "",
        "scenario": "",
        "first_mes": "The fog is thick tonight, {{user}}.",
        "mes_example": "",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {},
        "character_book": TOVE_BOOK,
    },
}


def st_chat(char: str, messages: list[tuple[bool, str]]) -> list[dict[str, Any]]:
    header = {"user_name": "Ann", "character_name": char, "create_date": "2024-09-28@01h02m03s", "chat_metadata": {}}
    return [header] + [{"name": "Ann" if user else char, "is_user": user, "mes": text} for user, text in messages]


LUMI_CHAT = st_chat(
    "Lumi",
    [
        (False, "*Lumi looks up.*\r\nWelcome, Ann. Few find this place."),
        (True, "I followed the river here."),
        (False, "It sings at night, you know."),
        (True, "Is this glade safe? My teapot is magical, and a wolf followed me."),
    ],
)
BRAM_CHAT = st_chat("Bram", [(False, "Fare, Ann?"), (True, "Take me across."), (False, "Coin first.")])
TOVE_CHAT = st_chat(
    "Tove", [(False, "The fog is thick tonight, Ann."), (True, "I carry a letter. Shall I ring the bell?")]
)
BRAM_ASK = st_chat("Bram", [(False, "Fare, Ann?"), (True, "Take me across."), (False, "Coin first."), (True, "Here.")])


def preset(kind: str, stem: str) -> str:
    return f"presets/{kind}/{stem}.json"


def case(instruct: str, context: str, system: str, card: str, chat: str, mode: str = "normal") -> dict[str, Any]:
    return {
        "id": f"{instruct}+{context}+{system} | {card} | {mode}",
        "card": card,
        "chat": chat,
        "type": mode,
        "instruct": preset("instruct", instruct),
        "context": preset("context", context),
        "sysprompt": preset("sysprompt", system),
    }


def cases() -> list[dict[str, Any]]:
    out = []
    for instruct, context, system in PAIRS:
        out.append(case(instruct, context, system, "lumi", "lumi"))
        out.append(case(instruct, context, OTHER_SYSTEM[system], "bram", "bram_ask"))
        if context != "default":
            out.append(case(instruct, context, system, "lumi", "lumi", "impersonate"))
            out.append(case(instruct, context, OTHER_SYSTEM[system], "bram", "bram", "continue"))
    # lore recursion through macros in entries (SillyTavern substitutes keys and fired content before recursion)
    out.append(case("turn", "turn", "default", "tove", "tove"))
    out.append(case("bracket", "bracket", "stage", "tove", "tove"))
    return out


def inputs(case_list: list[dict[str, Any]]) -> dict[str, Any]:
    """cases.json: the cards, chats and settings shared by every case, and the cases."""
    return {
        "user": "Ann",
        "persona": "Ann is a traveller with a lantern.",
        "max_context": 8192,
        "amount_gen": 350,
        "settings": ST_SETTINGS,
        "cards": {"lumi": LUMI, "bram": BRAM, "tove": TOVE},
        "chats": {"lumi": LUMI_CHAT, "bram": BRAM_CHAT, "bram_ask": BRAM_ASK, "tove": TOVE_CHAT},
        "cases": case_list,
    }


def main() -> None:
    text = json.dumps(inputs(cases()), indent=1, ensure_ascii=False) + "\n"
    (HERE / "cases.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
