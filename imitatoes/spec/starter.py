"""A starter spec from a workflow the user already has (API format as exported, or the UI
format ComfyUI saves, converted with the server's node definitions): find the sampler,
follow its conditioning back to the text encoders, bind everything by node path (no tokens
needed, so the workflow stays as ComfyUI made it), start at the workflow's own values, and
propose knobs for the widgets worth tuning, commented out for the user to choose."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imitatoes import files as specfiles
from imitatoes.errors import UsageError, WorkflowError
from imitatoes.spec import lint
from imitatoes.workflow import api as workflow
from imitatoes.workflow import catalogue, nodecheck
from imitatoes.workflow import ui as ui_workflow
from imitatoes.workflow.samplers import (
    SAMPLERS,
    first_sampler,
    judged_output,
    linked,
    node_order,
    sampler_nodes,
)

# Inputs that hold the numbers, on the sampler or on the nodes its noise, guider and sigmas
# come from (RandomNoise, CFGGuider, BasicScheduler).
NUMBERS = {"seed": "seed", "noise_seed": "seed", "steps": "steps", "cfg": "cfg"}
# The text inputs of each image model's text encoder in ComfyUI's core; the prompt goes
# into each of them (SD3's three, HiDream's four), as the encoders' own templates do.
ENCODERS = {"CLIPTextEncode": ("text",), "CLIPTextEncodeSDXL": ("text_g", "text_l"),
            "CLIPTextEncodeSDXLRefiner": ("text",), "CLIPTextEncodeFlux": ("t5xxl", "clip_l"),
            "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
            "CLIPTextEncodeHiDream": ("clip_l", "clip_g", "t5xxl", "llama"),
            "CLIPTextEncodeHunyuanDiT": ("bert", "mt5xl"),
            "CLIPTextEncodeLumina2": ("user_prompt",), "CLIPTextEncodePixArtAlpha": ("text",),
            "TextEncodeQwenImageEdit": ("prompt",), "TextEncodeQwenImageEditPlus": ("prompt",)}
# Nodes whose text output is made of their own text inputs: an encoder's text linked from
# these is bound where the text is written (templates build prompts from string nodes: a
# system prompt joined to the user's, a caption put into a template).
TEXT_NODES = {"PrimitiveString": ("value",), "PrimitiveStringMultiline": ("value",),
              "StringConcatenate": ("string_a", "string_b"), "StringReplace": ("string", "replace"),
              "RegexReplace": ("string", "replace"), "StringTrim": ("string",),
              "CaseConverter": ("string",), "StringSubstring": ("string",)}
TEXT_OUTPUTS = {"ImitatoesSelfImprovingPrompt": {0: "prompt", 1: "negative"}}  # by output slot
# Texts that are not the user's prompt: a language model's system prompt; and, when another
# text is there, a template with {placeholders} that the prompt is put into.
SYSTEM_PROMPT = re.compile(r"^\s*(you are\b|<\|im_start\|>|system\s*:)", re.IGNORECASE)
TEMPLATE = re.compile(r"\{\w+\}")
# Conditioning that no text reaches: the negative of Flux and Z-Image templates is the positive
# zeroed out.
ZEROED = frozenset({"ConditioningZeroOut"})
GUIDANCE = {"FluxGuidance": "guidance", "CLIPTextEncodeFlux": "guidance"}
# The proposals offer the sampler names and schedulers most guides use, where the server has
# them (the full lists are 40 and 9 long: too many choices for a critic to reason about).
COMMON_SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde",
                   "uni_pc")
COMMON_SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform", "simple", "beta")
LORAS = ("LoraLoader", "LoraLoaderModelOnly")


@dataclass
class Found:
    bindings: dict[str, str] = field(default_factory=dict)  # node path or token -> parameter
    texts: dict[str, str] = field(default_factory=dict)  # prompt/negative -> the workflow's text
    notes: list[str] = field(default_factory=list)  # what was found and what was guessed
    knobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # proposed, commented out
    converted: Path | None = None  # the API-format workflow written for a UI-format one
    spec: dict[str, Any] = field(default_factory=dict)  # the spec written (or, dry, not)


def sampler_numbers(flow: Mapping[str, Any]) -> dict[str, str]:
    """Node path -> parameter for the first sampler's seed, steps and cfg that hold numbers
    (on the sampler, or on its RandomNoise, CFGGuider and BasicScheduler)."""
    sampler = first_sampler(flow)
    if sampler is None:
        return {}
    out: dict[str, str] = {}
    for node_id in sampler_nodes(flow, sampler):
        for name, value in flow[node_id].get("inputs", {}).items():
            parameter = NUMBERS.get(name)
            if parameter and parameter not in out.values() and \
                    isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{node_id}.inputs.{name}"] = parameter
    return out


def _conditioning(flow: Mapping[str, Any], sampler: str, side: str) -> Any:
    """The sampler's positive or negative link, or its guider's (BasicGuider has only one)."""
    inputs = flow[sampler].get("inputs", {})
    if side in inputs:
        return inputs[side]
    guider = linked(flow, inputs.get("guider"))
    if guider is None:
        return None
    g = flow[guider].get("inputs", {})
    if side == "positive":  # CFGGuider, BasicGuider, DualCFGGuider (its first positive)
        return g.get("positive", g.get("conditioning", g.get("cond1")))
    return g.get("negative")


def find(flow: Mapping[str, Any]) -> Found:
    """The first sampler's numbers and the encoders its positive and negative come from."""
    sampler = first_sampler(flow)
    if sampler is None:
        raise WorkflowError("the workflow has no sampler imitatoes knows (" + ", ".join(SAMPLERS)
                            + "): init cannot tell where seed, steps and cfg are; write the "
                            "bindings by hand (node paths like 3.inputs.seed)")
    node = flow[sampler]
    found = Found(bindings=sampler_numbers(flow))
    found.notes.append(f"sampler: node {sampler} ({node['class_type']}); " + (", ".join(
        f"{p} at {t}" for t, p in found.bindings.items()) or "no seed, steps or cfg values"))
    others = [i for i, n in flow.items() if n.get("class_type") in SAMPLERS and i != sampler]
    if others:
        found.notes.append(f"other samplers ({', '.join(others)}: a refiner, a second pass) "
                           "keep their own values; bind their inputs too to move them along")
    encoders: list[str] = []
    for side, parameter in (("positive", "prompt"), ("negative", "negative")):
        link = _conditioning(flow, sampler, side)
        encoder = _encoder(flow, link)
        if encoder is None or encoder in encoders:  # the negative zeroes the positive's text
            if link is not None or parameter == "prompt":
                found.notes.append(f"{parameter}: no text of its own reaches the {side} input"
                                   + (" (it is zeroed out)" if _zeroed(flow, link) else ""))
            continue
        encoders.append(encoder)
        _bind_texts(flow, encoder, parameter, found)
        if "cfg" not in found.bindings.values():
            _bind_guidance(flow, link, found)
    if "prompt" not in found.texts:
        raise WorkflowError(_no_prompt(flow, _conditioning(flow, sampler, "positive")))
    output = judged_output(flow)
    found.notes.append(f"judged: the image of node {output} ({flow[output]['class_type']})"
                       if output else "no SaveImage or PreviewImage: the critic gets no image")
    latent = linked(flow, node.get("inputs", {}).get("latent_image"))
    feeds = flow[latent].get("inputs") if latent and isinstance(flow[latent], dict) else None
    batch = feeds.get("batch_size") if isinstance(feeds, dict) else None
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > 1:
        found.notes.append(f"node {latent} makes {batch} images a render and the critic judges "
                           "the first: set its batch_size to 1 (search.candidates judges several "
                           "seeds instead)")
    return found


