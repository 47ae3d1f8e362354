"""The loop's decisions pinned by behaviour, at their edges: where a mutation run found that a
wrong program would pass (docs/mutation.md). Limits exactly full and one past, seeds at
their ends, resume under tightened bounds, text and choice knobs, numbers a critic should
never send."""

from __future__ import annotations

import math
import random

import pytest

from imitatoes.loop import checklist, patch, verdict
from imitatoes.loop.checklist import Item
from imitatoes.loop.verdict import Changes, Check, VerdictInvalid
from imitatoes.spec import knobs
from imitatoes.spec.knobs import Knob
from imitatoes.spec.model import Bounds, Params, Range, SeedPolicy

BOUNDS = Bounds(Range(3.0, 12.0, 1.5), Range(10, 40, 10), prompt_max_chars=30,
                negative_max_terms=3)
START = Params("a circle", "blurry", 7.0, 20, 42)
CRITIC_SEEDS = SeedPolicy("critic", False)


def applied(changes: Changes, params: Params = START, bounds: Bounds = BOUNDS,
            policy: SeedPolicy = CRITIC_SEEDS) -> patch.Patch:
    return patch.apply(params, changes, bounds, policy, random.Random(0))


# -- patch: limits exactly full and one past ---------------------------------------------

def test_a_prompt_may_reach_max_chars_exactly_and_not_one_more() -> None:
    full = applied(Changes(prompt_append="x" * (30 - len("a circle, "))))
    assert len(full.params.prompt) == 30 and not full.refused
    over = applied(Changes(prompt_append="x" * (31 - len("a circle, "))))
    assert over.params.prompt == "a circle" and over.refused[0].field == "prompt_append"


def test_negative_terms_up_to_max_terms_and_the_summary_says_which() -> None:
    full = applied(Changes(neg_append="text, watermark"))
    assert full.params.negative == "blurry, text, watermark"
    assert full.applied == ('negative + "text", "watermark"',)
    over = applied(Changes(neg_append="text, watermark, grain"))
    assert over.params.negative == "blurry" and over.refused[0].field == "neg_append"
    assert "3 new terms, room for 2 under max_terms 3" in over.refused[0].reason


# -- patch: numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("asked,steps", [(27.6, 28), (27.4, 27), (27.5, 28), (25, 25)])
def test_fractional_steps_round_to_the_nearest(asked: float, steps: int) -> None:
    assert applied(Changes(steps=asked)).params.steps == steps  # type: ignore[arg-type]


def test_a_critic_s_steps_are_whole_or_refused() -> None:
    answer = ('{"done": false, "reason": "r", "changes": {"prompt_append": "", '
              '"neg_append": "", "cfg": null, "steps": STEPS, "seed": "keep"}}')
    assert verdict.parse(answer.replace("STEPS", "28.0")).changes.steps == 28
    with pytest.raises(VerdictInvalid, match="changes.steps: 27.6 is not of type"):
        verdict.parse(answer.replace("STEPS", "27.6"))  # the critic is asked again


@pytest.mark.parametrize("asked", [True, math.nan, math.inf, -math.inf, "8"])
def test_numbers_that_are_not_finite_numbers_are_refused(asked: object) -> None:
    p = applied(Changes(cfg=asked))  # type: ignore[arg-type]
    assert p.params.cfg == 7.0 and p.refused[0].reason == "not a finite number"


def test_a_huge_integer_is_clamped_not_crashed() -> None:
    assert applied(Changes(cfg=-10**400)).params.cfg == 5.5  # type: ignore[arg-type]
    assert knobs.finite_number(-10**400) and not knobs.finite_number(True)


# -- patch: seeds at their ends ------------------------------------------------------------

@pytest.mark.parametrize("asked,taken", [(0, 0), (2**64 - 1, 2**64 - 1), (2**64, 42),
                                         (-1, 42), (True, 42), ("other", 42)])
def test_seeds_from_zero_to_two_to_the_64_minus_one(asked: object, taken: int) -> None:
    p = applied(Changes(seed=asked))  # type: ignore[arg-type]
    assert p.params.seed == taken
    assert bool(p.refused) == (taken == 42)


def test_a_new_seed_is_drawn_from_the_whole_range() -> None:
    seeds = {applied(Changes(seed="new"), policy=CRITIC_SEEDS).params.seed}
    rng = random.Random(1)
    seeds |= {patch.new_seed(rng) for _ in range(200)}
    assert max(seeds) > 2**31 and all(0 <= s <= 2**32 - 1 for s in seeds)


def test_a_stable_seed_is_the_critic_s_only_when_allowed() -> None:
    stable = SeedPolicy("stable", False)
    assert applied(Changes(seed=7), policy=stable).params.seed == 42
    assert applied(Changes(seed=7), policy=SeedPolicy("stable", True)).params.seed == 7


# -- patch.within: resume after the user tightened the bounds ---------------------------------

def test_resume_cuts_a_prompt_and_a_negative_longer_than_the_new_bounds() -> None:
    saved = Params("a circle, red, blue background, clean", "a, b, c, d, e", 20.0, 60, 1)
    params, notes = patch.within(saved, BOUNDS)
    assert params.prompt == "a circle, red, blue background"  # whole terms, <= 30
    assert params.negative == "a, b, c"
    assert (params.cfg, params.steps) == (12.0, 40)
    assert notes == ("cfg 20 -> 12 (bounds.cfg is now 3..12)",
                     "steps 60 -> 40 (bounds.steps is now 10..40)",
                     "prompt cut to 30 characters (bounds.prompt.max_chars is now 30)",
                     "negative prompt cut to 3 terms (bounds.negative.max_terms)")


