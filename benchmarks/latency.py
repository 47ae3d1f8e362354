"""Completion latency: from the stand-in storing a finished prompt in its history to the
client's wait() returning, with the websocket and with polling.

    .venv/bin/python benchmarks/latency.py [prompts]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _setup import median_ms

from imitatoes.clients.comfy import ComfyClient
from imitatoes.standins.comfyui import Behaviour, ComfyStandin
from imitatoes.workflow import api as workflow

SD15 = json.loads((Path(__file__).resolve().parent.parent / "workflows" /
                   "txt2img_sd15.json").read_text())


def measure(server: ComfyStandin, websocket: bool, n: int) -> list[float]:
    client = ComfyClient(server.url, use_websocket=websocket)
    lags = []
    for i in range(n + 1):
        # 5 to 40 steps of 10 ms: renders end at varied times, as real ones do
        prompt = workflow.bind(SD15, {"6.inputs.text": "a red circle", "7.inputs.text": "",
                                      "3.inputs.cfg": 7.0, "3.inputs.steps": 5 + (i * 7) % 36,
                                      "3.inputs.seed": i})
        prompt["5"]["inputs"].update(width=64, height=64)
        sub = client.submit(prompt)
        client.wait(sub.prompt_id, timeout=10)
        known = time.perf_counter()
        if i:  # the first one pays for connecting
            lags.append(known - server.finished_at[sub.prompt_id])
    client.close()
    return lags


def main(n: int) -> None:
    with ComfyStandin(Behaviour(step_seconds=0.01)) as server:
        ws = measure(server, True, n)
        poll = measure(server, False, n)
    for name, lags in (("websocket", ws), ("polling", poll)):
        lags_ms = sorted(x * 1000 for x in lags)
        p90 = lags_ms[int(len(lags_ms) * .9)]
        print(f"{name:9}: median {median_ms(lags):6.2f} ms, p90 {p90:6.2f} ms, "
              f"max {lags_ms[-1]:6.2f} ms over {len(lags)} renders of 0.05-0.4 s")
    print("target: websocket median under 10 ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
