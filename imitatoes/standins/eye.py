"""The Ollama stand-in's "vision model": it reads the checklist out of the critic prompt, looks
at the pixels (picture.look) and answers the verdict a careful critic would: requirement by
requirement, then one targeted change. Deterministic: the same image gets the same verdict."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from . import picture

NEGATIONS = {"no", "without", "free", "not", "never"}
CLEAN_WORDS = {"sharp", "clean", "noise", "noisy", "grain", "grainy", "crisp", "detailed"}
VIVID_WORDS = {"vivid", "saturated", "colourful", "colorful", "bright", "vibrant"}
# It can count to one and cannot tell where things are: such requirements are not judged.
COUNTS = {"two", "three", "four", "five", "exactly", "several", "many", "both", "pair"}
PLACES = {"left", "right", "above", "below", "beside", "top", "bottom", "under", "over",
          "centre", "center", "centred", "centered", "middle", "behind", "front"}
NOT_JUDGED = ("not judged: the stand-in sees only colours, shapes, noise and watermarks, not "
              "this (nor counts or places)")


@dataclass(frozen=True)
class Fix:
    rank: int  # lower goes first: noise, then colour strength, then content, then cleanup
    prompt: str = ""
    negative: str = ""
    steps: int = 0  # added to the current steps
    cfg: float = 0.0  # added to the current cfg


def requirements_in(text: str) -> list[str]:
    """The first run of numbered lines in the critic prompt ("1. A red circle"): the checklist."""
    found: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^\s*\d+[.)]\s+(.+)$", line)
        if m:
            found.append(m.group(1).strip())
        elif found:
            break
    return found


def number_after(label: str, text: str, default: float) -> float:
    m = re.search(rf"\b{label}:\s*(-?[0-9.]+)", text)
    try:
        return float(m.group(1)) if m else default
    except ValueError:
        return default


def _line_after(label: str, text: str) -> str:
    m = re.search(rf"(?m)^\W*{label}:\s*(.*)$", text)
    return m.group(1).lower() if m else ""


def check(requirement: str, seen: picture.Seen) -> tuple[bool, str, Fix | None]:
    w = picture.words(requirement)
    if set(w) & (COUNTS | PLACES) or re.search(r"\b[2-9]\b", requirement):
        return False, NOT_JUDGED, None
    negated = bool(NEGATIONS & set(w))
    colours = [("gray" if c == "grey" else c) for c in w if c in picture.COLOURS]
    if negated and set(w) & set(picture.WATERMARK_WORDS):
        return (not seen.watermark, "a watermark sits in the bottom-right corner"
                if seen.watermark else "no watermark or text", Fix(3, negative="watermark, text"))
    if set(w) & CLEAN_WORDS:
        return (not seen.noisy, "the image is grainy with noise" if seen.noisy
                else "the image is clean", Fix(0, steps=10))
    if set(w) & VIVID_WORDS:
        return (not seen.washed, "the colours are washed out" if seen.washed
                else "the colours are strong", Fix(1, cfg=1.5))
    if set(w) & set(picture.BACKGROUND_WORDS) and colours:
        want = colours[-1]
        return (seen.background == want, f"the background is {seen.background}",
                Fix(2, prompt=f"{want} background"))
    named = [shape for shape in picture.SHAPES if shape in w or f"{shape}s" in w]
    if len(named) > 1:  # "a red circle and a blue square": every one, each in its colour
        wanted = picture.scene_from(requirement, "", picture.CLEAN_STEPS, 7.0).shapes
        met = all(any(s == shape and (not colour or c == colour) for c, s in seen.shapes)
                  for colour, shape in wanted)
        seen_text = ", ".join(f"{c} {s}" for c, s in seen.shapes) or "no shapes"
        first = next((f"{c} {s}".strip() for c, s in wanted
                      if not any(x == s and (not c or y == c) for y, x in seen.shapes)), "")
        return met, f"I see: {seen_text}", Fix(2, prompt=first) if first else None
    for shape in named:
        if shape in w or f"{shape}s" in w:
            found = [c for c, s in seen.shapes if s == shape]
            want = colours[0] if colours else ""
            met = want in found if want else bool(found)
            seen_text = ", ".join(f"{c} {s}" for c, s in seen.shapes) or "no shapes"
            return met, f"I see: {seen_text}", Fix(2, prompt=f"{want} {shape}".strip())
    # Honest about what it cannot see: never "met" on faith, so a run on the stand-ins claims
    # no more than they saw (a red fox on a flat grey image was once done at render 1).
    return False, NOT_JUDGED, None


def judge(image: bytes, prompt_text: str, edits: bool = True) -> dict[str, Any]:
    """The verdict; `edits` False: a critic that only adds (as before prompt_remove,
    prompt_weight and prompt_rewrite), for benchmarks/edits.py."""
    seen = picture.look(Image.open(io.BytesIO(image)))
    checklist, fixes = [], []
    for i, requirement in enumerate(requirements_in(prompt_text)):
        met, observation, fix = check(requirement, seen)
        checklist.append({"requirement": requirement, "met": met, "observation": observation})
        if not met and fix:
            fixes.append((fix.rank, i, fix, requirement, observation))
    done = all(item["met"] for item in checklist)
    changes = {"prompt_append": "", "neg_append": "", "cfg": None, "steps": None, "seed": "keep"}
    reason = "Every requirement holds." if done else "Some requirements do not hold."
    if not done:
        if seen.noisy:  # noise hides everything else: fix it first
            fixes.insert(0, (-1, -1, Fix(0, steps=10), "a clean image", "the image is noisy"))
        _, _, fix, requirement, observation = min(fixes, key=lambda f: (f[0], f[1])) if fixes \
            else (0, 0, Fix(9), "", "")
        changes.update(prompt_append=fix.prompt, neg_append=fix.negative)
        taken = _edits(fix, prompt_text) if edits else {}
        if taken:
            changes.update(taken)
        elif fix.prompt and fix.prompt in _line_after("prompt", prompt_text):
            # asked for already and still missing: this seed will not give it, try another
            changes.update(prompt_append="", seed="new")
        if fix.steps:
            changes["steps"] = int(number_after("steps", prompt_text, 20)) + fix.steps
        if fix.cfg:
            changes["cfg"] = round(number_after("cfg", prompt_text, 7.0) + fix.cfg, 2)
        reason = f"Not yet: {requirement.rstrip('.')} ({observation})."
    ranked = sorted(fixes, key=lambda f: (f[0], f[1]))
    alternatives = [_as_changes(f[2], prompt_text) for f in ranked if f[2] != fix][:3] \
        if not done else []
    if not done and changes.get("prompt_remove") and fix.prompt in _terms(prompt_text):
        # the wanted words are there, outweighed: weighting them is the other way
        alternatives.insert(0, {**_as_changes(Fix(9), prompt_text), "prompt_weight": {
            "term": fix.prompt, "weight": 1.3}})
    return {"checklist": checklist, "done": done, "changes": changes, "reason": reason,
            "alternatives": alternatives}


def _as_changes(fix: Fix, prompt_text: str) -> dict[str, Any]:
    """Another fix, in the verdict's shape (search.proposals asks for these)."""
    return {"prompt_append": fix.prompt, "neg_append": fix.negative,
            "steps": int(number_after("steps", prompt_text, 20)) + fix.steps if fix.steps
            else None,
            "cfg": round(number_after("cfg", prompt_text, 7.0) + fix.cfg, 2) if fix.cfg else None,
            "seed": "keep"}


