"""report.html rewrite time as runs grow: the report is rewritten after every iteration, so
its cost must stay small next to a render. Builds run folders of n iterations at 1024x1024
(and 20 at 2048x2048) from a real run against the stand-ins, then times one rewrite.

    .venv/bin/python benchmarks/report.py [n]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _setup import demo_spec

from imitatoes.commands.lifecycle import Run
from imitatoes.runs import folder as runfolder
from imitatoes.runs import report
from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin


def grown(source: Path, target: Path, n: int) -> Path:
    """`source` (one real run) copied until it has n iterations, 5 to a loop."""
    shutil.copytree(source, target)
    records = sorted(source.glob("loop_*.json"))
    for i in range(n):
        key = f"loop_{i // 5 + 1:02d}_iter_{i % 5 + 1:02d}"
        model = records[i % len(records)]
        data = json.loads(model.read_text())
        data.update(key=key, loop=i // 5 + 1, iteration=i % 5 + 1)
        (target / f"{key}.json").write_text(json.dumps(data))
        shutil.copyfile(model.with_suffix(".png"), target / f"{key}.png")
        shutil.copyfile(source / "thumbs" / f"{model.stem}.jpg", target / "thumbs" / f"{key}.jpg")
    return target


def timed(run_dir: Path) -> tuple[float, int]:
    state = runfolder.read_state(run_dir)
    start = time.perf_counter()
    report.write(run_dir, state)
    return time.perf_counter() - start, (run_dir / "report.html").stat().st_size


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, ComfyStandin() as comfy, \
            OllamaStandin() as ollama:
        for size, count in ((1024, n), (1024, 20), (2048, 20)):
            spec = demo_spec(comfy.url, ollama.url, size=size)
            run = Run.begin(spec, Path(tmp) / f"src{size}")
            run.execute()
            folder = grown(run.dir, Path(tmp) / f"grown{size}_{count}", count)
            seconds, size_bytes = timed(folder)
            print(f"{count:4d} iterations at {size}x{size}: one rewrite {seconds * 1000:.0f} ms, "
                  f"report {size_bytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
