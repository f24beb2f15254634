"""Lossless JSON for pydantic models: only the fields a source had (or that were set), so a card or lorebook
written back carries no invented defaults, and unknown fields survive."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def dump_set_fields(model: BaseModel, required: tuple[str, ...]) -> dict[str, Any]:
    """JSON dict of the fields the source had (or that were set) plus `required` ones; extras kept."""
    full = model.model_dump(mode="json")
    keep = model.model_fields_set | set(required)
    return {key: value for key, value in full.items() if key in keep}
