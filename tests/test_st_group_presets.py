"""Group chats with SillyTavern presets: byte for byte what SillyTavern 1.12.6 sends for one member's reply
(tests/st_oracle).

group_goldens.json holds the prompts and stop strings SillyTavern's own group reply built under node for our inputs
(group_cases.json, written by group_cases.py): three members (one with a lorebook that uses `{{group}}`, two with
depth prompts, one muted in the join modes), the group in swap, join and join-with-muted mode with a join prefix and
suffix, every names_behavior with and without wrap, and reply, impersonate and continue turns. Regenerate with
tests/st_oracle (see oracle.mjs); no node and no SillyTavern checkout are needed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.st_oracle.render import render_group_case

ORACLE = Path(__file__).parent / "st_oracle"
CASES = json.loads((ORACLE / "group_cases.json").read_text(encoding="utf-8"))
GOLDEN = json.loads((ORACLE / "group_goldens.json").read_text(encoding="utf-8"))
BY_ID = {case["id"]: case for case in CASES["cases"]}


@pytest.mark.parametrize("result", GOLDEN["results"], ids=[r["id"] for r in GOLDEN["results"]])
def test_group_prompt_is_byte_identical_to_sillytavern(result: dict[str, Any]) -> None:
    text, stops = render_group_case(BY_ID[result["id"]], CASES, ORACLE)
    assert text == result["prompt"]
    assert list(stops) == result["stops"]


def test_goldens_cover_every_case() -> None:
    assert [r["id"] for r in GOLDEN["results"]] == list(BY_ID)
    covered = {(BY_ID[r["id"]]["group"], BY_ID[r["id"]]["type"]) for r in GOLDEN["results"]}
    assert {group for group, _ in covered} == {"swap", "join", "join_muted"}
    assert {mode for _, mode in covered} == {"normal", "impersonate", "continue"}
    speakers = {(BY_ID[r["id"]]["group"], BY_ID[r["id"]]["speaker"]) for r in GOLDEN["results"]}
    assert ("join", "wren") in speakers and "wren" in CASES["groups"]["join"]["muted"]  # a muted member speaks
