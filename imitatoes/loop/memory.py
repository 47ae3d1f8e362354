"""Memory across runs, as values: what a finished run tried and whether it helped (an `Entry`),
and what a new run takes from the entries of earlier ones (`recall`): start values and a few
lines for the critic. Pure: runs/memory.py keeps the entries on disk.

An entry is keyed by what decides whether a lesson carries over: the workflow's shape (its
nodes and links, not its texts), the checkpoint and the critic model. Requirements are matched
by their words, so "A red circle" learns from "a big red circle" but not from "A red square"."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

from imitatoes.loop.patch import content_words, terms, within
from imitatoes.loop.state import Tried
from imitatoes.spec import knobs as knob_rules
from imitatoes.spec.model import Params, Spec

FORMAT = 1
SIMILAR = 0.6  # word overlap (Jaccard) from which two requirements are the same wish
CRITIC_LINES = 5  # what worked before, as the critic is told it
MODEL_INPUTS = ("ckpt_name", "unet_name", "model_name")  # what names the checkpoint


@dataclass(frozen=True)
class Key:
    workflow: str  # a digest of the graph's shape
    checkpoint: str
    critic: str
    renderer: str = "comfyui"  # or "stand-in": its lessons never reach a real run


@dataclass(frozen=True)
class Change:
    kind: str  # prompt, negative, prompt_remove, negative_remove, knob, cfg, steps, seed
    value: Any  # the term, or the value moved to
    knob: str = ""  # kind knob: which

    def text(self) -> str:
        if self.kind in ("prompt", "negative"):
            return f'{self.kind} + "{self.value}"'
        if self.kind in ("prompt_remove", "negative_remove"):
            return f'{self.kind.split("_")[0]} - "{self.value}"'
        if self.kind == "seed":
            return "another seed"
        name = self.knob or self.kind
        return f"{name} {knob_rules.shown(self.value)}"


@dataclass(frozen=True)
class Lesson:
    requirement: str
    change: Change
    helped: bool  # it met the requirement after the change (False: lost it)


@dataclass(frozen=True)
class Entry:
    """One finished run: what it started from, its best image and the requirements that image
    met, and every change's effect on each requirement."""

    run: str
    key: Key
    requirements: tuple[str, ...]
    start: Params
    best: Params
    met: tuple[str, ...]
    lessons: tuple[Lesson, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "run": self.run, "key": vars(self.key),
                "requirements": list(self.requirements), "start": _params(self.start),
                "best": _params(self.best), "met": list(self.met),
                "lessons": [{"requirement": lesson.requirement, "kind": lesson.change.kind,
                             "value": lesson.change.value, "knob": lesson.change.knob,
                             "helped": lesson.helped} for lesson in self.lessons]}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Entry:
        """An entry as read from the store; anything else raises ValueError or TypeError."""
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r} is not {FORMAT}")
        k = d["key"]
        lessons = tuple(Lesson(_text(x["requirement"]), Change(
            _text(x["kind"]), x["value"], _text(x.get("knob", ""))), bool(x["helped"]))
            for x in d["lessons"])
        return Entry(_text(d["run"]), Key(_text(k["workflow"]), _text(k["checkpoint"]),
                                          _text(k["critic"]), _text(k["renderer"])),
                     tuple(map(_text, d["requirements"])), Params.from_dict(d["start"]),
                     Params.from_dict(d["best"]), tuple(map(_text, d["met"])), lessons)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not text: {str(value)[:40]!r}")
    return value


def _params(p: Params) -> dict[str, Any]:
    return {"prompt": p.prompt, "negative": p.negative, "cfg": p.cfg, "steps": p.steps,
            "seed": p.seed, "knobs": [list(k) for k in p.knobs]}


