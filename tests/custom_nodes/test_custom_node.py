"""The ComfyUI node, imported the way ComfyUI imports it: by folder, without our package."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT

PACK = ROOT / "custom_nodes" / "imitatoes"


def load_pack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custom_nodes.imitatoes_test",
                                                  PACK / "__init__.py",
                                                  submodule_search_locations=[str(PACK)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PACK_MODULE = load_pack()
NODE = PACK_MODULE.NODE_CLASS_MAPPINGS["ImitatoesSelfImprovingPrompt"]


def improve(critique: str, iteration: int = 0, maximum: int = 5, **kw: object) -> tuple:
    return NODE().improve(kw.pop("prompt", "a red fox, snow"), critique, iteration, maximum,
                          **kw)


def test_mappings_and_category() -> None:
    assert PACK_MODULE.NODE_DISPLAY_NAME_MAPPINGS == {
        "ImitatoesSelfImprovingPrompt": "Imitatoes Self-Improving Prompt"}
    assert NODE.CATEGORY == "Imitatoes" and NODE.FUNCTION == "improve"
    assert NODE.RETURN_TYPES == ("STRING", "STRING", "BOOLEAN", "INT", "STRING")
    assert NODE.RETURN_NAMES[:4] == ("prompt_out", "negative_out", "should_continue",
                                     "next_iteration")
    assert len(NODE.OUTPUT_TOOLTIPS) == len(NODE.RETURN_TYPES)


def test_input_types_follow_comfyuis_conventions() -> None:
    types = NODE.INPUT_TYPES()
    assert set(types) == {"required", "optional"}
    for section in types.values():
        for name, config in section.items():
            assert config[0] in ("STRING", "INT") and isinstance(config[1], dict), name
            assert config[1]["tooltip"], name
            if config[0] == "INT":
                assert config[1]["min"] <= config[1]["default"] <= config[1]["max"]


def test_never_cached() -> None:
    assert math.isnan(NODE.IS_CHANGED(prompt="x"))


def test_the_pack_imports_nothing_but_the_standard_library() -> None:
    code = (f"import sys, importlib.util; sys.modules['imitatoes'] = None; "
            f"s = importlib.util.spec_from_file_location('p', r'{PACK / '__init__.py'}'); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('PIL', 'requests', 'yaml', 'imitatoes', 'torch')))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("[]", "['imitatoes']")


def test_plain_text_is_a_suggestion() -> None:
    prompt, negative, go_on, nxt, reason = improve("golden hour light\nmore detail below")
    assert prompt == "a red fox, snow, golden hour light"
    assert (negative, go_on, nxt, reason) == ("", True, 1, "golden hour light")


def test_plain_done() -> None:
    prompt, _, go_on, nxt, _ = improve("Done.")
    assert (prompt, go_on, nxt) == ("a red fox, snow", False, 1)


def test_json_verdict_and_dedupe() -> None:
    verdict = {"done": False, "reason": "No sunset.",
               "changes": {"prompt_append": "sunset, Red Fox, sunset", "neg_append": "blurry"}}
    prompt, negative, go_on, _, reason = improve(json.dumps(verdict), negative="lowres")
    assert prompt == "a red fox, snow, sunset"
    assert negative == "lowres, blurry" and go_on and reason == "No sunset."


def test_json_in_fences_with_a_checklist_that_overrules_done() -> None:
    verdict = {"done": True, "reason": "ok", "changes": {"prompt_append": "owl"},
               "checklist": [{"requirement": "a", "met": True}, {"requirement": "b",
                                                                  "met": False}]}
    prompt, _, go_on, _, _ = improve(f"Sure!\n```json\n{json.dumps(verdict)}\n```")
    assert go_on and prompt.endswith(", owl")


def test_done_verdict_stops() -> None:
    _, _, go_on, nxt, reason = improve('{"done": true, "reason": "All good.", "changes": {}}',
                                       iteration=2)
    assert (go_on, nxt, reason) == (False, 3, "All good.")


@pytest.mark.parametrize("critique", ['{"done": false, "changes": {"prompt_app', "```json\n{",
                                      "[1, 2"])
def test_malformed_json_changes_nothing(critique: str) -> None:
    prompt, negative, go_on, nxt, reason = improve(critique)
    assert (prompt, negative, go_on, nxt) == ("a red fox, snow", "", True, 1)
    assert "could not read" in reason


def test_maximum_iterations_stop_the_loop() -> None:
    _, _, go_on, nxt, _ = improve("add snow", iteration=4, maximum=5)
    assert (go_on, nxt) == (False, 5)


def test_the_prompt_never_grows_without_bound() -> None:
    prompt = "a fox"
    for i in range(200):
        prompt = NODE().improve(prompt, f"detail number {i}", i, 1000, max_chars=120)[0]
    assert len(prompt) <= 120 and prompt.startswith("a fox, detail number 0")


def test_wrong_types_in_json_are_ignored() -> None:
    out = improve('{"done": "yes", "changes": {"prompt_append": 5, "neg_append": ["x"]}}')
    assert out[:3] == ("a red fox, snow", "", True)


def test_the_stand_in_describes_the_node_as_a_real_comfyui_does() -> None:
    from imitatoes.standins import comfy_graph

    recorded = json.loads((ROOT / "tests" / "fixtures" / "comfyui_live" /
                           "object_info_ImitatoesSelfImprovingPrompt.json").read_text())
    classes, names = comfy_graph.load_custom_nodes([str(ROOT / "custom_nodes")])
    name = "ImitatoesSelfImprovingPrompt"
    described = comfy_graph.node_info(name, classes[name], names[name])
    assert json.loads(json.dumps(described)) == recorded[name]  # as it goes over the wire


def test_the_pack_is_ready_for_the_comfy_registry() -> None:
    import tomllib

    meta = tomllib.loads((PACK / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] and "comfyui" not in project["name"].lower()  # the registry's rule
    assert project["version"].count(".") == 2 and project["urls"]["Repository"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    readme = (PACK / project["readme"]).read_text()
    assert "custom_nodes" in readme and "should_continue" in readme
