"""Never the same image twice: the revert cycle (two renders alternating to the end of the
budget) is gone, reverting is judged per requirement, and no run folder holds two
iterations made with the same image-deciding parameters."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import yaml

from imitatoes.commands.lifecycle import Run
from imitatoes.loop import repeats
from imitatoes.loop.checklist import Item
from imitatoes.loop.patch import Patch
from imitatoes.loop.state import Best, fingerprint, first_state
from imitatoes.loop.verdict import Changes
from imitatoes.runs import folder as runfolder
from imitatoes.spec import load as specs
from imitatoes.spec.model import SeedPolicy
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import Behaviour, OllamaStandin
from tests.conftest import ROOT

GOALS = [("yellow", "triangle", "blue"), ("black", "circle", "white"),
         ("orange", "circle", "green"), ("red", "square", "blue"),
         ("green", "triangle", "purple"), ("purple", "circle", "yellow"),
         ("blue", "square", "orange"), ("white", "triangle", "black"),
         ("pink", "circle", "blue"), ("brown", "square", "green"),
         ("red", "triangle", "white"), ("yellow", "circle", "purple")]


def goal_spec(folder: Path, colour: str, shape: str, background: str) -> Path:
    """The issue's specs: start "a SHAPE, simple poster" at 14 steps, seed policy critic."""
    base = yaml.safe_load((ROOT / "imitatoes/data/demo.yaml").read_text())
    (folder / "demo_workflow.json").write_bytes(
        (ROOT / "imitatoes/data/demo_workflow.json").read_bytes())
    data = {**base, "name": f"{colour}-{shape}", "goal": f"A clean {colour} {shape} on "
            f"{background}.", "requirements": [f"A {colour} {shape}", f"The background is "
                                               f"{background}", "No watermark or text",
                                               "Sharp and clean, no noise"],
            "start": {**base["start"], "prompt": f"a {shape}, simple poster", "steps": 14},
            "seed": {"policy": "critic"}, "limits": {"iterations_per_loop": 3, "max_loops": 4}}
    path = folder / f"{colour}-{shape}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def repeated(run_dir: Path) -> list[str]:
    """Iterations (candidates included) made with what an earlier one was made with."""
    seen: dict[str, str] = {}
    out = []
    for record in runfolder.records(run_dir, candidates=True):
        made = record.made_by
        if made in seen:
            out.append(f"{record.key} = {seen[made]}")
        seen.setdefault(made, record.key)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("noise", [(0.0, 0.0), (0.12, 0.08)], ids=["exact", "noisy"])
