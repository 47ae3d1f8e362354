"""`imitatoes init`: a starter spec from the user's own API-format workflow."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.errors import WorkflowError
from imitatoes.loop import binder
from imitatoes.spec import knobs as knob_rules
from imitatoes.spec import load as specs
from imitatoes.spec import starter
from tests.conftest import ROOT

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
    assert result.exit_code == 2 and "no sampler imitatoes knows" in result.output
    assert not (tmp_path / "no_sampler.yaml").exists()
    ui = runner.invoke(app, ["init", str(ROOT / "tests/specs/workflows/ui_export.json"),
                             "--output", str(tmp_path / "ui.yaml")])
    assert ui.exit_code == 2 and "positive input is connected to nothing" in ui.output
    assert not (tmp_path / "ui.yaml").exists()


def test_init_keeps_tokens_a_user_already_placed(tmp_path: Path) -> None:
    shipped = json.loads((ROOT / "workflows" / "txt2img_sdxl.json").read_text())
    shipped["6"]["inputs"]["text"] = "__PROMPT__"  # placed by hand
    (tmp_path / "sdxl.json").write_text(json.dumps(shipped))
    bare = runner.invoke(app, ["init", str(tmp_path / "sdxl.json")])
    assert bare.exit_code == 2 and "give --goal" in bare.output
    assert not (tmp_path / "sdxl.yaml").exists()
    result = runner.invoke(app, ["init", str(tmp_path / "sdxl.json"), "--goal", "a lighthouse"])
    assert result.exit_code == 0, result.output
    s = specs.load(tmp_path / "sdxl.yaml", env={})
    assert ("__PROMPT__", "prompt") in s.bindings and s.start.prompt == "a lighthouse"
    assert binder.bind(s, s.start)["6"]["inputs"]["text"] == "a lighthouse"


def uncommented(path: Path) -> Path:
    """The spec with init's proposed knobs switched on, as a user would do it."""
    text = path.read_text()
    text = text.replace("# knobs:", "knobs:").replace("#   ", "  ")
    path.write_text(text)
    return path


def test_init_converts_a_ui_workflow_with_the_servers_definitions(servers, tmp_path: Path
                                                                   ) -> None:
    comfy, ollama = servers
    comfy.behaviour.loras = ["style.safetensors"]
    shutil.copy(ROOT / "tests/specs/workflows/sd15_lora.ui.json", tmp_path / "fox.json")
    result = runner.invoke(app, ["init", str(tmp_path / "fox.json"), "--comfy-url", comfy.url,
                                 "--goal", "A red fox in snow"])
    assert result.exit_code == 0, result.output
    assert "converted the UI-format workflow to API format" in result.output
    api = json.loads((tmp_path / "fox.api.json").read_text())
    assert set(api) == {"3", "4", "5", "6", "7", "8", "9", "10"}  # no note, reroute, primitive,
    assert api["9"]["inputs"]["images"] == ["8", 0]  # bypassed invert wired around
    assert api["3"]["inputs"]["seed"] == 156680208700286  # the primitive's value
    spec = specs.load(uncommented(tmp_path / "fox.yaml"), env={})
    assert spec.workflow_path == tmp_path / "fox.api.json"
    assert {k.name: k.targets for k in spec.knobs} == {
        "sampler": ("3.inputs.sampler_name",), "scheduler": ("3.inputs.scheduler",),
        "lora": ("10.inputs.strength_model", "10.inputs.strength_clip")}
    offered = comfy.object_info()["KSampler"]["input"]["required"]["sampler_name"][0]
    assert set(spec.knobs[0].choices) <= set(offered) and spec.knobs[0].start == "euler"
    # and it runs as written: one iteration against the stand-ins, knobs and all
    run = runner.invoke(app, ["run", str(tmp_path / "fox.yaml"), "--comfy-url", comfy.url,
                              "--ollama-url", ollama.url, "--set", "limits.max_loops=1",
                              "--set", "limits.iterations_per_loop=1", "--set",
                              "critic.model=qwen2.5vl:7b", "--runs-dir", str(tmp_path / "r"),
                              "--yes"])
    assert run.exit_code in (0, 3), run.output
    assert len(list((tmp_path / "r").glob("*/loop_01_iter_01.png"))) == 1


