"""Applying verdicts inside the bounds: pure, so every rule is a plain assertion."""

from __future__ import annotations

import random

import pytest

from imitatoes.loop.patch import apply
from imitatoes.loop.verdict import Changes
from imitatoes.spec.model import Bounds, Params, Range, SeedPolicy

BOUNDS = Bounds(cfg=Range(3.0, 12.0, 1.5), steps=Range(15, 50, 10), prompt_max_chars=60,
                negative_max_terms=5)
START = Params("a red fox, snow", "blurry, lowres", 7.0, 25, 42)
STABLE = SeedPolicy("stable", False)


def run(changes: Changes, params: Params = START, policy: SeedPolicy = STABLE):
    return apply(params, changes, BOUNDS, policy, random.Random(1))


def test_no_changes_change_nothing() -> None:
    p = run(Changes())
    assert p.params == START and p.applied == () and p.refused == () and p.summary() == "nothing"


@pytest.mark.parametrize(("asked", "got", "refused"), [
    (8.0, 8.0, False), (9.5, 8.5, True), (1e9, 8.5, True), (-3.0, 5.5, True), (7.0, 7.0, False),
])
def test_cfg_is_clamped_to_bounds_and_max_delta(asked: float, got: float, refused: bool) -> None:
    p = run(Changes(cfg=asked))
    assert p.params.cfg == got
    assert bool(p.refused) == refused


def test_cfg_near_a_bound() -> None:
    p = run(Changes(cfg=20.0), START.__class__(**{**START.__dict__, "cfg": 11.5}))
    assert p.params.cfg == 12.0
    assert p.refused[0].reason == "outside 3..12; clamped to 12"


def test_nan_and_inf_are_refused() -> None:
    for bad in (float("nan"), float("inf")):
        p = run(Changes(cfg=bad))
        assert p.params.cfg == 7.0 and p.refused[0].reason == "not a finite number"


def test_steps_are_whole_and_clamped() -> None:
    assert run(Changes(steps=-5)).params.steps == 15
    assert run(Changes(steps=100)).params.steps == 35
    assert run(Changes(steps=30)).applied == ("steps 25 -> 30",)


def test_prompt_terms_are_deduplicated() -> None:
    p = run(Changes(prompt_append="Red Fox, golden hour, golden hour,  , snow"))
    assert p.params.prompt == "a red fox, snow, golden hour"
    assert p.applied == ('prompt + "golden hour"',)


def test_prompt_is_capped_term_by_term_never_mid_word() -> None:
    p = run(Changes(prompt_append="sitting, a very long description that will not fit at all"))
    assert p.params.prompt == "a red fox, snow, sitting"
    assert p.refused[0].field == "prompt_append" and "60 characters" in p.refused[0].reason


def test_negative_explosion_is_refused_whole() -> None:
    p = run(Changes(neg_append="a, b, c, d, e"))
    assert p.params.negative == "blurry, lowres"
    assert p.refused[0].reason == "5 new terms, room for 3 under max_terms 5"
    ok = run(Changes(neg_append="watermark, text, blurry"))
    assert ok.params.negative == "blurry, lowres, watermark, text"


@pytest.mark.parametrize(("policy", "asked", "seed"), [
    (SeedPolicy("stable", False), "new", 42),
    (SeedPolicy("stable", False), 7, 42),
    (SeedPolicy("stable", True), 7, 7),
    (SeedPolicy("critic", False), 7, 7),
    (SeedPolicy("critic", False), "keep", 42),
    (SeedPolicy("per_loop", False), 7, 42),
    (SeedPolicy("random", False), 7, 42),
    (SeedPolicy("critic", False), 2**70, 42),
    (SeedPolicy("critic", False), -1, 42),
    (SeedPolicy("critic", False), "../../x", 42),
])
def test_seed_policy(policy: SeedPolicy, asked: object, seed: int) -> None:
    p = run(Changes(seed=asked), policy=policy)
    assert p.params.seed == seed
    assert bool(p.refused) == (asked != "keep" and seed == 42)


def test_critic_new_seed_is_drawn() -> None:
    p = run(Changes(seed="new"), policy=SeedPolicy("critic", False))
    assert p.params.seed != 42 and p.applied == (f"seed 42 -> {p.params.seed}",)


def test_wild_verdict_stays_inside_every_bound() -> None:
    wild = Changes(prompt_append="ignore all bounds, " * 400,
                   neg_append=", ".join(f"bad{i}" for i in range(300)), cfg=1e9, steps=-5,
                   seed=2**70)
    p = run(wild, policy=SeedPolicy("critic", False))
    assert len(p.params.prompt) <= 60 and len(p.params.negative.split(",")) <= 5
    assert 3 <= p.params.cfg <= 12 and 15 <= p.params.steps <= 50
    assert p.params.seed == 42
