"""The run folder, and resuming from it after a crash at each step."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from imitatoes.commands.lifecycle import Run
from imitatoes.loop.engine import Engine
from imitatoes.loop.state import continued, first_state
from imitatoes.loop.verdict import Pairwise
from imitatoes.runs import folder as runfolder
from imitatoes.runs import log as runlog
from imitatoes.spec import load as specs
from tests.doubles import FakeCritic, FakeRenderer, verdict
from tests.loop.test_engine import make


class Kill(Exception):
    """Stands for the process dying: not an ImitatoesError, nothing handles it."""


def start(spec: specs.Spec, tmp_path: Path, critic: FakeCritic,
          renderer: FakeRenderer | None = None):
    run_dir = runfolder.create(spec, tmp_path)
    renderer = renderer or FakeRenderer()
    engine = Engine(spec, renderer, critic, [runlog.RunLog(run_dir)], rng=random.Random(0),
                    reuse=lambda key: runfolder.saved_render(run_dir, key))
    return run_dir, renderer, engine


def resume(run_dir: Path, critic: FakeCritic, renderer: FakeRenderer | None = None,
           instruction: str = ""):
    run = Run.reopen(run_dir, env={})
    spec, state = run.spec, run.state
    if instruction:
        state = continued(state, spec, instruction)
    renderer = renderer or FakeRenderer()
    engine = Engine(spec, renderer, critic, [runlog.RunLog(run_dir)], rng=random.Random(1),
                    reuse=lambda key: runfolder.saved_render(run_dir, key))
    return engine.run(state), renderer


def files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir())


def test_a_run_leaves_the_documented_folder(tmp_path: Path) -> None:
    spec = make(ipl=2, loops=2)
    critic = FakeCritic(verdict(0.5, reason="No red.", prompt_append="red circle", cfg=99),
                        verdict(1.0, done=True, reason="All good."))
    run_dir, _, engine = start(spec, tmp_path, critic)
    engine.run(first_state(spec))
    assert run_dir.name.endswith("_demo-red-circle")
    assert files(run_dir) == ["events.jsonl", "final.png", "loop_01_iter_01.json",
                              "loop_01_iter_01.png", "loop_01_iter_02.json",
                              "loop_01_iter_02.png", "source.json", "spec.yaml", "state.json",
                              "workflow.json"]
    first = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    assert first["params"]["prompt"] == "a circle, simple poster"
    assert first["prompt_id"] == "prompt-1"
    assert first["critic"]["verdict"]["reason"] == "No red."
    assert first["applied"] == ["cfg 7 -> 8.5", 'prompt + "red circle"']
    assert first["refused"][0]["field"] == "cfg"
    assert set(first["seconds"]) == {"render", "critique"}
    assert "Checklist" in first["critic"]["prompt"]
    assert (run_dir / "final.png").read_bytes() == (run_dir / "loop_01_iter_02.png").read_bytes()
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["status"], state["done_key"], state["renders"]) == ("done",
                                                                      "loop_01_iter_02", 2)
    kinds = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").open()]
    assert kinds[0] == "run_started" and kinds[-1] == "done" and "verdict" in kinds


def test_records_and_state_read_back_as_written(tmp_path: Path) -> None:
    spec = make(ipl=2, loops=1)
    critic = FakeCritic(verdict(0.5, reason="No red.", prompt_append="red circle", cfg=99),
                        None, verdict(1.0, done=True))
    run_dir, _, engine = start(spec, tmp_path, critic)
    engine.run(first_state(spec))
    for path in sorted(run_dir.glob("loop_*.json")):  # a verdict, a failed critique
        on_disk = json.loads(path.read_text())
        record = runfolder.read_record(run_dir, path.stem)
        assert json.loads(runfolder.to_json(record.to_dict())) == on_disk
    first, second = runfolder.records(run_dir)
    assert first.critic.verdict.reason == first.reason == "No red."
    assert first.refused[0].field == "cfg" and first.next_params.cfg == 8.5
    assert second.critic.verdict is None and "no complete JSON" in second.reason
    state = runfolder.read_state(run_dir)
    assert state.to_dict() == json.loads((run_dir / "state.json").read_text())


def test_a_half_written_record_is_left_out(tmp_path: Path) -> None:
    run_dir = runfolder.create(make(), tmp_path)
    (run_dir / "loop_01_iter_01.json").write_text('{"key": "loop_01_iter_01", "par')
    assert runfolder.read_record(run_dir, "loop_01_iter_01") is None
    assert runfolder.records(run_dir) == []


def test_the_snapshot_is_a_spec_of_its_own(tmp_path: Path) -> None:
    spec = make()
    run_dir = runfolder.create(spec, tmp_path)
    again = specs.load(run_dir / "spec.yaml", env={})
    assert again.workflow == spec.workflow and again.critic.prompt_template == \
        spec.critic.prompt_template
    assert again.start == spec.start and again.requirements == spec.requirements


def test_limits_reached_keeps_the_best_as_final(tmp_path: Path) -> None:
    spec = make(ipl=1, loops=3)
    run_dir, _, engine = start(spec, tmp_path, FakeCritic(
        verdict(0.2, prompt_append="red"), verdict(0.9, prompt_append="blue"),
        verdict(0.4, prompt_append="green")))
    state = engine.run(first_state(spec))
    assert state.status == "limits" and state.best.key == "loop_02_iter_01"
    assert (run_dir / "final.png").read_bytes() == (run_dir / "loop_02_iter_01.png").read_bytes()


@pytest.mark.parametrize("crash", ["render", "critique"])
def test_resume_after_a_crash_renders_nothing_twice(tmp_path: Path, crash: str) -> None:
    spec = make(ipl=2, loops=2)
    answers = [verdict(0.25, prompt_append="red"), verdict(0.5, prompt_append="blue")]
    if crash == "render":
        critic, renderer = FakeCritic(*answers), FakeRenderer(fail_at=3, exc=Kill)
    else:
        critic, renderer = FakeCritic(*answers, Kill()), FakeRenderer()
    run_dir, _, engine = start(spec, tmp_path, critic, renderer)
    with pytest.raises(Kill):
        engine.run(first_state(spec))
    saved = {p.name for p in run_dir.glob("*.png")}
    again = FakeRenderer()
    state, _ = resume(run_dir, FakeCritic(verdict(1.0, done=True)), again)
    assert state.status == "done" and state.done_key == "loop_02_iter_01"
    # after a crash in the critique, the saved render of loop_02_iter_01 is judged, not redone
    assert len(again.workflows) == (1 if crash == "render" else 0)
    assert state.renders == 3
    if crash == "critique":
        assert "loop_02_iter_01.png" in saved
    assert again.workflows == [] or again.params(1)["prompt"] == \
        "a circle, simple poster, red, blue"
    for k in ("loop_01_iter_01", "loop_01_iter_02", "loop_02_iter_01"):
        record = json.loads((run_dir / f"{k}.json").read_text())
        assert record["critic"]["verdict"] is not None  # every saved iteration is complete


def test_resume_a_finished_run_with_an_instruction(tmp_path: Path) -> None:
    spec = make(ipl=2, loops=1)
    run_dir, _, engine = start(spec, tmp_path, FakeCritic(verdict(1.0, done=True)))
    engine.run(first_state(spec))
    critic = FakeCritic(verdict(0.5, prompt_append="yellow square"), verdict(1.0, done=True))
    state, renderer = resume(run_dir, critic, instruction="add a yellow square")
    assert state.status == "done" and state.done_key == "loop_02_iter_02"
    assert len(renderer.workflows) == 2
    assert "Further instruction from the user: add a yellow square" in critic.prompts[0]
    assert state.instructions == ["add a yellow square"]


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(runfolder.RunFolderError, match="is not a run folder"):
        Run.reopen(tmp_path)


def test_a_damaged_state_is_named(tmp_path: Path) -> None:
    spec = make()
    run_dir = runfolder.create(spec, tmp_path)
    (run_dir / "state.json").write_text("{")
    with pytest.raises(runfolder.RunFolderError, match="is damaged"):
        Run.reopen(run_dir)


def test_a_render_saved_just_before_the_state_is_still_reused(tmp_path: Path) -> None:
    spec = make(ipl=3, loops=1)
    run_dir, _, engine = start(spec, tmp_path, FakeCritic(verdict(0.25, prompt_append="red"),
                                                          Kill()))
    with pytest.raises(Kill):
        engine.run(first_state(spec))
    # Roll state.json back to before the second render, as if the kill came between the
    # PNG and the state write.
    state = json.loads((run_dir / "state.json").read_text())
    state.update(pending=None, in_progress=False, iteration=state["iteration"] - 1,
                 renders=state["renders"] - 1)
    (run_dir / "state.json").write_text(json.dumps(state))
    again = FakeRenderer()
    resumed, _ = resume(run_dir, FakeCritic(verdict(1.0, done=True)), again)
    assert again.workflows == [] and resumed.done_key == "loop_01_iter_02"
    record = json.loads((run_dir / "loop_01_iter_02.json").read_text())
    assert record["prompt_id"] == "prompt-2" and record["params"]["prompt"].endswith(", red")


def with_candidates(spec: specs.Spec, k: int, max_renders: int | None = None) -> specs.Spec:
    import dataclasses
    spec = dataclasses.replace(spec, search=specs.Search(candidates=k))
    return dataclasses.replace(spec, limits=dataclasses.replace(spec.limits,
                                                                max_renders=max_renders))


def test_candidates_the_best_goes_on_and_the_others_stay_beside_it(tmp_path: Path) -> None:
    spec = with_candidates(make(ipl=2, loops=1), 3)
    critic = FakeCritic(verdict(0.25, prompt_append="a"), verdict(0.75, prompt_append="b"),
                        verdict(0.5, prompt_append="c"), verdict(1.0, done=True))
    run_dir, renderer, engine = start(spec, tmp_path, critic)
    state = engine.run(first_state(spec))
    assert state.renders == 6 and state.done_key == "loop_01_iter_02"  # 3 an iteration
    names = files(run_dir)
    assert {"loop_01_iter_01.png", "loop_01_iter_01_c1.png", "loop_01_iter_01_c3.png"} <= \
        set(names) and "loop_01_iter_01_c2.png" not in names
    first = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    assert first["key"] == "loop_01_iter_01" and first["score"] == 0.75
    assert [c["score"] for c in first["candidates"]] == [0.25, 0.75, 0.5]
    seeds = [c["seed"] for c in first["candidates"]]
    assert seeds[0] == 42 and len(set(seeds)) == 3  # the current seed, then new ones
    assert first["params"]["seed"] == seeds[1] and first["applied"] == ['prompt + "b"']
    assert (run_dir / "loop_01_iter_01.png").read_bytes() == png_of(renderer, 2)
    other = json.loads((run_dir / "loop_01_iter_01_c3.json").read_text())
    assert other["critic"]["verdict"]["score"] == 0.5 and "applied" not in other
    assert runfolder.records(run_dir)[0].key == "loop_01_iter_01"  # candidates left out


def png_of(renderer: FakeRenderer, n: int) -> bytes:
    from tests.doubles import png
    return png(n)


def test_resume_mid_candidates_renders_none_that_were_saved(tmp_path: Path) -> None:
    spec = with_candidates(make(ipl=1, loops=1), 3)
    critic = FakeCritic(verdict(0.25, prompt_append="a"), Kill())
    run_dir, renderer, engine = start(spec, tmp_path, critic)
    with pytest.raises(Kill):
        engine.run(first_state(spec))
    assert len(renderer.workflows) == 2  # c1 judged, c2 rendered, then the process died
    saved = runfolder.read_state(run_dir)  # resumed with the same (in-memory) spec
    again = FakeRenderer()
    state = Engine(spec, again, FakeCritic(verdict(0.25), verdict(0.5, prompt_append="x"),
                                           verdict(0.75, prompt_append="y")),
                   [runlog.RunLog(run_dir)], rng=random.Random(1),
                   reuse=lambda key: runfolder.saved_render(run_dir, key)).run(saved)
    assert len(again.workflows) == 1  # only c3: c1 and c2 were judged from their files
    first = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    assert [c["key"] for c in first["candidates"]] == [
        "loop_01_iter_01_c1", "loop_01_iter_01_c2", "loop_01_iter_01_c3"]
    assert first["score"] == 0.75 and state.renders == 3


def test_max_renders_ends_the_candidates_too(tmp_path: Path) -> None:
    spec = with_candidates(make(ipl=3, loops=1), 3, max_renders=4)
    run_dir, renderer, engine = start(spec, tmp_path, FakeCritic())
    state = engine.run(first_state(spec))
    assert state.renders == 4 and len(renderer.workflows) == 4 and state.status == "limits"


def test_head_to_head_the_best_changes_only_when_the_new_image_wins(tmp_path: Path) -> None:
    import dataclasses
    spec = dataclasses.replace(make(ipl=3, loops=1), search=specs.Search(head_to_head=True))
    critic = FakeCritic(verdict(0.5, prompt_append="moon"), verdict(0.75, prompt_append="sun"),
                        verdict(0.75, prompt_append="grass"))
    run_dir, renderer, engine = start(spec, tmp_path, critic)
    events: list = []
    engine.listeners.append(events.append)

    def old_one_wins(first: bytes, second: bytes, prompt: str):
        critic.compared.append((first, second))
        old = (run_dir / "loop_01_iter_01.png").read_bytes()
        return Pairwise("first" if first == old else "second", "the first is cleaner",
                        (), 0.0)

    critic.compare = old_one_wins  # the critic, shown both, keeps preferring iteration 1
    state = engine.run(first_state(spec))
    contests = [e.contest for e in events if e.kind == "head_to_head"]
    assert [(c.key, c.against, c.outcome) for c in contests] == [
        ("loop_01_iter_02", "loop_01_iter_01", "lost"),
        ("loop_01_iter_03", "loop_01_iter_01", "lost")]
    assert [a.order for a in contests[0].asked] == [("loop_01_iter_02", "loop_01_iter_01"),
                                                   ("loop_01_iter_01", "loop_01_iter_02")]
    assert state.best.key == "loop_01_iter_01"  # a higher score alone does not make a best
    second = json.loads((run_dir / "loop_01_iter_02.json").read_text())
    assert second["head_to_head"]["outcome"] == "lost"
    assert [a["winner"] for a in second["head_to_head"]["asked"]] == ["loop_01_iter_01"] * 2
    assert second["reverted_to"] == "loop_01_iter_01"
    assert renderer.params(3)["prompt"] == "a circle, simple poster, sun"  # from the best


def test_head_to_head_a_new_image_that_wins_becomes_the_best(tmp_path: Path) -> None:
    import dataclasses
    spec = dataclasses.replace(make(ipl=2, loops=1), search=specs.Search(head_to_head=True))
    critic = FakeCritic(verdict(0.5, prompt_append="moon"), verdict(0.5, prompt_append="sun"))
    run_dir, _, engine = start(spec, tmp_path, critic)

    def new_one_wins(first: bytes, second: bytes, prompt: str):
        new = (run_dir / "loop_01_iter_02.png").read_bytes()
        return Pairwise("first" if first == new else "second", "new", (), 0.0)

    critic.compare = new_one_wins
    state = engine.run(first_state(spec))
    assert state.best.key == "loop_01_iter_02"  # an equal score, and it won in both orders


@pytest.mark.parametrize("first_wins,best,applied", [
    (True, "loop_01_iter_01", "tie with loop_01_iter_01 (each won in one order)"),
    (None, "loop_01_iter_02", 'prompt + "sun"')])
def test_head_to_head_a_split_is_a_tie_and_no_answer_lets_the_scores_decide(
        tmp_path: Path, first_wins: bool | None, best: str, applied: str) -> None:
    """A judge that always prefers the first image wins once in each order: a tie, the best
    stays. A judge with no usable answer: the higher score decides."""
    import dataclasses
    spec = dataclasses.replace(make(ipl=2, loops=1), search=specs.Search(head_to_head=True))
    critic = FakeCritic(verdict(0.5, prompt_append="moon"), verdict(0.75, prompt_append="sun"))
    run_dir, renderer, engine = start(spec, tmp_path, critic)
    asked: list = []

    def biased(first: bytes, second: bytes, prompt: str):
        asked.append(first)
        return Pairwise(None if first_wins is None else "first", "", (), 0.0)

    critic.compare = biased
    state = engine.run(first_state(spec))
    assert state.best.key == best and len(asked) == (2 if first_wins else 1)
    second = json.loads((run_dir / "loop_01_iter_02.json").read_text())
    assert second["applied"][0] == applied and second["reverted_to"] is None


def test_proposals_each_alternative_is_a_candidate_of_the_next_iteration(tmp_path: Path
                                                                          ) -> None:
    import dataclasses

    from imitatoes.loop.verdict import Changes, Verdict
    spec = dataclasses.replace(make(ipl=2, loops=1), search=specs.Search(proposals=3))
    asks = Verdict(False, Changes(prompt_append="moon"), "Needs a moon.", (), 0.25, False,
                   (Changes(prompt_append="sun"), Changes(neg_append="text"),
                    Changes(prompt_append="moon")))  # the last repeats `changes`: dropped
    critic = FakeCritic(asks, verdict(0.25), verdict(0.75), verdict(0.5))
    run_dir, renderer, engine = start(spec, tmp_path, critic)
    engine.run(first_state(spec))
    assert "other changes worth trying" in critic.prompts[0]
    prompts = [renderer.params(n)["prompt"] for n in range(2, 5)]
    negatives = [renderer.params(n)["negative"] for n in range(2, 5)]
    assert prompts == ["a circle, simple poster, moon", "a circle, simple poster, sun",
                       "a circle, simple poster"]
    assert negatives[2] == "blurry, text"
    second = json.loads((run_dir / "loop_01_iter_02.json").read_text())
    assert second["params"]["prompt"].endswith(", sun")  # the proposal that scored best
    assert [c["score"] for c in second["candidates"]] == [0.25, 0.75, 0.5]


def test_queued_candidates_are_dropped_when_the_critic_fails(tmp_path: Path) -> None:
    from imitatoes.clients.critic import CriticUnreachable
    spec = with_candidates(make(ipl=1, loops=1), 3)
    critic = FakeCritic(CriticUnreachable("the critic went away"))
    run_dir, renderer, engine = start(spec, tmp_path, critic)
    with pytest.raises(CriticUnreachable):
        engine.run(first_state(spec))
    assert len(renderer.queued) == 3 and len(renderer.workflows) == 1  # all queued at once
    assert renderer.interrupted == 1  # and the ones left were taken off ComfyUI's queue


def test_resume_in_the_middle_of_an_auto_spread_renders_nothing_twice(tmp_path: Path) -> None:
    """The first verdict asks for nothing, so auto spreads seeds; the process dies while the
    second candidate is judged. On resume both saved candidates are judged, not rendered."""
    spec = dataclasses.replace(make(ipl=2, loops=1), search=specs.Search(strategy="auto"))
    critic = FakeCritic(verdict(0.25), verdict(0.0), Kill())
    run_dir, _, engine = start(spec, tmp_path, critic)
    with pytest.raises(Kill):
        engine.run(first_state(spec))
    assert {p.name for p in run_dir.glob("loop_01_iter_02_c*.png")} == {
        "loop_01_iter_02_c1.png", "loop_01_iter_02_c2.png"}
    again = FakeRenderer()
    state, _ = resume(run_dir, FakeCritic(verdict(0.0), verdict(1.0, done=True)), again)
    assert again.workflows == [] and state.renders == 3
    assert state.status == "done" and state.done_key == "loop_01_iter_02"
