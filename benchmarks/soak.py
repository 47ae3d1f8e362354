"""Soak: many iterations against the stand-ins; does anything grow after warm-up? Resident
memory, open file descriptors and threads, sampled as the run goes.

    .venv/bin/python benchmarks/soak.py [iterations]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from _setup import demo_spec, open_fds, rss_mib, standin_process

from imitatoes.commands.lifecycle import Run
from imitatoes.loop.events import Applied, Event


def main(n: int) -> None:
    samples: list[tuple[int, float, int, int]] = []
    count = 0
    every = max(1, n // 10)

    def sample(event: Event) -> None:
        nonlocal count
        if isinstance(event, Applied):
            count += 1
            if count == 1 or count % every == 0:
                samples.append((count, rss_mib(), open_fds(), threading.active_count()))

    # The stand-ins run in processes of their own: they keep every image and the history in
    # memory as ComfyUI does, which is not ours to measure.
    with standin_process("comfyui", "--step-seconds", "0") as comfy, \
            standin_process("ollama", "--latency", "0") as ollama, \
            tempfile.TemporaryDirectory() as runs:
        requests.post(ollama + "/imitatoes/behaviour", json={"never_done": True}, timeout=5)
        spec = demo_spec(comfy, ollama, size=512, iterations_per_loop=n, max_loops=1)
        start = time.perf_counter()
        Run.begin(spec, Path(runs)).execute([sample])
        seconds = time.perf_counter() - start
    print(f"{n} iterations in {seconds:.1f} s ({seconds / n * 1000:.1f} ms each; 512x512, "
          "stand-ins in their own processes)")
    print(f"{'iteration':>9} {'RSS MiB':>8} {'fds':>5} {'threads':>7}")
    for i, rss, fds, threads in samples:
        print(f"{i:>9} {rss:>8.1f} {fds:>5} {threads:>7}")
    warm = next(s for s in samples if s[0] >= every)
    last = samples[-1]
    print(f"after warm-up (iteration {warm[0]} -> {last[0]}): RSS {last[1] - warm[1]:+.1f} MiB, "
          f"fds {last[2] - warm[2]:+d}, threads {last[3] - warm[3]:+d}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
