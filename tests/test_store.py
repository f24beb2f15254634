"""Chat store on real SQLite files: migrations, records, every chat operation, routing blobs, owners."""

import sqlite3

import numpy as np
import pytest

from moechat.errors import StoreError
from moechat.store.records import GenStats, RoutingRecord
from moechat.store.schema import MIGRATIONS
from moechat.store.store import DB_NAME, Store

CARD = '{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Sera", "x": [1, 2.50]}}'


def routing(n: int, layers: int = 3, experts: int = 8, k: int = 2, seed: int = 0) -> RoutingRecord:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, layers, experts)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ids = np.argsort(-probs, axis=-1)[..., :k].astype(np.int32)
    return RoutingRecord(probs, ids, rng.integers(0, 50000, n), np.arange(n) * 2)


@pytest.fixture
def chat(store):
    character = store.add_character("Sera", CARD)
    return store.create_chat(character.id, title="first", greetings=["Hi.", "Hello.", "Hey."])


def test_migrates_from_empty_and_reopens(tmp_path):
    with Store.open(tmp_path / "new") as store:
        assert store.version == len(MIGRATIONS)
        store.add_character("A", "{}")
    with Store.open(tmp_path / "new") as store:
        assert store.version == len(MIGRATIONS) and [c.name for c in store.characters()] == ["A"]
    conn = sqlite3.connect(tmp_path / "new" / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(tmp_path)


def test_not_a_database_is_a_store_error(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store.open(tmp_path)


def test_card_json_kept_byte_for_byte(store):
    character = store.add_character("Sera", CARD)
    assert store.character(character.id).card_json == CARD
    updated = store.update_character(character.id, {"data": {"name": "Sera 2"}}, name="Sera 2")
    assert updated.card()["data"]["name"] == "Sera 2" and store.find_character("Sera 2").id == character.id
    with pytest.raises(StoreError, match="not valid JSON"):
        store.add_character("Bad", "{nope")


def test_greetings_are_swipes_of_message_zero(store, chat):
    (greeting,) = store.messages(chat.id)
    assert greeting.role == "assistant" and greeting.name == "Sera" and greeting.swipe_index == 0
    assert [s.text for s in greeting.swipes] == ["Hi.", "Hello.", "Hey."]
    assert store.step_swipe(greeting.id, -1).text == "Hey."
    assert store.step_swipe(greeting.id, +1).text == "Hi."
    assert store.select_swipe(greeting.id, 1).text == "Hello."
    with pytest.raises(StoreError, match="no swipe 3"):
        store.select_swipe(greeting.id, 3)


def test_streamed_reply_with_routing(store, chat):
    user = store.add_message(chat.id, "user", "Who are you?", name="You")
    store.set_prompt_routing(user.id, routing(5, seed=1))
    swipe = store.begin_reply(chat.id, name="Sera", model="moe.gguf")
    assert swipe.stats.stopped and swipe.text == ""
    store.append_to_swipe(swipe.id, "I am", routing(2, seed=2))
    store.append_to_swipe(swipe.id, " Sera.", routing(3, seed=3))
    done = store.finish_swipe(swipe.id, stopped=False, tokens_per_s=20.0, n_tokens=5)
    assert (done.text, done.stats.stopped, done.stats.tokens_per_s, done.stats.model) == (
        "I am Sera.",
        False,
        20.0,
        "moe.gguf",
    )
    assert done.stats.gen_finished >= done.stats.gen_started
    got = store.routing(swipe.id)
    expected = [routing(2, seed=2), routing(3, seed=3)]
    np.testing.assert_allclose(got.probs, np.concatenate([r.probs for r in expected]), atol=1e-3, rtol=1e-3)
    assert got.probs.dtype == np.float16 and got.experts.dtype == np.int8
    np.testing.assert_array_equal(got.experts, np.concatenate([r.experts for r in expected]))
    np.testing.assert_array_equal(got.token_ids, np.concatenate([r.token_ids for r in expected]))
    assert got.offsets.tolist() == [0, 2, 4, 6, 8]  # second chunk shifted by len("I am")
    prompt = store.routing(store.message(user.id).current.id, kind="prompt")
    assert prompt.n_tokens == 5 and store.message(user.id).current.has_routing


def test_many_experts_use_int16_and_shapes_must_match(store, chat):
    swipe = store.begin_reply(chat.id, name="Sera")
    store.append_to_swipe(swipe.id, "x", routing(1, experts=200, k=8))
    assert store.routing(swipe.id).experts.dtype == np.int16
    with pytest.raises(StoreError, match="does not match"):
        store.append_to_swipe(swipe.id, "y", routing(1, experts=8))
    assert store.swipe(swipe.id).text == "x"  # the failed write left nothing behind


def test_bad_routing_shapes_are_refused():
    with pytest.raises(StoreError, match="disagree"):
        RoutingRecord(np.zeros((2, 3, 4)), np.zeros((2, 3, 2)), np.zeros(3), np.zeros(2))
    with pytest.raises(StoreError, match="needs"):
        RoutingRecord(np.zeros((2, 3)), np.zeros((2, 3, 2)), np.zeros(2), np.zeros(2))


def test_stopped_reply_regenerate_and_continue(store, chat):
    store.add_message(chat.id, "user", "Go on", name="You")
    reply = store.add_reply(chat.id, "Once", name="Sera", stats=GenStats(model="m", stopped=True))
    assert reply.current.stats.stopped
    regen = store.add_reply(chat.id, "Twice", name="Sera", stats=GenStats(model="m"), message_id=reply.id)
    assert [s.text for s in regen.swipes] == ["Once", "Twice"] and regen.swipe_index == 1
    again = store.begin_reply(chat.id, name="Sera", message_id=reply.id)
    store.append_to_swipe(again.id, "Thrice")
    store.finish_swipe(again.id, stopped=False)
    store.append_to_swipe(store.message(reply.id).current.id, " upon a time")  # continue
    message = store.message(reply.id)
    assert message.text == "Thrice upon a time" and message.swipe_index == 2
    assert store.step_swipe(reply.id, -1).text == "Twice"


def test_edit_marks_routing_stale_hide_and_delete(store, chat):
    reply = store.add_reply(chat.id, "abc", name="Sera", stats=GenStats(), routing=routing(3))
    edited = store.edit_message(reply.id, "abd")
    assert edited.text == "abd" and edited.current.routing_stale and edited.current.has_routing
    assert store.set_hidden(reply.id, True).hidden
    swipe_id = edited.current.id
    store.delete_message(reply.id)
    assert [m.id for m in store.messages(chat.id)] == [store.messages(chat.id)[0].id]
    with pytest.raises(StoreError, match="not found"):
        store.routing(swipe_id)


def test_branch_copies_up_to_the_message_with_swipes_and_routing(store, chat):
    user = store.add_message(chat.id, "user", "Q", name="You")
    reply = store.add_reply(chat.id, "A", name="Sera", stats=GenStats(model="m"), routing=routing(1))
    store.add_message(chat.id, "user", "after", name="You")
    branch = store.branch(chat.id, reply.id, title="alt")
    assert (branch.parent_chat_id, branch.branch_message_id, branch.title) == (chat.id, reply.id, "alt")
    messages = store.messages(branch.id)
    assert [m.text for m in messages] == ["Hi.", "Q", "A"] and len(messages[0].swipes) == 3
    assert store.routing(messages[2].current.id).n_tokens == 1
    with pytest.raises(StoreError, match="not in chat"):
        store.branch(branch.id, user.id)
    store.delete_chat(chat.id)
    assert store.chat(branch.id).parent_chat_id is None and len(store.messages(branch.id)) == 3


def test_chats_listing_and_updates(store, chat):
    other = store.add_character("Bob", "{}")
    second = store.create_chat(other.id, title="bob chat")
    assert [c.id for c in store.chats()] == [second.id, chat.id]
    store.add_message(chat.id, "user", "bump", name="You")
    listed = store.chats()
    assert [c.id for c in listed] == [chat.id, second.id] and listed[0].message_count == 2
    assert [c.id for c in store.chats(other.id)] == [second.id]
    updated = store.update_chat(chat.id, title="renamed", authors_note="AN", persona="P", format="metharme")
    assert (updated.title, updated.authors_note, updated.persona, updated.format) == ("renamed", "AN", "P", "metharme")
    with pytest.raises(StoreError, match="update_chat takes"):
        store.update_chat(chat.id, owner="x")


def test_cascade_deletes(store, chat, tmp_path):
    reply = store.add_reply(chat.id, "A", name="Sera", stats=GenStats(), routing=routing(2))
    store.branch(chat.id, reply.id)
    store.delete_character(chat.character_id)
    assert store.chats() == [] and store.characters() == []
    conn = sqlite3.connect(tmp_path / DB_NAME)
    for table in ("chats", "messages", "swipes", "routing"):
        assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table


def test_owner_isolation(store, chat):
    reply = store.add_reply(chat.id, "mine", name="Sera", stats=GenStats(), routing=routing(1))
    with store.for_owner("visitor-2") as other:
        assert other.chats() == [] and other.characters() == [] and other.find_character("Sera") is None
        calls = [
            lambda: other.chat(chat.id),
            lambda: other.messages(chat.id),
            lambda: other.message(reply.id),
            lambda: other.routing(reply.current.id),
            lambda: other.edit_message(reply.id, "theirs"),
            lambda: other.delete_message(reply.id),
            lambda: other.delete_chat(chat.id),
            lambda: other.add_message(chat.id, "user", "hi"),
            lambda: other.begin_reply(chat.id, name="x"),
            lambda: other.append_to_swipe(reply.current.id, "x"),
            lambda: other.branch(chat.id, reply.id),
            lambda: other.character(chat.character_id),
            lambda: other.create_chat(chat.character_id),
        ]
        for call in calls:
            with pytest.raises(StoreError, match="not found"):
                call()
    with pytest.raises(StoreError, match="chat 999 not found"):
        store.chat(999)
    assert store.message(reply.id).text == "mine" and len(store.chats()) == 1
    with pytest.raises(StoreError, match="owner"):
        Store(store.path, owner="")


def test_bad_role_is_refused(store, chat):
    with pytest.raises(StoreError, match="role"):
        store.add_message(chat.id, "narrator", "x")
    assert len(store.messages(chat.id)) == 1


def test_two_handles_write_the_same_file(tmp_path, chat, store):
    with Store.open(tmp_path) as second:
        for i in range(20):
            store.add_message(chat.id, "user", f"a{i}")
            second.add_message(chat.id, "user", f"b{i}")
    assert store.chat(chat.id).message_count == 41
