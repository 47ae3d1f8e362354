"""The critic's answers read twice: by `verdict.parse` (the loop) and by the node pack's
standard-library copy (`read_verdict`, which cannot import imitatoes inside ComfyUI). Both get
the same answers, the recorded Ollama ones and hostile ones, so they cannot drift apart."""

from __future__ import annotations

import json

import pytest

from imitatoes.loop.verdict import VerdictInvalid, parse
from tests.conftest import ROOT, found
from tests.custom_nodes.test_custom_node import PACK_MODULE

read_verdict = PACK_MODULE.read_verdict


def recorded_answers() -> list[str]:
    """Every answer text in the Ollama fixtures (native and OpenAI-compatible)."""
    answers = []
    for path in found(sorted((ROOT / "tests" / "fixtures" / "ollama").glob("*.json")),
                      "recorded Ollama answers"):
        body = json.loads(path.read_text()).get("response", {}).get("body")
        if not isinstance(body, dict):
            continue
        message = body.get("message") or (body.get("choices") or [{}])[0].get("message") or {}
        if isinstance(message.get("content"), str) and message["content"]:
            answers.append(message["content"])
    return answers


def verdict(done: object = False, reason: object = "Needs red.", checklist: object = None,
            **changes: object) -> str:
    c = {"prompt_append": "red circle", "neg_append": "blurry", "cfg": None, "steps": None,
         "seed": "keep", **changes}
    data = {"done": done, "changes": c, "reason": reason}
    if checklist is not None:
        data["checklist"] = checklist
    return json.dumps(data)


MET, UNMET = {"requirement": "a", "met": True}, {"requirement": "b", "met": False}
HOSTILE = [
    verdict(),
    verdict(True, "All good.", prompt_append="", neg_append=""),
    verdict(True, "Claims done.", [MET, UNMET]),  # the checklist overrules the claim
    verdict(False, "Modest.", [MET, MET]),  # ... both ways
    verdict(True, "Empty list.", []),
    verdict(False, "  padded reason  ", prompt_append="  red ,  circle ", neg_append=" blur "),
    verdict(False, "x", cfg=8.5, steps=30, seed="new"),
    "Sure! Here it is:\n```json\n" + verdict(True, "Fenced.", [MET]) + "\n```\nAnything else?",
    "Thinking... " + verdict(False, "In prose.") + " hope that helps",
    '{"done": true, "reason": "no changes key"}',
    verdict("yes"),  # wrong types: the loop refuses, the node must not read done
    verdict(False, 5),
    verdict(False, "x", prompt_append=5),
    verdict(True, "x", prompt_append=5),
    verdict(True, "x", cfg="high"),
    verdict(True, "x", steps=2.5),
    verdict(True, "x", seed=-1),
    verdict(True, "x", seed=True),
    verdict(True, "x", [{"requirement": "a", "met": "true"}]),
    verdict(False, "x", seed=-1),
    '{"done": true, "changes": {"prompt_app',
    "```json\n{",
    "[1, 2]",
    '"just a string"',
    "null",
    '{"done": true}',
]


@pytest.mark.parametrize("answer", recorded_answers() + HOSTILE)
def test_the_loop_and_the_node_read_an_answer_alike(answer: str) -> None:
    node_done, node_prompt, node_negative, node_reason = read_verdict(answer)
    try:
        v = parse(answer)
    except VerdictInvalid:
        # What the loop refuses, the node may read leniently, but never as done.
        assert not node_done, answer
        return
    assert node_done == v.done
    assert (node_prompt.strip(), node_negative.strip(), node_reason.strip()) == (
        v.changes.prompt_append, v.changes.neg_append, v.reason)


def test_the_answers_cover_both_outcomes() -> None:
    """The parity test above is only worth something if it sees both kinds of answer."""
    outcomes = set()
    for answer in recorded_answers() + HOSTILE:
        try:
            outcomes.add(("valid", parse(answer).done))
        except VerdictInvalid:
            outcomes.add(("invalid", None))
    assert outcomes == {("valid", True), ("valid", False), ("invalid", None)}
    assert len(recorded_answers()) >= 5
