"""PNG card container (docs/formats.md §2.5) with Pillow: read the first `ccv3` then `chara` text chunk, write both.

Values are base64 of UTF-8 JSON in `tEXt` chunks. Reading checks the image size before decoding pixels
and turns Pillow's decompression-bomb warning/error (and every other Pillow failure) into CardError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import warnings
import zlib
from typing import Any

from PIL import Image, ImageDraw, PngImagePlugin

from moechat.cards.json import load_json
from moechat.errors import CardError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 64 * 1024 * 1024
CARD_KEYS = ("ccv3", "chara")
AVATAR_SIZE = 512
MAX_TEXT_BYTES = 20 * 1024 * 1024


def open_image(raw: bytes, what: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image; CardError if it is broken, too large or a decompression bomb."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > max_pixels:
                raise CardError(f"{what}: {image.width}x{image.height} pixels is too large for an avatar")
            image.load()
        except CardError:
            raise
        except Image.UnidentifiedImageError:
            raise CardError(f"{what}: not a recognisable image (truncated or corrupt)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise CardError(f"{what}: rejected as a decompression bomb ({exc})") from None
        except Exception as exc:  # Pillow raises many types on malformed files
            raise CardError(f"{what}: not a readable image ({type(exc).__name__}: {exc})"[:300]) from None
    return image


def card_chunks(raw: bytes, max_pixels: int = MAX_PIXELS) -> dict[str, str]:
    """Text chunks of a PNG with lower-cased keywords; of two with one keyword the first wins, as in SillyTavern
    (Pillow's dictionary would keep the last). zTXt/iTXt are read too."""
    open_image(raw, "PNG", max_pixels)
    return first_text_chunks(raw)


def first_text_chunks(raw: bytes) -> dict[str, str]:
    """The first tEXt/zTXt/iTXt value of each keyword (lower-cased), walking the chunks in file order."""
    out: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(raw):
        length = int.from_bytes(raw[pos : pos + 4], "big")
        kind, data = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind not in (b"tEXt", b"zTXt", b"iTXt") or b"\0" not in data:
            continue
        keyword, _, rest = data.partition(b"\0")
        key = keyword.decode("latin-1").lower()
        if key in out:
            continue
        value = _text_value(kind, rest)
        if value is not None:
            out[key] = value
    return out


def _text_value(kind: bytes, rest: bytes) -> str | None:
    try:
        if kind == b"tEXt":
            return rest.decode("latin-1")
        if kind == b"zTXt":
            return _inflate(rest[1:]).decode("latin-1")
        compressed, rest = rest[0], rest[2:]
        _lang, _, rest = rest.partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        return (_inflate(text) if compressed else text).decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError, ValueError):
        return None


def _inflate(data: bytes) -> bytes:
    """zlib data, refusing more than a card may hold (a compressed text chunk can be a bomb)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("text chunk too large")
    return out


def read_png(raw: bytes, max_pixels: int = MAX_PIXELS) -> tuple[Any, bytes]:
    """The card JSON of a PNG (`ccv3` preferred, `chara` as fallback) and the PNG bytes themselves."""
    chunks = card_chunks(raw, max_pixels)
    present = [key for key in CARD_KEYS if key in chunks]
    if not present:
        raise CardError("PNG: no character card inside (no 'ccv3' or 'chara' text chunk)")
    first_error: CardError | None = None
    for key in present:
        try:
            return decode_chunk(chunks[key], key), raw
        except CardError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def decode_chunk(value: str, key: str) -> Any:
    """JSON from a card chunk value: base64 of UTF-8 JSON (plain JSON text is tolerated)."""
    what = f"PNG '{key}' chunk"
    text = value.replace("\\r\\n", "").strip()
    if text.startswith("{"):
        return load_json(text.encode("utf-8", "surrogatepass"), what)
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        payload = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"{what}: not valid base64") from None
    return load_json(payload, what)


def encode_chunk(card_json: dict[str, Any]) -> str:
    """Base64 of the UTF-8 JSON, as every card reader expects."""
    text = json.dumps(card_json, ensure_ascii=False, separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def write_png(image_bytes: bytes, v2_json: dict[str, Any], v3_json: dict[str, Any]) -> bytes:
    """PNG bytes of `image_bytes` with fresh `chara` (V2 + V1 mirror) and `ccv3` (V3) tEXt chunks.

    Any old card chunks are dropped (case-insensitive); other text chunks, ICC profile, DPI, EXIF and
    transparency are copied. Pixels are re-encoded by Pillow.
    """
    image = open_image(image_bytes, "avatar image")
    info = PngImagePlugin.PngInfo()
    for key, value in (getattr(image, "text", None) or {}).items():
        if key.lower() not in CARD_KEYS and isinstance(value, str):
            info.add_text(key, value)
    info.add_text("chara", encode_chunk(v2_json))
    info.add_text("ccv3", encode_chunk(v3_json))
    extras = {k: image.info[k] for k in ("icc_profile", "dpi", "exif", "transparency") if k in image.info}
    if image.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
        image = image.convert("RGBA")
    out = io.BytesIO()
    try:
        image.save(out, format="PNG", pnginfo=info, **extras)
    except (OSError, ValueError, TypeError) as exc:
        raise CardError(f"cannot write PNG: {exc}") from None
    return out.getvalue()


def default_avatar(name: str, size: int = AVATAR_SIZE) -> bytes:
    """A deterministic geometric avatar for `name` (no text, no fonts: same bytes everywhere)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    hue = digest[0] / 255
    background = _hsv(hue, 0.35, 0.95)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cells = 5
    step = size // (cells + 1)
    margin = (size - step * cells) // 2
    color = _hsv(hue, 0.7, 0.55)
    for row in range(cells):
        for col in range((cells + 1) // 2):
            if digest[1 + row * 3 + col] % 2:
                for mirrored in {col, cells - 1 - col}:
                    x, y = margin + mirrored * step, margin + row * step
                    draw.rounded_rectangle((x, y, x + step - 4, y + step - 4), radius=step // 5, fill=color)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _hsv(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    import colorsys

    red, green, blue = colorsys.hsv_to_rgb(hue, sat, val)
    return round(red * 255), round(green * 255), round(blue * 255)
