"""One chat turn end to end: real llama.cpp (tiny generated MoE) and a real SQLite store."""

import threading
import time

import numpy as np
import pytest

from moechat import chat
from moechat.chat import TurnOptions
from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.errors import StoreError

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} keeps a lighthouse.",
        "personality": "calm",
        "scenario": "",
        "first_mes": "Welcome, {{user}}.",
        "mes_example": "",
        "alternate_greetings": ["Ahoy, {{user}}!", "Storm's coming."],
        "extensions": {"keep": {"me": 1}},
    },
}
OPTIONS = TurnOptions(sampling=Sampling(temperature=0, max_tokens=12), format="metharme", user_name="Ann")


@pytest.fixture
def chat_id(store):
    character = store.add_character("Mira", CARD)
    return chat.start_chat(store, character.id, user_name="Ann")


def test_greeting_swipes_are_first_mes_and_alternates(store, chat_id):
    (greeting,) = store.messages(chat_id)
    assert [s.text for s in greeting.swipes] == ["Welcome, Ann.", "Ahoy, Ann!", "Storm's coming."]
    assert greeting.role == "assistant" and greeting.name == "Mira" and greeting.swipe_index == 0


def test_send_commits_user_message_first_then_saves_reply_and_routing(engine, store, chat_id):
    turn = chat.send(engine, store, chat_id, "Hello there, Mira!", OPTIONS)
    first = next(turn)
    during = store.messages(chat_id)
    assert [m.role for m in during] == ["assistant", "user", "assistant"]
    assert during[1].text == "Hello there, Mira!" and during[1].name == "Ann"
    assert during[2].current.stats.stopped  # marked stopped until it finishes
    updates = [first, *turn]
    last = updates[-1]
    assert last.finish in ("length", "eos", "stop") and all(u.finish is None for u in updates[:-1])
    reply = store.messages(chat_id)[-1]
    assert reply.text == last.text == "".join(last.token_texts)
    assert not reply.current.stats.stopped and reply.current.stats.n_tokens == len(last.token_texts)
    saved = store.routing(reply.current.id)
    assert saved.probs.shape == last.probs.shape == (len(last.token_texts), engine.info.n_layers, 2)
    assert np.abs(saved.probs.astype(np.float32) - last.probs).max() < 1e-3  # float16 on disk
    assert [last.text[o : o + len(t)] for o, t in zip(saved.offsets, last.token_texts, strict=True)] == list(
        last.token_texts
    )


def test_user_message_gets_its_own_routing(engine, store, chat_id):
    updates = list(chat.send(engine, store, chat_id, "Tell me about the sea", OPTIONS))
    user = store.messages(chat_id)[1]
    saved = store.routing(user.current.id, "prompt")
    assert saved is not None and saved.n_tokens == len(updates[-1].prompt_token_texts) > 0
    assert "".join(updates[-1].prompt_token_texts).strip().endswith("sea")
    assert updates[-1].prompt_message_id == user.id
    assert updates[-1].prompt_probs.shape == (saved.n_tokens, engine.info.n_layers, 2)


def test_cancel_keeps_partial_reply_marked_stopped(engine, store, chat_id):
    cancel = threading.Event()
    options = TurnOptions(sampling=Sampling(temperature=0, max_tokens=50), format="metharme")
    updates = []
    for update in chat.send(engine, store, chat_id, "Go on", options, cancel):
        updates.append(update)
        if len(updates) == 3:
            cancel.set()
    assert updates[-1].finish == "cancelled" and len(updates) == 4
    reply = store.messages(chat_id)[-1]
    assert reply.current.stats.stopped and reply.text == updates[-1].text


def test_abandoned_turn_is_saved_as_stopped(engine, store, chat_id):
    options = TurnOptions(sampling=Sampling(temperature=0, max_tokens=50), format="metharme")
    turn = chat.send(engine, store, chat_id, "Go on", options)
    seen = [next(turn) for _ in range(4)]
    turn.close()
    reply = store.messages(chat_id)[-1]
    assert reply.current.stats.stopped and reply.text == seen[-1].text


