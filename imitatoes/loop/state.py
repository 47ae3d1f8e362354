"""A run's state: everything needed to continue it. The engine owns the live one; listeners
get copies; the run folder's state.json is `RunState.to_dict()`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imitatoes.loop.patch import within
from imitatoes.spec.model import Params, Spec, as_dict

KEY = re.compile(r"loop_\d{2,}_iter_\d{2,}(_c\d+)?")  # an iteration's (or candidate's) name
STATUSES = ("running", "done", "limits", "interrupted", "failed")
HISTORY_KEPT = 50  # the most a critic may be shown (critic.history); older rounds stay on disk


@dataclass(frozen=True)
class Tried:
    """One earlier round, as the critic sees it in {{history}}."""

    loop: int
    iteration: int
    params: Params
    score: float | None
    reason: str
    applied: str  # e.g. 'prompt + "red circle"; steps 20 -> 30', or "nothing"
    gained: tuple[str, ...] = ()  # requirements it met that the best so far did not
    lost: tuple[str, ...] = ()  # requirements the best met that it did not
    made: str = ""  # search.strategy: what the step spent its renders on (loop/strategy.py)
    met: tuple[str, ...] = ()  # the requirements this image met (memory learns from them)


@dataclass(frozen=True)
class Best:
    """The best image so far. Its score was given against the checklist `against`; when the
    checklist changes (an instruction, an edited spec) it is scored again (`rescored`)."""

    key: str
    score: float
    params: Params
    against: tuple[str, ...] = ()  # the requirements it was judged on ((): a run before this)
    met: tuple[str, ...] = ()  # those it met

    def rescored(self, checklist: Sequence[str]) -> Best:
        """Its score against `checklist`: a requirement it was never judged on is unmet."""
        if not self.against or tuple(checklist) == self.against:
            return self
        met = tuple(r for r in checklist if r in self.met)
        return replace(self, score=len(met) / len(checklist) if checklist else 0.0,
                       against=tuple(checklist), met=met)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Best:
        return Best(checked_key(d["key"]), _number(d["score"]), Params.from_dict(d["params"]),
                    tuple(map(str, d.get("against", ()))), tuple(map(str, d.get("met", ()))))


@dataclass(frozen=True)
class Region:
    """refine.repair: the region of the source image the next refine repaints, and why."""

    box: tuple[float, float, float, float]  # 0..1000 of the image, as the critic answers
    requirement: str
    fix: str = ""


@dataclass(frozen=True)
class RefineState:
    """Refine mode: renders start from the image `source` (a key) at `denoise`."""

    source: str
    denoise: float
    region: Region | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"from": self.source, "denoise": self.denoise}
        if self.region is not None:
            d["region"] = {"box": list(self.region.box), "requirement": self.region.requirement,
                           "fix": self.region.fix}
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> RefineState:
        region = d.get("region")
        return RefineState(checked_key(d["from"]), _number(d["denoise"]), Region(
            tuple(_number(v) for v in region["box"]), str(region["requirement"]),
            str(region.get("fix", ""))) if region else None)


@dataclass(frozen=True)
class Pending:
    """A render saved but not yet judged (a crash between the two)."""

    key: str
    prompt_id: str


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return value


def checked_key(value: Any) -> str:
    """An iteration's name as read from a file: loop_NN_iter_NN, or a candidate's."""
    if not isinstance(value, str) or not KEY.fullmatch(value):
        raise ValueError(f"{str(value)[:40]!r} is not an iteration name like loop_01_iter_02")
    return value


def _count(value: Any, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{str(value)[:40]!r} is not a whole number of at least {least}")
    return value


@dataclass
class RunState:
    params: Params  # what the next render uses
    loop: int = 1
    iteration: int = 0  # iterations finished in the current loop
    last_loop: int = 1  # the loop budget ends with this loop ...
    budget_start: int = 1  # ... and began with this one (limits.max_loops loops in all)
    renders: int = 0
    status: str = "running"  # running done limits interrupted failed
    best: Best | None = None
    done_key: str | None = None
    history: list[Tried] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)  # the user's, each a requirement
    failures: int = 0  # critic failures in a row
    pending: Pending | None = None  # a render saved but not yet judged
    in_progress: bool = False  # saved mid-iteration (a crash, an error, Ctrl-C)
    stalled: bool = False  # the last verdict changed nothing: the next image would repeat
    proposals: list[Params] = field(default_factory=list)  # the critic's alternatives, to try
    refine: RefineState | None = None
    # Everything rendered, by what decides the image (fingerprint), with the first key that
    # showed it: the loop never pays for the same image twice.
    rendered: dict[str, str] = field(default_factory=dict)
    from_memory: tuple[str, ...] = ()  # what memory changed in the start values (loop/memory)

    def snapshot(self) -> RunState:
        """A copy a listener may keep: every field is immutable except the lists."""
        return replace(self, history=list(self.history), instructions=list(self.instructions),
                       proposals=list(self.proposals), rendered=dict(self.rendered))

    def checklist(self, spec_requirements: Sequence[str]) -> tuple[str, ...]:
        """What the image must meet now: the spec's requirements, then the user's."""
        return (*spec_requirements, *self.instructions)

    def remember(self, tried: Tried) -> None:
        self.history.append(tried)
        del self.history[:-HISTORY_KEPT]  # state.json stays small however long the run

    def to_dict(self) -> dict[str, Any]:
        d = as_dict(replace(self, refine=None))
        d["refine"] = self.refine.to_dict() if self.refine else None
        if self.best is not None:
            d["best"].update(against=list(self.best.against), met=list(self.best.met))
        for t in d["history"]:  # as JSON reads back: lists
            t.update(gained=list(t["gained"]), lost=list(t["lost"]), met=list(t["met"]))
        d["from_memory"] = list(self.from_memory)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunState:
        best = d.get("best")
        # An iteration that did not finish runs again under the same number (judging its
        # saved render, if it has one), so no number is skipped and no budget lost.
        iteration = _count(d["iteration"]) - (1 if d.get("in_progress") else 0)
        if d["status"] not in STATUSES:
            raise ValueError(f"status {str(d['status'])[:40]!r} is not one of {STATUSES}")
        pending = d.get("pending")
        return RunState(
            params=Params.from_dict(d["params"]), loop=_count(d["loop"], 1),
            iteration=max(iteration, 0), last_loop=_count(d["last_loop"], 1),
            budget_start=_count(d.get("budget_start", 1), 1),
            renders=_count(d["renders"]), status=d["status"],
            best=Best.from_dict(best) if best else None,
            done_key=checked_key(d["done_key"]) if d.get("done_key") else None,
            history=[Tried(**{**t, "params": Params.from_dict(t["params"]),
                              "gained": tuple(t.get("gained", ())),
                              "lost": tuple(t.get("lost", ())),
                              "met": tuple(t.get("met", ()))}) for t in d["history"]],
            instructions=list(d.get("instructions") or
                              ([d["instruction"]] if d.get("instruction") else [])),
            failures=_count(d.get("failures", 0)),
            proposals=[Params.from_dict(p) for p in d.get("proposals", [])],
            pending=Pending(checked_key(pending["key"]), str(pending.get("prompt_id", "")))
            if pending else None,
            stalled=d.get("stalled", False),
            refine=RefineState.from_dict(d["refine"]) if d.get("refine") else None,
            rendered={str(f): checked_key(k) for f, k in (d.get("rendered") or {}).items()},
            from_memory=tuple(map(str, d.get("from_memory") or ())))


def fingerprint(params: Params, refine: RefineState | None) -> str:
    """What decides an image, as a short digest: the params (knobs included) and, in refine
    mode, the image it starts from, the denoise and the region repainted."""
    decided = [params.prompt, params.negative, params.cfg, params.steps, params.seed,
               [list(k) for k in params.knobs], refine.to_dict() if refine else None]
    text = json.dumps(decided, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def key(loop: int, iteration: int) -> str:
    """An iteration's name in the run folder: loop_01_iter_02."""
    return f"loop_{loop:02d}_iter_{iteration:02d}"


