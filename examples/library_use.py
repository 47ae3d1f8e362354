"""imitatoes as a library: load a spec, run the engine with a listener of your own.

    python examples/library_use.py                  # against loopback stand-ins, no GPU
    python examples/library_use.py specs/red-fox.yaml --real   # against your ComfyUI and Ollama
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from imitatoes.commands.lifecycle import Run
from imitatoes.loop.events import Event, Judged
from imitatoes.spec import load as spec
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin

DEMO = Path(__file__).resolve().parent.parent / "imitatoes" / "data" / "demo.yaml"


def my_listener(event: Event) -> None:
    """Any callable that takes an Event (one dataclass per kind, see imitatoes/events.py):
    here, a one-line log of verdicts."""
    if isinstance(event, Judged):
        v = event.judgement.verdict
        print(f"{event.key}: {'done' if v and v.done else v.reason if v else 'no verdict'}")


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv and not argv[0].startswith("--") else DEMO
    with contextlib.ExitStack() as stack:
        env = None
        if "--real" not in argv:
            comfy = stack.enter_context(ComfyStandin())
            ollama = stack.enter_context(OllamaStandin())
            env = {"IMITATOES_COMFY_URL": comfy.url, "IMITATOES_OLLAMA_URL": ollama.url}
        loaded = spec.load(path, env=env)
        run = Run.begin(loaded, Path("runs"))  # checks servers and model, makes the folder
        outcome = run.execute([my_listener])  # the report is written however it ends
        print(f"{outcome.state.status} after {outcome.state.renders} renders: {outcome.run_dir}")
        return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
