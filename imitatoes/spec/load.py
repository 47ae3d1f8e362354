"""Goal specs: read once (YAML + overrides + environment), checked, frozen into dataclasses."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from imitatoes import files as specfiles
from imitatoes.errors import InvalidSpec, WorkflowError
from imitatoes.spec import knobs as knob_rules
from imitatoes.spec import lint, template, yamldoc
from imitatoes.spec.model import (
    Bounds,
    ComfyConfig,
    CriticConfig,
    ImageGuard,
    Limits,
    Params,
    Range,
    Refine,
    Repair,
    Search,
    SeedPolicy,
    Spec,
)
from imitatoes.spec.yamldoc import Document
from imitatoes.workflow import api as workflow


def load(path: str | Path, overrides: Iterable[str] = (),
         env: Mapping[str, str] | None = None, allow_outside: bool = False) -> Spec:
    """Read, override, check and freeze a spec; InvalidSpec carries every problem found."""
    doc = read(Path(path), overrides, os.environ if env is None else env, allow_outside)
    problems = lint.check(doc)
    if problems:
        raise InvalidSpec(problems)
    return build(doc)


def from_data(data: dict[str, Any], base: Path, env: Mapping[str, str] | None = None,
              allow_outside: bool = False) -> Spec:
    """A spec built in code (scripts/run_loop.py): checked like a file, paths relative to base."""
    doc = Document(base / "<built-in spec>", data, allow_outside=allow_outside)
    _apply_env(doc, os.environ if env is None else env)
    _start_from_workflow(doc)
    problems = lint.check(doc)
    if problems:
        raise InvalidSpec(problems)
    return build(doc)


def read(path: Path, overrides: Iterable[str], env: Mapping[str, str],
         allow_outside: bool = False) -> Document:
    """The document with the environment's URLs and then the --set overrides applied."""
    doc = yamldoc.read(path)
    doc.allow_outside = allow_outside
    _apply_env(doc, env)
    for text in overrides:
        where, value = yamldoc.parse_override(text)
        yamldoc.apply_override(doc, where, value, f"--set {text}")
    _start_from_workflow(doc)
    return doc


def _start_from_workflow(doc: Document) -> None:
    """A parameter bound by node path and left out of `start` starts at the workflow's own
    value (the seed and cfg it was exported with), not at the schema's default."""
    data = doc.data
    bindings, start = data.get("bindings"), data.get("start")
    if not (isinstance(bindings, dict) and isinstance(start, dict)
            and isinstance(data.get("workflow"), str)):
        return
    path = specfiles.relative_path(doc.path.parent, data["workflow"])
    if not doc.allow_outside and specfiles.outside(path, doc.path.parent):
        return  # lint says so; nothing is read from there
    try:
        flow = lint.read_workflow(doc, path)
    except WorkflowError:
        return  # lint says so too
    for target, parameter in bindings.items():
        if parameter not in _FROM_WORKFLOW or parameter in start:
            continue
        value = workflow.value_at(flow, str(target))
        if isinstance(value, _FROM_WORKFLOW[parameter]) and not isinstance(value, bool):
            yamldoc.apply_override(doc, ("start", parameter), value,
                                   f"the workflow's {target}")


_FROM_WORKFLOW: dict[str, type | tuple[type, ...]] = {
    "cfg": (int, float), "steps": int, "seed": int, "negative": str}


def _apply_env(doc: Document, env: Mapping[str, str]) -> None:
    critic = doc.data.get("critic")
    has_url = isinstance(critic, dict) and "url" in critic
    env_values = [("IMITATOES_COMFY_URL", ("comfyui", "url"), env.get("IMITATOES_COMFY_URL")),
                  ("IMITATOES_OLLAMA_URL", ("critic", "url"), env.get("IMITATOES_OLLAMA_URL"))]
    if not has_url and env.get("OLLAMA_HOST") and not env.get("IMITATOES_OLLAMA_URL"):
        env_values.append(("OLLAMA_HOST", ("critic", "url"), ollama_host_url(env["OLLAMA_HOST"])))
    for name, where, value in env_values:
        if value:
            yamldoc.apply_override(doc, where, value, f"${name}")


def ollama_host_url(value: str) -> str:
    """OLLAMA_HOST as Ollama reads it (host, host:port or a URL) -> a URL a client can reach."""
    value = value.strip().rstrip("/")
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "http", value
    host, _, port = rest.partition(":")
    if host in ("", "0.0.0.0"):  # a bind-everything address: reach it on loopback
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port or '11434'}"


def runs_folder(spec_dir: Path, named: str | None) -> tuple[Path, str]:
    """The one rule for where run folders go: --runs-dir (given to the command, not here),
    then IMITATOES_RUNS, then the spec's own output.dir (relative to the spec), then runs/ in
    the folder the command starts in. Returns the folder and which of these chose it."""
    if os.environ.get("IMITATOES_RUNS"):
        return Path(os.environ["IMITATOES_RUNS"]), "$IMITATOES_RUNS"
    if named:
        return specfiles.relative_path(spec_dir, named), "the spec's output.dir"
    return Path("runs"), "./runs; --runs-dir to move"