def _bind_texts(flow: Mapping[str, Any], encoder: str, parameter: str, found: Found) -> None:
    kind = flow[encoder]["class_type"]
    for name in ENCODERS[kind]:  # some take the text two to four times
        text = flow[encoder].get("inputs", {}).get(name)
        source = _text_source(flow, text)
        if source is not None:  # the text comes from a node: bind it where it is written
            encoder, name = source
            kind = flow[encoder]["class_type"]
            text = flow[encoder].get("inputs", {}).get(name)
        if not isinstance(text, str):
            continue
        token = text.strip() if text.strip() in workflow.tokens({"t": text}) else None
        # a token already placed by hand stays the binding; the text starts empty
        found.bindings[token or f"{encoder}.inputs.{name}"] = parameter
        found.texts.setdefault(parameter, "" if token else text)
        found.notes.append(f"{parameter}: node {encoder} ({kind}) {name}" +
                           (f", bound by its token {token}" if token else ""))


def _text_source(flow: Mapping[str, Any], value: Any) -> tuple[str, str] | None:
    """Where the text linked into an encoder is written: of the texts the string nodes
    behind it join, the longest that is not a system prompt or a template."""
    found = _texts_behind(flow, value, 0)
    prompts = [f for f in found if f[2].strip() and not SYSTEM_PROMPT.search(f[2])]
    if not prompts:
        return None
    node_id, name, _ = max(prompts, key=lambda f: (not TEMPLATE.search(f[2]), len(f[2])))
    return node_id, name


