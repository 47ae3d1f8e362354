"""What an iteration spends its renders on. `search.strategy: fixed` spends what the spec says
every time; `auto` (the default unless a spec names candidates or proposals) decides from
the evidence so far (benchmarks/search.py measures it):

- one image a step while changes help;
- seed candidates, new seeds first, when a requirement is still unmet after words about it
  were added to the prompt: the prompt may be right and the seed wrong (a composition the
  seed will not give);
- the critic's alternative changes when seed candidates did not help either: the prompt or a
  knob is the problem after all;
- seed candidates when the next change would repeat an image already made (where a fixed
  strategy stops as stalled, auto moves the seed: seeds are its to move);
- one image when fewer than three renders are left: a spread cannot finish;
- nothing more (the run stops as stalled, repeats.avoid asks `exhausted`) once seeds were
  spread twice and other changes once since the best last rose.

A spread is rendered one image at a time and ends at the first image that is done or better
than the best so far (engine.Engine._enough), so it costs three renders only when it finds
nothing. Pure: the history in, the step out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imitatoes.loop import memory
from imitatoes.loop.state import Tried
from imitatoes.spec.model import Search

SPREAD = 3  # candidates or proposals in an auto step that spreads


@dataclass(frozen=True)
class Step:
    candidates: int  # images this iteration
    proposals: int  # alternative changes asked of the critic this iteration
    kind: str  # fixed, one, seeds or proposals
    why: str = ""
    fresh_first: bool = False  # the seed is the suspect: new seeds before the one in use


def step(search: Search, history: Sequence[Tried], renders: int,
         max_renders: int | None, checklist: Sequence[str] = ()) -> Step:
    if search.strategy != "auto":
        return Step(search.candidates, search.proposals, "fixed")
    if max_renders is not None and max_renders - renders < SPREAD:
        return Step(1, 1, "one", "fewer renders left than a spread needs")
    if not history:
        return Step(1, 1, "one")
    last = history[-1]
    if "again?" in last.applied and last.made != "seeds":
        return Step(SPREAD, 1, "seeds", "the next change would repeat an image: other seeds")
    if len(history) < 2:
        return Step(1, 1, "one")
    before = history[-2]
    stuck = last.score is not None and before.score is not None and last.score <= before.score
    if last.made == "seeds" and stuck:
        return Step(1, SPREAD, "proposals", "other seeds did not help: ask for other changes")
    missed = _missed(history, checklist)
    if missed and last.made != "seeds":
        return Step(SPREAD, 1, "seeds", f'{missed} was still unmet after words for it: '
                    "try other seeds", fresh_first=True)
    return Step(1, 1, "one")


def exhausted(history: Sequence[Tried], now: str = "") -> bool:
    """Since the best score last rose, auto has spread both seeds and the critic's other
    changes (`now`: what the current step spent) and neither helped: more renders would
    repeat the attempt, so the run stops as stalled, as a fixed one would."""
    best, since = -1.0, []
    for t in history:
        if t.score is not None and t.score > best:
            best, since = t.score, []
        else:
            since.append(t.made)
    spent = [*since, now]
    return spent.count("seeds") >= 2 and "proposals" in spent


def _missed(history: Sequence[Tried], checklist: Sequence[str]) -> str:
    """A requirement the last image still did not meet although the words added to its
    prompt were about it (they share a word): the seed may be what stands in the way."""
    last = history[-1]
    judged = [t for t in history[:-1] if t.score is not None]
    if last.score is None or not judged:
        return ""
    base = memory.closest(judged, last)
    added = [c.value for c in memory.changes(base.params, last.params) if c.kind == "prompt"]
    said = frozenset().union(*(memory.words(str(a)) for a in added))
    return next((f'"{r}"' for r in checklist if r not in last.met and memory.words(r) & said),
                "")
