"""The client against a real ComfyUI: `IMITATOES_COMFY_URL=http://... pytest -m live`.
Model-free workflows from the recordings run on any ComfyUI; init and a one-iteration run
need a checkpoint (any: ../shared/tools/make_random_sd15.py writes one)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.clients.comfy import ComfyClient, ComfyRejected
from imitatoes.commands.cli import app
from imitatoes.standins.ollama import OllamaStandin
from tests.conftest import LIVE_COMFY, ROOT
from tests.servers import fixture

runner = CliRunner()

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not LIVE_COMFY, reason="IMITATOES_COMFY_URL is not set")]


@pytest.fixture
def client() -> ComfyClient:
    return ComfyClient(LIVE_COMFY or "", read_timeout=60)


def test_live_image_round_trip(client: ComfyClient) -> None:
    prompt = fixture("comfyui", "prompt_ok.json")["request"]["body"]["prompt"]
    prompt["1"]["inputs"]["color"] = 0x00FF00  # not cached from an earlier run
    sub = client.submit(prompt)
    result = client.wait(sub.prompt_id, timeout=120)
    [(_, data)] = client.images(result)
    assert data.startswith(b"\x89PNG")


def test_live_text_workflow(client: ComfyClient) -> None:
    prompt = fixture("comfyui", "prompt_text_ok.json")["request"]["body"]["prompt"]
    result = client.wait(client.submit(prompt).prompt_id, timeout=120)
    assert result.texts


def test_live_refusal_is_readable(client: ComfyClient) -> None:
    body = fixture("comfyui", "prompt_err_width_above_max.json")["request"]["body"]
    with pytest.raises(ComfyRejected, match="input width: 16385 is bigger than the maximum 16384"):
        client.submit(body["prompt"])


def test_live_custom_node_in_a_model_free_graph(client: ComfyClient) -> None:
    if not client.object_info("ImitatoesSelfImprovingPrompt"):
        pytest.skip("custom_nodes/imitatoes is not installed in this ComfyUI")
    critique = ('{"done": false, "changes": {"prompt_append": "golden hour, snow", '
                '"neg_append": ""}, "reason": "needs light"}')
    prompt = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a red fox, snow"}},
              "2": {"class_type": "ImitatoesSelfImprovingPrompt",
                    "inputs": {"prompt": ["1", 0], "critique": critique, "iteration": 0,
                               "max_iterations": 3}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    for _ in range(2):  # the second pass must run the node again, not serve it from cache
        result = client.wait(client.submit(prompt).prompt_id, timeout=120)
        assert result.texts == ("a red fox, snow, golden hour",)
        cached = result.entry["status"]["messages"][1][1]["nodes"]
        assert "2" not in cached


def test_live_init_then_one_iteration(client: ComfyClient, tmp_path: Path) -> None:
    """A UI-format SD 1.5 graph (its LoRA bypassed, a Reroute, a seed primitive, a note) made
    into a spec by `imitatoes init` with this ComfyUI's definitions, its proposed knobs
    switched on, then one iteration on what init wrote (the critic: the Ollama stand-in)."""
    checkpoints = client.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"][
        "input"]["required"]["ckpt_name"][0]
    if not checkpoints:
        pytest.skip("this ComfyUI has no checkpoint (../shared/tools/make_random_sd15.py)")
    ui = json.loads((ROOT / "tests/specs/workflows/sd15_lora.ui.json").read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    nodes[10]["mode"] = 4  # no LoRA here: bypassed, its model and clip wired around
    nodes[4]["widgets_values"] = [checkpoints[0]]
    nodes[5]["widgets_values"] = [64, 64, 1]  # a CPU renders this in seconds
    nodes[3]["widgets_values"][2] = 2  # steps
    (tmp_path / "mine.json").write_text(json.dumps(ui))
    made = runner.invoke(app, ["init", str(tmp_path / "mine.json"), "--comfy-url", LIVE_COMFY,
                               "--goal", "A red fox in snow"])
    assert made.exit_code == 0, made.output
    spec_path = tmp_path / "mine.yaml"
    spec_path.write_text(spec_path.read_text().replace("# knobs:", "knobs:")
                         .replace("#   ", "  "))
    assert "lora" not in spec_path.read_text()  # bypassed: nothing to tune
    with OllamaStandin() as ollama:
        ran = runner.invoke(app, ["run", str(spec_path), "--comfy-url", LIVE_COMFY,
                                  "--ollama-url", ollama.url, "--set", "critic.model=llava",
                                  "--iterations-per-loop", "1", "--max-loops", "1",
                                  "--runs-dir", str(tmp_path / "runs"), "--yes"])
    assert ran.exit_code in (0, 3), ran.output
    [png] = list((tmp_path / "runs").glob("*/loop_01_iter_01.png"))
    assert png.read_bytes().startswith(b"\x89PNG")


def refine_run(client: ComfyClient, tmp_path: Path) -> Path:
    """A run whose later renders refine the best image, and repair a region of it."""
    checkpoints = client.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"][
        "input"]["required"]["ckpt_name"][0]
    if not checkpoints:
        pytest.skip("this ComfyUI has no checkpoint (../shared/tools/make_random_sd15.py)")
    flow = json.loads((ROOT / "workflows/txt2img_sd15.json").read_text())
    flow["4"]["inputs"]["ckpt_name"] = checkpoints[0]
    flow["5"]["inputs"].update(width=64, height=64)
    (tmp_path / "sd15.json").write_text(json.dumps(flow))
    (tmp_path / "spec.yaml").write_text(
        "name: live-refine\ngoal: A red circle.\nrequirements: [A red circle, Blue background]\n"
        "workflow: sd15.json\nbindings: {6.inputs.text: prompt, 7.inputs.text: negative, "
        "3.inputs.seed: seed, 3.inputs.steps: steps, 3.inputs.cfg: cfg}\n"
        "start: {prompt: a red circle, steps: 2}\nbounds: {steps: {min: 1, max: 3}}\n"
        "critic: {model: llava}\nlimits: {iterations_per_loop: 3, max_loops: 1}\n"
        "refine: {after_score: 0.0, repair: {}}\n")
    with OllamaStandin() as ollama:
        ollama.behaviour.never_done = True
        ollama.behaviour.region = [200, 200, 800, 800]
        ran = runner.invoke(app, ["run", str(tmp_path / "spec.yaml"), "--comfy-url",
                                  LIVE_COMFY, "--ollama-url", ollama.url, "--runs-dir",
                                  str(tmp_path / "runs"), "--yes"])
    assert ran.exit_code in (0, 3), ran.output
    [run_dir] = list((tmp_path / "runs").iterdir())
    return run_dir


def test_live_refine_and_repair(client: ComfyClient, tmp_path: Path) -> None:
    """Refine and repair steps rendered by a real ComfyUI (any SD 1.5 checkpoint, the random
    one included): the best image uploaded, img2img from it, then a masked repaint."""
    run_dir = refine_run(client, tmp_path)
    records = [json.loads(p.read_text()) for p in sorted(run_dir.glob("loop_01_iter_0?.json"))]
    steps = [r.get("refine") or {} for r in records]
    assert steps[0] == {} and steps[1].get("image", "").startswith("imitatoes_")
    assert any(s.get("region") for s in steps[1:]), steps
    repaired = next(r for r, s in zip(records, steps, strict=True) if s.get("region"))
    assert (run_dir / f"{repaired['key']}_mask.png").is_file()
    sent = client.history(repaired["prompt_id"])["prompt"][2]
    assert {"LoadImage", "VAEEncode", "LoadImageMask", "SetLatentNoiseMask"} <= {
        n["class_type"] for n in sent.values()}


def test_live_every_iteration_of_a_refine_run_replays_identical(client: ComfyClient,
                                                                 tmp_path: Path) -> None:
    """Text-to-image, img2img and inpaint iterations alike (a refine was once replayed as
    text-to-image: 59 of 255 off)."""
    from imitatoes.runs import replay

    run_dir = refine_run(client, tmp_path)
    for png in sorted(run_dir.glob("loop_01_iter_0?.png")):
        result = replay.replay(run_dir, png.stem)
        assert (result.identical, result.difference) == (True, 0.0), png.stem


def test_live_the_judged_image_is_the_saved_one_a_preview_came_before(client: ComfyClient
                                                                        ) -> None:
    from PIL import Image

    from imitatoes.clients.comfy import ComfyRenderer

    checkpoints = client.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"][
        "input"]["required"]["ckpt_name"][0]
    if not checkpoints:
        pytest.skip("this ComfyUI has no checkpoint (../shared/tools/make_random_sd15.py)")
    prompt = fixture("comfyui_live", "execution_order_preview_and_save.json")["request"][
        "body"]["prompt"]
    prompt["4"]["inputs"]["ckpt_name"] = checkpoints[0]
    prompt["3"]["inputs"]["seed"] = 12345  # not served from an earlier run's cache
    rendered = ComfyRenderer(client, timeout=120).render(prompt, lambda v, m: None)
    assert Image.open(io.BytesIO(rendered.image)).size == (128, 128)  # not the 64 px preview
