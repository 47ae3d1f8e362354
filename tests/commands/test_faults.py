"""The fault suite: what the user sees, the exit code, and that the run folder stays
consistent and `resume` finishes the run without redoing saved iterations."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from imitatoes.clients.comfy import PromptLost
from imitatoes.clients.critic import CriticUnreachable
from imitatoes.commands.cli import app
from imitatoes.commands.lifecycle import Run, RunInterrupted
from imitatoes.loop.events import Event
from imitatoes.runs import folder as runfolder
from imitatoes.spec import load as specs
from imitatoes.standins.ollama import OllamaStandin
from tests.servers import DEMO, only_run, spawn_run, urls, wait_for

runner = CliRunner()


def saved(run_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in run_dir.glob("loop_*.png")}


def consistent(run_dir: Path) -> None:
    """Every saved render has a record; iterations are numbered 1, 2, ... in each loop with
    none skipped; the state names only what exists; no temp files."""
    state = json.loads((run_dir / "state.json").read_text())
    numbers: dict[int, list[int]] = {}
    for png in run_dir.glob("loop_*_iter_*.png"):
        loop, iteration = int(png.stem[5:7]), int(png.stem[-2:])
        numbers.setdefault(loop, []).append(iteration)
    for loop, found in numbers.items():
        assert sorted(found) == list(range(1, len(found) + 1)), (loop, sorted(found))
    for png in run_dir.glob("loop_*.png"):
        assert json.loads(png.with_suffix(".json").read_text())["params"], png.name
    if state.get("best"):
        assert (run_dir / f"{state['best']['key']}.png").is_file()
    assert not list(run_dir.glob(".*.tmp"))


def resume_finishes(run_dir: Path, servers, *extra: str) -> None:
    before = saved(run_dir)
    result = runner.invoke(app, ["resume", str(run_dir), *urls(servers), *extra])
    assert result.exit_code == 0, result.output
    for name, mtime in before.items():  # nothing saved was rendered again
        assert (run_dir / name).stat().st_mtime_ns == mtime, name
    consistent(run_dir)
    assert json.loads((run_dir / "state.json").read_text())["status"] == "done"


def stop_after(kind: str, count: int, action) -> object:
    seen = {"n": 0}

    def listener(event: Event) -> None:
        if event.kind == kind:
            seen["n"] += 1
            if seen["n"] == count:
                action()
    return listener


def test_500_on_prompt(servers, tmp_path: Path) -> None:
    servers[0].behaviour.fail_prompt = 1
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 1
    assert "ComfyUI answered 500 to POST /prompt" in result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]  # the error first, then the way on
    assert error.startswith("imitatoes: ComfyUI answered 500")
    assert hint.startswith("the run folder is consistent") and "imitatoes resume" in hint
    run_dir = only_run(tmp_path)
    consistent(run_dir)
    resume_finishes(run_dir, servers)


def test_execution_error(servers, tmp_path: Path) -> None:
    servers[0].behaviour.execution_errors = 1
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 1
    assert "ComfyUI failed in node 3 (KSampler): RuntimeError" in result.stderr
    resume_finishes(only_run(tmp_path), servers)


@pytest.mark.slow
def test_comfyui_restarts_mid_render_and_forgets_the_prompt(servers, tmp_path: Path) -> None:
    comfy, _ = servers
    comfy.behaviour.step_seconds = 0.05
    spec = specs.load(DEMO, env={"IMITATOES_COMFY_URL": comfy.url,
                                 "IMITATOES_OLLAMA_URL": servers[1].url})
    run_dir = runfolder.create(spec, tmp_path / "runs")

    def restart_soon() -> None:
        threading.Timer(0.1, comfy.restart).start()

    with pytest.raises(PromptLost, match="no longer knows prompt .* resume the run"):
        Run(spec, run_dir).execute([stop_after("iteration_started", 2, restart_soon)])
    consistent(run_dir)
    assert len(saved(run_dir)) == 1
    comfy.behaviour.step_seconds = 0
    resume_finishes(run_dir, servers)


def test_slow_history_is_only_slow(servers, tmp_path: Path) -> None:
    servers[0].behaviour.history_delay = 0.2
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 0, result.output


def test_ollama_down_at_start(servers, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", DEMO, "--comfy-url", servers[0].url,
                                 "--ollama-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "the critic is not reachable at http://127.0.0.1:9" in result.stderr
    assert "ollama serve" in result.stderr and not (tmp_path / "runs").exists()


def test_ollama_dies_mid_run(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, env={"IMITATOES_COMFY_URL": comfy.url,
                                 "IMITATOES_OLLAMA_URL": ollama.url})
    run_dir = runfolder.create(spec, tmp_path / "runs")
    with pytest.raises(CriticUnreachable, match="not reachable"):
        Run(spec, run_dir).execute([stop_after("rendered", 2, ollama.stop)])
    consistent(run_dir)
    with OllamaStandin(port=0) as again:
        before = saved(run_dir)
        result = runner.invoke(app, ["resume", str(run_dir), "--comfy-url", comfy.url,
                                     "--ollama-url", again.url])
        assert result.exit_code == 0, result.output
    assert all((run_dir / n).stat().st_mtime_ns == m for n, m in before.items())


@pytest.mark.slow
def test_slow_first_load_beyond_the_timeout(servers, tmp_path: Path) -> None:
    servers[1].behaviour.load_seconds = 1.0
    result = runner.invoke(app, ["run", DEMO, *urls(servers), "--set", "critic.timeout=0.3"])
    assert result.exit_code == 1
    assert "did not answer /api/chat within 0.3 s" in result.stderr
    run_dir = only_run(tmp_path)
    consistent(run_dir)
    assert len(saved(run_dir)) == 1
    resume_finishes(run_dir, servers, "--set", "critic.timeout=30")  # the fix, then resume


@pytest.mark.parametrize("knob", ["truncate", "garbage", "fence"])
def test_bad_answers_are_retried_and_recorded(servers, tmp_path: Path, knob: str) -> None:
    setattr(servers[1].behaviour, knob, 1)
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 0, result.output
    first = json.loads((only_run(tmp_path) / "loop_01_iter_01.json").read_text())
    answers = first["critic"]["answers"]
    assert first["critic"]["verdict"] is not None
    assert len(answers) == (1 if knob == "fence" else 2)


def test_a_verdict_far_out_of_bounds_is_clamped(servers, tmp_path: Path) -> None:
    servers[1].behaviour.wild = 1
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    first = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    nxt = first["next_params"]
    assert 3 <= nxt["cfg"] <= 12 and 10 <= nxt["steps"] <= 40 and nxt["seed"] == 42
    assert len(nxt["prompt"]) <= 300 and len(nxt["negative"].split(",")) <= 10
    assert {r["field"] for r in first["refused"]} >= {"cfg", "steps", "neg_append", "seed"}


def test_the_disk_refusing_a_write(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    spec = specs.load(DEMO, env={"IMITATOES_COMFY_URL": comfy.url,
                                 "IMITATOES_OLLAMA_URL": ollama.url})
    run_dir = runfolder.create(spec, tmp_path / "runs")
    trap = run_dir / f".loop_01_iter_02.png.{os.getpid()}.tmp"
    trap.symlink_to("/dev/full")  # every write to it fails with ENOSPC
    with pytest.raises(runfolder.RunFolderError, match="No space left on device.*imitatoes resume"):
        Run(spec, run_dir).execute()
    trap.unlink()
    consistent(run_dir)
    resume_finishes(run_dir, servers)


def test_ctrl_c_while_the_critic_thinks(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    ollama.behaviour.latency = 1.0
    proc = spawn_run(servers, tmp_path)
    wait_for(lambda: list((tmp_path / "runs").glob("*/loop_01_iter_01.png")), proc)
    time.sleep(0.2)  # now it waits for the critic
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "imitatoes resume" in err
    run_dir = only_run(tmp_path)
    assert json.loads((run_dir / "state.json").read_text())["status"] == "interrupted"
    consistent(run_dir)
    ollama.behaviour.latency = 0
    resume_finishes(run_dir, servers)


@pytest.mark.slow
def test_two_resumes_of_one_folder(servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    ollama.behaviour.latency = 0.3
    proc = spawn_run(servers, tmp_path)
    try:
        wait_for(lambda: list((tmp_path / "runs").glob("*/loop_01_iter_01.png")), proc)
        run_dir = only_run(tmp_path)
        second = runner.invoke(app, ["resume", str(run_dir), *urls(servers)])
        assert second.exit_code == 1, second.output
        assert f"{run_dir} is in use by imitatoes (pid {proc.pid}" in second.stderr
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    consistent(run_dir)
    record = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    assert len(record["critic"]["answers"]) == 1  # judged once, by its own run


def interrupted_run(servers, tmp_path: Path, *overrides: str) -> Path:
    """A run that never hears done, stopped (as by Ctrl-C) after its first iteration."""
    comfy, ollama = servers
    ollama.behaviour.never_done = True
    spec = specs.load(DEMO, ["limits.iterations_per_loop=1", "limits.max_loops=5",
                             *overrides], env={"IMITATOES_COMFY_URL": comfy.url,
                                               "IMITATOES_OLLAMA_URL": ollama.url})
    run = Run.begin(spec, tmp_path / "runs")

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted):
        run.execute([stop_after("iteration_ended", 1, stop)])
    return run.dir


def test_resume_takes_new_limits(servers, tmp_path: Path) -> None:
    run_dir = interrupted_run(servers, tmp_path)
    result = runner.invoke(app, ["resume", str(run_dir), *urls(servers),
                                 "--set", "limits.max_loops=2"])
    assert result.exit_code == 3, result.output
    assert "the loop budget now ends after loop 2 (was 5)" in result.stdout
    assert sorted(p.name for p in run_dir.glob("loop_*.png")) == [
        "loop_01_iter_01.png", "loop_02_iter_01.png"]
    consistent(run_dir)


def test_resume_takes_bounds_edited_in_the_run_s_spec(servers, tmp_path: Path) -> None:
    run_dir = interrupted_run(servers, tmp_path)
    spec_file = run_dir / "spec.yaml"
    data = yaml.safe_load(spec_file.read_text())
    data["bounds"]["cfg"] = {"min": 3, "max": 5, "max_delta": 1}
    data["start"]["cfg"] = 5  # validate insists; the run goes on from its own saved cfg
    spec_file.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["resume", str(run_dir), *urls(servers),
                                 "--set", "limits.max_loops=2"])
    assert "cfg 7 -> 5 (bounds.cfg is now 3..5)" in result.stdout, result.output
    second = json.loads((run_dir / "loop_02_iter_01.json").read_text())
    assert second["params"]["cfg"] == 5


def test_resume_ties_up_what_a_kill_after_the_end_left(servers, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    state = json.loads((run_dir / "state.json").read_text())
    renders = state["renders"]
    state["renders"] -= 1  # killed between the last PNG and the state after it ...
    (run_dir / "state.json").write_text(json.dumps(state))
    (run_dir / "report.html").unlink()  # ... or between the end and the report
    (run_dir / "final.png").unlink()
    again = runner.invoke(app, ["resume", str(run_dir), *urls(servers)])
    assert again.exit_code == 0 and "is done" in again.stdout, again.output
    assert (run_dir / "report.html").is_file() and (run_dir / "final.png").is_file()
    assert json.loads((run_dir / "state.json").read_text())["renders"] == renders


def test_a_model_the_server_lacks_is_found_before_a_run_folder_is_made(servers,
                                                                       tmp_path: Path) -> None:
    servers[0].behaviour.checkpoints = ["v1-5-pruned.safetensors", "sd_xl_base_1.0.safetensors"]
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 2, result.output
    assert ("node 4 (CheckpointLoaderSimple) ckpt_name: 'v1-5-pruned-emaonly.safetensors' is "
            "not on this ComfyUI (closest: v1-5-pruned.safetensors") in result.stderr
    assert not (tmp_path / "runs").exists()


def test_resume_after_a_fix_to_the_workflow_it_came_from(servers, tmp_path: Path) -> None:
    data = Path(DEMO).parent
    (tmp_path / "demo.yaml").write_text((data / "demo.yaml").read_text())
    flow_file = tmp_path / "demo_workflow.json"
    flow_file.write_text((data / "demo_workflow.json").read_text())
    first = runner.invoke(app, ["run", str(tmp_path / "demo.yaml"), *urls(servers),
                                "--iterations-per-loop", "1", "--max-loops", "1"])
    assert first.exit_code in (0, 3), first.output
    run_dir = only_run(tmp_path)
    servers[0].behaviour.checkpoints = ["sd_xl_base_1.0.safetensors"]  # the server changed
    failed = runner.invoke(app, ["resume", str(run_dir), *urls(servers)])
    assert failed.exit_code == 2 and "is not on this ComfyUI" in failed.stderr, failed.output
    assert "--refresh" in failed.stderr.strip().splitlines()[-1]
    flow_file.write_text(flow_file.read_text().replace("v1-5-pruned-emaonly.safetensors",
                                                       "sd_xl_base_1.0.safetensors"))
    again = runner.invoke(app, ["resume", str(run_dir), *urls(servers)])
    assert again.exit_code == 2  # the user fixed their own file; the run has its own copy
    fixed = runner.invoke(app, ["resume", str(run_dir), *urls(servers), "--refresh"])
    assert fixed.exit_code in (0, 3), fixed.output
    assert ('changed since the run was saved: workflow: node 4.inputs.ckpt_name: '
            '"v1-5-pruned-emaonly.safetensors" -> "sd_xl_base_1.0.safetensors"') in fixed.stdout
    assert json.loads((run_dir / "workflow.json").read_text())["4"]["inputs"]["ckpt_name"] == \
        "sd_xl_base_1.0.safetensors"
    consistent(run_dir)
