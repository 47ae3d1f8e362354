"""Celery end to end against the local Redis: two worker processes, stand-ins, and a worker
killed mid-run whose run is delivered again and resumed from its saved state."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imitatoes.commands import batch
from imitatoes.spec import load as specs
from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from imitatoes.standins.ollama import OllamaStandin
from tests.commands.test_batch import spec_files
from tests.servers import DEMO

REDIS = os.environ.get("IMITATOES_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
CLAIM = "imitatoes-tests:claimed-by"  # set in a database while a test run uses it
QUEUE = f"imitatoes-test-{uuid.uuid4().hex[:12]}"  # this test run's own queue


def redis_up() -> bool:
    try:
        import redis
        redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


pytestmark = [pytest.mark.redis, pytest.mark.slow,
              pytest.mark.skipif(not redis_up(), reason=f"no Redis at {REDIS}")]


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """A Redis database of this test run's own: an empty one (never a user's, never one that
    another checkout's test run holds), emptied again afterwards. Database 0 is left alone."""
    import redis

    me = uuid.uuid4().hex
    for db in range(15, 0, -1):
        url = f"{REDIS}/{db}"
        r = redis.Redis.from_url(url)
        if r.dbsize() == 0 and r.set(CLAIM, me, nx=True, ex=900):
            break
    else:
        pytest.skip(f"no empty Redis database at {REDIS} for the Celery tests")
    try:
        yield url
    finally:
        if r.get(CLAIM) == me.encode():
            r.flushdb()


@contextlib.contextmanager
def worker(broker: str, name: str, comfy: str, ollama: str, runs: Path,
           visibility: float = 60) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "imitatoes", "worker", "--broker", broker, "--comfy-url", comfy,
         "--ollama-url", ollama, "--runs-dir", str(runs), "--name", name,
         "--visibility-timeout", str(visibility), "--lease-seconds", "2", "--queue", QUEUE],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def ready(broker: str, workers: dict[str, subprocess.Popen], timeout: float = 60) -> None:
    """Until every worker answers a ping: one still starting when the jobs go out (a loaded
    machine takes seconds to import Celery) would leave them all to the other."""
    import socket

    from imitatoes.commands import cluster
    app = cluster.make_app(broker, queue=QUEUE)
    waiting = {f"{name}@{socket.gethostname()}": proc for name, proc in workers.items()}
    deadline = time.monotonic() + timeout
    while waiting:
        for reply in app.control.ping(destination=list(waiting), timeout=0.5):
            for name in reply:
                waiting.pop(name, None)
        for name, proc in waiting.items():
            assert proc.poll() is None, f"worker {name} ended ({proc.returncode}) early"
        assert time.monotonic() < deadline, f"{', '.join(waiting)} did not start in time"


def follow(broker: str, jobs: list[batch.Job], on_change=lambda: None) -> None:
    from imitatoes.commands import cluster
    cluster.follow(cluster.make_app(broker, queue=QUEUE), jobs, "t", on_change, poll=0.1,
                   timeout=120)  # a worker that never answers fails the test, not hangs it


def test_celery_runs_specs_on_two_workers(tmp_path: Path, broker: str) -> None:
    runs = tmp_path / "runs"
    with ComfyStandin(Behaviour(step_seconds=0.01)) as c1, \
            ComfyStandin(Behaviour(step_seconds=0.01)) as c2, OllamaStandin() as ollama, \
            worker(broker, "w1", c1.url, ollama.url, runs) as w1, \
            worker(broker, "w2", c2.url, ollama.url, runs) as w2:
        ready(broker, {"w1": w1, "w2": w2})
        jobs = [batch.Job(specs.load(p)) for p in spec_files(tmp_path, 4)]
        follow(broker, jobs)
        assert c1.history and c2.history  # both hosts rendered
    assert [j.status for j in jobs] == ["done"] * 4, [j.error for j in jobs]
    assert {j.backend for j in jobs} == {"w1", "w2"}
    for j in jobs:  # each run folder is complete, report included, wherever it ran
        assert (j.run_dir / "final.png").is_file() and (j.run_dir / "report.html").is_file()
    assert batch.exit_code(jobs) == 0


