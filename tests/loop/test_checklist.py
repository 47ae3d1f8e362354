"""Done means every requirement was judged met: the critic's checklist matched to the spec's
requirements and the user's instructions, whatever the critic left out or reworded."""

from __future__ import annotations

import dataclasses
import json
import random

import jsonschema
import pytest
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.loop import checklist
from imitatoes.loop.engine import Engine
from imitatoes.loop.state import first_state
from imitatoes.loop.verdict import Changes, Check, Verdict, schema_for
from imitatoes.spec import load as specs
from tests.doubles import FakeCritic, FakeRenderer
from tests.loop.test_engine import make
from tests.servers import DEMO, only_run, urls

WANTED = checklist.requirements(["A red circle", "The background is blue"], ["Add a square"])


def test_matched_by_text_whatever_the_order_numbering_and_case() -> None:
    items = checklist.match(WANTED, [Check("3. add a SQUARE!", False, "none"),
                                     Check("a red circle", True), Check("2) The background "
                                                                        "is blue.", True)])
    assert [(i.met, i.by, i.user) for i in items] == [(True, "text", False),
                                                      (True, "text", False),
                                                      (False, "text", True)]
    assert checklist.score(items) == 2 / 3


def test_a_skipped_requirement_counts_as_unmet() -> None:
    items = checklist.match(WANTED, [Check("A red circle", True)])
    assert [(i.met, i.by) for i in items] == [(True, "text"), (None, "missing"),
                                              (None, "missing")]
    assert checklist.score(items) == 1 / 3


SPEC = checklist.requirements(["There is one red circle in the centre",
                                "The background is blue", "No watermark or text",
                                "Sharp and clean, no noise"], [])


@pytest.mark.parametrize("said,wanted", [
    ("A red circle in the middle", 0), ("Red circle centred", 0), ("circle: red, centered", 0),
    ("Blue backdrop", 1), ("The background colour is blue", 1), ("blue bg", 1),
    ("There is no watermark", 2), ("No text or watermark visible", 2),
    ("Image is sharp and clean", 3), ("Clean and sharp", 3)])
def test_close_paraphrases_count_for_their_requirement(said: str, wanted: int) -> None:
    checks = [Check(said, True)]
    items = checklist.match(SPEC, checks)
    assert [i.met for i in items] == [n == wanted or None for n in range(4)], said
    assert items[wanted].by == "paraphrase" and checklist.extras(SPEC, checks) == ()


@pytest.mark.parametrize("said", [
    "The image is pretty", "Colours are vivid", "A blue circle in the centre",
    "There are two red circles", "Text is present", "The background is not blue",
    "Good composition", "The style is painterly"])
def test_unrelated_or_contrary_items_count_for_nothing(said: str) -> None:
    """Not by text, and not by position either: each is an extra, kept and not counted."""
    checks = [Check(said, True)] * 4  # as many items as requirements, each in its place
    items = checklist.match(SPEC, checks)
    assert [i.met for i in items] == [None] * 4, said
    assert len(checklist.extras(SPEC, checks)) == 4


def test_reordered_paraphrases_find_their_own_requirement() -> None:
    checks = [Check("Clean and sharp", False), Check("No watermark", True),
              Check("Blue background", True), Check("A red circle, centred", True)]
    items = checklist.match(SPEC, checks)
    assert [i.met for i in items] == [True, True, True, False]
    assert {i.by for i in items} == {"paraphrase"}


def test_position_decides_only_for_unnamed_items_or_near_ones() -> None:
    unnamed = [Check("1", True), Check("", False), Check("3.", True), Check("-", True)]
    assert [(i.met, i.by) for i in checklist.match(SPEC, unnamed)] == [
        (True, "position"), (False, "position"), (True, "position"), (True, "position")]
    assert [i.met for i in checklist.match(SPEC, unnamed[:3])] == [None] * 4  # not aligned
    # one item by text, one by position, in one answer; the near one keeps its place
    mixed = [Check("circle in the middle", True), Check("The background is blue", False)]
    assert [(i.met, i.by) for i in checklist.match(SPEC, mixed)] == [
        (True, "position"), (False, "text"), (None, "missing"), (None, "missing")]


def test_the_two_answer_false_done_is_not_done() -> None:
    """One item, then two invented ones that once took the skipped requirement by position:
    done, exit 0, after one render."""
    two = checklist.requirements(["There is one red circle in the centre",
                                  "The background is blue"], [])
    first = checklist.match(two, [Check("The background is blue", True)])
    again = checklist.match(two, [Check("The image is pretty", True),
                                  Check("Colours are vivid", True)])
    merged = checklist.merged(first, again)
    assert [i.met for i in merged] == [None, True] and checklist.score(merged) == 0.5


