"""Knobs: named widgets beyond the five built-in parameters that the critic may tune (a
sampler name, denoise, a LoRA strength). Declared in the spec with bounds; every change the
critic asks for is clamped, rounded to the knob's step or refused here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imitatoes.workflow import api as workflow
from imitatoes.workflow import nodecheck

TYPES = ("number", "integer", "choice", "text")
TEXT_MAX_CHARS = 300
# Names a knob may not take: the built-in parameters and the other keys of `changes`.
RESERVED = frozenset({"prompt", "negative", "cfg", "steps", "seed", "prompt_append",
                      "neg_append", "prompt_remove", "neg_remove", "prompt_weight",
                      "prompt_rewrite"})


@dataclass(frozen=True)
class Knob:
    name: str
    targets: tuple[str, ...]  # node paths ("3.inputs.denoise") or tokens ("__DENOISE__")
    type: str  # number | integer | choice | text
    start: Any
    min: float | None = None
    max: float | None = None
    max_delta: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    max_chars: int = TEXT_MAX_CHARS

    def describe(self) -> str:
        """The knob's bounds in words, for the critic and the docs."""
        if self.type == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.type == "text":
            return f"text of at most {self.max_chars} characters"
        kind = "whole number" if self.type == "integer" else "number"
        out = f"{kind} {shown(self.min)} to {shown(self.max)}"
        if self.max_delta is not None:
            out += f", at most {shown(self.max_delta)} per round"
        if self.step is not None:
            out += f", in steps of {shown(self.step)}"
        return out


def shown(value: Any) -> str:
    """A knob value as a person reads it: 0.8, 7 (not 7.0), 1048576 (not 1.04858e+06)."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.10g}"  # patches round to 10 places: nothing is lost
    return str(value)


def kind_of(d: Mapping[str, Any]) -> str:
    """A knob's type: as written, else choice when it has choices, else number."""
    return d.get("type") or ("choice" if "choices" in d else "number")


def targets_of(d: Mapping[str, Any]) -> tuple[str, ...]:
    path = d.get("path")
    return (path,) if isinstance(path, str) else tuple(path or ())


def start_of(d: Mapping[str, Any], flow: Mapping[str, Any]) -> Any:
    """The start value: as written, else the workflow's own value at the first node path."""
    if "start" in d:
        return d["start"]
    for target in targets_of(d):
        value = workflow.value_at(flow, target)
        # A link (a list) or a token holds no value of its own.
        if value is not None and not isinstance(value, list) and \
                not (isinstance(value, str) and workflow.TOKEN.fullmatch(value)):
            return value
    return None


def build(data: Mapping[str, Mapping[str, Any]], flow: Mapping[str, Any]) -> tuple[Knob, ...]:
    out = []
    for name, d in data.items():
        kind = kind_of(d)
        start = start_of(d, flow)
        numeric = kind in ("number", "integer")
        out.append(Knob(
            name, targets_of(d), kind, _typed(kind, start),
            min=float(d["min"]) if numeric else None, max=float(d["max"]) if numeric else None,
            max_delta=float(d["max_delta"]) if "max_delta" in d else None,
            step=float(d["step"]) if "step" in d else (1.0 if kind == "integer" else None),
            choices=tuple(d.get("choices", ())), max_chars=d.get("max_chars", TEXT_MAX_CHARS)))
    return tuple(out)


def _typed(kind: str, value: Any) -> Any:
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    return value


def problems(data: Mapping[str, Mapping[str, Any]], flow: Mapping[str, Any],
             bound: Sequence[str]) -> list[tuple[tuple, str]]:
    """(where inside `knobs`, what is wrong) for each knob that cannot work as declared."""
    out: list[tuple[tuple, str]] = []
    found = workflow.tokens(flow)
    seen: dict[str, str] = {}
    for name, d in data.items():
        if name in RESERVED:
            out.append(((name,), f"{name!r} is a built-in parameter; bind it under bindings "
                        "and bound it under bounds"))
            continue
        out += [((name, *w), why) for w, why in _shape_problems(d)]
        for n, target in enumerate(targets_of(d)):
            where = (name, "path") if isinstance(d.get("path"), str) else (name, "path", n)
            why = _target_problem(flow, found, target, kind_of(d))
            held = workflow.value_at(flow, target)
            if not why and (target in bound or held in bound):
                also = target if target in bound else f"{target} holds {held}, which"
                why = f"{also} is also under bindings; a value can have one owner"
            if not why and target in seen:
                why = f"{target} is also knob {seen[target]!r}'s"
            seen.setdefault(target, name)
            if why:
                out.append((where, why))
        out += [((name, *w), why) for w, why in _start_problems(d, flow)]
    return out


