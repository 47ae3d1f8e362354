"""The loop: render, critique, patch, again; until done or the limits. Plain Python: it takes
a renderer and a critic, owns the run's state and tells listeners what happens as events.
It never touches the network or the disk itself."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from . import briefing, patch
from .briefing import Tried
from .errors import ImitatoesError
from .spec import Params, Spec
from .verdict import Judgement

MAX_CRITIC_FAILURES = 3  # in a row: the critic is not working, stop instead of burning renders
HISTORY_KEPT = 50  # the most a critic may be shown (critic.history); older rounds stay on disk


@dataclass(frozen=True)
class Rendered:
    image: bytes
    prompt_id: str
    seconds: float


class Renderer(Protocol):
    def render(self, workflow: dict[str, Any],
               on_progress: Callable[[int, int], None]) -> Rendered: ...

    def interrupt(self) -> None: ...


class Critic(Protocol):
    def judge(self, image: bytes, prompt: str) -> Judgement: ...

    def unload(self) -> None: ...


class CriticFailing(ImitatoesError):
    pass


@dataclass(frozen=True)
class Event:
    kind: str  # run_started iteration_started progress rendered critiquing verdict applied
    #            loop_ended done limits_reached interrupted error
    loop: int = 0
    iteration: int = 0
    data: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Event], None]


@dataclass
class Best:
    key: str
    score: float
    params: Params


@dataclass
class RunState:
    """Everything needed to continue a run; the run folder's state.json is this, as JSON."""

    params: Params  # what the next render uses
    loop: int = 1
    iteration: int = 0  # iterations finished in the current loop
    last_loop: int = 1  # the loop budget ends with this loop
    renders: int = 0
    status: str = "running"  # running done limits interrupted failed
    best: Best | None = None
    done_key: str | None = None
    history: list[Tried] = field(default_factory=list)
    instruction: str = ""
    failures: int = 0  # critic failures in a row
    pending: dict[str, Any] | None = None  # a render saved but not yet judged
    in_progress: bool = False  # saved mid-iteration (a crash, an error, Ctrl-C)
    stalled: bool = False  # the last verdict changed nothing: the next image would repeat

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> RunState:
        best = d.get("best")
        # An iteration that did not finish runs again under the same number (judging its
        # saved render, if it has one), so no number is skipped and no budget lost.
        iteration = d["iteration"] - (1 if d.get("in_progress") else 0)
        return RunState(
            params=Params(**d["params"]), loop=d["loop"], iteration=iteration,
            last_loop=d["last_loop"], renders=d["renders"], status=d["status"],
            best=Best(best["key"], best["score"], Params(**best["params"])) if best else None,
            done_key=d.get("done_key"),
            history=[Tried(**{**t, "params": Params(**t["params"])}) for t in d["history"]],
            instruction=d.get("instruction", ""), failures=d.get("failures", 0),
            pending=d.get("pending"), stalled=d.get("stalled", False))


def key(loop: int, iteration: int) -> str:
    return f"loop_{loop:02d}_iter_{iteration:02d}"


def first_state(spec: Spec) -> RunState:
    return RunState(params=spec.start, last_loop=spec.limits.max_loops)


def continued(state: RunState, spec: Spec, instruction: str) -> RunState:
    """A finished run with a further instruction: a fresh loop budget after the last loop."""
    next_loop = state.loop + 1 if state.iteration else state.loop
    return replace(state, loop=next_loop, iteration=0, status="running", done_key=None,
                   last_loop=next_loop + spec.limits.max_loops - 1, failures=0, stalled=False,
                   instruction=" ".join(filter(None, [state.instruction, instruction])))


