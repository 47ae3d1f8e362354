"""`imitatoes bench critic`: how far to trust a critic model. Each model judges a labelled set
(scenes.py) asked exactly as a run asks it (the same prompt builder, schema, image
preparation and retries: judging.ask over the critic client), and head-to-head pairs in both
orders. Per model and category: accuracy, false-met rate (says met when it is not: what makes
false dones), missed rate, answers that broke the schema or needed a retry, head-to-head
accuracy and the share of first-position wins, seconds per answer; then what follows for a
spec. Results are written as they come (results.json), so Ctrl-C keeps what was measured."""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imitatoes.clients.critic import make_critic
from imitatoes.commands.scenes import Case, Pair
from imitatoes.loop import judging, prompts
from imitatoes.runs import folder as runfolder
from imitatoes.spec.model import CriticConfig, Spec

GOAL = "An image that meets every requirement of the checklist."


@dataclass
class Tally:
    """Counts for one model in one category (or all of them)."""

    met_true: int = 0  # labels whose truth is met
    unmet_true: int = 0
    false_met: int = 0  # said met, truly unmet
    missed: int = 0  # said unmet (or nothing), truly met
    answers: int = 0
    broken: int = 0  # no usable verdict after the retries
    retried: int = 0  # an answer that needed a retry
    seconds: float = 0.0

    @property
    def judged(self) -> int:
        return self.met_true + self.unmet_true

    @property
    def accuracy(self) -> float:
        return 1 - (self.false_met + self.missed) / self.judged if self.judged else 0.0

    @property
    def false_met_rate(self) -> float:
        return self.false_met / self.unmet_true if self.unmet_true else 0.0

    @property
    def missed_rate(self) -> float:
        return self.missed / self.met_true if self.met_true else 0.0


@dataclass
class PairTally:
    asked: int = 0
    right: int = 0  # named the image that truly meets more
    first: int = 0  # named the one shown first
    unanswered: int = 0


@dataclass
class ModelResult:
    model: str
    categories: dict[str, Tally] = field(default_factory=dict)
    pairs: PairTally = field(default_factory=PairTally)
    wrong: list[dict[str, Any]] = field(default_factory=list)  # for the HTML page

    def total(self) -> Tally:
        out = Tally()
        for t in self.categories.values():
            for f in dataclasses.fields(Tally):
                setattr(out, f.name, getattr(out, f.name) + getattr(t, f.name))
        return out


def margin(rate: float, n: int) -> float:
    """Two standard errors of a rate measured on n trials (about 95%)."""
    return 2 * math.sqrt(max(rate * (1 - rate), 1 / n) / n) if n else 1.0


def question(spec: Spec, case_labels: Iterable[str]) -> tuple[Spec, str]:
    """The spec a run would have for these requirements, and the question it would ask."""
    asked = dataclasses.replace(spec, goal=GOAL, requirements=tuple(case_labels))
    return asked, prompts.critic_prompt(asked, asked.start, 1, 1)


def bench_model(spec: Spec, config: CriticConfig, cases: list[Case], pairs: list[Pair],
                result: ModelResult, out: Path, answered: Callable[[str], None]) -> None:
    """One model over the whole set, into `result`; `answered` after every answer (the
    caller saves what was measured, so Ctrl-C loses nothing)."""
    critic = make_critic(config)
    try:
        critic.check()  # not pulled, not a vision model, down: doctor's words, before anything
        for n, case in enumerate(cases, 1):
            _judge_case(spec, critic, case, result, out)
            answered(f"{config.model}: image {n} of {len(cases)}")
        for n, pair in enumerate(pairs, 1):
            _judge_pair(spec, critic, pair, result)
            answered(f"{config.model}: pair {n} of {len(pairs)}")
    finally:
        critic.close()