def test_a_ui_workflow_converts_offline_and_unknown_nodes_are_named(servers, tmp_path: Path
                                                                      ) -> None:
    comfy, _ = servers
    ui = json.loads((ROOT / "tests/specs/workflows/sd15_lora.ui.json").read_text())
    (tmp_path / "fox.ui.json").write_text(json.dumps(ui))
    alone = runner.invoke(app, ["init", str(tmp_path / "fox.ui.json")])  # no server at all
    assert alone.exit_code == 0, alone.output
    assert specs.load(tmp_path / "fox.yaml", env={}).name == "fox"  # not "fox.ui"
    assert (tmp_path / "fox.api.json").exists()
    ui["nodes"][0]["type"] = "CheckpointLoaderFancy"
    ui["nodes"][1]["type"] = "EmptyFlux2LatentImage"  # a core node of a newer ComfyUI
    (tmp_path / "odd.json").write_text(json.dumps(ui))
    refused = runner.invoke(app, ["init", str(tmp_path / "odd.json"), "--comfy-url", comfy.url])
    assert refused.exit_code == 2
    assert "node 4 (CheckpointLoaderFancy): unknown here; probably from a custom node pack" \
        in refused.output
    assert f"({ui['nodes'][1]['type']}): unknown here; a core node of a newer ComfyUI (0.3.71 " \
        "or later; this one is 0.3.64" in refused.output
    assert not (tmp_path / "odd.yaml").exists() and not (tmp_path / "odd.api.json").exists()


def node(cls: str, **inputs: object) -> dict[str, object]:
    return {"class_type": cls, "inputs": inputs}


