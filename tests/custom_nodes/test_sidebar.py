"""The sidebar's routes, served as ComfyUI would serve them but on a plain aiohttp server: a
loop started from a graph runs the real `imitatoes` command against the ComfyUI stand-in,
its iterations are pushed as they finish, it stops resumably, resumes in the same folder
and saves a spec `validate` accepts; hostile requests run nothing and write nothing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from aiohttp import web

from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from imitatoes.standins.ollama import OllamaStandin
from imitatoes.standins.server import BackgroundServer
from tests.conftest import ROOT

PACK = ROOT / "custom_nodes" / "imitatoes"
COMMAND = [sys.executable, "-m", "imitatoes"]


def load_sidebar():
    spec = importlib.util.spec_from_file_location("imitatoes_sidebar_test", PACK / "sidebar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sidebar_module = load_sidebar()
GRAPH = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())


class Host:
    """The routes on a server of their own, with what they push collected."""

    def __init__(self, tmp_path: Path, comfy_url: str) -> None:
        self.pushed: list[dict] = []
        self.sidebar = sidebar_module.Sidebar(tmp_path / "output", tmp_path / "user", comfy_url,
                                              send=lambda e, d: self.pushed.append(d),
                                              command=COMMAND)

        def app() -> web.Application:
            routes = web.RouteTableDef()
            sidebar_module.add_routes(routes, self.sidebar)
            application = web.Application()
            application.add_routes(routes)
            return application
        self.server = BackgroundServer(app)

    def post(self, path: str, body: object, **kwargs) -> requests.Response:
        return requests.post(f"{self.server.url}/imitatoes/{path}", json=body, timeout=60,
                             **kwargs)

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(f"{self.server.url}/imitatoes/{path}", params=params, timeout=60)


@pytest.fixture
def host(tmp_path: Path):
    with ComfyStandin(Behaviour(step_seconds=0.02)) as comfy, OllamaStandin() as ollama:
        h = Host(tmp_path, comfy.url)
        h.ollama = ollama.url
        with h.server:
            yield h


def start_body(host: Host, **changes) -> dict:
    return {"name": "fox", "prompt": GRAPH, "goal": "A red circle on a blue background",
            "requirements": ["A red circle", "The background is blue"],
            "model": "qwen2.5vl:7b", "ollama_url": host.ollama, "iterations": 3, "loops": 2,
            "bindings": {"6.inputs.text": "prompt", "7.inputs.text": "negative",
                         "3.inputs.seed": "seed"}, "start": {"prompt": "a circle"}, **changes}


def wait_for(check, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_status_names_the_command_and_the_vision_models(host: Host) -> None:
    status = host.get("status", ollama=host.ollama).json()
    assert status["imitatoes"]["ok"] and status["imitatoes"]["version"].startswith("imitatoes")
    assert {"name": "qwen2.5vl:7b", "vision": True} in status["ollama"]["models"]


def test_what_is_missing_is_said_as_doctor_says_it(tmp_path: Path) -> None:
    lonely = sidebar_module.Sidebar(tmp_path / "o", tmp_path / "u", "http://127.0.0.1:9",
                                    command=None)
    lonely.command = None
    status = lonely.status("http://127.0.0.1:9")
    assert "not installed here" in status["imitatoes"]["problem"]
    assert "Ollama is not reachable at http://127.0.0.1:9" in status["ollama"]["problem"]


def test_propose_gives_the_bindings_init_would_choose(host: Host) -> None:
    found = host.post("propose", {"prompt": GRAPH}).json()
    assert found["spec"]["bindings"]["6.inputs.text"] == "prompt"
    assert found["spec"]["bindings"]["3.inputs.seed"] == "seed"


@pytest.mark.slow
def test_start_watch_stop_resume_save(host: Host, tmp_path: Path) -> None:
    started = host.post("start", start_body(host))
    assert started.status_code == 200, started.text
    run = wait_for(lambda: started.json()["run"] or host.sidebar.runs()[0]["run"])
    # a card is pushed when the image is saved and again once it is judged: stop after the
    # judged one, or the run may stop between the two with no checklist to show
    wait_for(lambda: any(p.get("card", {}).get("checklist") for p in host.pushed))
    again = host.post("start", start_body(host))
    assert again.status_code == 400 and "already running" in again.json()["error"]
    assert host.post("stop", {"name": "fox"}).status_code == 200
    ended = wait_for(lambda: next((p["ended"] for p in host.pushed if "ended" in p), None))
    assert ended["status"] == "interrupted"
    cards = host.get("run", run=run).json()["cards"]
    first = cards[0]
    assert first["key"] == "loop_01_iter_01" and first["checklist"][0]["requirement"] == \
        "A red circle"
    assert host.get("image", run=run, key=first["key"]).headers["Content-Type"].startswith(
        "image/")
    resumed = host.post("resume", {"name": "fox", "run": run, "instruction": "make it bigger"})
    assert resumed.status_code == 200 and resumed.json()["run"] == run  # the same folder
    wait_for(lambda: len([p for p in host.pushed if "ended" in p]) == 2, 60)
    saved = host.post("save", {"name": "fox"}).json()
    assert Path(saved["spec"]).parent == tmp_path / "user" / "imitatoes"
    checked = subprocess.run([*COMMAND, "validate", saved["spec"]], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert host.get("report", run=run).status_code == 200


HOSTILE = [
    ("start", {"name": "../../etc"}),
    ("start", {"name": "x; rm -rf /"}),
    ("start", {"name": "$(touch /tmp/pwned)"}),
    ("start", {"command": "/bin/sh", "name": "fox"}),
    ("start", {"name": "fox", "prompt": "not a graph"}),
    ("start", {"name": "fox", "prompt": GRAPH, "requirements": "one", "goal": "g"}),
    ("start", {"name": "fox", "prompt": GRAPH, "goal": "g", "requirements": ["r"],
               "model": "qwen; rm -rf /", "bindings": {"6.inputs.text": "prompt"},
               "ollama_url": "http://127.0.0.1:1", "iterations": 1, "loops": 1}),
    ("start", {"name": "fox", "prompt": GRAPH, "goal": "g", "requirements": ["r"],
               "model": "m", "bindings": {"../x.inputs.text": "prompt"},
               "ollama_url": "http://x", "iterations": 1, "loops": 1}),
    ("start", {"name": "fox", "prompt": GRAPH, "goal": "g", "requirements": ["r"],
               "model": "m", "bindings": {"6.inputs.text": "prompt"},
               "ollama_url": "file:///etc/passwd", "iterations": 1, "loops": 1}),
    ("start", {"name": "fox", "prompt": GRAPH, "goal": "g", "requirements": ["r"],
               "model": "m", "bindings": {"6.inputs.text": "prompt"},
               "ollama_url": "http://x", "iterations": True, "loops": 1}),
    ("stop", {"name": "../fox"}), ("save", {"name": "/etc/passwd"}),
    ("resume", {"name": "fox", "run": "../../../etc", "instruction": "x"}),
    ("propose", {"prompt": [1, 2, 3]}), ("start", [1, 2]),
]


@pytest.mark.parametrize("path,body", HOSTILE, ids=[f"{p}-{i}" for i, (p, _) in
                                                    enumerate(HOSTILE)])
def test_hostile_requests_run_nothing_and_write_nothing(host: Host, tmp_path: Path, path,
                                                        body) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    answer = host.post(path, body)
    assert answer.status_code == 400, answer.text
    assert not host.sidebar.running
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_reads_stay_in_their_folder(host: Host) -> None:
    for params in ({"run": "../../etc"}, {"run": "20261207T000000Z_x/../../y"},
                   {"run": "20261207T000000Z_x", "key": "../../state"}):
        assert host.get("image", **params).status_code == 400
        assert host.get("run", **params).status_code == 400
        assert host.get("report", **params).status_code == 400


def test_bodies_are_capped_and_must_be_json(host: Host) -> None:
    huge = requests.post(f"{host.server.url}/imitatoes/start", data=b"{" + b" " * (5 * 2**20),
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert huge.status_code == 400 and "at most 4 MiB" in huge.json()["error"]
    garbage = requests.post(f"{host.server.url}/imitatoes/start", data=b"\xff\xfe not json",
                            timeout=30)
    assert garbage.status_code == 400 and "not JSON" in garbage.json()["error"]


def test_a_spec_imitatoes_refuses_is_answered_with_its_words(host: Host) -> None:
    answer = host.post("start", start_body(host, bounds={"steps": {"min": 50, "max": 10}}))
    assert answer.status_code == 400 and "min 50 is bigger than max 10" in answer.json()["error"]
    assert not host.sidebar.runs()  # no run folder was made


def test_a_run_started_from_a_terminal_joins_the_list(host: Host, tmp_path: Path) -> None:
    """imitatoes names its run folder in each prompt's extra_data; ComfyUI hands the prompt
    to the pack's on-prompt hook, which lists that run (and only a real run folder)."""
    with ComfyStandin() as comfy, OllamaStandin() as ollama:
        done = subprocess.run([*COMMAND, "run", str(ROOT / "examples" / "two-shapes.yaml"),
                               "--comfy-url", comfy.url, "--ollama-url", ollama.url, "--yes",
                               "--runs-dir", str(tmp_path / "terminal")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        sent = [entry["prompt"][3] for entry in comfy.history.values()]
    (run,) = (tmp_path / "terminal").iterdir()
    assert {e["imitatoes"]["run"] for e in sent} == {str(run)}
    for extra in sent:
        host.sidebar.noticed({"prompt": {}, "extra_data": extra})
    for fake in ("/etc", "relative/20261207T000000Z_x", str(tmp_path / "output")):
        host.sidebar.noticed({"extra_data": {"imitatoes": {"run": fake}}})
    listed = host.get("runs").json()
    assert [(r["run"], r["here"], r["status"]) for r in listed] == [(run.name, False, "done")]
    assert host.get("run", run=run.name).json()["cards"][0]["key"] == "loop_01_iter_01"


def test_a_run_s_summary_says_where_memory_started_it(tmp_path: Path) -> None:
    run = tmp_path / "20261207T000000Z_x"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"status": "done", "from_memory": [
        'from run y, which met the same requirements: prompt + "red circle"']}))
    assert sidebar_module.summary(run)["memory"].startswith("from run y, which met")
    (run / "state.json").write_text(json.dumps({"status": "done", "from_memory": "junk"}))
    assert sidebar_module.summary(run)["memory"] == ""
