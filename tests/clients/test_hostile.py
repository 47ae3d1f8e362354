"""Servers that misbehave the way real ones and proxies do (tests/hostile.py). Every case
ends with one clear message and an exit code, never a traceback; the run folder stays
consistent, gets its report, and `resume` against healthy servers finishes the run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.clients.comfy_ws import EventStream, Progress
from imitatoes.commands.cli import app
from tests import hostile
from tests.commands.test_faults import consistent, resume_finishes
from tests.servers import DEMO, only_run

runner = CliRunner()


def run(comfy: str, ollama: str, *extra: str):
    return runner.invoke(app, ["run", DEMO, "--comfy-url", comfy, "--ollama-url", ollama,
                               *extra])


def ends_cleanly(result, tmp_path: Path, code: int, message: str) -> Path:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit), result.exception
    assert message in result.stderr, result.stderr
    assert "imitatoes resume" in result.stderr.strip().splitlines()[-1]
    run_dir = only_run(tmp_path)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "failed"
    assert (run_dir / "report.html").is_file()
    consistent(run_dir)
    return run_dir


def strict_json(path: Path) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{path.name} holds {name}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


# -- ComfyUI ------------------------------------------------------------------------------------

def test_node_errors_that_are_not_objects(servers, tmp_path: Path) -> None:
    refused = hostile.json_answer({"error": {"type": "prompt_outputs_failed_validation",
                                             "message": "Prompt outputs failed validation"},
                                   "node_errors": {"3": "boom", "4": {"errors": ["x", 5]},
                                                   "5": {"errors": "no"}}}, 400)
    with hostile.comfyui(prompt=lambda _: refused) as comfy:
        result = run(comfy.url, servers[1].url)
    run_dir = ends_cleanly(result, tmp_path, 2, "ComfyUI refused the workflow")
    resume_finishes(run_dir, servers)


@pytest.mark.parametrize(("entry", "message"), [
    ({"status": {"messages": "x", "status_str": "success"}, "outputs": "nope"},
     "finished without images"),
    ({"status": [1, 2], "outputs": {"9": {"images": [5, {"filename": 3}, "x", None]}}},
     "finished without images"),
    ({"status": {"messages": [["execution_start"], 7, [1, 2], ["execution_error", "boom"]]},
      "outputs": {"9": ["images"]}}, "ComfyUI failed in node ? (?): no details given"),
    ("garbage", "is not an object"),
])
def test_history_of_the_wrong_shape(servers, tmp_path: Path, entry: object,
                                    message: str) -> None:
    def history(req: dict) -> hostile.Answer:
        return hostile.json_answer({req["path"].rsplit("/", 1)[-1]: entry})

    with hostile.comfyui(history=history) as comfy:
        result = run(comfy.url, servers[1].url)
    ends_cleanly(result, tmp_path, 1, message)


@pytest.mark.parametrize(("answer", "message"), [
    (hostile.raw(b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html"),
     "an HTML page"),
    (hostile.raw(hostile.png_header_only(30000, 30000), "image/png"), "900,000,000 pixels"),
    (hostile.raw(hostile.png_header_only(12000, 12000), "image/png"), "12000x12000 pixels"),
    (hostile.raw(hostile.png()[:60], "image/png"), "a damaged image"),
    (hostile.raw(b"", "image/png"), "an empty answer"),
])
def test_a_view_answer_that_is_not_an_image_is_never_saved_as_a_render(
        servers, tmp_path: Path, answer: hostile.Answer, message: str) -> None:
    with hostile.comfyui(view=lambda _: answer) as comfy:
        result = run(comfy.url, servers[1].url)
    run_dir = ends_cleanly(result, tmp_path, 1, message)
    assert not list(run_dir.glob("loop_*.png"))
    [kept] = list((run_dir / "rejected").glob("*.bin"))
    assert kept.read_bytes() == answer[2]
    assert message in kept.with_suffix(".txt").read_text()
    resume_finishes(run_dir, servers)  # a healthy ComfyUI renders it; nothing reuses the page


def test_a_bad_render_saved_by_an_older_version_is_rendered_again(servers,
                                                                  tmp_path: Path) -> None:
    result = run(servers[0].url, servers[1].url)
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    state = json.loads((run_dir / "state.json").read_text())
    state.update(status="interrupted", in_progress=True)  # as if killed while judging it
    (run_dir / "state.json").write_text(json.dumps(state))
    bad = run_dir / f"{state['done_key']}.png"
    bad.write_bytes(b"<html>login</html>")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("loop_*.png") if p != bad}
    result = runner.invoke(app, ["resume", str(run_dir), "--comfy-url", servers[0].url,
                                 "--ollama-url", servers[1].url])
    assert result.exit_code == 0, result.output
    assert all((run_dir / n).stat().st_mtime_ns == m for n, m in before.items())
    assert bad.read_bytes().startswith(b"\x89PNG")  # rendered again
    [kept] = list((run_dir / "rejected").glob("*.bin"))
    assert kept.read_bytes() == b"<html>login</html>"
    consistent(run_dir)


def test_an_image_over_the_size_cap(servers, tmp_path: Path) -> None:
    with hostile.comfyui(view=lambda _: hostile.raw(hostile.png(512, 512) + b"\0" * 20000,
                                                    "image/png")) as comfy:
        result = run(comfy.url, servers[1].url, "--set", "comfyui.max_image_mb=0.01")
    ends_cleanly(result, tmp_path, 1, "passed 10 KiB")


@pytest.mark.slow
def test_a_view_that_trickles_ends_at_the_deadline(servers, tmp_path: Path) -> None:
    with hostile.comfyui(view=lambda _: hostile.trickle(hostile.png(), 0.05, "image/png")) \
            as comfy:
        started = time.monotonic()
        result = run(comfy.url, servers[1].url, "--set", "comfyui.timeout=1")
        took = time.monotonic() - started
    ends_cleanly(result, tmp_path, 1, "did not finish its answer within 1 s")
    assert took < 5


def test_a_render_that_never_finishes_is_taken_off_the_queue(servers, tmp_path: Path) -> None:
    with hostile.comfyui(history=lambda _: hostile.json_answer({})) as comfy:
        comfy.routes["GET /queue"] = lambda _: hostile.json_answer(
            {"queue_running": [], "queue_pending": [[1, pid] for pid in submitted(comfy)]})
        result = run(comfy.url, servers[1].url, "--set", "comfyui.render_timeout=0.5")
        [pid] = submitted(comfy)
        dropped = [r["json"] for r in comfy.requests
                   if r["path"] in ("/interrupt", "/queue") and r["method"] == "POST"]
    ends_cleanly(result, tmp_path, 1, "did not finish in time")
    assert "asked ComfyUI to drop it" in result.stderr
    assert {"prompt_id": pid} in dropped and {"delete": [pid]} in dropped


def submitted(comfy: hostile.HostileServer) -> list[str]:
    return [r["json"]["prompt_id"] for r in comfy.requests if r["path"] == "/prompt"]


@pytest.mark.parametrize("message", [
    {"type": "progress", "data": {"prompt_id": "p"}},
    {"type": "progress", "data": {"prompt_id": "p", "value": "3", "max": 10}},
    {"type": "progress", "data": {"prompt_id": "p", "value": 10**30, "max": 10}},
    {"type": "progress", "data": ["p", 1, 2]},
    {"type": "progress"},
    {"data": {"prompt_id": "p"}},
])
def test_websocket_messages_of_the_wrong_shape_are_skipped(message: dict) -> None:
    stream = EventStream("http://127.0.0.1:9", "me", 1.0)
    seen: list[Progress] = []
    for msg in (message, {"type": "progress", "data": {"prompt_id": "p", "value": 1,
                                                        "max": 2, "node": "3"}},
                {"type": "executing", "data": {"prompt_id": "p", "node": None}}):
        stream.inbox.put(msg)
    stream.follow("p", time.monotonic() + 5, seen.append, lambda _: False)
    assert seen == [Progress("p", "3", 1, 2)]


# -- the critic ---------------------------------------------------------------------------------

def test_a_critic_answer_nested_deep(servers, tmp_path: Path) -> None:
    with hostile.ollama("[" * 200_000) as critic:
        result = run(servers[0].url, critic.url, "--set", "critic.retries=0")
    run_dir = ends_cleanly(result, tmp_path, 1, "no usable verdict 3 times in a row")
    record = strict_json(run_dir / "loop_01_iter_01.json")
    assert "nested too deeply" in record["critic"]["answers"][0]["error"]


def test_a_response_body_nested_deep(servers, tmp_path: Path) -> None:
    deep = hostile.raw(b"[" * 200_000 + b"]" * 200_000, "application/json")
    with hostile.ollama(lambda _: deep) as critic:
        result = run(servers[0].url, critic.url)
    ends_cleanly(result, tmp_path, 1, "without JSON")


@pytest.mark.parametrize("bad", [
    hostile.verdict(score=float("nan")),  # json.dumps writes NaN, as a broken server might
    hostile.verdict().replace('"cfg": null', '"cfg": ' + "9" * 400),
    hostile.verdict().replace('"cfg": null', '"cfg": Infinity'),
])
def test_numbers_that_are_not_finite_never_reach_the_state(servers, tmp_path: Path,
                                                           bad: str) -> None:
    with hostile.ollama(bad, hostile.verdict(True, "All good.")) as critic:
        result = run(servers[0].url, critic.url)
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    state = strict_json(run_dir / "state.json")
    assert state["status"] == "done" and state["best"]["score"] == 1.0
    first = strict_json(run_dir / "loop_01_iter_01.json")
    assert "not a finite number" in first["critic"]["answers"][0]["error"] or \
        "not a JSON number" in first["critic"]["answers"][0]["error"]


@pytest.mark.slow
def test_a_critic_that_trickles_ends_at_the_deadline(servers, tmp_path: Path) -> None:
    slow = hostile.trickle(json.dumps({"message": {"content": hostile.verdict()}}).encode(), 0.1)
    with hostile.ollama(lambda _: slow) as critic:
        started = time.monotonic()
        result = run(servers[0].url, critic.url, "--set", "critic.timeout=1")
        took = time.monotonic() - started
    ends_cleanly(result, tmp_path, 1, "did not finish its answer within 1 s")
    assert took < 6


def test_a_critic_that_streams_forever_is_cut_off(servers, tmp_path: Path) -> None:
    with hostile.ollama(lambda _: hostile.endless()) as critic:
        result = run(servers[0].url, critic.url, "--set", "critic.timeout=20")
    ends_cleanly(result, tmp_path, 1, "passed 16 MiB")


def test_the_critic_s_words_never_drive_the_terminal(servers, tmp_path: Path) -> None:
    reason = "\x1b]0;PWNED\x07Not yet\x1b[2J: [bold red]red[/bold red]\r\x9b31m circle\u202e"
    with hostile.ollama(hostile.verdict(reason=reason), hostile.verdict(True, "Fine.")) \
            as critic:
        result = run(servers[0].url, critic.url)
    assert result.exit_code == 0, result.output
    assert not any(c in result.output for c in "\x1b\x07\r\x9b\u202e")
    assert "Not yet: [bold red]red[/bold red] circle" in result.stdout