def test_a_killed_worker_s_run_is_resumed_elsewhere(tmp_path: Path, broker: str) -> None:
    runs = tmp_path / "runs"
    with ComfyStandin(Behaviour(step_seconds=0.05)) as c1, \
            ComfyStandin(Behaviour(step_seconds=0.05)) as c2, OllamaStandin() as ollama, \
            worker(broker, "w1", c1.url, ollama.url, runs, visibility=4) as w1, \
            worker(broker, "w2", c2.url, ollama.url, runs, visibility=4) as w2:
        ready(broker, {"w1": w1, "w2": w2})
        jobs = [batch.Job(specs.load(p)) for p in spec_files(tmp_path, 2)]
        killed: dict[str, object] = {}

        def kill_w1_mid_run() -> None:
            if killed:
                return
            for j in jobs:
                saved = sorted(runs.glob(f"*_{j.spec.name}/loop_*.png"))
                if j.backend == "w1" and j.status == "running" and saved:
                    killed["run"] = saved[0].parent
                    killed["mtimes"] = {p.name: p.stat().st_mtime_ns for p in saved}
                    os.killpg(w1.pid, signal.SIGKILL)

        follow(broker, jobs, kill_w1_mid_run)
    assert killed, "worker w1 never ran anything"
    assert [j.status for j in jobs] == ["done"] * 2, [j.error for j in jobs]
    run_dir = killed["run"]
    resumed = next(j for j in jobs if j.run_dir == run_dir)
    assert resumed.backend == "w2"
    for name, mtime in killed["mtimes"].items():  # resumed from its saved state, not restarted
        assert (run_dir / name).stat().st_mtime_ns == mtime


def test_no_worker_on_the_queue_ends_in_time(tmp_path: Path, broker: str) -> None:
    from imitatoes.commands import cluster

    jobs = [batch.Job(specs.load(p)) for p in spec_files(tmp_path, 1)]
    started = time.monotonic()
    cluster.follow(cluster.make_app(broker, queue=QUEUE + "-nobody"), jobs, "t", lambda: None,
                   poll=0.05, timeout=0.5)
    assert time.monotonic() - started < 5
    assert jobs[0].status == "failed" and "no result from the workers within 0.5 s" in \
        jobs[0].error


def test_a_worker_exception_without_a_message_still_says_what_it_was() -> None:
    from types import SimpleNamespace

    from imitatoes.commands.cluster import _update

    job = SimpleNamespace(status="running", error="")
    _update(job, SimpleNamespace(state="FAILURE", info=AssertionError()))
    assert (job.status, job.error) == ("failed", "AssertionError()")
    _update(job, SimpleNamespace(state="FAILURE", info=KeyError("run_dir")))
    assert job.error == "'run_dir'"


def test_a_run_that_ends_between_two_looks_is_followed_to_its_result() -> None:
    """Every look at a Celery result asks the broker again: a task that ends between reading
    its progress and asking whether it is ready must still have its result applied."""
    from types import SimpleNamespace

    from imitatoes.commands import cluster

    class Ending:  # PROGRESS at the first look, SUCCESS from the second on
        def __init__(self) -> None:
            self.looks = 0

        @property
        def state(self) -> str:
            self.looks += 1
            return "PROGRESS" if self.looks == 1 else "SUCCESS"

        @property
        def info(self) -> dict:
            return {"worker": "w1", "loop": 1, "iteration": 1} if self.looks == 1 else \
                {"status": "done", "worker": "w1", "best": 1.0, "run_dir": "/runs/x"}

        def ready(self) -> bool:
            return self.state == "SUCCESS"

    result = Ending()
    app = SimpleNamespace(conf=SimpleNamespace(task_default_queue="q"),
                          signature=lambda *a, **k: SimpleNamespace(apply_async=lambda **k: result))
    jobs = [batch.Job(specs.load(DEMO))]
    cluster.follow(app, jobs, "t", lambda: None, poll=0.01, timeout=10)
    assert (jobs[0].status, jobs[0].best, str(jobs[0].run_dir)) == ("done", 1.0, "/runs/x")
