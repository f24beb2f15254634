"""Card JSON/YAML text: safe parsing and the shapes cards come in (V1, V2, V3, Pygmalion, TGW).

`normalise(obj)` turns any accepted shape into `Normal(data, root, spec)`: `data` is a V3-style `data`
dict (unknown keys included), `root` holds the unknown top-level keys so they survive export.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import yaml

from moechat.errors import CardError

MAX_DEPTH = 64
MAX_NODES = 1_000_000
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
DATA_FIELDS = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "alternate_greetings",
    "tags",
    "creator",
    "character_version",
    "extensions",
    "character_book",
    "group_only_greetings",
    "nickname",
    "creator_notes_multilingual",
    "source",
    "creation_date",
    "modification_date",
    "assets",
)
REGENERATED_ROOT = frozenset({"spec", "spec_version", "data", *V1_FIELDS, "creatorcomment", "tags"})
PYGMALION = {
    "char_name": "name",
    "char_persona": "description",
    "char_greeting": "first_mes",
    "world_scenario": "scenario",
    "example_dialogue": "mes_example",
}
TGW_NAME_KEYS = ("name", "bot", "<|bot|>", "char_name")


@dataclass(frozen=True)
class Normal:
    """A card in one shape: V3-style `data`, unknown top-level `root` keys, and the source `spec`."""

    data: dict[str, Any]
    root: dict[str, Any]
    spec: str


def decode_text(raw: bytes, what: str) -> str:
    """UTF-8 text (a leading BOM is dropped), or CardError saying the file is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(f"{what}: not UTF-8 text (bad byte at offset {exc.start})") from None


def load_json(raw: bytes, what: str) -> Any:
    """Parse JSON bytes; CardError for bad UTF-8, bad JSON, or JSON nested deeper than MAX_DEPTH."""
    text = decode_text(raw, what)
    try:
        obj = json.loads(text)
    except RecursionError:
        raise CardError(f"{what}: JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise CardError(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:
        raise CardError(f"{what}: not valid JSON ({exc})") from None
    return plain(obj, what)


def load_yaml(raw: bytes, what: str) -> Any:
    """Parse YAML (safe loader only); CardError for anything that is not plain, finite data."""
    text = decode_text(raw, what)
    try:
        obj = yaml.safe_load(text)
    except RecursionError:
        raise CardError(f"{what}: YAML is nested too deeply") from None
    except (yaml.YAMLError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CardError(f"{what}: not valid YAML ({problem})") from None
    return plain(obj, what)


def plain(obj: Any, what: str, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A copy of `obj` made of JSON types only (dates become ISO strings, keys strings).

    Raises CardError when nesting exceeds MAX_DEPTH (also catches YAML alias cycles) or the
    document has more than MAX_NODES values.
    """
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if depth > MAX_DEPTH:
        raise CardError(f"{what}: nested more than {MAX_DEPTH} levels deep")
    if budget[0] < 0:
        raise CardError(f"{what}: more than {MAX_NODES} values")
    if isinstance(obj, dict):
        return {_key(k): plain(v, what, depth + 1, budget) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [plain(v, what, depth + 1, budget) for v in obj]
    if isinstance(obj, datetime.date | datetime.datetime):
        return obj.isoformat()
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, bytes):
        raise CardError(f"{what}: binary values are not allowed in a card")
    return str(obj)


def _key(key: Any) -> str:
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    return key if isinstance(key, str) else str(key)


def normalise(obj: Any, *, yaml_source: bool = False) -> Normal:
    """Dispatch like ST: `spec` → V2/V3; TGW keys (`greeting`/`context`) → TGW; `name` → V1;
    `char_name` → Pygmalion. CardError for anything else."""
    if not isinstance(obj, dict):
        raise CardError(f"card: expected a JSON object at the top level, got {_type_name(obj)}")
    if "spec" in obj:
        return _from_spec(obj)
    tgw = ("greeting" in obj or "context" in obj) and not ({"first_mes", "description"} & obj.keys())
    if yaml_source or tgw:
        return _from_tgw(obj)
    if "name" in obj:
        return _from_v1(obj)
    if "char_name" in obj:
        return _from_mapping(obj, PYGMALION, "pygmalion")
    raise CardError("card: not a character card (no 'spec', 'name' or 'char_name' field)")


def _type_name(obj: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(obj), "a number" if isinstance(obj, int | float) else "null"
    )


def _from_spec(obj: dict[str, Any]) -> Normal:
    spec = obj["spec"]
    if spec == "lorebook_v3":
        raise CardError("card: this is a lorebook file (spec 'lorebook_v3'), not a character card")
    if not isinstance(spec, str):
        raise CardError(f"card: 'spec' must be a string, got {_type_name(spec)}")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise CardError(f"card: '{spec}' card needs a 'data' object, got {_type_name(data)}")
    root = {k: v for k, v in obj.items() if k not in REGENERATED_ROOT}
    return Normal(dict(data), root, spec)


def _from_v1(obj: dict[str, Any]) -> Normal:
    data = {k: obj[k] for k in DATA_FIELDS if k in obj}
    if "creator_notes" not in data and "creatorcomment" in obj:
        data["creator_notes"] = obj["creatorcomment"]
    root = {k: v for k, v in obj.items() if k not in data and k != "creatorcomment"}
    return Normal(data, root, "v1")


def _from_mapping(obj: dict[str, Any], mapping: dict[str, str], spec: str) -> Normal:
    data = {field: obj[key] for key, field in mapping.items() if key in obj}
    root = {k: v for k, v in obj.items() if k not in mapping}
    return Normal(data, root, spec)


def _from_tgw(obj: dict[str, Any]) -> Normal:
    name_key = next((k for k in TGW_NAME_KEYS if k in obj), None)
    mapping = {"greeting": "first_mes", "context": "description"}
    if name_key is not None:
        mapping[name_key] = "name"
    return _from_mapping(obj, mapping, "textgen")