def _texts_behind(flow: Mapping[str, Any], value: Any, depth: int
                  ) -> list[tuple[str, str, str]]:
    """(node, input, text) for each literal text the string nodes behind a link hold."""
    node_id = linked(flow, value)
    if node_id is None or depth > 20:
        return []
    kind, inputs = flow[node_id].get("class_type", ""), flow[node_id].get("inputs", {})
    slot = value[1] if len(value) > 1 else 0
    names = TEXT_NODES.get(kind) or ((TEXT_OUTPUTS[kind].get(slot),) if kind in TEXT_OUTPUTS
                                     else ())
    out: list[tuple[str, str, str]] = []
    for name in names:
        text = inputs.get(name)
        if isinstance(text, str):
            out.append((node_id, name, text))
        else:
            out += _texts_behind(flow, text, depth + 1)
    return out


def _bind_guidance(flow: Mapping[str, Any], link: Any, found: Found, depth: int = 0) -> None:
    """Flux has no cfg: its guidance (FluxGuidance, or the Flux encoder's own) moves instead."""
    node_id = linked(flow, link)
    if node_id is None or depth > 20:
        return
    node = flow[node_id]
    name = GUIDANCE.get(node.get("class_type", ""))
    value = node.get("inputs", {}).get(name) if name else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        found.bindings[f"{node_id}.inputs.{name}"] = "cfg"
        found.notes.append(f"cfg: the Flux guidance of node {node_id} ({node['class_type']})")
        return
    for key, value in node.get("inputs", {}).items():
        if "conditioning" in key:
            _bind_guidance(flow, value, found, depth + 1)
            if "cfg" in found.bindings.values():
                return


def _encoder(flow: Mapping[str, Any], link: Any, depth: int = 0) -> str | None:
    """Follow a conditioning link back through conditioning nodes to a text encoder (None
    where the conditioning is zeroed: no text reaches the image that way)."""
    if not (isinstance(link, list) and link and str(link[0]) in flow) or depth > 20:
        return None
    node_id = str(link[0])
    node = flow[node_id]
    if node.get("class_type") in ENCODERS:
        return node_id
    if node.get("class_type") in ZEROED:
        return None
    inputs = node.get("inputs", {})
    if "positive" in inputs and "negative" in inputs:  # ControlNet apply: both pass through,
        side = "negative" if len(link) > 1 and link[1] == 1 else "positive"  # by output slot
        return _encoder(flow, inputs[side], depth + 1)
    for name, value in inputs.items():
        if "conditioning" in name or name in ("positive", "cond"):
            hit = _encoder(flow, value, depth + 1)
            if hit:
                return hit
    return None


