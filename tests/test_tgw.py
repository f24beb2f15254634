"""text-generation-webui history JSON import: internal/visible/metadata, versions as swipes, legacy files."""

from datetime import datetime
from pathlib import Path

import pytest

from moechat.chatfiles import tgw
from moechat.errors import StoreError
from moechat.store.store import Store

DATA = Path(__file__).parent / "data"
AQUA = DATA / "tgw_Aqua" / "20260503-10-00-00.json"


def test_import_uses_internal_text_and_skips_the_begin_marker():
    chat, skipped = tgw.read_file(AQUA)
    assert skipped == [] and chat.character_name == "tgw_Aqua" and chat.title == "20260503-10-00-00"
    roles = [(m.role, m.swipes[m.swipe_index].text) for m in chat.messages]
    assert roles[0] == ("assistant", "Hello! I'm Aqua & I love water.")
    assert roles[1] == ("user", "What is <b>2+2</b>?")
    assert [r for r, _ in roles] == ["assistant", "user", "assistant", "user", "assistant"]


def test_versions_become_swipes_with_the_current_index():
    chat, _ = tgw.read_file(AQUA, character_name="Aqua")
    reply = chat.messages[2]
    assert chat.character_name == "Aqua"
    assert [s.text for s in reply.swipes] == ["It's four.", "It's 4."] and reply.swipe_index == 1
    assert reply.created == pytest.approx(datetime(2026, 5, 3, 10, 1).timestamp())
    assert reply.swipes[1].stats.gen_finished == pytest.approx(datetime(2026, 5, 3, 10, 2).timestamp())


def test_visible_only_is_unescaped():
    data = {"visible": [["", "Hi &amp; bye"], ["a &lt; b", "ok"]]}
    chat, _ = tgw.parse_history(data, "X")
    assert [m.swipes[0].text for m in chat.messages] == ["Hi & bye", "a < b", "ok"]


def test_legacy_data_and_bad_rows():
    chat, skipped = tgw.read_file(DATA / "tgw_legacy.json", character_name="Old")
    assert [s.line for s in skipped] == [3] and "row 2" in skipped[0].reason
    texts = [(m.role, m.swipes[0].text) for m in chat.messages]
    assert texts == [("assistant", "Greetings."), ("user", "Hi"), ("assistant", "Hello &amp; welcome"), ("user", "Bye")]


@pytest.mark.parametrize("data", [[], {"foo": 1}, "text"])
def test_not_a_history_is_a_store_error(data):
    with pytest.raises(StoreError, match="text-generation-webui"):
        tgw.parse_history(data, "X")


def test_unparseable_file_and_size_limit(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StoreError, match="cannot read"):
        tgw.read_file(bad)
    with pytest.raises(StoreError, match="limit"):
        tgw.read_file(AQUA, max_bytes=10)


def test_imported_into_the_store(tmp_path):
    with Store.open(tmp_path) as store:
        chat, _ = tgw.read_file(AQUA, character_name="Aqua")
        info = store.import_chat(chat)
        messages = store.messages(info.id)
        assert info.message_count == 5 and messages[2].text == "It's 4." and len(messages[2].swipes) == 2
        assert store.find_character("Aqua").card()["data"]["name"] == "Aqua"
