"""The verdict parser against every failure the fixtures and our critics have shown."""

from __future__ import annotations

import json

import pytest

from imitatoes.loop.verdict import Changes, VerdictInvalid, parse
from tests.servers import fixture

GOOD = {"done": False, "changes": {"prompt_append": "red circle", "neg_append": "",
                                   "cfg": None, "steps": 30, "seed": "keep"},
        "reason": "No red circle."}


def test_plain_verdict() -> None:
    v = parse(json.dumps(GOOD))
    assert v.changes == Changes("red circle", "", None, 30, "keep")
    assert (v.done, v.score, v.reason) == (False, 0.0, "No red circle.")


@pytest.mark.parametrize("wrap", [
    "```json\n{}\n```", "Here is my verdict:\n```\n{}\n```\nThanks!", "Sure. {} Anything else?",
    "  {}  \n",
])
def test_repairs_fences_and_prose(wrap: str) -> None:
    assert parse(wrap.replace("{}", json.dumps(GOOD))).changes.steps == 30


def test_missing_no_change_keys_are_filled() -> None:
    v = parse('{"done": false, "changes": {"cfg": 6.5}, "reason": "r"}')
    assert v.changes == Changes(cfg=6.5)
    assert parse('{"done": true, "reason": "all good"}').done


def test_checklist_decides_done_and_score_not_the_model() -> None:
    answer = {**GOOD, "done": True, "checklist": [
        {"requirement": "a", "met": True}, {"requirement": "b", "met": False},
        {"requirement": "c", "met": True, "observation": "yes"}]}
    v = parse(json.dumps(answer))
    assert (v.done, v.claimed_done, round(v.score, 3)) == (False, True, 0.667)


@pytest.mark.parametrize(("text", "message"), [
    ("", "the answer was empty"),
    ("The image looks lovely!", "there is no complete JSON object"),
    ('{"done": false, "changes": {"prompt_append": "a", "cfg": ', "no complete JSON object"),
    ("[1, 2]", "not an object"),
    ('{"done": "yes", "changes": {}, "reason": "r"}', "done: 'yes' is not of type 'boolean'"),
    ('{"done": false, "changes": {"prompt_append": 5}, "reason": "r"}',
     "changes.prompt_append: 5 is not of type 'string'"),
    ('{"done": false, "changes": {"seed": "../../x"}, "reason": "r"}', "changes.seed"),
    ('{"done": false, "changes": {"seed": -3}, "reason": "r"}', "changes.seed"),
    ('{"done": false, "changes": {}, "reason": "r", "extra": 1}', "Additional properties"),
    ('{"done": false, "changes": {}}', "'reason' is a required property"),
])
def test_failures_are_typed_with_a_message_for_the_retry(text: str, message: str) -> None:
    with pytest.raises(VerdictInvalid, match=None) as info:
        parse(text)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["12b_chat_json_truncated_length.json",
                                  "12c_chat_json_mode_whitespace_abort.json"])
def test_fixture_answers_that_are_not_verdicts(name: str) -> None:
    content = fixture("ollama", name)["response"]["body"]["message"]["content"]
    with pytest.raises(VerdictInvalid):
        parse(content)


def test_numbers_far_out_of_bounds_parse_and_are_left_to_clamping() -> None:
    v = parse('{"done": false, "changes": {"cfg": 1e9, "steps": -5, '
              '"seed": 1180591620717411303424}, "reason": "r"}')
    assert (v.changes.cfg, v.changes.steps, v.changes.seed) == (1e9, -5, 2**70)
