"""A run's state: everything needed to continue it. The engine owns the live one; listeners
get copies; the run folder's state.json is `RunState.to_dict()`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from imitatoes.loop.patch import within
from imitatoes.spec.model import Params, Spec, as_dict

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


@dataclass(frozen=True)
class Best:
    key: str
    score: float
    params: Params


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
    pending: dict[str, Any] | None = None  # a render saved but not yet judged
    in_progress: bool = False  # saved mid-iteration (a crash, an error, Ctrl-C)
    stalled: bool = False  # the last verdict changed nothing: the next image would repeat
    proposals: list[Params] = field(default_factory=list)  # the critic's alternatives, to try
    # Refine mode: renders start from the best image ("from") at this denoise; "image" is
    # its name on ComfyUI after the last upload.
    refine: dict[str, Any] | None = None

    def snapshot(self) -> RunState:
        """A copy a listener may keep: every field is immutable except the two containers."""
        return replace(self, history=list(self.history), instructions=list(self.instructions),
                       proposals=list(self.proposals),
                       pending=dict(self.pending) if self.pending is not None else None,
                       refine=dict(self.refine) if self.refine is not None else None)

    def remember(self, tried: Tried) -> None:
        self.history.append(tried)
        del self.history[:-HISTORY_KEPT]  # state.json stays small however long the run

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunState:
        best = d.get("best")
        # An iteration that did not finish runs again under the same number (judging its
        # saved render, if it has one), so no number is skipped and no budget lost.
        iteration = d["iteration"] - (1 if d.get("in_progress") else 0)
        return RunState(
            params=Params.from_dict(d["params"]), loop=d["loop"], iteration=iteration,
            last_loop=d["last_loop"], budget_start=d.get("budget_start", 1),
            renders=d["renders"], status=d["status"],
            best=Best(best["key"], best["score"], Params.from_dict(best["params"]))
            if best else None,
            done_key=d.get("done_key"),
            history=[Tried(**{**t, "params": Params.from_dict(t["params"])})
                     for t in d["history"]],
            instructions=list(d.get("instructions") or
                              ([d["instruction"]] if d.get("instruction") else [])),
            failures=d.get("failures", 0),
            proposals=[Params.from_dict(p) for p in d.get("proposals", [])],
            pending=d.get("pending"), stalled=d.get("stalled", False),
            refine=d.get("refine"))


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
