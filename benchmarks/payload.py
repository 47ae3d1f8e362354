"""Critic payload: bytes sent per image, the PNG as rendered versus the JPEG the critic gets, and
the time to shrink and encode, for 512, 1024 and 2048 px renders.

    .venv/bin/python benchmarks/payload.py
"""

from __future__ import annotations

import io
import random
import time

from PIL import Image, ImageDraw, ImageFilter

from imitatoes.clients.critic_image import prepare


def photo_like(size: int, seed: int = 0) -> bytes:
    """Gradients, shapes, texture and sensor-like grain: compresses like a real render, unlike
    the stand-in's flat pictures. Saved as ComfyUI's SaveImage does (PNG, compress_level 4)."""
    rng = random.Random(seed)
    img = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 20, size // 4)
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(size / 200))
    grain = Image.effect_noise((size, size), 18).convert("RGB")
    img = Image.blend(img, grain, 0.12)
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=4)
    return out.getvalue()


def main() -> None:
    print(f"{'render':>9} {'PNG bytes':>11} {'sent bytes':>11} {'base64':>10} {'ratio':>6} "
          f"{'encode ms':>9}  sent as")
    for size in (512, 1024, 2048):
        png = photo_like(size)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            sent = prepare(png, max_edge=1024, fmt="jpeg", quality=85)
            times.append(time.perf_counter() - t)
        b64 = len(sent.base64())
        print(f"{size:>4}x{size:<4} {len(png):>11,} {len(sent.data):>11,} {b64:>10,} "
              f"{len(png) / len(sent.data):>5.1f}x {sorted(times)[2] * 1000:>9.1f}  "
              f"{sent.width}x{sent.height} JPEG q85")


if __name__ == "__main__":
    main()
