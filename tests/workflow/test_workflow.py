from __future__ import annotations

import json
from pathlib import Path

import pytest

from imitatoes.errors import WorkflowError
from imitatoes.workflow import api as workflow
from tests.conftest import ROOT

FLOWS = ROOT / "tests" / "specs" / "workflows"


def test_whole_token_takes_the_value_with_its_type() -> None:
    flow = {"3": {"class_type": "KSampler", "inputs": {"cfg": "__CFG__", "seed": "__SEED__"}}}
    out = workflow.bind(flow, {"__CFG__": 6.5, "__SEED__": 2**63})
    assert out["3"]["inputs"] == {"cfg": 6.5, "seed": 2**63}


def test_token_inside_text_is_substituted_as_text() -> None:
    flow = json.loads((FLOWS / "extra_token.json").read_text())
    out = workflow.bind(flow, {"__PROMPT__": "a fox", "__STYLE__": "oil"})
    assert out["6"]["inputs"]["text"] == "masterpiece, a fox, oil"


def test_unbound_tokens_stay_and_input_is_not_mutated() -> None:
    flow = {"1": {"class_type": "X", "inputs": {"t": "__A__ and __B__", "l": ["__A__", 1]}}}
    out = workflow.bind(flow, {"__A__": 1})
    assert out["1"]["inputs"] == {"t": "1 and __B__", "l": [1, 1]}
    assert flow["1"]["inputs"]["t"] == "__A__ and __B__"


def test_bind_by_node_path() -> None:
    flow = json.loads((FLOWS / "no_tokens.json").read_text())
    out = workflow.bind(flow, {"6.inputs.text": "a cat", "3.inputs.cfg": 4.0})
    assert out["6"]["inputs"]["text"] == "a cat"
    assert out["3"]["inputs"]["cfg"] == 4.0


def test_tokens_found_everywhere() -> None:
    flow = json.loads((ROOT / "tests/specs/workflows/sd15.json").read_text())
    flow["3"]["inputs"].update(seed=1, cfg=7)
    assert workflow.tokens(flow) == {"__PROMPT__", "__NEG__", "__STEPS__"}
    flow["3"]["inputs"].update(seed="__SEED__", cfg="__CFG__")
    assert workflow.tokens(flow) == {"__PROMPT__", "__NEG__", "__STEPS__", "__SEED__",
                                     "__CFG__"}


@pytest.mark.parametrize(("name", "needle"), [
    ("ui_export.json", "UI-format workflow"),
    ("broken.json", "broken.json:1:54: not valid JSON"),
    ("nope.json", "no such workflow file"),
])
def test_load_refuses_what_comfyui_would_not_run(name: str, needle: str) -> None:
    with pytest.raises(WorkflowError, match="Export \\(API\\)" if "UI" in needle else None) as info:
        workflow.load(FLOWS / name)
    assert needle in str(info.value)


@pytest.mark.parametrize("data", [[], {}, {"1": {"inputs": {}}}, {"1": "x"},
                                  {"1": {"class_type": ["KSampler"], "inputs": {}}},
                                  {"1": {"class_type": "", "inputs": {}}}])
def test_api_format_problems(data: object) -> None:
    assert workflow.api_format_problem(data)


def test_init_never_crashes_on_a_workflow_that_passes_the_format_check() -> None:
    """Found by fuzzing 8,000 mutated templates: an encoder without inputs was a KeyError
    (a class name that is not a string, the other crash, is now a format problem)."""
    from imitatoes.spec import starter

    flow = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())
    del flow["6"]["inputs"]
    assert not workflow.api_format_problem(flow)
    with pytest.raises(WorkflowError, match="its text is no value"):
        starter.find(flow)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="is a directory"):
        workflow.load(tmp_path)
