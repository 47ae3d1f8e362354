"""Every shipped workflow against the node definitions recorded from ComfyUI 0.3.64."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imitatoes.commands.lifecycle import Run
from imitatoes.loop import binder
from imitatoes.spec import load as specs
from imitatoes.standins import comfy_graph
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin
from imitatoes.workflow import api as workflow
from tests.conftest import ROOT, found
from tests.servers import FIXTURES

WORKFLOWS = found(sorted((ROOT / "workflows").glob("*.json")), "shipped workflows")
SPECS = {specs.load(p, env={}).workflow_path.name: p
         for p in found(sorted((ROOT / "specs").glob("*.yaml")), "shipped specs")}


def recorded_info() -> dict:
    info = {}
    for path in found(list((FIXTURES / "comfyui").glob("object_info_*.json")),
                      "recorded /object_info answers"):
        body = json.loads(path.read_text())["response"].get("body")
        if isinstance(body, dict):
            info.update(body)
    classes, names = comfy_graph.load_custom_nodes([str(ROOT / "custom_nodes")])
    for name, cls in classes.items():
        info[name] = comfy_graph.node_info(name, cls, names[name])
    return info


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_shipped_workflow_has_a_valid_spec(path: Path) -> None:
    assert path.name in SPECS, f"no spec in specs/ uses {path.name}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_bound_workflow_passes_comfyuis_validation(path: Path) -> None:
    spec = specs.load(SPECS[path.name], env={})
    bound = binder.bind(spec, spec.start)
    info = recorded_info()
    for node in bound.values():  # model lists are the user's: accept the names we ship
        assert node["class_type"] in info, node["class_type"]
        if node["class_type"] == "CheckpointLoaderSimple":
            info[node["class_type"]]["input"]["required"]["ckpt_name"][0] = \
                [node["inputs"]["ckpt_name"]]
    result = comfy_graph.validate_prompt(bound, info, {})
    assert result.ok and result.node_errors == {}, (result.error, result.node_errors)
    assert not any("__" in json.dumps(n["inputs"]) for n in bound.values())


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_widget_holds_a_value_comfyuis_ui_can_show(path: Path) -> None:
    """A token in a numeric widget shows as NaN in ComfyUI's UI and fails its Run, one in a
    text widget is rendered as words: the shipped workflows hold real values, and the specs
    bind them by node path."""
    info = recorded_info()
    for node_id, node in json.loads(path.read_text()).items():
        spec = info[node["class_type"]]["input"]
        for name, value in node["inputs"].items():
            if isinstance(value, list):  # a link
                continue
            kind = (spec.get("required", {}) | spec.get("optional", {}))[name][0]
            if kind in ("INT", "FLOAT"):
                assert isinstance(value, int | float) and not isinstance(value, bool), \
                    (node_id, name, value)
            if kind == "STRING" or isinstance(kind, list):
                assert isinstance(value, str), (node_id, name, value)
                # run as opened, a token would be rendered as the words "__PROMPT__"
                assert not workflow.TOKEN.search(value), (node_id, name, value)


def test_every_start_value_and_bound_fits_the_sampler() -> None:
    ksampler = recorded_info()["KSampler"]["input"]["required"]
    for path in SPECS.values():
        s = specs.load(path, env={})
        assert ksampler["cfg"][1]["min"] <= s.bounds.cfg.min <= s.bounds.cfg.max <= \
            ksampler["cfg"][1]["max"]
        assert ksampler["steps"][1]["min"] <= s.bounds.steps.min <= s.bounds.steps.max <= \
            ksampler["steps"][1]["max"]


def test_the_loop_runs_on_the_self_improving_workflow(tmp_path: Path) -> None:
    with ComfyStandin() as comfy, OllamaStandin() as ollama:
        spec = specs.load(ROOT / "specs" / "self-improving.yaml",
                          env={"IMITATOES_COMFY_URL": comfy.url,
                               "IMITATOES_OLLAMA_URL": ollama.url})
        outcome = Run.begin(spec, tmp_path).execute()
        run_dir, state = outcome.run_dir, outcome.state
        entry = next(iter(comfy.history.values()))
    assert state.status in ("done", "limits") and state.renders >= 1
    assert entry["prompt"][2]["10"]["class_type"] == "ImitatoesSelfImprovingPrompt"
    assert entry["status"]["status_str"] == "success"
    assert (run_dir / "loop_01_iter_01.png").is_file()
