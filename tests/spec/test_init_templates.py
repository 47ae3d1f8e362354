"""`init` on every text-to-image template ComfyUI ships (both template packages), with no
server: a valid spec that binds the prompt and the seed, or, where no text reaches the image,
a refusal that says so."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.spec import load as specs
from tests.conftest import ROOT, found

TEMPLATES = ROOT / "tests" / "fixtures" / "templates"
UI = found(sorted(TEMPLATES.glob("0.*/*.ui.json")), "templates")
# Image-to-image work under a text-to-image tag: a depth map (Lotus) and an image variation
# whose text is zeroed out (unCLIP revision): no prompt reaches the image.
NO_PROMPT = {"image_lotus_depth_v1_1", "sdxl_revision_zero_positive"}
runner = CliRunner()


def stem(path: Path) -> str:
    return path.name.split(".ui.json")[0]


@pytest.mark.parametrize("path", UI, ids=lambda p: f"{p.parent.name}/{stem(p)}")
def test_init_binds_prompt_and_seed_offline(path: Path, tmp_path: Path) -> None:
    workflow = tmp_path / path.name
    shutil.copy(path, workflow)
    result = runner.invoke(app, ["init", str(workflow)], env={"IMITATOES_COMFY_URL": ""})
    target = tmp_path / f"{stem(path)}.yaml"
    if stem(path) in NO_PROMPT:
        assert result.exit_code == 2 and "no prompt reaches the image" in result.output
        assert not target.exists()
        return
    assert result.exit_code == 0, result.output
    spec = specs.load(target, env={})
    bound = dict(spec.bindings)
    assert {"prompt", "seed"} <= set(bound.values()), bound
    assert spec.name == stem(path) and spec.start.prompt
    prompt_at = next(t for t, p in bound.items() if p == "prompt").split(".inputs.")
    assert spec.workflow[prompt_at[0]]["inputs"][prompt_at[1]] == spec.start.prompt


def test_a_template_for_a_newer_comfyui_is_refused_naming_its_nodes(tmp_path: Path) -> None:
    source = TEMPLATES / "0.11.97-newer" / "image_flux2.ui.json.gz"
    workflow = tmp_path / "image_flux2.json"
    workflow.write_bytes(gzip.decompress(source.read_bytes()))
    result = runner.invoke(app, ["init", str(workflow)], env={"IMITATOES_COMFY_URL": ""})
    assert result.exit_code == 2
    assert "(Flux2Scheduler): unknown here; a core node of ComfyUI 0.3.71 that imitatoes' " \
        "own catalogue (0.3.64) lacks: give --comfy-url of a ComfyUI that has it" in \
        " ".join(result.output.split())
    assert "get each node as its line says" in result.output  # not "export it as API"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_flux2.json"]  # nothing left


def test_a_rejected_spec_is_kept_where_the_error_points(tmp_path: Path) -> None:
    """What init writes must validate; when it does not, the error points into a file that
    is there to read, not one init has just removed."""
    workflow = tmp_path / "fox.json"
    shutil.copy(ROOT / "workflows" / "txt2img_sd15.json", workflow)
    result = runner.invoke(app, ["init", str(workflow), "--goal", "x" * 5000],
                           env={"IMITATOES_COMFY_URL": ""})
    assert result.exit_code == 2
    assert "fox.rejected.yaml:" in result.output and "goal" in result.output
    assert (tmp_path / "fox.rejected.yaml").exists() and not (tmp_path / "fox.yaml").exists()
