"""The critic's prompt template: `{{variable}}` placeholders, nothing more (no logic to debug)."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from imitatoes.files import relative_path

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# Every variable a template may use, and what it holds.
VARIABLES: dict[str, str] = {
    "goal": "the spec's goal",
    "instruction": "further instruction given after a done verdict (empty when none)",
    "requirements": "the requirements as a numbered checklist",
    "prompt": "the positive prompt of the image being judged",
    "negative": "the negative prompt of the image being judged",
    "cfg": "the cfg of the image being judged",
    "steps": "the steps of the image being judged",
    "seed": "the seed of the image being judged",
    "bounds": "the ranges the critic may move cfg and steps in, the size limits, and the "
              "knobs with their bounds and current values",
    "loop": "the loop number (1-based)",
    "iteration": "the iteration number within the loop (1-based)",
    "max_loops": "the spec's max_loops",
    "iterations_per_loop": "the spec's iterations_per_loop",
    "history": "earlier verdicts of this run: what was tried and what the critic said",
}


def variables_in(text: str) -> list[str]:
    return VARIABLE.findall(text)


def unknown_variables(text: str) -> list[str]:
    return sorted({name for name in variables_in(text) if name not in VARIABLES})


def render(text: str, values: dict[str, object]) -> str:
    """Fill every `{{name}}`; a name without a value stays visible rather than vanishing."""
    return VARIABLE.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


def default_template() -> str:
    return resources.files("imitatoes").joinpath("data/critic_prompt.md").read_text("utf-8")


def is_inline(value: str) -> bool:
    """A spec's prompt_template is inline when it spans lines or uses a variable; else a path."""
    return "\n" in value or bool(VARIABLE.search(value))


def template_path(value: str, spec_dir: Path) -> Path | None:
    return None if is_inline(value) else relative_path(spec_dir, value)
