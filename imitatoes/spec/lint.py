"""Every problem in a goal spec, located: JSON Schema first, then what a schema cannot say."""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from imitatoes import files as specfiles
from imitatoes.errors import Problem, WorkflowError
from imitatoes.spec import knobs, template
from imitatoes.spec.yamldoc import Document
from imitatoes.workflow import api as workflow
from imitatoes.workflow.refine_graph import RefineGraph, graph


@cache
def schema() -> dict[str, Any]:
    text = resources.files("imitatoes").joinpath("schemas/goal-spec.schema.json").read_text("utf-8")
    return json.loads(text)


def check(doc: Document) -> list[Problem]:
    """All problems of the document, sorted by position (best first: the order you read them)."""
    errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(doc.data))
    bad_numbers = non_finite(doc, doc.data, ())
    bad_where = {p.where for p in bad_numbers}  # one message for a NaN, not three
    problems = list(doc.duplicates) + [p for e in errors for p in _explain(doc, e)
                                       if p.where not in bad_where]
    # Semantic checks run on every part the schema found sound, so one typo hides nothing else.
    broken = {_top_key(e) for e in errors} | {p.where.split(".")[0] for p in bad_numbers}
    problems += bad_numbers + semantic_problems(doc, with_defaults(doc.data), broken)
    return _at_most(sorted(problems, key=lambda p: (p.origin != "", p.line, p.col, p.where)))


MAX_PROBLEMS = 50  # past this, a reader fixes the first ones and runs validate again


