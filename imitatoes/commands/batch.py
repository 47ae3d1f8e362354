"""Many specs over many backends on one machine: each run leased to one backend (a ComfyUI and
its critic) for its whole length, so models stay warm; a backend that fails its health check
is no longer leased, and its run moves to another backend, resuming from its folder."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imitatoes.clients.comfy import ComfyClient, ComfyError, api_key
from imitatoes.clients.critic import CriticUnreachable
from imitatoes.commands.lifecycle import Run
from imitatoes.errors import ImitatoesError, UsageError
from imitatoes.loop.events import Applied, Event, IterationStarted
from imitatoes.loop.state import RunState
from imitatoes.spec.model import ComfyConfig, Spec

BACKEND_FAILURES = (ComfyError, CriticUnreachable)
MAX_ATTEMPTS = 3  # a run that has lost this many backends is reported as failed


@dataclass(frozen=True)
class Backend:
    comfy: str
    ollama: str

    @property
    def name(self) -> str:
        return self.comfy.split("://", 1)[-1]


def pair(comfy: Sequence[str], ollama: Sequence[str]) -> list[Backend]:
    """One critic for all, or one per ComfyUI, in order."""
    if not comfy:
        raise UsageError("give at least one --comfy URL")
    if len(ollama) > 1 and len(ollama) != len(comfy):
        raise UsageError(f"{len(comfy)} --comfy URLs but {len(ollama)} --ollama URLs: give one "
                         "critic for all, or one per ComfyUI in the same order")
    critics = list(ollama) * len(comfy) if len(ollama) == 1 else list(ollama)
    return [Backend(c.rstrip("/"), (o or "").rstrip("/")) for c, o in
            zip(comfy, critics or [""] * len(comfy), strict=True)]


def healthy(backend: Backend, timeout: float = 3.0, config: ComfyConfig | None = None) -> bool:
    """ComfyUI answers /system_stats and /queue (the critic is checked when a run starts);
    with the specs' comfyui settings, with their API key."""
    key = api_key(config) if config is not None else None
    client = ComfyClient(backend.comfy, connect_timeout=timeout, read_timeout=timeout,
                         use_websocket=False, api_key=key)
    try:
        client.system_stats()
        client.queue()
        return True
    except ComfyError:
        return False
    finally:
        client.close()


def on_backend(spec: Spec, backend: Backend) -> Spec:
    critic = dataclasses.replace(spec.critic, url=backend.ollama) if backend.ollama \
        else spec.critic
    return dataclasses.replace(spec, comfyui=dataclasses.replace(spec.comfyui,
                                                                 url=backend.comfy),
                               critic=critic)


@dataclass
class Job:
    """One spec's run, as the batch table shows it."""

    spec: Spec
    status: str = "queued"  # queued running done limits failed
    backend: str = ""
    run_dir: Path | None = None
    loop: int = 0
    iteration: int = 0
    best: float | None = None
    started: float | None = None
    finished: float | None = None
    error: str = ""
    attempts: int = 0
    backends: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def follow(self, event: Event) -> None:
        """An engine listener: keep the row current."""
        if isinstance(event, IterationStarted | Applied):
            self.loop, self.iteration = event.loop, event.iteration
        if isinstance(event, Applied) and event.state.best:
            self.best = event.state.best.score


class Batch:
    def __init__(self, specs: Sequence[Spec], backends: Sequence[Backend],
                 runs_root: Path | None = None, on_change: Callable[[], None] = lambda: None,
                 health: Callable[[Backend], bool] | None = None) -> None:
        self.jobs = [Job(s) for s in specs]
        self.backends = list(backends)
        # runs a backend takes at once: what the specs' comfyui.parallel allows (all of them)
        self.slots = min((s.comfyui.parallel for s in specs), default=1)
        config = specs[0].comfyui if specs else None
        self.dead: set[Backend] = set()
        self.runs_root = runs_root
        self.on_change = on_change
        self.health = health or (lambda b: healthy(b, config=config))
        self._todo: deque[Job] = deque()
        self._lock = threading.Condition()

    def run(self, on_change: Callable[[], None] | None = None) -> list[Job]:
        if on_change is not None:
            self.on_change = on_change
        self._todo.extend(self.jobs)
        workers = [threading.Thread(target=self._serve, args=(b,), daemon=True,
                                    name=f"batch-{b.name}-{slot}")
                   for b in self.backends for slot in range(self.slots)]
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers) and not self._all_settled():
            time.sleep(0.05)
        for job in self.jobs:
            if job.status == "queued":
                job.status, job.error = "failed", "no healthy backend was left to run it"
        self.on_change()
        return self.jobs

    def _all_settled(self) -> bool:
        return all(j.status in ("done", "limits", "failed") for j in self.jobs)

    def _serve(self, backend: Backend) -> None:
        """One backend's lease loop: one run at a time, while the backend stays healthy."""
        while not self._all_settled():
            if backend in self.dead or not self.health(backend):
                with self._lock:
                    self.dead.add(backend)
                self.on_change()
                return
            with self._lock:
                if not self._todo:
                    self._lock.wait(0.1)
                    continue
                job = self._todo.popleft()
            self._run(job, backend)
            self.on_change()

    def _run(self, job: Job, backend: Backend) -> None:
        job.status, job.backend, job.attempts = "running", backend.name, job.attempts + 1
        job.backends.append(backend.name)
        job.started = job.started or time.monotonic()
        self.on_change()
        try:
            state = self._drive(job, backend)
        except BACKEND_FAILURES as exc:
            if not self.health(backend) and job.attempts < MAX_ATTEMPTS:
                job.status, job.error = "queued", f"{backend.name} failed: {exc}"
                with self._lock:
                    self.dead.add(backend)
                    self._todo.appendleft(job)  # first in line: another backend resumes it
                    self._lock.notify()
                return
            job.status, job.error = "failed", str(exc)
        except ImitatoesError as exc:
            job.status, job.error = "failed", str(exc)
        else:
            job.status, job.error = state.status, ""
        job.finished = time.monotonic()

    def _drive(self, job: Job, backend: Backend) -> RunState:
        if job.run_dir is None:
            run = Run.begin(on_backend(job.spec, backend), self.runs_root)
            job.run_dir = run.dir
        else:  # moved from a lost backend: resume from its folder
            run = Run.reopen(job.run_dir, env={})
            run.use_servers(backend.comfy, backend.ollama or run.spec.critic.url,
                            f"backend {backend.name}")
        return run.execute([job.follow]).state


def exit_code(jobs: Sequence[Job]) -> int:
    """0 when every spec reached done, 3 when some stopped at their limits, 1 on failures."""
    if any(j.status == "failed" for j in jobs):
        return 1
    return 0 if all(j.status == "done" for j in jobs) else 3


def summary(jobs: Sequence[Job], dead: Iterable[Backend] = ()) -> str:
    done = sum(j.status == "done" for j in jobs)
    lost = ", ".join(b.name for b in dead)
    return f"{done} of {len(jobs)} spec(s) done" + (f"; backends lost: {lost}" if lost else "")
