"""Personas: the rule that picks a turn's persona (chat lock > character lock > the UI's pick > default), the store
(real SQLite: per owner, locks removed with their persona), `{{user}}`/`{{persona}}` in a card greeting, turns in
real llama.cpp under each persona, and a rename that leaves old messages as they were written."""

import json
import sqlite3
from pathlib import Path

import pytest

from moechat import chat
from moechat.chat import TurnOptions
from moechat.engine.types import Sampling
from moechat.errors import MoechatError, StoreError
from moechat.library import delete_persona, persona_avatar_file, persona_avatar_path, set_persona_avatar
from moechat.store.personas import PersonaLocks, PersonaRecord, choose, new_avatar_id
from moechat.store.schema import MIGRATIONS
from moechat.store.store import DB_NAME, Store

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mira",
        "description": "{{char}} keeps a lighthouse. {{user}} visits.",
        "first_mes": "Welcome, {{user}}. You look like {{persona}}",
        "alternate_greetings": ["Ahoy, <USER>!"],
    },
}
OPTIONS = TurnOptions(sampling=Sampling(temperature=0, max_tokens=6), format="metharme", user_name="Typed")


def record(persona_id: int, name: str) -> PersonaRecord:
    return PersonaRecord(persona_id, "local", f"{persona_id}.png", name, f"{name}'s description")


PEOPLE = {1: record(1, "Chat"), 2: record(2, "Char"), 3: record(3, "Pick"), 4: record(4, "Default")}


@pytest.mark.parametrize(
    ("locks", "picked", "expected"),
    [
        (PersonaLocks(chat=1, character=2, default=4), 3, ("Chat", "chat lock")),
        (PersonaLocks(character=2, default=4), 3, ("Char", "character lock")),
        (PersonaLocks(default=4), 3, ("Pick", "picked")),
        (PersonaLocks(default=4), None, ("Default", "default")),
        (PersonaLocks(), None, None),
        (PersonaLocks(chat=99, character=98, default=97), None, None),  # locks of deleted personas are passed over
        (PersonaLocks(chat=99, default=4), 77, ("Default", "default")),
    ],
)
def test_the_lock_wins_then_the_pick_then_the_default(locks, picked, expected):
    chosen = choose(PEOPLE, locks, picked)
    assert (None if chosen is None else (chosen.persona.name, chosen.why)) == expected


def test_avatar_ids_are_made_as_sillytavern_makes_them():
    assert new_avatar_id("Ann Lee", 1700000000.123) == "1700000000123-Ann_Lee.png"
    assert new_avatar_id("../<b>", 1.0) == "1000-b.png"


@pytest.fixture
def mira(store):
    return store.add_character("Mira", CARD)


def test_crud_default_and_locks_in_sqlite(store, mira):
    ann = store.add_persona("Ann", "A sailor.")
    bo = store.add_persona("Bo", "A baker.", avatar="bo.png", extra={"position": 0, "depth": 2})
    assert ann.avatar.endswith("-Ann.png") and store.persona_by_avatar("bo.png") == bo
    assert [p.name for p in store.personas()] == ["Ann", "Bo"] and bo.extra == {"position": 0, "depth": 2}
    with pytest.raises(StoreError, match="exists already"):
        store.add_persona("Other", avatar="bo.png")
    with pytest.raises(StoreError, match="needs a name"):
        store.add_persona("  ")
    chat_id = chat.start_chat(store, mira.id)
    store.set_default_persona(ann.id)
    assert chat.turn_persona(store, chat_id, OPTIONS).name == "Ann"
    store.lock_persona(bo.id, character_id=mira.id)
    assert store.chosen_persona(chat_id).why == "character lock"
    store.lock_persona(ann.id, chat_id=chat_id)
    assert store.persona_locks(chat_id) == PersonaLocks(chat=ann.id, character=bo.id, default=ann.id)
    assert (store.chosen_persona(chat_id, picked=bo.id).persona.name, store.chosen_persona(chat_id).why) == (
        "Ann",
        "chat lock",
    )
    store.lock_persona(None, chat_id=chat_id)  # unlock
    assert store.chosen_persona(chat_id).persona.name == "Bo"
    store.lock_persona(ann.id, chat_id=chat_id)
    store.delete_persona(ann.id)  # its chat lock and the default go with it
    assert store.persona_locks(chat_id) == PersonaLocks(character=bo.id)
    with pytest.raises(StoreError, match="exactly one"):
        store.lock_persona(bo.id)
    with pytest.raises(StoreError, match="not found"):
        store.lock_persona(bo.id, chat_id=chat_id + 100)
    store.lock_persona(None, character_id=mira.id)
    assert store.chosen_persona(chat_id) is None
    assert chat.turn_persona(store, chat_id, OPTIONS).name == "Typed"


