"""The commands people type, with their exit codes, against the stand-ins."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin
from tests.conftest import ROOT
from tests.servers import DEMO, only_run, spawn_run, urls, wait_for

runner = CliRunner()


def test_run_to_done_prints_plain_lines_and_exits_0(servers, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("goal: A clean, sharp red circle")
    assert any(line.startswith("loop 1 iter 1: seed 42 cfg 7 steps 12 |") for line in lines)
    assert "done after" in result.stdout and "imitatoes resume" in result.stdout
    run_dir = only_run(tmp_path)
    assert (run_dir / "report.html").is_file() and (run_dir / "final.png").is_file()


def test_limits_reached_exits_3(servers, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers), "--max-loops", "1",
                                 "--iterations-per-loop", "1"])
    assert result.exit_code == 3, result.output
    assert "limits reached without done after 1 render(s)" in result.stdout


def test_invalid_spec_exits_2_with_every_problem(tmp_path: Path) -> None:
    bad = ROOT / "tests" / "specs" / "invalid" / "many_problems.yaml"
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2
    assert "critic.temprature: unknown key" in result.stderr
    assert "the spec has 11 problem(s); nothing was run" in result.stderr


def test_comfyui_down_is_found_before_any_render(servers, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", DEMO, "--comfy-url", "http://127.0.0.1:9",
                                 "--ollama-url", servers[1].url])
    assert result.exit_code == 1
    assert "ComfyUI is not reachable at http://127.0.0.1:9" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_model_exits_2_and_says_ollama_pull(servers) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers), "--set", "critic.model=nope"])
    assert result.exit_code == 2
    assert "run: ollama pull nope" in result.stderr


def test_resume_a_done_run_needs_an_instruction(servers, tmp_path: Path) -> None:
    assert runner.invoke(app, ["run", DEMO, *urls(servers)]).exit_code == 0
    run_dir = only_run(tmp_path)
    result = runner.invoke(app, ["resume", str(run_dir), *urls(servers)])
    assert result.exit_code == 0 and "give --instruction" in result.stdout
    done_before = json.loads((run_dir / "state.json").read_text())["done_key"]
    result = runner.invoke(app, ["resume", str(run_dir), *urls(servers),
                                 "--instruction", "Add a yellow square"])
    assert result.exit_code == 0, result.output
    state = json.loads((run_dir / "state.json").read_text())
    assert state["instructions"] == ["Add a yellow square"] and state["loop"] > 1
    # The instruction is a requirement: not met by the image that was done before it ...
    first = json.loads((run_dir / f"loop_{state['loop']:02d}_iter_01.json").read_text())
    assert first["requirements"][-1] == {"requirement": "Add a yellow square", "met": False,
                                         "observation": "I see: red circle", "by": "text",
                                         "user": True}
    assert "yellow square" in first["next_params"]["prompt"]
    # ... and the run is done only once it is.
    last = json.loads((run_dir / f"{state['done_key']}.json").read_text())
    assert state["done_key"] != done_before and last["requirements"][-1]["met"] is True


def test_resume_something_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["resume", str(tmp_path)])
    assert result.exit_code == 1 and "is not a run folder" in result.stderr


def test_doctor_explains_what_is_missing_when_nothing_runs(monkeypatch) -> None:
    monkeypatch.setenv("IMITATOES_COMFY_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("IMITATOES_OLLAMA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("COLUMNS", "300")  # one line per check, to read it whole
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "ComfyUI reachable" in result.stdout and "FAIL" in result.stdout
    # what to do, for the ports it tried (not the defaults), and why it failed in words
    assert "python main.py --listen 127.0.0.1 --port 9)" in result.stdout
    assert "OLLAMA_HOST=127.0.0.1:9 ollama serve" in result.stdout
    assert "(/api/version: connection refused)" in result.stdout
    assert "ConnectionError" not in result.stdout


def test_doctor_without_a_spec_checks_a_model_and_whether_both_fit(servers, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    comfy, ollama = servers
    args = ["doctor", *urls(servers)]
    ok = runner.invoke(app, [*args, "--model", "llava-llama3"])
    assert ok.exit_code == 0, ok.stdout
    assert re.search(r"one GPU for both +│ ok +│ ComfyUI holds 2.0 GiB, llava-llama3 needs 5.6",
                     ok.stdout)
    missing = runner.invoke(app, [*args, "--model", "nope"])
    assert missing.exit_code == 1 and missing.stdout.count("ollama pull nope") == 1
    comfy.behaviour.vram_free = 1 << 30  # ComfyUI holds 7 of 8 GiB; the critic needs 5.6 more
    tight = runner.invoke(app, [*args, "--model", "qwen2.5vl:7b"])
    assert re.search(r"one GPU for both +│ warn", tight.stdout)
    assert "comfyui.free_before_critique: true" in tight.stdout


def test_doctor_with_a_spec_checks_nodes_limits_and_model(servers) -> None:
    result = runner.invoke(app, ["doctor", DEMO, *urls(servers)])
    assert result.exit_code == 0, result.stdout
    for name in ("workflow nodes", "cfg within node limits", "model pulled", "model sees images"):
        assert name in result.stdout


def test_doctor_finds_bounds_beyond_the_node(servers, tmp_path: Path) -> None:
    spec = tmp_path / "wide.yaml"
    text = Path(DEMO).read_text().replace("demo_workflow.json",
                                          str(ROOT / "imitatoes/data/demo_workflow.json"))
    spec.write_text(text.replace("steps: {min: 10, max: 40, max_delta: 10}",
                                 "steps: {min: 10, max: 10000, max_delta: 10}")
                    .replace("cfg: {min: 3.0, max: 12.0, max_delta: 1.5}",
                             "cfg: {min: 3.0, max: 100, max_delta: 1.5}"))
    ok = runner.invoke(app, ["doctor", str(spec), *urls(servers), "--allow-outside"])
    assert ok.exit_code == 0  # 100 and 10000 are KSampler's own maxima
    spec.write_text(text.replace("model: qwen2.5vl:7b", "model: llama3.2:3b"))
    blind = runner.invoke(app, ["doctor", str(spec), *urls(servers), "--allow-outside"])
    assert blind.exit_code == 1 and "cannot see images" in blind.stdout


def test_demo_end_to_end(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--runs-dir", str(tmp_path / "demo"), "--pace", "0"])
    assert result.exit_code == 0, result.output
    assert "stand-ins: ComfyUI http://127.0.0.1:" in result.stdout
    [run_dir] = list((tmp_path / "demo").iterdir())
    assert (run_dir / "report.html").is_file()
    # The last line says how to go on once the demo's stand-ins are gone: it works as written
    # (with the stand-ins started again, here on free ports instead of the default ones).
    command = result.stdout.strip().splitlines()[-1].split()
    assert command[:3] == ["imitatoes", "resume", str(run_dir)]
    with ComfyStandin() as comfy, OllamaStandin() as ollama:
        argv = [{"http://127.0.0.1:8188": comfy.url, "http://127.0.0.1:11434": ollama.url,
                 '"..."': "Add a yellow square"}.get(a, a) for a in command[1:]]
        again = runner.invoke(app, argv)
    assert again.exit_code == 0, again.output


def test_report_escapes_critic_text(servers, tmp_path: Path) -> None:
    assert runner.invoke(app, ["run", DEMO, *urls(servers)]).exit_code == 0
    run_dir = only_run(tmp_path)
    record_path = run_dir / "loop_01_iter_01.json"
    record = json.loads(record_path.read_text())
    record["critic"]["verdict"]["reason"] = '<script>alert("x")</script><img src=x onerror=1>'
    record["refused"] = [{"field": "neg_append", "asked": "<b>bold</b>", "reason": "r"}]
    record_path.write_text(json.dumps(record))
    state_path = run_dir / "state.json"  # memory's words are the critic's words too
    state = json.loads(state_path.read_text())
    state["from_memory"] = ['from run x: prompt + "<i>y</i>"']
    state_path.write_text(json.dumps(state))
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0
    html = (run_dir / "report.html").read_text()
    assert "<script>alert" not in html and "onerror=1>" not in html and "<b>bold" not in html
    assert "<i>y" not in html and "memory: from run x: prompt + &quot;&lt;i&gt;y" in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert html.count('class="card') == len(list(run_dir.glob("loop_*.png")))
    assert "<mark>red circle</mark>" in html


def test_run_loop_script_builds_a_spec_and_runs(servers, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_loop
    finally:
        sys.path.pop(0)
    code = run_loop.main(["--workflow", str(ROOT / "workflows" / "txt2img_sd15.json"),
                          "--prompt", "a red circle", "--negative-prompt", "blurry",
                          "--iterations-per-loop", "2", "--max-loops", "1",
                          "--comfy-url", servers[0].url, "--ollama-url", servers[1].url,
                          "--requirement", "A red circle", "--runs-dir", str(tmp_path / "r")])
    assert code in (0, 3)
    [run_dir] = list((tmp_path / "r").iterdir())
    assert (run_dir / "spec.yaml").is_file() and (run_dir / "loop_01_iter_01.png").is_file()
    saved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert saved["bindings"] == {"3.inputs.seed": "seed", "3.inputs.steps": "steps",
                                 "3.inputs.cfg": "cfg", "6.inputs.text": "prompt",
                                 "7.inputs.text": "negative"}  # as init would bind them
    assert (saved["start"]["seed"], saved["start"]["cfg"]) == (42, 7.0)  # the workflow's own
    assert saved["start"]["prompt"] == "a red circle"
    flow = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())
    del flow["3"]
    (tmp_path / "no_sampler.json").write_text(json.dumps(flow))
    assert run_loop.main(["--workflow", str(tmp_path / "no_sampler.json"), "--prompt", "x"]) == 2


def test_run_loop_drives_the_self_improving_workflow(servers, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_loop
    finally:
        sys.path.pop(0)
    code = run_loop.main(["--workflow", str(ROOT / "workflows/imitatoes_self_improving.json"),
                          "--prompt", "a red circle", "--iterations-per-loop", "1",
                          "--max-loops", "1", "--comfy-url", servers[0].url, "--ollama-url",
                          servers[1].url, "--runs-dir", str(tmp_path / "r")])
    assert code in (0, 3)
    [run_dir] = list((tmp_path / "r").iterdir())
    saved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert saved["bindings"]["10.inputs.prompt"] == "prompt"
    assert saved["bindings"]["10.inputs.negative"] == "negative"
    record = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    history = servers[0].history[record["prompt_id"]]
    texts = [o for o in history["outputs"].values() if "text" in o]
    assert len(texts) == 3  # reason, should_continue, next_iteration on the canvas


def test_run_loop_starts_where_the_workflow_is(servers, tmp_path: Path) -> None:
    """A turbo workflow's 4 steps at cfg 1 are outside the default bounds: the bounds widen to
    hold them instead of refusing the user's own workflow."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_loop
    finally:
        sys.path.pop(0)
    flow = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())
    flow["3"]["inputs"].update(steps=4, cfg=1.0)
    (tmp_path / "turbo.json").write_text(json.dumps(flow))
    code = run_loop.main(["--workflow", str(tmp_path / "turbo.json"), "--prompt", "a red circle",
                          "--iterations-per-loop", "1", "--max-loops", "1",
                          "--comfy-url", servers[0].url, "--ollama-url", servers[1].url,
                          "--runs-dir", str(tmp_path / "r")])
    assert code in (0, 3)
    [run_dir] = list((tmp_path / "r").iterdir())
    saved = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert saved["bounds"] == {"cfg": {"min": 1.0, "max": 12.0}, "steps": {"min": 4, "max": 60}}
    record = json.loads((run_dir / "loop_01_iter_01.json").read_text())
    assert (record["params"]["steps"], record["params"]["cfg"]) == (4, 1.0)


