"""SillyTavern World Info files (docs/formats.md §2.6.1): lossless round trip, rules as SillyTavern reads them,
conversion to and from card books, the store's attachments, and the `lore` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moechat.__main__ import main as moechat_main
from moechat.cards.lore_scan import LoreSettings, scan
from moechat.cards.lorebook import read_lorebook
from moechat.cards.world_info import book_rules, parse_lore, read_world_info, to_character_book, to_world_info
from moechat.errors import CardError, StoreError
from moechat.store.store import Store


def st_entry(uid: int, keys: list[str], content: str, **fields: object) -> dict[str, object]:
    """An entry as SillyTavern 1.12 writes it (every field, in its order)."""
    entry: dict[str, object] = {
        "key": keys,
        "keysecondary": [],
        "comment": f"e{uid}",
        "content": content,
        "constant": False,
        "vectorized": False,
        "selective": True,
        "selectiveLogic": 0,
        "addMemo": True,
        "order": 100,
        "position": 0,
        "disable": False,
        "excludeRecursion": False,
        "preventRecursion": False,
        "delayUntilRecursion": False,
        "probability": 100,
        "useProbability": True,
        "depth": 4,
        "group": "",
        "groupOverride": False,
        "groupWeight": 100,
        "scanDepth": None,
        "caseSensitive": None,
        "matchWholeWords": None,
        "useGroupScoring": None,
        "automationId": "",
        "role": None,
        "sticky": 0,
        "cooldown": 0,
        "delay": 0,
        "uid": uid,
        "displayIndex": uid,
        "extensions": {},
    }
    entry.update(fields)
    return entry


WORLD = {
    "entries": {
        "0": st_entry(0, ["forest", "magical forest"], "The forest of Brackenmoor hums with Ëlven magic."),
        "1": st_entry(1, ["beast"], "Gloomhound beasts roam the forest at night.", order=90, position=1),
        "10": st_entry(10, ["glade"], "The glade is safe.", order=80, matchWholeWords=False, caseSensitive=True),
        "2": st_entry(2, ["night"], "Night lasts long.", order=70, excludeRecursion=True),
        "3": st_entry(3, ["Gloomhound"], "Off.", disable=True),
    },
    "originalData": {"name": "kept as is", "entries": []},
}
WORLD_TEXT = json.dumps(WORLD, ensure_ascii=False, indent=4) + "\n"


def test_world_info_round_trips_to_identical_bytes() -> None:
    world = read_world_info(WORLD_TEXT.encode(), "Brackenmoor")
    assert world.dumps() == WORLD_TEXT
    assert json.loads(world.dumps()) == WORLD


def test_rules_follow_sillytaverns_fields_and_key_order() -> None:
    rules = read_world_info(WORLD_TEXT, "Brackenmoor").rules()
    assert [r.uid for r in rules] == ["0", "1", "2", "3", "10"]  # integer keys ascending, as a JS object
    by_uid = {r.uid: r for r in rules}
    assert by_uid["1"].position == 1 and by_uid["1"].order == 90
    assert by_uid["10"].match_whole_words is False and by_uid["10"].case_sensitive is True
    assert by_uid["2"].exclude_recursion and by_uid["3"].disabled
    assert by_uid["0"].world == "Brackenmoor" and by_uid["0"].role == 0


@pytest.mark.parametrize(
    ("message", "fired"),
    [
        ("A magical forest!", ["0"]),
        ("the Gloomhound beast", ["1", "0"]),  # beast, then "forest" in its content; "night" excludes recursion
        ("out at night", ["2"]),
        ("a glade", ["10"]),
        ("a Glade", []),  # case-sensitive
        ("a forestry", []),  # whole words by default
    ],
)
def test_standalone_world_fires_like_sillytavern(message: str, fired: list[str]) -> None:
    rules = sorted(read_world_info(WORLD_TEXT, "Brackenmoor").rules(), key=lambda r: -r.order)
    got = [hit.uid for hit in scan(rules, [f"Ann: {message}"], lambda t: len(t.split())).fired]
    assert sorted(got) == sorted(fired)


def test_card_book_converts_like_import_card_lore_and_back() -> None:
    book = read_lorebook(
        {
            "name": "Glade",
            "entries": [
                {
                    "keys": ["glade"],
                    "content": "G",
                    "extensions": {"position": 4, "depth": 2, "role": 1},
                    "enabled": True,
                    "insertion_order": 7,
                    "id": 3,
                    "comment": "c",
                },
                {
                    "keys": ["moon"],
                    "content": "M",
                    "extensions": {},
                    "enabled": False,
                    "insertion_order": 1,
                    "position": "before_char",
                },
            ],
        }
    )
    world = to_world_info(book, "Glade")
    entries = world.to_json()["entries"]
    assert list(entries) == ["3", "1"]
    assert entries["3"]["position"] == 4 and entries["3"]["depth"] == 2 and entries["3"]["role"] == 1
    assert entries["3"]["order"] == 7 and entries["3"]["addMemo"] is True
    assert entries["1"]["position"] == 0 and entries["1"]["disable"] is True
    assert {r.uid: r.position for r in book_rules(book)} == {r.uid: r.position for r in world.rules()}
    back = to_character_book(world)  # in World Info order: integer uids ascending
    assert [(e.keys, e.content, e.insertion_order, e.enabled) for e in back.entries] == [
        (["moon"], "M", 1, False),
        (["glade"], "G", 7, True),
    ]


def test_parse_lore_takes_world_info_and_books_and_rejects_the_rest() -> None:
    assert parse_lore(WORLD_TEXT, "w").world is not None
    assert parse_lore(json.dumps({"spec": "lorebook_v3", "data": {"entries": []}}), "b").book is not None
    with pytest.raises(CardError):
        parse_lore("[1, 2]", "x")
    with pytest.raises(CardError):
        read_world_info(json.dumps({"entries": {"0": "not an entry"}}), "x")


def test_store_keeps_worlds_byte_for_byte_and_attaches_them(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        char = store.add_character("Lumi", {"name": "Lumi"})
        chat = store.create_chat(char.id)
        store.save_world("Brackenmoor", WORLD_TEXT)
        store.save_world("Other", '{"entries": {}}')
        store.attach_world("Brackenmoor", "character", char.id)
        store.attach_world("Other", "chat", chat.id)
        store.attach_world("Other", "global")
        store.attach_world("Other", "global")  # twice is once
        assert store.world("Brackenmoor").json == WORLD_TEXT
        assert [w.name for w in store.attached_worlds("character", char.id)] == ["Brackenmoor"]
        assert [w.name for w in store.attached_worlds("chat", chat.id)] == ["Other"]
        assert [w.name for w in store.attached_worlds("global")] == ["Other"]
        store.attach_world("Other", "global", attached=False)
        assert store.attached_worlds("global") == []
        with pytest.raises(StoreError):
            store.attach_world("Brackenmoor", "chat", 999)
        store.delete_character(char.id)
        assert store.attached_worlds("character", char.id) == []


def test_lore_cli_shows_and_converts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "Brackenmoor.json"
    src.write_text(WORLD_TEXT, encoding="utf-8")
    assert moechat_main(["lore", "show", str(src)]) == 0
    out = capsys.readouterr().out
    assert "Brackenmoor: SillyTavern World Info, 5 entries" in out
    assert "#10 'e10' order 80 before_char: glade [case-sensitive; substring]" in out
    same, book, again = tmp_path / "same.json", tmp_path / "book.json", tmp_path / "again.json"
    assert moechat_main(["lore", "convert", str(src), str(same), "--to", "world"]) == 0
    assert same.read_bytes() == src.read_bytes()
    assert moechat_main(["lore", "convert", str(src), str(book)]) == 0
    assert json.loads(book.read_text())["spec"] == "lorebook_v3"
    assert moechat_main(["lore", "convert", str(book), str(again)]) == 0
    assert [e["key"] for e in json.loads(again.read_text())["entries"].values()] == [
        e["key"] for e in sorted(WORLD["entries"].values(), key=lambda e: e["uid"])
    ]
    assert moechat_main(["lore", "show", str(tmp_path / "missing.json")]) == 2


def test_a_real_cards_lore_fires_as_in_sillytaverns_prompt() -> None:
    """The oracle's Lumi card (tests/st_oracle): CRLF text, a recursion chain glade -> magic -> Moon Court,
    whole-word and substring keys, per-entry overrides; SillyTavern's prompt for it has exactly these entries."""
    from moechat.cards.card import card_from_json
    from moechat.cards.lore_scan import order_rules, scan_messages
    from moechat.prompt.turn import card_lore

    cases = json.loads((Path(__file__).parent / "st_oracle" / "cases.json").read_text(encoding="utf-8"))
    card = card_from_json(cases["cards"]["lumi"])
    chat = [(m["name"], m["mes"]) for m in cases["chats"]["lumi"][1:]]
    hits = scan(order_rules(card_lore(card)), scan_messages(chat, LoreSettings()), lambda t: len(t) // 4).fired
    why = {hit.uid: hit.why for hit in hits}
    assert why == {
        "0": "key 'glade'",
        "11": "key 'glade'",
        "1": "key 'magic', recursion step 1",  # "magical" in the chat is not the word "magic"
        "2": "key 'Moon Court', recursion step 2",
        "5": "constant",
        "6": "key 'tea'",  # substring for this entry: "teapot"
        "8": "key 'river'",  # its own scan depth reaches back 4 messages
        "9": "key 'safe'",
    }  # not: "dusk" (excluded from recursion), "Wolf" (case-sensitive), "lantern" (needs "oil"), the disabled one
