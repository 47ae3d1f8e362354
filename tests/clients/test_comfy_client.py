"""The ComfyUI client against the stand-in, over real sockets."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import websocket

from imitatoes.clients.comfy import (
    ComfyClient,
    ComfyError,
    ComfyExecutionError,
    ComfyProtocolError,
    ComfyRejected,
    ComfyServerError,
    ComfyUnreachable,
    ImageRef,
    Progress,
    RenderTimeout,
)
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.workflow import api as workflow
from tests.conftest import ROOT
from tests.servers import fixture

SD15 = json.loads((ROOT / "workflows" / "txt2img_sd15.json").read_text())


def txt2img(prompt: str = "a red circle on a blue background", steps: int = 4,
            cfg: float = 7.0, seed: int = 3) -> dict:
    flow = workflow.bind(SD15, {"6.inputs.text": prompt, "7.inputs.text": "watermark",
                                "3.inputs.cfg": cfg,
                                "3.inputs.steps": steps, "3.inputs.seed": seed})
    flow["5"]["inputs"].update(width=128, height=128)
    return flow


@pytest.fixture
def comfy() -> Iterator[ComfyStandin]:
    with ComfyStandin() as server:
        yield server


@pytest.fixture
def client(comfy: ComfyStandin) -> Iterator[ComfyClient]:
    c = ComfyClient(comfy.url, connect_timeout=2, read_timeout=5)
    yield c
    c.close()


def test_render_round_trip_over_the_websocket(comfy: ComfyStandin, client: ComfyClient) -> None:
    seen: list[Progress] = []
    sub = client.submit(txt2img(steps=4))
    result = client.wait(sub.prompt_id, timeout=10, on_progress=seen.append)
    assert result.status == "success"
    assert [(p.value, p.max, p.node) for p in seen] == [(k, 4, "3") for k in range(1, 5)]
    [(ref, data)] = client.images(result)
    assert ref == ImageRef("imitatoes_00001_.png", "", "output", "9")
    assert data.startswith(b"\x89PNG")


def test_polling_when_no_websocket(comfy: ComfyStandin) -> None:
    comfy.behaviour.websocket = False
    client = ComfyClient(comfy.url)
    sub = client.submit(txt2img())
    assert client.wait(sub.prompt_id, timeout=10).status == "success"
    client.close()


def test_submit_sends_client_id_and_own_prompt_id(comfy: ComfyStandin,
                                                  client: ComfyClient) -> None:
    sub = client.submit(txt2img(), prompt_id="11111111-2222-4333-8444-555555555555")
    assert sub.prompt_id == "11111111-2222-4333-8444-555555555555"
    client.wait(sub.prompt_id, timeout=10)
    entry = client.history(sub.prompt_id)
    assert entry["prompt"][3] == {"client_id": client.client_id}


def test_out_of_bounds_is_one_readable_error(client: ComfyClient) -> None:
    body = fixture("comfyui", "prompt_err_ksampler_out_of_bounds.json")["request"]["body"]
    with pytest.raises(ComfyRejected) as info:
        client.submit(body["prompt"])
    lines = str(info.value).splitlines()
    assert lines[0] == "ComfyUI refused the workflow: Prompt outputs failed validation"
    assert "  node 5 (KSampler) input cfg: 101.0 is bigger than the maximum 100.0" in lines
    assert "  node 5 (KSampler) input steps: 0 is smaller than the minimum 1" in lines
    assert "  node 2 (EmptyLatentImage) input width: 8 is smaller than the minimum 16" in lines
    assert info.value.exit_code == 2 and set(info.value.node_errors) == {"2", "5"}


@pytest.mark.parametrize(("name", "needle"), [
    ("prompt_err_unknown_class_type.json", "node NoSuchNodeXYZ does not exist. (Node ID '#1'); "
     "is the custom node that provides it installed?"),
    ("prompt_err_missing_link.json", "node 2 (SaveImage) links to node '99', which is not in"),
    ("prompt_err_no_output_node.json", "Prompt has no outputs"),
    ("prompt_err_missing_required_input.json", "node 2 (SaveImage) input images is missing"),
])
def test_other_refusals(client: ComfyClient, name: str, needle: str) -> None:
    with pytest.raises(ComfyRejected, match="ComfyUI refused the workflow") as info:
        client.submit(fixture("comfyui", name)["request"]["body"]["prompt"])
    assert needle in str(info.value)


def test_500_on_prompt(comfy: ComfyStandin, client: ComfyClient) -> None:
    comfy.behaviour.fail_prompt = 1
    with pytest.raises(ComfyServerError, match="500 to POST /prompt: '500 Internal Server Error"):
        client.submit(txt2img())


def test_execution_error_names_node_type_and_message(comfy: ComfyStandin,
                                                     client: ComfyClient) -> None:
    comfy.behaviour.execution_errors = 1
    sub = client.submit(txt2img())
    with pytest.raises(ComfyExecutionError) as info:
        client.wait(sub.prompt_id, timeout=10)
    assert str(info.value) == ("ComfyUI failed in node 3 (KSampler): RuntimeError: stand-in "
                               "fault: CUDA out of memory while sampling")
    assert (info.value.node_id, info.value.node_type) == ("3", "KSampler")


def test_recorded_execution_error(client: ComfyClient) -> None:
    body = fixture("comfyui", "prompt_execution_error_accepted.json")["request"]["body"]
    sub = client.submit(body["prompt"])
    with pytest.raises(ComfyExecutionError, match=r"node 2 \(RegexReplace\): error: "):
        client.wait(sub.prompt_id, timeout=10)


def test_interrupt_is_its_own_outcome(comfy: ComfyStandin, client: ComfyClient) -> None:
    comfy.behaviour.step_seconds = 0.05
    sub = client.submit(txt2img(steps=100))
    seen = threading.Event()

    def on_progress(p: Progress) -> None:
        if not seen.is_set():
            seen.set()
            client.interrupt(sub.prompt_id)

    result = client.wait(sub.prompt_id, timeout=10, on_progress=on_progress)
    assert result.status == "interrupted" and result.images == ()
    with pytest.raises(ComfyError, match="finished without images"):
        client.images(result)


def test_timeout_does_not_hang(comfy: ComfyStandin, client: ComfyClient) -> None:
    comfy.behaviour.step_seconds = 1.0
    sub = client.submit(txt2img(steps=50))
    start = time.monotonic()
    with pytest.raises(RenderTimeout, match="did not finish in time"):
        client.wait(sub.prompt_id, timeout=0.3)
    assert time.monotonic() - start < 2
    client.interrupt()


def test_server_down_says_what_and_what_to_do() -> None:
    client = ComfyClient("http://127.0.0.1:9", connect_timeout=0.5)
    with pytest.raises(ComfyUnreachable) as info:
        client.submit(txt2img())
    message = str(info.value)
    assert "ComfyUI is not reachable at http://127.0.0.1:9" in message
    assert "connection refused" in message and "IMITATOES_COMFY_URL" in message


def test_dropped_answer_to_a_get_is_retried(comfy: ComfyStandin, client: ComfyClient) -> None:
    comfy.behaviour.drop = 1
    assert client.queue() == {"queue_running": [], "queue_pending": []}


def test_dropped_post_is_not_resent_blindly(comfy: ComfyStandin, client: ComfyClient) -> None:
    comfy.behaviour.drop = 1  # the request never reached the queue: we check, then report
    with pytest.raises(ComfyUnreachable, match="closed without an answer"):
        client.submit(txt2img())
    assert client.queue()["queue_pending"] == []


def test_view_errors_and_server_names_stay_query_parameters(client: ComfyClient) -> None:
    with pytest.raises(ComfyError, match="answered 404 for image 'nope.png'"):
        client.fetch(ImageRef("nope.png", "", "output"))
    with pytest.raises(ComfyError, match="answered 400"):
        client.fetch(ImageRef("../../etc/passwd", "", "output"))
    with pytest.raises(ComfyError, match="answered 403"):
        client.fetch(ImageRef("x.png", "../..", "output"))


def test_information_and_control(comfy: ComfyStandin, client: ComfyClient) -> None:
    assert client.system_stats()["devices"][0]["type"] == "cpu"
    assert "KSampler" in client.object_info()
    assert client.object_info("KSampler")["KSampler"]["input"]["required"]["cfg"][1]["max"] == 100
    comfy.behaviour.step_seconds = 0.05
    first, second = client.submit(txt2img(steps=40)), client.submit(txt2img(steps=40, cfg=6))
    time.sleep(0.05)
    assert (client.queue_position(first.prompt_id), client.queue_position(second.prompt_id)) \
        == (0, 1)
    client.interrupt()
    client.free()
    assert client.queue_position("unknown") is None


class _Garbage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>not comfy</html>")

    def log_message(self, *args: object) -> None:
        pass


def test_garbage_from_the_server() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ComfyClient(f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(ComfyProtocolError, match="no JSON: '<html>not comfy</html>'; is "
                                                     "this URL really ComfyUI"):
            client.history("x")
    finally:
        server.shutdown()


def test_renders_queued_at_once_are_collected_in_order_and_dropped_on_interrupt(
        comfy: ComfyStandin, client: ComfyClient) -> None:
    from imitatoes.clients.comfy import ComfyRenderer

    renderer = ComfyRenderer(client, timeout=20)
    tickets = [renderer.queue(txt2img(seed=s, steps=2)) for s in (1, 2, 3)]
    images = [renderer.collect(t, lambda v, m: None).image for t in tickets]
    assert len(set(images)) == 3  # three seeds, three pictures, each its own
    comfy.behaviour.step_seconds = 0.5  # now keep them busy, queue more, and stop
    tickets = [renderer.queue(txt2img(seed=s, steps=20)) for s in (4, 5, 6)]
    renderer.interrupt()
    queue = client.queue()
    ours = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
    assert not ours & set(tickets)  # none of ours is left queued or running


@pytest.mark.parametrize(("template", "judged"), [
    ("hiresfix_esrgan_workflow", "12"),  # the second pass's SaveImage, not the first pass's
    ("esrgan_example", "9"),  # the upscaled SaveImage, not the PreviewImage before it
    ("flux_canny_model_example", "9"),  # not the PreviewImage of the canny edge map
    ("controlnet_example", "9"),
    ("2_pass_pose_worship", "51"),
    ("area_composition_square_area_for_subject", "32"),
    ("image2image", "9"),
])
def test_the_judged_output_is_the_result_of_the_workflow(template: str, judged: str) -> None:
    from imitatoes.workflow.samplers import judged_output

    flow = json.loads((ROOT / "tests/fixtures/comfyui-ui" / f"{template}.api.json").read_text())
    assert judged_output(flow) == judged


def test_the_renderer_judges_the_saved_image_a_preview_came_before() -> None:
    """A real ComfyUI lists the PreviewImage first (recorded); the image judged and kept is
    the SaveImage's, after its ImageScale: 128 px, not the preview's 64."""
    from PIL import Image

    from imitatoes.clients.comfy import ComfyRenderer
    from imitatoes.standins.comfyui import Behaviour

    prompt = fixture("comfyui_live", "execution_order_preview_and_save.json")["request"][
        "body"]["prompt"]
    with ComfyStandin(Behaviour(step_seconds=0, checkpoints=[prompt["4"]["inputs"]["ckpt_name"]])
                      ) as server:
        client = ComfyClient(server.url)
        rendered = ComfyRenderer(client, timeout=20).render(prompt, lambda v, m: None)
        client.close()
    assert Image.open(io.BytesIO(rendered.image)).size == (128, 128)


def test_binary_preview_frames_on_the_websocket_are_passed_over() -> None:
    """ComfyUI started with --preview-method auto sends each step's preview as a binary
    frame; progress and the result arrive as ever."""
    from imitatoes.standins.comfyui import Behaviour

    with ComfyStandin(Behaviour(step_seconds=0.01, previews=True)) as server:
        frames = []
        peek = websocket.create_connection(f"{server.url.replace('http', 'ws')}/ws?clientId=p",
                                           timeout=10)
        client = ComfyClient(server.url)
        seen: list[Progress] = []
        sub = client.submit(txt2img(steps=4))
        result = client.wait(sub.prompt_id, timeout=10, on_progress=seen.append)
        [(_, data)] = client.images(result)
        client.close()
        requests.post(server.url + "/prompt", timeout=5, json={
            "prompt": txt2img(steps=2, seed=9), "client_id": "p"})
        while not (frames and isinstance(frames[-1], str) and '"node": null' in frames[-1]):
            frames.append(peek.recv())
        peek.close()
    assert [p.value for p in seen] == [1, 2, 3, 4] and data.startswith(b"\x89PNG")
    previews = [f for f in frames if isinstance(f, bytes)]
    assert len(previews) == 2 and previews[0][:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01"
