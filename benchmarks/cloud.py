"""Comfy Cloud's parallel slots: the same spec with search candidates on the cloud-mode
stand-in (/api, an API key, prompts run N at once), at comfyui.parallel 1 and 3 (the
stand-in's slots set to match, as a subscription tier sets them). Renders take 0.6 s each
(12 steps at 0.05 s); the critic answers in 0.05 s.

    .venv/bin/python benchmarks/cloud.py [rounds]
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _setup import demo_spec

from imitatoes.commands.lifecycle import Run
from imitatoes.loop.events import Event, ImageRendered, IterationStarted
from imitatoes.spec.model import Search
from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from imitatoes.standins.ollama import Behaviour as OllamaBehaviour
from imitatoes.standins.ollama import OllamaStandin

KEY = "benchmark-key"


def one_run(parallel: int) -> tuple[float, float, int]:
    """Seconds the run took, seconds its iterations waited for their renders (from the
    iteration's start to its last image), and renders it made."""
    os.environ["BENCH_CLOUD_KEY"] = KEY
    with ComfyStandin(Behaviour(era="cloud", api_key=KEY, parallel=parallel,
                                step_seconds=0.05)) as comfy, \
            OllamaStandin(OllamaBehaviour(latency=0.05)) as ollama:
        spec = demo_spec(comfy.url, ollama.url, size=256, iterations_per_loop=3, max_loops=1)
        spec = dataclasses.replace(
            spec, search=Search(verify_done=False, candidates=3),
            start=dataclasses.replace(spec.start, steps=12),
            comfyui=dataclasses.replace(spec.comfyui, api_key_env="BENCH_CLOUD_KEY",
                                        parallel=parallel))
        renders: list[float] = []
        began: dict[str, float] = {}
        waited: dict[str, float] = {}

        def count(event: Event) -> None:
            now = time.perf_counter()
            if isinstance(event, IterationStarted):
                began[event.key] = now
            if isinstance(event, ImageRendered):
                renders.append(now)
                key = event.key.split("_c")[0]
                waited[key] = now - began[key]
        with tempfile.TemporaryDirectory() as runs:
            started = time.perf_counter()
            Run.begin(spec, Path(runs)).execute([count])
            return time.perf_counter() - started, sum(waited.values()), len(renders)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"cloud-mode stand-in, search.candidates 3, 0.6 s renders, {rounds} rounds")
    print(f"{'parallel':>8} {'renders':>8} {'run s':>7} {'render wait s':>14} (medians)")
    base = None
    for parallel in (1, 3):
        results = [one_run(parallel) for _ in range(rounds)]
        seconds = statistics.median(r[0] for r in results)
        wait = statistics.median(r[1] for r in results)
        base = base or (seconds, wait)
        print(f"{parallel:>8} {results[0][2]:>8} {seconds:>7.2f} {wait:>14.2f}"
              + (f"   run {seconds / base[0]:.2f}, render wait {wait / base[1]:.2f} of "
                 "parallel 1" if parallel > 1 else ""))


if __name__ == "__main__":
    main()
