"""Character cards: table-driven reads per format, lossless round trips, PNG interop, bad input."""

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, PngImagePlugin

from moechat.cards.card import Card, bundled_characters, card_bytes, card_from_json, read_card, write_card
from moechat.cards.png import default_avatar

V1 = {
    "name": "Ann",
    "description": "desc",
    "personality": "pers",
    "scenario": "scen",
    "first_mes": "hello",
    "mes_example": "<START>\n{{user}}: hi",
    "creatorcomment": "notes",
    "avatar": "none",
    "chat": "Ann - 2024",
    "talkativeness": "0.5",
    "fav": False,
    "tags": ["a"],
    "create_date": "2024-1-1",
    "mystery": {"x": 1},
}
BOOK = {
    "name": "lore",
    "extensions": {"st": True},
    "entries": [
        {
            "keys": ["k"],
            "content": "c",
            "extensions": {"position": 4, "depth": 2, "weird": [None]},
            "enabled": True,
            "insertion_order": 5,
            "use_regex": True,
            "unknown_entry_field": "kept",
        }
    ],
}
V2_DATA = {
    **{k: V1[k] for k in ("name", "description", "personality", "scenario", "first_mes", "mes_example")},
    "creator_notes": "notes",
    "system_prompt": "sys {{original}}",
    "post_history_instructions": "phi",
    "alternate_greetings": ["alt1", "alt2"],
    "tags": ["a", "b"],
    "creator": "me",
    "character_version": "1",
    "extensions": {"talkativeness": "0.5", "depth_prompt": {"prompt": "p", "depth": 4, "role": "system"}},
    "character_book": BOOK,
    "unknown_data_field": [1, 2],
}
V2 = {**V1, "spec": "chara_card_v2", "spec_version": "2.0", "data": V2_DATA, "root_unknown": True}
V3 = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        **V2_DATA,
        "nickname": "Annie",
        "group_only_greetings": ["group hi"],
        "creator_notes_multilingual": {"fr": "notes fr"},
        "source": ["https://example.invalid/ann"],
        "creation_date": 1700000000,
        "modification_date": 1700000001,
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    },
}
PYG = {
    "char_name": "Pyg",
    "char_persona": "persona",
    "char_greeting": "hey",
    "world_scenario": "w",
    "example_dialogue": "ex",
    "x": 1,
}
TGW = {"name": "Tig", "greeting": "howdy", "context": "Tig's Persona: calm", "your_name": "Me"}