FLUX = {  # SamplerCustomAdvanced with RandomNoise, BasicGuider, KSamplerSelect, BasicScheduler
    "11": node("DualCLIPLoader", clip_name1="t5xxl_fp16.safetensors",
               clip_name2="clip_l.safetensors", type="flux"),
    "12": node("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="default"),
    "6": node("CLIPTextEncode", text="a lighthouse in a storm", clip=["11", 0]),
    "26": node("FluxGuidance", guidance=3.5, conditioning=["6", 0]),
    "22": node("BasicGuider", model=["12", 0], conditioning=["26", 0]),
    "25": node("RandomNoise", noise_seed=219670278747233),
    "16": node("KSamplerSelect", sampler_name="euler"),
    "17": node("BasicScheduler", scheduler="simple", steps=20, denoise=1.0, model=["12", 0]),
    "27": node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
    "13": node("SamplerCustomAdvanced", noise=["25", 0], guider=["22", 0], sampler=["16", 0],
               sigmas=["17", 0], latent_image=["27", 0]),
    "10": node("VAELoader", vae_name="ae.safetensors"),
    "8": node("VAEDecode", samples=["13", 0], vae=["10", 0]),
    "9": node("SaveImage", filename_prefix="flux", images=["8", 0]),
}


def full_catalogue() -> dict[str, object]:
    return json.loads((ROOT / "tests/fixtures/comfyui/object_info_full.json").read_text()
                      )["response"]["body"]


def test_flux_binds_guidance_and_the_sampler_parts(tmp_path: Path) -> None:
    found = starter.find(FLUX)
    assert found.bindings == {"25.inputs.noise_seed": "seed", "17.inputs.steps": "steps",
                              "6.inputs.text": "prompt", "26.inputs.guidance": "cfg"}
    knobs = starter.propose(FLUX, full_catalogue())
    assert knobs["sampler"]["path"] == "16.inputs.sampler_name"
    assert knobs["scheduler"] == {"path": "17.inputs.scheduler", "choices": [
        "simple", "normal", "karras", "exponential", "sgm_uniform", "beta"]}
    assert "denoise" not in knobs  # from an empty latent: below 1 only leaves noise
    img2img = {**FLUX, "27": node("VAEEncode", pixels=["30", 0], vae=["10", 0]),
               "30": node("LoadImage", image="fox.png")}
    assert starter.propose(img2img, full_catalogue())["denoise"] == {
        "path": "17.inputs.denoise", "type": "number", "min": 0.3, "max": 1.0,
        "max_delta": 0.15, "step": 0.05}
    (tmp_path / "flux.json").write_text(json.dumps(FLUX))
    starter.write(tmp_path / "flux.json", tmp_path / "flux.yaml", None, full_catalogue())
    spec = specs.load(uncommented(tmp_path / "flux.yaml"), env={})
    assert (spec.start.cfg, spec.start.steps, spec.start.seed) == (3.5, 20, 219670278747233)
    assert knob_rules.server_problems(spec.knobs, spec.workflow, full_catalogue()) == []


def test_sdxl_with_a_refiner_binds_the_base_and_both_texts(tmp_path: Path) -> None:
    flow = {
        "4": node("CheckpointLoaderSimple", ckpt_name="sd_xl_base_1.0.safetensors"),
        "12": node("CheckpointLoaderSimple", ckpt_name="sd_xl_refiner_1.0.safetensors"),
        "75": node("CLIPTextEncodeSDXL", text_g="a lighthouse", text_l="a lighthouse",
                   width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024,
                   target_height=1024, clip=["4", 1]),
        "7": node("CLIPTextEncode", text="text, watermark", clip=["4", 1]),
        "81": node("CLIPTextEncodeSDXLRefiner", ascore=6, width=1024, height=1024,
                   text="a lighthouse", clip=["12", 1]),
        "5": node("EmptyLatentImage", width=1024, height=1024, batch_size=1),
        "10": node("KSamplerAdvanced", add_noise="enable", noise_seed=721897303308196, steps=25,
                   cfg=8, sampler_name="euler", scheduler="normal", start_at_step=0,
                   end_at_step=20, return_with_leftover_noise="enable", model=["4", 0],
                   positive=["75", 0], negative=["7", 0], latent_image=["5", 0]),
        "11": node("KSamplerAdvanced", add_noise="disable", noise_seed=0, steps=25, cfg=8,
                   sampler_name="euler", scheduler="normal", start_at_step=20,
                   end_at_step=10000, return_with_leftover_noise="disable", model=["12", 0],
                   positive=["81", 0], negative=["7", 0], latent_image=["10", 0]),
    }
    found = starter.find(flow)
    assert found.bindings == {"10.inputs.noise_seed": "seed", "10.inputs.steps": "steps",
                              "10.inputs.cfg": "cfg", "75.inputs.text_g": "prompt",
                              "75.inputs.text_l": "prompt", "7.inputs.text": "negative"}
    assert any("other samplers (11" in note for note in found.notes)
    (tmp_path / "sdxl.json").write_text(json.dumps(flow))
    starter.write(tmp_path / "sdxl.json", tmp_path / "sdxl.yaml", None, full_catalogue())
    spec = specs.load(uncommented(tmp_path / "sdxl.yaml"), env={})
    assert [k.name for k in spec.knobs] == ["sampler", "scheduler"]  # txt2img: no denoise
    assert binder.bind(spec, spec.start)["75"]["inputs"]["text_l"] == "a lighthouse"
    assert knob_rules.server_problems(spec.knobs, spec.workflow, full_catalogue()) == []


def test_odd_links_are_not_followed_and_never_crash() -> None:
    flow = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())
    for odd in (["7", [1]], ["7"], ["7", "a"], ["999", 0]):
        flow["6"]["inputs"]["text"] = odd  # the positive text is no text: nothing to bind
        with pytest.raises(WorkflowError, match="its text is no value|connected to nothing"):
            starter.find(flow)


