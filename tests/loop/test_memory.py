"""Memory across runs, as values: what a history teaches, and where a new run starts from it."""

from __future__ import annotations

from dataclasses import replace

from imitatoes.loop import memory, prompts
from imitatoes.loop.memory import Change, Entry, Lesson
from imitatoes.loop.state import Tried
from imitatoes.spec import load as specs
from tests.conftest import ROOT

DEMO = specs.load(ROOT / "imitatoes" / "data" / "demo.yaml", env={})
RED, BLUE, CLEAN = "A red circle", "The background is blue", "Sharp and clean, no noise"
KEY = memory.key_of(DEMO, "stand-in")


def tried(params, met, score=0.5) -> Tried:
    return Tried(1, 1, params, score, "", "", met=tuple(met))


def test_a_change_is_credited_with_what_the_image_gained_and_lost() -> None:
    """Words only with requirements that share a word with them; numbers with any."""
    start = DEMO.start
    red = replace(start, prompt=start.prompt + ", red circle", steps=start.steps + 5)
    history = [tried(start, [CLEAN]), tried(red, [RED])]
    found = memory.lessons(history)
    assert set(found) == {Lesson(RED, Change("prompt", "red circle"), True),
                          Lesson(RED, Change("steps", start.steps + 5), True),
                          Lesson(CLEAN, Change("steps", start.steps + 5), False)}


def test_a_change_made_after_going_back_is_measured_against_the_best() -> None:
    """The engine goes back to the best before its next change: the image is compared with
    the one it differs least from, not with the image just before it."""
    start = DEMO.start
    best = replace(start, steps=20)
    worse = replace(best, cfg=9.0)
    fixed = replace(best, prompt=start.prompt + ", blue background")
    found = memory.lessons([tried(start, []), tried(best, [CLEAN]),
                            tried(worse, []), tried(fixed, [CLEAN, BLUE])])
    assert Lesson(BLUE, Change("prompt", "blue background"), True) in found
    assert not any(x.change.kind == "cfg" and x.requirement == BLUE for x in found)


def test_requirements_match_by_their_words() -> None:
    assert memory.similar("A red circle", "a big red circle")
    assert not memory.similar("A red circle", "A red square")
    assert not memory.similar("The background is blue", "The background is white")


def entry(requirements=DEMO.requirements, best=None, met=None, lessons=(), key=KEY,
          run="r1") -> Entry:
    best = best or replace(DEMO.start, prompt=DEMO.start.prompt + ", red circle, blue "
                           "background", seed=7, steps=20)
    return Entry(run, key, tuple(requirements), DEMO.start, best,
                 tuple(requirements if met is None else met), tuple(lessons))


def test_a_run_that_met_the_same_requirements_is_started_from() -> None:
    got = memory.recall(DEMO, "stand-in", [entry()])
    assert got.params.prompt == DEMO.start.prompt + ", red circle, blue background"
    assert (got.params.seed, got.params.steps) == (7, 20)
    assert got.applied and got.applied[0].startswith("from run r1, which met the same")
    assert "seed 42 -> 7" in got.applied[0]


def test_a_run_that_did_not_meet_them_all_lends_only_what_helped() -> None:
    helped = Lesson(RED, Change("prompt", "red circle"), True)
    hurt = [Lesson(BLUE, Change("negative", "blue"), False)] * 2 + \
        [Lesson(BLUE, Change("negative", "blue"), True)]
    seed = Lesson(BLUE, Change("seed", 99), True)
    got = memory.recall(DEMO, "stand-in", [entry(met=[RED], lessons=[helped, *hurt, seed])])
    assert got.params.prompt == DEMO.start.prompt + ", red circle"
    assert got.params.negative == DEMO.start.negative  # it lost more often than it helped
    assert got.params.seed == DEMO.start.seed  # a seed is not a lesson for other wishes
    assert any('prompt + "red circle" helped' in line for line in got.critic)


def test_other_keys_teach_nothing() -> None:
    """Another critic model, another workflow shape, or the stand-ins against a real
    ComfyUI: lessons do not carry over."""
    for key in (replace(KEY, critic="llava:13b"), replace(KEY, workflow="0" * 16),
                replace(KEY, renderer="comfyui")):
        got = memory.recall(DEMO, "stand-in", [entry(key=key)])
        assert got.params == DEMO.start and not got.applied and not got.critic


def test_remembered_values_stay_inside_the_bounds() -> None:
    wild = replace(DEMO.start, cfg=50.0, steps=400, prompt="x" * 500)
    got = memory.recall(DEMO, "stand-in", [entry(best=wild)])
    assert DEMO.bounds.cfg.min <= got.params.cfg <= DEMO.bounds.cfg.max
    assert got.params.steps <= DEMO.bounds.steps.max
    assert len(got.params.prompt) <= DEMO.bounds.prompt_max_chars


def test_the_workflow_shape_not_its_texts_is_the_key() -> None:
    flow = {k: dict(v, inputs=dict(v["inputs"])) for k, v in DEMO.workflow.items()}
    texts = next(n for n in flow.values() if n["class_type"] == "CLIPTextEncode")
    texts["inputs"]["text"] = "something else entirely"
    assert memory.key_of(replace(DEMO, workflow=flow)) == memory.key_of(DEMO)
    del flow[next(iter(flow))]
    assert memory.key_of(replace(DEMO, workflow=flow)).workflow != \
        memory.key_of(DEMO).workflow


def test_the_critic_is_told_what_worked_before() -> None:
    lines = ('- for "A red circle": prompt + "red circle" helped (2 times)',)
    text = prompts.critic_prompt(DEMO, DEMO.start, 1, 1, remembered=lines)
    assert "What worked before" in text and lines[0] in text
    assert "What worked before" not in prompts.critic_prompt(DEMO, DEMO.start, 1, 1)


def test_an_entry_reads_back_as_written() -> None:
    e = entry(lessons=[Lesson(RED, Change("knob", "euler", "sampler"), True)])
    assert Entry.from_dict(e.to_dict()) == e


def test_a_word_taken_out_is_taken_out_of_the_next_start_too() -> None:
    start = replace(DEMO.start, prompt="a circle, white background, simple poster")
    spec = replace(DEMO, start=start)
    best = replace(start, prompt="a circle, simple poster, (blue background:1.3)")
    e = Entry("r1", KEY, tuple(DEMO.requirements), start, best, tuple(DEMO.requirements), ())
    got = memory.recall(spec, "stand-in", [e])
    assert got.params.prompt == "a circle, simple poster, (blue background:1.3)"
    assert 'prompt - "white background"' in got.applied[0]
