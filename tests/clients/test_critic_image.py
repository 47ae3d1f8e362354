from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from imitatoes.clients.critic_image import ImageUnreadable, prepare


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


def test_the_thumbnail_from_the_critic_s_pixels_matches_one_from_its_jpeg() -> None:
    from imitatoes.runs import thumbs

    source = Image.new("RGB", (1536, 1024), (20, 90, 200))
    source.paste((240, 200, 10), (0, 0, 768, 1024))  # left half yellow
    out = io.BytesIO()
    source.save(out, "PNG")
    p = prepare(out.getvalue(), max_edge=1024)
    assert p.picture is not None and p.picture.size == (1024, 683)
    small, again = (opened(t) for t in (thumbs.make(p.data, p.picture), thumbs.make(p.data)))
    assert small.width == again.width == thumbs.SIZE
    assert abs(small.height - 256) <= 1 and abs(again.height - 256) <= 1
    for x in (20, 360):  # the same picture either way (JPEG noise aside)
        a, b = small.getpixel((x, 128)), again.getpixel((x, 128))
        assert max(abs(i - j) for i, j in zip(a, b, strict=True)) < 12
    assert p.picture.size == (1024, 683)  # the critic's picture itself is left as it was
