"""Group chats end to end: the store's groups (real SQLite) and group turns on real llama.cpp (tiny MoE)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from moechat import chat
from moechat.chat import TurnOptions
from moechat.engine.types import Sampling
from moechat.errors import StoreError
from moechat.groups import next_members
from moechat.prompt.formats import get_format
from moechat.store.store import Store


def card(name: str, greeting: str, talk: float = 0.5, *alternates: str) -> dict:
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": name,
            "description": f"{{{{char}}}} is {name.lower()}-like.",
            "first_mes": greeting,
            "alternate_greetings": list(alternates),
            "extensions": {"talkativeness": talk},
        },
    }


OPTIONS = TurnOptions(sampling=Sampling(temperature=0, max_tokens=6, seed=1), format="metharme", user_name="Dana")


@pytest.fixture
def members(store: Store) -> list[int]:
    return [
        store.add_character("Alice", card("Alice", "Hail, {{user}}!", 0.5, "Well met.")).id,
        store.add_character("Bob", card("Bob", "Bread, {{user}}?")).id,
        store.add_character("Cara", card("Cara", "")).id,
    ]


def test_groups_are_stored_with_members_in_order(store: Store, members: list[int]) -> None:
    group = store.create_group("Market", [members[2], members[0], members[1]], strategy="list", muted=[members[0]])
    assert [m.name for m in group.members] == ["Cara", "Alice", "Bob"]
    assert [m.muted for m in group.members] == [False, True, False]
    assert store.mute_member(group.id, members[0], False).members[1].muted is False
    renamed = store.update_group(group.id, name="Bazaar", generation_mode="join", allow_self_responses=True)
    assert (renamed.name, renamed.generation_mode, renamed.allow_self_responses) == ("Bazaar", "join", True)
    assert [m.name for m in store.set_group_members(group.id, members[:2]).members] == ["Alice", "Bob"]
    with pytest.raises(StoreError, match="two or more"):
        store.create_group("Solo", [members[0]])
    with pytest.raises(StoreError, match="reply order"):
        store.update_group(group.id, strategy="loudest")
    assert store.for_owner("someone-else").groups() == []
    with pytest.raises(StoreError, match="not found"):
        store.for_owner("someone-else").group(group.id)


def test_a_group_chat_opens_with_each_members_greeting(store: Store, members: list[int]) -> None:
    group = store.create_group("Market", members)
    chat_id = chat.start_group_chat(store, group.id, user_name="Dana")
    messages = store.messages(chat_id)
    assert [(m.name, m.text) for m in messages] == [("Alice", "Hail, Dana!"), ("Bob", "Bread, Dana?")]  # Cara: none
    assert [s.text for s in messages[0].swipes] == ["Hail, Dana!", "Well met."]
    assert store.speakers(chat_id) == {messages[0].id: members[0], messages[1].id: members[1]}
    assert store.chat_group(chat_id) == group and store.group_chats(group.id) == [chat_id]
    branch = store.branch(chat_id, messages[1].id)
    assert store.chat_group(branch.id) == group
    assert sorted(store.speakers(branch.id).values()) == sorted(members[:2])
    store.delete_group(group.id)
    assert store.chats() == []


def test_deleting_a_member_keeps_the_group_and_its_chats(store: Store, members: list[int]) -> None:
    group = store.create_group("Market", members)
    chat_id = chat.start_group_chat(store, group.id, user_name="Dana")
    said = [(m.name, m.text) for m in store.messages(chat_id)]
    solo = chat.start_chat(store, members[0])  # Alice's own chat goes with her
    store.delete_character(members[0])  # the first member: the chat's row named her
    assert [m.name for m in store.group(group.id).members] == ["Bob", "Cara"]
    assert store.chat_group(chat_id) == store.group(group.id) and store.chat(chat_id).character_id == members[1]
    assert [(m.name, m.text) for m in store.messages(chat_id)] == said  # her greeting stays, with her name
    assert store.speakers(chat_id) == {store.messages(chat_id)[1].id: members[1]}
    assert solo not in [c.id for c in store.chats()]
    store.delete_character(members[2])
    store.delete_character(members[1])  # the last member: the group and its chats go with it
    assert store.groups() == [] and store.chats() == []


def test_list_order_replies_from_each_member_with_its_own_prompt(engine, store: Store, members: list[int]) -> None:
    group = store.create_group("Market", members, strategy="list", muted=[members[2]])
    chat_id = chat.start_group_chat(store, group.id, user_name="Dana")
    prompts = [
        chat.prompt_for(engine, store, chat_id, OPTIONS, "reply", store.messages(chat_id), m).text for m in members
    ]
    assert "Alice is alice-like." in prompts[0] and "Bob is bob-like." not in prompts[0]
    assert prompts[1].endswith("[Write the next reply only as Bob.]<|model|>Bob:")
    updates = list(chat.send(engine, store, chat_id, "Hello, everyone!", OPTIONS))
    messages = store.messages(chat_id)
    assert [m.name for m in messages] == ["Alice", "Bob", "Dana", "Alice", "Bob"]  # Cara is muted
    speakers = store.speakers(chat_id)
    assert [speakers.get(m.id) for m in messages[3:]] == members[:2]
    assert {u.message_id for u in updates} == {messages[3].id, messages[4].id}
    assert all(m.current.has_routing and not m.current.stats.stopped for m in messages[3:])
    # regenerate and continue keep the speaker; the manual "speak" button asks anyone, muted too
    regen = list(chat.regenerate(engine, store, chat_id, OPTIONS))
    last = store.messages(chat_id)[-1]
    assert regen[-1].message_id == last.id and len(last.swipes) == 2 and last.name == "Bob"
    assert store.speakers(chat_id)[last.id] == members[1]
    list(chat.continue_reply(engine, store, chat_id, OPTIONS))
    assert store.speakers(chat_id)[store.messages(chat_id)[-1].id] == members[1]
    list(chat.trigger(engine, store, chat_id, members[2], OPTIONS))
    final = store.messages(chat_id)[-1]
    assert final.name == "Cara" and store.speakers(chat_id)[final.id] == members[2]


def test_manual_order_waits_and_natural_order_is_seeded(engine, store: Store, members: list[int]) -> None:
    manual = store.create_group("Quiet", members, strategy="manual")
    chat_id = chat.start_group_chat(store, manual.id)
    assert list(chat.send(engine, store, chat_id, "Anyone?", OPTIONS)) == []
    assert store.messages(chat_id)[-1].role == "user"
    natural = store.create_group("Chatty", members, strategy="natural")
    chat_id = chat.start_group_chat(store, natural.id)
    picked = [next_members(store, chat_id, natural, "Cara, say something.", 1) for _ in range(2)]
    assert picked[0] == picked[1] and picked[0][0] == members[2]  # the mentioned member first; seeded
    list(chat.send(engine, store, chat_id, "Cara, say something.", OPTIONS))
    names = {m: store.character(m).name for m in members}
    assert [m.name for m in store.messages(chat_id)[3:]] == [names[m] for m in picked[0]]


def test_stop_ends_the_round(engine, store: Store, members: list[int]) -> None:
    group = store.create_group("Market", members, strategy="list")
    chat_id = chat.start_group_chat(store, group.id)
    cancel = threading.Event()
    turn = chat.send(engine, store, chat_id, "Hi!", OPTIONS, cancel)
    next(turn)
    cancel.set()
    list(turn)
    messages = store.messages(chat_id)
    assert [m.name for m in messages[2:]] == ["Dana", "Alice"] and messages[-1].current.stats.stopped


def test_trigger_needs_a_group_member(engine, store: Store, members: list[int]) -> None:
    group = store.create_group("Market", members[:2])
    chat_id = chat.start_group_chat(store, group.id)
    with pytest.raises(StoreError, match="not a member"):
        list(chat.trigger(engine, store, chat_id, members[2], OPTIONS))
    solo = chat.start_chat(store, members[0])
    with pytest.raises(StoreError, match="group"):
        list(chat.trigger(engine, store, solo, None, OPTIONS))
    assert get_format("metharme").names


def test_a_database_from_before_groups_upgrades(tmp_path: Path) -> None:
    import sqlite3

    from moechat.store.schema import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for statement in (s for migration in MIGRATIONS[:2] for s in migration):
        conn.execute(statement)
    conn.execute("INSERT INTO characters (owner, name, card_json, created, updated) VALUES ('local', 'A', '{}', 0, 0)")
    conn.execute("INSERT INTO characters (owner, name, card_json, created, updated) VALUES ('local', 'B', '{}', 0, 0)")
    conn.execute("INSERT INTO chats (owner, character_id, created, updated) VALUES ('local', 1, 0, 0)")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.version == len(MIGRATIONS) >= 3
        assert store.chat_group(1) is None and store.speakers(1) == {}
        group = store.create_group("AB", [1, 2])
        assert store.group_chats(group.id) == [] and [m.name for m in group.members] == ["A", "B"]
