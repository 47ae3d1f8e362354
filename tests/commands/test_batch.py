"""Many specs over several stand-in backends on one machine."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.commands import batch
from imitatoes.commands.cli import app
from imitatoes.errors import UsageError
from imitatoes.spec import load as specs
from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from tests.conftest import ROOT

DEMO = ROOT / "imitatoes" / "data" / "demo.yaml"
runner = CliRunner()


def spec_files(tmp_path: Path, n: int) -> list[Path]:
    workflow = ROOT / "imitatoes" / "data" / "demo_workflow.json"
    (tmp_path / workflow.name).write_bytes(workflow.read_bytes())  # a spec reads its own files
    text = DEMO.read_text()
    paths = []
    for i in range(n):
        path = tmp_path / f"spec{i}.yaml"
        path.write_text(text.replace("name: demo-red-circle", f"name: demo-{i}"))
        paths.append(path)
    return paths


@contextlib.contextmanager
def farm(n: int, step_seconds: float = 0.01):
    from imitatoes.standins.ollama import OllamaStandin

    with contextlib.ExitStack() as stack:
        comfies = [stack.enter_context(ComfyStandin(Behaviour(step_seconds=step_seconds)))
                   for _ in range(n)]
        ollama = stack.enter_context(OllamaStandin())
        yield comfies, ollama


def test_pairing_backends() -> None:
    assert batch.pair(["http://a:1", "http://b:1"], ["http://o:2"]) == [
        batch.Backend("http://a:1", "http://o:2"), batch.Backend("http://b:1", "http://o:2")]
    assert batch.pair(["http://a:1"], ["http://o:2"])[0].name == "a:1"
    with pytest.raises(UsageError, match="2 --comfy URLs but 3 --ollama URLs"):
        batch.pair(["http://a", "http://b"], ["http://1", "http://2", "http://3"])
    with pytest.raises(UsageError):
        batch.pair([], [])


@pytest.mark.slow
def test_work_spreads_over_the_backends(tmp_path: Path) -> None:
    with farm(3) as (comfies, ollama):
        loaded = [specs.load(p) for p in spec_files(tmp_path, 6)]
        backends = [batch.Backend(c.url, ollama.url) for c in comfies]
        jobs = batch.Batch(loaded, backends, tmp_path / "runs").run()
        per_backend = [len(c.history) for c in comfies]
    assert [j.status for j in jobs] == ["done"] * 6
    assert all(n > 0 for n in per_backend), per_backend
    assert {j.backend for j in jobs} == {b.name for b in backends}
    assert batch.exit_code(jobs) == 0
    assert len({j.run_dir for j in jobs}) == 6
    for j in jobs:  # the same files as any run folder, whichever command made it
        assert {"report.html", "final.png", "state.json", "events.jsonl", "spec.yaml",
                "workflow.json"} <= {p.name for p in j.run_dir.iterdir()}
        assert j.best == 1.0


@pytest.mark.slow
def test_a_backend_dying_mid_batch_costs_no_run(tmp_path: Path) -> None:
    with farm(2, step_seconds=0.01) as (comfies, ollama):
        loaded = [specs.load(p) for p in spec_files(tmp_path, 3)]
        backends = [batch.Backend(c.url, ollama.url) for c in comfies]
        pool = batch.Batch(loaded, backends, tmp_path / "runs")
        victim = comfies[0]

        def kill_when_busy() -> None:  # stop the first backend once it has saved a render
            while not any(j.backend == backends[0].name and j.run_dir and
                          list(j.run_dir.glob("loop_*.png")) for j in pool.jobs):
                threading.Event().wait(0.01)
            victim.stop()

        threading.Thread(target=kill_when_busy, daemon=True).start()
        jobs = pool.run()
    assert [j.status for j in jobs] == ["done"] * 3, [j.error for j in jobs]
    assert pool.dead == {backends[0]}
    [moved] = [j for j in jobs if len(j.backends) > 1]
    assert moved.backends == [backends[0].name, backends[1].name]
    assert moved.error == ""  # it finished: the lost backend is history, not an error


def test_no_healthy_backend_fails_the_batch(tmp_path: Path) -> None:
    loaded = [specs.load(p) for p in spec_files(tmp_path, 2)]
    jobs = batch.Batch(loaded, [batch.Backend("http://127.0.0.1:9", "http://127.0.0.1:9")],
                       tmp_path / "runs").run()
    assert [j.status for j in jobs] == ["failed", "failed"]
    assert "no healthy backend" in jobs[0].error and batch.exit_code(jobs) == 1


@pytest.mark.slow
def test_batch_command(tmp_path: Path) -> None:
    with farm(2) as (comfies, ollama):
        args = ["batch", *map(str, spec_files(tmp_path, 3)), "--comfy", comfies[0].url,
                "--comfy", comfies[1].url, "--ollama", ollama.url, "--runs-dir",
                str(tmp_path / "runs")]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": done on") == 3
    assert "3 of 3 spec(s) done" in result.stdout
