"""SillyTavern chat JSONL: lenient dates, import, lossless round trip through the store, moechat extras."""

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from moechat.chatfiles import sillytavern
from moechat.errors import StoreError
from moechat.store.records import GenStats, RoutingRecord
from moechat.store.store import Store

DATA = Path(__file__).parent / "data"


def local(*args: int) -> float:
    return datetime(*args).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-09-28@01h02m03s", local(2024, 9, 28, 1, 2, 3)),
        ("2024-9-28 @01h 02m 03s 456ms", local(2024, 9, 28, 1, 2, 3) + 0.456),
        ("September 28, 2024 1:02am", local(2024, 9, 28, 1, 2)),
        ("September 28, 2024 1:02 PM", local(2024, 9, 28, 13, 2)),
        ("May 03, 2026 10:00", local(2026, 5, 3, 10, 0)),
        ("2024-09-28T01:02:59.000Z", 1727485379.0),
        (1727485379000, 1727485379.0),
        ("1727485379000", 1727485379.0),
        (1727485379, 1727485379.0),
        ("yesterday-ish", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_date_is_lenient(text, expected):
    got = sillytavern.parse_date(text)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_formats_write_the_ui_forms():
    ts = local(2024, 9, 28, 13, 2, 3)
    assert sillytavern.format_create_date(ts) == "2024-09-28@13h02m03s"
    assert sillytavern.format_send_date(ts) == "September 28, 2024 1:02pm"
    assert sillytavern.format_iso(1727485379.5) == "2024-09-28T01:02:59.500Z"


def test_import_reads_every_field():
    chat, skipped = sillytavern.read_file(DATA / "st_full.jsonl")
    assert skipped == []
    assert chat.character_name == "Seraphina"
    assert chat.authors_note == "Seraphina is wary of strangers."
    assert (chat.locked_persona, chat.persona) == ("user-default.png", "")
    assert chat.created == pytest.approx(local(2024, 9, 28, 1, 2, 3))
    greeting, user, reply, narrator, last = chat.messages
    assert [s.text for s in greeting.swipes][1] == "*She raises a hand in greeting.* Hello there."
    assert (user.role, user.name, len(user.swipes)) == ("user", "You", 1)
    assert reply.swipe_index == 1 and reply.swipes[1].text == "*She smiles.* Welcome back."
    assert reply.swipes[1].stats.model == "moe-pyg-xwin.Q4_K_M.gguf"
    assert reply.swipes[0].stats.gen_started == pytest.approx(1727485379.0)
    assert reply.swipes[1].info["extra"]["unknownSwipeKey"] == 7
    assert narrator.hidden and narrator.role == "assistant"
    assert narrator.created == pytest.approx(local(2024, 9, 28, 1, 4, 5) + 0.456)
    assert last.created == pytest.approx(1727485500.0)


def roundtrip(tmp_path, name: str) -> tuple[list[dict], list[dict]]:
    with Store.open(tmp_path) as store:
        chat, _ = sillytavern.read_file(DATA / name)
        info = store.import_chat(chat)
        text = sillytavern.to_jsonl(store.chat(info.id), store.messages(info.id), {})
    original = [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]
    return original, [json.loads(line) for line in text.splitlines()]


def test_round_trip_keeps_every_field_and_unknown_keys(tmp_path):
    original, written = roundtrip(tmp_path, "st_full.jsonl")
    assert written == original
    assert list(written[3]) == list(original[3])  # key order kept too


def test_group_chat_without_header_round_trips_its_messages(tmp_path):
    original, written = roundtrip(tmp_path, "st_group.jsonl")
    assert written[1:] == original
    assert written[0]["character_name"] == "Alice"


def test_malformed_lines_are_reported_and_the_rest_imported():
    chat, skipped = sillytavern.read_file(DATA / "st_malformed.jsonl")
    assert [s.line for s in skipped] == [3, 4, 5]
    assert "not valid JSON" in skipped[0].reason
    assert "not a JSON object" in skipped[1].reason
    assert "no 'mes'" in skipped[2].reason
    assert [m.swipes[0].text for m in chat.messages] == ["Hi!", "Still here."]
    assert chat.messages[1].created == pytest.approx(local(2024, 5, 3, 22, 2))


def test_bad_header_is_reported():
    _, skipped = sillytavern.parse_jsonl('{"foo": 1}\n{"name":"A","mes":"x"}\n')
    assert skipped[0].line == 1 and "header" in skipped[0].reason


def test_files_over_the_size_limit_are_refused(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("x" * 2000)
    with pytest.raises(StoreError, match="limit"):
        sillytavern.read_file(path, max_bytes=1000)


def test_missing_file_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot read"):
        sillytavern.read_file(tmp_path / "nope.jsonl")


def routing(n: int) -> RoutingRecord:
    rng = np.random.default_rng(0)
    probs = rng.random((n, 2, 4)).astype(np.float32)
    experts = np.argsort(-probs, axis=-1)[..., :2]
    return RoutingRecord(probs, experts, np.arange(n), np.arange(n))


def test_new_chat_exports_st_fields_and_moechat_extras(tmp_path):
    with Store.open(tmp_path) as store:
        character = store.add_character("Sera", {"spec": "chara_card_v2", "data": {"name": "Sera"}})
        chat = store.create_chat(character.id, greetings=["Hi.", "Hello."], authors_note="AN")
        store.add_message(chat.id, "user", "Yo", name="You")
        stats = GenStats(model="m.gguf", tokens_per_s=12.5, n_tokens=4, gen_started=1.0, gen_finished=2.0)
        reply = store.add_reply(chat.id, "abcd", name="Sera", stats=stats, routing=routing(4))
        lines = sillytavern.to_jsonl(store.chat(chat.id), store.messages(chat.id), dict(store.iter_routing(chat.id)))
    header, greeting, user, last = (json.loads(line) for line in lines.splitlines())
    assert header["character_name"] == "Sera" and header["chat_metadata"]["note_prompt"] == "AN"
    assert greeting["swipes"] == ["Hi.", "Hello."] and greeting["swipe_id"] == 0 and len(greeting["swipe_info"]) == 2
    assert user["is_user"] is True and "swipes" not in user
    assert last["mes"] == "abcd" and last["extra"]["model"] == "m.gguf"
    moechat = last["extra"]["moechat"]
    assert moechat["tokens_per_s"] == 12.5 and moechat["stopped"] is False
    assert moechat["routing"]["tokens"] == 4 and sum(moechat["routing"]["expert_share"]) == pytest.approx(1, abs=1e-3)
    assert last["swipe_info"][0]["extra"]["moechat"]["routing"]["experts"] == 4
    assert last["gen_started"] == "1970-01-01T00:00:01.000Z"
    assert reply.current.has_routing


def test_reimporting_an_export_gives_the_same_chat(tmp_path):
    original, first = roundtrip(tmp_path / "a", "st_full.jsonl")
    out = tmp_path / "again.jsonl"
    out.write_text("\n".join(json.dumps(line) for line in first))
    chat, skipped = sillytavern.read_file(out)
    assert skipped == [] and len(chat.messages) == len(original) - 1
