"""Conformance: the ComfyUI stand-in answers the recorded requests as ComfyUI 0.3.64 did."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from tests.conftest import found
from tests.servers import FIXTURES, fixture, replay, same_shape, shape

UNSUPPORTED = {  # what the stand-in does not implement, and why that is fine for imitatoes
    "prompt_loadimage_uploaded_ok.json",  # needs its upload first: a scenario test below
    "object_info_CLIPTextEncodeSDXL.json", "object_info_ImageScaleBy.json",
    "object_info_KSamplerAdvanced.json", "object_info_LoraLoader.json",
    "object_info_VAELoader.json",  # nodes it cannot run are not offered
    "object_info_full.json",  # the real catalogue, for init and nodecheck tests: same reason
}
STATEFUL = {  # need a prompt to have run first: covered by the scenario tests below
    "history_completed.json", "history_completed_cached.json", "history_execution_error.json",
    "history_interrupted.json", "history_interrupted_targeted.json",
    "history_ksampler_completed.json", "history_max_items_1_offset_0.json",
    "history_max_items_2.json", "history_multi_node_completed.json",
    "history_text_completed.json", "view_ok.json", "view_ksampler.json",
    "view_preview_jpeg.json", "view_subfolder_ok.json", "view_temp_preview_ok.json",
    "queue_running_and_pending.json", "prompt_get_queue_info_busy.json",
    "queue_after_delete.json",
}
HTTP = found(sorted(p.name for p in (FIXTURES / "comfyui").glob("*.json")
                    if not p.name.startswith("ws_") and p.name not in UNSUPPORTED | STATEFUL),
             "recorded ComfyUI exchanges")


@pytest.fixture
def comfy() -> Iterator[ComfyStandin]:
    with ComfyStandin(Behaviour(checkpoints=["tiny-random-sd15.safetensors"])) as server:
        yield server


def assert_like(resp: requests.Response, recorded: dict[str, Any]) -> None:
    want = recorded["response"]
    assert resp.status_code == want["status"]
    want_type = (want["headers"].get("Content-Type") or "").split(";")[0]  # None: no header
    got_type = resp.headers.get("Content-Type", "").split(";")[0]
    if want_type or resp.content:
        assert got_type == want_type
    if want.get("body_omitted"):
        return
    body = want.get("body")
    if want_type == "application/json":
        assert same_shape(shape(normal(resp.json())), shape(normal(body))) == []
    elif isinstance(body, str):
        assert resp.text == body


def normal(body: Any) -> Any:
    """ComfyUI checks a node's inputs in set order, so the order of its errors means nothing."""
    if isinstance(body, dict) and isinstance(body.get("node_errors"), dict):
        for info in body["node_errors"].values():
            info["errors"].sort(key=lambda e: e["details"])
    return body


@pytest.mark.parametrize("name", HTTP)
def test_replays_like_comfyui(comfy: ComfyStandin, name: str) -> None:
    recorded = fixture("comfyui", name)
    if "with_model" not in name and "CheckpointLoaderSimple" in name:
        comfy.behaviour.checkpoints = []
    assert_like(replay(comfy.url, recorded["request"]), recorded)


def test_validation_errors_match_exactly(comfy: ComfyStandin) -> None:
    comfy.behaviour.checkpoints = []
    for name in ("prompt_err_ksampler_out_of_bounds.json", "prompt_err_width_wrong_type.json",
                 "prompt_err_bad_link_type.json", "prompt_err_combo_value_not_in_list.json"):
        recorded = fixture("comfyui", name)
        got = replay(comfy.url, recorded["request"]).json()
        assert normal(got) == normal(recorded["response"]["body"]), name


