"""Our overhead per iteration: the engine with the real clients against zero-latency stand-ins
(1024x1024 renders), against the bare minimum the same work needs, in the same run.

    .venv/bin/python benchmarks/overhead.py [iterations]
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import websocket
from _setup import demo_spec, median_ms
from PIL import Image

from imitatoes.commands.lifecycle import Run
from imitatoes.loop import binder
from imitatoes.loop import prompts as critic_prompt
from imitatoes.loop.events import Applied, Event, IterationStarted
from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from imitatoes.standins.ollama import Behaviour as OllamaBehaviour
from imitatoes.standins.ollama import OllamaStandin


def engine_iterations(spec, n: int) -> list[float]:
    starts: dict[str, float] = {}
    times: list[float] = []

    def clock(event: Event) -> None:
        if isinstance(event, IterationStarted):
            starts[event.key] = time.perf_counter()
        elif isinstance(event, Applied):
            times.append(time.perf_counter() - starts[event.key])

    with tempfile.TemporaryDirectory() as runs:
        Run.begin(spec, Path(runs)).execute([clock])
    return times[1:n + 1]  # the first iteration pays for connecting


def bare_iterations(spec, n: int, comfy_url: str, ollama_url: str) -> list[float]:
    """The same work in the fewest lines: submit, wait, fetch, shrink, one chat call."""
    client_id = str(uuid.uuid4())
    ws = websocket.create_connection(f"{comfy_url.replace('http', 'ws')}/ws?clientId={client_id}")
    http = requests.Session()
    prompt = critic_prompt.critic_prompt(spec, spec.start, 1, 1)
    times = []
    for i in range(n + 1):
        t = time.perf_counter()
        flow = binder.bind(spec, spec.start.__class__(**{**spec.start.__dict__, "seed": 1000 + i}))
        pid = http.post(f"{comfy_url}/prompt", json={"prompt": flow, "client_id": client_id}
                        ).json()["prompt_id"]
        while True:
            msg = json.loads(ws.recv())
            if msg["type"] == "executing" and msg["data"]["node"] is None \
                    and msg["data"]["prompt_id"] == pid:
                break
        image = http.get(f"{comfy_url}/history/{pid}").json()[pid]["outputs"]["9"]["images"][0]
        png = http.get(f"{comfy_url}/view", params=image).content
        img = Image.open(io.BytesIO(png)).convert("RGB")
        img.thumbnail((1024, 1024))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        import base64
        http.post(f"{ollama_url}/api/chat", json={
            "model": spec.critic.model, "stream": False, "messages": [
                {"role": "user", "content": prompt,
                 "images": [base64.b64encode(out.getvalue()).decode()]}]}).json()
        times.append(time.perf_counter() - t)
    ws.close()
    return times[1:]


def main(n: int, rounds: int = 6) -> None:
    bare: list[float] = []
    ours: list[float] = []
    with ComfyStandin(Behaviour()) as comfy, \
            OllamaStandin(OllamaBehaviour(never_done=True)) as ollama:
        spec = demo_spec(comfy.url, ollama.url, iterations_per_loop=n + 1, max_loops=1)
        for _ in range(rounds):  # interleaved, so drift on a busy machine hits both alike
            bare += bare_iterations(spec, n, comfy.url, ollama.url)
            ours += engine_iterations(spec, n)
    bare_ms = median_ms(bare)
    ours_ms = median_ms(ours)
    overhead = ours_ms - bare_ms
    print(f"iterations: {len(ours)} engine, {len(bare)} bare, in {rounds} interleaved rounds; "
          "1024x1024 renders")
    print(f"bare minimum median: {bare_ms:7.1f} ms")
    print(f"imitatoes    median: {ours_ms:7.1f} ms")
    print(f"ratio: {ours_ms / bare_ms:.3f}  (target <= 1.15)")
    print(f"our overhead: {overhead:.1f} ms = {overhead / 3000 * 100:.2f}% of a 2 s render + "
          "1 s critique (target < 5%)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