def _judge_case(spec: Spec, critic: Any, case: Case, result: ModelResult, out: Path) -> None:
    asked, prompt = question(spec, (label.text for label in case.labels))
    matched = judging.ask(critic, case.image, prompt, [(r, False) for r in asked.requirements])
    tally = result.categories.setdefault(case.category, Tally())
    attempts = matched.judgement.attempts
    tally.answers += 1
    tally.retried += sum(1 for a in attempts if a.error)
    tally.broken += matched.judgement.verdict is None
    tally.seconds += matched.judgement.seconds
    for label, item in zip(case.labels, matched.items or [None] * len(case.labels),
                           strict=True):
        said = bool(item and item.met)
        tally.met_true += label.met
        tally.unmet_true += not label.met
        if said != label.met:
            tally.false_met += said
            tally.missed += not said
            _keep_wrong(result, case, label.text, label.met, item.observation if item else "",
                        out)


def _keep_wrong(result: ModelResult, case: Case, text: str, truth: bool, said: str,
                out: Path) -> None:
    image = out / "images" / f"{case.key}.png"
    if not image.is_file():
        runfolder.write_atomic(image, case.image)
    result.wrong.append({"image": f"images/{case.key}.png", "category": case.category,
                         "requirement": text, "truth": truth, "observation": said})


def _judge_pair(spec: Spec, critic: Any, pair: Pair, result: ModelResult) -> None:
    """Asked in both orders, as a run's head-to-head is."""
    asked = dataclasses.replace(spec, goal=GOAL, requirements=pair.requirements)
    for first, second, better in ((pair.first, pair.second, pair.better),
                                  (pair.second, pair.first, _other(pair.better))):
        answer = critic.compare(first, second, prompts.pair_prompt(asked, ()))
        result.pairs.asked += 1
        if answer.winner is None:
            result.pairs.unanswered += 1
            continue
        result.pairs.right += answer.winner == better
        result.pairs.first += answer.winner == "first"


def _other(side: str) -> str:
    return "second" if side == "first" else "first"


def advice(result: ModelResult) -> list[str]:
    """What the figures mean for a spec that uses this model."""
    t, p = result.total(), result.pairs
    out = []
    if t.false_met_rate >= 0.1:
        out.append(f"false-met {t.false_met_rate:.0%}: keep search.verify_done on")
    if t.false_met_rate >= 0.3:
        out.append("so many false mets that done is weak evidence: try another model")
    if t.missed_rate >= 0.2:
        out.append(f"missed {t.missed_rate:.0%}: renders get spent on what is already met")
    if t.answers and (t.broken + t.retried) / t.answers >= 0.1:
        out.append("answers often break the schema: raise critic.retries")
    answered = p.asked - p.unanswered
    if answered and not 0.35 <= p.first / answered <= 0.65:
        out.append(f"first position wins {p.first / answered:.0%}: one order is unreliable "
                   "(head-to-head asks both)")
    return out or ["no warning: the loop's checks absorb errors this small"]


def table(results: list[ModelResult]) -> str:
    """The terminal table: a block per model, a line per category, 80 columns."""
    lines = []
    for r in results:
        lines.append(f"{r.model}")
        lines.append(f"  {'category':<16}{'n':>4}{'accuracy':>10}{'false-met':>11}"
                     f"{'missed':>8}{'broken':>8}{'s/answer':>10}")
        for name, t in [*sorted(r.categories.items()), ("all", r.total())]:
            lines.append(f"  {name:<16}{t.judged:>4}{t.accuracy:>10.0%}"
                         f"{t.false_met_rate:>11.0%}{t.missed_rate:>8.0%}"
                         f"{t.broken + t.retried:>8}"
                         f"{t.seconds / t.answers if t.answers else 0:>10.2f}")
        t, p = r.total(), r.pairs
        answered = p.asked - p.unanswered
        lines.append(f"  ± {margin(t.false_met_rate, t.unmet_true):.0%} on false-met, "
                     f"± {margin(t.missed_rate, t.met_true):.0%} on missed (two standard errors)")
        if answered:
            lines.append(f"  head-to-head: right {p.right / answered:.0%}, first position wins "
                         f"{p.first / answered:.0%} of {answered} answers "
                         f"(± {margin(p.first / answered, answered):.0%})")
        lines += [f"  -> {a}" for a in advice(r)]
    return "\n".join(lines)