def test_personas_are_stored_per_owner(store, mira):
    ann = store.add_persona("Ann", avatar="ann.png")
    store.set_default_persona(ann.id)
    with store.for_owner("guest") as guest:
        assert guest.personas() == [] and guest.persona_by_avatar("ann.png") is None
        assert guest.persona_locks() == PersonaLocks()
        for attempt in (
            lambda: guest.persona(ann.id),
            lambda: guest.update_persona(ann.id, name="Mine"),
            lambda: guest.delete_persona(ann.id),
            lambda: guest.set_default_persona(ann.id),
        ):
            with pytest.raises(StoreError, match="not found"):
                attempt()
        own = guest.add_persona("Ann", avatar="ann.png")  # the same avatar id in another owner's set
        guest_char = guest.add_character("G", CARD)
        with pytest.raises(StoreError, match="not found"):
            guest.lock_persona(own.id, character_id=mira.id)
        with pytest.raises(StoreError, match="not found"):
            guest.lock_persona(ann.id, character_id=guest_char.id)
    assert store.persona(ann.id).name == "Ann" and store.persona_locks().default == ann.id


def test_greeting_macros_resolve_to_the_persona(store, mira):
    sea = store.add_persona("Ann", "a sailor.")
    chat_id = chat.start_chat(store, mira.id, persona_id=sea.id)
    (greeting,) = store.messages(chat_id)
    assert [s.text for s in greeting.swipes] == ["Welcome, Ann. You look like a sailor.", "Ahoy, Ann!"]
    typed = chat.start_chat(store, mira.id, user_name="Cy", persona="a cook.")
    assert store.messages(typed)[0].text == "Welcome, Cy. You look like a cook."
    bo = store.add_persona("Bo", "a baker.")
    store.lock_persona(bo.id, character_id=mira.id)  # the character's lock beats the pick
    locked = chat.start_chat(store, mira.id, persona_id=sea.id)
    assert store.messages(locked)[0].text == "Welcome, Bo. You look like a baker."


def test_turns_use_default_then_chat_lock_then_character_lock(engine, store, mira):
    default = store.add_persona("Dee", "the default.")
    store.set_default_persona(default.id)
    chat_id = chat.start_chat(store, mira.id)
    assert store.messages(chat_id)[0].text == "Welcome, Dee. You look like the default."

    def said(text: str, options: TurnOptions = OPTIONS) -> str:
        list(chat.send(engine, store, chat_id, text, options))
        return [m for m in store.messages(chat_id) if m.role == "user"][-1].name

    def prompt(options: TurnOptions = OPTIONS) -> str:
        return chat.prompt_for(engine, store, chat_id, options, "reply", store.messages(chat_id)).text

    assert said("one") == "Dee" and "the default." in prompt()
    picked = store.add_persona("Pia", "the picked one.")
    assert said("two", TurnOptions(**{**OPTIONS.__dict__, "persona_id": picked.id})) == "Pia"
    on_chat = store.add_persona("Cat", "locked to the chat.")
    on_char = store.add_persona("Kit", "locked to the character.")
    store.lock_persona(on_char.id, character_id=mira.id)
    assert said("three", TurnOptions(**{**OPTIONS.__dict__, "persona_id": picked.id})) == "Kit"
    store.lock_persona(on_chat.id, chat_id=chat_id)
    assert said("four") == "Cat"
    text = prompt()
    definitions = text.split("<|model|>")[0]  # before the greeting (which keeps the name it was written with)
    assert "locked to the chat." in definitions and "the default." not in definitions and "Cat visits." in text
    assert [f"<|user|>{n}: {t}" in text for n, t in (("Dee", "one"), ("Pia", "two"), ("Kit", "three"))] == [True] * 3