def _no_prompt(flow: Mapping[str, Any], link: Any) -> str:
    """Why init found no prompt: what the positive conditioning comes from instead."""
    node_id = linked(flow, link)
    if node_id is None:
        return ("the sampler's positive input is connected to nothing: connect a text encoder "
                "(CLIPTextEncode) and init again")
    source = f"node {node_id} ({flow[node_id].get('class_type')})"
    zeroed = next((n for n in _upstream(flow, node_id) if flow[n].get("class_type") in ZEROED),
                  None)
    why = f"its text is zeroed out by node {zeroed} (ConditioningZeroOut)" if zeroed else \
        "its text is no value and no text node imitatoes follows" \
        if flow[node_id].get("class_type") in ENCODERS else \
        "no text encoder imitatoes knows is behind it"
    return (f"the sampler's positive conditioning comes from {source} and {why}: no prompt "
            "reaches the image, so there is nothing for the loop to change; if a text does, "
            "bind it by hand (a node path like 6.inputs.text)")


def _upstream(flow: Mapping[str, Any], node_id: str | None) -> list[str]:
    """The nodes a node's inputs come from, nearest first."""
    seen: list[str] = []
    todo = [node_id] if node_id else []
    while todo:
        current = todo.pop(0)
        if current in seen or current not in flow:
            continue
        seen.append(current)
        todo += [str(v[0]) for v in flow[current].get("inputs", {}).values()
                 if isinstance(v, list) and v]
    return seen


def _zeroed(flow: Mapping[str, Any], link: Any) -> bool:
    node_id = linked(flow, link)
    return node_id is not None and flow[node_id].get("class_type") in ZEROED


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


def propose(flow: Mapping[str, Any], info: Mapping[str, Any] | None) -> dict[str, Any]:
    """Behaviour worth offering: the sampler name, scheduler and denoise of the sampler (or its
    KSamplerSelect and BasicScheduler) and each LoRA's strength, with bounds from the
    server's input definitions where there are some."""
    sampler = first_sampler(flow)
    if sampler is None:
        return {}
    nodes = sampler_nodes(flow, sampler)
    select = linked(flow, flow[sampler].get("inputs", {}).get("sampler"))
    out: dict[str, Any] = {}
    for node_id in nodes + ([select] if select else []):
        inputs = flow[node_id].get("inputs", {})
        options = _options(info, flow[node_id]["class_type"])
        for name, knob, common in (("sampler_name", "sampler", COMMON_SAMPLERS),
                                   ("scheduler", "scheduler", COMMON_SCHEDULERS)):
            value = inputs.get(name)
            if isinstance(value, str) and knob not in out:
                offered = options.get(name, {}).get("choices") or common
                choices = [value] + [c for c in common if c in offered and c != value]
                out[knob] = {"path": f"{node_id}.inputs.{name}", "choices": choices}
        value = inputs.get("denoise")
        if _number(value) and "denoise" not in out and not _from_noise(flow, sampler):
            limits = options.get("denoise", {})
            out["denoise"] = {"path": f"{node_id}.inputs.denoise", "type": "number",
                              "min": min(value, max(limits.get("min", 0.0), 0.3)),
                              "max": max(value, limits.get("max", 1.0)), "max_delta": 0.15,
                              "step": 0.05}
    loras = [i for i, n in sorted(flow.items(), key=lambda kv: node_order(kv[0]))
             if n.get("class_type") in LORAS]
    for node_id in loras:
        knob = _lora_knob(flow, node_id, _options(info, flow[node_id]["class_type"]))
        if knob:
            out["lora" if len(loras) == 1 else f"lora_{node_id}"] = knob
    return out


def _from_noise(flow: Mapping[str, Any], sampler: str) -> bool:
    """Whether the sampler starts from an empty latent (txt2img), where a denoise below 1
    only leaves noise in the image: denoise is a knob for img2img."""
    source = linked(flow, flow[sampler].get("inputs", {}).get("latent_image"))
    kind = str(flow[source].get("class_type", "")) if source else ""
    return kind.startswith("Empty") and "Latent" in kind


