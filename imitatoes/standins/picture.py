"""The stand-ins' shared picture language: how the fake ComfyUI draws a prompt, and how the fake
vision model reads the pixels back. Words in the prompt become visible things (a background
colour, coloured circles, squares and triangles), few steps look noisy, a low cfg looks washed
out, and a watermark sits in the corner until the negative prompt names it."""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageStat

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 35), "orange": (240, 140, 25), "yellow": (240, 215, 40),
    "green": (40, 160, 60), "blue": (35, 75, 210), "purple": (130, 50, 190),
    "pink": (240, 130, 180), "brown": (120, 75, 35), "white": (245, 245, 245),
    "black": (20, 20, 20), "gray": (128, 128, 128), "grey": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUND_WORDS = ("background", "backdrop", "sky")
WATERMARK_WORDS = ("watermark", "text", "signature", "logo")
CLEAN_STEPS = 20  # at and above this many steps a picture has no noise
WASHED_CFG = 3.0  # below this cfg colours fade toward gray


@dataclass(frozen=True)
class Scene:
    """What a prompt asks to be drawn."""

    background: str | None
    shapes: tuple[tuple[str, str], ...]  # (colour, shape)
    watermark: bool
    noise: float  # 0 (clean) .. 1 (all noise)
    washed: bool


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


WEIGHTED = re.compile(r"^\((.+):\s*(-?[0-9]+(?:\.[0-9]+)?)\)$", re.S)


def weights(prompt: str) -> list[float]:
    """The weight of each word of the prompt, as ComfyUI reads "(blue background:1.3)"."""
    out: list[float] = []
    for term in prompt.split(","):
        m = WEIGHTED.match(term.strip())
        out += [float(m.group(2)) if m else 1.0] * len(words(m.group(1) if m else term))
    return out


def scene_from(prompt: str, negative: str, steps: int, cfg: float) -> Scene:
    """What a prompt draws. Of two backgrounds the more heavily weighted wins, and the one
    named first when they weigh the same: a wrong one stays until it is taken out or
    outweighed, as with a real model."""
    w, weight = words(prompt), weights(prompt)
    background, shapes, heaviest = None, [], 0.0
    for i, word in enumerate(w):
        colour = _colour_before(w, i)
        if word in BACKGROUND_WORDS and colour and weight[i] > heaviest:
            background, heaviest = colour, weight[i]
        elif word in SHAPES or word.rstrip("s") in SHAPES:
            shape = (colour or "", word.rstrip("s"))
            if shape not in shapes:
                shapes.append(shape)
    coloured = {shape for colour, shape in shapes if colour}
    shapes = [(c, s) for c, s in shapes if c or s not in coloured]  # "a circle, red circle": one
    negated = set(words(negative))
    noise = max(0.0, (CLEAN_STEPS - steps) / CLEAN_STEPS) * 0.8
    return Scene(background, tuple(shapes[:3]), not negated & set(WATERMARK_WORDS),
                 round(noise, 3), cfg < WASHED_CFG)


def _colour_before(w: list[str], i: int) -> str | None:
    """The colour word right before position i (allowing one word between, as in 'red round')."""
    for j in (i - 1, i - 2):
        if j >= 0 and w[j] in COLOURS:
            return "gray" if w[j] == "grey" else w[j]
    return None


