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


# -- knobs: what the critic is allowed to name, and what a spec may declare ----------------

def test_each_knob_in_the_verdict_schema() -> None:
    assert knobs.schema_property(CHOICE) == {"enum": ["euler", "dpmpp_2m", None],
                                             "description": "one of euler, dpmpp_2m, or null"}
    assert knobs.schema_property(TEXT) == {"type": ["string", "null"], "maxLength": 10,
                                           "description": "the new text, or null"}
    number = knobs.schema_property(GRID)
    assert (number["type"], number["minimum"], number["maximum"]) == (["number", "null"],
                                                                      0.0, 1.0)
    whole = Knob("lora", ("__L__",), "integer", 1, min=0, max=4, step=1)
    assert knobs.schema_property(whole)["type"] == ["integer", "null"]
    assert number["description"].endswith(", or null for no change")


FLOW = {"3": {"class_type": "KSampler", "inputs": {"denoise": 0.5, "sampler_name": "euler",
                                                   "model": ["4", 0], "steps": 20}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "__STYLE__"}}}


@pytest.mark.parametrize("declared,where,message", [
    ({"prompt": {"path": "3.inputs.denoise", "min": 0, "max": 1}}, ("prompt",),
     "'prompt' is a built-in parameter; bind it under bindings and bound it under bounds"),
    ({"d": {"path": "3.inputs.denoise"}}, ("d",), "a number knob needs min and max (the "
     "critic is not trusted with an open range); missing: min, max"),
    ({"d": {"path": "3.inputs.steps", "type": "integer", "max": 9}}, ("d",), "an integer "
     "knob needs min and max (the critic is not trusted with an open range); missing: min"),
    ({"d": {"path": "3.inputs.denoise", "min": 2, "max": 1}}, ("d", "min"),
     "min 2 is bigger than max 1"),
    ({"s": {"path": "3.inputs.sampler_name", "type": "choice"}}, ("s", "choices"),
     "a choice knob needs choices"),
    ({"d": {"path": "__NOPE__", "min": 0, "max": 1, "start": 0.5}}, ("d", "path"),
     "__NOPE__ does not occur in the workflow"),
    ({"d": {"path": "denoise", "min": 0, "max": 1, "start": 0.5}}, ("d", "path"),
     "'denoise' is neither a token like __DENOISE__ nor a node path like 3.inputs.denoise"),
    ({"d": {"path": "3.inputs.model", "min": 0, "max": 1, "start": 0.5}}, ("d", "path"),
     "3.inputs.model is a link from node 4, not a value"),
    ({"d": {"path": "3.inputs.sampler_name", "min": 0, "max": 1, "start": 0.5}},
     ("d", "path"), "3.inputs.sampler_name holds text ('euler'), but the knob is a number"),
    ({"t": {"path": "3.inputs.denoise", "type": "text"}}, ("t", "path"),
     "3.inputs.denoise holds a number (0.5), but the knob is text"),
    ({"d": {"path": "3.inputs.denoise", "min": 0, "max": 1},
      "e": {"path": "3.inputs.denoise", "min": 0, "max": 1}}, ("e", "path"),
     "3.inputs.denoise is also knob 'd''s"),
    ({"d": {"path": "3.inputs.steps", "min": 1, "max": 10}}, ("d",),
     "the workflow's value 20 is outside 1 to 10; give start"),
    ({"d": {"path": "3.inputs.denoise", "min": 0, "max": 1, "start": 3}}, ("d", "start"),
     "start 3 is outside 0 to 1; give start"),
    ({"d": {"path": "3.inputs.steps", "type": "integer", "min": 1, "max": 30, "start": 2.5}},
     ("d", "start"), "start 2.5 is not a whole number"),
    ({"s": {"path": "3.inputs.sampler_name", "choices": ["ddim"]}}, ("s",),
     "the workflow's value 'euler' is not one of the choices"),
    ({"t": {"path": "__STYLE__", "type": "text"}}, ("t",),
     "no start value: its path holds none of its own (a token or a link); give start"),
    ({"t": {"path": "__STYLE__", "type": "text", "start": 3}}, ("t", "start"),
     "start 3 is not text")])
def test_what_a_spec_may_not_declare(declared: dict, where: tuple, message: str) -> None:
    assert (where, message) in knobs.problems(declared, FLOW, ["6.inputs.text"])


