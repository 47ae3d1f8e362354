"""What the critic is told about one image: the spec's template filled with the goal, the
checklist, how the image was made, what may change, and what was already tried."""

from __future__ import annotations

from collections.abc import Sequence

from . import checklist, template
from .spec import Bounds, Params, Spec
from .state import Tried


def bounds_text(bounds: Bounds) -> str:
    c, s = bounds.cfg, bounds.steps
    return (f"cfg {c.min:g} to {c.max:g} (at most {c.max_delta:g} per round), steps "
            f"{s.min:g} to {s.max:g} (at most {s.max_delta:g} per round), the prompt at most "
            f"{bounds.prompt_max_chars} characters, the negative prompt at most "
            f"{bounds.negative_max_terms} comma-separated terms")


def history_text(tried: Sequence[Tried], limit: int) -> str:
    if not tried or limit <= 0:
        return "(none yet: this is the first image)"
    lines = []
    for t in list(tried)[-limit:]:
        score = "" if t.score is None else f", score {t.score:.2f}"
        lines.append(f"- loop {t.loop} iteration {t.iteration} (cfg {t.params.cfg:g}, steps "
                     f"{t.params.steps}, seed {t.params.seed}{score}): {t.reason} Changed: "
                     f"{t.applied}.")
    return "\n".join(lines)


def critic_prompt(spec: Spec, params: Params, loop: int, iteration: int,
                  tried: Sequence[Tried] = (), instructions: Sequence[str] = ()) -> str:
    wanted = checklist.requirements(spec.requirements, instructions)
    first_users = len(spec.requirements) + 1
    values = {
        "goal": spec.goal,
        "instruction": (f"Further instruction from the user: {'; '.join(instructions)} "
                        f"(checklist item {first_users} on).\n") if instructions else "",
        "requirements": "\n".join(f"{i}. {r}" for i, (r, _) in enumerate(wanted, 1)),
        "prompt": params.prompt, "negative": params.negative or "(empty)",
        "cfg": f"{params.cfg:g}", "steps": params.steps, "seed": params.seed,
        "bounds": bounds_text(spec.bounds), "loop": loop, "iteration": iteration,
        "max_loops": spec.limits.max_loops,
        "iterations_per_loop": spec.limits.iterations_per_loop,
        "history": history_text(tried, spec.critic.history),
    }
    return template.render(spec.critic.prompt_template, values)
