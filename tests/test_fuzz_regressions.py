"""Regression tests for failures the reader fuzzer (bench/fuzz_readers.py) found: each failed before its fix."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.fuzz_readers import gguf_metadata
from moechat.chatfiles import sillytavern, tgw
from moechat.errors import EngineError
from moechat.gguf.info import read_info

BAD_DATES = [
    "2024-13-01@01h02m03s",  # month 13: datetime() raised ValueError
    "2024-02-30@01h02m03s",  # day out of range
    "2024-01-01@99h99m99s",  # hour out of range
    10**400,  # a huge JSON integer: float() raised OverflowError
    float("inf"),
    float("nan"),
    "1e400",  # a numeric string that overflows to inf
    "99999-01-01",
]


@pytest.mark.parametrize("value", BAD_DATES, ids=lambda v: repr(v)[:24])
def test_parse_date_gives_none_for_impossible_dates(value: Any) -> None:
    assert sillytavern.parse_date(value) is None


def test_st_import_with_impossible_dates_keeps_the_messages() -> None:
    lines = [
        {"user_name": "You", "character_name": "Sera", "create_date": "2024-13-01@01h02m03s"},
        {"name": "You", "is_user": True, "mes": "hi", "send_date": "2024-02-30@01h02m03s"},
        {"name": "Sera", "is_user": False, "mes": "yo", "send_date": 10**400, "gen_started": "NaN"},
    ]
    chat, skipped = sillytavern.parse_jsonl("\n".join(json.dumps(line) for line in lines))
    assert skipped == [] and [m.swipes[0].text for m in chat.messages] == ["hi", "yo"]
    assert chat.created is None and all(m.created is None for m in chat.messages)


def test_tgw_import_with_impossible_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "Sera" / "h.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"internal": [["hi", "yo"]], "metadata": {"user_0": {"timestamp": "2024-13-01"}}}))
    chat, _ = tgw.read_file(path)
    assert chat.messages[0].created is None


GOOD = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 8}
TYPE_CONFUSED = [
    {"llama.block_count": [1, 2]},  # int() of a list raised TypeError
    {"llama.block_count": "two"},  # int() of a string raised ValueError
    {"llama.embedding_length": 1.5},
    {"llama.expert_count": "many"},
    {"llama.expert_used_count": ["a"]},
    {"llama.context_length": "x"},
]


@pytest.mark.parametrize("fields", TYPE_CONFUSED, ids=lambda f: ",".join(f"{k}={v!r}" for k, v in f.items()))
def test_gguf_metadata_of_the_wrong_type_is_an_engine_error(tmp_path: Path, fields: dict[str, Any]) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_metadata({**GOOD, **fields}))
    with pytest.raises(EngineError, match=next(iter(fields))):
        read_info(path, allow_dense=True)


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        ({"moechat.expert_names": 3}, "expert_names", ()),  # tuple() of an int raised TypeError
        ({"moechat.expert_names": "AB"}, "expert_names", ()),
        ({"tokenizer.chat_template": 5}, "chat_template", None),
        ({"tokenizer.ggml.bos_token_id": "x"}, "bos_id", None),
        ({"tokenizer.ggml.eos_token_id": [1]}, "eos_id", None),
    ],
)
def test_optional_gguf_metadata_of_the_wrong_type_is_ignored(
    tmp_path: Path, fields: dict[str, Any], attr: str, expected: Any
) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_metadata({**GOOD, **fields}))
    assert getattr(read_info(path, allow_dense=True), attr) == expected


def test_nan_is_not_a_date() -> None:
    assert not any(isinstance(v, float) and math.isnan(v) for v in [sillytavern.parse_date("nan")])


@pytest.mark.parametrize("swipes", [True, 7, "abc", {"a": 1}])
def test_st_message_whose_swipes_is_not_a_list_keeps_its_text(swipes: Any) -> None:
    # found by bench/fuzz_readers.py at 10,000 cases: `"swipes": true` raised TypeError
    lines = [{"user_name": "You", "character_name": "Sera"}, {"name": "Sera", "mes": "yo", "swipes": swipes}]
    chat, skipped = sillytavern.parse_jsonl("\n".join(json.dumps(line) for line in lines))
    assert skipped == [] and [s.text for s in chat.messages[0].swipes] == ["yo"]