def test_no_run_renders_the_same_image_twice(tmp_path: Path, noise: tuple[float, float]
                                             ) -> None:
    with ComfyStandin() as comfy, OllamaStandin(Behaviour(
            latency=0, false_met=noise[0], missed=noise[1])) as ollama:
        env = {"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}
        goals = GOALS if noise == (0.0, 0.0) else GOALS[::2]  # the noisy half: time
        outcomes = {goal: Run.begin(specs.load(goal_spec(tmp_path, *goal), env=env),
                                    tmp_path / "runs").execute() for goal in goals}
    assert sum(len(repeated(o.run_dir)) for o in outcomes.values()) == 0
    if noise == (0.0, 0.0):  # the three that cycled to the end of the budget are done
        for goal in GOALS[:3]:
            assert outcomes[goal].state.status == "done", goal
        assert all(o.state.status == "done" for o in outcomes.values())


def test_the_finder_sees_a_repeat(tmp_path: Path) -> None:
    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", env={})
    record = runfolder.IterationRecord("loop_01_iter_01", 1, 1, spec.start)
    runfolder.write_record(tmp_path, record)
    runfolder.write_record(tmp_path, dataclasses.replace(record, key="loop_01_iter_02",
                                                         iteration=2))
    assert repeated(tmp_path) == ["loop_01_iter_02 = loop_01_iter_01"]
    assert runfolder.fingerprints(tmp_path) == {fingerprint(spec.start, None): "loop_01_iter_01"}


def decide(policy: str, reverted: bool, proposals: tuple = ()) -> tuple[Patch, bool, object]:
    """repeats.avoid on a state where the best's params with the change were rendered."""
    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", env={})
    spec = dataclasses.replace(spec, seed=SeedPolicy(policy, False), search=specs.Search())
    state = first_state(spec)
    state.iteration = 1
    best, here = spec.start, dataclasses.replace(spec.start, prompt="a circle, yellow")
    planned = dataclasses.replace(best, steps=22)
    state.rendered = {fingerprint(best, None): "loop_01_iter_01",
                      fingerprint(here, None): "loop_01_iter_02",
                      fingerprint(planned, None): "loop_01_iter_03"}
    state.proposals = list(proposals)
    p, stalled = repeats.avoid(spec, state, here, reverted, Changes(steps=22),
                               Patch(planned, ("steps 12 -> 22",), ()), random.Random(0))
    return p, stalled, state


def test_a_repeat_combines_the_fixes_first() -> None:
    p, stalled, _ = decide("stable", reverted=True)
    assert not stalled and (p.params.prompt, p.params.steps) == ("a circle, yellow", 22)
    assert p.applied[-1] == "loop_01_iter_03 again? the change goes on from this image instead"


def test_then_a_proposal_then_a_new_seed_then_stalled() -> None:
    other = dataclasses.replace(specs.load(ROOT / "imitatoes/data/demo.yaml", env={}).start,
                                cfg=8.5)
    p, stalled, state = decide("stable", reverted=False, proposals=(other,))
    assert (p.params, stalled, state.proposals) == (other, False, [])
    assert p.applied[-1].endswith("the critic's other change instead")
    p, stalled, _ = decide("critic", reverted=False)
    assert not stalled and p.params.seed != 42 and "a new seed instead" in p.applied[-1]
    p, stalled, _ = decide("stable", reverted=False)
    assert stalled and p.applied[-1] == "loop_01_iter_03 again? nothing else to try: stalled"
    p, stalled, _ = decide("random", reverted=False)  # the next render gets a new seed anyway
    assert not stalled and p.applied == ("steps 12 -> 22",)


def test_progress_is_judged_per_requirement() -> None:
    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", env={})
    best = Best("loop_01_iter_01", 0.5, spec.start, ("a", "b", "c", "d"), ("c", "d"))
    items = [Item("a", True), Item("b", False), Item("c", False), Item("d", False)]
    assert repeats.progress(items, best) == (("a",), ("c", "d"))
    assert repeats.progress(items, None) == ((), ())


def test_the_critic_is_told_which_fix_met_which_requirement(tmp_path: Path) -> None:
    with ComfyStandin() as comfy, OllamaStandin(Behaviour(latency=0)) as ollama:
        env = {"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}
        outcome = Run.begin(specs.load(goal_spec(tmp_path, *GOALS[0]), env=env),
                            tmp_path / "runs").execute()
        asked = [m["content"] for r in ollama.requests for m in r.get("messages", [])
                 if m.get("role") == "user"]
    records = [json.loads(p.read_text()) for p in sorted(outcome.run_dir.glob("loop_*.json"))]
    assert records[1]["reverted_to"] is None  # lower, but it met the yellow triangle
    assert records[1]["applied"][0] == "on from this image: it met A yellow triangle"
    assert any("It met what the best so far did not: A yellow triangle." in a for a in asked)


def test_the_report_marks_a_repeat(tmp_path: Path) -> None:
    from imitatoes.loop.state import RunState
    from imitatoes.runs import report

    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", env={})
    records = [runfolder.IterationRecord(f"loop_01_iter_0{n}", 1, n, params)
               for n, params in enumerate([spec.start, dataclasses.replace(spec.start, seed=7),
                                           spec.start], 1)]
    for r in records:
        (tmp_path / f"{r.key}.png").write_bytes(b"")
    assert report.made_as(records) == [0, 1, 0]
    cards = report._cards(tmp_path, RunState(spec.start), records)
    third = cards[cards.index("card-loop_01_iter_03"):]
    assert "repeat of loop_01_iter_01" in third and "repeat of" not in cards[:cards.index(
        "card-loop_01_iter_03")]
    assert "made as (a drop" in report._repeat_chart(records, ["1.1", "1.2", "1.3"])
    assert report._repeat_chart(records[:2], ["1.1", "1.2"]) == ""  # nothing repeats


def test_a_proposal_already_rendered_is_no_candidate() -> None:
    from imitatoes.loop import search

    spec = dataclasses.replace(specs.load(ROOT / "imitatoes/data/demo.yaml", env={}),
                               search=specs.Search(candidates=1, proposals=3))
    start = spec.start
    old, new = dataclasses.replace(start, cfg=8.5), dataclasses.replace(start, cfg=5.5)
    plan = search.plan(spec, 0, "loop_01_iter_02", start, [start, old, new],
                       lambda key: None, random.Random(0), lambda p: p in (start, old))
    assert [c.params for c in plan] == [start, new]  # the first always: it is the plan itself
    assert [c.key for c in plan] == ["loop_01_iter_02_c1", "loop_01_iter_02_c2"]


@pytest.mark.parametrize("iteration,last_loop,stalled", [(3, 2, False), (3, 1, True),
                                                         (2, 2, True)])
def test_per_loop_seeds_move_only_when_a_new_loop_comes(iteration: int, last_loop: int,
                                                        stalled: bool) -> None:
    spec = specs.load(ROOT / "imitatoes/data/demo.yaml", env={})  # 3 iterations a loop
    spec = dataclasses.replace(spec, seed=SeedPolicy("per_loop", False), search=specs.Search())
    state = first_state(spec)
    state.iteration, state.last_loop = iteration, last_loop
    state.rendered = {fingerprint(spec.start, None): "loop_01_iter_01"}
    _, said = repeats.avoid(spec, state, spec.start, False, Changes(),
                            Patch(spec.start, (), ()), random.Random(0))
    assert said is stalled  # a stall mid-loop ends the loop; its successor gets a new seed


def test_auto_moves_the_seed_until_its_spreads_are_spent() -> None:
    """Auto moves the seed where a fixed strategy would stall, but not forever: after two
    seed spreads and one of other changes without a better image it stalls too."""
    from imitatoes.loop.state import Tried

    spec = dataclasses.replace(specs.load(ROOT / "imitatoes/data/demo.yaml", env={}),
                               search=specs.Search(strategy="auto"))
    state = first_state(spec)
    state.rendered = {fingerprint(spec.start, None): "loop_01_iter_01"}
    same = Patch(spec.start, (), ())
    p, stalled = repeats.avoid(spec, state, spec.start, False, Changes(), same,
                               random.Random(0), "one")
    assert not stalled and p.params.seed != spec.start.seed
    state.history = [Tried(1, n, spec.start, 0.5, "", "", made=m)
                     for n, m in enumerate(["one", "seeds", "proposals"], 1)]
    p, stalled = repeats.avoid(spec, state, spec.start, False, Changes(), same,
                               random.Random(0), "seeds")
    assert stalled and p.applied[-1].endswith("nothing else to try: stalled")