def _terms(prompt_text: str) -> list[str]:
    """The prompt's terms as the critic prompt shows them, without weights, lower case."""
    out = []
    for term in _line_after("prompt", prompt_text).split(","):
        m = picture.WEIGHTED.match(term.strip())
        out.append((m.group(1) if m else term).strip())
    return [t for t in out if t]


def _edits(fix: Fix, prompt_text: str) -> dict[str, Any]:
    """Edits that take away: a background of another colour already in the prompt is taken
    out (adding the right one changes nothing while it is there); a prompt with no room for
    the fix is rewritten from what the checklist asks."""
    want = fix.prompt
    terms = _terms(prompt_text)
    if want.endswith(" background"):
        wrong = [t for t in terms if t.endswith("background") and t != want and
                 set(picture.words(t)) & set(picture.COLOURS)]
        if wrong:
            return {"prompt_remove": ", ".join(wrong),
                    "prompt_append": "" if want in terms else want}
    room = re.search(r"the prompt at most (\d+) characters", prompt_text)
    if want and room and len(", ".join(terms)) + len(want) + 2 > int(room.group(1)):
        wanted = [check(r, picture.Seen(None, (), False, False, False))[2]
                  for r in requirements_in(prompt_text)]
        words = [f.prompt for f in wanted if f and f.prompt]
        return {"prompt_append": "", "prompt_rewrite": ", ".join([*words, "simple poster"])}
    return {}


def first_term(prompt_text: str) -> str:
    """The prompt's first term (what a careless edit takes out)."""
    return next(iter(_terms(prompt_text)), "")
