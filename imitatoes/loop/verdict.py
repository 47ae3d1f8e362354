"""The critic's verdict: parsed, repaired where that is safe, validated, and scored in code."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonschema

if TYPE_CHECKING:
    from PIL import Image

from imitatoes.errors import ImitatoesError
from imitatoes.spec.knobs import Knob, schema_property

FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
CHANGE_DEFAULTS = {"prompt_append": "", "neg_append": "", "cfg": None, "steps": None,
                   "seed": "keep"}
# Edits that take away or reshape, optional in an answer (loop/patch.py bounds them).
EDIT_DEFAULTS = {"prompt_remove": "", "neg_remove": "", "prompt_weight": None,
                 "prompt_rewrite": ""}


class VerdictInvalid(ImitatoesError):
    """The answer is not a verdict; the message is what the critic is told on a retry."""


@cache
def schema() -> dict[str, Any]:
    text = resources.files("imitatoes").joinpath("schemas/verdict.schema.json").read_text("utf-8")
    return json.loads(text)


REGION = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1000},
          "minItems": 4, "maxItems": 4,
          "description": "[x0, y0, x1, y1] in 0-1000 coordinates: where the requirement fails"}


def schema_for(checklist: Sequence[str], knobs: Sequence[Knob] = (), regions: bool = False
               ) -> dict[str, Any]:
    """The verdict schema for one question: exactly one checklist entry per requirement, in
    order, each naming its requirement, so a model held to the schema (Ollama's `format`)
    cannot skip one or judge one it made up; `changes` names exactly the spec's knobs; with
    `regions` (refine.repair) an unmet item may say where it fails, and what belongs there."""
    out = copy.deepcopy(schema())
    item = out["properties"]["checklist"]["items"]
    if regions:
        item["properties"]["region"] = REGION
    else:
        for name in ("region", "fix"):
            del item["properties"][name]
    if knobs:
        changes = out["properties"]["changes"]
        changes["properties"].update({k.name: schema_property(k) for k in knobs})
        changes["required"] = [*changes["required"], *(k.name for k in knobs)]
    if not checklist:
        return out
    item = out["properties"]["checklist"]["items"]
    out["properties"]["checklist"] = {
        **{k: v for k, v in out["properties"]["checklist"].items() if k != "items"},
        "prefixItems": [{**item, "required": ["requirement", "met", "observation"],
                         "properties": {**item["properties"], "requirement": {"const": text}}}
                        for text in checklist],
        "items": False, "minItems": len(checklist), "maxItems": len(checklist)}
    out["required"] = ["checklist", *out["required"]]
    return out


PAIR_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["winner", "reason"],
    "properties": {"winner": {"enum": ["first", "second"]}, "reason": {"type": "string"}}}


def parse_pair(text: str) -> tuple[str, str]:
    """(winner, reason) of a head-to-head answer: which of two images meets the checklist
    better."""
    data = extract(text)
    errors = list(jsonschema.Draft202012Validator(PAIR_SCHEMA).iter_errors(data))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "the object"
        raise VerdictInvalid(f"{where}: {errors[0].message}")
    return data["winner"], data["reason"].strip()


@dataclass(frozen=True)
class Pairwise:
    """A head-to-head answer: "first", "second", or None when there was no usable one."""

    winner: str | None
    reason: str
    attempts: tuple[Attempt, ...]
    seconds: float


@dataclass(frozen=True)
class Changes:
    prompt_append: str = ""
    neg_append: str = ""
    cfg: float | None = None
    steps: int | None = None
    seed: str | int = "keep"
    knobs: tuple[tuple[str, Any], ...] = ()  # (name, value asked) for keys beyond the five
    prompt_remove: str = ""
    neg_remove: str = ""
    weight: tuple[str, float] | None = None  # (term, weight): (term:1.3) in the prompt
    rewrite: str = ""  # a whole new prompt


@dataclass(frozen=True)
class Check:
    requirement: str
    met: bool
    observation: str = ""
    region: Any = None  # as the critic gave it: [x0, y0, x1, y1] in 0-1000, unchecked
    fix: str = ""  # what should be in the region


@dataclass(frozen=True)
class Verdict:
    done: bool  # computed from the checklist when there is one, not taken on trust
    changes: Changes
    reason: str
    checklist: tuple[Check, ...] = ()
    score: float = 0.0
    claimed_done: bool = False  # what the model itself said
    alternatives: tuple[Changes, ...] = ()  # other changes worth trying (search.proposals)


def extract(text: str) -> Any:
    """The JSON object in an answer: bare, inside code fences, or with prose around it."""
    text = text.strip()
    if not text:
        raise VerdictInvalid("the answer was empty")
    decoder = json.JSONDecoder(parse_constant=_not_json)
    try:
        for candidate in [m.group(1) for m in FENCE.finditer(text)] + [text]:
            try:
                return decoder.decode(candidate.strip())
            except ValueError:
                pass
        for start in (m.start() for m in re.finditer(r"\{", text)):
            try:
                obj, _ = decoder.raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    except RecursionError:
        raise VerdictInvalid("the answer is nested too deeply to be a verdict") from None
    raise VerdictInvalid(f"there is no complete JSON object in the answer: {text[:120]!r}")


def _not_json(name: str) -> Any:
    """Python's parser takes NaN and Infinity; JSON does not, and a NaN score would win every
    comparison it is in."""
    raise VerdictInvalid(f"{name} is not a JSON number; give a finite number or null")


def parse(text: str) -> Verdict:
    data = extract(text)
    if not isinstance(data, dict):
        raise VerdictInvalid(f"the answer is JSON but not an object: {str(data)[:80]}")
    if isinstance(data.get("changes"), dict):  # a model that leaves out "no change" keys
        data["changes"] = {**CHANGE_DEFAULTS, **data["changes"]}
    if isinstance(data.get("alternatives"), list):
        data["alternatives"] = [{**CHANGE_DEFAULTS, **a} if isinstance(a, dict) else a
                                for a in data["alternatives"]]
    elif "changes" not in data and data.get("done") is True:
        data["changes"] = dict(CHANGE_DEFAULTS)
    asked = _knob_requests(data)
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data),
                    key=lambda e: list(e.absolute_path))
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path) or "the object"
        raise VerdictInvalid(f"{where}: {errors[0].message}")
    return build(data, asked)


def _knob_requests(data: dict[str, Any]) -> list[tuple[tuple[str, Any], ...]]:
    """Keys of `changes` (and of each alternative) beyond the five, taken out before the
    schema check: they name knobs, and whether the spec declares them is for the patch to
    decide (an unknown one is refused and recorded, not a reason to ask again)."""
    found = []
    for changes in [data.get("changes"), *(data.get("alternatives") or [])]:
        if not isinstance(changes, dict):
            found.append(())
            continue
        extra = [(k, changes.pop(k)) for k in list(changes)
                 if k not in CHANGE_DEFAULTS and k not in EDIT_DEFAULTS]
        found.append(tuple((k, v) for k, v in extra if v is not None))  # null: no change
    return found


def build(data: dict[str, Any], asked: Sequence[tuple[tuple[str, Any], ...]] = ()
          ) -> Verdict:
    asked = list(asked) + [()] * (1 + len(data.get("alternatives", [])) - len(asked))
    changes = replace(_changes(data["changes"], "changes"), knobs=asked[0])
    alternatives = tuple(replace(_changes(a, f"alternatives.{n}"), knobs=asked[n + 1])
                         for n, a in enumerate(data.get("alternatives", [])))
    checklist = tuple(Check(i["requirement"], i["met"], i.get("observation", ""),
                            i.get("region"), str(i.get("fix", "")).strip())
                      for i in data.get("checklist", []))
    if checklist:
        score = sum(ch.met for ch in checklist) / len(checklist)
        done = all(ch.met for ch in checklist)
    else:
        done = data["done"]
        score = _finite("score", data.get("score", 1.0 if done else 0.0))
    return Verdict(done, changes, data["reason"].strip(), checklist, score, data["done"],
                   alternatives)


def _changes(c: dict[str, Any], where: str) -> Changes:
    weight = c.get("prompt_weight")
    return Changes(c["prompt_append"].strip(), c["neg_append"].strip(),
                   None if c["cfg"] is None else _finite(f"{where}.cfg", c["cfg"]),
                   None if c["steps"] is None else
                   int(round(_finite(f"{where}.steps", c["steps"]))), c["seed"],
                   prompt_remove=(c.get("prompt_remove") or "").strip(),
                   neg_remove=(c.get("neg_remove") or "").strip(),
                   weight=(weight["term"].strip(), _finite(f"{where}.prompt_weight.weight",
                                                           weight["weight"]))
                   if weight else None, rewrite=(c.get("prompt_rewrite") or "").strip())


def _finite(where: str, value: float) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise VerdictInvalid(f"{where}: {str(value)[:40]} is not a finite number")
    return number


@dataclass(frozen=True)
class Prepared:
    data: bytes
    mime: str  # image/jpeg or image/png
    width: int
    height: int
    source_bytes: int
    # The shrunk picture itself, for listeners that want pixels (the report's thumbnail)
    # without decoding the JPEG again.
    picture: Image.Image | None = field(default=None, repr=False, compare=False)

    def base64(self) -> str:
        """Plain standard base64, as Ollama's `images` wants it (a data: prefix is a 400)."""
        return base64.b64encode(self.data).decode("ascii")

    def data_uri(self) -> str:
        """For OpenAI-compatible servers, which take only data URIs (no http URLs)."""
        return f"data:{self.mime};base64,{self.base64()}"


@dataclass(frozen=True)
class Attempt:
    """One answer from the model, kept for the run log whether it parsed or not."""

    content: str
    thinking: str = ""
    error: str = ""  # why it was not accepted, "" when it was
    stats: dict[str, Any] = field(default_factory=dict)  # durations and token counts


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict | None  # None: no valid verdict after every retry
    attempts: tuple[Attempt, ...]
    image: Prepared
    seconds: float

    @property
    def error(self) -> str:
        return "" if self.verdict else (self.attempts[-1].error if self.attempts else "no answer")
