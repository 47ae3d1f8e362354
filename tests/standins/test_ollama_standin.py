"""Conformance: the Ollama stand-in answers the fixtures' requests with their shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from imitatoes.standins.ollama import Behaviour, OllamaStandin
from tests.conftest import found
from tests.servers import FIXTURES, fixture, replay, same_shape, shape

UNSUPPORTED = {
    "10a_pull_stream.json", "10b_pull_not_found_stream.json",  # imitatoes never pulls
    "12a_chat_thinking_model_schema.json", "04h_chat_think_unsupported.json",  # no thinking
    "05b_chat_images_to_text_only_model_native_template.json",  # one text-only path is enough
    "05d_chat_image_exceeds_context.json",  # no context accounting
    "12c_chat_json_mode_whitespace_abort.json",  # covered by the client's parser tests
}
FILES = found(sorted(p.name for p in (FIXTURES / "ollama").glob("*.json")
                    if p.name not in UNSUPPORTED), "recorded Ollama exchanges")
MODELS = {"qwen2.5vl:7b": ["completion", "vision"], "llama3.2:3b": ["completion", "tools"],
          "gemma3:4b": ["completion", "vision"]}


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaStandin]:
    with OllamaStandin(Behaviour(models=dict(MODELS))) as server:
        yield server


def comparable(body: Any) -> Any:
    """Model answers are free text; show's license/model_info and timings vary by model."""
    if isinstance(body, dict):
        return {k: comparable(v) for k, v in body.items()
                if k not in ("model_info", "tensors", "capabilities", "parameters")}
    if isinstance(body, list):
        return [comparable(v) for v in body]
    return body


@pytest.mark.parametrize("name", FILES)
def test_replays_like_ollama(ollama: OllamaStandin, name: str) -> None:
    recorded = fixture("ollama", name)
    want = recorded["response"]
    resp = replay(ollama.url, recorded["request"])
    assert resp.status_code == want["status"]
    got_type = resp.headers["Content-Type"].split(";")[0]
    assert got_type == want["headers"]["Content-Type"].split(";")[0]
    if want.get("stream") == "ndjson":
        lines = [json.loads(line) for line in resp.text.splitlines()]
        assert same_shape(shape(lines[0]), shape(want["body"][0])) == []
        assert same_shape(shape(lines[-1]), shape(want["body"][-1])) == []
        return
    if want.get("stream") == "sse":
        events = [line[6:] for line in resp.text.split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert same_shape(shape(json.loads(events[0])), shape(want["body"][0])) == []
        assert same_shape(shape(json.loads(events[-2])), shape(want["body"][-2])) == []
        return
    if got_type == "application/json":
        got = resp.json()
        assert same_shape(shape(comparable(got)), shape(comparable(want["body"]))) == []
        if isinstance(want["body"], dict) and isinstance(want["body"].get("error"), str):
            assert got["error"] == want["body"]["error"]
    else:
        assert resp.text == want["body"]


def test_the_stand_in_never_calls_met_what_it_cannot_see() -> None:
    """It sees colours, shapes, noise and watermarks; "a red fox" it answers as not judged."""
    import io

    from PIL import Image

    from imitatoes.standins import eye

    grey = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey, "PNG")
    verdict = eye.judge(grey.getvalue(), "Checklist:\n1. A red fox sitting in snow\n"
                        "2. Soft morning light\n3. No watermark or text\n")
    assert [(i["met"], i["observation"]) for i in verdict["checklist"]] == [
        (False, eye.NOT_JUDGED), (False, eye.NOT_JUDGED), (True, "no watermark or text")]
    assert verdict["done"] is False


def test_the_red_fox_spec_is_not_done_on_the_stand_ins(tmp_path) -> None:
    """The shipped real-model spec once ended done at render 1 on a flat grey image."""
    from typer.testing import CliRunner

    from imitatoes.commands.cli import app
    from imitatoes.standins.comfyui import ComfyStandin
    from tests.conftest import ROOT

    with ComfyStandin() as comfy, OllamaStandin() as ollama:
        result = CliRunner().invoke(app, [
            "run", str(ROOT / "specs/red-fox.yaml"), "--comfy-url", comfy.url, "--ollama-url",
            ollama.url, "--set", "limits.max_renders=2", "--set", "critic.model=qwen2.5vl:7b",
            "--runs-dir", str(tmp_path), "--yes"])
    assert result.exit_code == 3, result.output  # the limits, not done
    assert "not judged: the stand-in sees only" in "".join(
        p.read_text() for p in tmp_path.rglob("loop_*.json"))


def _drawn(prompt: str) -> bytes:
    import io

    from imitatoes.standins import picture

    out = io.BytesIO()
    picture.paint(picture.scene_from(prompt, "watermark", 30, 7.0), 64, 64, 1).save(out, "PNG")
    return out.getvalue()


def _question(prompt: str, max_chars: int = 300) -> str:
    return (f"Goal: A red circle on blue.\nChecklist:\n1. A red circle\n2. The background is "
            f"blue\n\n- prompt: {prompt}\n- negative prompt: watermark\n\nWhat you may "
            f"change: the prompt at most {max_chars} characters")


def test_the_stand_in_takes_out_a_word_that_causes_the_fault() -> None:
    """A white background named first wins over a blue one added after it, as a real model's
    first words weigh most: the stand-in asks to take it out, and offers weighting the blue
    one instead; weighted, the blue one wins."""
    from imitatoes.standins import eye

    prompt = "a red circle, white background, blue background"
    verdict = eye.judge(_drawn(prompt), _question(prompt))
    assert verdict["changes"]["prompt_remove"] == "white background"
    assert verdict["changes"]["prompt_append"] == ""  # the blue one is there already
    assert verdict["alternatives"][0]["prompt_weight"] == {"term": "blue background",
                                                           "weight": 1.3}
    weighted = "a red circle, white background, (blue background:1.3)"
    assert eye.judge(_drawn(weighted), _question(weighted))["done"]


def test_the_stand_in_rewrites_a_prompt_with_no_room_left() -> None:
    from imitatoes.standins import eye

    prompt = "a circle, simple poster, flat colours, bold shape"
    verdict = eye.judge(_drawn(prompt), _question(prompt, max_chars=60))
    assert verdict["changes"]["prompt_rewrite"] == "red circle, blue background, simple poster"
