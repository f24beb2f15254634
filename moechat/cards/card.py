"""Character cards: one lossless pydantic model for V1/V2/V3/Pygmalion/TGW cards, read and written as
JSON, PNG (`ccv3` + `chara` tEXt chunks) and CHARX.

    card = read_card("Seraphina.png")          # or read_card(raw_bytes, filename="x.json")
    card.char_name, card.greetings, card.examples(), card.character_book, card.avatar_png
    write_card(card, "out.png")                 # .png / .charx / .json by extension
    card.to_v3_json(), card.to_v2_json()        # dicts; unknown fields and extensions kept

Import → export → import yields the same JSON (the modification date aside): unknown `data` fields are
kept as pydantic extras, unknown top-level fields in `card.root`, every `extensions` key untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator

from moechat.cards import charx, png
from moechat.cards.fields import dump_set_fields
from moechat.cards.json import V1_FIELDS, load_json, load_yaml, normalise
from moechat.cards.lorebook import Lorebook
from moechat.cards.macros import split_examples
from moechat.errors import CardError

MAX_CARD_BYTES = 20 * 1024 * 1024
REQUIRED_DATA = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "alternate_greetings",
    "tags",
    "creator",
    "character_version",
    "extensions",
    "group_only_greetings",
)
PACKAGE_CHARACTERS = Path(__file__).resolve().parents[2] / "characters"


class Card(BaseModel):
    """The `data` of a V3 card. Unknown `data` keys are kept as extras; unknown top-level keys live in
    `root`; `avatar_png` holds the image of a PNG card (or a CHARX icon), `files` other CHARX files."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = []
    tags: list[str] = []
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, Any] = {}
    character_book: Lorebook | None = None
    group_only_greetings: list[str] = []
    nickname: str | None = None
    creator_notes_multilingual: dict[str, str] | None = None
    source: list[str] | None = None
    creation_date: int | float | None = None
    modification_date: int | float | None = None
    assets: list[dict[str, Any]] | None = None
    _root: dict[str, Any] = PrivateAttr(default_factory=dict)
    _avatar: bytes | None = PrivateAttr(default=None)
    _files: dict[str, bytes] = PrivateAttr(default_factory=dict)
    _spec: str = PrivateAttr(default="chara_card_v3")

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if not (v is None and k in REQUIRED_DATA)}
        return value

    @property
    def char_name(self) -> str:
        """What `{{char}}` stands for: the nickname when set, else the name."""
        return self.nickname or self.name

    @property
    def greetings(self) -> list[str]:
        """Swipes of message 0: `[first_mes, *alternate_greetings]`."""
        return [self.first_mes, *self.alternate_greetings]

    def examples(self) -> list[str]:
        """Example conversations from `mes_example`, split on `<START>` (macros not substituted)."""
        return split_examples(self.mes_example)

    @property
    def root(self) -> dict[str, Any]:
        """Unknown top-level keys of the source file (kept for export)."""
        return self._root

    @property
    def source_spec(self) -> str:
        """The format read: `chara_card_v3`, `chara_card_v2`, `v1`, `pygmalion` or `textgen`."""
        return self._spec

    @property
    def avatar_png(self) -> bytes | None:
        """The PNG card's file (or the CHARX main icon) as bytes; None when the card had no image."""
        return self._avatar

    @property
    def files(self) -> dict[str, bytes]:
        """Files of a CHARX card other than `card.json`, by path inside the zip."""
        return self._files

    def with_avatar(self, image: bytes | None) -> Card:
        """A copy with another avatar image (PNG/JPEG/WEBP bytes)."""
        copy = self.model_copy(deep=True)
        copy._avatar = image
        return copy

    def data_json(self) -> dict[str, Any]:
        """The `data` object: required V2/V3 keys, optional ones when present, extras untouched."""
        out = dump_set_fields(self, REQUIRED_DATA)
        if "character_book" in out:
            out["character_book"] = self.character_book.to_json() if self.character_book else None
        return out

    def to_v3_json(self, *, modified: int | None = None) -> dict[str, Any]:
        """V3 card JSON (`chara_card_v3`/`3.0`); `modified` sets `data.modification_date` (Unix s)."""
        data = self.data_json()
        if modified is not None:
            data["modification_date"] = modified
        return {**self._root, "spec": "chara_card_v3", "spec_version": "3.0", "data": data}

    def to_v2_json(self, *, modified: int | None = None) -> dict[str, Any]:
        """V2 card JSON as ST writes it: the same `data` plus the V1 mirror at the root."""
        data = self.to_v3_json(modified=modified)["data"]
        mirror = {field: data[field] for field in V1_FIELDS}
        mirror |= {"creatorcomment": self.creator_notes, "tags": self.tags}
        defaults = {
            "avatar": "none",
            "talkativeness": str(self.extensions.get("talkativeness", "0.5")),
            "fav": bool(self.extensions.get("fav", False)),
        }
        body = {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}
        return {**defaults, **self._root, **mirror, **body}


