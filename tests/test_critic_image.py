from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from imitatoes.critic_image import ImageUnreadable, prepare


def png(size: tuple[int, int], mode: str = "RGB", colour: object = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, "PNG")
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_shrinks_the_longest_edge_and_keeps_the_aspect() -> None:
    p = prepare(png((2048, 1024)), max_edge=1024)
    assert (p.width, p.height) == (1024, 512)
    assert opened(p.data).format == "JPEG" and p.mime == "image/jpeg"


def test_never_upscales() -> None:
    p = prepare(png((300, 200)), max_edge=1024)
    assert (p.width, p.height) == (300, 200)


def test_alpha_is_flattened_onto_white() -> None:
    p = prepare(png((64, 64), "RGBA", (255, 0, 0, 0)), fmt="png")
    img = opened(p.data)
    assert img.mode == "RGB" and img.getpixel((10, 10)) == (255, 255, 255)
    half = prepare(png((64, 64), "RGBA", (0, 0, 0, 128)), fmt="png")
    assert opened(half.data).getpixel((5, 5)) == (127, 127, 127)


def test_png_when_lossless_is_asked() -> None:
    p = prepare(png((64, 64)), fmt="png")
    assert opened(p.data).format == "PNG" and p.mime == "image/png"


def test_encodings_for_each_dialect() -> None:
    p = prepare(png((32, 32)))
    assert not p.base64().startswith("data:")
    assert base64.b64decode(p.base64(), validate=True) == p.data
    assert p.data_uri().startswith("data:image/jpeg;base64,")


def test_quality_changes_the_size() -> None:
    noisy = Image.effect_noise((512, 512), 80).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    assert len(prepare(out.getvalue(), quality=30).data) < len(prepare(out.getvalue(),
                                                                      quality=95).data)


def test_garbage_is_a_typed_error() -> None:
    with pytest.raises(ImageUnreadable, match="not a readable image"):
        prepare(b"<html>")
