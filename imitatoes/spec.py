"""Goal specs: read once (YAML + overrides + environment), checked, frozen into dataclasses."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import knobs as knob_rules
from . import lint, specfiles, template, workflow, yamldoc
from . import refine as refine_rules
from .errors import InvalidSpec, WorkflowError
from .yamldoc import Document

PARAMETERS = ("prompt", "negative", "cfg", "steps", "seed")


@dataclass(frozen=True)
class Params:
    """The values one render is made with."""

    prompt: str
    negative: str
    cfg: float
    steps: int
    seed: int
    knobs: tuple[tuple[str, Any], ...] = ()  # (name, value) of each knob, in the spec's order

    def knob(self, name: str) -> Any:
        return dict(self.knobs)[name]

    def knob_text(self, sep: str = " ") -> str:
        """The knob values as a person reads them: "sampler euler · denoise 0.8"."""
        return sep.join(f"{name} {knob_rules.shown(value)}" for name, value in self.knobs)

    def with_knob(self, name: str, value: Any) -> Params:
        return replace(self, knobs=tuple((n, value if n == name else v) for n, v in self.knobs))

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Params:
        """Params as saved in JSON (knobs as [name, value] pairs; runs before knobs had none)."""
        knobs = d.get("knobs") or ()
        pairs = knobs.items() if isinstance(knobs, dict) else knobs
        return Params(d["prompt"], d["negative"], d["cfg"], d["steps"], d["seed"],
                      tuple((str(n), v) for n, v in pairs))


def as_dict(obj: Any) -> dict[str, Any]:
    """dataclasses.asdict, with knob values as a {name: value} mapping (the pairs keep them
    hashable in Params and Changes; the mapping is how a person reads them in JSON)."""
    return asdict(obj, dict_factory=lambda pairs: {
        k: dict(v) if k == "knobs" and _pairs(v) else v for k, v in pairs
        if not (k in _QUIET and not v)})


_QUIET = {"region", "fix"}  # a checklist item's repair fields: left out when empty


def _pairs(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2
                                            for p in value)


@dataclass(frozen=True)
class Range:
    min: float
    max: float
    max_delta: float


@dataclass(frozen=True)
class Bounds:
    cfg: Range
    steps: Range
    prompt_max_chars: int
    negative_max_terms: int


@dataclass(frozen=True)
class SeedPolicy:
    policy: str  # stable | critic | per_loop | random
    allow_critic: bool


@dataclass(frozen=True)
class ImageGuard:
    max_edge: int
    format: str  # jpeg | png
    quality: int


@dataclass(frozen=True)
class Critic:
    provider: str
    model: str
    url: str
    temperature: float
    seed: int
    num_ctx: int
    keep_alive: str | int
    unload_before_render: bool
    timeout: float
    retries: int
    history: int
    image: ImageGuard
    prompt_template: str  # the template text, read from its file when the spec names one
    verifier: str | None = None  # the model that checks a done claim (search.verify_done)
    knobs: tuple[knob_rules.Knob, ...] = ()  # what the verdict schema lets the critic name
    regions: bool = False  # refine.repair: the verdict schema lets it point at a region


@dataclass(frozen=True)
class Search:
    verify_done: bool = False
    candidates: int = 1  # images per iteration, each with its own seed; the best goes on
    head_to_head: bool = False  # a new best must beat the old one with both in view
    proposals: int = 1  # alternative changes asked of the critic, each a candidate next time


@dataclass(frozen=True)
class Repair:
    min_share: float
    max_share: float
    feather: float


@dataclass(frozen=True)
class Refine:
    after_score: float
    denoise: Range
    start: float
    graph: refine_rules.RefineGraph
    repair: Repair | None = None


@dataclass(frozen=True)
class Limits:
    iterations_per_loop: int
    max_loops: int
    max_renders: int | None = None  # a cap on renders in all, across loops and resumes


@dataclass(frozen=True)
class Comfy:
    url: str
    connect_timeout: float
    render_timeout: float
    timeout: float = 30.0
    free_before_critique: bool = False
    max_image_mb: float = 100.0
    max_image_pixels: int = 8192 * 8192


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    goal: str
    requirements: tuple[str, ...]
    workflow_path: Path
    workflow: Mapping[str, Any]  # never mutated: binding returns a copy
    bindings: tuple[tuple[str, str], ...]  # (token or node path, parameter)
    start: Params
    bounds: Bounds
    seed: SeedPolicy
    critic: Critic
    limits: Limits
    search: Search
    comfyui: Comfy
    output_dir: Path
    data: Mapping[str, Any]  # the document as run (overrides applied), for the run folder
    knobs: tuple[knob_rules.Knob, ...] = ()
    refine: Refine | None = None

    def bind(self, params: Params, init: tuple[str, float] | None = None,
             mask: str | None = None) -> dict[str, Any]:
        """The workflow to submit for `params`; with `init` (the uploaded image's name and a
        denoise), the refine workflow that starts from that image; with `mask` too (the
        uploaded mask's name), the one that repaints only the mask's white."""
        values = {target: getattr(params, name) for target, name in self.bindings}
        chosen = dict(params.knobs)
        values.update({target: chosen[k.name] for k in self.knobs for target in k.targets
                       if k.name in chosen})
        if init is None or self.refine is None:
            return workflow.bind(self.workflow, values)
        values.update({refine_rules.INIT_IMAGE: init[0], self.refine.graph.denoise: init[1]})
        if mask is None:
            return workflow.bind(self.refine.graph.workflow, values)
        values[refine_rules.INIT_MASK] = mask
        return workflow.bind(self.refine.graph.inpaint, values)


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
    path = yamldoc.relative_path(doc.path.parent, data["workflow"])
    if not doc.allow_outside and specfiles.outside(path, doc.path.parent):
        return  # lint says so; nothing is read from there
    try:
        flow = workflow.load(path)
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


def build(doc: Document) -> Spec:
    d = lint.with_defaults(doc.data)
    spec_dir = doc.path.parent
    workflow_path = yamldoc.relative_path(spec_dir, d["workflow"])
    runs = os.environ.get("IMITATOES_RUNS")
    flow = workflow.load(workflow_path)
    knobs = knob_rules.build(d.get("knobs") or {}, flow)
    start = replace(_params(d["start"]), knobs=tuple((k.name, k.start) for k in knobs))
    return Spec(
        path=doc.path, name=d["name"], goal=d["goal"], requirements=tuple(d["requirements"]),
        workflow_path=workflow_path, workflow=flow, knobs=knobs,
        refine=refine_settings(d.get("refine"), flow, spec_dir),
        bindings=tuple(d["bindings"].items()), start=start,
        bounds=_bounds(d["bounds"]), seed=SeedPolicy(**d["seed"]),
        critic=replace(_critic(d["critic"], spec_dir), knobs=knobs,
                       regions=bool((d.get("refine") or {}).get("repair") is not None)),
        limits=Limits(**d["limits"]), search=Search(**d.get("search") or {"verify_done": False}),
        comfyui=Comfy(**{**d["comfyui"],
                                                       "url": d["comfyui"]["url"].rstrip("/")}),
        output_dir=Path(runs) if runs else yamldoc.relative_path(spec_dir, d["output"]["dir"]),
        data=doc.data)


def refine_settings(d: Mapping[str, Any] | None, flow: Mapping[str, Any], spec_dir: Path
                    ) -> Refine | None:
    """The spec's refine section with its graph (WorkflowError when none can be made)."""
    if not d:
        return None
    source = workflow.load(yamldoc.relative_path(spec_dir, d["workflow"])) \
        if d.get("workflow") else flow
    full = lint.with_defaults({"refine": dict(d)})["refine"]
    r = full["denoise"]
    repair = full.get("repair")
    return Refine(float(d["after_score"]), Range(r["min"], r["max"], r["max_delta"]),
                  float(r["start"]), refine_rules.graph(source),
                  Repair(**repair) if repair is not None else None)


def _params(d: Mapping[str, Any]) -> Params:
    return Params(prompt=d["prompt"], negative=d["negative"], cfg=float(d["cfg"]),
                  steps=int(d["steps"]), seed=int(d["seed"]))


def _bounds(d: Mapping[str, Any]) -> Bounds:
    steps = d["steps"]
    return Bounds(cfg=Range(**{k: float(v) for k, v in d["cfg"].items()}),
                  steps=Range(int(steps["min"]), int(steps["max"]), int(steps["max_delta"])),
                  prompt_max_chars=d["prompt"]["max_chars"],
                  negative_max_terms=d["negative"]["max_terms"])


def critic_for(url: str, model: str) -> Critic:
    """A critic with every other setting at its default (doctor without a spec)."""
    d = lint.with_defaults({"critic": {"model": model, "url": url}})["critic"]
    return _critic(d, Path.cwd())


def _critic(d: Mapping[str, Any], spec_dir: Path) -> Critic:
    value = d.get("prompt_template")
    if value is None:
        text = template.default_template()
    else:
        path = template.template_path(value, spec_dir)
        text = specfiles.read_text(path, specfiles.TEMPLATE_CAP) if path else value
    fields = {k: v for k, v in d.items() if k not in ("image", "prompt_template", "verifier")}
    fields["verifier"] = (d.get("verifier") or {}).get("model")
    fields["url"] = fields["url"].rstrip("/")
    return Critic(**fields, image=ImageGuard(**d["image"]), prompt_template=text)