@pytest.mark.slow
def test_run_loop_script_as_the_readme_writes_it(servers, tmp_path: Path) -> None:
    """Started as `scripts/run_loop.py` (its shebang's python, not the venv's): it finds the
    project's python itself, honours IMITATOES_RUNS and names runs after the workflow."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", IMITATOES_RUNS=str(tmp_path / "elsewhere"))
    script = str(ROOT / "scripts" / "run_loop.py")
    shown = subprocess.run([script, "--help"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0 and "--workflow" in shown.stdout, shown.stderr
    # the very interpreter the venv links to (pyenv's, say), outside the venv: still finds it
    base = subprocess.run([os.path.realpath(sys.executable), script, "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert base.returncode == 0 and "--workflow" in base.stdout, base.stderr
    done = subprocess.run(
        [script, "--workflow", str(ROOT / "workflows" / "txt2img_sd15.json"), "--prompt",
         "a red circle", "--requirement", "A red circle", "--iterations-per-loop", "1",
         "--max-loops", "1", "--comfy-url", servers[0].url, "--ollama-url", servers[1].url],
        env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 3), done.stderr
    [run_dir] = list((tmp_path / "elsewhere").iterdir())
    assert run_dir.name.endswith("_txt2img_sd15")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_exits_130_and_leaves_a_resumable_folder(servers, tmp_path: Path,
                                                        sig: signal.Signals) -> None:
    comfy, ollama = servers
    comfy.behaviour.step_seconds = 0.2
    proc = spawn_run(servers, tmp_path)
    wait_for(lambda: list((tmp_path / "runs").glob("*/loop_01_iter_01.json"))
             and comfy.queue_remaining(), proc)
    time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    run_dir = only_run(tmp_path)
    assert f"continue with: imitatoes resume {run_dir}" in err
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "interrupted"
    time.sleep(0.1)
    assert comfy.queue_remaining() == 0  # our prompt was interrupted, not left running
    comfy.behaviour.step_seconds = 0
    result = runner.invoke(app, ["resume", str(run_dir), *urls(servers)])
    assert result.exit_code == 0, result.output


def test_library_example_runs(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "library_use.py")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "done after" in result.stdout


def test_at_a_terminal_done_asks_for_further_instruction(servers, tmp_path: Path) -> None:
    """The live table and the question, in a real pseudo-terminal."""
    import pty

    env = {**os.environ, "IMITATOES_RUNS": str(tmp_path / "runs"), "COLUMNS": "120",
           "TERM": "xterm"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: imitatoes at a terminal
        os.execve(sys.executable, [sys.executable, "-m", "imitatoes", "run", DEMO,
                                   *urls(servers)], env)
    output, answered = b"", False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal: it has exited
            break
        output += chunk
        if not answered and b"Further instruction" in output:
            answered = True
            time.sleep(0.2)
            os.write(fd, b"add a green square\r")
        if answered and output.count(b"Further instruction") == 2:
            os.write(fd, b"\r")  # empty: finish
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert answered and "judge" in text and "score" in text  # the live table, not plain lines
    state = json.loads((only_run(tmp_path) / "state.json").read_text())
    assert state["instructions"] == ["add a green square"] and state["loop"] >= 2


def test_doctor_names_a_model_the_server_lacks_and_the_closest_it_has(servers,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    servers[0].behaviour.checkpoints = ["v1-5-pruned.safetensors"]
    result = runner.invoke(app, ["doctor", DEMO, *urls(servers)])
    assert result.exit_code == 1
    assert re.search(r"models and values +│ FAIL +│ node 4 \(CheckpointLoaderSimple\) "
                     r"ckpt_name: 'v1-5-pruned-emaonly.safetensors' is not on this ComfyUI "
                     r"\(closest: v1-5-pruned.safetensors\)", result.stdout), result.stdout


def test_the_process_exits_with_its_code_and_all_its_output(tmp_path: Path) -> None:
    """The command leaves without the interpreter's teardown: nothing may be lost by it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # a pipe buffers
    shown = subprocess.run([sys.executable, "-m", "imitatoes", "schema"], capture_output=True,
                           text=True, timeout=60, env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["properties"]  # all of it
    bad = tmp_path / "bad.yaml"
    bad.write_text("goal: [unclosed\n")
    failed = subprocess.run([sys.executable, "-m", "imitatoes", "validate", str(bad)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert failed.returncode == 2 and f"{bad}:" in failed.stdout + failed.stderr


@pytest.mark.parametrize(("argv", "absent"), [
    (["--help"], {"jsonschema", "yaml", "requests", "PIL", "rich"}),
    (["validate", str(DEMO)], {"requests", "PIL", "rich", "aiohttp", "websocket"}),
])
def test_a_command_imports_only_what_it_needs(argv: list[str], absent: set[str]) -> None:
    code = ("import sys; from imitatoes.commands.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if '.' not in m)))")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=60)
    loaded = set(done.stdout.split("\n")[-2].split())
    assert "typer" in loaded and not loaded & absent


@pytest.mark.parametrize("command", ["validate", "init", "schema", "run", "resume", "doctor",
                                     "demo", "report", "replay", "diff", "batch", "worker",
                                     "standin comfyui", "standin ollama"])
def test_help_names_every_value_in_words(command: str) -> None:
    """Each option's value has a name a person reads (URL, SECONDS, N), never a type's."""
    shown = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert shown.exit_code == 0
    assert not re.findall(r"<[a-z ]+>", shown.output), shown.output  # no <str>, <int range>
    arguments = shown.output.splitlines()[0].split("[OPTIONS]", 1)[-1]
    assert arguments == arguments.upper()  # RUN_DIR, SPEC..., [KEY]
