"""Never the same image twice. A run knows every image it rendered by what decides it (the
params, knobs, refine state and seed: state.fingerprint); when the next render would repeat
one, the loop does something else that can change the outcome: the change goes on from the
image just judged instead of the best (the fixes a revert would separate, combined), the
critic's next proposal, a new seed where the seed policy allows, or it stops as stalled.
The choice is said in the record's `applied`, so the table and the report show it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from imitatoes.loop import patch, strategy
from imitatoes.loop.checklist import Item
from imitatoes.loop.patch import Patch
from imitatoes.loop.state import Best, RunState, fingerprint
from imitatoes.loop.verdict import Changes
from imitatoes.spec.model import Params, Spec


def progress(items: Sequence[Item], best: Best | None) -> tuple[tuple[str, ...], ...]:
    """What an image met that the best so far did not, and what the best met that it did not
    (judged per requirement, not by the total)."""
    if best is None or not best.against:
        return (), ()
    met = {i.requirement for i in items if i.met}
    return (tuple(r for r in met if r not in best.met),
            tuple(r for r in best.met if r not in met))


def avoid(spec: Spec, state: RunState, here: Params, reverted: bool, changes: Changes,
          p: Patch, rng: random.Random, made: str = "") -> tuple[Patch, bool]:
    """The patch for the next render, moved off any image already rendered; True when
    nothing is left to try (stalled). `made`: what this step of search auto spent."""
    if _reseeds_anyway(spec, state):
        return p, False
    seen = state.rendered.get(fingerprint(p.params, state.refine))
    if seen is None:
        return p, False
    said = f"{seen} again?"
    if reverted:
        combined = patch.apply(here, changes, spec.bounds, spec.seed, rng, spec.knobs,
                               spec.goal)
        if _new(state, combined.params):
            return _noted(combined, f"{said} the change goes on from this image instead"), False
    for proposal in list(state.proposals):
        state.proposals.remove(proposal)
        if _new(state, proposal):
            return _noted(replace(p, params=proposal), f"{said} the critic's other change "
                          "instead"), False
    # seeds are the critic's to move ("new" is one of them), or search.strategy auto's
    # until it has tried seeds and other changes in vain
    auto = spec.search.strategy == "auto" and not strategy.exhausted(state.history, made)
    if spec.seed.policy == "critic" or auto:
        seed = patch.new_seed(rng)
        return _noted(replace(p, params=replace(p.params, seed=seed)),
                      f"{said} a new seed instead ({seed})"), False
    return _noted(p, f"{said} nothing else to try: stalled"), True


def _reseeds_anyway(spec: Spec, state: RunState) -> bool:
    """The seed will change before the next render whatever the patch says."""
    ending = state.iteration >= spec.limits.iterations_per_loop and state.loop < state.last_loop
    return spec.seed.policy == "random" or (spec.seed.policy == "per_loop" and ending)


def _new(state: RunState, params: Params) -> bool:
    return fingerprint(params, state.refine) not in state.rendered


def _noted(p: Patch, note: str) -> Patch:
    return replace(p, applied=(*p.applied, note))
