"""The loop's rules, with in-memory doubles (no network, no disk)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from imitatoes.loop.engine import CriticFailing, Engine
from imitatoes.loop.events import Event
from imitatoes.loop.state import continued, first_state
from imitatoes.spec import load as specs
from tests.conftest import ROOT
from tests.doubles import FakeCritic, FakeRenderer, verdict

DEMO = specs.load(ROOT / "imitatoes" / "data" / "demo.yaml", env={})


def make(ipl: int = 2, loops: int = 3, policy: str = "stable", **critic: object) -> specs.Spec:
    s = dataclasses.replace(DEMO, limits=specs.Limits(ipl, loops),
                            seed=specs.SeedPolicy(policy, False),
                            search=specs.Search())  # fixed: auto has its own tests
    return dataclasses.replace(s, critic=dataclasses.replace(s.critic, **critic)) if critic else s


def run(spec: specs.Spec, critic: FakeCritic, renderer: FakeRenderer | None = None):
    renderer = renderer or FakeRenderer()
    events: list[Event] = []
    engine = Engine(spec, renderer, critic, [events.append], rng=random.Random(0))
    state = engine.run(first_state(spec))
    return state, renderer, events


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.kind == kind]


def test_at_most_iterations_per_loop_times_max_loops_renders() -> None:
    state, renderer, events = run(make(ipl=2, loops=3), FakeCritic())
    assert len(renderer.workflows) == 6 and state.renders == 6
    assert state.status == "limits"
    assert [(e.loop, e.iteration) for e in kinds(events, "loop_ended")] == [(1, 2), (2, 2), (3, 2)]
    assert len(kinds(events, "limits_reached")) == 1


def test_done_stops_at_once() -> None:
    state, renderer, events = run(make(), FakeCritic(verdict(0.5, prompt_append="red"),
                                                     verdict(1.0, done=True)))
    assert len(renderer.workflows) == 2
    assert (state.status, state.done_key) == ("done", "loop_01_iter_02")
    assert kinds(events, "done")[0].key == "loop_01_iter_02"


def test_changes_are_clamped_before_the_next_render() -> None:
    _, renderer, _ = run(make(ipl=2, loops=1), FakeCritic(verdict(0.1, cfg=1e9, steps=-4,
                                                                  prompt_append="red circle")))
    second = renderer.params(2)
    assert (second["cfg"], second["steps"]) == (8.5, 10)
    assert second["prompt"] == "a circle, simple poster, red circle"


def test_a_regression_reverts_to_the_best_before_the_next_change() -> None:
    critic = FakeCritic(verdict(0.5, prompt_append="red"), verdict(0.25, prompt_append="blue"),
                        verdict(0.75))
    state, renderer, events = run(make(ipl=3, loops=1), critic)
    assert renderer.params(2)["prompt"] == "a circle, simple poster, red"
    assert renderer.params(3)["prompt"] == "a circle, simple poster, blue"  # not "red, blue"
    applied = kinds(events, "applied")
    assert applied[1].reverted == "loop_01_iter_01"
    assert state.best.key == "loop_01_iter_03"


def test_best_is_kept_across_loops_and_history_reaches_the_critic() -> None:
    critic = FakeCritic(verdict(0.5, reason="Too dark.", prompt_append="bright"), verdict(0.2))
    state, _, _ = run(make(ipl=1, loops=3), critic)
    assert state.best.key == "loop_01_iter_01"
    assert "Too dark. Changed: prompt + \"bright\"." in critic.prompts[1]
    assert "loop 2 of 3" in critic.prompts[1]


def test_stable_seed_never_changes() -> None:
    _, renderer, _ = run(make(ipl=2, loops=2), FakeCritic(verdict(seed="new",
                                                                  prompt_append="x")))
    assert {renderer.params(n)["seed"] for n in range(1, 5)} == {42}


def test_per_loop_seed_changes_at_each_loop_only() -> None:
    _, renderer, _ = run(make(ipl=2, loops=2, policy="per_loop"), FakeCritic())
    seeds = [renderer.params(n)["seed"] for n in range(1, 5)]
    assert seeds[0] == seeds[1] == 42 and seeds[2] == seeds[3] != 42


def test_random_seed_changes_every_render() -> None:
    _, renderer, _ = run(make(ipl=2, loops=2, policy="random"), FakeCritic())
    assert len({renderer.params(n)["seed"] for n in range(1, 5)}) == 4


def test_critic_policy_follows_the_critic() -> None:
    _, renderer, _ = run(make(ipl=2, loops=1, policy="critic"), FakeCritic(verdict(seed=7)))
    assert renderer.params(2)["seed"] == 7


def test_a_failed_critique_is_recorded_and_survived() -> None:
    state, renderer, events = run(make(ipl=3, loops=1), FakeCritic(None, verdict(1, done=True)))
    assert state.status == "done" and len(renderer.workflows) == 2
    assert "no usable verdict" in state.history[0].reason


def test_a_critic_that_keeps_failing_stops_the_run() -> None:
    with pytest.raises(CriticFailing, match="3 times in a row"):
        run(make(ipl=5, loops=1), FakeCritic(None, None, None))


def test_ctrl_c_interrupts_comfyui_and_marks_the_state() -> None:
    renderer = FakeRenderer(fail_at=2, exc=KeyboardInterrupt)
    events: list[Event] = []
    engine = Engine(make(), renderer, FakeCritic(), [events.append])
    state = first_state(make())
    with pytest.raises(KeyboardInterrupt):
        engine.run(state)
    assert renderer.interrupted == 1 and state.status == "interrupted"
    assert kinds(events, "interrupted")


def test_unload_before_render_frees_the_gpu_between_critique_and_render() -> None:
    critic = FakeCritic()
    run(make(ipl=3, loops=1, unload_before_render=True), critic)
    assert critic.unloads == 2  # before renders 2 and 3; nothing is loaded before the first


def test_progress_events_carry_steps() -> None:
    _, _, events = run(make(ipl=1, loops=1), FakeCritic())
    assert [(e.value, e.maximum) for e in kinds(events, "progress")] == [(1, 2),
                                                                                   (2, 2)]


def test_further_instruction_after_done_gets_a_fresh_budget() -> None:
    spec = make(ipl=2, loops=1)
    critic = FakeCritic(verdict(1, done=True))
    renderer = FakeRenderer()
    engine = Engine(spec, renderer, critic, rng=random.Random(0))
    state = engine.run(first_state(spec))
    again = engine.run(continued(state, spec, "make the circle bigger"))
    assert (again.loop, again.last_loop, again.status) == (2, 2, "limits")
    assert len(renderer.workflows) == 3
    assert "Further instruction from the user: make the circle bigger (checklist item 5 on)" \
        in critic.prompts[-1]
    assert "\n5. make the circle bigger\n" in critic.prompts[-1]


def test_a_verdict_that_changes_nothing_stops_instead_of_repeating_the_image() -> None:
    critic = FakeCritic(verdict(0.5, prompt_append="a circle", seed="new"))  # already there;
    state, renderer, events = run(make(ipl=3, loops=3), critic)             # seed refused
    assert len(renderer.workflows) == 1 and state.status == "limits" and state.stalled
    assert kinds(events, "stalled")


def test_with_per_loop_seeds_a_stall_moves_on_to_the_next_loop() -> None:
    critic = FakeCritic(verdict(0.5), verdict(0.5), verdict(0.5))
    state, renderer, _ = run(make(ipl=3, loops=2, policy="per_loop"), critic)
    seeds = [renderer.params(n)["seed"] for n in range(1, len(renderer.workflows) + 1)]
    assert len(seeds) == 2 and seeds[0] != seeds[1]  # loop 1 ended early; loop 2: new seed
    assert state.status == "limits" and state.loop == 2


def test_one_gpu_for_both_servers_takes_turns_and_says_so() -> None:
    spec = make(ipl=3, loops=1, unload_before_render=True)
    spec = dataclasses.replace(spec, comfyui=dataclasses.replace(spec.comfyui,
                                                                 free_before_critique=True))
    critic, renderer = FakeCritic(), FakeRenderer()
    events: list[Event] = []
    Engine(spec, renderer, critic, [events.append], rng=random.Random(0)).run(first_state(spec))
    assert renderer.frees == 3 and critic.unloads == 2  # no unload before the first render
    freed = [(e.key, e.server) for e in events if e.kind == "freed"]
    assert freed == [("loop_01_iter_01", "comfyui"), ("loop_01_iter_02", "critic"),
                     ("loop_01_iter_02", "comfyui"), ("loop_01_iter_03", "critic"),
                     ("loop_01_iter_03", "comfyui")]


def test_max_renders_caps_the_run_whatever_the_loops_allow() -> None:
    spec = make(ipl=3, loops=3)
    spec = dataclasses.replace(spec, limits=specs.Limits(3, 3, max_renders=4))
    state, renderer, events = run(spec, FakeCritic())
    assert state.status == "limits" and state.renders == 4 and len(renderer.workflows) == 4
    assert len(kinds(events, "limits_reached")) == 1


@pytest.mark.parametrize("scores,renders", [((0.5,), 1), ((0.25, 0.5), 2), ((0.0, 0.0, 0.0), 3)])
def test_an_auto_spread_stops_at_the_first_image_better_than_the_best(
        scores: tuple[float, ...], renders: int) -> None:
    """The first verdict asks for nothing, so the next image would repeat it: auto spreads
    three seeds, rendered one by one, and stops at the first that beats the best (0.25)."""
    spec = dataclasses.replace(make(ipl=2, loops=1, policy="stable"),
                               search=specs.Search(verify_done=False, strategy="auto"))
    answers = [verdict(0.25), *(verdict(s) for s in scores)]
    state, renderer, events = run(spec, FakeCritic(*answers))
    spread = [e for e in kinds(events, "candidate_judged") if e.iteration == 2]
    assert len(spread) == renders and len(renderer.workflows) == 1 + renders
    assert len({renderer.params(n)["seed"] for n in range(1, renders + 2)}) == renders + 1


def test_auto_protects_a_met_requirement_in_the_critic_s_alternatives_too() -> None:
    """The critic offers, as an alternative, to take out "a circle" while "A red circle" is
    met: under auto the proposals step drops it, so no image is rendered without it."""
    from imitatoes.loop.verdict import Changes, Check, Verdict

    checks = tuple(Check(r, r == "A red circle") for r in DEMO.requirements)

    def answer(*alternatives: Changes) -> Verdict:
        return Verdict(False, Changes(), "not yet", checks, 0.25, False, alternatives)

    spec = dataclasses.replace(make(ipl=6, loops=1),
                               search=specs.Search(verify_done=False, strategy="auto"))
    offered = answer(Changes(prompt_remove="a circle"), Changes(prompt_append="blue sky"))
    critic = FakeCritic(answer(), answer(), answer(), answer(), offered,
                        *[answer()] * 8)
    _, renderer, events = run(spec, critic)
    made = [e.params.prompt for e in kinds(events, "rendered")]
    assert any("blue sky" in p for p in made), made  # the other alternative was rendered
    assert all("a circle" in p for p in made), made
