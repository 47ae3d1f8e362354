"""The distributed mode on Celery (Redis as broker and result backend).

Each GPU host runs `imitatoes worker` with its own ComfyUI and critic: one run at a time,
acknowledged late, so a run whose worker dies is delivered again and resumed from its saved
state in the shared runs folder. A lease in Redis (refreshed while a run is alive) keeps a
redelivered message from running a spec twice at once."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from imitatoes.commands.batch import BACKEND_FAILURES, Backend, Job
from imitatoes.commands.lifecycle import Run
from imitatoes.errors import ImitatoesError, UsageError
from imitatoes.loop.events import Applied, Event, IterationStarted, Listener
from imitatoes.loop.state import RunState
from imitatoes.runs import folder as runfolder
from imitatoes.spec import load as specs

QUEUE = "imitatoes"
LEASE_SECONDS = 10.0

try:
    import redis
    from celery import Celery
except ImportError:  # pragma: no cover - the error below says what to install
    Celery = None  # type: ignore[assignment,misc]


def make_app(broker: str, visibility_timeout: float = 3600.0, queue: str = QUEUE) -> Any:
    if Celery is None:
        raise UsageError("the distributed mode needs Celery and redis: "
                         "pip install 'imitatoes[cluster]'")
    app = Celery("imitatoes", broker=broker, backend=broker)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_track_started=True, task_default_queue=queue, worker_concurrency=1,
        broker_connection_retry_on_startup=True, result_extended=True,
        # A message not acknowledged in this time is delivered again (the run resumes). kombu
        # looks for such messages only every interval x throttle seconds (100 s by default).
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": max(1.0, min(10.0, visibility_timeout / 4)),
            "unacked_restore_throttle": 1},
        result_expires=7 * 24 * 3600, worker_hijack_root_logger=False)
    app.task(bind=True, name="imitatoes.run_spec", max_retries=None)(run_spec)
    return app


class Lease:
    """Who runs a spec right now: a Redis lock refreshed by a heartbeat while the run lives."""

    def __init__(self, url: str, run_id: str, seconds: float = LEASE_SECONDS) -> None:
        self.lock = redis.Redis.from_url(url).lock(f"imitatoes:lease:{run_id}",
                                                  timeout=seconds, thread_local=False)
        self.seconds = seconds
        self._stop = threading.Event()

    def acquire(self) -> bool:
        if not self.lock.acquire(blocking=False):
            return False
        threading.Thread(target=self._beat, daemon=True, name="lease").start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            self.lock.reacquire()

    def release(self) -> None:
        self._stop.set()
        # expired meanwhile: someone else may hold it now, which is fine
        with contextlib.suppress(redis.exceptions.LockError):
            self.lock.release()


def settings() -> dict[str, str]:
    """The worker's own backend and folder, from the environment `imitatoes worker` sets."""
    return {"comfy": os.environ["IMITATOES_WORKER_COMFY_URL"],
            "ollama": os.environ.get("IMITATOES_WORKER_OLLAMA_URL", ""),
            "runs": os.environ["IMITATOES_WORKER_RUNS"],
            "name": os.environ.get("IMITATOES_WORKER_NAME", socket.gethostname()),
            "lease": os.environ.get("IMITATOES_WORKER_LEASE", str(LEASE_SECONDS))}


def run_spec(task: Any, run_id: str, spec_data: dict[str, Any],
             workflow: dict[str, Any]) -> dict[str, Any]:
    """One whole run on this worker's backend, or its continuation after a lost worker."""
    cfg = settings()
    seconds = float(cfg["lease"])
    lease = Lease(task.app.conf.broker_url, run_id, seconds)
    if not lease.acquire():  # still alive elsewhere: look again later
        raise task.retry(countdown=seconds / 2)
    try:
        run = Run.adopt(Path(cfg["runs"]) / run_id, spec_data, workflow)
        if run.state and run.state.status in ("done", "limits"):  # finished before a redelivery
            return _result(run_id, run.dir, run.state, cfg["name"])
        run.use_servers(cfg["comfy"], cfg["ollama"] or run.spec.critic.url,
                        f"worker {cfg['name']}")
        state = run.execute([_progress(task, run_id, cfg["name"])]).state
        return _result(run_id, run.dir, state, cfg["name"])
    except BACKEND_FAILURES as exc:  # this host's ComfyUI or critic: let another host try
        if task.request.retries < 3:
            raise task.retry(exc=exc, countdown=2) from None
        return {"run_id": run_id, "status": "failed", "error": str(exc), "worker": cfg["name"]}
    except ImitatoesError as exc:
        return {"run_id": run_id, "status": "failed", "error": str(exc), "worker": cfg["name"]}
    finally:
        lease.release()


