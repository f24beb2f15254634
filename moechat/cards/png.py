"""PNG card container (docs/formats.md §2.5) with Pillow: read `ccv3` then `chara` text chunks, write both.

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
from typing import Any

from PIL import Image, ImageDraw, PngImagePlugin

from moechat.cards.json import load_json
from moechat.errors import CardError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 64 * 1024 * 1024
CARD_KEYS = ("ccv3", "chara")
AVATAR_SIZE = 512


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
    """Text chunks of a PNG with lower-cased keywords (Pillow also reads zTXt/iTXt)."""
    image = open_image(raw, "PNG", max_pixels)
    text = getattr(image, "text", None) or {}
    return {key.lower(): value for key, value in text.items() if isinstance(value, str)}


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
