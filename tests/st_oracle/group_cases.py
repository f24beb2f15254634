"""The group-chat inputs of the SillyTavern oracle, all ours: three cards (two of cases.py's and one more), a group
of them in each generation mode, its chats with the members' names, and the cases: which preset, which member
speaks, which turn.

`python -m tests.st_oracle.group_cases` writes group_cases.json beside it; `node tests/st_oracle/oracle.mjs ST
tests/st_oracle/group_cases.json tests/st_oracle/group_goldens.json` then records what SillyTavern sends for the
speaker's reply (see oracle.mjs). Presets are cases.py's (presets/).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.st_oracle.cases import BRAM, HERE, LUMI, ST_SETTINGS, entry, preset

# Lumi's book with one entry more: `{{group}}` in lore
LUMI_G = copy.deepcopy(LUMI)
LUMI_G["data"]["character_book"]["entries"].append(
    entry(12, ["river"], "{{group}} share the river crossing; {{char}} leads.", 35, 1)
)
WREN = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Wren",
        "description": "Wren is a bard who travels with {{group}}.",
        "personality": "loud, kind",
        "scenario": "{{char}} waits at the ferry.",
        "first_mes": "A song for {{user}}!",
        "mes_example": "<START>\n{{user}}: Sing?\n{{char}}: Always.",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "Rhyme when {{char}} can.",
        "alternate_greetings": [],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {
            "talkativeness": "0.9",
            "depth_prompt": {"prompt": "{{char}} hums.", "depth": 2, "role": "user"},
        },
    },
}
MEMBERS = ["lumi", "bram", "wren"]
PREFIX, SUFFIX = "[{{char}}'s <FIELDNAME>]", "[end of {{char}}]"
GROUPS = {
    "swap": {"name": "Crossing", "members": MEMBERS, "muted": [], "generation_mode": 0},
    "join": {"name": "Crossing", "members": MEMBERS, "muted": ["wren"], "generation_mode": 1},
    "join_muted": {"name": "Crossing", "members": MEMBERS, "muted": ["wren"], "generation_mode": 2},
}
for _group in GROUPS.values():
    _group |= {"join_prefix": PREFIX, "join_suffix": SUFFIX}


def said(name: str, text: str) -> dict[str, Any]:
    """One message of a group chat file: the user's, or a member's with its avatar file."""
    if name == "Ann":
        return {"name": "Ann", "is_user": True, "mes": text}
    return {"name": name, "is_user": False, "mes": text, "original_avatar": f"{name.lower()}.png"}


GROUP_CHAT = [
    said("Lumi", "*Lumi looks up.*\r\nWelcome, Ann. Few find this place."),
    said("Bram", "Fare, Ann?"),
    said("Ann", "I followed the river here. Take me across, all of you."),
    said("Wren", "A song for the crossing!"),
    said("Ann", "Is this glade safe? My teapot is magical."),
]
GROUP_CONTINUE = [*GROUP_CHAT, said("Bram", "Coin first.")]
# (instruct, context, system prompt): every names_behavior, with and without wrap
PAIRS = (
    ("turn", "turn", "default"),  # always, wrap
    ("turn-names", "turn", "stage"),  # none, wrap
    ("brief", "brief", "stage"),  # force, wrap
    ("header", "header", "default"),  # none, no wrap
    ("persona", "persona", "empty"),  # force, no wrap
    ("bracket", "bracket", "stage"),  # always, no wrap
    ("plain", "plain", "default"),  # none (legacy names: false)
    ("scroll", "scroll", "stage"),  # always (legacy names: true)
)


def case(pair: tuple[str, str, str], group: str, speaker: str, mode: str = "normal") -> dict[str, Any]:
    instruct, context, system = pair
    chat = "group_continue" if mode == "continue" else "group"
    return {
        "id": f"{instruct}+{context}+{system} | {group} | {speaker} | {mode}",
        "group": group,
        "speaker": speaker,
        "chat": chat,
        "type": mode,
        "instruct": preset("instruct", instruct),
        "context": preset("context", context),
        "sysprompt": preset("sysprompt", system),
    }


def cases() -> list[dict[str, Any]]:
    out = [case(pair, "swap", "bram") for pair in PAIRS]
    for pair in PAIRS[1:5]:  # none and force, with and without wrap
        out.append(case(pair, "join", "lumi"))
        out.append(case(pair, "join_muted", "bram"))
    out.append(case(PAIRS[0], "join", "wren"))  # a muted member speaks
    out.append(case(PAIRS[0], "swap", "lumi"))
    out.append(case(PAIRS[2], "swap", "lumi", "impersonate"))
    out.append(case(PAIRS[2], "join", "bram", "continue"))
    out.append(case(PAIRS[3], "swap", "bram", "continue"))
    return out


def inputs(case_list: list[dict[str, Any]]) -> dict[str, Any]:
    """group_cases.json: the cards, groups, chats and settings shared by every case, and the cases."""
    return {
        "user": "Ann",
        "persona": "Ann is a traveller with a lantern.",
        "max_context": 8192,
        "amount_gen": 350,
        "settings": ST_SETTINGS,
        "cards": {"lumi": LUMI_G, "bram": BRAM, "wren": WREN},
        "groups": GROUPS,
        "chats": {"group": GROUP_CHAT, "group_continue": GROUP_CONTINUE},
        "cases": case_list,
    }


def main() -> None:
    text = json.dumps(inputs(cases()), indent=1, ensure_ascii=False) + "\n"
    (HERE / "group_cases.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