def png_with(chunks: dict[str, str], size: tuple[int, int] = (4, 4)) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def charx_with(card_json: Any, extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("card.json", json.dumps(card_json))
        for path, data in (extra or {}).items():
            archive.writestr(path, data)
    return out.getvalue()


# (id, raw bytes, filename, expected: {attribute: value})
READ_CASES = [
    ("v1 json", json.dumps(V1).encode(), "a.json", {"name": "Ann", "creator_notes": "notes", "source_spec": "v1"}),
    (
        "v2 json",
        json.dumps(V2).encode(),
        "a.json",
        {"greetings": ["hello", "alt1", "alt2"], "source_spec": "chara_card_v2"},
    ),
    ("v3 json", json.dumps(V3).encode(), "a.json", {"char_name": "Annie", "group_only_greetings": ["group hi"]}),
    (
        "pygmalion",
        json.dumps(PYG).encode(),
        "p.json",
        {
            "name": "Pyg",
            "description": "persona",
            "first_mes": "hey",
            "scenario": "w",
            "mes_example": "ex",
            "personality": "",
        },
    ),
    (
        "tgw yaml",
        yaml.safe_dump(TGW).encode(),
        "t.yaml",
        {"name": "Tig", "first_mes": "howdy", "description": "Tig's Persona: calm"},
    ),
    ("tgw json", json.dumps(TGW).encode(), "t.json", {"name": "Tig", "first_mes": "howdy", "source_spec": "textgen"}),
    ("tgw yaml bot key", b"bot: Bo\ngreeting: hi\ncontext: c\n", "b.yml", {"name": "Bo", "first_mes": "hi"}),
    ("png chara only", png_with({"chara": b64(V2)}), "x.png", {"name": "Ann", "source_spec": "chara_card_v2"}),
    ("png ccv3 preferred", png_with({"chara": b64(V2), "ccv3": b64(V3)}), "x.png", {"char_name": "Annie"}),
    (
        "png ccv3 broken falls back",
        png_with({"chara": b64(V2), "ccv3": "!!"}),
        "x.png",
        {"source_spec": "chara_card_v2"},
    ),
    ("png keyword case", png_with({"Chara": b64(V1)}), "x.png", {"name": "Ann"}),
    ("png raw json chunk", png_with({"chara": json.dumps(V1)}), "x.png", {"name": "Ann"}),
    ("charx", charx_with(V3), "c.charx", {"char_name": "Annie"}),
    ("utf-8 bom", b"\xef\xbb\xbf" + json.dumps(V1).encode(), "a.json", {"name": "Ann"}),
    (
        "nulls become defaults",
        json.dumps({"name": "N", "description": None, "tags": None}).encode(),
        "n.json",
        {"description": "", "tags": []},
    ),
]


@pytest.mark.parametrize(("raw", "filename", "expected"), [c[1:] for c in READ_CASES], ids=[c[0] for c in READ_CASES])
def test_read_formats(raw: bytes, filename: str, expected: dict[str, Any]) -> None:
    card = read_card(raw, filename=filename)
    for attribute, value in expected.items():
        assert getattr(card, attribute) == value


def test_v2_fields_and_book() -> None:
    card = read_card(json.dumps(V2).encode())
    assert card.system_prompt == "sys {{original}}" and card.post_history_instructions == "phi"
    assert card.character_book is not None and card.character_book.entries[0].keys == ["k"]
    assert card.examples() == ["{{user}}: hi"]
    assert card.root == {
        "avatar": "none",
        "chat": "Ann - 2024",
        "talkativeness": "0.5",
        "fav": False,
        "create_date": "2024-1-1",
        "mystery": {"x": 1},
        "root_unknown": True,
    }


@pytest.mark.parametrize("source", [V1, V2, V3, PYG, TGW], ids=["v1", "v2", "v3", "pyg", "tgw"])
@pytest.mark.parametrize("fmt", ["json", "png", "charx"])
def test_import_export_import_is_stable(source: dict, fmt: str) -> None:
    first = read_card(json.dumps(source).encode(), filename="in.json")
    again = read_card(card_bytes(first, fmt), filename=f"out.{fmt}")
    assert again.to_v3_json() == first.to_v3_json() or fmt == "charx"
    if fmt == "charx":  # CHARX adds the avatar as the main icon asset; nothing else changes
        a, b = again.to_v3_json(), first.to_v3_json()
        a["data"].pop("assets", None), b["data"].pop("assets", None)
        assert a == b
    third = read_card(card_bytes(again, fmt), filename=f"out.{fmt}")
    assert third.to_v3_json() == again.to_v3_json()


def test_v3_export_keeps_every_unknown_field() -> None:
    out = read_card(json.dumps(V3).encode()).to_v3_json()
    assert out == V3


def test_v2_export_matches_st_shape() -> None:
    out = read_card(json.dumps(V3).encode()).to_v2_json()
    assert (out["spec"], out["spec_version"]) == ("chara_card_v2", "2.0")
    assert {k: out[k] for k in ("name", "description", "first_mes", "creatorcomment", "avatar")} == {
        "name": "Ann",
        "description": "desc",
        "first_mes": "hello",
        "creatorcomment": "notes",
        "avatar": "none",
    }
    assert out["data"] == V3["data"]


def test_modification_date_is_stamped_only_when_asked() -> None:
    card = read_card(json.dumps(V1).encode())
    assert "modification_date" not in card.to_v3_json()["data"]
    assert card.to_v3_json(modified=123)["data"]["modification_date"] == 123


def test_png_export_readable_by_st_rule_and_by_pillow_like_tgw(tmp_path: Path) -> None:
    card = read_card(json.dumps(V3).encode())
    path = tmp_path / "ann.png"
    write_card(card, path)
    image = Image.open(path)
    image.load()
    ccv3 = json.loads(base64.b64decode(image.text["ccv3"]))
    assert ccv3["spec"] == "chara_card_v3" and ccv3["data"]["nickname"] == "Annie"
    chara = json.loads(base64.b64decode(Image.open(path).info["chara"].replace("\\r\\n", "")))
    assert chara["spec"] == "chara_card_v2" and chara["name"] == "Ann" and chara["first_mes"] == "hello"
    assert chara["data"] == ccv3["data"]
    keys = [k for k in image.text if k.lower() in ("chara", "ccv3")]
    assert sorted(keys) == ["ccv3", "chara"]


def test_png_rewrite_replaces_old_card_keeps_other_text() -> None:
    raw = png_with({"Chara": b64({"name": "Old"}), "Comment": "keep me"}, size=(7, 5))
    card = card_from_json({"name": "New"}).with_avatar(raw)
    out = Image.open(io.BytesIO(card_bytes(card, "png")))
    out.load()
    assert out.size == (7, 5)
    assert out.text["Comment"] == "keep me" and "Chara" not in out.text
    assert read_card(card_bytes(card, "png")).name == "New"


def test_png_without_image_gets_generated_avatar() -> None:
    raw = card_bytes(card_from_json({"name": "Zed"}), "png")
    assert Image.open(io.BytesIO(raw)).size == (512, 512)
    assert default_avatar("Zed") == default_avatar("Zed") != default_avatar("Zee")


def test_charx_avatar_and_assets_kept() -> None:
    icon = png_with({})
    v3 = json.loads(json.dumps(V3))
    v3["data"]["assets"] = [
        {"type": "icon", "uri": "embeded://assets/icon/images/x.png", "name": "main", "ext": "png"},
        {"type": "x_sound", "uri": "embeded://assets/other/other/s.bin", "name": "s", "ext": "bin"},
    ]
    raw = charx_with(v3, {"assets/icon/images/x.png": icon, "assets/other/other/s.bin": b"\x00\x01", "app.json": b"{}"})
    card = read_card(raw)
    assert card.avatar_png == icon
    assert set(card.files) == {"assets/icon/images/x.png", "assets/other/other/s.bin", "app.json"}
    again = read_card(card_bytes(card, "charx"))
    assert again.files == card.files and again.to_v3_json() == card.to_v3_json() == v3


def test_card_contract_fields() -> None:
    card = read_card(json.dumps(V3).encode())
    assert isinstance(card, Card)
    for name in (
        "name",
        "nickname",
        "description",
        "personality",
        "scenario",
        "first_mes",
        "mes_example",
        "creator_notes",
        "system_prompt",
        "post_history_instructions",
        "alternate_greetings",
        "tags",
        "character_book",
        "extensions",
    ):
        assert hasattr(card, name)


def test_bundled_characters() -> None:
    paths = bundled_characters()
    assert len(paths) >= 4
    cards = [read_card(p) for p in paths]
    assert all(c.avatar_png and c.name and c.first_mes for c in cards)
    assert any(c.character_book and c.character_book.entries for c in cards)
    assert any(c.alternate_greetings for c in cards)
    assert any("assistant" in c.tags for c in cards) and any("roleplay" in c.tags for c in cards)


@pytest.mark.parametrize("keyword", ["chara", "ccv3"])
def test_png_with_two_card_chunks_reads_the_first_like_sillytavern(keyword: str) -> None:
    from moechat.cards.png import read_png

    info = PngImagePlugin.PngInfo()
    for name in ("First", "Second"):
        payload = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": name}}
        info.add_text(keyword, base64.b64encode(json.dumps(payload).encode()).decode())
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG", pnginfo=info)
    assert read_png(out.getvalue())[0]["data"]["name"] == "First"
