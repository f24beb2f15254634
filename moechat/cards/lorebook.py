"""Lorebooks (V2 `character_book`, V3 `lorebook_v3`): a lossless model (docs/formats.md §2.6).

Which entries fire is `moechat.cards.lore_scan` (SillyTavern's rules), over `world_info.book_rules(book)`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from moechat.cards.fields import dump_set_fields
from moechat.errors import CardError


class LoreEntry(BaseModel):
    """One lorebook entry; unknown fields are kept (`extra="allow"`) and written back."""

    model_config = ConfigDict(extra="allow")
    keys: list[str] = []
    content: str = ""
    extensions: dict[str, Any] = {}
    enabled: bool = True
    insertion_order: int | float = 0
    case_sensitive: bool | None = None
    name: str | None = None
    priority: int | float | None = None
    id: int | str | None = None
    comment: str | None = None
    selective: bool | None = None
    secondary_keys: list[str] | None = None
    constant: bool | None = None
    position: str | int | None = None
    use_regex: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            required = ("keys", "content", "extensions", "enabled", "insertion_order")
            return {k: v for k, v in value.items() if not (v is None and k in required)}
        return value

    def to_json(self) -> dict[str, Any]:
        """The entry as V2/V3 JSON: required keys always, optional ones when the source had them."""
        return dump_set_fields(self, ("keys", "content", "extensions", "enabled", "insertion_order"))


class Lorebook(BaseModel):
    """A V2 `character_book` / V3 lorebook; unknown fields are kept."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    description: str | None = None
    scan_depth: int | float | None = None
    token_budget: int | float | None = None
    recursive_scanning: bool | None = None
    extensions: dict[str, Any] = {}
    entries: list[LoreEntry] = []

    def to_json(self) -> dict[str, Any]:
        """The book as `character_book` JSON (entries via `LoreEntry.to_json`)."""
        out = dump_set_fields(self, ("extensions", "entries"))
        out["entries"] = [entry.to_json() for entry in self.entries]
        return out

    def to_lorebook_v3(self) -> dict[str, Any]:
        """Standalone V3 lorebook file: `{"spec": "lorebook_v3", "data": ...}`."""
        return {"spec": "lorebook_v3", "data": self.to_json()}


def read_lorebook(obj: Any) -> Lorebook:
    """A lorebook from parsed JSON: a `lorebook_v3` file, a bare book, or a card's `character_book`."""
    if isinstance(obj, dict) and obj.get("spec") == "lorebook_v3":
        obj = obj.get("data")
    if not isinstance(obj, dict):
        raise CardError("lorebook: expected a JSON object with an 'entries' list")
    try:
        return Lorebook.model_validate(obj)
    except ValidationError as exc:
        raise CardError(f"lorebook: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"
