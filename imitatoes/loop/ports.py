"""What the engine needs from the outside world: something that renders a workflow and
something that judges an image. The ComfyUI and Ollama clients implement these, and so do the
tests' in-memory doubles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imitatoes.errors import ImitatoesError
from imitatoes.loop.verdict import Judgement, Pairwise
from imitatoes.spec.model import Params


@dataclass(frozen=True)
class Rendered:
    image: bytes
    prompt_id: str
    seconds: float


@dataclass(frozen=True)
class Saved:
    """A render saved in the run folder, with the params it was made with."""

    image: bytes
    params: Params


Reuse = Callable[[str], "Saved | None"]  # the render saved under a key, if there is one


class RenderRejected(ImitatoesError):
    """The renderer's answer is not an image to keep; `data` is what it answered, so the run
    folder can keep it aside for a person to look at."""

    def __init__(self, message: str, data: bytes) -> None:
        self.data = data
        super().__init__(message)


class Renderer(Protocol):
    def render(self, workflow: dict[str, Any],
               on_progress: Callable[[int, int], None]) -> Rendered: ...

    def queue(self, workflow: dict[str, Any]) -> str:
        """Submit without waiting (search.candidates queues them all at once)."""

    def collect(self, ticket: str, on_progress: Callable[[int, int], None]) -> Rendered:
        """The render of a queued workflow."""

    def interrupt(self) -> None: ...

    def free(self) -> None:
        """Unload the models so the critic has the GPU (comfyui.free_before_critique)."""

    def upload(self, image: bytes, name: str) -> str:
        """Put an image where the workflow's LoadImage finds it; the name to give it."""


class Critic(Protocol):
    def judge(self, image: bytes, prompt: str, checklist: Sequence[str] = ()) -> Judgement:
        """A verdict on the image; `checklist` is what it must judge, item by item."""

    def compare(self, first: bytes, second: bytes, prompt: str) -> Pairwise:
        """Which of two images meets the checklist better (search.head_to_head)."""

    def unload(self) -> None: ...
