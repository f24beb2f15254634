"""Characters as the UI needs them: cards stored with their avatar images beside the database, the bundled
characters imported once per owner, and card exports; personas' avatar images beside them (no gradio here)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from moechat.cards.card import Card, bundled_characters, card_bytes, card_from_json, read_card
from moechat.cards.png import default_avatar, open_image
from moechat.errors import CardError
from moechat.store.records import Character
from moechat.store.store import Store

BUNDLED_MARK = "bundled-imported"


def add_card(store: Store, data_dir: Path, card: Card, character_id: int | None = None) -> Character:
    """Store `card` (new, or replacing character_id's card) and keep its avatar image beside the database."""
    name = card.name or "Unnamed"
    if character_id is None:
        character = store.add_character(name, card.to_v3_json())
    else:
        character = store.update_character(character_id, card.to_v3_json(), name=name)
    if card.avatar_png:
        path = avatar_path(data_dir, store.owner, character.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(card.avatar_png)
    return character


def import_bundled(store: Store, data_dir: Path) -> int:
    """Import the bundled characters once per owner (a marker file remembers it); returns how many."""
    mark = avatar_path(data_dir, store.owner, 0).parent / BUNDLED_MARK
    if mark.exists():
        return 0
    have = {c.name for c in store.characters()}
    count = 0
    for path in bundled_characters():
        card = read_card(path)
        if card.name not in have:
            add_card(store, data_dir, card)
            count += 1
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text("the bundled characters were imported for this owner\n")
    return count


def card_of(store: Store, data_dir: Path, character_id: int) -> Card:
    """The stored card with its avatar image attached (for export and editing)."""
    card = card_from_json(store.character(character_id).card())
    path = avatar_path(data_dir, store.owner, character_id)
    return card.with_avatar(path.read_bytes()) if path.is_file() else card


def avatar_file(store: Store, data_dir: Path, character_id: int) -> str:
    """The character's avatar image; one is drawn from its name when it has none (e.g. a character that
    `chats import` created from a chat file)."""
    path = avatar_path(data_dir, store.owner, character_id)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(default_avatar(store.character(character_id).name))
    return str(path)


def export_card(store: Store, data_dir: Path, character_id: int, fmt: str, folder: Path) -> Path:
    """Write the card as .png/.json/.charx into folder; returns the file."""
    if fmt not in ("png", "json", "charx"):
        raise CardError(f"unknown export format {fmt!r}")
    card = card_of(store, data_dir, character_id)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in card.name).strip() or "character"
    path = folder / f"{safe}.{fmt}"
    path.write_bytes(card_bytes(card, fmt))
    return path


def edited_card(base: Card | None, fields: dict[str, str]) -> Card:
    """`base` (or a blank card) with the editor's fields; tags are comma-separated."""
    card = base.model_copy(deep=True) if base is not None else Card()
    for key, value in fields.items():
        if key == "tags":
            card.tags = [t.strip() for t in value.split(",") if t.strip()]
        else:
            setattr(card, key, value)
    if not card.name.strip():
        raise CardError("a character needs a name")
    return card.with_avatar(base.avatar_png if base is not None else None)


def avatars_dir(data_dir: Path) -> Path:
    """Every owner's avatar images (characters' and personas'): the only part of the data dir the app serves."""
    return data_dir / "avatars"


def avatar_path(data_dir: Path, owner: str, character_id: int) -> Path:
    """Where a character's avatar image is kept (the store keeps only the card's JSON)."""
    folder = hashlib.sha256(owner.encode()).hexdigest()[:16]
    return avatars_dir(data_dir) / folder / f"{character_id}.png"


def persona_avatar_path(data_dir: Path, owner: str, persona_id: int) -> Path:
    """Where a persona's avatar image is kept (the store keeps its SillyTavern avatar id)."""
    return avatar_path(data_dir, owner, 0).parent / "personas" / f"{persona_id}.png"


def persona_avatar_file(store: Store, data_dir: Path, persona_id: int) -> str:
    """The persona's avatar image; one is drawn from its name when it has none."""
    path = persona_avatar_path(data_dir, store.owner, persona_id)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(default_avatar(store.persona(persona_id).name))
    return str(path)


def set_persona_avatar(store: Store, data_dir: Path, persona_id: int, image: bytes | None) -> Path:
    """Keep `image` (any image Pillow reads, saved as PNG) as the persona's avatar; None draws one from its name."""
    persona = store.persona(persona_id)  # this owner's, or StoreError
    if image is None:
        png = default_avatar(persona.name)
    else:
        picture = open_image(image, f"the avatar of {persona.name}")
        if picture.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
            picture = picture.convert("RGBA")
        out = io.BytesIO()
        picture.save(out, format="PNG")
        png = out.getvalue()
    path = persona_avatar_path(data_dir, store.owner, persona_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def delete_persona(store: Store, data_dir: Path, persona_id: int) -> None:
    """Delete a persona, its locks and its avatar image."""
    store.delete_persona(persona_id)
    persona_avatar_path(data_dir, store.owner, persona_id).unlink(missing_ok=True)
