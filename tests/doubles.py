"""In-memory renderer and critic for engine tests: they record what they were asked and answer
from a queue (after simonw/llm's test doubles)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from imitatoes.clients.critic_image import Prepared
from imitatoes.loop.ports import Rendered
from imitatoes.loop.verdict import Attempt, Changes, Judgement, Pairwise, Verdict


def png(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (n * 20 % 256, 0, 0)).save(out, "PNG")
    return out.getvalue()


class FakeRenderer:
    def __init__(self, fail_at: int | None = None,
                 exc: type[BaseException] = RuntimeError) -> None:
        self.workflows: list[dict[str, Any]] = []
        self.interrupted = 0
        self.queued: list[dict[str, Any]] = []
        self.frees = 0
        self.uploads: list[tuple[str, bytes]] = []
        self.fail_at, self.exc = fail_at, exc

    def render(self, workflow: dict[str, Any],
               on_progress: Callable[[int, int], None]) -> Rendered:
        if self.fail_at is not None and len(self.workflows) + 1 == self.fail_at:
            raise self.exc("render failed")
        self.workflows.append(workflow)
        on_progress(1, 2)
        on_progress(2, 2)
        return Rendered(png(len(self.workflows)), f"prompt-{len(self.workflows)}", 0.01)

    def queue(self, workflow: dict[str, Any]) -> str:
        self.queued.append(workflow)
        return str(len(self.queued))

    def collect(self, ticket: str, on_progress: Callable[[int, int], None]) -> Rendered:
        return self.render(self.queued[int(ticket) - 1], on_progress)

    def interrupt(self) -> None:
        self.interrupted += 1

    def free(self) -> None:
        self.frees += 1

    def upload(self, image: bytes, name: str) -> str:
        self.uploads.append((name, image))
        return name

    def params(self, n: int) -> dict[str, Any]:
        """cfg, steps, seed and texts of the n-th render (1-based) of the standard workflow."""
        w = self.workflows[n - 1]
        return {"prompt": w["6"]["inputs"]["text"], "negative": w["7"]["inputs"]["text"],
                "cfg": w["3"]["inputs"]["cfg"], "steps": w["3"]["inputs"]["steps"],
                "seed": w["3"]["inputs"]["seed"]}


def verdict(score: float = 0.0, done: bool = False, reason: str = "not yet",
            **changes: Any) -> Verdict:
    return Verdict(done, Changes(**changes), reason, (), score, done)


class FakeCritic:
    def __init__(self, *answers: Verdict | None | BaseException) -> None:
        self.queue = list(answers)
        self.prompts: list[str] = []
        self.checklists: list[list[str]] = []
        self.pairs: list[str | None] = []
        self.compared: list[tuple[bytes, bytes]] = []
        self.unloads = 0

    def enqueue(self, *answers: Verdict | None | BaseException) -> None:
        self.queue += answers

    def judge(self, image: bytes, prompt: str, checklist: Sequence[str] = ()) -> Judgement:
        self.prompts.append(prompt)
        self.checklists.append(list(checklist))
        # By default a critic that always asks for one new thing, so the loop keeps moving.
        answer = self.queue.pop(0) if self.queue else verdict(
            prompt_append=f"detail {len(self.prompts)}")
        if isinstance(answer, BaseException):
            raise answer
        attempt = Attempt("{}", "", "" if answer else "there is no complete JSON object")
        return Judgement(answer, (attempt,), Prepared(image, "image/png", 8, 8, len(image)), 0.01)

    def compare(self, first: bytes, second: bytes, prompt: str) -> Pairwise:
        """Answers from `pairs` ("first"/"second"/None), "first" when it runs out."""
        self.compared.append((first, second))
        winner = self.pairs.pop(0) if self.pairs else "first"
        return Pairwise(winner, "because", (Attempt("{}"),), 0.01)

    def unload(self) -> None:
        self.unloads += 1