def paint(scene: Scene, width: int, height: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    names = [c for c in COLOURS if c != "grey"]
    bg_name = scene.background or rng.choice(["gray", "brown", "green", "purple"])
    img = Image.new("RGB", (width, height), COLOURS[bg_name])
    draw = ImageDraw.Draw(img)
    for k, (colour, shape) in enumerate(scene.shapes):
        colour = colour or rng.choice([c for c in names if c != bg_name])
        _shape(draw, shape, COLOURS[colour], _box(k, len(scene.shapes), width, height, rng))
    if scene.watermark:
        _watermark(draw, width, height)
    if scene.washed:
        img = Image.blend(img, Image.new("RGB", img.size, (150, 150, 150)), 0.6)
    if scene.noise > 0:
        grain = Image.frombytes("L", img.size, rng.randbytes(width * height)).convert("RGB")
        img = Image.blend(img, grain, scene.noise)
    return img


def stubborn(scene: Scene, seed: int, share: float) -> Scene:
    """Composition that depends on the seed, as with a real model: for this share of seeds
    the shapes come out in the wrong colour whatever the prompt says (a new seed may help;
    more words will not)."""
    if share <= 0 or random.Random(seed * 7919 + 17).random() >= share:
        return scene
    wrong = {"red": "orange", "orange": "yellow", "yellow": "green", "green": "purple",
             "purple": "pink", "pink": "red", "blue": "purple", "white": "gray",
             "black": "brown", "brown": "black", "gray": "white"}
    return dataclasses.replace(scene, shapes=tuple((wrong.get(c, "orange") if c else c, s)
                                                   for c, s in scene.shapes))


def grained(img: Image.Image, amount: float) -> Image.Image:
    """Blurred detail and sensor-like grain, so a render compresses and decodes like a photo
    (the knob `grain`, for benchmarks), the same for the same picture."""
    rng = random.Random(img.size[0] * 7919 + img.size[1])
    grain = Image.frombytes("L", img.size, rng.randbytes(img.size[0] * img.size[1]))
    return Image.blend(img, grain.convert("RGB"), amount)


def _box(k: int, n: int, width: int, height: int, rng: random.Random) -> tuple[int, ...]:
    """Shapes side by side in the middle band, jittered by the seed, clear of the corners."""
    cell = width / n
    size = min(cell * 0.7, height * 0.45)
    cx = cell * (k + 0.5) + rng.uniform(-0.08, 0.08) * cell
    cy = height * (0.45 + rng.uniform(-0.05, 0.05))
    return (int(cx - size / 2), int(cy - size / 2), int(cx + size / 2), int(cy + size / 2))


def _shape(draw: ImageDraw.ImageDraw, shape: str, fill: tuple, box: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _watermarked(box: Image.Image, background: str, noisy: bool) -> bool:
    """A white label in the corner: most of the box reads as white. Under grain the colours
    drift, so there a box clearly brighter than the background counts (a light background
    such as pink or yellow is not a label: it used to be taken for one)."""
    names = box.quantize(palette=PALETTE, dither=Image.Dither.NONE).tobytes()
    white = NAMES.index("white")
    if sum(1 for v in names if v == white) > 0.3 * len(names):
        return True
    r, g, b = COLOURS[background]
    return noisy and ImageStat.Stat(box.convert("L")).mean[0] > 150 > 0.299 * r + 0.587 * g + \
        0.114 * b


def _watermark(draw: ImageDraw.ImageDraw, width: int, height: int) -> None:
    x0, y0, x1, y1 = _watermark_box(width, height)
    draw.rectangle((x0, y0, x1, y1), fill=(250, 250, 250))
    for x in range(x0 + 2, x1 - 2, 4):  # dark "letters"
        draw.line((x, y0 + 2, x, y1 - 2), fill=(30, 30, 30), width=1)


def _watermark_box(width: int, height: int) -> tuple[int, int, int, int]:
    return (int(width * 0.74), int(height * 0.88), int(width * 0.97), int(height * 0.97))


# -- reading a picture back -------------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    background: str
    shapes: tuple[tuple[str, str], ...]  # (colour, shape) found
    watermark: bool
    noisy: bool
    washed: bool


NAMES = [c for c in COLOURS if c != "grey"]


def _palette() -> Image.Image:
    pal = Image.new("P", (1, 1))
    flat = [v for name in NAMES for v in COLOURS[name]]
    pal.putpalette(flat + flat[-3:] * (256 - len(NAMES)))
    return pal


PALETTE = _palette()


def look(img: Image.Image) -> Seen:
    """What is in the picture, from its pixels alone (works on JPEG-compressed copies)."""
    small = img.convert("RGB").resize((96, 96), Image.Resampling.BOX)  # averages away the grain
    side = min(128, img.width, img.height)
    noisy = _grain(img.convert("L").resize((side, side), Image.Resampling.NEAREST)) > 22
    # Nearest named colour per pixel, then a 3x3 mode filter so anti-aliased edges vanish.
    names = small.quantize(palette=PALETTE, dither=Image.Dither.NONE)
    index = names.filter(ImageFilter.ModeFilter(3)).tobytes()
    border = [index[y * 96 + x] for x in range(96) for y in (1, 2)]
    background = NAMES[max(set(border), key=border.count)]
    wm = _watermark_box(96, 96)
    watermark = background != "white" and _watermarked(small.crop(wm), background, noisy)
    return Seen(background, _shapes(index, NAMES.index(background), wm), watermark, noisy,
                _washed(small))


def _washed(small: Image.Image) -> bool:
    """A low cfg pulls every channel toward mid-gray; named colours all reach outside it."""
    data = small.tobytes()
    pixels = range(0, len(data), 3)
    inside = sum(1 for i in pixels if all(85 <= v <= 215 for v in data[i:i + 3]))
    return inside > 0.995 * len(pixels)


def _grain(gray: Image.Image) -> float:
    px = gray.tobytes()
    w = gray.width
    diffs = [abs(px[i] - px[i + 1]) for i in range(len(px) - 1) if (i + 1) % w]
    return sum(diffs) / len(diffs)


def _shapes(index: bytes, background: int, wm: tuple[int, ...]) -> tuple:
    """Group non-background pixels by colour; tell shapes apart by how full their box is."""
    boxes: dict[int, list[int]] = {}
    counts: dict[int, int] = {}
    for i, c in enumerate(index):
        x, y = i % 96, i // 96
        if c == background or (wm[0] <= x <= wm[2] and wm[1] <= y <= wm[3]):
            continue
        counts[c] = counts.get(c, 0) + 1
        b = boxes.setdefault(c, [x, y, x, y])
        b[:] = [min(b[0], x), min(b[1], y), max(b[2], x), max(b[3], y)]
    found = []
    for c, n in counts.items():
        x0, y0, x1, y1 = boxes[c]
        if n < 40:
            continue
        fill = n / ((x1 - x0 + 1) * (y1 - y0 + 1))
        shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
        found.append((NAMES[c], shape))
    return tuple(sorted(found))
