"""The ComfyUI users run today: the same spec gives the same run on a 0.3.64 (history and
queue), on a newer ComfyUI with the Jobs API, and on Comfy Cloud (/api, an API key, parallel
slots, flat uploads), each played by the stand-in; and the key never leaves the process."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from imitatoes.clients.comfy import ComfyClient, ComfyRenderer, ComfyUnauthorized, job_outcome
from imitatoes.commands.cli import app
from imitatoes.runs import folder as runfolder
from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from imitatoes.standins.ollama import OllamaStandin
from tests.conftest import ROOT
from tests.servers import DEMO

KEY = "sk-imitatoes-test-4f9a1c7e2b"  # what must never be written anywhere
runner = CliRunner()
WORKFLOW = json.loads((ROOT / "imitatoes" / "data" / "demo_workflow.json").read_text())


def prompt(text: str = "a red circle", steps: int = 4) -> dict:
    flow = json.loads(json.dumps(WORKFLOW).replace("__PROMPT__", text).replace("__NEG__", "")
                      .replace('"__CFG__"', "7").replace('"__STEPS__"', str(steps))
                      .replace('"__SEED__"', "1"))
    return flow


def run_on(era: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str,
           codes: tuple[int, ...] = (0,)) -> Path:
    cloud = era == "cloud"
    monkeypatch.setenv("COMFY_CLOUD_API_KEY", KEY)
    with ComfyStandin(Behaviour(era=era, api_key=KEY if cloud else "")) as comfy, \
            OllamaStandin() as ollama:
        result = runner.invoke(app, [
            "run", DEMO, "--comfy-url", comfy.url, "--ollama-url", ollama.url, "--yes",
            "--runs-dir", str(tmp_path / era),
            *(["--set", "comfyui.api_key_env=COMFY_CLOUD_API_KEY"] if cloud else []), *extra])
    assert result.exit_code in codes, result.output
    (run_dir,) = (tmp_path / era).iterdir()
    return run_dir


def test_the_same_spec_gives_the_same_run_in_each_era(tmp_path: Path, monkeypatch) -> None:
    runs = {era: run_on(era, tmp_path, monkeypatch) for era in ("0.3.64", "jobs", "cloud")}
    made = {era: [(r.key, r.params, r.score) for r in runfolder.records(d)]
            for era, d in runs.items()}
    assert made["jobs"] == made["0.3.64"] == made["cloud"]
    finals = {(d / "final.png").read_bytes() for d in runs.values()}
    assert len(finals) == 1  # the same image, byte for byte
    apis = {era: json.loads((d / "provenance.json").read_text())["gatherings"][-1]["comfyui"]
            ["api"] for era, d in runs.items()}
    assert apis == {"0.3.64": "history", "jobs": "jobs", "cloud": "jobs"}


def test_a_refine_run_uploads_to_cloud_s_flat_storage(tmp_path: Path, monkeypatch) -> None:
    run_dir = run_on("cloud", tmp_path, monkeypatch, "--set", "refine.after_score=0.25",
                     codes=(0, 3))
    refined = [r for r in runfolder.records(run_dir) if r.refine]
    assert refined and all("/" not in r.refine["image"] for r in refined)  # no subfolder
    with ComfyStandin(Behaviour(era="cloud", api_key=KEY)) as comfy:
        stored = requests.post(f"{comfy.url}/api/upload/image", headers={"X-API-Key": KEY},
                               files={"image": ("mine.png", b"\x89PNG...", "image/png")},
                               data={"subfolder": "clipspace", "type": "input"}).json()
    assert stored["subfolder"] == "" and stored["name"] == \
        hashlib.sha256(b"\x89PNG...").hexdigest() + ".png"  # flat, by content


def test_cloud_without_the_key_or_with_a_wrong_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WRONG_KEY", "sk-not-it")
    monkeypatch.delenv("COMFY_CLOUD_API_KEY", raising=False)
    with ComfyStandin(Behaviour(era="cloud", api_key=KEY)) as comfy, OllamaStandin() as ollama:
        base = ["run", DEMO, "--comfy-url", comfy.url, "--ollama-url", ollama.url, "--yes"]
        unset = runner.invoke(app, [*base, "--set", "comfyui.api_key_env=COMFY_CLOUD_API_KEY"])
        wrong = runner.invoke(app, [*base, "--set", "comfyui.api_key_env=WRONG_KEY"])
        none = runner.invoke(app, base)
    assert unset.exit_code == 1 and "COMFY_CLOUD_API_KEY, but it is not set" in unset.output
    assert wrong.exit_code == 1 and "does not accept $WRONG_KEY" in wrong.output
    assert "sk-not-it" not in wrong.output
    assert none.exit_code == 1 and "(401)" in none.output and "api_key_env" in none.output
    assert not list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


@pytest.mark.slow
def test_the_key_never_leaves_the_process(tmp_path: Path, monkeypatch, capfd) -> None:
    """Every way a cloud run can fail, and one that finishes: the key is in no file of any run
    folder, no output, no event, no report, no provenance."""
    monkeypatch.setenv("COMFY_CLOUD_API_KEY", KEY)
    outputs = []
    faults = [{}, {"execution_errors": 1}, {"fail_prompt": 1}, {"drop": 1},
              {"output_names": [["output", "../x", "evil.png"]]}, {"websocket": False}]
    for n, fault in enumerate(faults):
        with ComfyStandin(Behaviour(era="cloud", api_key=KEY, **fault)) as comfy, \
                OllamaStandin() as ollama:
            args = ["run", DEMO, "--comfy-url", comfy.url, "--ollama-url", ollama.url, "--yes",
                    "--runs-dir", str(tmp_path / "runs" / str(n)),
                    "--set", "comfyui.api_key_env=COMFY_CLOUD_API_KEY"]
            outputs.append(runner.invoke(app, args).output)
            for run_dir in (tmp_path / "runs" / str(n)).glob("*"):
                outputs.append(runner.invoke(app, ["resume", str(run_dir), "--comfy-url",
                                                   comfy.url, "--ollama-url", ollama.url,
                                                   "--yes"]).output)
                outputs.append(runner.invoke(app, ["report", str(run_dir)]).output)
                outputs.append(runner.invoke(app, ["replay", str(run_dir), "--comfy-url",
                                                   comfy.url]).output)
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert len(written) > 30  # the runs really left their folders
    assert not [p for p in written if KEY.encode() in p.read_bytes()]
    captured = capfd.readouterr()
    assert KEY not in "".join(outputs) + captured.out + captured.err


def test_the_jobs_api_answers_as_the_frontend_parses_it() -> None:
    """The shapes frontend 1.58.1 checks with zod (fetchJobsRaw, fetchJobDetail)."""
    with ComfyStandin(Behaviour(era="jobs")) as comfy:
        client = ComfyClient(comfy.url, use_websocket=False)
        done = client.submit(prompt()).prompt_id
        client.wait(done, 10)
        listed = client.session.get(f"{comfy.url}/jobs?status=completed&limit=5&offset=0").json()
        detail = client.job(done)
        assert client.job("no-such-job") is None
        client.close()
    assert set(listed["pagination"]) == {"offset", "limit", "total", "has_more"}
    (entry,) = listed["jobs"]
    assert entry["id"] == done and entry["status"] == "completed"
    assert isinstance(entry["create_time"], int) and entry["outputs_count"] == 1
    assert detail["outputs"]["9"]["images"][0]["filename"].endswith(".png")
    assert detail["execution_error"] is None


def test_an_execution_error_is_read_from_the_job() -> None:
    with ComfyStandin(Behaviour(era="jobs", execution_errors=1)) as comfy:
        client = ComfyClient(comfy.url, use_websocket=False)
        failed = client.submit(prompt()).prompt_id
        with pytest.raises(Exception, match=r"failed in node 3 \(KSampler\): RuntimeError"):
            client.wait(failed, 10)
        client.close()
    with pytest.raises(Exception, match="ended as 'weird'"):
        job_outcome("x", {"status": "weird"})


def test_cancel_takes_ours_off_queued_or_running_in_one_call() -> None:
    with ComfyStandin(Behaviour(era="jobs", step_seconds=0.2)) as comfy:
        client = ComfyClient(comfy.url, use_websocket=False)
        renderer = ComfyRenderer(client, 30)
        ids = [renderer.queue(prompt(f"a {c} circle", 20)) for c in ("red", "blue", "green")]
        time.sleep(0.3)
        renderer.interrupt()
        time.sleep(0.5)
        statuses = [client.job(i)["status"] for i in ids]
        client.close()
    assert statuses == ["cancelled"] * 3


@pytest.mark.parametrize("slots", [1, 3])
def test_parallel_slots_run_prompts_at_once(slots: int) -> None:
    with ComfyStandin(Behaviour(era="cloud", api_key=KEY, step_seconds=0.05,
                                parallel=slots)) as comfy:
        client = ComfyClient(comfy.url, use_websocket=False, api_key=KEY)
        started = time.monotonic()
        ids = [client.submit(prompt(f"a {c} circle", 6)).prompt_id
               for c in ("red", "blue", "green")]
        peak = 0
        while any(client.job(i)["status"] in ("pending", "in_progress") for i in ids):
            peak = max(peak, len(client.queue()["queue_running"]))
            time.sleep(0.02)
        seconds = time.monotonic() - started
        client.close()
    assert peak == slots
    assert seconds < 0.3 * 6 * 3 / slots + 0.5


def test_a_key_needs_its_variable_set(monkeypatch) -> None:
    from imitatoes.clients.comfy import api_key
    from imitatoes.spec.model import ComfyConfig

    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ComfyUnauthorized, match="NOPE, but it is not set"):
        api_key(ComfyConfig("https://cloud.comfy.org", 5, 900, api_key_env="NOPE"))
    assert api_key(ComfyConfig("http://127.0.0.1:8188", 5, 900)) is None
    with pytest.raises(ComfyUnauthorized, match="Comfy Cloud needs an API key"):
        api_key(ComfyConfig("https://cloud.comfy.org", 5, 900))


def test_the_websocket_carries_the_key_as_token_and_progress_still_flows() -> None:
    with ComfyStandin(Behaviour(era="cloud", api_key=KEY, step_seconds=0.01)) as comfy:
        client = ComfyClient(comfy.url, api_key=KEY)
        steps: list[int] = []
        done = client.submit(prompt(steps=5)).prompt_id
        result = client.wait(done, 10, lambda p: steps.append(p.value))
        client.close()
    assert result.status == "success" and steps == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_batch_gives_a_backend_as_many_runs_as_it_runs_at_once(tmp_path: Path) -> None:
    from imitatoes.commands import batch
    from imitatoes.spec import load as specs

    with ComfyStandin(Behaviour(step_seconds=0.01, parallel=2)) as comfy, \
            OllamaStandin() as ollama:
        loaded = [specs.load(DEMO, [f"name=demo-{i}", "comfyui.parallel=2"], env={})
                  for i in range(4)]
        pool = batch.Batch(loaded, [batch.Backend(comfy.url, ollama.url)], tmp_path / "runs")
        most = 0

        def watch() -> None:
            nonlocal most
            while not pool._all_settled():
                most = max(most, sum(j.status == "running" for j in pool.jobs))
                time.sleep(0.01)
        watcher = threading.Thread(target=watch)
        watcher.start()
        jobs = pool.run()
        watcher.join()
    assert [j.status for j in jobs] == ["done"] * 4 and most == 2


def test_the_end_of_a_prompt_that_finished_while_another_was_followed_is_kept() -> None:
    """With prompts running at once, the next one's end often comes while the first is
    followed: it must not be dropped (the follower would wait for its 2 s safety net)."""
    from imitatoes.clients.comfy_ws import EventStream

    stream = EventStream("http://127.0.0.1:9", "me", 1.0)
    for prompt_id in ("b", "a"):
        stream.inbox.put({"type": "executing", "data": {"node": None, "prompt_id": prompt_id}})
    asked: list[str] = []

    def finished(prompt_id: str) -> bool:
        asked.append(prompt_id)
        return False
    started = time.monotonic()
    stream.follow("a", time.monotonic() + 5, None, finished)
    stream.follow("b", time.monotonic() + 5, None, finished)
    assert time.monotonic() - started < 0.5 and asked == []
