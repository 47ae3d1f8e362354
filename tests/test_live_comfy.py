"""The client against a real ComfyUI: `IMITATOES_COMFY_URL=http://... pytest -m live`.
Only model-free workflows from the recordings are used, so any ComfyUI can run them."""

from __future__ import annotations

import pytest

from imitatoes.comfy import ComfyClient, ComfyRejected

from .conftest import LIVE_COMFY
from .standins import fixture

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not LIVE_COMFY, reason="IMITATOES_COMFY_URL is not set")]


@pytest.fixture
def client() -> ComfyClient:
    return ComfyClient(LIVE_COMFY or "", read_timeout=60)


def test_live_image_round_trip(client: ComfyClient) -> None:
    prompt = fixture("comfyui", "prompt_ok.json")["request"]["body"]["prompt"]
    prompt["1"]["inputs"]["color"] = 0x00FF00  # not cached from an earlier run
    sub = client.submit(prompt)
    result = client.wait(sub.prompt_id, timeout=120)
    [(_, data)] = client.images(result)
    assert data.startswith(b"\x89PNG")


def test_live_text_workflow(client: ComfyClient) -> None:
    prompt = fixture("comfyui", "prompt_text_ok.json")["request"]["body"]["prompt"]
    result = client.wait(client.submit(prompt).prompt_id, timeout=120)
    assert result.texts


def test_live_refusal_is_readable(client: ComfyClient) -> None:
    body = fixture("comfyui", "prompt_err_width_above_max.json")["request"]["body"]
    with pytest.raises(ComfyRejected, match="input width: 16385 is bigger than the maximum 16384"):
        client.submit(body["prompt"])


def test_live_custom_node_in_a_model_free_graph(client: ComfyClient) -> None:
    if not client.object_info("ImitatoesSelfImprovingPrompt"):
        pytest.skip("custom_nodes/imitatoes is not installed in this ComfyUI")
    critique = ('{"done": false, "changes": {"prompt_append": "golden hour, snow", '
                '"neg_append": ""}, "reason": "needs light"}')
    prompt = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a red fox, snow"}},
              "2": {"class_type": "ImitatoesSelfImprovingPrompt",
                    "inputs": {"prompt": ["1", 0], "critique": critique, "iteration": 0,
                               "max_iterations": 3}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    for _ in range(2):  # the second pass must run the node again, not serve it from cache
        result = client.wait(client.submit(prompt).prompt_id, timeout=120)
        assert result.texts == ("a red fox, snow, golden hour",)
        cached = result.entry["status"]["messages"][1][1]["nodes"]
        assert "2" not in cached
