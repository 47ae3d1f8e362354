"""The engine's contract with its listeners: typed events that carry copies."""

from __future__ import annotations

import dataclasses
import random

import pytest

from imitatoes.loop import events as ev
from imitatoes.loop.engine import Engine
from imitatoes.loop.state import first_state
from tests.doubles import FakeCritic, FakeRenderer, verdict
from tests.loop.test_engine import make


def test_every_kind_has_its_own_class_and_every_class_a_kind() -> None:
    classes = [c for c in vars(ev).values() if isinstance(c, type) and issubclass(c, ev.Event)
               and c is not ev.Event]
    assert sorted(c.kind for c in classes) == sorted(ev.KINDS)
    assert all(ev.KINDS[c.kind] is c for c in classes)


def test_a_misspelt_handler_is_an_error_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="on_renderd handles no event"):
        class Typo(ev.Handler):
            def on_renderd(self, event: ev.Event) -> None: ...


def test_handlers_are_called_by_the_type_of_the_event() -> None:
    seen: list[str] = []

    class Watcher(ev.Handler):
        def on_done(self, event: ev.Done) -> None:
            seen.append(f"done {event.key}")

        def on_applied(self, event: ev.Applied) -> None:
            seen.append(f"applied {event.score}")

    spec = make(ipl=3, loops=1)
    critic = FakeCritic(verdict(0.5, prompt_append="red"), verdict(1.0, done=True))
    Engine(spec, FakeRenderer(), critic, [Watcher()], rng=random.Random(0)).run(first_state(spec))
    assert seen == ["applied 0.5", "applied 1.0", "done loop_01_iter_02"]


def test_events_are_frozen_and_carry_copies_of_the_state() -> None:
    events: list[ev.Event] = []
    spec = make(ipl=3, loops=1)
    state = first_state(spec)
    Engine(spec, FakeRenderer(), FakeCritic(verdict(0.25, prompt_append="red"),
                                            verdict(0.5, prompt_append="blue"),
                                            verdict(0.75)),
           [events.append], rng=random.Random(0)).run(state)
    ended = [e for e in events if isinstance(e, ev.IterationEnded)]
    # Kept from the first iteration, the event still says what was true then.
    assert [len(e.state.history) for e in ended] == [1, 2]
    assert ended[0].state.best.key == "loop_01_iter_01" and state.best.key == "loop_01_iter_03"
    assert ended[0].state is not state and ended[0].state.history is not state.history
    with pytest.raises(dataclasses.FrozenInstanceError):
        ended[0].key = "x"  # type: ignore[misc]
    applied = [e for e in events if isinstance(e, ev.Applied)]
    assert [e.state.best.score for e in applied] == [0.25, 0.5, 0.75]


def test_log_lines_hold_the_scalar_fields() -> None:
    event = ev.Applied(loop=1, iteration=2, key="loop_01_iter_02", patch=None, reverted=None,
                       score=0.5, state=first_state(make()))
    assert event.scalars() == {"loop": 1, "iteration": 2, "key": "loop_01_iter_02",
                               "score": 0.5}