def _lora_knob(flow: Mapping[str, Any], node_id: str, options: Mapping[str, Any]
               ) -> dict[str, Any] | None:
    inputs = flow[node_id].get("inputs", {})
    strengths = {n: inputs[n] for n in ("strength_model", "strength_clip")
                 if _number(inputs.get(n))}
    if "strength_model" not in strengths:
        return None
    value = strengths["strength_model"]
    # Both strengths move together only when they start equal (else the ratio would change).
    names = [n for n, v in strengths.items() if v == value]
    limits = options.get("strength_model", {})
    return {"path": [f"{node_id}.inputs.{n}" for n in names] if len(names) > 1 else
            f"{node_id}.inputs.strength_model", "type": "number",
            "min": min(value, max(limits.get("min", 0.0), 0.0)),
            "max": max(value, min(limits.get("max", 1.5), 1.5)), "max_delta": 0.25,
            "step": 0.05}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _options(info: Mapping[str, Any] | None, cls: str) -> dict[str, dict[str, Any]]:
    """{input: {"choices": [...]} or {"min": .., "max": ..}} from the server's definition."""
    definition = (info or {}).get(cls) or {}
    out: dict[str, dict[str, Any]] = {}
    for section in ("required", "optional"):
        for name, config in ((definition.get("input") or {}).get(section) or {}).items():
            if not isinstance(config, list) or not config:
                continue
            offered = nodecheck.combo_options(config)
            out[name] = {"choices": offered} if offered is not None else {
                k: v for k, v in nodecheck.limits(config).items()
                if k in ("min", "max") and _number(v)}
    return out


def api_workflow(workflow_path: Path, output: Path, info: Mapping[str, Any] | None,
                 server_version: str | None = None, dry: bool = False
                 ) -> tuple[dict[str, Any], Path | None]:
    """The workflow in API format, and where its converted copy is to be written (None when
    the file was API format already). A UI-format file converts with the server's node
    definitions (`info`), or with no server, with imitatoes' own core catalogue."""
    try:
        text = specfiles.read_text(workflow_path, specfiles.WORKFLOW_CAP)
        data = json.loads(text)
    except (specfiles.Unreadable, ValueError, RecursionError):
        return workflow.load(workflow_path), None  # its own message says what is wrong
    if not ui_workflow.is_ui_format(data):
        return workflow.load(workflow_path), None
    converted = output.with_name(f"{output.stem}.api.json")
    if converted.exists() and not dry:
        raise UsageError(f"{converted} already exists (init writes the converted workflow "
                         "there): choose another --output or remove it")
    if info is None:
        return ui_workflow.to_api(data, catalogue.core(), None), converted
    return ui_workflow.to_api(data, info, server_version or "?"), converted


