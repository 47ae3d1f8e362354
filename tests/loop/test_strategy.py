"""search.strategy: what each step spends its renders on, from the evidence so far."""

from __future__ import annotations

from imitatoes.loop.state import Tried
from imitatoes.loop.strategy import step
from imitatoes.spec.model import Params, Search

P = Params(prompt="a circle", negative="", cfg=7.0, steps=20, seed=1)
AUTO = Search(verify_done=True, strategy="auto")


def tried(score: float, applied: str, made: str = "one") -> Tried:
    return Tried(1, 1, P, score, "Not yet", applied, made=made)


def test_fixed_spends_what_the_spec_says() -> None:
    fixed = Search(candidates=3, proposals=2)
    assert (step(fixed, [tried(0.5, 'prompt + "red"')] * 3, 9, None).candidates,
            step(fixed, [], 0, None).proposals) == (3, 2)


def test_auto_is_one_image_while_changes_help() -> None:
    assert step(AUTO, [], 0, None).kind == "one"
    rising = [tried(0.25, 'prompt + "red circle"'), tried(0.5, "steps 12 -> 22")]
    assert step(AUTO, rising, 2, None).kind == "one"


RED = "A red circle"


def test_words_that_did_not_meet_their_requirement_try_other_seeds_first() -> None:
    """The words for "A red circle" went in and it is still unmet: the seed is the suspect.
    Words about something else, or a requirement they met, are no such evidence."""
    red = Params("a circle, red circle", "", 7.0, 20, 1)
    before = Tried(1, 1, P, 0.5, "", 'prompt + "red circle"', met=("Sharp",))
    still = Tried(1, 2, red, 0.5, "", "steps 20 -> 25", met=("Sharp",))
    chosen = step(AUTO, [before, still], 2, None, (RED, "Sharp"))
    assert (chosen.kind, chosen.candidates, chosen.fresh_first) == ("seeds", 3, True)
    assert '"A red circle" was still unmet' in chosen.why
    met = Tried(1, 2, red, 1.0, "", "nothing", met=(RED, "Sharp"))
    assert step(AUTO, [before, met], 2, None, (RED, "Sharp")).kind == "one"
    blue = Tried(1, 2, Params("a circle, blue sky", "", 7.0, 20, 1), 0.5, "", "", met=())
    assert step(AUTO, [before, blue], 2, None, (RED, "Sharp")).kind == "one"


def test_seeds_that_did_not_help_ask_for_other_changes() -> None:
    after_seeds = [tried(0.5, 'prompt + "red circle"'), tried(0.5, "nothing", made="seeds")]
    chosen = step(AUTO, after_seeds, 5, None)
    assert (chosen.kind, chosen.candidates, chosen.proposals) == ("proposals", 1, 3)
    after_proposals = [tried(0.5, 'prompt + "x"'), tried(0.5, 'prompt + "y"', "proposals")]
    assert step(AUTO, after_proposals, 5, None).kind == "one"  # not seeds again at once


def test_no_spread_when_the_budget_cannot_hold_it() -> None:
    again = [tried(0.5, 'prompt + "red"'), tried(0.5, "loop_01_iter_02 again? a new seed "
                                                 "instead (123)")]
    assert step(AUTO, again, 8, 10).kind == "one"
    assert step(AUTO, again, 7, 10).kind == "seeds"


def test_a_change_that_would_repeat_an_image_spreads_seeds_instead_of_stalling() -> None:
    again = [tried(0.5, 'prompt + "red"'), tried(0.5, "loop_01_iter_02 again? a new seed "
                                                 "instead (123)")]
    assert step(AUTO, again, 2, None).kind == "seeds"
    assert step(AUTO, again[1:], 1, None).kind == "seeds"  # the first step can know it too


def test_auto_gives_up_after_seeds_twice_and_other_changes_all_in_vain() -> None:
    """What repeats.avoid asks before it moves the seed again instead of stalling."""
    from imitatoes.loop.strategy import exhausted

    rounds = [tried(0.25, "x"), tried(0.5, "x"), tried(0.5, "x", "seeds"),
              tried(0.5, "x", "proposals")]
    assert not exhausted(rounds)  # one spread of seeds is not yet enough
    assert exhausted(rounds, now="seeds")
    assert not exhausted([*rounds, tried(0.75, "x")], now="seeds")  # the best rose: afresh
