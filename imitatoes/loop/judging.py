"""Asking the critic and reading its answer against the checklist: one question, a second
for what it skipped, and the strict check of a done claim (search.verify_done). Score and
done come from the matched items, never from the critic's own word."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from imitatoes.loop import checklist
from imitatoes.loop.checklist import Item
from imitatoes.loop.ports import Critic
from imitatoes.loop.verdict import Check, Judgement


@dataclass(frozen=True)
class Matched:
    """A judgement with every requirement matched to the critic's item for it."""

    judgement: Judgement
    items: tuple[Item, ...]
    extra: tuple[Check, ...] = ()  # the critic's items that are no requirement's: not counted

    @property
    def score(self) -> float | None:
        return self.judgement.verdict.score if self.judgement.verdict else None

    @property
    def done(self) -> bool:
        return bool(self.judgement.verdict and self.judgement.verdict.done)


@dataclass(frozen=True)
class Verified:
    matched: Matched
    failed: tuple[str, ...] = ()  # requirements the check found unmet: the claim is rejected


def items(judgement: Judgement, wanted: Sequence[tuple[str, bool]]) -> tuple[Item, ...]:
    return _paired(judgement, wanted).items


def _paired(judgement: Judgement, wanted: Sequence[tuple[str, bool]]) -> checklist.Paired:
    """The answer's checklist against the requirements, matched once: items and extras."""
    verdict = judgement.verdict
    if verdict is None or not verdict.checklist:
        return checklist.Paired((), ())
    return checklist.paired(wanted, verdict.checklist)


def ask(critic: Critic, image: bytes, prompt: str, wanted: Sequence[tuple[str, bool]]
        ) -> Matched:
    """The critic's verdict with every requirement (the spec's and the user's) matched to its
    item; a critic that skipped some is asked once more for those. Score and done come from
    the matched items: one still unjudged counts as unmet."""
    texts = [text for text, _ in wanted]
    judgement = critic.judge(image, prompt, texts)
    first = _paired(judgement, wanted)
    found, extra = first.items, first.extras
    if any(i.met is None for i in found):
        again = critic.judge(image, prompt + checklist.reminder(found), texts)
        second = _paired(again, wanted)
        found = checklist.merged(found, second.items or found)
        extra += second.extras
        judgement = _with(judgement, again)
    verdict = judgement.verdict
    if verdict is None or not found:
        return Matched(judgement, found, extra)
    verdict = replace(verdict, done=all(i.met for i in found), score=checklist.score(found))
    return Matched(replace(judgement, verdict=verdict), found, extra)


def verify(verifier: Critic, image: bytes, prompt: str, wanted: Sequence[tuple[str, bool]],
           claim: Matched) -> Verified:
    """A done claim checked with a strict question before it ends the run. When the check
    disagrees, it is asked once more and each requirement goes by the majority of the
    three answers (a noisy model's single "no" would otherwise reject true dones as often
    as the check catches false ones). A rejected claim goes on with the check's change."""
    texts = [text for text, _ in wanted]
    checks = [verifier.judge(image, prompt, texts)]
    found = [items(checks[0], wanted)]
    if not (found[0] and all(i.met for i in found[0])):
        checks.append(verifier.judge(image, prompt, texts))
        found.append(items(checks[1], wanted))
    votes = checklist.majority([claim.items, *found])
    both = _with(claim.judgement, *checks)
    if all(i.met for i in votes):
        return Verified(Matched(both, votes, claim.extra))  # confirmed
    change = next((c.verdict for c in reversed(checks) if c.verdict and
                   not c.verdict.done), None) or claim.judgement.verdict
    assert change is not None  # a done claim always has a verdict
    verdict = replace(change, done=False, score=checklist.score(votes))
    return Verified(Matched(replace(both, verdict=verdict), votes, claim.extra),
                    tuple(i.requirement for i in votes if not i.met))


def _with(first: Judgement, *more: Judgement) -> Judgement:
    """`first`, with the attempts and time of the further questions added."""
    return replace(first, attempts=first.attempts + tuple(a for j in more for a in j.attempts),
                   seconds=first.seconds + sum(j.seconds for j in more))
