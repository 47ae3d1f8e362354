"""A goal spec as the loop uses it: frozen dataclasses, read by spec.load. Imports no YAML or
JSON Schema, so the loop and the stand-ins can use it without the loader."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from imitatoes.spec import knobs as knob_rules
from imitatoes.workflow import refine_graph as refine_rules

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
        texts, numbers = (d["prompt"], d["negative"]), (d["cfg"], d["steps"], d["seed"])
        if not all(isinstance(t, str) for t in texts) or not all(
                isinstance(n, int | float) and not isinstance(n, bool) for n in numbers) or \
                not all(isinstance(n, int) for n in numbers[1:]):
            raise ValueError("params are not text, a cfg and whole steps and seed")
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
    prompt_max_weight: float = 1.5  # a weighted term: 2 - this .. this
    rewrite_keeps: float = 0.5  # a rewrite keeps at least this share of the goal's words


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
class CriticConfig:
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
    # auto: each step decides from the evidence (loop/strategy.py); a spec without one gets
    # auto unless it names candidates or proposals (spec/load.search_settings); built in
    # code, Search() is the plain one image a step
    strategy: str = "fixed"


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
class ComfyConfig:
    url: str
    connect_timeout: float
    render_timeout: float
    timeout: float = 30.0
    free_before_critique: bool = False
    max_image_mb: float = 100.0
    max_image_pixels: int = 8192 * 8192
    api_key_env: str | None = None  # the name of the variable, never the key
    parallel: int = 1


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
    critic: CriticConfig
    limits: Limits
    search: Search
    comfyui: ComfyConfig
    output_dir: Path
    output_why: str  # which part of the one rule chose output_dir, for the first line a run prints
    data: Mapping[str, Any]  # the document as run (overrides applied), for the run folder
    knobs: tuple[knob_rules.Knob, ...] = ()
    refine: Refine | None = None
    memory: Path | None = None  # the store of memory across runs (None: off)
