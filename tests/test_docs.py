"""The README as a newcomer meets it: short, its quick start runs as written in a new shell,
its walkthrough's examples improve over several renders on the stand-ins, its links lead
somewhere; and the spec reference in docs/ is the schema's."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.runs import folder as runfolder
from imitatoes.spec import lint, reference
from tests.conftest import ROOT, found

README = (ROOT / "README.md").read_text()
EXAMPLES = found(sorted((ROOT / "examples").glob("*.yaml")), "example specs")


def blocks_after(marker: str) -> list[str]:
    """The commands of the first ```sh block after `marker`, comments dropped."""
    block = README.split(marker, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def test_the_readme_is_a_path_not_a_manual() -> None:
    assert len(README.splitlines()) < 150


def test_every_link_in_the_readme_and_docs_leads_somewhere() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_spec_reference_is_made_from_the_schema() -> None:
    page = (ROOT / "docs" / "spec.md").read_text()
    assert reference.updated(page, lint.schema()) == page, \
        "run: python -m imitatoes.spec.reference docs/spec.md"
    assert "| `limits.max_loops` | integer | `3` |" in page


@pytest.mark.slow
def test_the_quick_start_runs_as_written_in_a_new_shell(tmp_path: Path) -> None:
    """install.sh in the clone, then each command in a new login shell of a user whose PATH
    has never heard of imitatoes (HOME is a fresh folder)."""
    install, *commands = blocks_after("<!-- quick start -->")
    assert install == "./scripts/install.sh" and commands == ["imitatoes demo"]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "IMITATOES_RUNS": str(tmp_path / "r"),
           "PYTHON": os.environ.get("PYTHON", "python3"), "LANG": "C.UTF-8"}
    setup = subprocess.run(install, shell=True, cwd=ROOT, capture_output=True, text=True,
                           env={**env, "PATH": os.environ["PATH"]}, timeout=600)
    assert setup.returncode == 0, setup.stderr
    assert f"{tmp_path}/.local/bin" in setup.stdout  # it says where the command went
    for command in commands:
        done = subprocess.run(["bash", "-lc", command], cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    assert found(list((tmp_path / "r").glob("*/report.html")), "the demo's report")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_starts_wrong_and_improves_over_several_renders(
        path: Path, servers, tmp_path: Path) -> None:
    comfy, ollama = servers
    result = CliRunner().invoke(app, ["run", str(path), "--comfy-url", comfy.url,
                                      "--ollama-url", ollama.url, "--yes"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = runfolder.records(run_dir)
    scores = [r.score for r in records]
    assert len(records) >= 3 and scores[0] <= 0.5 and scores[-1] == 1.0, scores
    assert "stand-ins" in path.read_text().split("\n", 2)[1]  # says what it is for


def test_the_real_model_specs_say_what_they_need() -> None:
    for spec in found(sorted((ROOT / "specs").glob("*.yaml")), "specs"):
        first = [line for line in spec.read_text().splitlines()[1:4] if line.startswith("#")]
        assert first and "For a real GPU" in first[0], spec.name
        assert yaml.safe_load(spec.read_text())["critic"]["model"] in " ".join(first)