def key_of(spec: Spec, renderer: str = "comfyui") -> Key:
    """What a lesson is valid for: the graph's shape (node types and links, not the widget
    values the loop changes), the checkpoint it loads, the critic model and whether a real
    ComfyUI made the images."""
    shape = sorted(json.dumps([node.get("class_type"), sorted(
        (name, str(v[1])) for name, v in (node.get("inputs") or {}).items()
        if isinstance(v, list) and len(v) == 2)]) for node in spec.workflow.values()
        if isinstance(node, Mapping))
    checkpoint = sorted(str(v) for node in spec.workflow.values() if isinstance(node, Mapping)
                        for name, v in (node.get("inputs") or {}).items()
                        if name in MODEL_INPUTS and isinstance(v, str))
    digest = hashlib.sha256("\n".join(shape).encode()).hexdigest()[:16]
    return Key(digest, ", ".join(checkpoint), spec.critic.model, renderer)


words = content_words  # requirements are matched by the words that carry meaning


def similar(a: str, b: str) -> bool:
    wa, wb = words(a), words(b)
    return bool(wa and wb) and len(wa & wb) / len(wa | wb) >= SIMILAR


def changes(before: Params, after: Params) -> tuple[Change, ...]:
    """What differs between two images' params, as changes one could make again."""
    found = [Change(kind, t) for kind in ("prompt", "negative")
             for t in terms(getattr(after, kind)) if t not in terms(getattr(before, kind))]
    found += [Change(f"{kind}_remove", t) for kind in ("prompt", "negative")
              for t in terms(getattr(before, kind)) if t not in terms(getattr(after, kind))]
    found += [Change(name, getattr(after, name)) for name in ("cfg", "steps", "seed")
              if getattr(after, name) != getattr(before, name)]
    old = dict(before.knobs)
    found += [Change("knob", v, n) for n, v in after.knobs if n in old and old[n] != v]
    return tuple(found)


def closest(earlier: Sequence[Tried], now: Tried) -> Tried:
    """The earlier image `now` differs least from, the latest of equals: the image its change
    was made to, or the best the run went back to."""
    return min(reversed(earlier), key=lambda t: len(changes(t.params, now.params)))


def lessons(history: Sequence[Tried]) -> tuple[Lesson, ...]:
    """Each judged image against the closest earlier one: the requirements it gained were
    helped by each difference about them, those it lost were hurt."""
    judged = [t for t in history if t.score is not None]
    found: list[Lesson] = []
    for j, now in enumerate(judged[1:], 1):
        base = closest(judged[:j], now)
        diff = changes(base.params, now.params)
        found += [Lesson(r, c, True) for r in now.met if r not in base.met for c in diff
                  if _about(c, r)]
        found += [Lesson(r, c, False) for r in base.met if r not in now.met for c in diff
                  if _about(c, r)]
    return tuple(found)


def _about(change: Change, requirement: str) -> bool:
    """Words are credited only to requirements that share a word with them ("red circle"
    did not clean the noise, whatever came with it); a number or a seed may act anywhere."""
    if change.kind not in ("prompt", "negative", "prompt_remove", "negative_remove"):
        return True
    return bool(words(str(change.value)) & words(requirement))


def entry(spec: Spec, renderer: str, run: str, history: Sequence[Tried], best: Params | None,
          met: Sequence[str]) -> Entry:
    return Entry(run, key_of(spec, renderer), tuple(spec.requirements), spec.start,
                 best or spec.start, tuple(met), lessons(history))


@dataclass(frozen=True)
class Recall:
    params: Params  # where the run starts
    applied: tuple[str, ...]  # what memory changed in the start values, in words ("from run
    # ..., which met the same requirements: prompt + "red circle"; seed 42 -> 7")
    critic: tuple[str, ...]  # what worked before for similar requirements, for the critic


def recall(spec: Spec, renderer: str, entries: Iterable[Entry]) -> Recall:
    """Start values and critic lines from the entries for this spec's key: a run that met
    every one of the same requirements is started from (its added words, its seed and knob
    values); otherwise the changes that helped similar requirements more often than they hurt
    are added to the start."""
    key = key_of(spec, renderer)
    mine = [e for e in entries if e.key == key]
    if not mine:
        return Recall(spec.start, (), ())
    same = [e for e in mine if _same_wish(spec.requirements, e) and set(e.met) >=
            set(e.requirements)]
    if same:
        picked = list(changes(same[-1].start, same[-1].best))
        source = f"run {PurePath(same[-1].run).name}, which met the same requirements"
    else:
        picked = [c for c, n in _net(spec.requirements, mine).most_common()
                  if n > 0 and c.kind != "seed"]
        source = "what helped similar requirements"
    params, applied = _start(spec, picked)
    lines = tuple(_critic_lines(spec.requirements, mine))
    return Recall(params, (f"from {source}: " + "; ".join(applied),) if applied else (), lines)


