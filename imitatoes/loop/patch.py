"""Applying a verdict's changes to the parameters, inside the spec's bounds. Pure: the critic is
untrusted, so every change is clamped or refused here, and both are recorded."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from imitatoes.loop.verdict import Changes
from imitatoes.spec import knobs as knob_rules
from imitatoes.spec.knobs import Knob
from imitatoes.spec.model import Bounds, Params, Range, SeedPolicy

SEED_MAX = 2**64 - 1  # ComfyUI's KSampler limit
NEW_SEED_MAX = 2**32 - 1  # new seeds stay short enough to read and type


@dataclass(frozen=True)
class Refusal:
    field: str
    asked: object
    reason: str


@dataclass(frozen=True)
class Patch:
    params: Params
    applied: tuple[str, ...]  # what changed, in words: 'cfg 7 -> 8.5', 'prompt + "red circle"'
    refused: tuple[Refusal, ...]

    def summary(self) -> str:
        return "; ".join(self.applied) or "nothing"


def new_seed(rng: random.Random) -> int:
    return rng.randint(0, NEW_SEED_MAX)


def apply(params: Params, changes: Changes, bounds: Bounds, policy: SeedPolicy,
          rng: random.Random, knobs: Sequence[Knob] = (), goal: str = "") -> Patch:
    """The changes on `params`, each inside `bounds`; a whole new prompt is taken only when
    it keeps enough of `goal`'s words. Texts change in this order: rewrite, remove, append,
    weight."""
    applied: list[str] = []
    refused: list[Refusal] = []
    cfg = _number("cfg", params.cfg, changes.cfg, bounds.cfg, applied, refused)
    steps = _number("steps", params.steps, changes.steps, bounds.steps, applied, refused)
    prompt = _rewrite(params.prompt, changes.rewrite, goal, bounds, applied, refused)
    prompt = _remove(prompt, changes.prompt_remove, "prompt", applied, refused)
    prompt = _append_prompt(prompt, changes.prompt_append, bounds.prompt_max_chars,
                            applied, refused)
    prompt = _weight(prompt, changes.weight, bounds, applied, refused)
    negative = _remove(params.negative, changes.neg_remove, "negative", applied, refused)
    negative = _append_negative(negative, changes.neg_append, bounds.negative_max_terms,
                                applied, refused)
    seed = _seed(params.seed, changes.seed, policy, rng, applied, refused)
    new = replace(params, cfg=float(cfg), steps=int(steps), prompt=prompt, negative=negative,
                  seed=seed)
    new = _knobs(new, changes.knobs, knobs, applied, refused)
    return Patch(new, tuple(applied), tuple(refused))


def protect(changes: Changes, prompt: str, met: Sequence[str], unmet: Sequence[str]
            ) -> tuple[Changes, tuple[Refusal, ...]]:
    """search auto: what the image already meets is protected. A term about a met
    requirement (it shares a word with it and with no unmet one) is not taken out nor
    weighted down, and a rewrite that drops a word of one that the prompt has is refused."""
    def guarded(term: str) -> bool:
        said = content_words(bare(term)[0])
        return any(said & content_words(r) for r in met) and \
            not any(said & content_words(r) for r in unmet)

    refused = [Refusal("prompt_remove", t, "it is about a requirement the image meets")
               for t in terms(changes.prompt_remove) if guarded(t)]
    kept = ", ".join(t for t in terms(changes.prompt_remove) if not guarded(t))
    weight = changes.weight
    if weight and weight[1] < 1 and guarded(weight[0]):
        refused.append(Refusal("prompt_weight", weight[0], "it is about a requirement the "
                               "image meets"))
        weight = None
    rewrite = changes.rewrite
    lost = [r for r in met if rewrite and
             (content_words(r) & content_words(prompt)) - content_words(rewrite)]
    if lost:
        refused.append(Refusal("prompt_rewrite", rewrite, f'it drops words of "{lost[0]}", '
                               "a requirement the image meets"))
        rewrite = ""
    return replace(changes, prompt_remove=kept, weight=weight, rewrite=rewrite), \
        tuple(refused)


def _knobs(params: Params, asked: Sequence[tuple[str, object]], knobs: Sequence[Knob],
           applied: list[str], refused: list[Refusal]) -> Params:
    declared = {k.name: k for k in knobs}
    for name, value in asked:
        knob = declared.get(name)
        if knob is None:
            refused.append(Refusal(name, value, "not a knob of this spec"))
            continue
        outcome = knob_rules.change(knob, params.knob(name), value)
        if outcome.refused:
            refused.append(Refusal(name, value, outcome.refused))
        if outcome.applied:
            applied.append(outcome.applied)
            params = params.with_knob(name, outcome.value)
    return params


def _number(name: str, current: float, asked: float | None, r: Range, applied: list[str],
            refused: list[Refusal]) -> float:
    if asked is None:
        return current
    # An int of any size is finite (and math.isfinite would overflow on a 400-digit one).
    if isinstance(asked, bool) or not (isinstance(asked, int) or (
            isinstance(asked, float) and math.isfinite(asked))):
        refused.append(Refusal(name, asked, "not a finite number"))
        return current
    target = min(max(asked, r.min), r.max)
    target = min(max(target, current - r.max_delta), current + r.max_delta)
    if name == "steps":
        target = int(round(target))
    if target != asked:
        why = (f"outside {r.min:g}..{r.max:g}" if not r.min <= asked <= r.max
               else f"more than {r.max_delta:g} from {current:g}")
        refused.append(Refusal(name, asked, f"{why}; clamped to {target:g}"))
    if target != current:
        applied.append(f"{name} {current:g} -> {target:g}")
    return target


def terms(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def _present(term: str, text: str) -> bool:
    """A term is already there when its words stand in the text in that order, as whole words."""
    needle = _norm(term)
    return bool(needle) and f" {needle} " in f" {_norm(text)} "


def _append_prompt(prompt: str, addition: str, max_chars: int, applied: list[str],
                   refused: list[Refusal]) -> str:
    added = []
    for term in terms(addition):
        if _present(term, prompt):
            continue  # already there: nothing to add, nothing to refuse
        candidate = f"{prompt}, {term}" if prompt else term
        if len(candidate) > max_chars:
            refused.append(Refusal("prompt_append", term, f"the prompt would exceed "
                                   f"{max_chars} characters"))
            continue
        prompt = candidate
        added.append(term)
    if added:
        applied.append("prompt + " + ", ".join(f'"{t}"' for t in added))
    return prompt


WEIGHTED = re.compile(r"^\((.+):\s*(-?[0-9]+(?:\.[0-9]+)?)\)$", re.S)
FILLER = {"a", "an", "the", "is", "are", "of", "on", "in", "and", "with", "be", "it"}


def content_words(text: str) -> frozenset[str]:
    """The words that carry meaning, lower case: what a rewrite must keep of the goal, and
    what memory and auto match requirements by."""
    return frozenset(re.findall(r"\w+", text.lower())) - FILLER


def bare(term: str) -> tuple[str, float]:
    """A prompt term without its weight, and the weight: "(red circle:1.3)" -> ("red
    circle", 1.3)."""
    m = WEIGHTED.match(term.strip())
    return (m.group(1).strip(), float(m.group(2))) if m else (term.strip(), 1.0)


def _remove(text: str, asked: str, field: str, applied: list[str],
            refused: list[Refusal]) -> str:
    """Terms taken out, matched without their weights; the prompt never left empty."""
    current, gone = terms(text), []
    for term in terms(asked):
        kept = [c for c in current if _norm(bare(c)[0]) != _norm(term)]
        if len(kept) == len(current):
            refused.append(Refusal(f"{field}_remove", term, f"not a term of the {field}"))
        elif field == "prompt" and not kept:
            refused.append(Refusal("prompt_remove", term, "the prompt would be empty"))
        else:
            current, gone = kept, [*gone, term]
    if not gone:
        return text
    applied.append(f"{field} - " + ", ".join(f'"{t}"' for t in gone))
    return ", ".join(current)


def _weight(prompt: str, asked: tuple[str, float] | None, bounds: Bounds,
            applied: list[str], refused: list[Refusal]) -> str:
    """A term weighted as ComfyUI's text encoders read it, (term:1.3), between
    2 - max_weight and max_weight; weight 1 writes the term bare."""
    if asked is None:
        return prompt
    term, weight = asked
    current = terms(prompt)
    at = next((i for i, c in enumerate(current) if _norm(bare(c)[0]) == _norm(term)), None)
    if at is None:
        refused.append(Refusal("prompt_weight", term, "not a term of the prompt"))
        return prompt
    low, high = 2 - bounds.prompt_max_weight, bounds.prompt_max_weight
    target = round(min(max(weight, low), high), 2)
    if target != weight:
        refused.append(Refusal("prompt_weight", weight, f"outside {low:g}..{high:g}; clamped "
                               f"to {target:g}"))
    word, before = bare(current[at])
    current[at] = word if target == 1 else f"({word}:{target:g})"
    new = ", ".join(current)
    if len(new) > bounds.prompt_max_chars:
        refused.append(Refusal("prompt_weight", term, f"the prompt would exceed "
                               f"{bounds.prompt_max_chars} characters"))
        return prompt
    if target != before:
        applied.append(f'prompt weight "{word}" {before:g} -> {target:g}')
        return new
    return prompt


def _rewrite(prompt: str, new: str, goal: str, bounds: Bounds, applied: list[str],
             refused: list[Refusal]) -> str:
    """A whole new prompt, within max_chars and keeping at least rewrite_keeps of the goal's
    words (the measure: the share of the goal's content words the new prompt contains)."""
    if not new or new == prompt:
        return prompt
    wanted = content_words(goal)
    kept = len(wanted & content_words(new))
    if len(new) > bounds.prompt_max_chars:
        why = f"longer than {bounds.prompt_max_chars} characters"
    elif not wanted or kept / len(wanted) < bounds.rewrite_keeps:
        why = (f"keeps {kept} of the goal's {len(wanted)} words, under "
               f"bounds.prompt.rewrite_keeps {bounds.rewrite_keeps:g}")
    else:
        applied.append(f'prompt rewritten, keeping {kept} of {len(wanted)} goal words: "{new}"')
        return new
    refused.append(Refusal("prompt_rewrite", new, why))
    return prompt


def _append_negative(negative: str, addition: str, max_terms: int, applied: list[str],
                     refused: list[Refusal]) -> str:
    current = terms(negative)
    wanted = [t for t in dict.fromkeys(terms(addition)) if not _present(t, negative)]
    room = max(0, max_terms - len(current))
    if len(wanted) > room:  # refuse the whole explosion, do not keep a random part of it
        refused.append(Refusal("neg_append", addition, f"{len(wanted)} new terms, room for "
                               f"{room} under max_terms {max_terms}"))
        return negative
    if wanted:
        applied.append("negative + " + ", ".join(f'"{t}"' for t in wanted))
    return ", ".join(current + wanted)


def _seed(current: int, asked: str | int, policy: SeedPolicy, rng: random.Random,
          applied: list[str], refused: list[Refusal]) -> int:
    if asked == "keep":
        return current
    follows = policy.policy == "critic" or (policy.policy == "stable" and policy.allow_critic)
    if not follows:
        refused.append(Refusal("seed", asked, f"seed policy {policy.policy} decides the seed"))
        return current
    if asked == "new":
        seed = new_seed(rng)
    elif isinstance(asked, int) and not isinstance(asked, bool) and 0 <= asked <= SEED_MAX:
        seed = asked
    else:
        refused.append(Refusal("seed", asked, f"not keep, new or a seed from 0 to {SEED_MAX}"))
        return current
    if seed != current:
        applied.append(f"seed {current} -> {seed}")
    return seed


def within(params: Params, bounds: Bounds, knobs: Sequence[Knob] = ()
           ) -> tuple[Params, tuple[str, ...]]:
    """Saved parameters brought inside bounds that changed since they were saved (resume after
    an edit of the spec or --set): numbers clamped, texts cut back by whole terms, knobs
    the spec no longer declares dropped and new ones at their start."""
    notes: list[str] = []
    saved = dict(params.knobs)
    kept = []
    for knob in knobs:
        value = knob_rules.within(knob, saved.get(knob.name, knob.start))
        if knob.name in saved and value != saved[knob.name]:
            notes.append(f"{knob.name} {saved[knob.name]} -> {value} (knobs.{knob.name} is "
                         f"now {knob.describe()})")
        kept.append((knob.name, value))
    params = replace(params, knobs=tuple(kept))
    cfg = min(max(params.cfg, bounds.cfg.min), bounds.cfg.max)
    steps = int(min(max(params.steps, bounds.steps.min), bounds.steps.max))
    prompt = params.prompt
    while len(prompt) > bounds.prompt_max_chars and "," in prompt:
        prompt = prompt.rsplit(",", 1)[0].rstrip()
    if len(prompt) > bounds.prompt_max_chars:  # one term longer than the bound: cut inside it
        prompt = prompt[:bounds.prompt_max_chars].rstrip()
    negative = ", ".join(terms(params.negative)[:bounds.negative_max_terms]) \
        if len(terms(params.negative)) > bounds.negative_max_terms else params.negative
    for name, old, new in (("cfg", params.cfg, cfg), ("steps", params.steps, steps)):
        if old != new:
            notes.append(f"{name} {old:g} -> {new:g} (bounds.{name} is now "
                         f"{getattr(bounds, name).min:g}..{getattr(bounds, name).max:g})")
    if prompt != params.prompt:
        notes.append(f"prompt cut to {len(prompt)} characters (bounds.prompt.max_chars is now "
                     f"{bounds.prompt_max_chars})")
    if negative != params.negative:
        notes.append(f"negative prompt cut to {bounds.negative_max_terms} terms "
                     "(bounds.negative.max_terms)")
    return replace(params, cfg=float(cfg), steps=steps, prompt=prompt,
                   negative=negative), tuple(notes)
