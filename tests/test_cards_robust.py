"""Bad card input becomes CardError (never a crash or hang); hypothesis round trips and fuzzing; CLI."""

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from moechat.__main__ import main as moechat_main
from moechat.cards.card import card_bytes, card_from_json, read_card
from moechat.errors import CardError


def png_with(chunks: dict[str, str], size: tuple[int, int] = (4, 4)) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("L", size).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


GOOD_PNG = png_with({"chara": b64({"name": "A"})})


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return out.getvalue()


BAD = [
    ("invalid base64", png_with({"chara": "not base64 at all!!"}), "base64"),
    ("base64 of non-json", png_with({"chara": base64.b64encode(b"hello").decode()}), "JSON"),
    ("base64 of non-utf8", png_with({"chara": base64.b64encode(b"\xff\xfe{").decode()}), "UTF-8"),
    ("truncated png", GOOD_PNG[: len(GOOD_PNG) // 2], "image"),
    ("png header only", GOOD_PNG[:8], "image"),
    ("png without a card", png_with({"Comment": "hi"}), "no character card"),
    ("wrong json type: name", json.dumps({"name": 5}).encode(), "'name'"),
    (
        "wrong json type: greetings",
        json.dumps({"spec": "chara_card_v2", "data": {"alternate_greetings": "x"}}).encode(),
        "alternate_greetings",
    ),
    (
        "wrong json type: book",
        json.dumps({"spec": "chara_card_v2", "data": {"character_book": {"entries": 3}}}).encode(),
        "character_book",
    ),
    ("data not object", json.dumps({"spec": "chara_card_v2", "data": []}).encode(), "data"),
    ("top-level array", b"[1, 2]", "array"),
    ("top-level string", b'"x"', "string"),
    ("not a card", b'{"foo": 1}', "not a character card"),
    ("lorebook not card", json.dumps({"spec": "lorebook_v3", "data": {}}).encode(), "lorebook"),
    ("non-utf8", b'{"name": "\xe9"}', "UTF-8"),
    ("deeply nested json", b'{"name": "a", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested"),
    ("moderately nested json", b'{"name": "a", "x": ' + b"[" * 100 + b"]" * 100 + b"}", "nested"),
    ("yaml alias cycle", b"name: a\nx: &a [*a]\n", "nested"),
    ("bad yaml", b"name: [unclosed\n", "YAML"),
    ("empty", b"", "empty"),
    ("zip without card.json", zip_of({"x.txt": b"x"}), "card.json"),
    ("zip bomb", zip_of({"card.json": b"{}", "big": b"\0" * (3 * 1024 * 1024)}), "limit"),
    ("corrupt zip", b"PK\x03\x04" + b"\0" * 40, "zip"),
]


@pytest.mark.parametrize(("raw", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_raises_card_error(raw: bytes, message: str) -> None:
    name = "x.yaml" if "yaml" in message.lower() or b"&a" in raw else "x.json"
    with pytest.raises(CardError, match=message):
        read_card(raw, filename=name, max_bytes=2 * 1024 * 1024)


def test_size_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(json.dumps({"name": "a", "pad": "x" * 5000}).encode())
    with pytest.raises(CardError, match="size limit"):
        read_card(path, max_bytes=1000)
    assert read_card(path).name == "a"
    with pytest.raises(CardError, match="size limit"):
        read_card(path.read_bytes(), max_bytes=1000)


def test_decompression_bomb_png_is_card_error() -> None:
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", b64({"name": "bomb"}))
    Image.new("1", (12000, 12000)).save(out, format="PNG", pnginfo=info)  # 144M pixels, tiny file
    with pytest.raises(CardError, match=r"too large|decompression bomb"):
        read_card(out.getvalue())


def test_missing_file_is_card_error(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="cannot read"):
        read_card(tmp_path / "nope.json")


text = st.text(max_size=30)
json_leaf = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | text
json_value = st.recursive(
    json_leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3), max_leaves=8
)
entry = st.fixed_dictionaries(
    {
        "keys": st.lists(text, max_size=3),
        "content": text,
        "extensions": st.dictionaries(text, json_value, max_size=3),
        "enabled": st.booleans(),
        "insertion_order": st.integers(0, 1000),
    },
    optional={
        "priority": st.integers(0, 100),
        "constant": st.booleans(),
        "position": st.sampled_from(["before_char", "after_char"]),
        "x_entry": json_value,
        "case_sensitive": st.booleans() | st.none(),
    },
)
data = st.fixed_dictionaries(
    {
        "name": text,
        "description": text,
        "first_mes": text,
        "alternate_greetings": st.lists(text, max_size=3),
        "tags": st.lists(text, max_size=3),
        "extensions": st.dictionaries(text, json_value, max_size=4),
    },
    optional={
        "nickname": text | st.none(),
        "mes_example": text,
        "system_prompt": text,
        "x_unknown": json_value,
        "character_book": st.fixed_dictionaries(
            {"entries": st.lists(entry, max_size=3), "extensions": st.just({})},
            optional={"token_budget": st.integers(0, 9999), "x_book": json_value},
        ),
        "group_only_greetings": st.lists(text, max_size=2),
        "creation_date": st.integers(0, 2**40),
    },
)
cards = st.builds(
    lambda d, r, spec: {**r, "spec": spec, "spec_version": "3.0", "data": d},
    data,
    st.dictionaries(st.sampled_from(["x_root", "y_root"]), json_value, max_size=2),
    st.sampled_from(["chara_card_v2", "chara_card_v3"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(card_json=cards, fmt=st.sampled_from(["json", "png", "charx"]))
def test_roundtrip_property(card_json: dict, fmt: str) -> None:
    card = card_from_json(card_json)
    exported = card.to_v3_json()
    assert exported["data"]["extensions"] == card_json["data"]["extensions"]
    for key in ("x_unknown", "nickname", "character_book"):
        if key in card_json["data"]:
            assert exported["data"][key] == card_json["data"][key]
    again = read_card(card_bytes(card, fmt), filename=f"c.{fmt}")
    got = again.to_v3_json()
    if fmt == "charx":
        got["data"].pop("assets", None)
    assert got == exported
    assert {k: v for k, v in got.items() if k.endswith("_root")} == {
        k: v for k, v in card_json.items() if k.endswith("_root")
    }


SEEDS = [
    GOOD_PNG,
    zip_of({"card.json": json.dumps({"name": "A"}).encode()}),
    json.dumps(
        {
            "spec": "chara_card_v2",
            "data": {"name": "A", "character_book": {"entries": [{"keys": ["k"], "content": "c"}]}},
        }
    ).encode(),
    b"name: a\ngreeting: b\n",
]


@st.composite
def malformed(draw: st.DrawFn) -> tuple[bytes, str]:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=300)), draw(st.sampled_from(["a.json", "a.yaml", "a.png"]))
    seed = draw(st.sampled_from(SEEDS))
    raw = bytearray(seed)
    if kind == 1:
        raw = raw[: draw(st.integers(0, len(raw)))]
    for _ in range(draw(st.integers(1, 6))):
        if raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw), "a.yaml" if seed.startswith(b"name") else "a.json"


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=malformed())
def test_fuzz_readers_raise_only_card_error(case: tuple[bytes, str]) -> None:
    raw, filename = case
    try:
        card = read_card(raw, filename=filename)
    except CardError as exc:
        assert str(exc)
    else:
        json.dumps(card.to_v3_json())


def test_cli_show_and_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"name": "Cli", "first_mes": "hi", "zz_unknown": 1}))
    assert moechat_main(["card", "show", str(src)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["spec"] == "chara_card_v3" and shown["data"]["name"] == "Cli" and shown["zz_unknown"] == 1
    out = tmp_path / "out.png"
    assert moechat_main(["card", "convert", str(src), str(out)]) == 0
    assert read_card(out).name == "Cli" and Image.open(out).size == (512, 512)
    assert moechat_main(["card", "convert", str(out), str(tmp_path / "out.charx")]) == 0
    assert read_card(tmp_path / "out.charx").avatar_png == out.read_bytes()


def test_cli_bad_file_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(GOOD_PNG[:20])
    assert moechat_main(["card", "show", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "bad.png" not in captured.out
    assert moechat_main(["card", "convert", str(bad), str(tmp_path / "x.txt")]) == 2
    assert moechat_main(["card", "bogus"]) == 2
