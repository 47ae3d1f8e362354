"""Is this answer an image we can keep? A proxy's login page, a truncated download or an image
of absurd size must never be saved under a render's name, where every resume would reuse it."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from imitatoes.errors import ImitatoesError

FORMATS = ("PNG", "JPEG", "WEBP")
MAX_PIXELS = 8192 * 8192  # the default for comfyui.max_image_pixels


class NotAnImage(ImitatoesError):
    """The bytes are not an image we accept; the message says why in a few words."""


@dataclass(frozen=True)
class Checked:
    format: str
    width: int
    height: int


def check(data: bytes, max_pixels: int = MAX_PIXELS, decode: bool = False) -> Checked:
    """Header, size and checksums; with `decode`, every pixel too (slower: used once per saved
    render on resume, not on every fresh one)."""
    if not data:
        raise NotAnImage("an empty answer")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt, (width, height) = img.format or "?", img.size
            if fmt not in FORMATS:
                raise NotAnImage(f"a {fmt} file, not {', '.join(FORMATS)}")
            if width * height > max_pixels:
                raise NotAnImage(f"{width}x{height} pixels, more than the {max_pixels:,} allowed "
                                 "(comfyui.max_image_pixels)")
            img.verify()
            if decode:
                Image.open(io.BytesIO(data)).load()
    except NotAnImage:
        raise
    except Image.DecompressionBombError as exc:  # past PIL's own limit, before ours
        pixels = next((int(w) for w in str(exc).replace("(", " ").split() if w.isdigit()), 0)
        raise NotAnImage(f"{pixels:,} pixels, more than the {max_pixels:,} allowed "
                         "(comfyui.max_image_pixels)") from None
    except UnidentifiedImageError as exc:
        raise NotAnImage(_what(data, exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # what PIL raises for damage
        raise NotAnImage(f"a damaged image ({exc})") from None
    return Checked(fmt, width, height)


def _what(data: bytes, exc: Exception) -> str:
    head = data[:200].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "an HTML page (a proxy or login page in front of ComfyUI?)"
    if head.startswith((b"{", b"[")):
        return "JSON, not an image"
    return f"not an image ({exc})"
