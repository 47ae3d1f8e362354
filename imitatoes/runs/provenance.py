"""What made a run's images, recorded so a result can be explained and made again months later:
imitatoes and the spec (its git commit and whether it had uncommitted changes), ComfyUI
(version, Python, torch, device, the definitions of every node class the workflow uses, the
model files it names), the critic (server version, the model's digest, family, size and
quantization) and the options sent to it. Gathered once when a run starts or resumes, never
on the per-iteration path; a resume that finds something different lists what changed."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imitatoes import __version__
from imitatoes.clients.comfy import ComfyError, client_for
from imitatoes.clients.critic import CriticError, OllamaCritic
from imitatoes.loop import verdict
from imitatoes.runs import folder as runfolder
from imitatoes.spec.model import Spec

FILE = "provenance.json"
NODES = "nodes"  # node definitions, one file per distinct set: nodes/<sha256>.json
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")


def gather(spec: Spec, store: Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """One record of everything that shapes this run's images, as the servers are now; node
    definitions go into `store`/nodes/. `known`: what the check before the run already asked
    the servers (stats, nodes, critic), so they are not asked twice."""
    known = known or {}
    return {"gathered_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "imitatoes": __version__, "python": platform.python_version(),
            "spec": _spec(spec, store), "comfyui": _comfyui(spec, store, known),
            "critic": _critic(spec, known.get("critic"))}


def record(spec: Spec, run_dir: Path, known: dict[str, Any] | None = None) -> list[str]:
    """Gather and append to provenance.json; returns what changed since the last gathering."""
    now = gather(spec, run_dir, known)
    history = read(run_dir)
    changed = changes(history[-1], now) if history else []
    now["changed"] = changed
    runfolder.write_atomic(run_dir / FILE, runfolder.to_json({"gatherings": [*history, now]}))
    return changed


def read(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((run_dir / FILE).read_text())["gatherings"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def latest(run_dir: Path) -> dict[str, Any]:
    history = read(run_dir)
    return history[-1] if history else {}


def changes(then: dict[str, Any], now: dict[str, Any], ignore: tuple[str, ...] = ()
            ) -> list[str]:
    """Every difference that could explain a different image (the time of gathering aside)."""
    def relevant(p: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in p.items() if k not in ("gathered_at", "changed", *ignore)}
        if isinstance(kept.get("spec"), dict):  # the run's own copy says where the run is,
            kept["spec"] = {k: v for k, v in kept["spec"].items() if k != "copy"}  # not what
        return kept  # made its images
    return runfolder.differences(relevant(then), relevant(now))


def _spec(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Where the spec came from (the file the user ran) and the run folder's own copy, which
    resumes read: two fields, so a resume is not taken for a change of spec."""
    started = runfolder.source_of(run_dir)
    copy = run_dir / "spec.yaml"
    if started is not None:
        source, workflow = started.spec, started.workflow
    elif spec.path.is_file() and spec.path.resolve() != copy.resolve():
        source, workflow = spec.path.resolve(), spec.workflow_path
    else:
        source, workflow = None, None
    return {"source": str(source) if source else None,
            "copy": str(copy.resolve()) if copy.is_file() else None,
            "git": _git(source, workflow) if source and source.is_file() else None}


def _git(spec_file: Path, workflow: Path | None) -> dict[str, Any] | None:
    """The commit the spec's work tree is at and whether the spec or workflow differ from it."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(spec_file.parent), *args],
                                 capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    dirty = git("status", "--porcelain", "--", str(spec_file),
                *([str(workflow)] if workflow else []))
    return {"commit": commit, "dirty": bool(dirty)}


def _comfyui(spec: Spec, run_dir: Path, known: dict[str, Any]) -> dict[str, Any]:
    stats, nodes, jobs = known.get("stats"), known.get("nodes"), known.get("jobs_api")
    if stats is None or nodes is None or jobs is None:
        client = client_for(spec.comfyui, use_websocket=False)
        try:
            stats = client.system_stats()
            classes = sorted({str(n.get("class_type")) for n in spec.workflow.values()})
            nodes = {c: client.object_info(c).get(c) for c in classes}
            jobs = client.has_jobs()
        except ComfyError as exc:
            return {"url": spec.comfyui.url, "error": str(exc)}
        finally:
            client.close()
    system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
    devices = [{k: d.get(k) for k in ("name", "type", "vram_total")}
               for d in stats.get("devices") or [] if isinstance(d, dict)]
    return {"url": spec.comfyui.url, "version": system.get("comfyui_version"),
            # how prompts were followed: the Jobs API, or /history as ComfyUI 0.3.64 has it
            "api": "jobs" if jobs else "history",
            "api_key_env": spec.comfyui.api_key_env, "parallel": spec.comfyui.parallel,
            "python": system.get("python_version"), "pytorch": system.get("pytorch_version"),
            "devices": devices, "node_definitions": _store_nodes(run_dir, nodes),
            "models": _models(spec, nodes)}


def _store_nodes(run_dir: Path, nodes: dict[str, Any]) -> str:
    """The node definitions, kept once per distinct set; returns their hash."""
    data = runfolder.to_json(nodes)
    digest = hashlib.sha256(data).hexdigest()
    path = run_dir / NODES / f"{digest}.json"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        runfolder.write_atomic(path, data)
    return f"sha256:{digest}"


def _models(spec: Spec, nodes: dict[str, Any]) -> list[dict[str, Any]]:
    """Model files the workflow names, and whether the server lists each in its choices."""
    found = []
    for node_id, node in sorted(spec.workflow.items()):
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        for name, value in sorted(inputs.items()):
            if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
                choices = _choices(nodes.get(str(node.get("class_type"))), name)
                found.append({"input": f"{node_id}.inputs.{name}", "file": value,
                              "listed": value in choices if choices is not None else None,
                              "size": None})  # ComfyUI's API does not list file sizes
    return found


def _choices(definition: Any, name: str) -> list[Any] | None:
    if not isinstance(definition, dict):
        return None
    inputs = definition.get("input") or {}
    for section in ("required", "optional"):
        config = (inputs.get(section) or {}).get(name)
        if isinstance(config, list) and config and isinstance(config[0], list):
            return config[0]
    return None


def _critic(spec: Spec, known: dict[str, Any] | None = None) -> dict[str, Any]:
    c = spec.critic
    options = {"temperature": c.temperature, "seed": c.seed, "num_ctx": c.num_ctx,
               "keep_alive": c.keep_alive, "format": "sha256:" + hashlib.sha256(
                   json.dumps(verdict.schema(), sort_keys=True).encode()).hexdigest()}
    out: dict[str, Any] = {"provider": c.provider, "url": c.url, "model": c.model,
                           "options": options}
    if c.provider != "ollama":
        return out
    info = known
    if info is None:
        critic = OllamaCritic(c)
        try:
            info = critic.check()
        except CriticError as exc:
            return {**out, "error": str(exc)}
        finally:
            critic.close()
    return {**out, "server_version": info.get("version"), "digest": info.get("digest"),
            "details": info.get("details")}
