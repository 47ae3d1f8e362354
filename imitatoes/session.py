"""Wiring for real use: the spec's clients, a run folder and the engine, put together once
for `run`, `resume`, `demo`, `batch`, workers and scripts."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from . import runlog
from .comfy import ComfyClient, ComfyRenderer
from .critic import make_critic
from .engine import Engine, Listener, RunState, continued, first_state
from .spec import Spec


def check(spec: Spec) -> dict[str, object]:
    """Both servers and the model, before the first render wastes anyone's time."""
    client = ComfyClient(spec.comfyui.url, spec.comfyui.connect_timeout)
    critic = make_critic(spec.critic)
    try:
        stats = client.system_stats()
        return {"comfyui": stats.get("system", {}).get("comfyui_version", "?"),
                "critic": critic.check()}
    finally:
        client.close()
        critic.close()


def run(spec: Spec, listeners: Iterable[Listener] = (), run_dir: Path | None = None,
        state: RunState | None = None, instruction: str = "",
        runs_root: Path | None = None) -> tuple[Path, RunState]:
    """Start a run (or continue the one in run_dir from state) and drive it to its end."""
    if run_dir is None:
        run_dir = runlog.create(spec, runs_root)
    if state is None:
        state = first_state(spec)
    elif instruction or state.status in ("done", "limits"):
        state = continued(state, spec, instruction)
    else:
        state.status = "running"
    client = ComfyClient(spec.comfyui.url, spec.comfyui.connect_timeout)
    critic = make_critic(spec.critic)
    engine = Engine(spec, ComfyRenderer(client, spec.comfyui.render_timeout), critic,
                    [runlog.RunLog(run_dir), *listeners], rng=random.Random(),
                    reuse=lambda key: runlog.saved_render(run_dir, key))
    try:
        return run_dir, engine.run(state)
    finally:
        client.close()
        critic.close()
