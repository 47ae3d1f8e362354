"""Reproducible runs: what made each image is recorded, `replay` renders one again and says
what changed, `diff` puts two runs side by side."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.runs import provenance
from tests.servers import DEMO, urls

runner = CliRunner()


def demo_run(servers, tmp_path: Path, *extra: str) -> Path:
    before = set((tmp_path / "runs").glob("*")) if (tmp_path / "runs").is_dir() else set()
    result = runner.invoke(app, ["run", DEMO, *urls(servers), *extra])
    assert result.exit_code == 0, result.output
    [run_dir] = set((tmp_path / "runs").glob("*")) - before
    return run_dir


def listing(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*")
            if p.is_file() and p.parts[len(run_dir.parts)] != "replays"}


def test_a_run_records_what_made_its_images(servers, tmp_path: Path) -> None:
    run_dir = demo_run(servers, tmp_path)
    [now] = provenance.read(run_dir)
    assert now["imitatoes"] and now["python"]
    comfy = now["comfyui"]
    assert comfy["version"].startswith("0.3.64") and comfy["devices"][0]["name"] == "cpu"
    digest = comfy["node_definitions"].removeprefix("sha256:")
    nodes = json.loads((run_dir / "nodes" / f"{digest}.json").read_text())
    assert set(nodes) == {n["class_type"] for n in
                          json.loads((run_dir / "workflow.json").read_text()).values()}
    assert comfy["models"] == [{"input": "4.inputs.ckpt_name", "listed": True, "size": None,
                                "file": "v1-5-pruned-emaonly.safetensors"}]
    critic = now["critic"]
    assert critic["model"] == "qwen2.5vl:7b" and len(critic["digest"]) == 64
    assert critic["details"]["quantization_level"] == "Q4_K_M"
    assert critic["options"]["temperature"] == 0.1 and critic["options"]["format"]


def test_resume_lists_what_changed_on_the_servers(servers, tmp_path: Path) -> None:
    run_dir = demo_run(servers, tmp_path)
    servers[1].behaviour.repulled = 1  # `ollama pull` fetched a new build of the model
    again = runner.invoke(app, ["resume", str(run_dir), *urls(servers), "--instruction",
                                "Add a yellow square"])
    assert again.exit_code == 0, again.output
    assert "changed since the run last went: critic.digest" in again.stdout
    first, second = provenance.read(run_dir)
    assert second["changed"] and second["changed"][0].startswith("critic.digest")


def test_replay_of_an_unchanged_setup_is_identical(servers, tmp_path: Path) -> None:
    run_dir = demo_run(servers, tmp_path)
    before = listing(run_dir)
    result = runner.invoke(app, ["replay", str(run_dir), "--comfy-url", servers[0].url])
    assert result.exit_code == 0, result.output
    assert ": identical" in result.stdout
    assert listing(run_dir) == before  # nothing but replays/ was written
    [replayed] = list((run_dir / "replays").iterdir())
    assert json.loads((replayed / "result.json").read_text())["identical"] is True


def test_replay_after_a_drift_says_so_and_what_changed(servers, tmp_path: Path) -> None:
    run_dir = demo_run(servers, tmp_path)
    servers[0].behaviour.drift = 4  # an upgrade that changes the pixels
    servers[1].behaviour.repulled = 1
    result = runner.invoke(app, ["replay", str(run_dir), "loop_01_iter_02",
                                 "--comfy-url", servers[0].url, "--format", "json"])
    assert result.exit_code == 3, result.output
    found = json.loads(result.stdout)
    assert found["identical"] is False and 3 < found["difference"] < 5
    assert any(c.startswith("critic.digest") for c in found["changed"])
    assert (Path(found["folder"]) / "difference.png").is_file()


def test_diff_of_two_runs(servers, tmp_path: Path) -> None:
    a = demo_run(servers, tmp_path)
    b = demo_run(servers, tmp_path, "--set", "start.cfg=8")
    text = runner.invoke(app, ["diff", str(a), str(b)])
    assert text.exit_code == 0, text.output
    assert "start.cfg: 7.0 -> 8" in text.stdout and "provenance: the same" in text.stdout
    assert "loop_01_iter_01  42 7 12 0.25" in text.stdout
    found = json.loads(runner.invoke(app, ["diff", str(a), str(b), "--format",
                                           "json"]).stdout)
    assert found["spec"] == ["start.cfg: 7.0 -> 8"]
    assert found["iterations"][0]["a"]["cfg"] == 7 and found["iterations"][0]["b"]["cfg"] == 8


@pytest.mark.skipif(not shutil.which("git"), reason="git is not installed")
def test_the_spec_s_git_commit_and_uncommitted_changes(servers, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    data = Path(DEMO).parent
    for name in ("demo.yaml", "demo_workflow.json"):
        (repo / name).write_bytes((data / name).read_bytes())
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert runner.invoke(app, ["run", str(repo / "demo.yaml"), *urls(servers)]).exit_code == 0
    (repo / "demo.yaml").write_text((repo / "demo.yaml").read_text() + "\n# edited\n")
    assert runner.invoke(app, ["run", str(repo / "demo.yaml"), *urls(servers)]).exit_code == 0
    runs = sorted((tmp_path / "runs").iterdir())
    gits = [provenance.latest(r)["spec"]["git"] for r in runs]
    assert gits == [{"commit": commit, "dirty": False}, {"commit": commit, "dirty": True}]
