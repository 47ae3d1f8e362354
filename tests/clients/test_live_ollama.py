"""The critic against a real Ollama: IMITATOES_OLLAMA_URL=... IMITATOES_OLLAMA_MODEL=qwen2.5vl:7b
pytest -m live. The answer's content is the model's; the test checks the contract."""

from __future__ import annotations

import dataclasses

import pytest

from imitatoes.clients.critic import OllamaCritic
from imitatoes.spec import load as spec
from tests.clients.test_critic import PROMPT, render
from tests.conftest import LIVE_MODEL, LIVE_OLLAMA, ROOT

pytestmark = [pytest.mark.live, pytest.mark.skipif(
    not (LIVE_OLLAMA and LIVE_MODEL),
    reason="IMITATOES_OLLAMA_URL and IMITATOES_OLLAMA_MODEL are not set")]


def test_live_verdict() -> None:
    base = spec.load(ROOT / "tests" / "specs" / "valid" / "minimal.yaml", env={}).critic
    critic = OllamaCritic(dataclasses.replace(base, url=LIVE_OLLAMA or "", model=LIVE_MODEL or "",
                                              timeout=600))
    critic.check()
    judgement = critic.judge(render("a red circle, blue background"), PROMPT)
    assert judgement.verdict is not None, judgement.error