def test_a_value_has_one_owner() -> None:
    declared = {"t": {"path": "6.inputs.text", "type": "text", "start": "x"}}
    assert knobs.problems(declared, FLOW, ["6.inputs.text"]) == [
        (("t", "path"), "6.inputs.text is also under bindings; a value can have one owner")]
    by_token = {"t": {"path": "6.inputs.text", "type": "text", "start": "x"}}
    assert "__STYLE__, which is also under bindings" in knobs.problems(
        by_token, FLOW, ["__STYLE__"])[0][1]


def test_knobs_built_from_a_spec() -> None:
    built = knobs.build({"d": {"path": "3.inputs.denoise", "min": 0, "max": 1, "step": 0.1,
                               "max_delta": 0.2},
                         "n": {"path": ["3.inputs.steps"], "type": "integer", "min": 1,
                               "max": 30},
                         "s": {"path": "3.inputs.sampler_name", "choices": ["euler", "ddim"]},
                         "t": {"path": "__STYLE__", "type": "text", "start": "oil",
                               "max_chars": 20}}, FLOW)
    assert built == (
        Knob("d", ("3.inputs.denoise",), "number", 0.5, 0.0, 1.0, 0.2, 0.1),
        Knob("n", ("3.inputs.steps",), "integer", 20, 1.0, 30.0, None, 1.0),
        Knob("s", ("3.inputs.sampler_name",), "choice", "euler", choices=("euler", "ddim")),
        Knob("t", ("__STYLE__",), "text", "oil", max_chars=20))
    assert isinstance(built[1].start, int) and isinstance(built[0].start, float)


