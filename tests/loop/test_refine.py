"""Refine mode: from the best image (img2img) once it is good enough."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from imitatoes.commands.lifecycle import Run
from imitatoes.errors import WorkflowError
from imitatoes.loop import regions as repair
from imitatoes.loop.engine import Engine
from imitatoes.loop.events import Event, ImageRendered
from imitatoes.loop.ports import Saved
from imitatoes.loop.state import RefineState, first_state
from imitatoes.runs import folder as runfolder
from imitatoes.spec import load as specs
from imitatoes.workflow import refine_graph as refine
from tests.conftest import ROOT
from tests.doubles import FakeCritic, FakeRenderer, verdict

SD15 = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())
DEMO = specs.load(ROOT / "imitatoes" / "data" / "demo.yaml", env={})


def test_the_refine_graph_loads_the_image_in_place_of_the_empty_latent() -> None:
    g = refine.graph(SD15)
    flow = g.workflow
    assert g.denoise == "3.inputs.denoise"
    assert flow["10"] == {"class_type": "LoadImage", "inputs": {"image": refine.INIT_IMAGE},
                          "_meta": {"title": "imitatoes: the image to refine"}}
    assert flow["11"] == {"class_type": "ImageScale", "inputs": {  # at the latent's size
        "upscale_method": "lanczos", "width": 512, "height": 512, "crop": "disabled",
        "image": ["10", 0]}}
    assert flow["12"] == {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0],
                                                                 "vae": ["4", 2]}}
    assert flow["3"]["inputs"]["latent_image"] == ["12", 0] and "5" not in flow
    assert SD15["3"]["inputs"]["latent_image"] == ["5", 0]  # the original is untouched


def test_a_graph_it_cannot_refine_says_why() -> None:
    advanced = json.loads(json.dumps(SD15))
    advanced["3"]["class_type"] = "KSamplerAdvanced"
    del advanced["3"]["inputs"]["denoise"]
    with pytest.raises(WorkflowError, match="has none; use KSampler, or give refine.workflow"):
        refine.graph(advanced)
    own = json.loads(json.dumps(SD15))
    own["20"] = {"class_type": "LoadImage", "inputs": {"image": refine.INIT_IMAGE}}
    assert refine.graph(own).workflow is own  # the user's refine workflow, as written


def test_upload_names_come_from_the_bytes() -> None:
    a, b = refine.upload_name(b"one"), refine.upload_name(b"two")
    assert a == refine.upload_name(b"one") and a != b
    assert a.startswith("imitatoes_") and a[10:-4].isalnum() and a.endswith(".png")


def refining(after: float = 0.75, **denoise: float) -> specs.Spec:
    r = specs.Refine(after, specs.Range(denoise.get("min", 0.25), denoise.get("max", 0.6),
                                        denoise.get("max_delta", 0.1)),
                     denoise.get("start", 0.45), refine.graph(DEMO.workflow))
    return dataclasses.replace(DEMO, refine=r, limits=specs.Limits(6, 1),
                               search=specs.Search())  # fixed: auto has its own tests


def test_refines_from_the_best_once_it_is_good_enough_and_moves_denoise() -> None:
    renderer = FakeRenderer()
    images: dict[str, bytes] = {}
    events: list[Event] = []

    def keep(event: Event) -> None:
        events.append(event)
        if isinstance(event, ImageRendered):
            images[event.key] = event.rendered.image

    critic = FakeCritic(*(verdict(score, prompt_append=word) for score, word in zip(
        (0.5, 0.8, 0.6, 0.8, 0.9, 0.9), ("red", "blue", "round", "flat", "sharp", "clean"),
        strict=True)))
    engine = Engine(refining(), renderer, critic, [keep], rng=random.Random(0),
                    reuse=lambda k: Saved(images[k], DEMO.start) if k in images else None)
    state = engine.run(first_state(refining()))
    loads = [next((n["inputs"]["image"] for n in w.values()
                   if n["class_type"] == "LoadImage"), None) for w in renderer.workflows]
    best2 = refine.upload_name(images["loop_01_iter_02"])
    best5 = refine.upload_name(images["loop_01_iter_05"])
    assert loads == [None, None, best2, best2, best2, best5]  # from the best, then the new best
    denoise = [w["3"]["inputs"]["denoise"] for w in renderer.workflows]
    # 0.6 < 0.8: closer to the best (-0.1); 0.8 = 0.8: freer (+0.1); 0.9 beats it: kept
    assert denoise == [1.0, 1.0, 0.45, 0.35, 0.45, 0.45]
    steps = [e.refine for e in events if isinstance(e, ImageRendered)]
    assert steps[2] == {"from": "loop_01_iter_02", "denoise": 0.45, "image": best2}
    assert state.refine == RefineState("loop_01_iter_05", 0.55)
    assert [name for name, _ in renderer.uploads] == [best2, best2, best2, best5]


def demo_run(servers, tmp_path: Path, settings: str, region: list | None = None,
             workflow: str = "") -> Run:
    """The demo spec with `settings` after its limits (which `settings` replaces), against
    the stand-ins, the critic never satisfied (so it keeps refining) and, with `region`,
    saying every unmet requirement fails there. `workflow`: a refine workflow beside it."""
    comfy, ollama = servers
    shutil.copy(ROOT / "imitatoes/data/demo_workflow.json", tmp_path)
    if workflow:
        (tmp_path / "mine_refine.json").write_text(workflow)
    spec_path = tmp_path / "demo.yaml"
    spec_path.write_text((ROOT / "imitatoes/data/demo.yaml").read_text().replace(
        "limits: {iterations_per_loop: 3, max_loops: 3}", settings))
    ollama.behaviour.never_done = True
    ollama.behaviour.region = region
    return Run.begin(specs.load(spec_path, env=env_for(servers)), tmp_path / "runs")


def env_for(servers) -> dict[str, str]:
    return {"IMITATOES_COMFY_URL": servers[0].url, "IMITATOES_OLLAMA_URL": servers[1].url}


def test_refine_against_the_stand_ins_keeps_the_image_and_resumes(servers, tmp_path: Path
                                                                   ) -> None:
    comfy, _ = servers
    env = env_for(servers)
    outcome = demo_run(servers, tmp_path, "limits: {iterations_per_loop: 4, max_loops: 1}\n"
                       "refine: {after_score: 0.5, denoise: {start: 0.4}}").execute()
    run_dir = outcome.run_dir
    records = [json.loads(p.read_text()) for p in sorted(run_dir.glob("loop_01_iter_0?.json"))]
    refined = [r for r in records if r.get("refine")]
    assert refined, [r.get("score") for r in records]
    first = refined[0]
    source = run_dir / f"{first['refine']['from']}.png"
    assert comfy.inputs[first["refine"]["image"]] == source.read_bytes()  # uploaded as it is
    sent = comfy.history[first["prompt_id"]]["prompt"][2]
    assert {n["class_type"] for n in sent.values()} >= {"LoadImage", "VAEEncode"}
    # the stand-in blends the new picture over the init image by denoise
    made = Image.open(run_dir / f"{first['key']}.png").convert("RGB")
    init = Image.open(io.BytesIO(source.read_bytes())).convert("RGB")
    assert ImageChops.difference(made, init).getbbox() is not None  # not a copy ...
    assert _mean_diff(made, init) < _mean_diff(made, Image.new("RGB", made.size))  # ... near it
    state = json.loads((run_dir / "state.json").read_text())
    assert state["refine"]["from"] == state["best"]["key"]
    # resumed for more, it goes on refining from where it was
    before = {p.name for p in run_dir.glob("loop_*.json")}
    more = Run.reopen(run_dir, ["limits.max_loops=2"], env).execute()
    assert more.state.renders > outcome.state.renders
    [nxt, *_] = sorted(p for p in run_dir.glob("loop_*.json") if p.name not in before)
    assert json.loads(nxt.read_text())["refine"]["from"] == state["refine"]["from"]


def _mean_diff(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a, b.resize(a.size)).convert("L")
    histogram = diff.histogram()
    return sum(v * n for v, n in enumerate(histogram)) / (a.width * a.height)


def test_a_refine_workflow_of_ones_own_travels_with_the_run(servers, tmp_path: Path) -> None:
    flow = json.loads((ROOT / "imitatoes/data/demo_workflow.json").read_text())
    own = refine.graph(flow).workflow  # as a user would write it: LoadImage __INIT_IMAGE__
    run_dir = demo_run(servers, tmp_path, "limits: {iterations_per_loop: 4, max_loops: 1}\n"
                       "refine: {after_score: 0.5, workflow: mine_refine.json}",
                       workflow=json.dumps(own)).execute().run_dir
    env = env_for(servers)
    assert json.loads((run_dir / "refine_workflow.json").read_text()) == own
    again = specs.load(run_dir / "spec.yaml", env=env)  # what resume reads
    assert again.refine is not None and again.refine.graph.workflow == own


@pytest.mark.parametrize(("raw", "box", "why"), [
    ([100, 100, 300, 300], [100, 100, 300, 300], ""),
    ([300, 300, 100, 100], [100, 100, 300, 300], ""),  # corners swapped
    ([-50, -50, 200, 200], [0, 0, 200, 200], ""),  # clamped to the image
    ([500, 500, 510, 510], [455, 455, 555, 555], ""),  # grown to 1% around its centre
    ([0, 0, 1000, 1000], [146.4, 146.4, 853.6, 853.6], ""),  # shrunk to half
    ([1200, 1200, 1500, 1500], None, "no area inside the image (coordinates are 0-1000)"),
    ([1, 2, 3], None, "not four numbers [x0, y0, x1, y1]"),
    ([0, 0, "big", 9], None, "not four finite numbers"),
    ([0, 0, 10**400, 10**400], [146.4, 146.4, 853.6, 853.6], ""),  # huge, then shrunk
    ([0, 0, float("inf"), 9], None, "not four finite numbers"),
])
def test_regions_are_clamped_to_the_image_and_to_a_share_of_it(raw, box, why) -> None:
    got, reason = repair.accept(raw, 0.01, 0.5)
    assert (got.as_list() if got else None, reason) == (box, why)


def test_the_mask_is_white_inside_the_box_and_black_outside() -> None:
    data = repair.mask(repair.Box(250, 250, 750, 500), (200, 100), 0.1)
    m = Image.open(io.BytesIO(data))
    assert m.mode == "L" and m.size == (200, 100)
    assert m.getpixel((100, 37)) > 240 and m.getpixel((10, 10)) == 0
    outside = [m.getpixel((x, y)) for x in range(200) for y in range(100)
               if not (50 <= x < 150 and 25 <= y < 50)]
    assert max(outside) == 0  # the soft edge stays inside the box


def test_a_region_is_repainted_and_the_rest_stays_as_it_was(servers, tmp_path: Path) -> None:
    comfy, _ = servers
    run_dir = demo_run(servers, tmp_path, "limits: {iterations_per_loop: 4, max_loops: 1}\n"
                       "refine: {after_score: 0.5, denoise: {start: 0.6}, repair: "
                       "{feather: 0.02}}", region=[250, 250, 750, 750]).execute().run_dir
    records = [json.loads(p.read_text()) for p in sorted(run_dir.glob("loop_01_iter_0?.json"))]
    repaired = next(r for r in records if (r.get("refine") or {}).get("region"))
    region = repaired["refine"]["region"]
    assert region["box"] == [250, 250, 750, 750] and region["fix"]
    assert "region" in repaired["critic"]["prompt"]  # the critic was told it may point
    mask = Image.open(run_dir / f"{repaired['key']}_mask.png")
    made = Image.open(run_dir / f"{repaired['key']}.png").convert("RGB")
    source = Image.open(run_dir / f"{repaired['refine']['from']}.png").convert("RGB")
    assert mask.size == made.size == source.size
    w, h = made.size
    inside = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    outside = Image.new("L", made.size, 255)
    outside.paste(0, inside)
    diff = ImageChops.difference(made, source)
    assert ImageChops.multiply(diff.convert("L"), outside).getbbox() is None  # untouched
    assert diff.crop(inside).getbbox() is not None  # repainted
    sent = comfy.history[repaired["prompt_id"]]["prompt"][2]
    assert {"LoadImageMask", "SetLatentNoiseMask"} <= {n["class_type"] for n in sent.values()}
    report = (run_dir / "report.html").read_text()
    assert 'class="region"' in report and "left:25.0%;top:25.0%;width:50.0%" in report


def test_an_absurd_region_is_refused_and_recorded(servers, tmp_path: Path) -> None:
    run_dir = demo_run(servers, tmp_path, "limits: {iterations_per_loop: 3, max_loops: 1}\n"
                       "refine: {after_score: 0.5, repair: {}}",
                       region=[5000, 5000, 9000, 9000]).execute().run_dir
    refusals = [f for p in sorted(run_dir.glob("loop_01_iter_0?.json"))
                for f in json.loads(p.read_text()).get("refused", []) if f["field"] == "region"]
    assert refusals and "no area inside the image" in refusals[0]["reason"]
    assert not list(run_dir.glob("*_mask.png"))  # the whole image was refined instead


def test_refine_stops_repeating_itself_only_when_denoise_cannot_move() -> None:
    """A critic that asks for nothing: entering refine mode and each denoise step make the
    next image differ, so the run goes on until denoise is at its bound."""
    renderer = FakeRenderer()
    images: dict[str, bytes] = {}

    def keep(event: Event) -> None:
        if isinstance(event, ImageRendered):
            images[event.key] = event.rendered.image

    engine = Engine(refining(), renderer, FakeCritic(*[verdict(0.8)] * 6), [keep],
                    rng=random.Random(0),
                    reuse=lambda k: Saved(images[k], DEMO.start) if k in images else None)
    state = engine.run(first_state(refining()))
    assert [w["3"]["inputs"]["denoise"] for w in renderer.workflows] == [1.0, 0.45, 0.55, 0.6]
    assert (state.status, state.stalled) == ("limits", True)


def test_resuming_under_a_spec_without_refine_turns_it_off() -> None:
    from imitatoes.loop.state import within_limits

    state = first_state(refining())
    state.refine = RefineState("loop_01_iter_02", 0.45)
    kept, _ = within_limits(state, refining())
    off, notes = within_limits(state, DEMO)
    assert kept.refine == state.refine and off.refine is None
    assert "refine mode is off now (the spec has no refine section)" in notes


def test_a_chosen_candidate_keeps_its_mask_under_the_iteration_s_name(servers, tmp_path: Path
                                                                      ) -> None:
    run_dir = demo_run(servers, tmp_path, "limits: {iterations_per_loop: 3, max_loops: 1}\n"
                       "search: {candidates: 2}\nrefine: {after_score: 0.5, repair: {}}",
                       region=[100, 100, 400, 400]).execute().run_dir
    records = [json.loads(p.read_text()) for p in sorted(run_dir.glob("loop_01_iter_0?.json"))]
    repaired = [r["key"] for r in records if (r.get("refine") or {}).get("region")]
    assert repaired and all((run_dir / f"{k}_mask.png").is_file() for k in repaired)


def test_the_refine_rules_on_their_own() -> None:
    from imitatoes.loop import refine_policy as policy
    from imitatoes.loop.checklist import Item
    from imitatoes.loop.state import Best, Region

    config = refining(after=0.75, min=0.3, max=0.5, max_delta=0.15, start=0.45).refine
    low = Best("loop_01_iter_01", 0.5, DEMO.start)
    assert policy.enter(config, low, None) is None  # not good enough yet
    best = Best("loop_01_iter_02", 0.75, DEMO.start)
    refine = policy.enter(config, best, None)
    assert refine == RefineState("loop_01_iter_02", 0.45)
    said = []
    for score in (0.5, 0.5, 0.75, 0.75, 1.0):
        refine, moved = policy.adapt_denoise(config, refine, best, score)
        said.append(moved)
    # lower: closer to the source, down to its floor; the same: freer; higher: kept
    assert said == ["refine denoise 0.45 -> 0.3", "", "refine denoise 0.3 -> 0.45",
                    "refine denoise 0.45 -> 0.5", ""]
    best = Best("loop_01_iter_05", 1.0, DEMO.start)
    refine = policy.enter(config, best, refine)  # the new best is the new source
    assert refine == RefineState("loop_01_iter_05", 0.5)  # at the denoise reached

    repairing = dataclasses.replace(config, repair=specs.Repair(0.05, 0.5, 0.1))
    items = [Item("a red circle", True), Item("no text", False, region=[100, 100, 400, 400],
                                               fix="plain sky")]
    kept, refused = policy.choose_region(repairing, refine, best, "loop_01_iter_04", items)
    assert (kept, refused) == (refine, None)  # not the image the next refine starts from
    chosen, refused = policy.choose_region(repairing, refine, best, "loop_01_iter_05", items)
    assert refused is None and chosen is not None
    assert chosen.region == Region((100, 100, 400, 400), "no text", "plain sky")
    absurd = [Item("no text", False, region=[0, 0, 0, 0])]
    whole, refused = policy.choose_region(repairing, chosen, best, "loop_01_iter_05", absurd)
    assert refused is not None and refused.field == "region"
    assert whole is not None and whole.region is None
    two = [Item("a red circle", False, region=[0, 0, 500, 500], fix="a red circle"), *items[1:]]
    first, _ = policy.choose_region(repairing, refine, best, "loop_01_iter_05", two)
    assert first is not None and first.region == Region((0, 0, 500, 500), "a red circle",
                                                        "a red circle")
    met = [Item("a red circle", True, region=[0, 0, 500, 500]), Item("no text", True)]
    assert policy.choose_region(repairing, refine, best, "loop_01_iter_05", met)[0] == refine


def test_a_two_pass_workflow_refines_at_its_first_pass_s_size() -> None:
    """The judged image is the second pass's, twice the size; refining from it without
    scaling it back made every refine twice as big again (128 -> 256 px on a real ComfyUI
    0.3.64)."""
    flow = json.loads((ROOT / "tests/specs/workflows/hires_two_pass.json").read_text())
    g = refine.graph(flow).workflow  # sampler 3 starts the picture; 2 is the second pass
    encode = g[str(g["3"]["inputs"]["latent_image"][0])]
    scale = g[str(encode["inputs"]["pixels"][0])]
    assert scale["class_type"] == "ImageScale"
    assert (scale["inputs"]["width"], scale["inputs"]["height"]) == (64, 64)
    assert g["2"]["inputs"]["latent_image"] == ["13", 0]  # the second pass as it was


@pytest.mark.parametrize("region", [None, [100, 100, 400, 400]], ids=["img2img", "inpaint"])
def test_a_refined_iteration_replays_pixel_identical(servers, tmp_path: Path,
                                                      region: list | None) -> None:
    """Replay binds as the engine did: the recorded refine state, its source image and mask
    (it once rendered a refine as text-to-image: 59 of 255 off on a real ComfyUI)."""
    from imitatoes.runs import replay

    repair = ", repair: {}" if region else ""
    run_dir = demo_run(servers, tmp_path, "limits: {iterations_per_loop: 3, max_loops: 1}\n"
                       f"refine: {{after_score: 0.5{repair}}}", region=region
                       ).execute().run_dir
    refined = [r for r in runfolder.records(run_dir) if r.refine]
    assert refined and all(bool(r.refine.get("region")) == bool(region) for r in refined[1:])
    for record in refined:
        result = replay.replay(run_dir, record.key, [f"comfyui.url={servers[0].url}"])
        assert (result.identical, result.difference) == (True, 0.0), record.key