def memory_store(spec_dir: Path, value: bool | str) -> Path | None:
    """Where memory across runs is kept: the user's own data folder unless the spec names a
    file; None when the spec turns it off."""
    if value is False:
        return None
    if isinstance(value, str):
        return specfiles.relative_path(spec_dir, os.path.expanduser(value))
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "imitatoes" / "memory.jsonl"


def search_settings(given: Mapping[str, Any] | None) -> Search:
    """What `search` means, from the section as the spec gives it (before defaults): auto,
    unless it names candidates or proposals (then those, every step: fixed); a done claim is
    checked once more whenever a search section is given (without one, the loop trusts the
    matched checklist)."""
    if not given:
        return Search(verify_done=False, strategy="auto")
    named = any(k in given for k in ("candidates", "proposals"))
    return Search(**{"strategy": "fixed" if named else "auto",
                     **lint.with_defaults({"search": dict(given)})["search"]})


def build(doc: Document) -> Spec:
    d = lint.with_defaults(doc.data)
    spec_dir = doc.path.parent
    workflow_path = specfiles.relative_path(spec_dir, d["workflow"])
    flow = lint.read_workflow(doc, workflow_path)
    knobs = knob_rules.build(d.get("knobs") or {}, flow)
    output_dir, output_why = runs_folder(spec_dir, d["output"].get("dir"))
    start = replace(_params(d["start"]), knobs=tuple((k.name, k.start) for k in knobs))
    return Spec(
        path=doc.path, name=d["name"], goal=d["goal"], requirements=tuple(d["requirements"]),
        workflow_path=workflow_path, workflow=flow, knobs=knobs,
        refine=refine_settings(doc, d.get("refine"), flow),
        bindings=tuple(d["bindings"].items()), start=start,
        bounds=_bounds(d["bounds"]), seed=SeedPolicy(**d["seed"]),
        critic=replace(_critic(d["critic"], spec_dir), knobs=knobs,
                       regions=bool((d.get("refine") or {}).get("repair") is not None)),
        limits=Limits(**d["limits"]), search=search_settings(doc.data.get("search")),
        comfyui=ComfyConfig(**{**d["comfyui"],
                                                       "url": d["comfyui"]["url"].rstrip("/")}),
        output_dir=output_dir, output_why=output_why,
        memory=memory_store(spec_dir, d.get("memory", True)), data=doc.data)


def refine_settings(doc: Document, d: Mapping[str, Any] | None, flow: dict[str, Any]
                    ) -> Refine | None:
    """The spec's refine section with its graph (WorkflowError when none can be made)."""
    if not d:
        return None
    path = specfiles.relative_path(doc.path.parent, d["workflow"]) if d.get("workflow") \
        else None
    source = lint.read_workflow(doc, path) if path else flow
    full = lint.with_defaults({"refine": dict(d)})["refine"]
    r = full["denoise"]
    repair = full.get("repair")
    return Refine(float(d["after_score"]), Range(r["min"], r["max"], r["max_delta"]),
                  float(r["start"]), lint.refine_graph(doc, source, path),
                  Repair(**repair) if repair is not None else None)


def _params(d: Mapping[str, Any]) -> Params:
    return Params(prompt=d["prompt"], negative=d["negative"], cfg=float(d["cfg"]),
                  steps=int(d["steps"]), seed=int(d["seed"]))


def _bounds(d: Mapping[str, Any]) -> Bounds:
    steps = d["steps"]
    return Bounds(cfg=Range(**{k: float(v) for k, v in d["cfg"].items()}),
                  steps=Range(int(steps["min"]), int(steps["max"]), int(steps["max_delta"])),
                  prompt_max_chars=d["prompt"]["max_chars"],
                  negative_max_terms=d["negative"]["max_terms"],
                  prompt_max_weight=float(d["prompt"]["max_weight"]),
                  rewrite_keeps=float(d["prompt"]["rewrite_keeps"]))


def critic_for(url: str, model: str) -> CriticConfig:
    """A critic with every other setting at its default (doctor without a spec)."""
    d = lint.with_defaults({"critic": {"model": model, "url": url}})["critic"]
    return _critic(d, Path.cwd())


def _critic(d: Mapping[str, Any], spec_dir: Path) -> CriticConfig:
    value = d.get("prompt_template")
    if value is None:
        text = template.default_template()
    else:
        path = template.template_path(value, spec_dir)
        text = specfiles.read_text(path, specfiles.TEMPLATE_CAP) if path else value
    fields = {k: v for k, v in d.items() if k not in ("image", "prompt_template", "verifier")}
    fields["verifier"] = (d.get("verifier") or {}).get("model")
    fields["url"] = fields["url"].rstrip("/")
    return CriticConfig(**fields, image=ImageGuard(**d["image"]), prompt_template=text)
