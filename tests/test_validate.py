"""Every file under tests/specs/{valid,invalid} is a case; invalid ones carry `# expect:` lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.cli import app

from .conftest import ROOT

SPECS = ROOT / "tests" / "specs"
VALID = sorted((SPECS / "valid").glob("*.yaml")) + sorted((ROOT / "specs").glob("*.yaml"))
INVALID = sorted((SPECS / "invalid").glob("*.yaml"))
runner = CliRunner()


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def expected(path: Path) -> list[str]:
    prefix = _rel(path)
    lines = [line[len("# expect: "):] for line in path.read_text().splitlines()
             if line.startswith("# expect: ")]
    return [f"{prefix}:{e}" if e[0].isdigit() else f"{prefix}: {e}" for e in lines]


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_specs_pass(path: Path, at_root: Path) -> None:
    result = runner.invoke(app, ["validate", _rel(path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{_rel(path)}: ok\n"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_specs_report_every_problem_with_its_line(path: Path, at_root: Path) -> None:
    want = expected(path)
    assert want, f"{path.name} has no '# expect:' lines"
    result = runner.invoke(app, ["validate", _rel(path)])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == want


def test_several_specs_at_once_and_a_summary(at_root: Path) -> None:
    bad, good = INVALID[0], VALID[0]
    result = runner.invoke(app, ["validate", _rel(good), _rel(bad)])
    assert result.exit_code == 2
    assert f"{_rel(good)}: ok" in result.stdout
    assert "in 1 of 2 spec(s)" in result.stderr


def test_json_format_for_machines(at_root: Path) -> None:
    path = SPECS / "invalid" / "bounds.yaml"
    result = runner.invoke(app, ["validate", "--format", "json", _rel(path)])
    assert result.exit_code == 2
    [report] = json.loads(result.stdout)
    assert report["ok"] is False
    first = report["problems"][0]
    assert (first["line"], first["column"], first["path"]) == (7, 11, "start.prompt")


def test_missing_file_and_directory(at_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "nope.yaml", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        "nope.yaml: no such file",
        f"{tmp_path}: is a directory; give the path of a spec file (.yaml)",
    ]


def test_set_overrides_are_checked_and_named(at_root: Path) -> None:
    path = _rel(ROOT / "specs" / "red-fox.yaml")
    result = runner.invoke(app, ["validate", path, "--set", "limits.max_loops=0"])
    assert result.exit_code == 2
    assert result.stdout.strip() == (f"{path}: limits.max_loops: 0 is less than the minimum of 1"
                                     " (from --set limits.max_loops=0)")
    assert runner.invoke(app, ["validate", path, "--set", "limits.max_loops=2"]).exit_code == 0


def test_bad_set_syntax_is_a_usage_error(at_root: Path) -> None:
    result = runner.invoke(app, ["validate", "specs/red-fox.yaml", "--set", "limits"])
    assert result.exit_code == 2
    assert "expected KEY.PATH=VALUE" in result.stderr


def test_environment_url_is_checked(at_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMITATOES_COMFY_URL", "comfy:8188")
    result = runner.invoke(app, ["validate", "specs/red-fox.yaml"])
    assert result.exit_code == 2
    assert "(from $IMITATOES_COMFY_URL)" in result.stdout


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "not UTF-8 text (byte 9)" in result.stdout


def test_schema_command_prints_the_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["additionalProperties"] is False