def test_a_rename_does_not_rewrite_old_messages(engine, store, mira):
    ann = store.add_persona("Ann", "a sailor.")
    store.set_default_persona(ann.id)
    chat_id = chat.start_chat(store, mira.id)
    list(chat.send(engine, store, chat_id, "Hello from before.", OPTIONS))
    store.update_persona(ann.id, name="Annabel", description="a captain.")
    list(chat.send(engine, store, chat_id, "Hello from after.", OPTIONS))
    messages = store.messages(chat_id)
    users = [m for m in messages if m.role == "user"]
    assert [(m.name, m.text) for m in users] == [("Ann", "Hello from before."), ("Annabel", "Hello from after.")]
    assert messages[0].text == "Welcome, Ann. You look like a sailor."  # the greeting as it was written
    text = chat.prompt_for(engine, store, chat_id, OPTIONS, "reply", messages).text
    assert "<|user|>Ann: Hello from before." in text and "<|user|>Annabel: Hello from after." in text
    assert "a captain." in text and "a sailor." not in text.split("<|model|>")[0]


def test_avatars_uploaded_or_drawn_and_removed_with_the_persona(store, tmp_path):
    from moechat.cards.png import default_avatar

    ann = store.add_persona("Ann")
    drawn = persona_avatar_file(store, tmp_path, ann.id)
    assert Path(drawn).read_bytes() == default_avatar("Ann")
    jpeg = _jpeg()
    path = set_persona_avatar(store, tmp_path, ann.id, jpeg)
    assert path.read_bytes().startswith(b"\x89PNG") and path == persona_avatar_path(tmp_path, "local", ann.id)
    with pytest.raises(MoechatError, match="not a recognisable image"):
        set_persona_avatar(store, tmp_path, ann.id, b"not an image")
    delete_persona(store, tmp_path, ann.id)
    assert not path.exists() and store.personas() == []


def _jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, format="JPEG")
    return out.getvalue()


def test_migration_3_clears_avatar_ids_read_as_persona_text(tmp_path):
    """Databases written before: a SillyTavern import put chat_metadata.persona (an avatar id) in chats.persona."""
    conn = sqlite3.connect(tmp_path / DB_NAME)
    for migration in MIGRATIONS[:2]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO characters VALUES (1, 'local', 'S', '{}', 0, 0)")
    header = json.dumps({"chat_metadata": {"persona": "user-default.png"}})
    conn.execute("INSERT INTO chats (id, owner, character_id, created, updated, persona, header_json)"
                 " VALUES (1, 'local', 1, 0, 0, 'user-default.png', ?), (2, 'local', 1, 0, 0, 'A real one.', ?)",
                 (header, header))  # fmt: skip
    conn.commit()
    conn.close()
    with Store.open(tmp_path) as store:
        assert store.version == len(MIGRATIONS)
        assert (store.chat(1).persona, store.chat(2).persona) == ("", "A real one.")


def test_persona_macro_and_stored_speaker_names_in_the_built_in_formats():
    from moechat.cards import macros
    from moechat.cards.card import card_from_json
    from moechat.prompt.assemble import Message, Persona, build
    from moechat.prompt.formats import get_format

    assert macros.substitute("{{PERSONA}} / {{user}}", char="C", user="Ann", persona="a sailor") == "a sailor / Ann"
    assert macros.substitute("{{persona}}", char="C", user="Ann") == "{{persona}}"  # no persona given: left alone
    card = card_from_json({**CARD, "data": {**CARD["data"], "description": "{{char}} knows {{user}}: {{persona}}"}})
    history = [Message("user", "hi", "Old name"), Message("model", "hello"), Message("user", "again")]
    persona = Persona("New name", "a captain")
    text = build(card, history, fmt=get_format("metharme"), persona=persona).text
    assert "Mira knows New name: a captain" in text
    assert "<|user|>Old name: hi" in text and "<|user|>New name: again" in text
    pyg = build(card, history, fmt=get_format("pygmalion"), persona=persona).text  # the format names the user "You"
    assert "You: hi" in pyg and "Old name" not in pyg
