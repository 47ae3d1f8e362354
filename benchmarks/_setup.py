"""Shared set-up for the benchmarks: stand-ins, a 1024x1024 spec, and small statistics."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from imitatoes.spec import load as specs


def demo_spec(comfy_url: str, ollama_url: str, size: int = 1024, **limits: int) -> specs.Spec:
    path = Path(str(resources.files("imitatoes") / "data" / "demo.yaml"))
    spec = specs.load(path, env={"IMITATOES_COMFY_URL": comfy_url,
                                 "IMITATOES_OLLAMA_URL": ollama_url})
    flow = {k: dict(v, inputs=dict(v["inputs"])) for k, v in spec.workflow.items()}
    flow["5"]["inputs"].update(width=size, height=size)
    spec = dataclasses.replace(spec, workflow=flow,
                               seed=specs.SeedPolicy("critic", False),
                               start=dataclasses.replace(spec.start, steps=25))
    if limits:
        spec = dataclasses.replace(spec, limits=specs.Limits(**limits))
    return spec


@contextlib.contextmanager
def standin_process(kind: str, *args: str) -> Iterator[str]:
    """A stand-in in a process of its own; its URL. Its request log (a line per request) is
    read and dropped: a pipe nobody reads fills after ~800 lines and stalls the server."""
    proc = subprocess.Popen([sys.executable, "-m", "imitatoes", "standin", kind, "--port", "0",
                             *args], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split(" on ")[1].split()[0]
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
