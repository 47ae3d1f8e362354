from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imitatoes.errors import InvalidSpec
from imitatoes.loop import binder
from imitatoes.spec import load as spec
from tests.conftest import ROOT

RED_FOX = ROOT / "specs" / "red-fox.yaml"
MINIMAL = ROOT / "tests" / "specs" / "valid" / "minimal.yaml"


def test_load_fills_defaults_from_the_schema() -> None:
    s = spec.load(MINIMAL, env={})
    assert s.start == spec.Params("a thing", "", 7.0, 20, 42)
    assert s.bounds.cfg == spec.Range(2.0, 12.0, 1.5)
    assert s.bounds.steps == spec.Range(10, 60, 10)
    assert (s.bounds.prompt_max_chars, s.bounds.negative_max_terms) == (800, 24)
    assert s.limits == spec.Limits(3, 3)
    assert s.seed == spec.SeedPolicy("stable", False)
    assert s.critic.url == "http://127.0.0.1:11434"
    assert s.critic.image == spec.ImageGuard(1024, "jpeg", 85)
    assert "{{goal}}" in s.critic.prompt_template  # the shipped default template


def test_paths_resolve_against_the_spec_file() -> None:
    s = spec.load(ROOT / "specs" / "lighthouse-sdxl.yaml", env={})
    assert s.workflow_path == ROOT / "workflows" / "txt2img_sdxl.json"
    assert s.critic.prompt_template.startswith("You are a strict art director")


def test_one_rule_for_the_runs_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """./runs where the command starts, unless IMITATOES_RUNS or the spec's own output.dir
    (relative to the spec) say otherwise; --runs-dir comes first (tests/commands)."""
    monkeypatch.delenv("IMITATOES_RUNS")
    assert spec.load(RED_FOX, env={}).output_dir == Path("runs")
    named = spec.load(RED_FOX, ["output.dir=../elsewhere"], env={})
    assert (named.output_dir, named.output_why) == (ROOT / "elsewhere",
                                                    "the spec's output.dir")
    monkeypatch.setenv("IMITATOES_RUNS", "/tmp/elsewhere")
    loaded = spec.load(RED_FOX, ["output.dir=../elsewhere"], env={})
    assert (loaded.output_dir, loaded.output_why) == (Path("/tmp/elsewhere"),
                                                      "$IMITATOES_RUNS")


def test_overrides_and_environment() -> None:
    env = {"IMITATOES_COMFY_URL": "http://gpu:8188/", "IMITATOES_OLLAMA_URL": "http://gpu:11434"}
    s = spec.load(RED_FOX, ["limits.max_loops=5", "start.prompt=a fox, snow"], env=env)
    assert s.limits.max_loops == 5
    assert s.start.prompt == "a fox, snow"
    assert s.comfyui.url == "http://gpu:8188"
    assert s.critic.url == "http://gpu:11434"


def test_set_beats_environment() -> None:
    s = spec.load(RED_FOX, ["comfyui.url=http://a:1"], env={"IMITATOES_COMFY_URL": "http://b:2"})
    assert s.comfyui.url == "http://a:1"


@pytest.mark.parametrize(("host", "url"), [
    ("0.0.0.0", "http://127.0.0.1:11434"),
    ("gpu-box:9999", "http://gpu-box:9999"),
    ("https://ollama.example", "https://ollama.example:11434"),
])
def test_ollama_host_is_used_when_the_spec_names_no_url(host: str, url: str) -> None:
    assert spec.load(MINIMAL, env={"OLLAMA_HOST": host}).critic.url == url
    # a spec that names its critic URL keeps it
    assert spec.load(RED_FOX, env={"OLLAMA_HOST": host}).critic.url == "http://127.0.0.1:11434"


def test_invalid_spec_raises_with_every_problem() -> None:
    with pytest.raises(InvalidSpec) as info:
        spec.load(ROOT / "tests" / "specs" / "invalid" / "many_problems.yaml", env={})
    assert len(info.value.problems) == 11
    assert info.value.exit_code == 2


def test_bind_is_typed() -> None:
    s = spec.load(RED_FOX, env={})
    flow = binder.bind(s, spec.Params("a fox", "blurry", 6.5, 30, 7))
    assert flow["3"]["inputs"]["cfg"] == 6.5
    assert flow["3"]["inputs"]["steps"] == 30
    assert flow["6"]["inputs"]["text"] == "a fox"
    assert s.workflow["3"]["inputs"]["cfg"] == 7.0  # the spec's copy is untouched
    assert s.workflow["6"]["inputs"]["text"] == "a red fox sitting in fresh snow, golden hour"


def test_node_path_bindings_start_at_the_workflow_s_own_values(tmp_path) -> None:
    import json
    flow = json.loads((ROOT / "tests" / "specs" / "workflows" / "no_tokens.json").read_text())
    flow["3"]["inputs"].update(steps=60, seed=156680208700286, cfg=8)
    (tmp_path / "wf.json").write_text(json.dumps(flow))
    (tmp_path / "spec.yaml").write_text(
        "name: np\ngoal: A cat.\nrequirements: [A cat]\nworkflow: wf.json\n"
        "bindings: {6.inputs.text: prompt, 3.inputs.steps: steps, 3.inputs.cfg: cfg, "
        "3.inputs.seed: seed}\nstart: {prompt: a cat, cfg: 6}\ncritic: {model: llava}\n")
    s = spec.load(tmp_path / "spec.yaml", env={})
    assert (s.start.seed, s.start.steps, s.start.cfg) == (156680208700286, 60, 6.0)  # cfg: given
    with pytest.raises(InvalidSpec) as caught:
        spec.load(tmp_path / "spec.yaml", ["bounds.steps.max=40"], env={})
    assert "start.steps: 60 is outside bounds.steps (10 to 40) (from the workflow's " \
        "3.inputs.steps)" in str(caught.value)


def test_a_spec_reads_its_workflow_once_and_builds_its_refine_graph_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imitatoes.spec import lint
    from imitatoes.workflow import api, refine_graph

    shutil.copy(ROOT / "imitatoes/data/demo_workflow.json", tmp_path)
    text = (ROOT / "imitatoes/data/demo.yaml").read_text() + "\nrefine: {after_score: 0.5}\n"
    (tmp_path / "demo.yaml").write_text(text)
    calls: list[str] = []
    for module, name in ((api, "load"), (refine_graph, "graph")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: (
            calls.append(_name), _real(*a, **k))[1])
    monkeypatch.setattr(lint, "graph", refine_graph.graph)
    loaded = spec.load(tmp_path / "demo.yaml", env={})
    assert loaded.refine is not None and calls == ["load", "graph"]
