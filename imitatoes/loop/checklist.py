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


CLOSE = 0.5  # word overlap (Dice) at which an item's text is taken for a requirement's
NEAR = 0.25  # enough overlap for the item at a requirement's own position to be its
STOP = frozenset(["a", "an", "the", "is", "are", "be", "there", "this", "that", "it", "its",
                  "of", "in", "on", "at", "to", "and", "or", "with", "has", "have", "any",
                  "image", "picture", "photo"])
SPELLING = {"center": "centre", "centered": "centred", "color": "colour", "colors": "colours",
            "gray": "grey", "single": "one", "1": "one", "2": "two", "3": "three", "4": "four",
            "5": "five"}
NEGATIONS = frozenset(["no", "not", "without", "never", "none", "free"])
# Words that change what a requirement means: two texts that disagree on them are never taken
# for each other, however many other words they share ("a red circle" is no "blue circle").
COLOURS = frozenset(["red", "orange", "yellow", "green", "blue", "purple", "violet", "pink",
                     "brown", "black", "white", "grey", "cyan", "magenta", "gold", "silver"])
COUNTS = frozenset(["one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                    "ten", "pair", "both", "many", "several"])


@dataclass(frozen=True)
class Paired:
    items: tuple[Item, ...]  # each requirement with the critic's item for it
    extras: tuple[Check, ...]  # the critic's items that are no requirement's


def paired(wanted: Sequence[tuple[str, bool]], checks: Sequence[Check]) -> Paired:
    """Each requirement with the critic's item for it, never guessed across meanings: the
    same text (numbering, case and punctuation aside), then the closest paraphrase (most
    words in common, at least CLOSE), then the item at the requirement's own position when
    that item names no requirement ("1", "") or is NEAR the requirement's text. An item
    that matches nothing is an extra: kept, never counted."""
    found = _by_text(wanted, checks)
    found.update(_by_position(wanted, checks, found))
    out = []
    for i, (text, user) in enumerate(wanted):
        j, by = found.get(i, (None, "missing"))
        check = checks[j] if j is not None else None
        out.append(Item(text, check.met if check else None,
                        check.observation if check else "", by, user,
                        check.region if check else None, check.fix if check else ""))
    used = {j for j, _ in found.values()}
    return Paired(tuple(out), tuple(c for j, c in enumerate(checks) if j not in used))


def match(wanted: Sequence[tuple[str, bool]], checks: Sequence[Check]) -> tuple[Item, ...]:
    return paired(wanted, checks).items


def extras(wanted: Sequence[tuple[str, bool]], checks: Sequence[Check]) -> tuple[Check, ...]:
    return paired(wanted, checks).extras


def similarity(a: str, b: str) -> float:
    """Words in common, as a share of both (Dice), after numbering, case, punctuation, a few
    spellings, filler words and plural endings are set aside: 1.0 for the same words; 0.0
    when the two disagree on a colour, a count, or whether a word they share is negated."""
    x, y = _words(a), _words(b)
    if not x or not y or _conflict(a, b, x & y):
        return 0.0
    return 2 * len(x & y) / (len(x) + len(y))


def _near(item: str, requirement: str) -> bool:
    """Close enough to be the item for the requirement at its position: it shares a word that
    is more than a colour or a count, and disagrees on none."""
    shared = _plain(item) & _plain(requirement)
    return bool(shared - COLOURS - COUNTS - STOP) and similarity(item, requirement) >= NEAR


def _conflict(a: str, b: str, shared: frozenset[str]) -> bool:
    for kind in (COLOURS, COUNTS):
        one, other = _plain(a) & kind, _plain(b) & kind
        if one and other and not one & other:
            return True
    return bool((_negated(a) ^ _negated(b)) & shared)


def _negated(text: str) -> frozenset[str]:
    """Words a negation governs: those after "no", "not", "without"... to the clause's end."""
    out: set[str] = set()
    for clause in re.split(r"[,.;:]", text.lower()):
        words = clause.split()
        at = next((n for n, w in enumerate(words) if w in NEGATIONS), None)
        if at is not None:
            out |= _words(" ".join(words[at + 1:]))
    return frozenset(out)


def _by_text(wanted: Sequence[tuple[str, bool]], checks: Sequence[Check]
             ) -> dict[int, tuple[int, str]]:
    """Requirement index -> (item index, "text" or "paraphrase"), best pairs first."""
    pairs = []
    for i, (text, _) in enumerate(wanted):
        for j, check in enumerate(checks):
            same = _norm(check.requirement) == _norm(text)
            score = 2.0 if same else similarity(check.requirement, text)
            if score >= CLOSE:
                pairs.append((-score, i, j, "text" if same else "paraphrase"))
    found: dict[int, tuple[int, str]] = {}
    taken: set[int] = set()
    for _, i, j, by in sorted(pairs):
        if i not in found and j not in taken:
            found[i] = (j, by)
            taken.add(j)
    return found


def _by_position(wanted: Sequence[tuple[str, bool]], checks: Sequence[Check],
                 found: dict[int, tuple[int, str]]) -> dict[int, tuple[int, str]]:
    taken = {j for j, _ in found.values()}
    out = {}
    for i, (text, _) in enumerate(wanted):
        if i in found or i >= len(checks) or i in taken:
            continue
        item = checks[i].requirement
        unnamed = all(w.isdigit() for w in _norm(item).split()) and len(checks) == len(wanted)
        if unnamed or _near(item, text):
            out[i] = (i, "position")
            taken.add(i)
    return out


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


def _plain(text: str) -> frozenset[str]:
    """The words as written (numbering, case and punctuation aside, a few spellings mapped)."""
    return frozenset(SPELLING.get(w, w) for w in _norm(text).split())


def _words(text: str) -> frozenset[str]:
    """The words that carry the meaning, each cut to a stem ("circles" -> "circle")."""
    out = set()
    for word in _norm(text).split():
        word = SPELLING.get(word, word)
        if word in STOP or word in NEGATIONS:
            continue
        out.add(_stem(word))
    return frozenset(out)


def _stem(word: str) -> str:
    """"circles", "circle" -> "circl"; "painted", "painting" -> "paint"; "centre", "centred"
    -> "centr": crude, but the same for a word's common forms."""
    for end in ("ing", "ed", "es", "s"):
        if len(word) > len(end) + 2 and word.endswith(end):
            word = word[:-len(end)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word
