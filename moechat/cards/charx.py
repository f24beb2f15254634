"""CHARX card container (docs/formats.md §2.4): a zip with `card.json` at the root and assets beside it.

Reading checks the declared sizes against the size limit before inflating anything (zip bombs) and
reads every member with a hard cap. Writing is deterministic (fixed timestamps, sorted members).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from moechat.cards.json import load_json
from moechat.errors import CardError

MAX_MEMBERS = 10_000
ICON_PATH = "assets/icon/images/main.png"
_EMBEDDED = "embeded://"


def read_charx(raw: bytes, *, max_bytes: int) -> tuple[Any, dict[str, bytes]]:
    """`(card JSON, other files by path)` from CHARX bytes; CardError for broken or oversized zips."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        infos = [info for info in archive.infolist() if not info.is_dir()]
        _check_sizes(infos, max_bytes)
        files = {info.filename: _read_member(archive, info) for info in infos}
    except CardError:
        raise
    except Exception as exc:  # zipfile raises many types on corrupt archives
        raise CardError(f"CHARX: not a readable zip archive ({type(exc).__name__}: {exc})"[:300]) from None
    if "card.json" not in files:
        raise CardError("CHARX: no card.json at the root of the archive")
    return load_json(files.pop("card.json"), "CHARX card.json"), files


def _check_sizes(infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    if len(infos) > MAX_MEMBERS:
        raise CardError(f"CHARX: more than {MAX_MEMBERS} files in the archive")
    if any(info.flag_bits & 0x1 for info in infos):
        raise CardError("CHARX: encrypted archives are not supported")
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise CardError(f"CHARX: unpacks to {total} bytes, over the {max_bytes}-byte limit")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise CardError(f"CHARX: {info.filename} is larger than its header says")
    return data


def main_icon(assets: list[dict[str, Any]] | None, files: dict[str, bytes]) -> bytes | None:
    """The bytes of the main icon asset (`embeded://` URI into the archive), else of the first icon."""
    icons = [a for a in assets or [] if a.get("type") == "icon" and str(a.get("uri", "")).startswith(_EMBEDDED)]
    icons.sort(key=lambda asset: asset.get("name") != "main")
    for icon in icons:
        path = str(icon["uri"])[len(_EMBEDDED) :]
        if path in files:
            return files[path]
    return None


def write_charx(card_json: dict[str, Any], files: dict[str, bytes], avatar: bytes | None) -> bytes:
    """CHARX bytes: `card.json` + `files`; an avatar not already among the files becomes the main icon."""
    card_json = json.loads(json.dumps(card_json))
    files = dict(files)
    data = card_json["data"]
    if avatar is not None and main_icon(data.get("assets"), files) != avatar:
        files[ICON_PATH] = avatar
        icon = {"type": "icon", "uri": _EMBEDDED + ICON_PATH, "name": "main", "ext": "png"}
        others = [a for a in data.get("assets") or [] if not (a.get("type") == "icon" and a.get("name") == "main")]
        data["assets"] = [icon, *others]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        text = json.dumps(card_json, ensure_ascii=False, indent=2).encode("utf-8")
        _write(archive, "card.json", text)
        for path in sorted(files):
            _write(archive, path, files[path])
    return out.getvalue()


def _write(archive: zipfile.ZipFile, path: str, data: bytes) -> None:
    info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)
