"""The whole command, process start to exit: `imitatoes run` for 20 iterations against instant
stand-ins (in processes of their own) with 1024x1024 photo-like renders, against a bare loop
script making the same calls in a process of its own (imports, submit, websocket wait,
history, image fetch, shrink to JPEG, one chat call per iteration). Interleaved rounds.

    .venv/bin/python benchmarks/command.py [iterations] [rounds]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from _setup import standin_process

from imitatoes.loop import prompts as critic_prompt
from imitatoes.loop import verdict
from imitatoes.spec import load as specs

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

BARE = r'''
import base64, io, json, sys, uuid
import requests, websocket
from PIL import Image
comfy, ollama, n, flow_path, ask = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], \
    json.load(open(sys.argv[5]))
template = open(flow_path).read()
cid = str(uuid.uuid4())
ws = websocket.create_connection(comfy.replace("http", "ws") + "/ws?clientId=" + cid)
http = requests.Session()
for i in range(n):
    flow = json.loads(template.replace("__SEED__", str(1000 + i))
                      .replace("__STEPS__", str(ask["steps"])).replace("__CFG__", str(ask["cfg"])))
    pid = http.post(comfy + "/prompt", json={"prompt": flow, "client_id": cid}).json()["prompt_id"]
    while True:
        msg = json.loads(ws.recv())
        if msg["type"] == "executing" and msg["data"]["node"] is None \
                and msg["data"]["prompt_id"] == pid:
            break
    image = http.get(comfy + "/history/" + pid).json()[pid]["outputs"]["9"]["images"][0]
    img = Image.open(io.BytesIO(http.get(comfy + "/view", params=image).content)).convert("RGB")
    img.thumbnail((1024, 1024))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    http.post(ollama + "/api/chat", json={"model": "qwen2.5vl:7b", "stream": False,
              "format": ask["format"], "messages": [{"role": "user", "content": ask["prompt"],
              "images": [base64.b64encode(out.getvalue()).decode()]}]}).json()
'''


def spec_folder(folder: Path, n: int) -> Path:
    """The demo spec at 1024x1024 with n iterations, its workflow beside it."""
    data = ROOT / "imitatoes" / "data"
    flow = json.loads((data / "demo_workflow.json").read_text())
    latent = next(node for node in flow.values() if node["class_type"] == "EmptyLatentImage")
    latent["inputs"].update(width=1024, height=1024)
    (folder / "demo_workflow.json").write_text(json.dumps(flow))
    text = (data / "demo.yaml").read_text()
    (folder / "spec.yaml").write_text(text)
    return folder / "spec.yaml"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode not in (0, 3):  # 3: the limits, as a never-done critic makes them
        sys.exit(f"{argv[:4]} failed ({done.returncode}): {done.stderr[-500:]}")
    return time.perf_counter() - start


def main(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            standin_process("comfyui", "--step-seconds", "0", "--grain", "0.1") as comfy, \
            standin_process("ollama", "--latency", "0") as ollama:
        # The critic never approves and never asks for a change that alters the picture (new
        # seeds aside): both sides render the spec's start parameters, so the stand-in paints
        # the same images for both (a critic's "blue background" costs the painter 5 ms more).
        requests.post(ollama + "/imitatoes/behaviour", json={"never_done": True, "tune": {
            "prompt_append": "", "neg_append": "", "cfg": None, "steps": None}}, timeout=5)
        spec = spec_folder(Path(tmp), n)
        loaded = specs.load(spec, env={})
        bound = Path(tmp) / "bare_workflow.json"
        flow = json.loads((Path(tmp) / "demo_workflow.json").read_text())
        bound.write_text(json.dumps(flow).replace('"__PROMPT__"', json.dumps(loaded.start.prompt))
                         .replace('"__NEG__"', json.dumps(loaded.start.negative)))
        env = {**os.environ, "IMITATOES_RUNS": str(Path(tmp) / "runs")}
        ours_argv = [PYTHON, "-m", "imitatoes", "run", str(spec), "--comfy-url", comfy,
                     "--ollama-url", ollama, "--iterations-per-loop", str(n), "--max-loops",
                     "1", "--yes", "--set", "seed.policy=random"]  # never stops early
        ask = Path(tmp) / "ask.json"  # the critic is asked the same question on both sides
        question = critic_prompt.critic_prompt(loaded, loaded.start, 1, 1)
        ask.write_text(json.dumps({"format": verdict.schema(), "prompt": question,
                                   "steps": loaded.start.steps, "cfg": loaded.start.cfg}))
        bare_argv = [PYTHON, "-c", BARE, comfy, ollama, str(n), str(bound), str(ask)]
        ours, bare = [], []
        for _ in range(rounds):
            bare.append(timed(bare_argv, env))
            ours.append(timed(ours_argv, env))
        renders = [json.loads((d / "state.json").read_text())["renders"]
                   for d in (Path(tmp) / "runs").iterdir()]
        assert renders == [n] * rounds, renders  # the same work on both sides
        assert all(json.loads(r.read_text())["params"]["prompt"] == loaded.start.prompt
                   for r in (Path(tmp) / "runs").glob("*/loop_*.json"))
    print(f"{n} iterations, 1024x1024 photo-like renders, {rounds} interleaved rounds")
    print(f"bare loop process:    median {statistics.median(bare):6.2f} s")
    print(f"imitatoes run:        median {statistics.median(ours):6.2f} s")
    print(f"ratio: {statistics.median(ours) / statistics.median(bare):.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
