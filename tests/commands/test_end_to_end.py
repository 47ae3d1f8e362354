"""ComfyUI stand-in + Ollama stand-in + real clients + engine + run folder, over real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from imitatoes.commands import lifecycle
from imitatoes.commands.lifecycle import Run
from imitatoes.runs import folder as runfolder
from imitatoes.spec import load as specs
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin
from tests.conftest import ROOT
from tests.servers import wait_for

DEMO = ROOT / "imitatoes" / "data" / "demo.yaml"


def urls(comfy: ComfyStandin, ollama: OllamaStandin) -> dict[str, str]:
    return {"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}


def test_the_demo_spec_converges_to_done(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, env=urls(comfy, ollama))
    assert lifecycle.check(spec)["critic"]["model"] == "qwen2.5vl:7b"
    outcome = Run.begin(spec, tmp_path).execute()
    run_dir, state = outcome.run_dir, outcome.state
    assert outcome.exit_code == 0 and (run_dir / "report.html").is_file()
    assert state.status == "done", state.history
    assert 3 <= state.renders <= 6
    keys = [f"loop_{state.loop:02d}_iter_{i:02d}" for i in range(1, state.iteration + 1)]
    for k in keys:
        record = json.loads((run_dir / f"{k}.json").read_text())
        assert record["critic"]["verdict"] and record["prompt_id"]
    final = json.loads((run_dir / f"{state.done_key}.json").read_text())
    assert final["critic"]["verdict"]["done"] is True
    assert (run_dir / "final.png").read_bytes() == (run_dir / f"{state.done_key}.png").read_bytes()
    assert "red circle" in final["params"]["prompt"]
    assert "watermark" in final["params"]["negative"]


def test_killed_mid_run_then_resumed_finishes_consistently(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    comfy.behaviour.step_seconds = 0.02
    env = {**os.environ, **urls(comfy, ollama), "IMITATOES_RUNS": str(tmp_path)}
    script = ("import sys; from imitatoes.commands import lifecycle; "
              "from imitatoes.spec import load as spec; "
              "lifecycle.Run.begin(spec.load(sys.argv[1])).execute()")
    proc = subprocess.Popen([sys.executable, "-c", script, str(DEMO)], env=env)
    try:
        wait_for(lambda: list(tmp_path.glob("*/loop_01_iter_02.png")), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    [run_dir] = list(tmp_path.iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("loop_*.png")}
    comfy.behaviour.step_seconds = 0.0
    state = Run.reopen(run_dir, env=urls(comfy, ollama)).execute().state
    assert state.status == "done"
    for name, mtime in before.items():  # nothing saved was rendered again
        assert (run_dir / name).stat().st_mtime_ns == mtime
    for png in run_dir.glob("loop_*.png"):
        record = json.loads(png.with_suffix(".json").read_text())
        assert record["critic"]["verdict"] is not None, png.name
    assert not list(run_dir.glob(".*.tmp"))


def test_candidates_against_the_stand_ins(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, ["search.candidates=3"], env=urls(comfy, ollama))
    outcome = Run.begin(spec, tmp_path).execute()
    assert outcome.state.status == "done"
    run_dir = outcome.run_dir
    mains = sorted(p.name for p in run_dir.glob("loop_*.png") if "_c" not in p.name)
    cands = sorted(p.name for p in run_dir.glob("loop_*_c*.png"))
    assert len(cands) == 2 * len(mains)  # three images an iteration, one of them chosen
    assert outcome.state.renders == 3 * len(mains)
    html = (run_dir / "report.html").read_text()
    assert html.count('class="cand"') == len(cands)


def test_a_fixed_seed_draws_the_same_candidates_every_time(servers, tmp_path: Path) -> None:
    """Run.seed fixes the engine's own draws (benchmarks use it so figures repeat)."""
    comfy, ollama = servers
    spec = specs.load(DEMO, ["search.candidates=3", "seed.policy=critic"],
                      env=urls(comfy, ollama))

    def seeds(seed: int | None, where: str) -> list[int]:
        run = Run.begin(spec, tmp_path / where)
        run.seed = seed
        run_dir = run.execute().run_dir
        return [r.params.seed for r in runfolder.records(run_dir, candidates=True)]
    first, again, other = seeds(7, "a"), seeds(7, "b"), seeds(8, "c")
    assert first == again and len(set(first)) > 1
    assert first != other


