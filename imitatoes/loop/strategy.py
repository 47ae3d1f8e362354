"""What an iteration spends its renders on. `search.strategy: fixed` spends what the spec says
every time; `auto` decides from the evidence so far (an experiment: benchmarks/search.py
measures it; see #26):

- one image a step while changes help;
- seed candidates when a prompt change did not raise the score: the prompt may be right and
  the seed wrong (a composition the seed will not give);
- the critic's alternative changes when seed candidates did not help either: the prompt or a
  knob is the problem after all;
- seed candidates when the next change would repeat an image already made (where a fixed
  strategy stops as stalled, auto moves the seed: seeds are its to move);
- one image when fewer than three renders are left: a spread cannot finish.

Pure: the history in, the step out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imitatoes.loop.state import Tried
from imitatoes.spec.model import Search

SPREAD = 3  # candidates or proposals in an auto step that spreads


@dataclass(frozen=True)
class Step:
    candidates: int  # images this iteration
    proposals: int  # alternative changes asked of the critic this iteration
    kind: str  # fixed, one, seeds or proposals
    why: str = ""


def step(search: Search, history: Sequence[Tried], renders: int,
         max_renders: int | None) -> Step:
    if search.strategy != "auto":
        return Step(search.candidates, search.proposals, "fixed")
    if max_renders is not None and max_renders - renders < SPREAD:
        return Step(1, 1, "one", "fewer renders left than a spread needs")
    if not history:
        return Step(1, 1, "one")
    if len(history) < 2 and "again?" not in history[-1].applied:
        return Step(1, 1, "one")
    last = history[-1]
    if "again?" in last.applied and last.made != "seeds":
        return Step(SPREAD, 1, "seeds", "the next change would repeat an image: other seeds")
    before = history[-2]
    stuck = last.score is not None and before.score is not None and last.score <= before.score
    if last.made == "seeds" and stuck:
        return Step(1, SPREAD, "proposals", "other seeds did not help: ask for other changes")
    if stuck and "prompt" in before.applied and last.made != "proposals":
        return Step(SPREAD, 1, "seeds", "a prompt change did not help: try other seeds")
    return Step(1, 1, "one")
