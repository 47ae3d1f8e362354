"""The critic's checklist matched to the requirements it was given. Real vision models skip
items, paraphrase them and call a run done early; "done" here means every requirement of the
spec (and every instruction the user added) was judged met. An item the critic left out
counts as unmet."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from imitatoes.loop.verdict import Check


@dataclass(frozen=True)
class Item:
    requirement: str
    met: bool | None  # None: the critic did not judge it (counts as unmet)
    observation: str = ""
    by: str = "missing"  # how the critic's item was found: text, position or missing
    user: bool = False  # added by the user as a further instruction
    region: Any = None  # where the critic says it fails (refine.repair), as it gave it
    fix: str = ""  # and what belongs there


def requirements(spec_requirements: Sequence[str], instructions: Sequence[str]
                 ) -> list[tuple[str, bool]]:
    """Everything the image must satisfy, in checklist order: (text, added by the user)."""
    return [(r, False) for r in spec_requirements] + [(i, True) for i in instructions]


def match(wanted: Sequence[tuple[str, bool]], checks: Sequence[Check]) -> tuple[Item, ...]:
    """Each requirement with the critic's item for it: the same text first (numbering, case and
    punctuation aside), then the same position when the critic gave one item per requirement."""
    free = list(range(len(checks)))
    found: dict[int, tuple[Check, str]] = {}
    for i, (text, _) in enumerate(wanted):
        same = next((j for j in free if _norm(checks[j].requirement) == _norm(text)), None)
        if same is not None:
            free.remove(same)
            found[i] = (checks[same], "text")
    if len(checks) == len(wanted):
        for i in range(len(wanted)):
            if i not in found and i in free:
                free.remove(i)
                found[i] = (checks[i], "position")
    out = []
    for i, (text, user) in enumerate(wanted):
        check, by = found.get(i, (None, "missing"))
        out.append(Item(text, check.met if check else None,
                        check.observation if check else "", by, user,
                        check.region if check else None, check.fix if check else ""))
    return tuple(out)


def reminder(items: Sequence[Item]) -> str:
    """What to tell a critic that left requirements out (it is asked once more)."""
    skipped = [f"{n}. {i.requirement}" for n, i in enumerate(items, 1) if i.met is None]
    return ("\n\nYour last answer did not judge these checklist items: " + "; ".join(skipped)
            + ". Judge every item of the checklist, one entry each, in the order given.")


def merged(first: Sequence[Item], again: Sequence[Item]) -> tuple[Item, ...]:
    """The first answer's items, with what it skipped taken from the second answer."""
    return tuple(replace(b, by="asked again") if a.met is None and b.met is not None else a
                 for a, b in zip(first, again, strict=True))


def majority(answers: Sequence[Sequence[Item]]) -> tuple[Item, ...]:
    """Each requirement as most answers judged it (an answer that left it out votes no); the
    first answer's item stands for the result, with the votes in its observation."""
    first = answers[0]
    out = []
    for n, item in enumerate(first):
        said = [a[n].met is True for a in answers if n < len(a)] + \
            [False] * sum(1 for a in answers if n >= len(a))
        met = sum(said) * 2 > len(said)
        note = f"{sum(said)} of {len(said)} answers: met" if len(said) > 1 else item.observation
        out.append(replace(item, met=met, observation=note))
    return tuple(out)


def score(judged: Sequence[Item]) -> float:
    return sum(j.met is True for j in judged) / len(judged) if judged else 0.0


def _norm(text: str) -> str:
    text = re.sub(r"^\s*\d+[.)]\s*", "", text.lower())
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())
