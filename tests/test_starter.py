"""`imitatoes init`: a starter spec from the user's own API-format workflow."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from imitatoes import spec as specs
from imitatoes.cli import app

from .conftest import ROOT

runner = CliRunner()


def exported(tmp_path: Path, **sampler: object) -> Path:
    """The shipped SD 1.5 graph as ComfyUI exports it: real text and numbers, no tokens."""
    flow = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())
    flow["6"]["inputs"]["text"] = "a red fox in snow"
    flow["7"]["inputs"]["text"] = "blurry"
    flow["3"]["inputs"].update({"seed": 156680208700286, "cfg": 8, **sampler})
    path = tmp_path / "my_fox.json"
    path.write_text(json.dumps(flow))
    return path


def test_init_binds_by_node_path_and_starts_at_the_workflows_values(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", str(exported(tmp_path)), "--goal", "A red fox"])
    assert result.exit_code == 0, result.output
    assert "sampler: node 3 (KSampler)" in result.output
    written = tmp_path / "my_fox.yaml"
    data = yaml.safe_load(written.read_text())
    assert data["bindings"] == {"3.inputs.seed": "seed", "3.inputs.steps": "steps",
                                "3.inputs.cfg": "cfg", "6.inputs.text": "prompt",
                                "7.inputs.text": "negative"}
    s = specs.load(written, env={})
    assert (s.start.prompt, s.start.negative, s.start.seed, s.start.cfg) == (
        "a red fox in snow", "blurry", 156680208700286, 8)
    assert s.goal == "A red fox"
    again = runner.invoke(app, ["init", str(exported(tmp_path))])
    assert again.exit_code == 2 and "already exists" in again.output  # never overwrites


def test_init_follows_conditioning_nodes_and_widens_bounds(tmp_path: Path) -> None:
    path = exported(tmp_path, steps=4, cfg=1.0)
    flow = json.loads(path.read_text())
    flow["20"] = {"class_type": "ConditioningSetArea",
                  "inputs": {"conditioning": ["6", 0], "width": 64, "height": 64, "x": 0, "y": 0,
                             "strength": 1.0}}
    flow["3"]["inputs"]["positive"] = ["20", 0]
    path.write_text(json.dumps(flow))
    out = tmp_path / "elsewhere.yaml"
    result = runner.invoke(app, ["init", str(path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(out.read_text())
    assert data["bindings"]["6.inputs.text"] == "prompt"
    assert data["bounds"] == {"steps": {"min": 4, "max": 60}, "cfg": {"min": 1.0, "max": 12.0}}
    assert "guessed from the prompt" in result.output


def test_init_refuses_what_it_cannot_bind(tmp_path: Path) -> None:
    flow = json.loads(exported(tmp_path).read_text())
    del flow["3"]
    (tmp_path / "no_sampler.json").write_text(json.dumps(flow))
    result = runner.invoke(app, ["init", str(tmp_path / "no_sampler.json")])
    assert result.exit_code == 2 and "no KSampler" in result.output
    assert not (tmp_path / "no_sampler.yaml").exists()
    ui = runner.invoke(app, ["init", str(ROOT / "tests/specs/workflows/ui_export.json"),
                             "--output", str(tmp_path / "ui.yaml")])
    assert ui.exit_code == 2 and "UI-format workflow" in ui.output


def test_init_keeps_tokens_a_user_already_placed(tmp_path: Path) -> None:
    shipped = ROOT / "workflows" / "txt2img_sdxl.json"
    (tmp_path / "sdxl.json").write_bytes(shipped.read_bytes())
    bare = runner.invoke(app, ["init", str(tmp_path / "sdxl.json")])
    assert bare.exit_code == 2 and "give --goal" in bare.output
    assert not (tmp_path / "sdxl.yaml").exists()
    result = runner.invoke(app, ["init", str(tmp_path / "sdxl.json"), "--goal", "a lighthouse"])
    assert result.exit_code == 0, result.output
    s = specs.load(tmp_path / "sdxl.yaml", env={})
    assert ("__PROMPT__", "prompt") in s.bindings and s.start.prompt == "a lighthouse"
    assert s.bind(s.start)["6"]["inputs"]["text"] == "a lighthouse"
