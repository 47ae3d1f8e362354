"""When the loop refines and how: which image the next render starts from, how far it may
move from it (denoise) and which region of it is repainted (refine.repair). Pure rules: each
takes the refine state and returns the next one; the binder does the uploading."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from imitatoes.loop import regions
from imitatoes.loop.checklist import Item
from imitatoes.loop.patch import Refusal
from imitatoes.loop.state import Best, RefineState, Region
from imitatoes.spec.model import Refine


def enter(config: Refine | None, best: Best | None, refine: RefineState | None
          ) -> RefineState | None:
    """Once the best image scores at least refine.after_score, each render starts from it;
    when a refine beats it, from the new best (at the denoise reached so far)."""
    if config is None or best is None or best.score < config.after_score:
        return refine
    if refine is None or refine.source != best.key:
        return RefineState(best.key, refine.denoise if refine else config.start)
    return refine


def adapt_denoise(config: Refine | None, refine: RefineState | None, best: Best | None,
                  score: float) -> tuple[RefineState | None, str]:
    """After a refine render: less denoise when it scored below the image it came from (stay
    closer to it), more when it scored the same (too little changed). Says what moved."""
    if config is None or refine is None or best is None or score > best.score:
        return refine, ""
    old = refine.denoise
    step = -config.denoise.max_delta if score < best.score else config.denoise.max_delta
    new = round(min(max(old + step, config.denoise.min), config.denoise.max), 4)
    said = f"refine denoise {old:g} -> {new:g}" if new != old else ""
    return replace(refine, denoise=new), said


def choose_region(config: Refine | None, refine: RefineState | None, best: Best | None,
                  key: str, items: Sequence[Item]) -> tuple[RefineState | None, Refusal | None]:
    """refine.repair: the first unmet requirement the critic located in image `key`, when
    that image is the one the next refine starts from; a region that cannot be used is
    refused (and recorded), and the next refine repaints the whole image."""
    repair = config.repair if config else None
    if repair is None or refine is None or best is None or best.key != key:
        return refine, None
    whole = replace(refine, region=None)
    for item in items:
        if item.met is False and item.region is not None:
            box, why = regions.accept(item.region, repair.min_share, repair.max_share)
            if box is None:
                return whole, Refusal("region", item.region, f"{item.requirement}: {why}")
            return replace(refine, region=Region(tuple(box.as_list()), item.requirement,
                                                 item.fix)), None
    return whole, None
