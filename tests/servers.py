"""Helpers shared by tests: fixtures on disk and running stand-ins."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from imitatoes.standins.comfyui import ComfyStandin
from imitatoes.standins.ollama import OllamaStandin

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEMO = str(Path(__file__).resolve().parent.parent / "imitatoes" / "data" / "demo.yaml")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def fixture(kind: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / kind / name).read_text())


def shape(value: Any) -> Any:
    """Keys and value types, with prompt ids as dict keys folded to <id>."""
    if isinstance(value, dict):
        return {("<id>" if UUID.match(str(k)) else k): shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def same_shape(got: Any, want: Any, where: str = "") -> list[str]:
    """Differences in structure; lists compare element by element as far as both go."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{where}: expected an object, got {got!r}"]
        out = []
        if set(got) != set(want):
            out.append(f"{where}: keys {sorted(got)} != {sorted(want)}")
        for key in set(got) & set(want):
            out += same_shape(got[key], want[key], f"{where}.{key}")
        return out
    if isinstance(want, list):
        if not isinstance(got, list):
            return [f"{where}: expected a list, got {got!r}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=False))
                for d in same_shape(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: type {got} != {want}"]


def replay(url: str, request: dict[str, Any]) -> requests.Response:
    """Send a recorded request as it was sent (a deliberately broken body included)."""
    kwargs: dict[str, Any] = {"timeout": 10}
    raw = request.get("raw_body", request.get("body_raw"))  # the two recorders' names
    if "multipart" in request:  # a file field is recorded as "NAME (PNG bytes)"
        fields = request["multipart"]
        kwargs["files"] = {k: (v.split(" ")[0], _png(), "image/png")
                           for k, v in fields.items() if v.endswith("(PNG bytes)")}
        kwargs["data"] = {k: v for k, v in fields.items() if not v.endswith("(PNG bytes)")}
        if not kwargs["files"]:  # still multipart, as the recording was
            kwargs["files"] = {"subfolder": (None, "")}
    elif "body" in request:
        kwargs["json"] = request["body"]
    elif raw is not None:
        kwargs["data"] = raw
        kwargs["headers"] = {"Content-Type": "application/json"}
    return requests.request(request["method"], url + request["path"], **kwargs)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def urls(servers: tuple[ComfyStandin, OllamaStandin]) -> list[str]:
    return ["--comfy-url", servers[0].url, "--ollama-url", servers[1].url]


def only_run(tmp_path: Path) -> Path:
    [run_dir] = list((tmp_path / "runs").iterdir())
    return run_dir


def spawn_run(servers: tuple[Any, Any], tmp_path: Path) -> subprocess.Popen:
    """`imitatoes run` on the demo spec in a process of its own (signals reach it there)."""
    env = {**os.environ, "IMITATOES_RUNS": str(tmp_path / "runs")}
    return subprocess.Popen([sys.executable, "-m", "imitatoes", "run", DEMO, *urls(servers)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(ready: Callable[[], object], proc: subprocess.Popen, timeout: float = 20) -> None:
    """Until ready() is true; fails if the process ends first or the time is up."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "timed out"
        assert proc.poll() is None, f"the process ended early ({proc.returncode})"
        time.sleep(0.02)
