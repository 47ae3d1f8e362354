"""`imitatoes bench critic` against the Ollama stand-in with known faults: it reports them
back within the sampling error it states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imitatoes.commands import scenes
from imitatoes.commands.cli import app
from imitatoes.standins import eye
from imitatoes.standins.ollama import Behaviour, OllamaStandin

runner = CliRunner()
# the categories the stand-in's eye judges exactly (it cannot count or place things)
SEEN = ("one object", "two objects", "colour", "colour binding", "watermark")


def bench(tmp_path: Path, behaviour: Behaviour, *args: str) -> dict:
    with OllamaStandin(behaviour) as ollama:
        result = runner.invoke(app, ["bench", "critic", "--ollama-url", ollama.url,
                                     "--runs-dir", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    [out] = list(tmp_path.glob("bench_*"))
    return json.loads((out / "results.json").read_text())


def pooled(model: dict, categories: tuple[str, ...]) -> tuple[float, int, float, int]:
    """false-met rate and its trials, missed rate and its trials, over `categories`."""
    c = [model["categories"][k] for k in categories]
    unmet, met = sum(x["unmet_true"] for x in c), sum(x["met_true"] for x in c)
    return (sum(x["false_met"] for x in c) / unmet, unmet,
            sum(x["missed"] for x in c) / met, met)


def test_the_set_is_balanced_and_the_same_for_the_same_seed() -> None:
    cases, pairs = scenes.made(48, 3)
    again, _ = scenes.made(48, 3)
    assert [c.image for c in cases] == [c.image for c in again]
    assert {c.category for c in cases} == set(scenes.CATEGORIES)
    labels = [label for c in cases for label in c.labels]
    assert sum(label.met for label in labels) * 2 == len(labels)
    assert pairs and all(p.better in ("first", "second") for p in pairs)


def test_a_perfect_eye_is_measured_perfect_where_it_sees(tmp_path: Path) -> None:
    results = bench(tmp_path, Behaviour(latency=0), "--images", "40")
    [model] = results["models"]
    for name in SEEN:
        assert model["categories"][name]["accuracy"] == 1.0, name
    # it cannot count: it never says met there, so every true count is missed, none false-met
    assert model["categories"]["counting"]["false_met"] == 0
    assert model["categories"]["counting"]["missed_rate"] == 1.0
    assert model["head_to_head"]["right"] == model["head_to_head"]["asked"]


@pytest.mark.slow
def test_injected_faults_are_reported_back_within_the_stated_error(tmp_path: Path) -> None:
    behaviour = Behaviour(latency=0, false_met=0.2, missed=0.1, first_bias=0.4, noise_seed=7)
    results = bench(tmp_path, behaviour, "--images", "120", "--seed", "1")
    [model] = results["models"]
    false_met, unmet, missed, met = pooled(model, SEEN)
    margin = model["all"]["false_met_margin"]
    # within two standard errors, the margin the table states (three for the first-position
    # share below, whose answers come in pairs and so vary more)
    assert abs(false_met - 0.2) <= 2 * (0.2 * 0.8 / unmet) ** 0.5, false_met
    assert abs(missed - 0.1) <= 2 * (0.1 * 0.9 / met) ** 0.5, missed
    assert 0 < margin < 0.1
    h2h = model["head_to_head"]
    first = h2h["first"] / h2h["asked"]  # (1 + bias) / 2 with the better image either side
    assert abs(first - 0.7) <= 3 * (0.7 * 0.3 / h2h["asked"]) ** 0.5, first
    assert any("keep search.verify_done on" in a for a in model["advice"])
    assert any("first position wins" in a for a in model["advice"])
    page = (next(tmp_path.glob("bench_*")) / "report.html").read_text()
    assert page.count("<img") == len(model["wrong"]) > 0


def test_a_model_that_is_not_pulled_gets_doctor_s_words(tmp_path: Path) -> None:
    with OllamaStandin(Behaviour(latency=0)) as ollama:
        result = runner.invoke(app, ["bench", "critic", "no-such-model", "--ollama-url",
                                     ollama.url, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "ollama pull no-such-model" in result.output


def test_your_own_labels(tmp_path: Path) -> None:
    cases, _ = scenes.made(8, 1)
    (tmp_path / "a.png").write_bytes(cases[0].image)
    (tmp_path / "labels.yaml").write_text(
        "images:\n  - image: a.png\n    requirements:\n"
        + "".join(f"      - {{text: {label.text!r}, met: {str(label.met).lower()}}}\n"
                  for label in cases[0].labels))
    results = bench(tmp_path / "out", Behaviour(latency=0), "--labels",
                    str(tmp_path / "labels.yaml"))
    assert results["models"][0]["categories"]["yours"]["accuracy"] == 1.0
    (tmp_path / "bad.yaml").write_text("images:\n  - image: a.png\n    requirements: [x]\n")
    bad = runner.invoke(app, ["bench", "critic", "--labels", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2 and "requirements[0]: write {text: ..., met: true}" in bad.output


@pytest.mark.parametrize("text", ["Exactly two circles", "The circle is left of the square"])
def test_the_stand_in_does_not_pretend_to_count_or_place(text: str) -> None:
    cases, _ = scenes.made(8, 1)
    verdict = eye.judge(cases[0].image, f"Checklist:\n1. {text}\n")
    assert verdict["checklist"][0]["met"] is False
    assert verdict["checklist"][0]["observation"] == eye.NOT_JUDGED


def test_ctrl_c_keeps_what_was_measured(tmp_path: Path) -> None:
    from imitatoes.commands import bench

    cases, pairs = scenes.made(16, 2)
    calls: list[str] = []

    def stop_at_five(where: str) -> None:
        calls.append(where)
        if len(calls) == 5:
            raise KeyboardInterrupt

    with OllamaStandin(Behaviour(latency=0)) as ollama:
        plan = bench.Plan(("qwen2.5vl:7b",), ollama.url, "ollama", cases, pairs,
                          tmp_path / "out", {"set": "test"})
        with pytest.raises(KeyboardInterrupt):
            bench.run(plan, stop_at_five)
    [model] = json.loads((tmp_path / "out" / "results.json").read_text())["models"]
    assert model["all"]["judged"] == 2 * 5  # five images, two sentences each
    assert (tmp_path / "out" / "report.html").is_file()
