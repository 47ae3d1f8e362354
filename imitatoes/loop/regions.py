"""Repairing a region: the critic's box for an unmet requirement (0-1000 coordinates of the
image it saw), checked and clamped, turned into a feathered mask the size of the image."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from imitatoes.spec.knobs import finite_number

SCALE = 1000  # the coordinates Qwen2.5-VL and similar models answer grounding questions in


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def share(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0) / SCALE ** 2

    def as_list(self) -> list[float]:
        return [round(v, 1) for v in (self.x0, self.y0, self.x1, self.y1)]


def accept(raw: Any, min_share: float, max_share: float) -> tuple[Box | None, str]:
    """The box to repaint, or None and why it was refused: clamped to the image, grown to
    min_share or shrunk to max_share around its centre."""
    if not (isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) == 4):
        return None, "not four numbers [x0, y0, x1, y1]"
    if not all(finite_number(v) for v in raw):
        return None, "not four finite numbers"
    x0, y0, x1, y1 = (min(max(_clamped(v), 0.0), SCALE) for v in raw)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None, "no area inside the image (coordinates are 0-1000)"
    box = Box(x0, y0, x1, y1)
    if box.share < min_share:
        box = _scaled(box, math.sqrt(min_share / box.share))
    elif box.share > max_share:
        box = _scaled(box, math.sqrt(max_share / box.share))
    return box, ""


def _clamped(v: float) -> float:
    """A float of any finite number (a 400-digit int included) that the clamp can take."""
    return float(max(min(v, 10 * SCALE), -10 * SCALE))


def _scaled(box: Box, factor: float) -> Box:
    """The box scaled about its centre, moved back inside the image if it left it."""
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    w = min((box.x1 - box.x0) * factor, SCALE)
    h = min((box.y1 - box.y0) * factor, SCALE)
    x0 = min(max(cx - w / 2, 0.0), SCALE - w)
    y0 = min(max(cy - h / 2, 0.0), SCALE - h)
    return Box(x0, y0, x0 + w, y0 + h)


def mask(box: Box, size: tuple[int, int], feather: float) -> bytes:
    """A grayscale PNG the size of the image: white where it is repainted, black where it
    stays, with a soft edge `feather` of the shorter side wide (inside the box)."""
    w, h = size
    edge = feather * min(w, h)
    img = Image.new("L", size, 0)
    left, top = box.x0 * w / SCALE, box.y0 * h / SCALE
    right, bottom = box.x1 * w / SCALE, box.y1 * h / SCALE
    # The blur (3 sigma = 0.75 edge) spreads both ways: draw inset so nothing outside the
    # box is touched.
    inset = max(0.0, min(0.75 * edge, (right - left) / 2 - 1, (bottom - top) / 2 - 1))
    ImageDraw.Draw(img).rectangle([left + inset, top + inset, right - inset, bottom - inset],
                                  fill=255)
    if edge >= 1:
        img = img.filter(ImageFilter.GaussianBlur(edge / 4))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()