def to_json(results: list[ModelResult], meta: dict[str, Any]) -> dict[str, Any]:
    models = []
    for r in results:
        t = r.total()
        models.append({
            "model": r.model, "advice": advice(r),
            "all": _figures(t), "categories": {k: _figures(v) for k, v in r.categories.items()},
            "head_to_head": dataclasses.asdict(r.pairs), "wrong": r.wrong})
    return {**meta, "models": models}


def _figures(t: Tally) -> dict[str, Any]:
    return {**dataclasses.asdict(t), "judged": t.judged, "accuracy": round(t.accuracy, 4),
            "false_met_rate": round(t.false_met_rate, 4), "missed_rate": round(t.missed_rate, 4),
            "false_met_margin": round(margin(t.false_met_rate, t.unmet_true), 4),
            "missed_margin": round(margin(t.missed_rate, t.met_true), 4)}


def page(results: list[ModelResult], meta: dict[str, Any]) -> str:
    """A small HTML page: the table, and each wrong answer beside its image."""
    rows = []
    for r in results:
        for w in r.wrong:
            said = "met" if not w["truth"] else "unmet"
            rows.append(f'<tr><td><img src="{html.escape(w["image"])}" width="96"></td>'
                        f"<td>{html.escape(r.model)}</td><td>{html.escape(w['category'])}</td>"
                        f"<td>{html.escape(w['requirement'])}</td><td>said {said}, truly "
                        f"{'met' if w['truth'] else 'unmet'}</td>"
                        f"<td>{html.escape(w['observation'])}</td></tr>")
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>imitatoes bench critic"
            f"</title><style>body{{font:14px sans-serif;margin:2em}}td{{padding:4px 8px;"
            f"vertical-align:top;border-bottom:1px solid #ddd}}</style>"
            f"<h1>bench critic</h1><p>{html.escape(json.dumps(meta))}</p>"
            f"<pre>{html.escape(table(results))}</pre><h2>Wrong answers</h2><table>"
            f"{''.join(rows) or '<tr><td>none</td></tr>'}</table>")


def write(out: Path, results: list[ModelResult], meta: dict[str, Any]) -> None:
    runfolder.write_atomic(out / "results.json", runfolder.to_json(to_json(results, meta)))
    runfolder.write_atomic(out / "report.html", page(results, meta).encode())


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    url: str
    provider: str  # ollama | openai
    cases: list[Case]
    pairs: list[Pair]
    out: Path
    meta: dict[str, Any]


def run(plan: Plan, say: Callable[[str], None]) -> list[ModelResult]:
    """Every model in turn; what was measured is saved after every answer and stays on
    Ctrl-C (results.json and report.html are written however it ends)."""
    from imitatoes.spec import load as specs

    base = specs.load(Path(str(_demo())), env={})
    try:
        (plan.out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise runfolder.RunFolderError(f"cannot create {plan.out}: {exc.strerror}; choose "
                                       "another folder with --runs-dir") from None
    results: list[ModelResult] = []
    try:
        for model in plan.models:
            config = dataclasses.replace(specs.critic_for(plan.url, model),
                                         provider=plan.provider)
            results.append(ModelResult(model))

            def answered(where: str) -> None:
                write(plan.out, results, plan.meta)
                say(where)

            bench_model(base, config, plan.cases, plan.pairs, results[-1], plan.out, answered)
    finally:
        write(plan.out, results, plan.meta)
    return results


def _demo() -> Any:
    from importlib import resources

    return resources.files("imitatoes") / "data" / "demo.yaml"