def test_auto_spreads_seeds_where_the_seed_is_the_problem(tmp_path: Path) -> None:
    """search.strategy auto: where a prompt change does not help (a stubborn seed draws the
    wrong colour whatever the prompt says), the next step tries other seeds, and the records
    say what auto spent and why."""
    from imitatoes.standins.comfyui import Behaviour

    with ComfyStandin(Behaviour(stubborn=1.0)) as comfy, OllamaStandin() as ollama:
        spec = specs.load(DEMO, ["search.strategy=auto", "limits.max_loops=5"],
                          env=urls(comfy, ollama))
        stubborn = Run.begin(spec, tmp_path / "a")
        stubborn.seed = 3
        outcome = stubborn.execute()
    made = [t.made for t in outcome.state.history]
    assert "seeds" in made, made
    applied = [a for r in runfolder.records(outcome.run_dir) for a in r.applied]
    assert any(a.startswith("auto spent seeds: ") for a in applied), applied


def test_head_to_head_against_the_stand_ins(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, ["search.head_to_head=true"], env=urls(comfy, ollama))
    outcome = Run.begin(spec, tmp_path).execute()
    assert outcome.state.status == "done"
    records = [json.loads(p.read_text()) for p in sorted(outcome.run_dir.glob("loop_*.json"))]
    contests = [r["head_to_head"] for r in records if r.get("head_to_head")]
    assert contests and all(a["winner"] in a["order"] for c in contests for a in c["asked"])
    assert all(c["outcome"] in ("won", "lost", "tie") for c in contests)
    assert ollama.requests[-1]["format"]["required"]  # the last question was a verdict
    pair = [r for r in ollama.requests if "winner" in (r.get("format") or {}).get(
        "properties", {})]
    assert pair and all(len(r["messages"][-1]["images"]) == 2 for r in pair)


def test_proposals_against_the_stand_ins(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, ["search.proposals=3"], env=urls(comfy, ollama))
    outcome = Run.begin(spec, tmp_path).execute()
    assert outcome.state.status == "done"
    records = [json.loads(p.read_text()) for p in sorted(outcome.run_dir.glob("loop_*.json"))
               if "_c" not in p.name]
    tried = [r for r in records if r.get("candidates")]
    assert tried and len({c["key"] for r in tried for c in r["candidates"]}) > len(tried)


def test_an_instruction_rescores_the_best_so_far(servers, tmp_path: Path) -> None:
    """The best of the first run scored 1.00 against four requirements; once a fifth is added
    it is worth 4 of 5, so a new image that meets all five is the best (and the loop never
    goes back to an image without the fifth)."""
    comfy, ollama = servers
    spec = specs.load(DEMO, env=urls(comfy, ollama))
    first = Run.begin(spec, tmp_path).execute()
    assert first.state.status == "done" and first.state.best.score == 1.0
    run = Run.reopen(first.run_dir, env=urls(comfy, ollama))
    state = run.execute(instruction="Add a yellow square").state
    records = [r for r in runfolder.records(first.run_dir) if r.loop > first.state.loop]
    assert state.status == "done" and state.best.key == state.done_key
    assert state.best.met[-1] == "Add a yellow square" and state.best.score == 1.0
    assert [r.reverted_to for r in records] == [None] * len(records)
    final = (first.run_dir / "final.png").read_bytes()
    assert final == (first.run_dir / f"{state.done_key}.png").read_bytes()