def test_an_empty_checklist_or_answer_matches_nothing() -> None:
    assert checklist.match([], [Check("A red circle", True)]) == ()
    assert checklist.extras([], [Check("A red circle", True)]) == (Check("A red circle", True),)
    assert [i.by for i in checklist.match(SPEC, [])] == ["missing"] * 4
    assert checklist.score(()) == 0.0


def claims_done(*checks: Check) -> Verdict:
    return Verdict(True, Changes(prompt_append="more"), "Looks done.", checks, 1.0, True)


def test_a_done_claim_with_a_short_checklist_does_not_stop_the_run() -> None:
    spec = make(ipl=2, loops=1)  # the demo: four requirements
    critic = FakeCritic(claims_done(Check("A red circle", True)),
                        claims_done(Check("The background is blue", True)),  # asked again
                        claims_done(*(Check(r, True) for r in spec.requirements)))
    events: list = []
    state = Engine(spec, FakeRenderer(), critic, [events.append],
                   rng=random.Random(0)).run(first_state(spec))
    assert state.status == "done" and state.done_key == "loop_01_iter_02"
    first = next(e for e in events if getattr(e, "kind", "") == "applied")
    assert first.score == 0.5
    assert [(i.met, i.by) for i in first.requirements] == [
        (True, "text"), (True, "asked again"), (None, "missing"), (None, "missing")]
    # the second question names exactly what the first answer skipped
    assert "did not judge these checklist items: 2. The background is blue; 3. No " \
        "watermark or text; 4. Sharp and clean, no noise." in critic.prompts[1]
    assert critic.checklists[0] == list(spec.requirements)  # and the schema asks for them all
    judged = next(e for e in events if getattr(e, "kind", "") == "verdict")
    assert len(judged.judgement.attempts) == 2  # both answers are in the record


def test_the_schema_sent_asks_for_exactly_the_checklist() -> None:
    s = schema_for(["A red circle", "Add a square"])
    items = s["properties"]["checklist"]
    assert items["minItems"] == items["maxItems"] == 2 and items["items"] is False
    assert [i["properties"]["requirement"]["const"] for i in items["prefixItems"]] == [
        "A red circle", "Add a square"]
    assert s["required"][0] == "checklist"
    ok = {"checklist": [{"requirement": "A red circle", "met": True, "observation": ""},
                        {"requirement": "Add a square", "met": False, "observation": "none"}],
          "done": False, "reason": "r", "changes": {"prompt_append": "", "neg_append": "",
                                                    "cfg": None, "steps": None, "seed": "keep"}}
    jsonschema.validate(ok, s)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**ok, "checklist": ok["checklist"][:1]}, s)


def test_paraphrased_items_that_are_not_the_spec_s_do_not_count() -> None:
    spec = make(ipl=1, loops=1)
    critic = FakeCritic(claims_done(Check("Looks great", True), Check("Nice colours", True)))
    state = Engine(spec, FakeRenderer(), critic, rng=random.Random(0)).run(first_state(spec))
    assert state.status == "limits" and state.best.score == 0.0


def with_verify(spec, verifier: str | None = None):
    spec = dataclasses.replace(spec, search=specs.Search(verify_done=True))
    return dataclasses.replace(spec, critic=dataclasses.replace(spec.critic, verifier=verifier))


def test_majority_of_the_answers_decides_each_requirement() -> None:
    yes, no = checklist.Item("a", True, "", "text"), checklist.Item("a", False, "", "text")
    assert [i.met for i in checklist.majority([[yes], [no], [yes]])] == [True]
    assert [i.met for i in checklist.majority([[yes], [no], [no]])] == [False]
    assert [i.met for i in checklist.majority([[yes], [yes]])] == [True]
    assert [i.met for i in checklist.majority([[yes], [no]])] == [False]  # a tie is a no
    assert [i.met for i in checklist.majority([[yes], []])] == [False]  # left out: a no
    assert checklist.majority([[yes], [no], [yes]])[0].observation == "2 of 3 answers: met"