def _at_most(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    last = problems[MAX_PROBLEMS - 1]
    rest = len(problems) - MAX_PROBLEMS + 1
    return problems[:MAX_PROBLEMS - 1] + [Problem(last.file, "", f"... and {rest:,} more "
                                                  "problems; fix these and validate again")]


def with_defaults(data: dict[str, Any], node: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `data` with the schema's defaults filled in, so defaults live in one place."""
    node = node or schema()
    out = copy.deepcopy(data)
    for name, sub in node.get("properties", {}).items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if isinstance(out.get(name), dict) and "properties" in sub:
            out[name] = with_defaults(out[name], sub)
    return out


def _top_key(error: jsonschema.ValidationError) -> str:
    """The part of the spec an error breaks: a top-level key, or knobs.NAME for one knob (the
    other knobs are still checked)."""
    path = list(error.absolute_path)
    if path[:1] == ["knobs"]:
        name = path[1] if len(path) > 1 else error.instance
        return f"knobs.{name}" if isinstance(name, str) else "knobs"
    if path:
        return str(path[0])
    if error.validator == "required":
        return error.message.split("'")[1]
    return ""


def _explain(doc: Document, error: jsonschema.ValidationError) -> list[Problem]:
    where = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [doc.problem((*where, k), f"unknown key {k!r}{_did_you_mean(k, allowed)}", key=True)
                for k in extra]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [doc.problem(where, f"missing required key {missing!r}", key=True)]
    if "propertyNames" in error.relative_schema_path:  # a key, not a value, is wrong
        name = error.instance
        why = NAME_RULES.get(where, _message(error))
        return [doc.problem((*where, name), f"{name!r}: {why}", key=True)]
    if error.validator == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return [doc.problem(where, f"{error.instance!r} is not one of: {choices}")]
    if error.validator == "pattern" and where == ("name",):
        return [doc.problem(where, "use letters, digits, '.', '_' and '-' only (it names run "
                            "folders), starting with a letter or digit, at most 80 characters")]
    if error.validator == "pattern" and where == ("memory",):
        return [doc.problem(where, "a memory store is a .jsonl file (true: your own store, "
                            "false: none)")]
    return [doc.problem(where, _message(error))]


NAME_RULES = {
    ("bindings",): "neither a token like __PROMPT__ nor a node path like 6.inputs.text",
    ("knobs",): "a knob's name is lowercase letters, digits and _, starting with a letter "
                "(at most 40 characters)"}


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, with a long value (10,000 requirements) summarised."""
    message = error.message
    if len(message) > 200:
        message = message.replace(repr(error.instance), _summary(error.instance))
    return message if len(message) <= 200 else message[:197] + "..."


def _summary(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value):,} items"
    if isinstance(value, dict):
        return f"a mapping of {len(value):,} keys"
    if isinstance(value, str):
        return f"a text of {len(value):,} characters"
    return type(value).__name__


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(choices)}"


def non_finite(doc: Document, value: Any, where: tuple) -> list[Problem]:
    """NaN and infinity slip through JSON Schema's comparisons; refuse them explicitly."""
    if isinstance(value, float) and not math.isfinite(value):
        return [doc.problem(where, f"{value} is not a finite number")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(doc, v, (*where, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_finite(doc, v, (*where, i))]
    return []


def read_workflow(doc: Document, path: Path) -> dict[str, Any]:
    """The workflow file at `path`, read once however many checks ask (WorkflowError when it
    cannot be, every time it is asked)."""
    return _once(doc, ("workflow", path), lambda: workflow.load(path))


def refine_graph(doc: Document, source: dict[str, Any], path: Path | None) -> RefineGraph:
    """The refine graph made from `source` (the refine workflow at `path`, or the spec's own
    when None), built once."""
    return _once(doc, ("refine graph", path), lambda: graph(source))


def _once(doc: Document, key: Any, make: Callable[[], Any]) -> Any:
    if key not in doc.read:
        try:
            doc.read[key] = make()
        except WorkflowError as exc:
            doc.read[key] = exc
    found = doc.read[key]
    if isinstance(found, WorkflowError):
        raise found
    return found


def semantic_problems(doc: Document, spec: dict[str, Any], broken: set[str]) -> list[Problem]:
    spec_dir = doc.path.parent
    out = []
    if not broken & {"start", "bounds"}:
        out += _bound_problems(doc, spec)
    if "critic" not in broken:
        out += _template_problems(doc, spec, spec_dir)
    if broken & {"workflow", "bindings"}:
        return out
    path = specfiles.relative_path(spec_dir, spec["workflow"])
    refused = _outside(doc, path)
    if refused:
        return out + [doc.problem(("workflow",), refused)]
    try:
        flow = read_workflow(doc, path)
    except WorkflowError as exc:
        return out + [doc.problem(("workflow",), str(exc))]
    out += _binding_problems(doc, spec, flow)
    if spec.get("refine") and "refine" not in broken:
        out += _refine_problems(doc, spec, flow)
    if "knobs" not in broken:
        sound = {name: d for name, d in spec["knobs"].items() if f"knobs.{name}" not in broken}
        out += [doc.problem(("knobs", *where), why) for where, why in
                knobs.problems(sound, flow, list(spec["bindings"]))]
    return out


def _outside(doc: Document, path: Path) -> str:
    """Why the spec may not read `path` (nothing when it may, or --allow-outside was given)."""
    if doc.allow_outside:
        return ""
    reason = specfiles.outside(path, doc.path.parent)
    return f"{path} {reason}" if reason else ""


def _bound_problems(doc: Document, spec: dict[str, Any]) -> list[Problem]:
    out = []
    start, bounds = spec["start"], spec["bounds"]
    for name in ("cfg", "steps"):
        lo, hi = bounds[name]["min"], bounds[name]["max"]
        if lo > hi:
            out.append(doc.problem(("bounds", name, "min"), f"min {lo} is bigger than max {hi}"))
        elif not lo <= start[name] <= hi:
            out.append(doc.problem(("start", name),
                                   f"{start[name]} is outside bounds.{name} ({lo} to {hi})"))
    max_chars = bounds["prompt"]["max_chars"]
    if len(start["prompt"]) > max_chars:
        out.append(doc.problem(("start", "prompt"), f"{len(start['prompt'])} characters, more "
                               f"than bounds.prompt.max_chars ({max_chars})"))
    terms = [t for t in start["negative"].split(",") if t.strip()]
    max_terms = bounds["negative"]["max_terms"]
    if len(terms) > max_terms:
        out.append(doc.problem(("start", "negative"), f"{len(terms)} terms, more than "
                               f"bounds.negative.max_terms ({max_terms})"))
    return out


def _refine_problems(doc: Document, spec: dict[str, Any], flow: dict[str, Any]
                     ) -> list[Problem]:
    d = with_defaults({"refine": spec["refine"]})["refine"]
    r = d["denoise"]
    out = [] if r["min"] <= r["start"] <= r["max"] else [doc.problem(
        ("refine", "denoise"), f"start {r['start']} is outside min {r['min']} to max "
        f"{r['max']}")]
    source, path = flow, None
    if d.get("workflow"):
        path = specfiles.relative_path(doc.path.parent, d["workflow"])
        refused = _outside(doc, path)
        if refused:
            return [*out, doc.problem(("refine", "workflow"), refused)]
        try:
            source = read_workflow(doc, path)
        except WorkflowError as exc:
            return [*out, doc.problem(("refine", "workflow"), str(exc))]
    try:
        denoise = refine_graph(doc, source, path).denoise
    except WorkflowError as exc:
        return [*out, doc.problem(("refine",), str(exc), key=True)]
    declared = spec["knobs"] if isinstance(spec["knobs"], dict) else {}
    for name, d in declared.items():  # refine mode sets that input itself
        if isinstance(d, dict) and denoise in knobs.targets_of(d):
            out.append(doc.problem(("knobs", name), f"{denoise} is the denoise refine mode "
                                   "sets (refine.denoise); the knob would not reach refine "
                                   "renders: drop the knob or bound refine.denoise instead"))
    return out


def _template_problems(doc: Document, spec: dict[str, Any], spec_dir: Path) -> list[Problem]:
    value = spec["critic"].get("prompt_template")
    if value is None:
        return []
    where = ("critic", "prompt_template")
    path = template.template_path(value, spec_dir)
    text = value
    if path is not None:
        refused = _outside(doc, path)
        if refused:
            return [doc.problem(where, refused)]
        try:
            text = specfiles.read_text(path, specfiles.TEMPLATE_CAP)
        except specfiles.Unreadable as exc:
            return [doc.problem(where, f"{path}: {exc} (inline templates need a newline "
                                "or a {{variable}})")]
    unknown = template.unknown_variables(text)
    if unknown:
        known = ", ".join(template.VARIABLES)
        return [doc.problem(where, f"unknown template variable {{{{{name}}}}}; known: {known}")
                for name in unknown]
    return []


NUMBERS = {"cfg": "a number", "steps": "a whole number", "seed": "a whole number"}


def _site_problems(sites: list[workflow.Site], token: str, parameter: str) -> list[str]:
    """A token ComfyUI never reads (outside a node's inputs), or a number bound inside text."""
    out = []
    for site in (s for s in sites if s.token == token):
        if not site.in_inputs:
            out.append(f"{token} sits in {site.dotted} of the workflow, outside the node's "
                       "inputs: ComfyUI never reads it there")
        elif parameter in NUMBERS and not site.whole:
            out.append(f"{parameter} is {NUMBERS[parameter]}, but {token} sits inside the text "
                       f"{_short(site.text)} of {site.dotted}; make the token the input's whole "
                       "value")
    return out


def _input_type_problem(flow: dict[str, Any], target: str, parameter: str) -> str:
    """The value a node path replaces must be of the parameter's kind, and not a link."""
    node_id, name = workflow.node_input(flow, target) or ("", "")
    value = flow[node_id]["inputs"][name]
    if isinstance(value, list):
        return (f"{target} is a link from node {value[0] if value else '?'}, not a value; bind "
                "the node where the value is set")
    if parameter in NUMBERS and isinstance(value, str) and not workflow.TOKEN.fullmatch(value):
        return f"{target} holds text ({_short(value)}), but {parameter} is {NUMBERS[parameter]}"
    if parameter not in NUMBERS and isinstance(value, int | float) and \
            not isinstance(value, bool):
        return f"{target} holds a number ({value}), but {parameter} is text"
    return ""


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _binding_problems(doc: Document, spec: dict[str, Any], flow: dict[str, Any]) -> list[Problem]:
    out = []
    found = workflow.tokens(flow)
    sites = workflow.sites(flow)
    for target, parameter in spec["bindings"].items():
        where = ("bindings", target)
        if workflow.node_input(flow, target):
            reason = workflow.node_path_problem(flow, target) or \
                _input_type_problem(flow, target, parameter)
            if reason:
                out.append(doc.problem(where, reason, key=True))
        elif target in found:
            out += [doc.problem(where, reason, key=True)
                    for reason in _site_problems(sites, target, parameter)]
        else:
            out.append(doc.problem(where, f"{target} does not occur in the workflow "
                                   f"{spec['workflow']}", key=True))
    declared = spec["knobs"] if isinstance(spec["knobs"], dict) else {}
    knob_targets = {t for d in declared.values() if isinstance(d, dict)
                    for t in knobs.targets_of(d) if isinstance(t, str)}
    for token in sorted(found - set(spec["bindings"]) - knob_targets):
        out.append(doc.problem(("bindings",), f"{token} occurs in the workflow but is not bound; "
                               "ComfyUI would receive the token itself"))
    if "prompt" not in spec["bindings"].values():
        out.append(doc.problem(("bindings",), "nothing is bound to prompt, so the critic's prompt "
                               "changes could never reach the image"))
    return out
