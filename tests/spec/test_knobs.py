"""Behaviour: widgets beyond the five that the critic may tune, from the spec to the image."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import jsonschema
import pytest
import requests

from imitatoes.commands.lifecycle import Run
from imitatoes.loop import binder, verdict
from imitatoes.loop import prompts as critic_prompt
from imitatoes.loop.patch import apply, within
from imitatoes.loop.state import Tried
from imitatoes.loop.verdict import Changes
from imitatoes.spec import knobs, lint
from imitatoes.spec import load as specs
from imitatoes.spec.model import Bounds, Params, Range, SeedPolicy
from tests.conftest import ROOT

SPEC = ROOT / "tests" / "specs" / "valid" / "knobs.yaml"
SAMPLER = knobs.Knob("sampler", ("3.inputs.sampler_name",), "choice", "euler",
                     choices=("euler", "dpmpp_2m"))
DENOISE = knobs.Knob("denoise", ("3.inputs.denoise",), "number", 1.0, min=0.3, max=1.0,
                     max_delta=0.2, step=0.05)
SIZE = knobs.Knob("size", ("5.inputs.width", "5.inputs.height"), "integer", 512, min=384,
                  max=768, step=64)
BOUNDS = Bounds(Range(3, 12, 1.5), Range(10, 40, 10), 300, 10)
START = Params("a fox", "", 7.0, 20, 42, (("sampler", "euler"), ("denoise", 1.0),
                                          ("size", 512)))


def patched(**asked: object):
    return apply(START, Changes(knobs=tuple(asked.items())), BOUNDS, SeedPolicy("stable", False),
                 random.Random(1), (SAMPLER, DENOISE, SIZE))


@pytest.mark.parametrize(("knob", "asked", "value", "refused"), [
    ("denoise", 0.9, 0.9, ""),
    ("denoise", 0.5, 0.8, "more than 0.2 from 1; clamped to 0.8"),
    ("denoise", 0.93, 0.95, "not on a step of 0.05; rounded to 0.95"),
    ("denoise", 7, 1.0, "outside 0.3..1; clamped to 1"),
    ("denoise", "lots", 1.0, "not a finite number"),
    ("denoise", 10**400, 1.0, "outside 0.3..1; clamped to 1"),  # no float holds it
    ("denoise", float("nan"), 1.0, "not a finite number"),
    ("size", 700, 704, "not on a step of 64; rounded to 704"),
    ("size", 10_000, 768, "outside 384..768; clamped to 768"),
    ("sampler", "dpmpp_2m", "dpmpp_2m", ""),
    ("sampler", "heun", "euler", "not one of euler, dpmpp_2m"),
    ("lora", 0.7, None, "not a knob of this spec"),
])
def test_each_change_is_clamped_rounded_or_refused(knob, asked, value, refused) -> None:
    p = patched(**{knob: asked})
    if value is not None:
        assert p.params.knob(knob) == value and type(p.params.knob(knob)) is type(value)
    assert [r.reason for r in p.refused] == ([refused] if refused else [])
    unchanged = value is None or value == START.knob(knob)
    assert p.applied == (() if unchanged else (f"{knob} {START.knob(knob):g} -> {value:g}"
                                               if knob != "sampler" else
                                               f"sampler euler -> {value}",))


def test_the_five_work_as_before_beside_knobs() -> None:
    p = apply(START, Changes(cfg=8.0, knobs=(("denoise", 0.9),)), BOUNDS,
              SeedPolicy("stable", False), random.Random(1), (DENOISE,))
    assert p.params.cfg == 8.0 and p.params.knob("denoise") == 0.9
    assert p.summary() == "cfg 7 -> 8; denoise 1 -> 0.9"


def test_a_verdict_names_knobs_inside_changes() -> None:
    text = json.dumps({"done": False, "reason": "r", "changes": {
        "cfg": 8, "denoise": 0.8, "sampler": None, "made_up": 3}})
    v = verdict.parse(text)
    assert v.changes.cfg == 8 and v.changes.knobs == (("denoise", 0.8), ("made_up", 3))


def test_the_format_sent_to_ollama_names_exactly_the_knobs() -> None:
    schema = verdict.schema_for(["A fox"], (SAMPLER, DENOISE))
    check = jsonschema.Draft202012Validator(schema)
    base = {"checklist": [{"requirement": "A fox", "met": False, "observation": ""}],
            "done": False, "reason": "r", "changes": {
                "prompt_append": "", "neg_append": "", "cfg": None, "steps": None,
                "seed": "keep", "sampler": "dpmpp_2m", "denoise": None}}
    assert check.is_valid(base)
    for bad in ({"sampler": "heun"}, {"denoise": 2.0}, {"lora": 1}):
        assert not check.is_valid({**base, "changes": {**base["changes"], **bad}}), bad
    assert set(schema["properties"]["changes"]["required"]) >= {"sampler", "denoise"}


def test_the_critic_is_told_each_knob_with_its_bounds_and_value(tmp_path: Path) -> None:
    spec = specs.load(SPEC)
    prompt = critic_prompt.critic_prompt(spec, spec.start, 1, 1)
    assert "- sampler: one of euler, euler_ancestral, dpmpp_2m (now euler)" in prompt
    assert "- denoise: number 0.3 to 1, at most 0.2 per round (now 1)" in prompt
    assert "- size: whole number 384 to 768, in steps of 64 (now 512)" in prompt
    assert "sampler euler, denoise 1, size 512" in critic_prompt.history_text(
        [Tried(1, 1, spec.start, 0.5, "ok", "nothing")], 5)  # as the report writes them


def test_knob_values_read_as_written_however_big() -> None:
    assert [knobs.shown(v) for v in (1.0, 0.1 + 0.2, 1048576.0, 2**40, "euler", 1e-05)] \
        == ["1", "0.3", "1048576", "1099511627776", "euler", "1e-05"]


def test_start_values_come_from_the_workflow_and_bind_every_path() -> None:
    spec = specs.load(SPEC)
    assert spec.start.knobs == (("sampler", "euler"), ("denoise", 1.0), ("size", 512))
    flow = binder.bind(spec, spec.start.with_knob("size", 640).with_knob("sampler", "dpmpp_2m"))
    assert flow["5"]["inputs"]["width"] == flow["5"]["inputs"]["height"] == 640
    assert flow["3"]["inputs"]["sampler_name"] == "dpmpp_2m"


def test_resume_brings_saved_knobs_inside_edited_bounds() -> None:
    saved = START.with_knob("denoise", 0.35).with_knob("sampler", "dpmpp_2m")
    narrower = (knobs.Knob("denoise", ("3.inputs.denoise",), "number", 0.9, min=0.5, max=1.0),
                knobs.Knob("lora", ("10.inputs.strength_model",), "number", 0.8, min=0,
                           max=1))
    params, notes = within(saved, BOUNDS, narrower)
    assert params.knobs == (("denoise", 0.5), ("lora", 0.8))  # sampler gone, lora at start
    assert notes == ("denoise 0.35 -> 0.5 (knobs.denoise is now number 0.5 to 1)",)


def test_a_bad_binding_name_says_what_a_binding_is(tmp_path: Path) -> None:
    text = SPEC.read_text().replace("__PROMPT__: prompt", "'bad name': prompt")
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("../workflows/", str(SPEC.parent.parent / "workflows") + "/"))
    problems = lint.check(specs.read(path, (), {}, allow_outside=True))
    assert any("'bad name': neither a token" in p.message for p in problems), problems


def test_knobs_reach_comfyui_and_the_run_folder(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    shutil.copy(SPEC.parent.parent / "workflows" / "sd15.json", tmp_path)
    path = tmp_path / "knobs.yaml"
    path.write_text(SPEC.read_text().replace("../workflows/", "").replace(
        "critic: {model: llava}", "critic: {model: llava}\n"
        "limits: {iterations_per_loop: 2, max_loops: 1}"))
    ollama.behaviour.tune = {"denoise": 0.5, "sampler": "heun", "size": 700, "lora": 1}
    ollama.behaviour.never_done = True
    env = {"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}
    outcome = Run.begin(specs.load(path, env=env), tmp_path / "runs").execute()
    run_dir = outcome.run_dir
    first = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    assert first["next_params"]["knobs"] == {"sampler": "euler", "denoise": 0.8, "size": 704}
    assert {r["field"]: r["reason"] for r in first["refused"] if r["field"] != "seed"} == {
        "denoise": "more than 0.2 from 1; clamped to 0.8", "sampler": "not one of euler, "
        "euler_ancestral, dpmpp_2m", "size": "not on a step of 64; rounded to 704",
        "lora": "not a knob of this spec"}
    second = json.loads((run_dir / "loop_01_iter_02.json").read_text())
    history = requests.get(f"{comfy.url}/history/{second['prompt_id']}", timeout=5).json()
    sent = history[second["prompt_id"]]["prompt"][2]
    assert sent["3"]["inputs"]["denoise"] == 0.8 and sent["5"]["inputs"]["width"] == 704
    assert "denoise: number 0.3 to 1" in second["critic"]["prompt"]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["params"]["knobs"]["denoise"] == 0.6  # 0.8 moved 0.2 again
    report = (run_dir / "report.html").read_text()
    assert "denoise 0.8 -&gt; 0.6" in report and "denoise (scale: the knob&#x27;s bounds)" in report


def test_knobs_are_checked_against_the_servers_node_definitions() -> None:
    info = json.loads((ROOT / "tests/fixtures/comfyui/object_info_full.json").read_text()
                      )["response"]["body"]
    flow = json.loads((ROOT / "tests/specs/workflows/sd15.json").read_text())
    fits = (SAMPLER, DENOISE, SIZE)
    assert knobs.server_problems(fits, flow, info) == []
    misfits = (
        knobs.Knob("sampler", ("3.inputs.sampler_name",), "choice", "euler",
                   choices=("euler", "heun3")),
        knobs.Knob("denoise", ("3.inputs.denoise",), "number", 1.0, min=0.3, max=1.5),
        knobs.Knob("size", ("5.inputs.width",), "number", 512, min=384, max=768),
        knobs.Knob("scheduler", ("3.inputs.denoise",), "choice", "a", choices=("a",)))
    assert knobs.server_problems(misfits, flow, info) == [
        "knob sampler -> node 3 (KSampler) sampler_name: this ComfyUI does not offer heun3",
        "knob denoise -> node 3 (KSampler) denoise: knob max 1.5 is above the input's "
        "maximum 1",
        "knob size -> node 5 (EmptyLatentImage) width: the input takes whole numbers: make "
        "the knob type integer",
        "knob scheduler -> node 3 (KSampler) denoise: the input is FLOAT, not a list of "
        "choices"]


def test_the_plain_lines_show_each_knob(servers, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from imitatoes.commands.cli import app

    comfy, ollama = servers
    shutil.copy(SPEC.parent.parent / "workflows" / "sd15.json", tmp_path)
    path = tmp_path / "knobs.yaml"
    path.write_text(SPEC.read_text().replace("../workflows/", ""))
    result = CliRunner().invoke(app, ["run", str(path), "--comfy-url", comfy.url,
                                      "--ollama-url", ollama.url, "--max-loops", "1",
                                      "--iterations-per-loop", "1", "--runs-dir",
                                      str(tmp_path / "runs"), "--yes"])
    assert result.exit_code in (0, 3), result.output
    assert "steps 20 sampler euler denoise 1 size 512 |" in result.output
