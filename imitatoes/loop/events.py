"""What the engine tells its listeners: one frozen dataclass per kind of event. Events carry
copies (a `RunState.snapshot()`, frozen params and verdicts), so a listener may keep them and
the order in which listeners are called does not matter.

A listener is any callable that takes an Event. `Handler` is a base for listeners that handle
some kinds: a method `on_<kind>` per kind, checked when the class is defined, so a misspelt
handler is an error at import time rather than a handler that never runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from imitatoes.loop.checklist import Item
from imitatoes.loop.patch import Patch
from imitatoes.loop.ports import Rendered
from imitatoes.loop.search import Contest
from imitatoes.loop.state import RunState
from imitatoes.loop.verdict import Check, Judgement
from imitatoes.spec.model import Params


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = ""  # its name in events.jsonl and in handler names (on_<kind>)
    loop: int
    iteration: int

    def scalars(self) -> dict[str, Any]:
        """The fields a log line can hold as they are (numbers, text, flags)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), str | int | float)}


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    kind = "run_started"
    state: RunState


@dataclass(frozen=True, kw_only=True)
class LoopStarted(Event):
    kind = "loop_started"
    params: Params


@dataclass(frozen=True, kw_only=True)
class IterationStarted(Event):
    kind = "iteration_started"
    key: str
    params: Params


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    kind = "progress"
    key: str
    value: int
    maximum: int


@dataclass(frozen=True, kw_only=True)
class ImageRendered(Event):
    """A render arrived (or, `reused`, one saved before a crash is judged instead)."""

    kind = "rendered"
    key: str
    rendered: Rendered
    reused: bool
    params: Params
    state: RunState
    refine: dict[str, Any] | None = None  # refine mode: from (a key), image, denoise
    mask: bytes | None = None  # refine.repair: the mask of the region repainted


@dataclass(frozen=True, kw_only=True)
class RenderRefused(Event):
    """The renderer answered something that is not an image; it is kept aside, never saved
    under the render's name."""

    kind = "render_refused"
    key: str
    data: bytes
    message: str


@dataclass(frozen=True, kw_only=True)
class Freed(Event):
    """One server let go of its models so the other has the GPU."""

    kind = "freed"
    key: str
    server: str  # "comfyui" (before a critique) or "critic" (before a render)
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Critiquing(Event):
    kind = "critiquing"
    key: str


@dataclass(frozen=True, kw_only=True)
class Judged(Event):
    kind = "verdict"
    key: str
    judgement: Judgement
    prompt: str  # what the critic was told


@dataclass(frozen=True, kw_only=True)
class CandidateJudged(Event):
    """One of an iteration's candidates (search.candidates) has its verdict."""

    kind = "candidate_judged"
    key: str  # loop_01_iter_01_c2
    score: float | None


@dataclass(frozen=True, kw_only=True)
class CandidateChosen(Event):
    """The best candidate goes on: its files become the iteration's (loop_01_iter_01.*)."""

    kind = "candidate_chosen"
    key: str  # the iteration
    chosen: str  # the candidate's key
    candidates: tuple[tuple[str, int, float | None], ...]  # key, seed, score of each


@dataclass(frozen=True, kw_only=True)
class HeadToHead(Event):
    """The new image against the best so far, asked in both orders (search.head_to_head)."""

    kind = "head_to_head"
    key: str
    contest: Contest


@dataclass(frozen=True, kw_only=True)
class DoneRejected(Event):
    """The critic said done; the strict second look (search.verify_done) did not agree."""

    kind = "done_rejected"
    key: str
    failed: tuple[str, ...]  # the requirements the verifier found unmet
    by: str  # the model that checked


@dataclass(frozen=True, kw_only=True)
class Applied(Event):
    """The verdict was folded into the state: the best so far, and the next parameters."""

    kind = "applied"
    key: str
    patch: Patch | None  # None when there was no verdict or it said done
    reverted: str | None  # the best iteration the change started from, after a regression
    score: float | None
    state: RunState
    requirements: tuple[Item, ...] = ()  # each requirement, met or not, as judged
    extra: tuple[Check, ...] = ()  # items of the critic's that are no requirement's


@dataclass(frozen=True, kw_only=True)
class IterationEnded(Event):
    kind = "iteration_ended"
    key: str
    state: RunState


@dataclass(frozen=True, kw_only=True)
class LoopEnded(Event):
    kind = "loop_ended"
    key: str
    state: RunState


@dataclass(frozen=True, kw_only=True)
class Stalled(Event):
    """Nothing the critic asked for could be applied: the next image would repeat the last."""

    kind = "stalled"
    key: str


@dataclass(frozen=True, kw_only=True)
class Done(Event):
    kind = "done"
    key: str
    state: RunState


@dataclass(frozen=True, kw_only=True)
class LimitsReached(Event):
    kind = "limits_reached"
    state: RunState


@dataclass(frozen=True, kw_only=True)
class Interrupted(Event):
    kind = "interrupted"
    state: RunState


@dataclass(frozen=True, kw_only=True)
class Failed(Event):
    kind = "error"
    state: RunState
    message: str


KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (
    RunStarted, LoopStarted, IterationStarted, Progress, ImageRendered, RenderRefused,
    Freed, Critiquing, Judged, DoneRejected, CandidateJudged, CandidateChosen, HeadToHead,
    Applied, IterationEnded, LoopEnded, Stalled, Done, LimitsReached, Interrupted, Failed)}

Listener = Callable[[Event], None]


class Handler:
    """A listener with a method per kind it handles: `def on_rendered(self, event)`."""

    _handlers: ClassVar[dict[type[Event], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = {}
        for name in dir(cls):
            if not name.startswith("on_"):
                continue
            if name[3:] not in KINDS:
                raise TypeError(f"{cls.__name__}.{name} handles no event: the kinds are "
                                f"{', '.join(sorted(KINDS))}")
            handlers[KINDS[name[3:]]] = name
        cls._handlers = handlers

    def __call__(self, event: Event) -> None:
        name = self._handlers.get(type(event))
        if name:
            getattr(self, name)(event)
