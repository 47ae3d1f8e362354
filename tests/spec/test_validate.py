"""Every file under tests/specs/{valid,invalid} is a case; invalid ones carry `# expect:` lines."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from tests.conftest import ROOT, found

SPECS = ROOT / "tests" / "specs"
VALID = found(sorted((SPECS / "valid").glob("*.yaml")), "valid example specs") + \
    found(sorted((ROOT / "specs").glob("*.yaml")), "shipped specs")
INVALID = found(sorted((SPECS / "invalid").glob("*.yaml")), "invalid example specs")
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


# -- specs from someone else's repository ------------------------------------------------------

def write_spec(folder: Path, **fields: object) -> Path:
    """The minimal valid spec, its workflow beside it, with `fields` replacing its own."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sd15.json").write_bytes((SPECS / "workflows" / "sd15.json").read_bytes())
    data = yaml.safe_load((SPECS / "valid" / "minimal.yaml").read_text())
    data.update({"workflow": "sd15.json", **fields})
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def validate(path: Path, *extra: str):
    return runner.invoke(app, ["validate", str(path), *extra])


def test_a_spec_reads_only_files_in_its_own_tree(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "wf.json").write_bytes((SPECS / "workflows" / "sd15.json")
                                                     .read_bytes())
    spec = write_spec(tmp_path / "mine", workflow="../elsewhere/wf.json",
                      critic={"model": "llava", "prompt_template": "/etc/passwd"})
    result = validate(spec)
    assert result.exit_code == 2
    assert "critic.prompt_template: /etc/passwd is outside" in result.stdout
    assert f"workflow: {tmp_path}/elsewhere/wf.json is outside {tmp_path}/mine" in \
        result.stdout
    assert "unless --allow-outside is given" in result.stdout
    assert validate(spec, "--allow-outside").exit_code == 0
    (tmp_path / "mine" / "link.json").symlink_to(tmp_path / "elsewhere" / "wf.json")
    linked = write_spec(tmp_path / "mine", workflow="link.json")
    assert "is outside" in validate(linked).stdout  # where it really is, not where it claims


def test_a_git_work_tree_is_the_spec_s_home(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write_spec(tmp_path / "workflows")
    spec = write_spec(tmp_path / "specs", workflow="../workflows/sd15.json")
    result = validate(spec)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
def test_only_regular_files_of_a_sane_size(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "spec" / "wf.json"
    target.parent.mkdir()
    if kind == "device":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.write_bytes(b" " * (16 * 2**20 + 1))
    spec = write_spec(tmp_path / "spec", workflow="wf.json")
    started = time.monotonic()
    result = validate(spec, "--allow-outside")
    assert time.monotonic() - started < 5
    assert result.exit_code == 2
    assert ("more than the 16,777,216 a spec" if kind == "huge" else
            "is not a regular file") in result.stdout


def test_a_yaml_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    result = validate(bomb)
    assert time.monotonic() - started < 2
    assert result.exit_code == 2 and "aliases expand to more than 10,000 values" in \
        result.stdout


@pytest.mark.parametrize("byte", ["\x1b", "\x00", "\x07"])
def test_a_control_byte_is_located(tmp_path: Path, byte: str) -> None:
    spec = write_spec(tmp_path)
    text = spec.read_text().replace("goal: Anything.", f"goal: Any{byte}thing.")
    spec.write_text(text)
    result = validate(spec)
    assert result.exit_code == 2
    assert f"{spec}:2:10: a control character (U+{ord(byte):04X})" in result.stdout


def test_ten_thousand_requirements_give_short_messages(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, requirements=[f"thing {i}" for i in range(10_000)])
    result = validate(spec)
    assert result.exit_code == 2
    assert "requirements: a list of 10,000 items is too long" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) < 400
    many = write_spec(tmp_path, requirements=[""] * 200)
    lines = validate(many).stdout.splitlines()
    assert len(lines) == 50 and "and 152 more problems" in lines[-1]


def test_validate_against_a_comfyui(tmp_path: Path, at_root: Path) -> None:
    from imitatoes.standins.comfyui import Behaviour, ComfyStandin

    with ComfyStandin(Behaviour(checkpoints=["v1-5-pruned.safetensors"])) as comfy:
        good = runner.invoke(app, ["validate", "tests/specs/valid/minimal.yaml"])
        bad = runner.invoke(app, ["validate", "tests/specs/valid/minimal.yaml",
                                  "--comfy-url", comfy.url])
    assert good.exit_code == 0
    assert bad.exit_code == 2
    assert ("tests/specs/valid/minimal.yaml:4:11: workflow: node 4 (CheckpointLoaderSimple) "
            "ckpt_name: 'v1-5-pruned-emaonly.safetensors' is not on this ComfyUI (closest: "
            "v1-5-pruned.safetensors)") in bad.stdout