def test_regenerate_adds_a_swipe_and_continue_appends(engine, store, chat_id):
    first = list(chat.send(engine, store, chat_id, "Hi", OPTIONS))[-1]
    seeded = TurnOptions(sampling=Sampling(temperature=1.0, seed=5, max_tokens=12), format="metharme")
    second = list(chat.regenerate(engine, store, chat_id, seeded))[-1]
    reply = store.messages(chat_id)[-1]
    assert len(reply.swipes) == 2 and reply.swipe_index == 1
    assert [s.text for s in reply.swipes] == [first.text, second.text]
    assert len(store.messages(chat_id)) == 3  # regenerate adds no message
    more = list(chat.continue_reply(engine, store, chat_id, OPTIONS))[-1]
    reply = store.messages(chat_id)[-1]
    assert len(reply.swipes) == 2 and reply.text == more.text and more.text.startswith(second.text)
    assert len(more.text) > len(second.text)
    assert store.routing(reply.current.id).n_tokens >= len(more.token_texts)


def test_impersonate_stores_nothing(engine, store, chat_id):
    before = store.messages(chat_id)
    drafts = list(chat.impersonate(engine, store, chat_id, OPTIONS))
    assert drafts and all(isinstance(d, str) for d in drafts)
    assert store.messages(chat_id) == before


def test_regenerate_needs_a_reply(engine, store):
    character = store.add_character("Quiet", {"name": "Quiet", "first_mes": ""})
    empty = chat.start_chat(store, character.id)
    with pytest.raises(StoreError, match="not the character's"):
        list(chat.regenerate(engine, store, empty, OPTIONS))
    with pytest.raises(StoreError, match="empty"):
        list(chat.send(engine, store, empty, "   ", OPTIONS))


def test_hidden_messages_stay_out_of_the_prompt(engine, store, chat_id):
    list(chat.send(engine, store, chat_id, "SECRET-WORD", OPTIONS))
    user = store.messages(chat_id)[1]
    store.set_hidden(user.id, True)
    prompt = chat.prompt_for(engine, store, chat_id, OPTIONS, "reply", chat._visible(store, chat_id))
    assert "SECRET-WORD" not in prompt.text and "Mira" in prompt.text


def test_update_rows_align_with_tokens_even_without_routing(tiny_moe_path, store, chat_id):
    with Engine.load(tiny_moe_path, n_ctx=512, capture="off") as blind:
        last = list(chat.send(blind, store, chat_id, "Hello", OPTIONS))[-1]
    assert len(last.token_texts) > 0 and last.probs.shape[0] == len(last.token_texts)
    assert np.isnan(last.probs).all()
    assert store.routing(store.messages(chat_id)[-1].current.id) is None


def test_prompt_routing_offsets_point_into_the_user_message(engine, store, chat_id):
    list(chat.send(engine, store, chat_id, "Where is the lighthouse?", OPTIONS))
    user = store.messages(chat_id)[1]
    saved = store.routing(user.current.id, "prompt")
    assert (saved.offsets >= 0).all() and (saved.offsets < len(user.text)).all()
    assert saved.offsets[0] == 0 and (np.diff(saved.offsets) > 0).all()


def test_a_turn_waiting_for_the_model_reports_its_place_then_replies(tiny_moe_path, store, chat_id):
    # one sequence, held busy by another stream: the turn's first updates say where it waits, then it replies
    release = threading.Event()
    with Engine.load(tiny_moe_path, n_ctx=2048, n_parallel=1) as eng, eng.watch(on_call=lambda *_: release.wait(30)):
        other = threading.Thread(target=lambda: list(eng.stream(eng.tokenize("x"), Sampling(max_tokens=3))))
        other.start()
        deadline = time.monotonic() + 30
        while not eng.occupancy().busy and time.monotonic() < deadline:
            time.sleep(0.005)
        turn = chat.send(eng, store, chat_id, "Hello there, Mira!", OPTIONS)
        first = next(turn)
        assert first.waiting == 1 and first.text == "" and first.finish is None
        assert store.messages(chat_id)[1].text == "Hello there, Mira!"  # committed while it waits
        release.set()
        rest = list(turn)
        other.join(30)
    assert all(u.waiting == 0 for u in rest) and rest[-1].finish == "length"
    assert store.messages(chat_id)[-1].text == rest[-1].text != ""