INFO = {"KSampler": {"input": {"required": {
    "denoise": ["FLOAT", {"min": 0.0, "max": 1.0, "step": 0.01}],
    "steps": ["INT", {"min": 1, "max": 100}],
    "sampler_name": [["euler", "ddim"], {}]}}},
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": True}]}}}}


@pytest.mark.parametrize("knob,message", [
    (Knob("s", ("3.inputs.sampler_name",), "choice", "euler", choices=("euler", "lms")),
     "this ComfyUI does not offer lms"),
    (Knob("s", ("3.inputs.denoise",), "choice", 0.5, choices=(0.5,)),
     "the input is FLOAT, not a list of choices"),
    (Knob("t", ("3.inputs.steps",), "text", "x"), "the input is INT, not text"),
    (Knob("d", ("3.inputs.sampler_name",), "number", 0.5, 0, 1),
     "the input is a choice, not a number"),
    (Knob("d", ("3.inputs.steps",), "number", 20, 1, 50, step=0.5),
     "the input takes whole numbers: make the knob type integer"),
    (Knob("d", ("3.inputs.denoise",), "number", 0.5, -1, 1), "knob min -1 is below the "
     "input's minimum 0"),
    (Knob("d", ("3.inputs.denoise",), "number", 0.5, 0, 2), "knob max 2 is above the "
     "input's maximum 1")])
def test_a_knob_against_the_server_s_definitions(knob: Knob, message: str) -> None:
    [found] = knobs.server_problems([knob], FLOW, INFO)
    assert found.endswith(message) and found.startswith(f"knob {knob.name} -> node 3 (KSampler)")


def test_knobs_that_fit_the_server() -> None:
    fits = [Knob("s", ("3.inputs.sampler_name",), "choice", "euler", choices=("ddim",)),
            Knob("n", ("3.inputs.steps",), "integer", 20, 1, 100, step=1),
            Knob("n2", ("3.inputs.steps",), "number", 20, 1, 100, step=2),
            Knob("t", ("6.inputs.text",), "text", "x"),
            Knob("d", ("3.inputs.denoise",), "number", 0.5, 0, 1)]
    assert knobs.server_problems(fits, FLOW, INFO) == []
    assert knobs.server_problems(fits, FLOW, {}) == []  # a node the server does not describe


# -- verdict: building, the schema sent, extraction -----------------------------------------

def test_a_verdict_is_built_from_its_checklist_not_the_critic_s_word() -> None:
    v = verdict.parse('{"done": true, "reason": " Looks done. ", "changes": {}, "checklist": ['
                      '{"requirement": "a", "met": true, "observation": "yes"}, '
                      '{"requirement": "b", "met": false, "region": [1, 2, 3, 4], '
                      '"fix": " sky "}]}')
    assert (v.done, v.claimed_done, v.score, v.reason) == (False, True, 0.5, "Looks done.")
    assert v.checklist == (Check("a", True, "yes"), Check("b", False, "", [1, 2, 3, 4], "sky"))
    scored = verdict.parse('{"done": false, "reason": "r", "changes": {}, "score": 0.4}')
    assert scored.score == 0.4


def test_knob_requests_are_taken_out_per_change() -> None:
    v = verdict.parse('{"done": false, "reason": "r", "changes": {"denoise": 0.4, "cfg": 8, '
                      '"lora": null}, "alternatives": [{"sampler": "ddim"}, {"cfg": 5}]}')
    assert (v.changes.cfg, v.changes.knobs) == (8.0, (("denoise", 0.4),))
    assert [a.knobs for a in v.alternatives] == [(("sampler", "ddim"),), ()]
    assert v.alternatives[1].cfg == 5.0


@pytest.mark.parametrize("text", [
    '```json\n{"done": true, "reason": "ok"}\n```', 'Sure! {"done": true, "reason": "ok"} bye',
    '\n {"done": true, "reason": "ok"} \n'])
def test_the_verdict_is_found_in_the_answer(text: str) -> None:
    assert verdict.parse(text).reason == "ok"


@pytest.mark.parametrize("text,message", [
    ("", "the answer was empty"), ("[1, 2]", "the answer is JSON but not an object"),
    ("no json here", "there is no complete JSON object"),
    ("[" * 100000, "there is no complete JSON object|nested too deeply")])
def test_what_is_no_verdict(text: str, message: str) -> None:
    with pytest.raises(VerdictInvalid, match=message):
        verdict.parse(text)


def test_the_schema_sent_with_knobs_and_regions() -> None:
    s = verdict.schema_for(["a"], [GRID], regions=True)
    item = s["properties"]["checklist"]["prefixItems"][0]
    assert item["properties"]["region"] == verdict.REGION and "fix" in item["properties"]
    assert item["required"] == ["requirement", "met", "observation"]
    assert s["properties"]["changes"]["required"][-1] == "denoise"
    assert s["required"][0] == "checklist"
    plain = verdict.schema_for([])
    item = plain["properties"]["checklist"]["items"]
    assert "region" not in item["properties"] and "fix" not in item["properties"]
    assert "prefixItems" not in plain["properties"]["checklist"]


# -- patch: the words of each change and refusal ---------------------------------------------

def test_each_number_change_and_refusal_says_why() -> None:
    far = applied(Changes(cfg=20))
    assert far.params.cfg == 8.5 and far.applied == ("cfg 7 -> 8.5",)
    assert far.refused[0].reason == "outside 3..12; clamped to 8.5"
    jump = applied(Changes(cfg=10))
    assert jump.refused[0].reason == "more than 1.5 from 7; clamped to 8.5"
    same = applied(Changes(cfg=7.0, steps=20))
    assert same.applied == () and same.refused == ()


def test_each_seed_change_and_refusal_says_why() -> None:
    assert applied(Changes(seed="keep")).applied == ()
    assert applied(Changes(seed=42)).applied == ()  # asked for the seed it has
    assert applied(Changes(seed=7)).applied == ("seed 42 -> 7",)
    per_loop = applied(Changes(seed=7), policy=SeedPolicy("per_loop", True))
    assert per_loop.refused[0].reason == "seed policy per_loop decides the seed"
    odd = applied(Changes(seed=-1))
    assert odd.refused[0].reason == f"not keep, new or a seed from 0 to {2**64 - 1}"


def test_additions_skip_what_is_there_and_keep_what_fits() -> None:
    p = applied(Changes(prompt_append="circle, red, blue sky, x" + "y" * 20,
                        neg_append="Blurry, text, text"))
    assert p.params.prompt == "a circle, red, blue sky"
    assert p.applied == ('prompt + "red", "blue sky"', 'negative + "text"')
    assert [r.field for r in p.refused] == ["prompt_append"]


# -- search and repeats: the small rules -------------------------------------------------------

def test_proposals_are_bounded_deduplicated_and_at_most_k_minus_one() -> None:
    from imitatoes.loop import search
    from imitatoes.spec import load as specs
    from tests.conftest import ROOT

    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", env={})
    spec = spec.__class__(**{**spec.__dict__, "search": specs.Search(proposals=3)})
    base = spec.start
    chosen = patch.apply(base, Changes(cfg=8), spec.bounds, spec.seed, random.Random(0)).params
    alternatives = (Changes(cfg=8), Changes(), Changes(steps=20), Changes(steps=20),
                    Changes(cfg=30), Changes(cfg=3))
    out = search.proposals(spec, base, alternatives, chosen, random.Random(0))
    assert out == []  # K=3: two alternatives, one the chosen change, one no change at all
    wider = spec.__class__(**{**spec.__dict__, "search": specs.Search(proposals=6)})
    out = search.proposals(wider, base, alternatives, chosen, random.Random(0))
    assert [(p.cfg, p.steps) for p in out] == [(7.0, 20), (8.5, 12)]  # five: a repeat dropped


# -- the exact refusals, and resume at the edges -----------------------------------------------

def test_each_refusal_names_the_field_and_what_was_asked() -> None:
    from imitatoes.loop.patch import Refusal

    assert applied(Changes(cfg=math.nan)).refused[0].field == "cfg"
    assert applied(Changes(steps=True)).refused == (  # type: ignore[arg-type]
        Refusal("steps", True, "not a finite number"),)
    assert applied(Changes(cfg=20)).refused == (
        Refusal("cfg", 20, "outside 3..12; clamped to 8.5"),)
    assert applied(Changes(cfg=12)).refused == (  # at the bound: in range, but too far
        Refusal("cfg", 12, "more than 1.5 from 7; clamped to 8.5"),)
    at_min = applied(Changes(cfg=3), params=Params("a", "", 4.0, 20, 1))
    assert at_min.refused == () and at_min.params.cfg == 3.0
    assert applied(Changes(seed=7), policy=SeedPolicy("random", False)).refused == (
        Refusal("seed", 7, "seed policy random decides the seed"),)
    assert applied(Changes(seed=-1)).refused == (
        Refusal("seed", -1, f"not keep, new or a seed from 0 to {2**64 - 1}"),)


def test_resume_trims_whole_terms_and_the_spaces_around_them() -> None:
    tight = Bounds(BOUNDS.cfg, BOUNDS.steps, prompt_max_chars=20, negative_max_terms=3)
    saved = Params("red circle , blue sky , clean and sharp image", "", 7.0, 20, 1)
    assert patch.within(saved, tight)[0].prompt == "red circle"
    words = Params("word " * 10, "", 7.0, 20, 1)
    assert patch.within(words, tight)[0].prompt == "word word word word"
    fits = Params("a, b", "x, y", 7.0, 20, 1)
    assert patch.within(fits, tight) == (fits, ())


def test_resume_puts_a_knob_the_run_never_saved_at_its_start() -> None:
    params, notes = patch.within(START, BOUNDS, [GRID, TEXT])
    assert params.knobs == (("denoise", 0.3), ("style", "plain")) and notes == ()
    moved, notes = patch.within(params.with_knob("denoise", 1.0), BOUNDS, [GRID, TEXT])
    assert moved.knob("denoise") == 0.9
    assert notes == ("denoise 1.0 -> 0.9 (knobs.denoise is now "
                     f"{GRID.describe()})",)


# -- search: the render budget, saved candidates, the contest's question -----------------------

def test_candidates_stay_within_the_render_budget_and_reuse_what_was_saved() -> None:
    from imitatoes.loop import search
    from imitatoes.loop.ports import Saved
    from imitatoes.spec import load as specs
    from tests.conftest import ROOT

    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", ["search.candidates=4",
                                                          "limits.max_renders=4"], env={})
    other = Params("saved", "", 7.0, 20, 9)
    saved = {"loop_01_iter_02_c1": Saved(b"png", other)}
    plan = search.plan(spec, 2, "loop_01_iter_02", spec.start, [spec.start], saved.get,
                       random.Random(0))
    # c1 was saved (no render spent); two renders are left for c2 and c3; c4 would pass 4
    assert [c.key for c in plan] == ["loop_01_iter_02_c1", "loop_01_iter_02_c2",
                                     "loop_01_iter_02_c3"]
    assert plan[0].params == other and plan[0].saved is not None
    assert len({c.params.seed for c in plan[1:]}) == 2


