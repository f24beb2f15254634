"""SillyTavern presets as a prompt format: byte for byte what SillyTavern 1.12.6 sends (tests/st_oracle).

goldens.json holds the prompts and stop strings SillyTavern's own Generate built under node for our inputs
(cases.json): eight instruct presets, eight context templates and three system prompts written for these tests
(presets/), covering every instruct and context field moechat reads, and three cards (one with CRLF text, examples, a
recursive lorebook and post-history instructions; one whose lorebook recurses only through macros in its entries)
with their chats, in reply, impersonate and continue. Regenerate
with tests/st_oracle (see oracle.mjs); no node and no SillyTavern checkout are needed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from moechat.cards.lore_scan import LoreSettings
from moechat.prompt.st_preset import DEFAULT_CONTEXT, DEFAULT_SYSTEM, TOKEN_PADDING, read_context, read_instruct
from tests.st_oracle.render import lore_settings, read_preset_file, render_case

ORACLE = Path(__file__).parent / "st_oracle"
CASES = json.loads((ORACLE / "cases.json").read_text(encoding="utf-8"))
GOLDEN = json.loads((ORACLE / "goldens.json").read_text(encoding="utf-8"))
BY_ID = {case["id"]: case for case in CASES["cases"]}


@pytest.mark.parametrize("result", GOLDEN["results"], ids=[r["id"] for r in GOLDEN["results"]])
def test_prompt_is_byte_identical_to_sillytavern(result: dict[str, Any]) -> None:
    text, stops = render_case(BY_ID[result["id"]], CASES, ORACLE)
    assert text == result["prompt"]
    assert list(stops) == result["stops"]


def test_goldens_cover_every_case_and_preset() -> None:
    assert [r["id"] for r in GOLDEN["results"]] == list(BY_ID)
    for kind in ("instruct", "context", "sysprompt"):
        files = {f"presets/{kind}/{p.name}" for p in (ORACLE / "presets" / kind).glob("*.json")}
        assert {r[kind] for r in GOLDEN["results"]} == files
        assert all(r[kind] == BY_ID[r["id"]][kind] for r in GOLDEN["results"])
    modes = {(BY_ID[r["id"]]["type"], BY_ID[r["id"]]["card"]) for r in GOLDEN["results"]}
    assert modes == {
        ("normal", "lumi"),
        ("normal", "bram"),
        ("impersonate", "lumi"),
        ("continue", "bram"),
        ("normal", "tove"),  # lore recursion through macros in entries
    }
    lumi = CASES["cards"]["lumi"]["data"]
    assert lumi["character_book"]["entries"] and lumi["mes_example"] and lumi["post_history_instructions"]


def test_presets_exercise_every_field_moechat_reads() -> None:
    instruct = [read_instruct(read_preset_file(ORACLE, f"presets/instruct/{p.name}")) for p in _files("instruct")]
    context = [read_context(read_preset_file(ORACLE, f"presets/context/{p.name}")) for p in _files("context")]
    for key in ("wrap", "macro", "system_same_as_user", "skip_examples"):
        assert {bool(p.get(key)) for p in instruct} == {True, False}, key
    assert {p["names_behavior"] for p in instruct} == {"none", "force", "always"}
    for key in (
        "system_sequence",
        "system_suffix",
        "input_suffix",
        "output_suffix",
        "first_input_sequence",
        "last_input_sequence",
        "first_output_sequence",
        "last_output_sequence",
        "last_system_sequence",
        "stop_sequence",
        "system_sequence_prefix",
        "system_sequence_suffix",
        "user_alignment_message",
    ):
        assert {bool(p.get(key)) for p in instruct} == {True, False}, key
    assert any("{{name}}" in p["input_sequence"] for p in instruct)
    legacy = [json.loads(p.read_text()) for p in _files("instruct")]
    assert any("separator_sequence" in p for p in legacy) and any("names" in p for p in legacy)
    for key in ("use_stop_strings", "allow_jailbreak", "names_as_stop_strings", "single_line"):
        assert {bool(p.get(key)) for p in context} == {True, False}, key
    assert {bool(p["example_separator"]) for p in context} == {True, False}
    assert {bool(p["chat_start"]) for p in context} == {True, False}
    stories = "".join(p["story_string"] for p in context)
    for tag in ("{{#if", "{{else}}", "{{#unless", "{{trim}}", "{{newline}}", "{{loreBefore}}", "{{mesExamplesRaw}}"):
        assert tag in stories, tag


def test_moechats_defaults_are_the_oracles_default_presets() -> None:
    """`load_preset` without a context template or system prompt uses exactly what the oracle ran as "default"."""
    assert read_context(read_preset_file(ORACLE, "presets/context/default.json")) == DEFAULT_CONTEXT
    assert read_preset_file(ORACLE, "presets/sysprompt/default.json")["content"] == DEFAULT_SYSTEM


def test_the_oracles_settings_are_moechats_defaults() -> None:
    assert lore_settings(CASES) == LoreSettings()
    power_user = CASES["settings"]["power_user"]
    assert power_user["token_padding"] == TOKEN_PADDING
    assert power_user["prefer_character_prompt"] and power_user["prefer_character_jailbreak"]
    assert power_user["persona_description_position"] == 0  # the persona in the story string


def _files(kind: str) -> list[Path]:
    return sorted((ORACLE / "presets" / kind).glob("*.json"))