def _progress(task: Any, run_id: str, worker: str) -> Listener:
    """Each iteration's start and verdict, as Celery task state for `imitatoes batch`."""
    best: list[float | None] = [None]

    def listener(event: Event) -> None:
        if isinstance(event, Applied) and event.state.best:
            best[0] = event.state.best.score
        if isinstance(event, IterationStarted | Applied):
            task.update_state(state="PROGRESS", meta={
                "run_id": run_id, "worker": worker, "loop": event.loop,
                "iteration": event.iteration, "best": best[0], "time": time.time()})
    return listener


def _result(run_id: str, run_dir: Path, state: RunState, worker: str) -> dict[str, Any]:
    return {"run_id": run_id, "status": state.status, "renders": state.renders,
            "best": state.best.score if state.best else None, "run_dir": str(run_dir),
            "worker": worker}


def submit(app: Any, spec: specs.Spec, run_id: str) -> Any:
    return app.signature("imitatoes.run_spec", args=(
        run_id, runfolder.snapshot(spec), dict(spec.workflow))).apply_async(
        queue=app.conf.task_default_queue)


def follow(app: Any, jobs: list[Job], stamp: str, on_change: Any, poll: float = 0.5,
           timeout: float | None = None) -> None:
    """Submit every job's spec and keep the rows current until all have a result, or until
    `timeout` seconds have passed (the runs left then are reported failed, not waited on)."""
    results = [submit(app, job.spec, f"{stamp}_{i:02d}_{job.spec.name}")
               for i, job in enumerate(jobs)]
    pending = dict(enumerate(results))
    started = time.monotonic()
    for job in jobs:
        job.started = started
    while pending:
        if timeout is not None and time.monotonic() - started > timeout:
            for i in pending:
                jobs[i].status = "failed"
                jobs[i].error = (f"no result from the workers within {timeout:g} s; is an "
                                 "`imitatoes worker` serving this broker and queue?")
            on_change()
            return
        for i, result in list(pending.items()):
            if _update(jobs[i], result) in READY:
                jobs[i].finished = time.monotonic()
                pending.pop(i)
        on_change()
        if pending:
            time.sleep(poll)


READY = ("SUCCESS", "FAILURE", "REVOKED")  # Celery's final states


def _update(job: Any, result: Any) -> str:
    """The job as its task stands; returns the state applied. Each look at a result asks
    the broker again: the state is read once, so a task that ends between two looks is never
    taken as ended without its result being applied."""
    state = result.state
    info = result.info if isinstance(result.info, dict) else {}
    if state == "PROGRESS":
        job.status, job.backend = "running", info.get("worker", "")
        job.loop, job.iteration, job.best = info.get("loop", 0), info.get("iteration", 0), \
            info.get("best")
    elif state == "SUCCESS":
        job.status = info.get("status", "failed")
        job.backend = info.get("worker", job.backend)
        job.best = info.get("best", job.best)
        job.error = info.get("error", "")
        job.run_dir = Path(info["run_dir"]) if info.get("run_dir") else job.run_dir
    elif state in ("FAILURE", "REVOKED"):
        # a worker's own bug (an exception with no message, say) still says what it was
        job.status, job.error = "failed", str(result.info) or repr(result.info)
    elif state in ("STARTED", "RETRY"):
        job.status = "running" if state == "STARTED" else "queued"
    return state


class Remote:
    """`imitatoes batch --broker`: the specs submitted to the workers, their rows followed."""

    def __init__(self, broker: str, loaded: list[specs.Spec], queue: str = QUEUE,
                 timeout: float | None = None) -> None:
        self.app = make_app(broker, queue=queue)
        self.timeout = timeout
        self.jobs = [Job(s) for s in loaded]
        self.dead: set[Backend] = set()  # workers are Celery's to watch, not ours

    def run(self, on_change: Any) -> None:
        follow(self.app, self.jobs, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), on_change,
               timeout=self.timeout)
