"""What the critic is told about one image: the spec's template filled with the goal, the
checklist, how the image was made, what may change, and what was already tried."""

from __future__ import annotations

from collections.abc import Sequence

from imitatoes.loop import checklist
from imitatoes.loop.state import Tried
from imitatoes.spec import template
from imitatoes.spec.knobs import Knob, shown
from imitatoes.spec.model import Bounds, Params, Spec


def bounds_text(bounds: Bounds, knobs: Sequence[Knob] = (), params: Params | None = None
                ) -> str:
    c, s = bounds.cfg, bounds.steps
    text = (f"cfg {c.min:g} to {c.max:g} (at most {c.max_delta:g} per round), steps "
            f"{s.min:g} to {s.max:g} (at most {s.max_delta:g} per round), the prompt at most "
            f"{bounds.prompt_max_chars} characters, the negative prompt at most "
            f"{bounds.negative_max_terms} comma-separated terms. Words can also go: in "
            "`changes`, prompt_remove and neg_remove take terms out (a word that causes a "
            "fault); prompt_weight {\"term\": ..., \"weight\": ...} weights a term of the "
            f"prompt from {2 - bounds.prompt_max_weight:g} to {bounds.prompt_max_weight:g}; "
            "prompt_rewrite replaces the whole prompt (it must keep at least "
            f"{bounds.rewrite_keeps:.0%} of the goal's words)")
    if not knobs:
        return text
    now = dict(params.knobs) if params else {}
    lines = [f"- {k.name}: {k.describe()}" +
             (f" (now {shown(now[k.name])})" if k.name in now else "") for k in knobs]
    return (text + ".\nThese settings too, each named inside `changes` like cfg (null for no "
            "change; no other names):\n" + "\n".join(lines))


def _settings(params: Params) -> str:
    values = [f"cfg {params.cfg:g}", f"steps {params.steps}", f"seed {params.seed}"]
    return ", ".join(values + ([params.knob_text(", ")] if params.knobs else []))


def history_text(tried: Sequence[Tried], limit: int) -> str:
    if not tried or limit <= 0:
        return "(none yet: this is the first image)"
    lines = []
    for t in list(tried)[-limit:]:
        score = "" if t.score is None else f", score {t.score:.2f}"
        said = (f" It met what the best so far did not: {'; '.join(t.gained)}." if t.gained
                else "") + (f" It lost: {'; '.join(t.lost)}." if t.lost else "")
        lines.append(f"- loop {t.loop} iteration {t.iteration} ({_settings(t.params)}{score}): "
                     f"{t.reason}{said} Changed: {t.applied}.")
    return "\n".join(lines)


def remembered_text(lines: Sequence[str]) -> str:
    """Memory across runs, under the history (so a template of the user's gets it too)."""
    if not lines:
        return ""
    return ("\nWhat worked before, in earlier runs, for similar requirements (a hint, not a "
            "rule):\n" + "\n".join(lines))


def critic_prompt(spec: Spec, params: Params, loop: int, iteration: int,
                  tried: Sequence[Tried] = (), instructions: Sequence[str] = (),
                  remembered: Sequence[str] = ()) -> str:
    wanted = checklist.requirements(spec.requirements, instructions)
    first_users = len(spec.requirements) + 1
    values = {
        "goal": spec.goal,
        "instruction": (f"Further instruction from the user: {'; '.join(instructions)} "
                        f"(checklist item {first_users} on).\n") if instructions else "",
        "requirements": "\n".join(f"{i}. {r}" for i, (r, _) in enumerate(wanted, 1)),
        "prompt": params.prompt, "negative": params.negative or "(empty)",
        "cfg": f"{params.cfg:g}", "steps": params.steps, "seed": params.seed,
        "bounds": bounds_text(spec.bounds, spec.knobs, params),
        "loop": loop, "iteration": iteration,
        "max_loops": spec.limits.max_loops,
        "iterations_per_loop": spec.limits.iterations_per_loop,
        "history": history_text(tried, spec.critic.history) + remembered_text(remembered),
    }
    return template.render(spec.critic.prompt_template, values)


VERIFY = """You are checking a claim that the attached image meets every requirement below. Be
strict: a requirement is met only when you can clearly see it in the image; when in doubt, it
is not met. Another judge already said yes; your job is to catch what it missed.

Goal: {goal}
Checklist (the image is done only when every item holds):
{requirements}

How the image was made:
- prompt: {prompt}
- negative prompt: {negative}

For each checklist item say met or not and what you see. If every item is met, answer
done: true with no changes. Otherwise answer done: false and ONE small change for the most
important unmet item (a few words for prompt_append or neg_append).

Answer with JSON only, in this shape:
{{"checklist": [{{"requirement": "...", "met": true, "observation": "..."}}],
 "done": false,
 "changes": {{"prompt_append": "", "neg_append": "", "cfg": null, "steps": null, "seed": "keep"}},
 "reason": "one short sentence"}}"""


def with_regions(prompt: str, on: bool) -> str:
    """refine.repair: the critic may point at where a requirement fails."""
    if not on:
        return prompt
    return (prompt + "\n\nFor an unmet requirement that fails in one part of the image, add "
            "to its checklist item \"region\": [x0, y0, x1, y1] (0 to 1000, from the top "
            "left of this image) and \"fix\": what should be there. Only that region will be "
            "repainted; leave region out when the whole image is wrong.")


def with_proposals(prompt: str, k: int) -> str:
    """search.proposals: the question also asks for other changes worth trying."""
    if k <= 1:
        return prompt
    return (prompt + f"\n\nAlso give up to {k - 1} other changes worth trying instead of "
            "`changes`, in `alternatives` (each in the same shape as `changes`), most "
            "promising first; each will be rendered and judged, and the best goes on.")


def verify_prompt(spec: Spec, params: Params, instructions: Sequence[str] = ()) -> str:
    """The strict second question asked before a done verdict ends the run."""
    wanted = checklist.requirements(spec.requirements, instructions)
    return VERIFY.format(goal=spec.goal, prompt=params.prompt,
                         negative=params.negative or "(empty)",
                         requirements="\n".join(f"{i}. {r}" for i, (r, _) in
                                                 enumerate(wanted, 1)))


PAIR = """Two images were made for the same goal. Look at both and say which one meets the
checklist better, item by item; prefer the one with more items met, then the cleaner one.
The first image is attached first.

Goal: {goal}
Checklist:
{requirements}

Answer with JSON only: {{"winner": "first" or "second", "reason": "one short sentence"}}"""


def pair_prompt(spec: Spec, instructions: Sequence[str] = ()) -> str:
    """The head-to-head question (search.head_to_head)."""
    wanted = checklist.requirements(spec.requirements, instructions)
    return PAIR.format(goal=spec.goal, requirements="\n".join(
        f"{i}. {r}" for i, (r, _) in enumerate(wanted, 1)))
