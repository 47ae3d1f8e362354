"""A starter spec from an API-format workflow the user already has: find the sampler, follow
its conditioning back to the text encoders, bind everything by node path (no tokens needed,
so the workflow stays as ComfyUI exported it) and start at the workflow's own values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import lint, workflow
from .errors import UsageError, WorkflowError

SAMPLERS = {"KSampler": {"seed": "seed", "steps": "steps", "cfg": "cfg"},
            "KSamplerAdvanced": {"noise_seed": "seed", "steps": "steps", "cfg": "cfg"}}
ENCODERS = {"CLIPTextEncode": "text", "CLIPTextEncodeSDXL": "text_g"}


@dataclass
class Found:
    bindings: dict[str, str] = field(default_factory=dict)  # node path or token -> parameter
    texts: dict[str, str] = field(default_factory=dict)  # prompt/negative -> the workflow's text
    notes: list[str] = field(default_factory=list)  # what was found and what was guessed


def first_sampler(flow: Mapping[str, Any]) -> str | None:
    return next((i for i, n in flow.items() if n.get("class_type") in SAMPLERS), None)


def sampler_numbers(flow: Mapping[str, Any]) -> dict[str, str]:
    """Node path -> parameter for the first sampler's seed, steps and cfg that hold numbers."""
    sampler = first_sampler(flow)
    if sampler is None:
        return {}
    node = flow[sampler]
    return {f"{sampler}.inputs.{name}": parameter
            for name, parameter in SAMPLERS[node["class_type"]].items()
            if isinstance(node["inputs"].get(name), int | float)}


def find(flow: Mapping[str, Any]) -> Found:
    """The first sampler's numbers and the encoders its positive and negative come from."""
    sampler = first_sampler(flow)
    if sampler is None:
        raise WorkflowError("the workflow has no KSampler or KSamplerAdvanced: imitatoes init "
                            "cannot tell where seed, steps and cfg are; write the bindings by "
                            "hand (node paths like 3.inputs.seed)")
    node = flow[sampler]
    found = Found(bindings=sampler_numbers(flow))
    found.notes.append(f"sampler: node {sampler} ({node['class_type']})")
    for side, parameter in (("positive", "prompt"), ("negative", "negative")):
        encoder = _encoder(flow, node["inputs"].get(side))
        if encoder is None:
            found.notes.append(f"{parameter}: no text encoder found behind the {side} input")
            continue
        name = ENCODERS[flow[encoder]["class_type"]]
        text = flow[encoder]["inputs"].get(name)
        if isinstance(text, str):
            token = text.strip() if text.strip() in workflow.tokens({"t": text}) else None
            # a token already placed by hand stays the binding; the text starts empty
            found.bindings[token or f"{encoder}.inputs.{name}"] = parameter
            found.texts[parameter] = "" if token else text
            found.notes.append(f"{parameter}: node {encoder} ({flow[encoder]['class_type']}) "
                               f"{name}" + (f", bound by its token {token}" if token else ""))
    if "prompt" not in found.texts:
        raise WorkflowError("no text encoder found behind the sampler's positive input: bind "
                            "the prompt by hand (a node path like 6.inputs.text)")
    return found


def _encoder(flow: Mapping[str, Any], link: Any, depth: int = 0) -> str | None:
    """Follow a conditioning link back through conditioning nodes to a text encoder."""
    if not (isinstance(link, list) and link and str(link[0]) in flow) or depth > 20:
        return None
    node_id = str(link[0])
    node = flow[node_id]
    if node.get("class_type") in ENCODERS:
        return node_id
    for name, value in node.get("inputs", {}).items():
        if "conditioning" in name or name in ("positive", "cond"):
            hit = _encoder(flow, value, depth + 1)
            if hit:
                return hit
    return None


def bounds_around(flow: Mapping[str, Any], bound: Mapping[str, str]) -> dict[str, Any]:
    """The default bounds, widened to hold the workflow's own cfg and steps: a turbo model's
    4 steps at cfg 1 is where the user means to start, not a spec error."""
    out = {}
    defaults = lint.with_defaults({"bounds": {"cfg": {}, "steps": {}}})["bounds"]
    for target, parameter in bound.items():
        where = workflow.node_input(flow, target)
        value = flow[where[0]]["inputs"][where[1]] if where else None
        if parameter in ("cfg", "steps") and isinstance(value, int | float):
            lo, hi = defaults[parameter]["min"], defaults[parameter]["max"]
            if not lo <= value <= hi:
                out[parameter] = {"min": min(lo, value), "max": max(hi, value)}
    return out


def write(workflow_path: Path, output: Path, goal: str | None) -> Found:
    """Write a starter spec for the workflow at `output`; refuse to overwrite one."""
    if output.exists():
        raise UsageError(f"{output} already exists: choose another --output or remove it")
    flow = workflow.load(workflow_path)
    found = find(flow)
    prompt = found.texts["prompt"] or goal
    if not prompt:
        raise UsageError(f"{workflow_path}: the prompt is empty or a token, so there is no "
                         "text to start from: give --goal \"what you want\"")
    found.texts["prompt"] = prompt
    bounds = bounds_around(flow, found.bindings)
    data: dict[str, Any] = {
        "name": re.sub(r"[^A-Za-z0-9._-]+", "-", workflow_path.stem).strip("-._") or "starter",
        "goal": goal or prompt,
        "requirements": [f"The image shows: {goal or prompt}"],
        "workflow": os.path.relpath(workflow_path.resolve(), output.resolve().parent),
        "bindings": found.bindings,
        "start": dict(found.texts),
        "critic": {"model": "qwen2.5vl:7b"},
        "limits": {"iterations_per_loop": 3, "max_loops": 3},
    }
    if bounds:
        data["bounds"] = bounds
        found.notes.append("bounds widened to hold the workflow's own " + " and ".join(bounds))
    if not goal:
        found.notes.append("goal and requirement guessed from the prompt: write what you want")
    head = (f"# written by `imitatoes init {workflow_path.name}`; seed, steps and cfg start at "
            "the workflow's own values\n")
    output.write_text(head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                            width=100))
    return found