@pytest.mark.parametrize(("encoder", "texts"), [
    ("CLIPTextEncodeSD3", {"clip_l": "a lighthouse", "clip_g": "a lighthouse",
                           "t5xxl": "a lighthouse", "empty_padding": "none"}),
    ("CLIPTextEncodeHiDream", {"clip_l": "a lighthouse", "clip_g": "a lighthouse",
                               "t5xxl": "a lighthouse", "llama": "a lighthouse"}),
    ("CLIPTextEncodeLumina2", {"system_prompt": "superior", "user_prompt": "a lighthouse"}),
    ("TextEncodeQwenImageEdit", {"prompt": "a lighthouse", "vae": ["10", 0],
                                 "image": ["30", 0]}),
])
def test_the_encoders_of_newer_image_models_are_found(encoder: str, texts: dict,
                                                      tmp_path: Path) -> None:
    flow = {
        "4": node("CheckpointLoaderSimple", ckpt_name="model.safetensors"),
        "10": node("VAELoader", vae_name="ae.safetensors"),
        "30": node("LoadImage", image="fox.png"),
        "6": node(encoder, clip=["4", 1], **texts),
        "7": node(encoder, clip=["4", 1], **{k: ("blurry" if v == "a lighthouse" else v)
                                               for k, v in texts.items()}),
        "5": node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
        "3": node("KSampler", seed=5, steps=28, cfg=4.5, sampler_name="euler",
                  scheduler="simple", denoise=1.0, model=["4", 0], positive=["6", 0],
                  negative=["7", 0], latent_image=["5", 0]),
    }
    found = starter.find(flow)
    prompts = [t for t, p in found.bindings.items() if p == "prompt"]
    assert prompts == [f"6.inputs.{k}" for k, v in texts.items() if v == "a lighthouse"]
    assert found.texts == {"prompt": "a lighthouse", "negative": "blurry"}
    full = full_catalogue()
    for path in prompts:  # each a multiline text input of that node in ComfyUI's catalogue
        name = path.rsplit(".", 1)[1]
        definition = full[encoder]["input"]["required"][name]
        assert definition[0] == "STRING" and definition[1]["multiline"]
    (tmp_path / "new.json").write_text(json.dumps(flow))
    starter.write(tmp_path / "new.json", tmp_path / "new.yaml", None, full)
    spec = specs.load(tmp_path / "new.yaml", env={})
    bound = binder.bind(spec, dataclasses.replace(spec.start, prompt="a fox"))
    assert all(bound["6"]["inputs"][p.rsplit(".", 1)[1]] == "a fox" for p in prompts)


def test_init_says_which_image_the_critic_judges() -> None:
    flow = json.loads((ROOT / "tests/fixtures/comfyui-ui/hiresfix_esrgan_workflow.api.json"
                       ).read_text())
    assert "judged: the image of node 12 (SaveImage)" in starter.find(flow).notes


def test_init_warns_that_a_batch_is_judged_by_its_first_image() -> None:
    flow = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())
    flow["5"]["inputs"]["batch_size"] = 4
    assert any("node 5 makes 4 images a render" in n for n in starter.find(flow).notes)
    flow["5"]["inputs"]["batch_size"] = 1
    assert not any("images a render" in n for n in starter.find(flow).notes)


def test_the_first_sampler_is_the_one_no_other_feeds_whatever_its_id() -> None:
    """A refiner saved with a lower id than its base (nodes added in another order), or a
    base pass inside a subgraph ("20:3"), is still the second pass."""
    flow = {
        "4": node("CheckpointLoaderSimple", ckpt_name="sd_xl_base_1.0.safetensors"),
        "6": node("CLIPTextEncode", text="a lighthouse", clip=["4", 1]),
        "7": node("CLIPTextEncode", text="text, watermark", clip=["4", 1]),
        "5": node("EmptyLatentImage", width=1024, height=1024, batch_size=1),
        "20:3": node("KSampler", seed=1, steps=25, cfg=8, sampler_name="euler",
                     scheduler="normal", denoise=1.0, model=["4", 0], positive=["6", 0],
                     negative=["7", 0], latent_image=["5", 0]),
        "2": node("KSampler", seed=2, steps=10, cfg=5, sampler_name="euler", scheduler="normal",
                  denoise=0.4, model=["4", 0], positive=["6", 0], negative=["7", 0],
                  latent_image=["20:3", 0]),
        "8": node("VAEDecode", samples=["2", 0], vae=["4", 2]),
        "9": node("SaveImage", filename_prefix="x", images=["8", 0]),
    }
    found = starter.find(flow)
    assert found.bindings["20:3.inputs.seed"] == "seed" and "2.inputs.seed" not in found.bindings
    assert any("other samplers (2" in n for n in found.notes)