def card_from_json(obj: Any, *, yaml_source: bool = False) -> Card:
    """A Card from parsed JSON of any accepted shape; CardError says which field is wrong."""
    normal = normalise(obj, yaml_source=yaml_source)
    try:
        card = Card.model_validate(normal.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "data"
        raise CardError(f"card field '{where}': {err['msg']} (got {_short(err.get('input'))})") from None
    card._root = normal.root
    card._spec = normal.spec
    return card


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def read_card(src: str | Path | bytes, filename: str | None = None, *, max_bytes: int = MAX_CARD_BYTES) -> Card:
    """Read a card from a path or bytes: PNG, CHARX (zip), YAML (by `.yaml`/`.yml` name) or JSON.

    `filename` hints the format when `src` is bytes. Raises CardError for anything unreadable,
    including files over `max_bytes` and decompression bombs.
    """
    raw, name = _load_bytes(src, filename, max_bytes)
    if raw.startswith(png.PNG_SIGNATURE):
        obj, image = png.read_png(raw)
        card = card_from_json(obj)
        card._avatar = image
        return card
    if raw.startswith(b"PK"):
        return _from_charx(raw, max_bytes)
    if name.lower().endswith((".yaml", ".yml")):
        return card_from_json(load_yaml(raw, name), yaml_source=True)
    return card_from_json(load_json(raw, name))


def _load_bytes(src: str | Path | bytes, filename: str | None, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(src, bytes | bytearray | memoryview):
        raw = bytes(src)
        name = filename or "card"
    else:
        path = Path(src)
        name = filename or path.name
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise CardError(f"{name}: {size} bytes is over the {max_bytes}-byte card size limit")
            raw = path.read_bytes()
        except OSError as exc:
            raise CardError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if len(raw) > max_bytes:
        raise CardError(f"{name}: {len(raw)} bytes is over the {max_bytes}-byte card size limit")
    if not raw.strip():
        raise CardError(f"{name}: the file is empty")
    return raw, name


def _from_charx(raw: bytes, max_bytes: int) -> Card:
    obj, files = charx.read_charx(raw, max_bytes=max_bytes)
    card = card_from_json(obj)
    card._files = files
    card._avatar = charx.main_icon(card.assets, files)
    return card


def card_bytes(card: Card, fmt: str, *, modified: int | None = None) -> bytes:
    """The card as `json` (V3), `png` (both chunks; generated avatar if none) or `charx` bytes."""
    if fmt == "json":
        return json.dumps(card.to_v3_json(modified=modified), ensure_ascii=False, indent=2).encode() + b"\n"
    if fmt == "png":
        image = card.avatar_png or png.default_avatar(card.name)
        return png.write_png(image, card.to_v2_json(modified=modified), card.to_v3_json(modified=modified))
    if fmt == "charx":
        return charx.write_charx(card.to_v3_json(modified=modified), card.files, card.avatar_png)
    raise CardError(f"unknown card format '{fmt}' (use json, png or charx)")


def write_card(card: Card, dest: str | Path, *, modified: int | None = None) -> None:
    """Write `card` to `dest`, format by extension (`.json`, `.png`, `.charx`)."""
    path = Path(dest)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("json", "png", "charx"):
        raise CardError(f"{path.name}: cannot tell the card format from the extension (use .json, .png or .charx)")
    data = card_bytes(card, fmt, modified=modified)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CardError(f"{path.name}: cannot write file ({exc.strerror or exc})") from None


def bundled_characters() -> list[Path]:
    """The PNG cards shipped in the repository's `characters/` folder (empty list if it is absent)."""
    if not PACKAGE_CHARACTERS.is_dir():
        return []
    return sorted(PACKAGE_CHARACTERS.glob("*.png"))