def write(workflow_path: Path, output: Path, goal: str | None,
          info: Mapping[str, Any] | None = None, server_version: str | None = None,
          dry: bool = False) -> Found:
    """Write a starter spec for the workflow at `output` (and the API-format workflow beside
    it, when the workflow was UI format); refuse to overwrite either. `dry`: write nothing,
    the spec is in the answer (what the ComfyUI sidebar shows as the bindings to choose)."""
    if output.exists() and not dry:
        raise UsageError(f"{output} already exists: choose another --output or remove it")
    flow, converted = api_workflow(workflow_path, output, info, server_version, dry)
    found = find(flow)
    prompt = found.texts["prompt"] or goal
    if not prompt:
        raise UsageError(f"{workflow_path}: the prompt is empty or a token, so there is no "
                         "text to start from: give --goal \"what you want\"")
    found.texts["prompt"] = prompt
    bounds = _bounds(flow, found)
    source = converted or workflow_path
    wanted = " ".join(goal.split()) if goal else gist(prompt)
    data: dict[str, Any] = {
        "name": spec_name(workflow_path),
        "goal": wanted,
        "requirements": [f"The image shows: {wanted}"],
        "workflow": os.path.relpath(source.resolve(), output.resolve().parent),
        "bindings": found.bindings,
        "start": dict(found.texts),
        "critic": {"model": "qwen2.5vl:7b"},
        "limits": {"iterations_per_loop": 3, "max_loops": 3},
    }
    if bounds:
        data["bounds"] = bounds
    if not goal:
        found.notes.append("goal and requirement guessed from the prompt: write what you want")
    found.knobs = propose(flow, info or catalogue.core())
    if found.knobs:
        found.notes.append("knobs proposed (commented out at the end): " +
                           ", ".join(found.knobs))
    found.spec = data
    if dry:
        return found
    if converted is not None:
        found.converted = converted
        converted.write_text(json.dumps(flow, indent=1, ensure_ascii=False) + "\n")
        found.notes.insert(0, f"converted the UI-format workflow to API format: {converted} "
                           f"({len(flow)} nodes)")
    head = (f"# written by `imitatoes init {workflow_path.name}`; seed, steps and cfg start at "
            "the workflow's own values\n")
    output.write_text(head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                            width=100) + _commented(found.knobs, info))
    return found


def _bounds(flow: Mapping[str, Any], found: Found) -> dict[str, Any]:
    """The bounds the workflow's own values and texts need beyond the defaults, noted."""
    bounds = bounds_around(flow, found.bindings)
    if bounds:
        found.notes.append("bounds widened to hold the workflow's own " + " and ".join(bounds))
    room = _prompt_room(found.texts)
    if room:
        bounds.update(room)
        found.notes.append("bounds " + " and ".join(f"{k}.{n} {v}" for k, d in room.items()
                                                    for n, v in d.items())
                           + ": room for the workflow's own texts and the critic's changes")
    return bounds


def gist(text: str, limit: int = 200) -> str:
    """A goal guessed from a prompt: its first sentence, or its first words up to `limit`
    (a template's prompt runs to a thousand characters; a requirement may hold 500)."""
    plain = " ".join(text.replace("**", "").split())
    sentence = re.match(r"(.+?[.!?])(\s|$)", plain)
    if sentence and len(sentence.group(1)) <= limit:
        return sentence.group(1)
    if len(plain) <= limit:
        return plain
    return plain[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def _prompt_room(texts: Mapping[str, str]) -> dict[str, Any]:
    """bounds.prompt.max_chars and bounds.negative.max_terms where the workflow's own texts
    leave the defaults too little room: their size and more for what the critic adds."""
    defaults = lint.with_defaults({"bounds": {"prompt": {}, "negative": {}}})["bounds"]
    chars = len(texts.get("prompt", "")) + 400
    terms = len([t for t in texts.get("negative", "").split(",") if t.strip()]) + 8
    out: dict[str, Any] = {}
    if chars > defaults["prompt"]["max_chars"]:
        out["prompt"] = {"max_chars": chars}
    if terms > defaults["negative"]["max_terms"]:
        out["negative"] = {"max_terms": terms}
    return out


def spec_name(workflow_path: Path) -> str:
    """A spec's name from its workflow's file name: `fox.ui.json` and `fox.api.json` -> fox."""
    stem = re.sub(r"\.(ui|api)$", "", workflow_path.stem, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "starter"


def _commented(knobs: Mapping[str, Any], info: Mapping[str, Any] | None) -> str:
    if not knobs:
        return ""
    source = "your ComfyUI's own input definitions" if info else \
        f"ComfyUI {catalogue.CORE_VERSION}'s definitions; init --comfy-url takes your ComfyUI's"
    lines = ["", "# Behaviour: more widgets the critic may tune. Uncomment the ones you want",
             f"# (bounds from {source}).", "# knobs:"]
    lines += [f"#   {name}: {json.dumps(d)}" for name, d in knobs.items()]
    return "\n".join(lines) + "\n"
