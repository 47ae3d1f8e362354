"""The critic client against the Ollama stand-in, over real sockets."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Iterator

import pytest
from PIL import Image

from imitatoes.clients.critic import (
    CriticUnreachable,
    ModelBlind,
    ModelMissing,
    OllamaCritic,
    OpenAICritic,
    make_critic,
)
from imitatoes.loop import prompts as critic_prompt
from imitatoes.spec import load as spec
from imitatoes.standins import picture
from imitatoes.standins.ollama import OllamaStandin
from tests.conftest import ROOT

DEMO = spec.load(ROOT / "tests" / "specs" / "valid" / "minimal.yaml", env={})
PROMPT = """Checklist:
1. A red circle
2. The background is blue
3. No watermark or text
How it was made: cfg: 7, steps: 25, seed: 1"""


def render(prompt: str, negative: str = "", steps: int = 25, size: int = 256) -> bytes:
    img = picture.paint(picture.scene_from(prompt, negative, steps, 7.0), size, size, 1)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def ollama() -> Iterator[OllamaStandin]:
    with OllamaStandin() as server:
        yield server


def critic_spec(url: str, **changes: object) -> spec.CriticConfig:
    return dataclasses.replace(DEMO.critic, **{"url": url, "model": "qwen2.5vl:7b",
                                               "retries": 2, **changes})


def test_judges_a_render_with_a_valid_verdict(ollama: OllamaStandin) -> None:
    critic = OllamaCritic(critic_spec(ollama.url))
    j = critic.judge(render("a red circle, blue background", "watermark"), PROMPT)
    assert j.verdict is not None and j.verdict.done and j.verdict.score == 1.0
    assert len(j.attempts) == 1 and j.attempts[0].stats["eval_count"] > 0
    body = ollama.requests[-1]
    assert body["stream"] is False and body["format"]["required"] == ["done", "changes", "reason"]
    assert body["options"] == {"temperature": 0.1, "seed": 7, "num_ctx": 8192}
    assert body["keep_alive"] == "5m"
    image = body["messages"][1]["images"][0]
    assert Image.open(io.BytesIO(base64.b64decode(image, validate=True))).format == "JPEG"


def test_the_verdict_moves_toward_the_requirements(ollama: OllamaStandin) -> None:
    j = OllamaCritic(critic_spec(ollama.url)).judge(render("a circle"), PROMPT)
    assert j.verdict and not j.verdict.done
    assert [c.met for c in j.verdict.checklist] == [False, False, False]
    assert j.verdict.changes.prompt_append == "red circle"


def test_the_critic_prompt_reaches_the_stand_in(ollama: OllamaStandin) -> None:
    s = dataclasses.replace(DEMO, requirements=("A red circle", "No watermark"))
    text = critic_prompt.critic_prompt(s, s.start, 1, 1)
    j = OllamaCritic(critic_spec(ollama.url)).judge(render("a red circle"), text)
    assert [c.requirement for c in j.verdict.checklist] == ["A red circle", "No watermark"]


@pytest.mark.parametrize("knob", ["garbage", "truncate"])
def test_a_bad_answer_is_retried_with_the_error(ollama: OllamaStandin, knob: str) -> None:
    setattr(ollama.behaviour, knob, 1)
    j = OllamaCritic(critic_spec(ollama.url)).judge(render("a red circle"), PROMPT)
    assert j.verdict is not None and len(j.attempts) == 2
    assert j.attempts[0].error
    retry = ollama.requests[-1]["messages"]
    assert retry[-1]["role"] == "user" and "That answer was not usable" in retry[-1]["content"]
    assert retry[-2] == {"role": "assistant", "content": j.attempts[0].content}


def test_fences_are_repaired_without_a_retry(ollama: OllamaStandin) -> None:
    ollama.behaviour.fence = 1
    j = OllamaCritic(critic_spec(ollama.url)).judge(render("a red circle"), PROMPT)
    assert j.verdict is not None and len(j.attempts) == 1


def test_never_parses_is_a_recorded_outcome(ollama: OllamaStandin) -> None:
    ollama.behaviour.garbage = 5
    j = OllamaCritic(critic_spec(ollama.url, retries=2)).judge(render("x"), PROMPT)
    assert j.verdict is None and len(j.attempts) == 3
    assert "no complete JSON object" in j.error


def test_a_500_is_retried(ollama: OllamaStandin) -> None:
    ollama.behaviour.fail = 1
    j = OllamaCritic(critic_spec(ollama.url)).judge(render("x"), PROMPT)
    assert j.verdict is not None and "answered 500" in j.attempts[0].error


def test_old_server_gets_json_mode(ollama: OllamaStandin) -> None:
    ollama.behaviour.structured_outputs = False
    critic = OllamaCritic(critic_spec(ollama.url))
    assert critic.judge(render("x"), PROMPT).verdict is not None
    assert ollama.requests[-1]["format"] == "json"


def test_checks_before_any_render(ollama: OllamaStandin) -> None:
    info = OllamaCritic(critic_spec(ollama.url)).check()
    assert info["version"] == "0.33.0" and "vision" in info["capabilities"]
    with pytest.raises(ModelMissing, match="run: ollama pull moondream"):
        OllamaCritic(critic_spec(ollama.url, model="moondream")).check()
    with pytest.raises(ModelBlind, match="cannot see images .*choose a vision model"):
        OllamaCritic(critic_spec(ollama.url, model="llama3.2:3b")).check()
    assert OllamaCritic(critic_spec(ollama.url, model="llava")).check()  # llava == llava:latest


def test_missing_and_blind_models_while_judging(ollama: OllamaStandin) -> None:
    with pytest.raises(ModelMissing):
        OllamaCritic(critic_spec(ollama.url, model="nope")).judge(render("x"), PROMPT)
    with pytest.raises(ModelBlind, match="Multimodal data provided"):
        OllamaCritic(critic_spec(ollama.url, model="llama3.2:3b")).judge(render("x"), PROMPT)


def test_server_down() -> None:
    critic = OllamaCritic(critic_spec("http://127.0.0.1:9"))
    with pytest.raises(CriticUnreachable, match=r"not reachable at http://127.0.0.1:9 .*ollama "
                                                r"serve.*IMITATOES_OLLAMA_URL"):
        critic.check()


def test_slow_first_load_hits_the_timeout_not_a_hang(ollama: OllamaStandin) -> None:
    ollama.behaviour.load_seconds = 2.0
    critic = OllamaCritic(critic_spec(ollama.url, timeout=0.3))
    with pytest.raises(CriticUnreachable, match="did not answer /api/chat within 0.3 s"):
        critic.judge(render("x"), PROMPT)


def test_unload_frees_the_model(ollama: OllamaStandin) -> None:
    critic = OllamaCritic(critic_spec(ollama.url))
    critic.judge(render("x"), PROMPT)
    assert not critic.wait_unloaded(timeout=0.1)
    critic.unload()  # returns once /api/ps no longer lists the model
    assert ollama.requests[-1] == {"model": "qwen2.5vl:7b", "messages": [], "keep_alive": 0}
    assert critic.wait_unloaded(timeout=0)


def test_load_time_is_reported(ollama: OllamaStandin) -> None:
    ollama.behaviour.load_seconds = 0.2
    critic = OllamaCritic(critic_spec(ollama.url))
    first = critic.judge(render("x"), PROMPT).attempts[0].stats["load_duration"]
    again = critic.judge(render("x"), PROMPT).attempts[0].stats["load_duration"]
    assert (first, again) == (200_000_000, 0)


def test_wild_values_still_parse_for_the_patcher_to_clamp(ollama: OllamaStandin) -> None:
    ollama.behaviour.wild = 1
    v = OllamaCritic(critic_spec(ollama.url)).judge(render("x"), PROMPT).verdict
    assert v is not None and v.changes.cfg == 1e9 and v.changes.steps == -5


def test_openai_compatible_provider(ollama: OllamaStandin) -> None:
    critic = make_critic(critic_spec(ollama.url, provider="openai"))
    assert isinstance(critic, OpenAICritic)
    assert critic.check() == {"model": "qwen2.5vl:7b"}
    j = critic.judge(render("a red circle, blue background", "text"), PROMPT)
    assert j.verdict is not None and j.verdict.done
    with pytest.raises(ModelMissing):
        make_critic(critic_spec(ollama.url, provider="openai", model="nope")).check()


def test_a_comfyui_stand_in_render_is_judged_end_to_end(ollama: OllamaStandin) -> None:
    from imitatoes.clients.comfy import ComfyClient
    from imitatoes.standins.comfyui import ComfyStandin
    from tests.clients.test_comfy_client import txt2img

    with ComfyStandin() as comfy:
        client = ComfyClient(comfy.url)
        flow = txt2img("a red circle, blue background", steps=25)
        result = client.wait(client.submit(flow).prompt_id, 10)
        [(_, png)] = client.images(result)
        client.close()
    j = OllamaCritic(critic_spec(ollama.url)).judge(png, PROMPT)
    assert j.verdict is not None
    # the stand-in workflow's negative prompt names the watermark, so everything holds
    assert [c.met for c in j.verdict.checklist] == [True, True, True]


def test_stand_in_asks_for_a_new_seed_when_the_prompt_already_asks(ollama: OllamaStandin) -> None:
    text = PROMPT.replace("How it was made:", "- prompt: a circle, red circle\nHow it was made:")
    j = OllamaCritic(critic_spec(ollama.url)).judge(render("a green circle"), text)
    assert (j.verdict.changes.prompt_append, j.verdict.changes.seed) == ("", "new")
