"""Scale-out: K specs over N stand-in backends with a fixed render delay; throughput against
one backend.

    .venv/bin/python benchmarks/scale.py [specs] [max_backends]
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from _setup import demo_spec

from imitatoes.commands import batch
from imitatoes.spec.model import Limits
from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from imitatoes.standins.ollama import Behaviour as OllamaBehaviour
from imitatoes.standins.ollama import OllamaStandin

STEP_SECONDS = 0.02  # with 12 to 40 steps: renders of 0.25 to 0.8 s
CRITIC_SECONDS = 0.1


def timed(n: int, k: int) -> float:
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as runs:
        comfies = [stack.enter_context(ComfyStandin(Behaviour(step_seconds=STEP_SECONDS)))
                   for _ in range(n)]
        ollama = stack.enter_context(OllamaStandin(OllamaBehaviour(latency=CRITIC_SECONDS,
                                                               never_done=True)))
        base = demo_spec(comfies[0].url, ollama.url, size=256)
        specs = [dataclasses.replace(base, name=f"s{i}", limits=Limits(3, 1)) for i in range(k)]
        backends = [batch.Backend(c.url, ollama.url) for c in comfies]
        start = time.perf_counter()
        jobs = batch.Batch(specs, backends, Path(runs)).run()
        seconds = time.perf_counter() - start
    assert all(j.status == "limits" for j in jobs), [j.error for j in jobs]
    return seconds


def main(k: int, most: int) -> None:
    one = timed(1, k)
    print(f"{k} specs x 3 renders; render {STEP_SECONDS * 1000:.0f} ms a step, critique "
          f"{CRITIC_SECONDS * 1000:.0f} ms")
    print(f"{'backends':>8} {'seconds':>8} {'speed-up':>9} {'of ideal':>9}")
    print(f"{1:>8} {one:>8.2f} {1.0:>9.2f} {1.0:>9.2f}")
    for n in range(2, most + 1):
        t = timed(n, k)
        print(f"{n:>8} {t:>8.2f} {one / t:>9.2f} {one / t / n:>9.2f}")
    print("target: at least 0.9 of ideal up to 4 backends")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12, int(sys.argv[2]) if len(sys.argv) > 2
         else 4)