def test_scores_against_different_checklists_are_not_compared() -> None:
    from imitatoes.loop.state import Best

    best = Best("loop_01_iter_01", 1.0, specs.load(DEMO, env={}).start, ("a", "b"), ("a", "b"))
    assert best.rescored(("a", "b")) is best
    assert best.rescored(("a", "b", "c")).score == 2 / 3
    assert best.rescored(("b", "c")).met == ("b",)
    legacy = Best("loop_01_iter_01", 1.0, best.params)  # saved before checklists were kept
    assert legacy.rescored(("a", "b", "c")) is legacy


def test_a_second_run_starts_from_memory_and_spends_fewer_renders(servers, tmp_path: Path
                                                                  ) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, ["memory=true"], env=urls(comfy, ollama))
    assert spec.memory == tmp_path / "data" / "imitatoes" / "memory.jsonl"  # the user's own
    first = Run.begin(spec, tmp_path / "runs").execute()
    assert first.state.status == "done" and not first.state.from_memory
    second = Run.begin(spec, tmp_path / "runs").execute()
    assert second.state.status == "done"
    assert second.state.renders < first.state.renders, (first.state.renders,
                                                       second.state.renders)
    assert second.state.from_memory[0].startswith("from run "), second.state.from_memory
    assert "memory: from run " in (second.run_dir / "report.html").read_text()
    cli = [sys.executable, "-m", "imitatoes", "memory"]
    shown = subprocess.run(cli, capture_output=True, text=True)
    assert shown.returncode == 0 and "2 run(s)" in shown.stdout, shown.stdout
    assert '"A red circle": prompt + "red circle" helped' in shown.stdout
    cleared = subprocess.run([*cli, "--clear"], capture_output=True, text=True)
    assert cleared.returncode == 0 and not spec.memory.exists()


def test_memory_false_keeps_nothing(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, [], env=urls(comfy, ollama))
    assert spec.memory is None  # the demo shows the whole loop every time
    Run.begin(spec, tmp_path / "runs").execute()
    assert not list((tmp_path / "data").rglob("*.jsonl"))


WRONG_WORD = ["start.prompt=a red circle, white background, simple poster", "limits.max_loops=2"]


def test_a_word_that_causes_the_fault_is_taken_out(servers, tmp_path: Path) -> None:
    """"white background" in the start prompt outweighs any "blue background" added after it:
    only taking it out reaches done (before edits that take away, this run stalled)."""
    comfy, ollama = servers
    spec = specs.load(DEMO, WRONG_WORD, env=urls(comfy, ollama))
    outcome = Run.begin(spec, tmp_path).execute()
    assert outcome.state.status == "done"
    applied = [a for r in runfolder.records(outcome.run_dir) for a in r.applied]
    assert 'prompt - "white background"' in applied, applied
    assert "white background" not in outcome.state.history[-1].params.prompt


def test_a_wrong_removal_is_undone_or_under_auto_refused(tmp_path: Path) -> None:
    """A critic that takes out the wrong word (the subject). Fixed: the record says so, the
    next image lost the red circle, and the loop puts it back. Auto: "A red circle" is met,
    so a removal about it is refused and recorded; the subject is never lost."""
    from imitatoes.standins.ollama import Behaviour

    outcomes = {}
    with ComfyStandin() as comfy, OllamaStandin(Behaviour(wrong_edit=1.0)) as ollama:
        for strategy in ("fixed", "auto"):
            spec = specs.load(DEMO, [*WRONG_WORD, f"search.strategy={strategy}"],
                              env=urls(comfy, ollama))
            outcomes[strategy] = Run.begin(spec, tmp_path / strategy).execute()
    records = runfolder.records(outcomes["fixed"].run_dir)
    removed = next(n for n, r in enumerate(records) if 'prompt - "a red circle"' in r.applied)
    after = records[removed + 1]
    assert [i.met for i in after.requirements if i.requirement == "A red circle"] == [False]
    guarded = [x for r in runfolder.records(outcomes["auto"].run_dir) for x in r.refused
               if x.field == "prompt_remove"]
    assert guarded and all("a requirement the image meets" in x.reason for x in guarded)
    assert outcomes["fixed"].state.status == "done"
    assert all("red circle" in o.state.best.params.prompt for o in outcomes.values())
