"""The labelled set `imitatoes bench critic` measures a critic on: pictures of known content,
drawn with Pillow from a seed, each with requirement sentences whose truth is known, in the
categories of GenEval (one object, two objects, counting, colour, position, colour bound to
the right object) and ours (clean or noisy, a watermark or not); and pairs for head-to-head
where one image meets strictly more. Or a person's own labels (`--labels FILE.yaml`)."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imitatoes.errors import ImitatoesError
from imitatoes.standins import picture

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black",
           "white")
SHAPES = ("circle", "square", "triangle")
NUMBERS = {1: "one", 2: "two", 3: "three"}
SIZE = 256


class LabelsInvalid(ImitatoesError):
    exit_code = 2


@dataclass(frozen=True)
class Label:
    text: str  # a requirement, as a user would write it
    met: bool  # the truth


@dataclass(frozen=True)
class Case:
    key: str
    category: str
    image: bytes
    labels: tuple[Label, ...]


@dataclass(frozen=True)
class Pair:
    key: str
    first: bytes
    second: bytes
    better: str  # "first" or "second": the one that meets strictly more
    requirements: tuple[str, ...]


def made(n: int, seed: int) -> tuple[list[Case], list[Pair]]:
    """n pictures, spread over the categories in turn, and n // 4 pairs; the same for the same
    n and seed. Each picture's sentences are balanced: as many met as unmet."""
    rng = random.Random(seed)
    kinds = list(CATEGORIES.items())
    cases = [Case(f"{name.replace(' ', '_')}_{i:03d}", name, *draw(rng))
             for i in range(n) for name, draw in [kinds[i % len(kinds)]]]
    return cases, [_pair(rng, i) for i in range(max(1, n // 4))]


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _png(scene: picture.Scene, seed: int) -> bytes:
    out = io.BytesIO()
    picture.paint(scene, SIZE, SIZE, seed).save(out, "PNG")
    return out.getvalue()


def _two(rng: random.Random) -> tuple[tuple[str, str], tuple[str, str], str]:
    """Two different shapes in two different colours, and a background unlike both."""
    c1, c2 = rng.sample(COLOURS, 2)
    s1, s2 = rng.sample(SHAPES, 2)
    background = rng.choice([c for c in ("gray", "brown", "green", "blue") if c not in (c1, c2)])
    return (c1, s1), (c2, s2), background


def _scene(background: str, shapes: tuple[tuple[str, str], ...], watermark: bool = False,
           noise: float = 0.0) -> picture.Scene:
    return picture.Scene(background, shapes, watermark, noise, False)


def _one_object(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c, s), _, bg = _two(rng)
    other = rng.choice([x for x in SHAPES if x != s])
    return _png(_scene(bg, ((c, s),)), rng.randrange(2**16)), (
        Label(f"There is a {s}", True), Label(f"There is a {other}", False))


def _two_objects(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c1, s1), (c2, s2), bg = _two(rng)
    missing = next(x for x in SHAPES if x not in (s1, s2))
    return _png(_scene(bg, ((c1, s1), (c2, s2))), rng.randrange(2**16)), (
        Label(f"{_a(s1).capitalize()} and {_a(s2)}", True),
        Label(f"{_a(s1).capitalize()} and {_a(missing)}", False))


def _counting(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c, s), _, bg = _two(rng)
    n = rng.choice((1, 2, 3))
    wrong = rng.choice([m for m in NUMBERS if m != n])
    plural = {1: s, 2: f"{s}s", 3: f"{s}s"}
    return _png(_scene(bg, ((c, s),) * n), rng.randrange(2**16)), (
        Label(f"Exactly {NUMBERS[n]} {plural[n]}", True),
        Label(f"Exactly {NUMBERS[wrong]} {plural[wrong]}", False))


def _colour(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c, s), (other, _), bg = _two(rng)
    return _png(_scene(bg, ((c, s),)), rng.randrange(2**16)), (
        Label(f"The {s} is {c}", True), Label(f"The {s} is {other}", False))


def _position(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c1, s1), (c2, s2), bg = _two(rng)  # drawn left to right
    return _png(_scene(bg, ((c1, s1), (c2, s2))), rng.randrange(2**16)), (
        Label(f"The {c1} {s1} is left of the {c2} {s2}", True),
        Label(f"The {c1} {s1} is right of the {c2} {s2}", False))


def _binding(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c1, s1), (c2, s2), bg = _two(rng)
    return _png(_scene(bg, ((c1, s1), (c2, s2))), rng.randrange(2**16)), (
        Label(f"{_a(c1).capitalize()} {s1} and {_a(c2)} {s2}", True),
        Label(f"{_a(c2).capitalize()} {s1} and {_a(c1)} {s2}", False))


def _presence(rng: random.Random, s: str, truth: bool) -> Label:
    """A second sentence that balances the first: the shape that is there, or one that is not."""
    other = rng.choice([x for x in SHAPES if x != s])
    return Label(f"There is a {s}", True) if truth else Label(f"There is a {other}", False)


def _clean(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c, s), _, bg = _two(rng)
    noisy = rng.random() < 0.5
    return _png(_scene(bg, ((c, s),), noise=0.4 if noisy else 0.0), rng.randrange(2**16)), (
        Label("Sharp and clean, no noise", not noisy), _presence(rng, s, noisy))


def _watermark(rng: random.Random) -> tuple[bytes, tuple[Label, ...]]:
    (c, s), _, bg = _two(rng)
    marked = rng.random() < 0.5
    return _png(_scene(bg, ((c, s),), watermark=marked), rng.randrange(2**16)), (
        Label("No watermark or text", not marked), _presence(rng, s, marked))


CATEGORIES = {"one object": _one_object, "two objects": _two_objects, "counting": _counting,
              "colour": _colour, "position": _position, "colour binding": _binding,
              "clean": _clean, "watermark": _watermark}


def _pair(rng: random.Random, i: int) -> Pair:
    """Two pictures for one checklist: one meets all three, the other misses one."""
    (c, s), _, bg = _two(rng)
    requirements = (f"{_a(c).capitalize()} {s}", f"The background is {bg}",
                    "No watermark or text")
    seed = rng.randrange(2**16)
    good = _png(_scene(bg, ((c, s),)), seed)
    flaw = rng.choice(("watermark", "background", "shape"))
    other_bg = next(x for x in ("gray", "brown", "green", "blue") if x not in (bg, c))
    bad = _png(_scene(other_bg if flaw == "background" else bg,
                      () if flaw == "shape" else ((c, s),), watermark=flaw == "watermark"), seed)
    first_good = rng.random() < 0.5
    return Pair(f"pair_{i:03d}", good if first_good else bad, bad if first_good else good,
                "first" if first_good else "second", requirements)


def from_labels(path: Path) -> tuple[list[Case], list[Pair]]:
    """A person's own labelled images (the format is in docs/bench.md)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabelsInvalid(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LabelsInvalid(f"{path}: expected a mapping with a list under 'images' (see "
                            "docs/bench.md)")
    cases = [_case(path, n, d) for n, d in enumerate(data["images"])]
    pairs = [_labelled_pair(path, n, d) for n, d in enumerate(data.get("pairs") or [])]
    return cases, pairs


def _case(path: Path, n: int, d: Any) -> Case:
    where = f"{path}: images[{n}]"
    if not isinstance(d, dict) or not isinstance(d.get("requirements"), list) or \
            not d["requirements"]:
        raise LabelsInvalid(f"{where}: needs image and a list of requirements")
    labels = []
    for m, r in enumerate(d["requirements"]):
        if not (isinstance(r, dict) and isinstance(r.get("text"), str)
                and isinstance(r.get("met"), bool)):
            raise LabelsInvalid(f"{where}.requirements[{m}]: write {{text: ..., met: true}} "
                                "or met: false")
        labels.append(Label(r["text"], r["met"]))
    return Case(f"image_{n:03d}", str(d.get("category") or "yours"),
                _image(path, d.get("image"), where), tuple(labels))


def _labelled_pair(path: Path, n: int, d: Any) -> Pair:
    where = f"{path}: pairs[{n}]"
    if not (isinstance(d, dict) and d.get("better") in ("first", "second")
            and isinstance(d.get("requirements"), list)):
        raise LabelsInvalid(f"{where}: needs first, second, better (first or second) and "
                            "requirements")
    return Pair(f"pair_{n:03d}", _image(path, d.get("first"), where),
                _image(path, d.get("second"), where), d["better"],
                tuple(str(r) for r in d["requirements"]))


def _image(path: Path, name: Any, where: str) -> bytes:
    if not isinstance(name, str):
        raise LabelsInvalid(f"{where}: an image path is needed")
    try:
        return (path.parent / name).read_bytes()
    except OSError as exc:
        raise LabelsInvalid(f"{where}: cannot read {name}: {exc.strerror}") from None


def all_labels(cases: list[Case]) -> Iterator[tuple[Case, Label]]:
    for case in cases:
        for label in case.labels:
            yield case, label
