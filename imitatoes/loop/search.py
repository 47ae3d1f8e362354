"""What an iteration spends its renders on beyond the one image: candidates (new seeds,
search.candidates), the critic's alternative changes (search.proposals), and the contest of
a new image against the best with both in view (search.head_to_head)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from imitatoes.loop import patch, prompts
from imitatoes.loop.ports import Critic, Reuse, Saved
from imitatoes.loop.state import Best
from imitatoes.loop.verdict import Changes
from imitatoes.spec.model import Params, Spec


@dataclass(frozen=True)
class Candidate:
    key: str  # loop_01_iter_01_c2
    params: Params
    saved: Saved | None  # rendered before a crash: judged again, never rendered again


@dataclass(frozen=True)
class Asked:
    """One head-to-head question: the two images in an order, and which won."""

    order: tuple[str, str]  # the keys shown first and second
    winner: str | None  # None: no usable answer
    reason: str


@dataclass(frozen=True)
class Contest:
    """The new image against the best so far, asked in both orders: vision judges favour a
    position, so only a win that survives the swap counts (a split is a tie)."""

    key: str
    against: str  # the best so far
    asked: tuple[Asked, ...]

    @property
    def outcome(self) -> str:
        """won, lost, tie (each won in one order) or unanswered (the scores decide)."""
        winners = {a.winner for a in self.asked}
        if None in winners:
            return "unanswered"
        if len(winners) > 1:
            return "tie"
        return "won" if winners == {self.key} else "lost"


def plan(spec: Spec, renders: int, key: str, params: Params, variants: Sequence[Params],
         reuse: Reuse, rng: random.Random, made: Callable[[Params], bool] = lambda p: False,
         candidates: int | None = None, fresh_first: bool = False) -> list[Candidate]:
    """Each candidate's key, parameters and saved render: the variants (but none that
    `made` says was rendered already, beyond the first) and new seeds up to
    search.candidates, the new seeds first when the seed is the suspect, within
    limits.max_renders."""
    variants = [v for n, v in enumerate(variants) if n == 0 or not made(v)]
    cap = spec.limits.max_renders
    left = None if cap is None else max(1, cap - renders)
    out = []
    wanted = spec.search.candidates if candidates is None else candidates
    fresh = [replace(params, seed=patch.new_seed(rng))
             for _ in range(max(0, wanted - len(variants)))]
    ordered = [*fresh, *variants] if fresh_first else [*variants, *fresh]
    for c, cparams in enumerate(ordered, 1):
        ckey = f"{key}_c{c}"
        saved = reuse(ckey)
        if saved is None and left is not None:
            if left <= 0:
                break  # the render budget ends the candidates too
            left -= 1
        out.append(Candidate(ckey, saved.params if saved else cparams, saved))
    return out


def proposals(spec: Spec, base: Params, alternatives: Sequence[Changes], chosen: Params,
              rng: random.Random, count: int | None = None) -> list[Params]:
    """search.proposals: the critic's other changes, bounded like any change, each a
    candidate of the next iteration (ones that change nothing, or repeat, are dropped)."""
    out: list[Params] = []
    wanted = spec.search.proposals if count is None else count
    for changes in alternatives[:max(0, wanted - 1)]:
        tried = patch.apply(base, changes, spec.bounds, spec.seed, rng, spec.knobs,
                            spec.goal).params
        if tried not in (base, chosen, *out):
            out.append(tried)
    return out


def contest(spec: Spec, critic: Critic, key: str, image: bytes, best: Best,
            best_image: bytes, instructions: Sequence[str]) -> Contest:
    """Does a new image beat the best with both in view? Asked with it first, then second."""
    images = {key: image, best.key: best_image}
    prompt = prompts.pair_prompt(spec, instructions)
    asked = []
    for order in ((key, best.key), (best.key, key)):
        answer = critic.compare(images[order[0]], images[order[1]], prompt)
        winner = None if answer.winner is None else order[0 if answer.winner == "first" else 1]
        asked.append(Asked(order, winner, answer.reason))
        if winner is None:
            break  # no usable answer: the scores decide, and the second question is saved
    return Contest(key, best.key, tuple(asked))
