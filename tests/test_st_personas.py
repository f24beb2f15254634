"""SillyTavern personas carried over: its settings.json (and persona backups) through `python -m moechat personas`,
avatars from `User Avatars/`, and a chat's `chat_metadata.persona` (the avatar id of the persona locked to it) in and
out of SillyTavern JSONL on a real data dir."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from moechat.chatfiles import sillytavern
from moechat.chatfiles.st_personas import parse_settings
from moechat.commands import chats, personas
from moechat.errors import StoreError
from moechat.library import persona_avatar_path
from moechat.store.personas import PersonaLocks
from moechat.store.store import Store

DATA = Path(__file__).parent / "data"
DESCRIPTOR = {"description": "A wanderer.", "position": 0, "depth": 2, "role": 0, "lorebook": "Ann's book"}
SETTINGS = {
    "username": "Ann",
    "power_user": {
        "personas": {"user-default.png": "Ann", "1700000000000-Bo.png": "Bo", "broken.png": ""},
        "persona_descriptions": {
            "user-default.png": DESCRIPTOR,
            "1700000000000-Bo.png": {
                "description": "<img src=x onerror=alert(1)> {{char}}'s baker.",
                "connections": [{"type": "character", "id": "Seraphina.png"}, {"type": "group", "id": "g1"}],
            },
            "gone.png": {"description": "Nobody's."},
        },
        "default_persona": "user-default.png",
        "persona_description": "unrelated setting",
    },
}


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(out, format="PNG")
    return out.getvalue()


def test_settings_and_backups_read_alike():
    st = parse_settings(SETTINGS)
    assert [(p.avatar, p.name, p.description) for p in st.personas] == [
        ("user-default.png", "Ann", "A wanderer."),
        ("1700000000000-Bo.png", "Bo", "<img src=x onerror=alert(1)> {{char}}'s baker."),
    ]
    assert st.personas[0].extra == {"position": 0, "depth": 2, "role": 0, "lorebook": "Ann's book"}
    assert st.personas[1].characters() == ["Seraphina.png"] and st.default == "user-default.png"
    assert st.skipped == ("persona 'broken.png': no name", "description of 'gone.png': no persona has that avatar id")
    backup = {k: SETTINGS["power_user"][k] for k in ("personas", "persona_descriptions", "default_persona")}
    assert parse_settings(backup) == st
    for bad in ([], {"power_user": {}}, {"personas": ["a"]}):
        with pytest.raises(StoreError):
            parse_settings(bad)


def test_cli_imports_personas_avatars_default_and_character_locks(tmp_path, capsys):
    data_dir, avatars = tmp_path / "data", tmp_path / "User Avatars"
    avatars.mkdir()
    (avatars / "user-default.png").write_bytes(png((1, 2, 3)))
    (avatars / "1700000000000-Bo.png").write_bytes(b"not an image")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(SETTINGS), encoding="utf-8")
    with Store.open(data_dir) as store:
        seraphina = store.add_character("Seraphina", {"spec": "chara_card_v2", "data": {"name": "Seraphina"}})
    argv = ["--data-dir", str(data_dir), "import", str(settings), "--avatars", str(avatars)]
    assert personas.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 of 2 personas imported" in out and "with its avatar image" in out and "a drawn avatar (" in out
    assert "skipped: persona 'broken.png': no name" in out
    with Store.open(data_dir) as store:
        ann, bo = store.persona_by_avatar("user-default.png"), store.persona_by_avatar("1700000000000-Bo.png")
        assert ann is not None and bo is not None
        assert (ann.name, ann.description, ann.extra["lorebook"]) == ("Ann", "A wanderer.", "Ann's book")
        assert store.persona_locks(character_id=seraphina.id) == PersonaLocks(character=bo.id, default=ann.id)
        saved = persona_avatar_path(data_dir, "local", ann.id).read_bytes()
        assert Image.open(io.BytesIO(saved)).getpixel((0, 0)) == (1, 2, 3)
        assert persona_avatar_path(data_dir, "local", bo.id).read_bytes().startswith(b"\x89PNG")  # drawn
    assert personas.main(argv) == 0  # a second import leaves them alone
    assert "0 of 2 personas imported" in capsys.readouterr().out
    assert personas.main(["--data-dir", str(data_dir), "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["default"]) for r in rows] == [("Ann", True), ("Bo", False)]


def test_chat_metadata_persona_is_a_lock_not_a_description(tmp_path, capsys):
    data_dir = tmp_path / "data"
    source = DATA / "st_full.jsonl"
    original_meta = json.loads(source.read_text().splitlines()[0])["chat_metadata"]
    assert original_meta["persona"] == "user-default.png"
    with Store.open(data_dir) as store:  # no persona has that avatar id: kept as metadata only
        imported, _ = sillytavern.read_file(source)
        unknown = store.import_chat(imported)
        assert unknown.persona == "" and store.persona_locks(unknown.id).chat is None
        ann = store.add_persona("Ann", "A wanderer.", avatar="user-default.png")
        bo = store.add_persona("Bo", avatar="bo.png")
    assert chats.main(["--data-dir", str(data_dir), "import", str(source)]) == 0
    assert "persona 'user-default.png' locked to the chat" in capsys.readouterr().out

    def exported(chat_id: int) -> dict:
        out = tmp_path / f"{chat_id}.jsonl"
        assert chats.main(["--data-dir", str(data_dir), "export", str(chat_id), "-o", str(out)]) == 0
        return json.loads(out.read_text().splitlines()[0])["chat_metadata"]

    with Store.open(data_dir) as store:
        locked = store.chats()[0]
        assert store.chosen_persona(locked.id).persona == ann and locked.persona == ""
        assert exported(unknown.id) == original_meta  # kept as it came (not locked: no such persona at import)
        assert exported(locked.id) == original_meta  # round trip
        store.lock_persona(bo.id, chat_id=locked.id)
        assert exported(locked.id)["persona"] == "bo.png"
        store.lock_persona(None, chat_id=locked.id)  # unlocked here: the lock is gone from the export too
        assert "persona" not in exported(locked.id)
        store.lock_persona(ann.id, chat_id=unknown.id)
        store.delete_persona(ann.id)  # as SillyTavern, deleting the locked persona unlocks its chats
        assert "persona" not in exported(unknown.id)
        store.update_chat(locked.id, persona="Typed in moechat.")
        meta = exported(locked.id)
        assert meta["moechat"] == {"persona": "Typed in moechat."} and "persona" not in meta
        again = sillytavern.parse_jsonl((tmp_path / f"{locked.id}.jsonl").read_text())[0]
        assert (again.persona, again.locked_persona) == ("Typed in moechat.", "")
        branch = store.branch(locked.id, store.messages(locked.id)[1].id)
        store.lock_persona(bo.id, chat_id=locked.id)
        assert store.persona_locks(branch.id).chat is None
        assert store.persona_locks(store.branch(locked.id, store.messages(locked.id)[1].id).id).chat == bo.id
