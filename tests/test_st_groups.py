"""SillyTavern group chats in and out (moechat.chatfiles.st_groups, `chats import|list|export`): a group definition
and its chat imported, listed and exported unchanged, unknown keys kept; members matched or added."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moechat import chat
from moechat.chatfiles import sillytavern, st_groups
from moechat.commands import chats
from moechat.store.store import Store

DATA = Path(__file__).parent / "data" / "st_group_chat"
GROUP = DATA / "1717228800000.json"
CHAT = DATA / "2024-06-01@09h00m00s.jsonl"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = chats.main(list(argv))
    return code, capsys.readouterr().out


def test_group_import_list_export_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "data")
    with Store.open(d) as store:  # Alice is there already (matched by name); Bob and Cara Lin are not
        alice = store.add_character(
            "Alice", {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Alice"}}
        )
    code, out = run(capsys, "--data-dir", d, "import", str(GROUP), str(CHAT))
    assert code == 0 and "group 1 'Market <Square>' (Alice, Bob, Cara Lin)" in out and "(5 messages)" in out
    code, out = run(capsys, "--data-dir", d, "list", "--json")
    (row,) = json.loads(out)
    assert row["group"] == {"id": 1, "name": "Market <Square>", "members": ["Alice", "Bob", "Cara Lin"]}
    with Store.open(d) as store:
        group = store.group(1)
        assert [m.avatar for m in group.members] == ["Alice.png", "Bob_1.png", "Cara Lin.png"]
        assert group.members[0].character_id == alice.id and [m.muted for m in group.members] == [False, False, True]
        assert (group.strategy, group.generation_mode) == ("pooled", "join")
        messages = store.messages(row["id"])
        speakers = store.speakers(row["id"])
        assert [store.character(speakers[m.id]).name if m.id in speakers else None for m in messages] == [
            "Alice",
            "Bob",
            None,
            "Cara Lin",
            "Bob",
        ]
    out_dir = tmp_path / "out"
    code, out = run(capsys, "--data-dir", d, "export", str(row["id"]), "--format", "st", "-o", str(out_dir))
    assert code == 0
    assert json.loads((out_dir / GROUP.name).read_text()) == json.loads(GROUP.read_text())
    assert (out_dir / CHAT.name).read_text().splitlines() == CHAT.read_text().splitlines()
    assert [json.loads(x) for x in (out_dir / CHAT.name).read_text().splitlines()] == [
        json.loads(x) for x in CHAT.read_text().splitlines()
    ]
    # importing the export again gives the same group, matched to the same characters by avatar file name
    code, out = run(capsys, "--data-dir", d, "import", str(out_dir / GROUP.name), str(out_dir / CHAT.name))
    with Store.open(d) as store:
        assert [m.character_id for m in store.group(2).members] == [m.character_id for m in store.group(1).members]
        assert len(store.characters()) == 3


def test_a_group_chat_alone_asks_for_its_definition(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--data-dir", str(tmp_path), "import", str(CHAT))
    assert code == 1
    assert "a group chat (speakers Alice, Bob, Cara Lin): import it with its group definition" in out
    chat_file, _ = sillytavern.read_file(DATA.parent / "st_group.jsonl")  # one speaker, no header: a plain chat
    assert not st_groups.is_group_chat(chat_file)


def test_a_group_made_here_exports_with_avatar_keys(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        ids = [
            store.add_character(
                n, {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": n, "first_mes": "hi"}}
            ).id
            for n in ("Ann", "Ben")
        ]
        group = store.create_group("Pair", ids, strategy="manual", generation_mode="join_muted", muted=[ids[1]])
        chat_id = chat.start_group_chat(store, group.id, title="../evil")
        chat_path, group_path = st_groups.export_group_chat(store, chat_id, tmp_path / "out")
        assert chat_path.name == f"moechat-{chat_id}.jsonl" and group_path.parent == tmp_path / "out"
        definition = json.loads(group_path.read_text())
        assert definition["members"] == ["Ann.png", "Ben.png"] and definition["disabled_members"] == ["Ben.png"]
        assert (definition["activation_strategy"], definition["generation_mode"]) == (2, 2)
        assert definition["chats"] == [f"moechat-{chat_id}"] and definition["chat_id"] == f"moechat-{chat_id}"
        lines = [json.loads(x) for x in chat_path.read_text().splitlines()]
        assert [(x["name"], x["original_avatar"], x["mes"]) for x in lines] == [
            ("Ann", "Ann.png", "hi"),
            ("Ben", "Ben.png", "hi"),
        ]
        back, imported = st_groups.import_group(store, definition, [sillytavern.read_file(chat_path)[0]])
        assert [m.character_id for m in back.members] == ids and [m.muted for m in back.members] == [False, True]
        assert store.speakers(imported[0].id) == dict(
            zip([m.id for m in store.messages(imported[0].id)], ids, strict=True)
        )