def test_the_contest_asks_the_pair_question_with_the_user_s_instructions() -> None:
    from imitatoes.loop import prompts, search
    from imitatoes.loop.state import Best
    from imitatoes.loop.verdict import Pairwise
    from imitatoes.spec import load as specs
    from tests.conftest import ROOT

    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", env={})
    asked: list[tuple[bytes, bytes, str]] = []

    class Judge:
        def compare(self, first: bytes, second: bytes, prompt: str) -> Pairwise:
            asked.append((first, second, prompt))
            return Pairwise("first", "it is sharper", (), 0.0)

    best = Best("loop_01_iter_01", 0.5, spec.start)
    result = search.contest(spec, Judge(), "loop_01_iter_02", b"new", best, b"old",  # type: ignore[arg-type]
                                     ["Add a moon"])
    expected = prompts.pair_prompt(spec, ["Add a moon"])
    assert asked == [(b"new", b"old", expected), (b"old", b"new", expected)]
    assert "Add a moon" in expected and result.outcome == "tie"
    assert [a.reason for a in result.asked] == ["it is sharper"] * 2


def test_knob_changes_at_their_edges() -> None:
    m = knobs.Moved
    assert knobs.change(CHOICE, "euler", "ddim") == m("euler", "", "not one of euler, dpmpp_2m")
    assert knobs.change(GRID, 0.3, math.nan) == m(0.3, "", "not a finite number")
    assert knobs.change(TEXT, "plain", "x" * 10) == m("x" * 10, f"style plain -> {'x' * 10}", "")
    whole = Knob("n", ("__N__",), "integer", 2, min=0, max=9, step=1)
    assert knobs.change(whole, 2, 3.4) == m(3, "n 2 -> 3", "not on a step of 1; rounded to 3")
    assert isinstance(knobs.change(whole, 2, 3.4).value, int)
    assert knobs.change(GRID, 0.3, 0.0) == m(0.0, "denoise 0.3 -> 0", "")  # at min: in range
    near = Knob("d", ("__D__",), "number", 0.5, min=0, max=1, max_delta=0.25)
    assert knobs.change(near, 0.5, 0.75) == m(0.75, "d 0.5 -> 0.75", "")  # exactly max_delta
    assert knobs.change(near, 0.5, 0.8).refused == "more than 0.25 from 0.5; clamped to 0.75"


