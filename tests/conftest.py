from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin

ROOT = Path(__file__).resolve().parent.parent
# Read before the autouse fixture below hides them from the code under test.
LIVE_COMFY = os.environ.get("IMITATOES_COMFY_URL")
LIVE_OLLAMA = os.environ.get("IMITATOES_OLLAMA_URL")
LIVE_MODEL = os.environ.get("IMITATOES_OLLAMA_MODEL")


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the user's servers, run folders or memory unless a test asks."""
    for name in ("IMITATOES_COMFY_URL", "IMITATOES_OLLAMA_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IMITATOES_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # memory across runs


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture
def servers() -> Iterator[tuple[ComfyStandin, OllamaStandin]]:
    """Both stand-ins on free loopback ports."""
    with ComfyStandin() as comfy, OllamaStandin() as ollama:
        yield comfy, ollama


def found(items: list, what: str) -> list:
    """A glob's results, failing loudly when it finds nothing (a test parametrized over an
    empty list would pass with nothing checked)."""
    if not items:
        raise AssertionError(f"no {what} found: the tests that read them would check nothing")
    return items
