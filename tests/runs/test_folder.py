"""The run folder where features meet: the servers a run remembers, the hints it prints, the
spec's origin in provenance, the lock, and readers that refuse damage without a traceback."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.commands.cli import app
from imitatoes.runs import folder as runfolder
from imitatoes.runs import provenance
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin
from tests.servers import DEMO, only_run, urls

runner = CliRunner()
HINT = re.compile(r"(?:take it further with|continue with|another loop budget): "
                  r"(imitatoes [^\n(]*?)\s*(?:\(|$)", re.M)


def hints(output: str) -> list[list[str]]:
    """Each command the tool printed for the user to paste, as its words."""
    return [shlex.split(m.group(1)) for m in HINT.finditer(output)]


def paste(words: list[str]) -> str:
    """Run a printed command as it is (`imitatoes` is the CLI itself)."""
    assert words[0] == "imitatoes"
    result = runner.invoke(app, [*words[1:], "--yes"])
    assert result.exit_code in (0, 3), result.output
    return result.output


def test_the_finder_sees_each_hint() -> None:
    said = ('take it further with: imitatoes resume runs/a --instruction "..."\n'
            "another loop budget: imitatoes resume runs/b (add --instruction ...)\n")
    assert hints(said) == [["imitatoes", "resume", "runs/a", "--instruction", "..."],
                           ["imitatoes", "resume", "runs/b"]]


def test_a_run_remembers_the_servers_it_last_went_on(servers, tmp_path: Path) -> None:
    """Started on servers that are gone, resumed with --comfy-url/--ollama-url on others: the
    hint it prints works pasted as it is (it once went back to the dead ones)."""
    with ComfyStandin() as comfy, OllamaStandin() as ollama:
        first = runner.invoke(app, ["run", DEMO, *urls((comfy, ollama)), "--yes"])
        assert first.exit_code == 0, first.output
    run_dir = only_run(tmp_path)
    resumed = runner.invoke(app, ["resume", str(run_dir), *urls(servers), "--yes",
                                  "--instruction", "Add a yellow square"])
    assert resumed.exit_code == 0, resumed.output
    assert runfolder.read_servers(run_dir) == runfolder.Servers(servers[0].url, servers[1].url)
    [pasted] = hints(resumed.output)
    again = paste(pasted)
    assert hints(again)  # and what that prints can be pasted too
    report = (run_dir / runfolder.REPORT).read_text()
    assert f"ComfyUI at {servers[0].url}" in report and f"at {servers[1].url}" in report


def test_a_damaged_servers_file_is_not_used(servers, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers), "--yes"])
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    (run_dir / runfolder.SERVERS).write_text('{"comfyui": "file:///etc/passwd", "critic": 1}')
    assert runfolder.read_servers(run_dir) is None
    assert runfolder.load_spec(run_dir, env={}).comfyui.url == servers[0].url  # spec.yaml's


def test_provenance_keeps_the_spec_s_origin_and_its_copy_apart(servers, tmp_path: Path
                                                               ) -> None:
    """A resume reads the run's own copy; that is no change of spec, and two runs of one spec
    differ in no provenance."""
    for _ in range(2):
        result = runner.invoke(app, ["run", DEMO, *urls(servers), "--yes"])
        assert result.exit_code == 0, result.output
    a, b = sorted((tmp_path / "runs").iterdir())
    resumed = runner.invoke(app, ["resume", str(a), *urls(servers), "--yes",
                                  "--instruction", "Add a yellow square"])
    assert resumed.exit_code == 0, resumed.output
    assert "changed since the run last went" not in resumed.output
    first, second = provenance.read(a)
    for gathering in (first, second):
        assert gathering["spec"]["source"] == str(Path(DEMO).resolve())
        assert gathering["spec"]["copy"] == str((a / "spec.yaml").resolve())
    assert second["changed"] == []
    diff = runner.invoke(app, ["diff", str(a), str(b), "--format", "json"])
    assert json.loads(diff.stdout)["provenance"] == []


def test_no_lock_is_left_in_a_finished_run(servers, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers), "--yes"])
    assert result.exit_code == 0, result.output
    assert not (only_run(tmp_path) / runfolder.LOCK).exists()


def test_a_held_folder_is_still_refused_and_its_lock_goes_with_it(tmp_path: Path) -> None:
    with runfolder.owned(tmp_path):
        assert "pid" in (tmp_path / runfolder.LOCK).read_text()
        with pytest.raises(runfolder.RunFolderBusy, match="in use by imitatoes"), \
                runfolder.owned(tmp_path):
            pass
    assert not (tmp_path / runfolder.LOCK).exists()
    with runfolder.owned(tmp_path):  # and it can be held again
        pass


@pytest.mark.parametrize("key", ["loop_x_iter_01", "../../etc/passwd", 7, None])
def test_a_tampered_record_key_is_refused_without_a_traceback(servers, tmp_path: Path,
                                                               key: object) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers), "--yes"])
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    path = run_dir / "loop_01_iter_01.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "key": key}))
    report = runner.invoke(app, ["report", str(run_dir)])
    assert report.exit_code == 0 and report.exception is None, report.output
    assert runfolder.read_record(run_dir, "loop_01_iter_01") is None
    assert "loop_01_iter_01" not in [r.key for r in runfolder.records(run_dir)]


@pytest.mark.parametrize("field,value", [("best", {"key": "loop_1", "score": 1, "params": {}}),
                                         ("loop", "two"), ("renders", -1), ("status", "won"),
                                         ("done_key", "x"), ("pending", {"key": 3})])
def test_a_damaged_state_is_refused_in_one_line(servers, tmp_path: Path, field: str,
                                                value: object) -> None:
    result = runner.invoke(app, ["run", DEMO, *urls(servers), "--yes"])
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    state = json.loads((run_dir / runfolder.STATE).read_text())
    (run_dir / runfolder.STATE).write_text(json.dumps({**state, field: value}))
    for command in (["report", str(run_dir)], ["resume", str(run_dir), "--yes"]):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 1 and not isinstance(refused.exception, KeyError | ValueError
                                                          | TypeError), refused.output
        assert "state.json is damaged" in refused.output
        assert refused.output.count("\n") <= 2


def test_every_record_reads_back_as_it_was_written(tmp_path: Path) -> None:
    """Iteration records and state, every field set, alternatives and refine included."""
    from imitatoes.loop.checklist import Item
    from imitatoes.loop.patch import Refusal
    from imitatoes.loop.state import Best, Pending, RefineState, Region, RunState, Tried
    from imitatoes.loop.verdict import Attempt, Changes, Check, Verdict
    from imitatoes.spec.model import Params

    params = Params("a fox", "blurry", 6.5, 30, 7, (("denoise", 0.8), ("sampler", "euler")))
    changes = Changes("red fur", "grain", 7.0, 32, "new", (("denoise", 0.7),))
    verdict = Verdict(False, changes, "No fur.", (Check("a fox", False, "no fox", [1, 2, 3, 4],
                                                        "a fox"),), 0.5, True,
                      (Changes(prompt_append="snow", knobs=(("sampler", "dpmpp_2m"),)),
                       Changes(seed=12)))
    record = runfolder.IterationRecord(
        "loop_02_iter_03", 2, 3, params, "p-1", {"render": 1.5, "critique": 2.0},
        runfolder.CriticRecord("the prompt", (Attempt("{}", "hm", "bad", {"n": 1}),), verdict,
                               "", {"bytes": 10, "mime": "image/jpeg"}),
        ["prompt + \"red fur\""], 0.5, "loop_01_iter_01", [Refusal("cfg", 99, "too high")],
        params, [Item("a fox", False, "no fox", "text", True, [1, 2, 3, 4], "a fox")],
        ["a fox"], [{"key": "loop_02_iter_03_c1", "seed": 7, "score": 0.5}],
        {"against": "loop_01_iter_01", "order": ["a", "b"], "winner": None},
        {"from": "loop_01_iter_01", "denoise": 0.45, "image": "x.png"},
        [Check("The image is pretty", True, "nice")])
    runfolder.write_record(tmp_path, record)
    assert runfolder.read_record(tmp_path, record.key) == record
    (tmp_path / "loop_02_iter_03.png").write_bytes(b"")  # the report shows what is not counted
    from imitatoes.runs import report
    assert "not counted, no requirement of the spec: The image is pretty (met)" in \
        report._cards(tmp_path, RunState(params), [record])
    state = RunState(params, 2, 3, 4, 2, 9, "limits",
                     Best("loop_01_iter_01", 0.5, params, ("a fox", "snow"), ("snow",)),
                     None, [Tried(1, 1, params, 0.5, "why", "nothing")], ["snow"], 1,
                     Pending("loop_02_iter_03", "p-1"), True, True, [params],
                     RefineState("loop_01_iter_01", 0.4, Region((1, 2, 3, 4), "a fox", "fur")))
    runfolder.write_state(tmp_path, state)
    # an iteration saved in progress runs again under its number: the one thing that moves
    assert runfolder.read_state(tmp_path) == dataclasses.replace(state, iteration=2,
                                                                 in_progress=False)