def test_resume_cuts_even_a_prompt_without_commas() -> None:
    params, notes = patch.within(Params("x" * 50, "", 7.0, 20, 1), BOUNDS)
    assert len(params.prompt) <= 30 and notes


def test_resume_keeps_what_fits_exactly() -> None:
    fits = Params("x" * 30, "a, b, c", 12.0, 40, 1)
    assert patch.within(fits, BOUNDS) == (fits, ())


# -- knobs --------------------------------------------------------------------------------

TEXT = Knob("style", ("__STYLE__",), "text", "plain", max_chars=10)
CHOICE = Knob("sampler", ("3.inputs.sampler_name",), "choice", "euler",
              choices=("euler", "dpmpp_2m"))
GRID = Knob("denoise", ("3.inputs.denoise",), "number", 0.3, min=0.0, max=1.0, step=0.3)


@pytest.mark.parametrize("asked,value,said,why", [
    ("  oil  ", "oil", "style plain -> oil", ""),
    ("plain", "plain", "", ""),
    (7, "plain", "", "not a text"), ("   ", "plain", "", "not a text"),
    ("x" * 11, "plain", "", "more than 10 characters")])
def test_a_text_knob(asked: object, value: str, said: str, why: str) -> None:
    assert knobs.change(TEXT, "plain", asked) == knobs.Moved(value, said, why)


def test_a_choice_knob() -> None:
    assert knobs.change(CHOICE, "euler", "dpmpp_2m") == knobs.Moved(
        "dpmpp_2m", "sampler euler -> dpmpp_2m", "")
    assert knobs.change(CHOICE, "euler", "ddim").refused == "not one of euler, dpmpp_2m"


def test_a_grid_that_does_not_end_on_its_max_never_overshoots() -> None:
    moved = knobs.change(GRID, 0.6, 1.0)  # nearest on 0, .3, .6, .9 (1.2 is past max)
    assert moved.value == 0.9 and "rounded to 0.9" in moved.refused
    assert knobs.within(GRID, 1.0) == 0.9


@pytest.mark.parametrize("knob,saved,kept", [
    (CHOICE, "ddim", "euler"), (CHOICE, "dpmpp_2m", "dpmpp_2m"),
    (TEXT, "x" * 11, "plain"), (TEXT, 5, "plain"), (TEXT, "oil", "oil"),
    (GRID, math.nan, 0.3), (GRID, "0.5", 0.3), (GRID, 0.5, 0.6), (GRID, -3, 0.0)])
def test_a_saved_knob_value_under_the_knob_as_it_is_now(knob: Knob, saved: object,
                                                        kept: object) -> None:
    assert knobs.within(knob, saved) == kept


# -- verdict parsing ------------------------------------------------------------------------

ANSWER = ('{"done": false, "reason": "r", "changes": {"prompt_append": "", "neg_append": "", '
          '"cfg": CFG, "steps": null, "seed": "keep"}}')


@pytest.mark.parametrize("cfg", ["NaN", "Infinity", "-Infinity", "1e999", "9" * 400])
def test_a_verdict_with_a_number_that_is_not_finite_is_refused(cfg: str) -> None:
    with pytest.raises(VerdictInvalid, match="finite number"):
        verdict.parse(ANSWER.replace("CFG", cfg))


def test_defaults_of_a_short_answer() -> None:
    done = verdict.parse('{"done": true, "reason": "ok"}')
    assert (done.done, done.score, done.changes, done.alternatives) == (True, 1.0, Changes(), ())
    alt = verdict.parse('{"done": false, "reason": "r", "changes": {}, '
                        '"alternatives": [{"prompt_append": "snow"}]}')
    assert alt.score == 0.0 and alt.alternatives == (Changes(prompt_append="snow"),)


def test_a_head_to_head_answer() -> None:
    assert verdict.parse_pair('{"winner": "second", "reason": " sharper "}') == (
        "second", "sharper")
    for bad in ('{"winner": "third", "reason": "x"}', '{"winner": "first"}', "first"):
        with pytest.raises(VerdictInvalid):
            verdict.parse_pair(bad)


# -- checklist ------------------------------------------------------------------------------

def test_majority_with_short_and_single_answers() -> None:
    first = (Item("a", True, "yes"), Item("b", False, "no"))
    assert checklist.majority([first]) == first  # one answer: as it was
    votes = checklist.majority([first, (Item("a", True),), (Item("a", False),)])
    assert [(i.met, i.observation) for i in votes] == [
        (True, "2 of 3 answers: met"), (False, "0 of 3 answers: met")]


def test_merged_answers_must_be_the_same_length() -> None:
    with pytest.raises(ValueError):
        checklist.merged([Item("a", None)], [])
    assert checklist.merged([Item("a", None)], [Item("a", True)])[0].by == "asked again"


def test_one_item_by_text_and_one_by_position_in_one_answer() -> None:
    wanted = checklist.requirements(["A red circle", "The background is blue"], [])
    items = checklist.match(wanted, [Check("2", False), Check("A red circle", True)])
    # the second item is the first requirement's by text; the first names nothing and the
    # answer is aligned, so it stands for the requirement at its place
    assert [(i.met, i.by) for i in items] == [(True, "text"), (None, "missing")]
