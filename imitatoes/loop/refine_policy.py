"""When the loop refines and how: which image the next render starts from, how far it may
move from it (denoise) and which region of it is repainted (refine.repair). Plain rules on
the run's state; the engine does the uploading and rendering."""

from __future__ import annotations

from collections.abc import Sequence

from imitatoes.loop import regions as repair_rules
from imitatoes.loop.checklist import Item
from imitatoes.loop.patch import Refusal
from imitatoes.loop.state import RunState
from imitatoes.spec.model import Refine


def enter(config: Refine | None, state: RunState) -> None:
    """Once the best image scores at least refine.after_score, each render starts from it;
    when a refine beats it, from the new best (at the denoise reached so far)."""
    best = state.best
    if config is None or best is None or best.score < config.after_score:
        return
    if state.refine is None or state.refine.get("from") != best.key:
        denoise = state.refine["denoise"] if state.refine else config.start
        state.refine = {"from": best.key, "denoise": denoise}


def adapt_denoise(config: Refine | None, state: RunState, score: float) -> str:
    """After a refine render: less denoise when it scored below the image it came from (stay
    closer to it), more when it scored the same (too little changed). Says what moved."""
    best = state.best
    if config is None or state.refine is None or best is None or score > best.score:
        return ""
    old = state.refine["denoise"]
    step = -config.denoise.max_delta if score < best.score else config.denoise.max_delta
    new = round(min(max(old + step, config.denoise.min), config.denoise.max), 4)
    state.refine["denoise"] = new
    return f"refine denoise {old:g} -> {new:g}" if new != old else ""


def choose_region(config: Refine | None, state: RunState, key: str, items: Sequence[Item]
                  ) -> Refusal | None:
    """refine.repair: the first unmet requirement the critic located in image `key`, when
    that image is the one the next refine starts from; a region that cannot be used is
    refused (and recorded), and the next refine repaints the whole image."""
    repair = config.repair if config else None
    if repair is None or state.refine is None or state.best is None or state.best.key != key:
        return None
    state.refine.pop("region", None)
    state.refine.pop("mask", None)
    for item in items:
        if item.met is False and item.region is not None:
            box, why = repair_rules.accept(item.region, repair.min_share, repair.max_share)
            if box is None:
                return Refusal("region", item.region, f"{item.requirement}: {why}")
            state.refine["region"] = {"box": box.as_list(), "requirement": item.requirement,
                                      "fix": item.fix}
            return None
    return None