def test_what_is_wrong_with_a_head_to_head_answer_is_said() -> None:
    with pytest.raises(VerdictInvalid, match=r"^winner: 'third' is not one of"):
        verdict.parse_pair('{"winner": "third", "reason": "x"}')
    with pytest.raises(VerdictInvalid, match=r"^the object: 'reason' is a required property"):
        verdict.parse_pair('{"winner": "first"}')
    with pytest.raises(VerdictInvalid, match=r"^changes.cfg: inf is not a finite number"):
        verdict.parse(ANSWER.replace("CFG", "1e999"))


# -- patch: edits that take away ----------------------------------------------------------

WIDE = Bounds(BOUNDS.cfg, BOUNDS.steps, prompt_max_chars=60, negative_max_terms=3)
GOAL = "A red circle on a blue background"


def edited(params: Params = START, bounds: Bounds = WIDE, **changes: object) -> patch.Patch:
    return patch.apply(params, Changes(**changes), bounds, CRITIC_SEEDS, random.Random(0),
                       goal=GOAL)


def test_terms_are_removed_by_name_weights_and_case_aside() -> None:
    start = Params("a circle, (White Background:1.2), poster", "blurry, text", 7.0, 20, 42)
    p = edited(start, prompt_remove="white background", neg_remove="text")
    assert (p.params.prompt, p.params.negative) == ("a circle, poster", "blurry")
    assert p.applied == ('prompt - "white background"', 'negative - "text"')
    missing = edited(start, prompt_remove="green sky")
    assert missing.params == start and "not a term of the prompt" in missing.refused[0].reason


def test_the_prompt_is_never_removed_whole() -> None:
    p = edited(prompt_remove="a circle")
    assert p.params.prompt == "a circle" and "would be empty" in p.refused[0].reason


