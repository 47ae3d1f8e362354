"""Property tests: whatever the critic, the server or the user's YAML throws at us."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imitatoes.commands.lifecycle import Run
from imitatoes.errors import SpecError
from imitatoes.loop import patch
from imitatoes.loop.engine import Engine
from imitatoes.loop.state import first_state
from imitatoes.loop.verdict import Changes, VerdictInvalid, parse
from imitatoes.runs import folder as runfolder
from imitatoes.spec import lint, yamldoc
from imitatoes.spec import load as specs
from tests.conftest import ROOT
from tests.doubles import FakeRenderer

DEMO_FILE = ROOT / "imitatoes" / "data" / "demo.yaml"
DEMO = specs.load(DEMO_FILE, env={})
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-2**80, max_value=2**80))
texts = st.text(max_size=400) | st.lists(st.text(max_size=30), max_size=60).map(", ".join)
seeds = st.one_of(st.just("keep"), st.just("new"), st.integers(-2**70, 2**70), st.text(max_size=10))
changes = st.builds(Changes, prompt_append=texts, neg_append=texts, cfg=numbers,
                    steps=numbers, seed=seeds)
policies = st.sampled_from(["stable", "critic", "per_loop", "random"]).map(
    lambda p: specs.SeedPolicy(p, p == "stable"))


@pytest.mark.slow
@FAST
@given(changes, policies)
def test_no_critic_change_escapes_the_bounds(c: Changes, policy: specs.SeedPolicy) -> None:
    b = DEMO.bounds
    p = patch.apply(DEMO.start, c, b, policy, random.Random(0)).params
    assert b.cfg.min <= p.cfg <= b.cfg.max and math.isfinite(p.cfg)
    assert b.steps.min <= p.steps <= b.steps.max and isinstance(p.steps, int)
    assert abs(p.cfg - DEMO.start.cfg) <= b.cfg.max_delta + 1e-9
    assert len(p.prompt) <= b.prompt_max_chars
    assert len(patch.terms(p.negative)) <= b.negative_max_terms
    assert isinstance(p.seed, int) and 0 <= p.seed <= patch.SEED_MAX


@FAST
@given(st.text(max_size=600) | st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["done", "changes", "reason", "cfg", "seed", "prompt_append", "x"]),
        inner, max_size=5), max_leaves=20).map(lambda v: yaml.safe_dump(v)))
def test_any_answer_parses_or_fails_as_a_typed_outcome(text: str) -> None:
    try:
        v = parse(text)
    except VerdictInvalid as exc:  # the one way to fail, with a message for the retry
        assert str(exc)
        return
    assert isinstance(v.done, bool) and 0 <= v.score <= 1 and isinstance(v.reason, str)


class _Critic:
    def __init__(self, answer: Changes) -> None:
        self.answer = answer

    def judge(self, image: bytes, prompt: str, checklist=()):
        from tests.doubles import FakeCritic, verdict
        return FakeCritic(verdict(0.5, **self.answer.__dict__)).judge(image, prompt, checklist)

    def unload(self) -> None:
        pass


@FAST
@given(changes)
def test_no_critic_answer_crashes_the_engine(c: Changes) -> None:
    import dataclasses
    spec = dataclasses.replace(DEMO, limits=specs.Limits(2, 1))  # auto, the default
    renderer = FakeRenderer()
    state = Engine(spec, renderer, _Critic(c), rng=random.Random(0)).run(first_state(spec))
    # two iterations: one image, then one or a spread of three; never a stall under auto
    assert state.status == "limits" and not state.stalled
    assert len(renderer.workflows) in (2, 4)


names = st.text(min_size=1, max_size=40) | st.sampled_from(
    ["../../evil.png", "/etc/passwd", "..", "a/../../b.png", "C:\\x.png", "nul", ".", "~/x",
     "state.json", "../final.png", "loop_01_iter_02.png"])


SEEDS = itertools.count(1000)


@pytest.fixture(scope="module")
def hostile_servers():
    from imitatoes.standins.comfyui import ComfyStandin
    from imitatoes.standins.ollama import OllamaStandin

    with ComfyStandin() as comfy, OllamaStandin() as ollama:
        yield comfy, ollama


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.slow
@given(names, names, st.sampled_from(["output", "temp", "input", "../x", ""]))
def test_server_given_names_never_become_paths(tmp_path_factory, hostile_servers,
                                               filename: str, subfolder: str, kind: str) -> None:
    """A whole iteration through the real client and run log, with ComfyUI naming its output
    whatever it likes: the image lands under our name in the run folder, and nowhere else."""
    comfy, ollama = hostile_servers
    base = tmp_path_factory.mktemp("names")
    root = base / "runs"
    seed = next(SEEDS)  # a new workflow each time: ComfyUI would serve a cached output
    spec = specs.load(DEMO_FILE, ["limits.iterations_per_loop=1", "limits.max_loops=1",
                                  f"start.seed={seed}"],
                      env={"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url})
    comfy.behaviour.output_names = [[kind, subfolder, filename]]
    outcome = Run.begin(spec, root).execute()
    made = {p.relative_to(outcome.run_dir) for p in base.rglob("*") if p.is_file()}
    assert all(p.parts[0] != ".." for p in made)  # nothing outside the run folder
    assert Path("loop_01_iter_01.png") in made
    assert (outcome.run_dir / "loop_01_iter_01.png").read_bytes() == \
        comfy.hostile[(kind, subfolder, filename)]
    assert runfolder.read_record(outcome.run_dir, "loop_01_iter_01").params == spec.start


spec_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-10**30, 10**30) | st.text(max_size=15),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["min", "max", "max_delta", "prompt", "model", "url", "policy", "x"]),
        inner, max_size=3), max_leaves=8)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(
    ["name", "goal", "requirements", "workflow", "bindings", "start", "bounds", "seed",
     "critic", "limits", "comfyui", "output", "typo"]), spec_values, max_size=10))
def test_any_spec_validates_or_gets_located_messages(tmp_path_factory, data: dict) -> None:
    path = Path(tmp_path_factory.mktemp("spec")) / "s.yaml"
    base = yaml.safe_load((ROOT / "tests/specs/valid/minimal.yaml").read_text())
    base["workflow"] = str(ROOT / "workflows" / "txt2img_sd15.json")
    path.write_text(yaml.safe_dump({**base, **data}, allow_unicode=True))
    try:
        problems = lint.check(yamldoc.read(path))
    except SpecError as exc:
        assert exc.problem.message
        return
    for p in problems:
        assert p.message and (p.line > 0 or p.origin), p