def first_state(spec: Spec) -> RunState:
    return RunState(params=spec.start, last_loop=spec.limits.max_loops)


def within_limits(state: RunState, spec: Spec) -> tuple[RunState, tuple[str, ...]]:
    """The saved state under the spec as it is now (edited, or --set on resume): the loop
    budget follows limits.max_loops (never ending before the loop under way) and the
    parameters, the best's included, move inside the bounds. Notes say what changed."""
    last = max(state.budget_start + spec.limits.max_loops - 1, state.loop)
    notes = [f"the loop budget now ends after loop {last} (was {state.last_loop})"] \
        if last != state.last_loop else []
    params, changed = within(state.params, spec.bounds, spec.knobs)
    best = state.best
    if best is not None:
        best = replace(best, params=within(best.params, spec.bounds, spec.knobs)[0])
    if state.refine is not None and spec.refine is None:
        notes.append("refine mode is off now (the spec has no refine section)")
    refine = state.refine if spec.refine is not None else None
    return replace(state, last_loop=last, params=params, best=best, refine=refine), \
        (*notes, *changed)


def continued(state: RunState, spec: Spec, instruction: str) -> RunState:
    """A finished run taken further: a fresh loop budget after the last loop, and the user's
    instruction, if any, one more requirement the image must meet."""
    next_loop = state.loop + 1 if state.iteration else state.loop
    return replace(state, loop=next_loop, iteration=0, status="running", done_key=None,
                   budget_start=next_loop, last_loop=next_loop + spec.limits.max_loops - 1,
                   failures=0, stalled=False,
                   instructions=[*state.instructions, *([instruction] if instruction else [])])