def test_a_weight_stays_within_the_bound_and_one_writes_the_term_bare() -> None:
    start = Params("a circle, red circle", "", 7.0, 20, 42)
    p = edited(start, weight=("red circle", 1.3))
    assert p.params.prompt == "a circle, (red circle:1.3)"
    assert p.applied == ('prompt weight "red circle" 1 -> 1.3',)
    high = edited(start, weight=("red circle", 9.0))
    assert high.params.prompt == "a circle, (red circle:1.5)" and "clamped to 1.5" in \
        high.refused[0].reason
    low = edited(start, weight=("red circle", -2.0))
    assert low.params.prompt == "a circle, (red circle:0.5)"
    back = edited(p.params, weight=("red circle", 1.0))
    assert back.params.prompt == "a circle, red circle"
    assert edited(start, weight=("blue sky", 1.2)).refused[0].field == "prompt_weight"


def test_a_rewrite_keeps_to_max_chars_and_to_the_goal() -> None:
    """The measure: the share of the goal's content words (red, circle, blue, background)
    the new prompt contains, at least bounds.prompt.rewrite_keeps (0.5 by default)."""
    close = edited(rewrite="red circle, blue background, flat poster")
    assert close.params.prompt == "red circle, blue background, flat poster"
    assert close.applied[0].startswith('prompt rewritten, keeping 4 of 4 goal words')
    half = edited(rewrite="a red circle, minimal")  # 2 of 4: exactly the bound
    assert half.params.prompt == "a red circle, minimal"
    far = edited(rewrite="a cat on a sofa, photo")
    assert far.params == START and "keeps 0 of the goal's 4 words" in far.refused[0].reason
    long = edited(rewrite="red circle, blue background, " + "x" * 60)
    assert long.params == START and "longer than 60" in long.refused[0].reason


def test_a_rewrite_comes_first_and_an_append_goes_on_top_of_it() -> None:
    p = edited(rewrite="red circle, blue background", prompt_append="flat")
    assert p.params.prompt == "red circle, blue background, flat"


def test_edits_in_a_verdict_are_optional_and_checked() -> None:
    base = ('{"done": false, "reason": "r", "changes": {"prompt_append": "", "neg_append": "", '
            '"cfg": null, "steps": null, "seed": "keep"EXTRA}}')
    plain = verdict.parse(base.replace("EXTRA", ""))
    assert (plain.changes.prompt_remove, plain.changes.weight, plain.changes.rewrite) == \
        ("", None, "")
    full = verdict.parse(base.replace("EXTRA", ', "prompt_remove": " white background ", '
                                      '"prompt_weight": {"term": "red", "weight": 1.2}, '
                                      '"prompt_rewrite": "red circle"'))
    assert (full.changes.prompt_remove, full.changes.weight, full.changes.rewrite) == \
        ("white background", ("red", 1.2), "red circle")
    assert full.changes.knobs == ()  # edits are not knobs
    nulls = verdict.parse(base.replace("EXTRA", ', "prompt_remove": null, "neg_remove": null, '
                                       '"prompt_weight": null, "prompt_rewrite": null'))
    assert nulls.changes == plain.changes  # null, as models send for cfg: no change
    with pytest.raises(VerdictInvalid, match="prompt_weight"):
        verdict.parse(base.replace("EXTRA", ', "prompt_weight": {"term": "red"}'))


def test_auto_protects_what_the_image_already_meets() -> None:
    met, unmet = ["A red circle"], ["The background is blue"]
    prompt = "a red circle, white background"
    asked = Changes(prompt_remove="a red circle, white background",
                    weight=("a red circle", 0.6), rewrite="blue background, poster")
    kept, refused = patch.protect(asked, prompt, met, unmet)
    assert (kept.prompt_remove, kept.weight, kept.rewrite) == ("white background", None, "")
    assert [r.field for r in refused] == ["prompt_remove", "prompt_weight", "prompt_rewrite"]
    assert 'it drops words of "A red circle"' in refused[2].reason
    kept_words = Changes(rewrite="red circle, blue background")
    assert patch.protect(kept_words, prompt, met, unmet) == (kept_words, ())
    up = patch.protect(Changes(weight=("a red circle", 1.3)), prompt, met, unmet)
    assert up == (Changes(weight=("a red circle", 1.3)), ())  # weighting it up takes nothing
    lost = patch.protect(asked, prompt, [], [*met, *unmet])  # unmet: nothing to protect
    assert lost == (asked, ())
