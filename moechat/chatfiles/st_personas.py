"""SillyTavern personas (docs/formats.md §3.11): read from its `settings.json` (`power_user.personas`,
`power_user.persona_descriptions`, `power_user.default_persona`) or from the file its "Backup personas" button
writes (the same three keys at the top). Pure: returns records; the images are in `User Avatars/`, named by the
avatar ids. Everything of a descriptor besides its description (position, depth, role, lorebook, connections,
title...) is kept in `extra`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moechat.errors import StoreError

MAX_SETTINGS_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StPersona:
    avatar: str  # the avatar id: the image's file name in User Avatars/
    name: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def characters(self) -> list[str]:
        """The avatar ids of characters this persona is connected to (newer SillyTavern's character locks)."""
        connections = self.extra.get("connections")
        items = connections if isinstance(connections, list) else []
        return [c["id"] for c in items if isinstance(c, dict) and c.get("type") == "character" and _text(c.get("id"))]


@dataclass(frozen=True, slots=True)
class StPersonas:
    personas: tuple[StPersona, ...]
    default: str = ""  # the default persona's avatar id ("" when none, or when it names no persona)
    skipped: tuple[str, ...] = ()  # what was left out, and why


def read_settings(path: str | Path, max_bytes: int = MAX_SETTINGS_BYTES) -> StPersonas:
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise StoreError(f"{path.name} is larger than {max_bytes // (1024 * 1024)} MiB")
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise StoreError(f"{path.name} is not JSON ({exc})") from exc
    return parse_settings(data)


def parse_settings(data: object) -> StPersonas:
    """The personas of a settings.json object or of a persona backup."""
    if not isinstance(data, dict):
        raise StoreError("not SillyTavern settings: the file is not a JSON object")
    power_user = data.get("power_user")
    source = power_user if isinstance(power_user, dict) and "personas" in power_user else data
    names = source.get("personas")
    if not isinstance(names, dict):
        raise StoreError("no personas here: neither power_user.personas nor personas is an object")
    descriptions = source.get("persona_descriptions")
    descriptions = descriptions if isinstance(descriptions, dict) else {}
    personas, skipped = [], []
    for avatar, name in names.items():
        if not _text(avatar) or not _text(name):
            skipped.append(f"persona {avatar!r}: {'no name' if _text(avatar) else 'no avatar id'}")
            continue
        descriptor = descriptions.get(avatar)
        descriptor = dict(descriptor) if isinstance(descriptor, dict) else {}
        description = descriptor.pop("description", "")
        personas.append(StPersona(avatar, name, description if isinstance(description, str) else "", descriptor))
    skipped += [f"description of {key!r}: no persona has that avatar id" for key in descriptions if key not in names]
    default = source.get("default_persona")
    default = default if isinstance(default, str) else ""
    if default and default not in names:
        skipped.append(f"default persona {default!r}: no persona has that avatar id")
    return StPersonas(tuple(personas), default if default in names else "", tuple(skipped))


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