def _same_wish(requirements: Sequence[str], e: Entry) -> bool:
    return len(requirements) == len(e.requirements) and all(
        any(similar(r, old) for old in e.requirements) for r in requirements) and all(
        any(similar(old, r) for r in requirements) for old in e.requirements)


def _net(requirements: Sequence[str], entries: Iterable[Entry]) -> Counter[Change]:
    """Each change: how often it helped a similar requirement, less how often it hurt one."""
    net: Counter[Change] = Counter()
    for e in entries:
        for lesson in e.lessons:
            if any(similar(r, lesson.requirement) for r in requirements):
                net[_general(lesson.change)] += 1 if lesson.helped else -1
    return net


def _general(change: Change) -> Change:
    """Seeds are counted together: a seed that helped says "another seed", not which."""
    return Change("seed", 0) if change.kind == "seed" else change


def _start(spec: Spec, picked: Sequence[Change]) -> tuple[Params, list[str]]:
    """The spec's start with the picked changes, inside the bounds; what was applied."""
    p = spec.start
    for c in picked:
        if c.kind in ("prompt_remove", "negative_remove"):
            kind = c.kind.split("_")[0]
            kept = [t for t in terms(getattr(p, kind)) if t != c.value]
            if kept or kind == "negative":
                p = replace(p, **{kind: ", ".join(kept)})
        elif c.kind in ("prompt", "negative"):
            now = getattr(p, c.kind)
            if c.value not in terms(now):
                p = replace(p, **{c.kind: f"{now}, {c.value}" if now else str(c.value)})
        elif c.kind == "knob" and c.knob in dict(p.knobs):
            p = p.with_knob(c.knob, c.value)
        elif c.kind in ("cfg", "steps", "seed") and isinstance(c.value, int | float):
            p = replace(p, **{c.kind: type(getattr(p, c.kind))(c.value)})
    p, _ = within(p, spec.bounds, spec.knobs)
    if spec.seed.policy == "random":
        p = replace(p, seed=spec.start.seed)
    return p, [c.text() if c.kind != "seed" else f"seed {spec.start.seed} -> {p.seed}"
               for c in changes(spec.start, p)]


def _critic_lines(requirements: Sequence[str], entries: Sequence[Entry]) -> list[str]:
    counts: Counter[tuple[str, Change, bool]] = Counter()
    for e in entries:
        for lesson in e.lessons:
            mine = next((r for r in requirements if similar(r, lesson.requirement)), None)
            if mine is not None:
                counts[(mine, _general(lesson.change), lesson.helped)] += 1
    lines = []
    for (requirement, change, helped), n in counts.most_common(CRITIC_LINES):
        verb = "helped" if helped else "lost it"
        lines.append(f'- for "{requirement}": {change.text()} {verb} ({n} time'
                     f'{"s" if n > 1 else ""})')
    return lines


def describe(entries: Sequence[Entry], shown: int = 8) -> list[str]:
    """`imitatoes memory`: per workflow, checkpoint and critic, the runs and their lessons
    most often seen."""
    groups: dict[Key, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.key, []).append(e)
    lines = []
    for k, runs in groups.items():
        done = sum(set(e.met) >= set(e.requirements) for e in runs)
        lines.append(f"{len(runs)} run(s), {done} met every requirement · workflow "
                     f"{k.workflow} · {k.checkpoint or 'no checkpoint named'} · critic "
                     f"{k.critic}" + (" · on the stand-ins" if k.renderer == "stand-in" else ""))
        counts = Counter((x.requirement, _general(x.change), x.helped)
                         for e in runs for x in e.lessons)
        lines += [f'  "{r}": {c.text()} {"helped" if h else "lost it"} ({n}x)'
                  for (r, c, h), n in counts.most_common(shown)]
    return lines