def run(server: ComfyStandin, name: str, client_id: str = "conformance") -> str:
    body = dict(fixture("comfyui", name)["request"]["body"])
    body["client_id"] = client_id
    body.pop("prompt_id", None)
    resp = requests.post(server.url + "/prompt", json=body, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["prompt_id"]


def finished(server: ComfyStandin, prompt_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = requests.get(f"{server.url}/history/{prompt_id}", timeout=5).json()
        if body:
            return body
        time.sleep(0.01)
    raise AssertionError(f"{prompt_id} did not finish")


@pytest.mark.parametrize(("prompt", "history"), [
    ("prompt_ok.json", "history_completed.json"),
    ("prompt_text_ok.json", "history_text_completed.json"),
    ("prompt_multi_node_ok.json", "history_multi_node_completed.json"),
    ("prompt_execution_error_accepted.json", "history_execution_error.json"),
    ("prompt_ksampler_ok.json", "history_ksampler_completed.json"),
])
def test_history_entries_have_comfyuis_shape(comfy: ComfyStandin, prompt: str,
                                             history: str) -> None:
    got = finished(comfy, run(comfy, prompt))
    want = fixture("comfyui", history)["response"]["body"]
    [got_entry], [want_entry] = got.values(), want.values()
    # ComfyUI's error traceback has more frames and its inputs more keys; the keys match.
    assert same_shape(shape(got_entry), shape(want_entry)) == []


def test_resubmission_is_cached_and_points_at_the_old_file(comfy: ComfyStandin) -> None:
    first = finished(comfy, run(comfy, "prompt_ok.json"))
    again = finished(comfy, run(comfy, "prompt_ok.json"))
    [a], [b] = first.values(), again.values()
    assert a["outputs"] == b["outputs"]
    cached = b["status"]["messages"][1]
    assert cached[0] == "execution_cached" and sorted(cached[1]["nodes"]) == ["1", "2"]
    want = fixture("comfyui", "history_completed_cached.json")["response"]["body"]
    assert same_shape(shape(b), shape(next(iter(want.values())))) == []


def test_view_serves_what_history_names(comfy: ComfyStandin) -> None:
    entry = next(iter(finished(comfy, run(comfy, "prompt_multi_node_ok.json")).values()))
    saved = entry["outputs"]["3"]["images"][0]
    assert saved["subfolder"] == "imitatoes" and saved["filename"] == "multi_00001_.png"
    resp = requests.get(comfy.url + "/view", params=saved, timeout=5)
    assert_like(resp, fixture("comfyui", "view_subfolder_ok.json"))
    assert resp.content.startswith(b"\x89PNG") and b"tEXtprompt" in resp.content
    temp = entry["outputs"]["4"]["images"][0]
    assert temp["type"] == "temp" and temp["filename"].startswith("ComfyUI_temp_")
    assert_like(requests.get(comfy.url + "/view", params=temp, timeout=5),
                fixture("comfyui", "view_temp_preview_ok.json"))
    preview = requests.get(comfy.url + "/view", params={**saved, "preview": "jpeg;50"}, timeout=5)
    assert_like(preview, fixture("comfyui", "view_preview_jpeg.json"))


def test_queue_shows_running_and_pending_and_interrupt_stops_the_runner() -> None:
    with ComfyStandin(Behaviour(step_seconds=0.05)) as comfy:
        body = fixture("comfyui", "prompt_ksampler_ok.json")["request"]["body"]
        body["prompt"]["4"]["inputs"]["ckpt_name"] = "tiny-random-sd15.safetensors"
        body["prompt"]["3"]["inputs"]["steps"] = 200
        submit = {"prompt": body["prompt"], "client_id": "q"}
        ids = [requests.post(comfy.url + "/prompt", json=submit, timeout=5).json()["prompt_id"]
               for _ in range(2)]
        time.sleep(0.1)
        got = requests.get(comfy.url + "/queue", timeout=5).json()
        assert [i[1] for i in got["queue_running"]] == ids[:1]
        assert [i[1] for i in got["queue_pending"]] == ids[1:]
        recorded = fixture("comfyui", "queue_running_and_pending.json")["response"]["body"]
        for body in (recorded, got):  # a different workflow: compare the items around it
            for item in body["queue_running"] + body["queue_pending"]:
                item[2] = {}
        assert same_shape(shape(got), shape(recorded)) == []
        busy = requests.get(comfy.url + "/prompt", timeout=5).json()
        assert busy == {"exec_info": {"queue_remaining": 2}}
        requests.post(comfy.url + "/interrupt", json={"prompt_id": ids[1]}, timeout=5)  # pending
        time.sleep(0.1)
        assert requests.get(f"{comfy.url}/history/{ids[0]}", timeout=5).json() == {}
        requests.post(comfy.url + "/queue", json={"delete": ids[1:]}, timeout=5)
        requests.post(comfy.url + "/interrupt", timeout=5)
        entry = finished(comfy, ids[0])[ids[0]]
        recorded = fixture("comfyui", "history_interrupted.json")["response"]["body"]
        want = next(iter(recorded.values()))
        entry["prompt"][2] = want["prompt"][2] = {}  # a different workflow
        assert same_shape(shape(entry), shape(want)) == []
        assert entry["status"]["messages"][-1][0] == "execution_interrupted"
        assert requests.get(f"{comfy.url}/history/{ids[1]}", timeout=5).json() == {}


def test_history_paging(comfy: ComfyStandin) -> None:
    ids = [finished(comfy, run(comfy, n)) and run_id
           for n in ("prompt_text_ok.json", "prompt_ok.json", "prompt_multi_node_ok.json")
           for run_id in [None]]
    del ids
    order = list(requests.get(comfy.url + "/history", timeout=5).json())
    newest = requests.get(comfy.url + "/history?max_items=2", timeout=5).json()
    oldest = requests.get(comfy.url + "/history?max_items=1&offset=0", timeout=5).json()
    assert list(newest) == order[-2:] and list(oldest) == order[:1]


def ws_frames(server: ComfyStandin, prompt: str, client_id: str) -> list[dict[str, Any]]:
    ws = websocket.create_connection(f"{server.url.replace('http', 'ws')}/ws?clientId={client_id}",
                                     timeout=10)
    frames = [json.loads(ws.recv())]
    prompt_id = run(server, prompt, client_id)
    while True:
        frames.append(json.loads(ws.recv()))
        data = frames[-1]["data"]
        if frames[-1]["type"] == "executing" and data.get("node") is None \
                and data.get("prompt_id") == prompt_id:
            ws.close()
            return frames


@pytest.mark.parametrize(("transcript", "prompt"), [
    ("ws_messages.json", "prompt_ok.json"),
    ("ws_messages_ksampler.json", "prompt_ksampler_ok.json"),
    ("ws_messages_execution_error.json", "prompt_execution_error_accepted.json"),
    ("ws_messages_text_workflow.json", "prompt_text_ok.json"),
])
def test_websocket_event_order(comfy: ComfyStandin, transcript: str, prompt: str) -> None:
    recorded = fixture("comfyui", transcript)
    want = [m["data"] for m in recorded["messages"] if m["frame"] == "text"]
    got = ws_frames(comfy, prompt, recorded["client_id"])
    assert got[0]["type"] == "status" and got[0]["data"]["sid"] == recorded["client_id"]

    def story(frames: list[dict]) -> list[str]:  # the client-facing events, node ids aside
        kinds = [f["type"] for f in frames if f["type"] not in ("status", "progress_state")]
        return [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1] or k == "progress"]

    assert story(got) == story(want)
    for kind in {f["type"] for f in want}:
        w = next(f["data"] for f in want if f["type"] == kind)
        g = next(f["data"] for f in got if f["type"] == kind)
        assert set(g) == set(w), kind


def test_other_clients_see_only_status_and_progress_state(comfy: ComfyStandin) -> None:
    observer = websocket.create_connection(f"{comfy.url.replace('http', 'ws')}/ws", timeout=10)
    hello = json.loads(observer.recv())
    assert len(hello["data"]["sid"]) == 32  # assigned, like ComfyUI
    finished(comfy, run(comfy, "prompt_ok.json", client_id="someone-else"))
    observer.settimeout(0.3)
    kinds = set()
    try:
        while True:
            kinds.add(json.loads(observer.recv())["type"])
    except websocket.WebSocketTimeoutException:
        pass
    observer.close()
    assert kinds <= {"status", "progress_state"} and "status" in kinds


def test_feature_flags_are_answered(comfy: ComfyStandin) -> None:
    ws = websocket.create_connection(f"{comfy.url.replace('http', 'ws')}/ws?clientId=ff",
                                     timeout=5)
    ws.recv()
    ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
    assert json.loads(ws.recv())["type"] == "feature_flags"
    ws.close()


def test_runs_on_its_own_and_stops_on_ctrl_c() -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "imitatoes", "standin", "comfyui", "--port",
                             "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(" on ")[1].split()[0]
        assert requests.get(url + "/api/system_stats", timeout=5).json()["devices"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_the_restart_knob_forgets_like_a_restarted_comfyui(comfy: ComfyStandin) -> None:
    finished(comfy, run(comfy, "prompt_ok.json"))
    assert requests.get(comfy.url + "/history", timeout=5).json()
    resp = requests.post(comfy.url + "/imitatoes/behaviour", json={"restart": True,
                                                               "history_delay": 0}, timeout=5)
    assert resp.status_code == 200, resp.text
    assert requests.get(comfy.url + "/history", timeout=5).json() == {}
    bad = requests.post(comfy.url + "/imitatoes/behaviour", json={"restrat": True}, timeout=5)
    assert bad.status_code == 400 and "restrat" in bad.json()["error"]


def test_stubborn_seeds_draw_the_wrong_colour_whatever_the_prompt() -> None:
    from imitatoes.standins import picture

    scene = picture.scene_from("a red circle, blue background", "watermark", 30, 7.0)
    assert picture.stubborn(scene, 42, 0.0) == scene
    wrong = picture.stubborn(scene, 42, 1.0)
    assert wrong.shapes == (("orange", "circle"),) and wrong.background == "blue"
    seeds = range(200)
    hit = sum(picture.stubborn(scene, s, 0.4) != scene for s in seeds)
    assert 60 < hit < 100  # about the share asked for, decided by the seed alone
    assert [picture.stubborn(scene, s, 0.4) for s in seeds] == \
        [picture.stubborn(scene, s, 0.4) for s in seeds]


def test_an_uploaded_image_is_loaded_and_a_different_one_never_overwrites(comfy) -> None:
    def upload(colour: tuple[int, int, int], **fields: str) -> dict[str, Any]:
        out = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(out, "PNG")
        return requests.post(comfy.url + "/upload/image", files={
            "image": ("init.png", out.getvalue(), "image/png")}, data=fields, timeout=5).json()

    assert upload((200, 0, 0))["name"] == "init.png"
    assert upload((200, 0, 0))["name"] == "init.png"  # the same bytes: the same file
    assert upload((0, 0, 200))["name"] == "init (1).png"  # never over another image
    assert upload((0, 200, 0), overwrite="true")["name"] == "init.png"
    escaped = requests.post(comfy.url + "/upload/image", files={
        "image": ("x.png", b"png", "image/png")}, data={"subfolder": "../../etc"}, timeout=5)
    assert escaped.status_code == 400
    recorded = fixture("comfyui", "prompt_loadimage_uploaded_ok.json")
    assert_like(replay(comfy.url, recorded["request"]), recorded)


def test_nodes_run_in_comfyuis_order_a_preview_first() -> None:
    """Recorded on a real ComfyUI: a PreviewImage beside a SaveImage that waits on an
    ImageScale runs, and is listed in the history, first."""
    recorded = fixture("comfyui_live", "execution_order_preview_and_save.json")
    prompt = recorded["request"]["body"]["prompt"]
    with ComfyStandin(Behaviour(step_seconds=0, checkpoints=[prompt["4"]["inputs"]["ckpt_name"]])
                      ) as server:
        ws = websocket.create_connection(f"{server.url.replace('http', 'ws')}/ws?clientId=o",
                                         timeout=10)
        prompt_id = requests.post(server.url + "/prompt", json={"prompt": prompt,
                                  "client_id": "o"}, timeout=5).json()["prompt_id"]
        ran = []
        while (msg := json.loads(ws.recv()))["type"] != "executing" or msg["data"]["node"]:
            if msg["type"] == "executing":
                ran.append(msg["data"]["node"])
        ws.close()
        outputs = finished(server, prompt_id)[prompt_id]["outputs"]
    assert ran == recorded["executing"] and list(outputs) == list(recorded["history_outputs"])