class Engine:
    def __init__(self, spec: Spec, renderer: Renderer, critic: Critic,
                 listeners: Iterable[Listener] = (), rng: random.Random | None = None,
                 reuse: Callable[[str], tuple[bytes, Params] | None] | None = None) -> None:
        self.spec, self.renderer, self.critic = spec, renderer, critic
        self.listeners = list(listeners)
        self.rng = rng or random.Random()
        # A render saved before a crash (image and the params it was made with), judged
        # instead of being rendered again.
        self.reuse = reuse or (lambda _key: None)

    def emit(self, kind: str, at: RunState, **data: Any) -> None:
        event = Event(kind, at.loop, at.iteration, data)
        for listener in self.listeners:
            listener(event)

    def run(self, state: RunState) -> RunState:
        self.emit("run_started", state, state=state)
        try:
            while state.status == "running":
                self._iteration(state)
        except KeyboardInterrupt:
            state.status = "interrupted"
            self.renderer.interrupt()
            self.emit("interrupted", state, state=state)
            raise
        except ImitatoesError as exc:
            state.status = "failed"
            self.emit("error", state, state=state, message=str(exc))
            raise
        return state

    def _iteration(self, state: RunState) -> None:
        if state.iteration == 0:
            self._start_loop(state)
        state.iteration += 1
        state.in_progress = True
        k = key(state.loop, state.iteration)
        saved = self.reuse(k)
        if saved:
            state.params = saved[1]
        elif self.spec.seed.policy == "random":
            state.params = replace(state.params, seed=patch.new_seed(self.rng))
        params = state.params
        self.emit("iteration_started", state, key=k, params=params)
        rendered = self._render(state, k, params, saved[0] if saved else None)
        self.emit("critiquing", state, key=k)
        prompt = briefing.critic_prompt(self.spec, params, state.loop, state.iteration,
                                        state.history, state.instruction)
        judgement = self.critic.judge(rendered.image, prompt)
        self.emit("verdict", state, key=k, judgement=judgement, prompt=prompt)
        self._apply(state, k, params, judgement)
        state.pending, state.in_progress = None, False
        self._next(state, k)

    def _start_loop(self, state: RunState) -> None:
        if state.loop > 1 and self.spec.seed.policy == "per_loop":
            state.params = replace(state.params, seed=patch.new_seed(self.rng))
        self.emit("loop_started", state, params=state.params)

    def _render(self, state: RunState, k: str, params: Params, saved: bytes | None) -> Rendered:
        if saved is not None:  # rendered before a crash: judge it, do not render it again
            prompt_id = (state.pending or {}).get("prompt_id", "")
            rendered = Rendered(saved, prompt_id, 0.0)
            self.emit("rendered", state, key=k, rendered=rendered, reused=True, params=params,
                      state=state)
            return rendered
        if self.spec.critic.unload_before_render and state.renders:
            self.critic.unload()
        rendered = self.renderer.render(
            self.spec.bind(params),
            lambda value, maximum: self.emit("progress", state, key=k, value=value,
                                             max=maximum))
        state.renders += 1
        state.pending = {"key": k, "prompt_id": rendered.prompt_id}
        self.emit("rendered", state, key=k, rendered=rendered, reused=False, params=params,
                  state=state)
        return rendered

    def _apply(self, state: RunState, k: str, params: Params, judgement: Judgement) -> None:
        verdict = judgement.verdict
        if verdict is None:
            state.failures += 1
            state.stalled = False  # asking again may help: the critic did not answer
            _remember(state, Tried(state.loop, state.iteration, params, None,
                                       f"(no usable verdict: {judgement.error})", "nothing"))
            self.emit("applied", state, key=k, patch=None, reverted=None, score=None)
            if state.failures >= MAX_CRITIC_FAILURES:
                raise CriticFailing(f"the critic gave no usable verdict {state.failures} times "
                                    f"in a row (last: {judgement.error}); check the model and "
                                    "its prompt template, then resume the run")
            return
        state.failures = 0
        reverted = None
        best = state.best
        if best is None or verdict.score > best.score:
            state.best = Best(k, verdict.score, params)
            base = params
        elif verdict.score < best.score:  # a regression: go back to the best and change that
            base, reverted = best.params, best.key
        else:
            base = params
        if verdict.done:
            state.done_key = k
            _remember(state, Tried(state.loop, state.iteration, params, verdict.score,
                                       verdict.reason, "nothing (done)"))
            self.emit("applied", state, key=k, patch=None, reverted=None, score=verdict.score)
            return
        p = patch.apply(base, verdict.changes, self.spec.bounds, self.spec.seed, self.rng)
        state.params = p.params
        # Nothing the critic asked for could be applied (refused, or already there): the next
        # render would repeat this one, unless the seed policy draws a new seed each time.
        state.stalled = p.params == params and self.spec.seed.policy != "random"
        applied = p.summary() if reverted is None else f"back to {reverted}; {p.summary()}"
        _remember(state, Tried(state.loop, state.iteration, params, verdict.score,
                                   verdict.reason, applied))
        self.emit("applied", state, key=k, patch=p, reverted=reverted, score=verdict.score)

    def _next(self, state: RunState, k: str) -> None:
        if state.done_key:
            state.status = "done"
            self.emit("done", state, key=k, state=state)
            return
        if state.stalled and not (self.spec.seed.policy == "per_loop"
                                  and state.loop < state.last_loop):
            state.status = "limits"  # repeating the same image is no way to get anywhere
            self.emit("stalled", state, key=k)
            self.emit("limits_reached", state, state=state)
            return
        if state.iteration < self.spec.limits.iterations_per_loop and not state.stalled:
            self.emit("iteration_ended", state, key=k, state=state)
            return
        self.emit("loop_ended", state, key=k, state=state)  # stalled: a new seed is the way on
        if state.loop >= state.last_loop:
            state.status = "limits"
            self.emit("limits_reached", state, state=state)
            return
        # No reset needed here: every patch starts from the best so far (see _apply), so the
        # next loop never starts from drift.
        state.loop += 1
        state.iteration = 0
        self.emit("iteration_ended", state, key=k, state=state)


def _remember(state: RunState, tried: Tried) -> None:
    state.history.append(tried)
    del state.history[:-HISTORY_KEPT]  # state.json stays small however long the run