def _shape_problems(d: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    kind = kind_of(d)
    if kind == "choice":
        return [] if d.get("choices") else [(("choices",), "a choice knob needs choices")]
    if kind == "text":
        return []
    missing = [k for k in ("min", "max") if k not in d]
    if missing:
        article = "an" if kind == "integer" else "a"
        return [((), f"{article} {kind} knob needs min and max (the critic is not trusted "
                 f"with an open range); missing: {', '.join(missing)}")]
    if d["min"] > d["max"]:
        return [(("min",), f"min {d['min']} is bigger than max {d['max']}")]
    return []


def _target_problem(flow: Mapping[str, Any], found: set[str], target: str, kind: str) -> str:
    if workflow.TOKEN.fullmatch(target):
        return "" if target in found else f"{target} does not occur in the workflow"
    if workflow.node_input(flow, target) is None:
        return f"{target!r} is neither a token like __DENOISE__ nor a node path like " \
               "3.inputs.denoise"
    why = workflow.node_path_problem(flow, target)
    if why:
        return why
    value = workflow.value_at(flow, target)
    if isinstance(value, list):
        return f"{target} is a link from node {value[0] if value else '?'}, not a value"
    if kind in ("number", "integer") and isinstance(value, str) and \
            not workflow.TOKEN.fullmatch(value):
        return f"{target} holds text ({value[:40]!r}), but the knob is a {kind}"
    if kind == "text" and finite_number(value):
        return f"{target} holds a number ({value}), but the knob is text"
    return ""


def _start_problems(d: Mapping[str, Any], flow: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    kind = kind_of(d)
    start = start_of(d, flow)
    where = ("start",) if "start" in d else ()
    what = "start" if "start" in d else "the workflow's value"
    if start is None:
        return [(where, "no start value: its path holds none of its own (a token or a "
                 "link); give start")]
    if kind == "choice":
        choices = d.get("choices") or []
        return [] if not choices or start in choices else \
            [(where, f"{what} {start!r} is not one of the choices")]
    if kind == "text":
        return [] if isinstance(start, str) else [(where, f"{what} {start!r} is not text")]
    if not finite_number(start) or (kind == "integer" and not _as_float(start).is_integer()):
        return [(where, f"{what} {start!r} is not a {'whole ' if kind == 'integer' else ''}"
                 "number")]
    if "min" in d and "max" in d and d["min"] <= d["max"] and \
            not d["min"] <= start <= d["max"]:
        return [(where, f"{what} {start} is outside {d['min']} to {d['max']}; give start")]
    return []


def finite_number(value: Any) -> bool:
    """A finite number (an int of any size is finite; math.isfinite would overflow on it)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # a 400-digit int from the critic: beyond any bound
        return math.inf if value > 0 else -math.inf


@dataclass(frozen=True)
class Moved:
    value: Any
    applied: str  # "" when nothing changed
    refused: str  # "" when nothing was refused


def change(knob: Knob, current: Any, asked: Any) -> Moved:
    """The knob's next value when the critic asks for `asked`: clamped to the bounds, at
    most max_delta away, rounded to the step; refused when it cannot be made to fit."""
    if knob.type == "choice":
        if asked not in knob.choices:
            return Moved(current, "", f"not one of {', '.join(map(str, knob.choices))}")
        return Moved(asked, _said(knob.name, current, asked), "")
    if knob.type == "text":
        if not isinstance(asked, str) or not asked.strip():
            return Moved(current, "", "not a text")
        if len(asked) > knob.max_chars:
            return Moved(current, "", f"more than {knob.max_chars} characters")
        return Moved(asked.strip(), _said(knob.name, current, asked.strip()), "")
    if not finite_number(asked):
        return Moved(current, "", "not a finite number")
    assert knob.min is not None and knob.max is not None
    target = min(max(_as_float(asked), knob.min), knob.max)
    if knob.max_delta is not None:
        target = min(max(target, current - knob.max_delta), current + knob.max_delta)
    target = _on_step(knob, target)
    value = int(round(target)) if knob.type == "integer" else target
    why = ""
    if value != asked:
        why = (f"outside {knob.min:g}..{knob.max:g}" if not knob.min <= asked <= knob.max
               else f"more than {knob.max_delta:g} from {current:g}"
               if knob.max_delta is not None and abs(asked - current) > knob.max_delta
               else f"not on a step of {knob.step:g}")
        why += f"; {'clamped' if 'step' not in why else 'rounded'} to {value:g}"
    return Moved(value, _said(knob.name, current, value), why)


def _on_step(knob: Knob, value: float) -> float:
    """The nearest value on the knob's grid (min + n * step) that stays inside the bounds."""
    if not knob.step:
        return round(value, 10)  # 0.8 - 0.2 is 0.6000000000000001; the widget wants 0.6
    assert knob.min is not None and knob.max is not None
    base = knob.min
    n = round((value - base) / knob.step)
    out = base + n * knob.step
    if out > knob.max + 1e-9:
        out -= knob.step
    return round(out, 10)


def _said(name: str, old: Any, new: Any) -> str:
    if old == new:
        return ""
    return f"{name} {_show(old)} -> {_show(new)}"


def _show(value: Any) -> str:
    return f"{value:g}" if finite_number(value) else repr(value) if isinstance(value, str) and \
        (" " in value or not value) else str(value)


def within(knob: Knob, value: Any) -> Any:
    """A saved value under the knob as it is now (edited bounds on resume)."""
    if knob.type == "choice":
        return value if value in knob.choices else knob.start
    if knob.type == "text":
        return value if isinstance(value, str) and len(value) <= knob.max_chars else knob.start
    if not finite_number(value):
        return knob.start
    assert knob.min is not None and knob.max is not None
    value = _on_step(knob, min(max(_as_float(value), knob.min), knob.max))
    return int(round(value)) if knob.type == "integer" else value


def schema_property(knob: Knob) -> dict[str, Any]:
    """The knob in the verdict schema sent as Ollama's `format`: its type and bounds, or
    null for no change."""
    if knob.type == "choice":
        return {"enum": [*knob.choices, None], "description": f"{knob.describe()}, or null"}
    if knob.type == "text":
        return {"type": ["string", "null"], "maxLength": knob.max_chars,
                "description": "the new text, or null"}
    kind = "integer" if knob.type == "integer" else "number"
    return {"type": [kind, "null"], "minimum": knob.min, "maximum": knob.max,
            "description": f"{knob.describe()}, or null for no change"}


def server_problems(knobs: Sequence[Knob], workflow: Mapping[str, Any],
                  info: Mapping[str, Any]) -> list[str]:
    """Each knob against the inputs it lands in: a choice the node does not offer, a range
    past the widget's, a number knob on a whole-number input, a choice on a number."""
    out = []
    for knob in knobs:
        for node_id, name in nodecheck.landing(workflow, knob.targets):
            cls = str(workflow[node_id].get("class_type"))
            config = nodecheck.input_config(info.get(cls) or {}, name)
            if config is None:
                continue
            found = _fit(knob, config)
            if found:
                out.append(f"knob {knob.name} -> node {node_id} ({cls}) {name}: {found}")
    return out


def _fit(knob: Knob, config: list[Any]) -> str:
    choices = nodecheck.combo_options(config)
    if knob.type == "choice":
        if choices is None:
            return f"the input is {config[0]}, not a list of choices"
        missing = [str(c) for c in knob.choices if c not in choices]
        return f"this ComfyUI does not offer {', '.join(missing)}" if missing else ""
    if knob.type == "text":
        return "" if config[0] == "STRING" else f"the input is {config[0]}, not text"
    if config[0] not in ("INT", "FLOAT"):
        return f"the input is {config[0] if choices is None else 'a choice'}, not a number"
    if config[0] == "INT" and knob.type == "number" and not (
            knob.step and float(knob.step).is_integer() and float(knob.min or 0).is_integer()):
        return "the input takes whole numbers: make the knob type integer"
    extra = nodecheck.limits(config)
    if "min" in extra and knob.min is not None and knob.min < extra["min"]:
        return f"knob min {knob.min:g} is below the input's minimum {extra['min']:g}"
    if "max" in extra and knob.max is not None and knob.max > extra["max"]:
        return f"knob max {knob.max:g} is above the input's maximum {extra['max']:g}"
    return ""
