#!/usr/bin/env python3
"""Run the imitatoes loop on a workflow without writing a spec first.

    scripts/run_loop.py --workflow my_api_workflow.json --prompt "a red fox in snow" \\
        --negative-prompt "blurry" --iterations-per-loop 3 --max-loops 2 --model qwen2.5vl:7b

The workflow must be in ComfyUI's API format. The prompt, negative prompt, seed, steps and cfg
are found as `imitatoes init` finds them (the sampler, and the text encoders its conditioning
comes from) and bound by node path, unless tokens (__PROMPT__, __NEG__, __SEED__, __STEPS__,
__CFG__) say where they go. The spec built here
is saved in the run folder, so `imitatoes resume` and later runs can use it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

try:
    import typer
except ImportError:  # started with a python that is not the project's: use the project's
    VENV = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    # sys.prefix, not the executable: a venv's python is often a link to this very file
    if not VENV.is_file() or Path(sys.prefix).resolve() == VENV.parent.parent.resolve():
        sys.exit("imitatoes is not installed for this python; run ./scripts/install.sh first")
    os.execv(VENV, [str(VENV), __file__, *sys.argv[1:]])

from imitatoes.commands import cli, terminal
from imitatoes.commands.lifecycle import Run
from imitatoes.errors import WorkflowError
from imitatoes.spec import load as spec
from imitatoes.spec import starter
from imitatoes.workflow import api as workflow

TOKENS = {"__PROMPT__": "prompt", "__NEG__": "negative", "__CFG__": "cfg",
          "__STEPS__": "steps", "__SEED__": "seed"}


def build(args: argparse.Namespace) -> dict:
    flow = workflow.load(Path(args.workflow))
    found = workflow.tokens(flow)
    requirements = args.requirement or [f"The image shows: {args.prompt}"]
    data = {"name": args.name or name_for(Path(args.workflow)), "goal": args.goal or args.prompt,
            "requirements": requirements,
            "workflow": str(Path(args.workflow).resolve()),
            "bindings": bindings(flow, found),
            "start": {"prompt": args.prompt, "negative": args.negative_prompt},
            "critic": {"model": args.model},
            "limits": {"iterations_per_loop": args.iterations_per_loop,
                       "max_loops": args.max_loops}}
    data["bounds"] = starter.bounds_around(flow, data["bindings"])
    if args.comfy_url:
        data["comfyui"] = {"url": args.comfy_url}
    if args.ollama_url:
        data["critic"]["url"] = args.ollama_url
    return data


def bindings(flow: dict, found: set[str]) -> dict[str, str]:
    """Tokens where the workflow has them; for the rest, the node paths `imitatoes init` would
    bind: the first sampler's numbers and the texts its conditioning comes from (a workflow
    with real values there opens in ComfyUI's UI and runs as it is)."""
    bound = {t: p for t, p in TOKENS.items() if t in found}
    try:
        paths = starter.find(flow).bindings
    except WorkflowError:
        if "prompt" not in bound.values():
            raise
        paths = starter.sampler_numbers(flow)
    return bound | {t: p for t, p in paths.items() if p not in bound.values()
                    and not workflow.TOKEN.fullmatch(t)}


def name_for(workflow_path: Path) -> str:
    """A run name from the workflow's file name (run folders are named after it)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", workflow_path.stem).strip("-._")[:80]
    return slug or "run-loop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", required=True, help="an API-format workflow")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--goal", help="what you want (default: the prompt)")
    parser.add_argument("--requirement", action="append",
                        help="a yes/no requirement the critic checks (repeatable)")
    parser.add_argument("--iterations-per-loop", type=int, default=3)
    parser.add_argument("--max-loops", type=int, default=3)
    parser.add_argument("--comfy-url")
    parser.add_argument("--ollama-url")
    parser.add_argument("--model", default="qwen2.5vl:7b", help="an Ollama vision model")
    parser.add_argument("--name", help="names the run folders (default: the workflow's name)")
    parser.add_argument("--runs-dir", type=Path,
                        help="where run folders go (default: $IMITATOES_RUNS, then ./runs)")
    parser.add_argument("--yes", action="store_true", help="do not ask for more after done")
    args = parser.parse_args(argv)
    try:
        with cli.reported():
            # The workflow is the one the user named on the command line, wherever it is.
            loaded = spec.from_data(build(args), Path.cwd(), allow_outside=True)
            return terminal.drive(Run.begin(loaded, args.runs_dir), yes=args.yes)
    except typer.Exit as exit_:
        return exit_.exit_code


if __name__ == "__main__":
    sys.exit(main())