def test_a_single_no_from_a_noisy_check_does_not_undo_a_true_done() -> None:
    spec = with_verify(make(ipl=3, loops=1))
    everything = [Check(r, True) for r in spec.requirements]
    slip = Verdict(False, Changes(), "Hm.", (Check(spec.requirements[0], False), *everything[1:]),
                   0.75, False)
    critic = FakeCritic(claims_done(*everything), slip, claims_done(*everything))
    state = Engine(spec, FakeRenderer(), critic, rng=random.Random(0)).run(first_state(spec))
    assert state.status == "done" and state.done_key == "loop_01_iter_01"


def test_a_done_claim_is_checked_before_it_stops_the_run() -> None:
    spec = with_verify(make(ipl=3, loops=1), "strict:7b")
    everything = [Check(r, True) for r in spec.requirements]
    critic = FakeCritic(claims_done(*everything), claims_done(*everything))
    gray = Verdict(False, Changes(prompt_append="blue background"), "Gray.",
                   (everything[0], Check(spec.requirements[1], False, "gray"),
                    *everything[2:]), 0.75, False)
    strict = FakeCritic(gray, gray,  # the check disagrees, and again when asked once more
                        claims_done(*everything))
    events: list = []
    state = Engine(spec, FakeRenderer(), critic, [events.append], rng=random.Random(0),
                   verifier=strict).run(first_state(spec))
    assert state.status == "done" and state.done_key == "loop_01_iter_02"
    [rejected] = [e for e in events if getattr(e, "kind", "") == "done_rejected"]
    assert rejected.key == "loop_01_iter_01" and rejected.failed == ("The background is blue",)
    assert rejected.by == "strict:7b"
    assert "Another judge already said yes" in strict.prompts[0]
    first = next(e for e in events if getattr(e, "kind", "") == "applied")
    assert first.score == 0.75 and first.patch.applied == ('prompt + "blue background"',)


def test_verified_done_against_the_stand_ins(servers, tmp_path) -> None:
    servers[1].behaviour.lenient = 1  # the first verdict calls a noisy gray image done
    result = CliRunner().invoke(app, ["run", DEMO, *urls(servers),
                                      "--set", "search.verify_done=true"])
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    first = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    assert "The background is blue" in first["done_rejected"]
    assert len(first["critic"]["answers"]) == 3  # the claim, the check, the check again
    state = json.loads((run_dir / "state.json").read_text())
    assert state["done_key"] != "loop_01_iter_01" and state["status"] == "done"


def test_invented_items_never_end_a_run_as_done() -> None:
    spec = dataclasses.replace(make(ipl=2, loops=1), requirements=(
        "There is one red circle in the centre", "The background is blue"))
    critic = FakeCritic(claims_done(Check("The background is blue", True)),
                        claims_done(Check("The image is pretty", True),  # asked again
                                    Check("Colours are vivid", True)),
                        claims_done(Check("Red circle, centred", True),
                                    Check("Blue background", True)))
    events: list = []
    state = Engine(spec, FakeRenderer(), critic, [events.append],
                   rng=random.Random(0)).run(first_state(spec))
    first = next(e for e in events if getattr(e, "kind", "") == "applied")
    assert first.score == 0.5 and first.patch is not None  # not done: it went on
    assert [c.requirement for c in first.extra] == ["The image is pretty", "Colours are vivid"]
    assert state.status == "done" and state.done_key == "loop_01_iter_02"


def test_matching_edges() -> None:
    """Exact text before an equally close paraphrase; one item never serves two
    requirements; plural and past endings; a negation governs its own clause only."""
    wanted = checklist.requirements(["A red circle"], [])
    assert wanted == [("A red circle", False)]
    assert checklist.requirements(["a"], ["b"]) == [("a", False), ("b", True)]
    items = checklist.match(wanted, [Check("circle, red", False), Check("A red circle", True)])
    assert [(i.met, i.by) for i in items] == [(True, "text")]
    twins = checklist.requirements(["A red circle", "Red circle"], [])
    assert [i.met for i in checklist.match(twins, [Check("A red circle", True)])] == [True, None]
    assert checklist.similarity("Two boxes", "two box") == 1.0
    assert checklist.similarity("Two circles", "two circle") == 1.0
    assert checklist.similarity("centred", "in the centre") == 1.0
    assert checklist.similarity("The cats", "a cat") == 1.0
    assert checklist.similarity("A painting", "painted") == 1.0
    assert checklist.similarity("No watermark, sharp", "Sharp") > 0
    assert "\n\nYour last answer did not judge these checklist items: 1. A red circle." in \
        checklist.reminder(checklist.match(wanted, []))
