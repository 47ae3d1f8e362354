"""`imitatoes doctor`: is everything a run needs there? Each check says what it found and, when
it fails, what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from . import workflow
from .comfy import HOW_TO_START as COMFY_HOW_TO
from .comfy import ComfyClient, ComfyError
from .critic import HOW_TO_START as OLLAMA_HOW_TO
from .critic import CriticError, OllamaCritic, make_critic
from .safe_text import markup_safe
from .spec import Critic, Spec


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok fail warn skip
    detail: str
    fix: str = ""


def comfy_checks(url: str, spec: Spec | None) -> list[Check]:
    client = ComfyClient(url, connect_timeout=3, read_timeout=15, use_websocket=False)
    try:
        stats = client.system_stats()
    except ComfyError as exc:
        return [Check("ComfyUI reachable", "fail", str(exc).split(". ")[0], COMFY_HOW_TO)]
    finally:
        client.close()
    system = stats.get("system", {})
    devices = stats.get("devices") or [{}]
    device = devices[0]
    vram = device.get("vram_total")
    detail = (f"{url} · ComfyUI {system.get('comfyui_version', '?')} · {device.get('name', '?')}"
              + (f" · VRAM {vram / 2**30:.1f} GiB ({device.get('vram_free', 0) / 2**30:.1f} free)"
                 if vram else ""))
    out = [Check("ComfyUI reachable", "ok", detail)]
    if spec is None:
        return out
    try:
        info = ComfyClient(url, connect_timeout=3, read_timeout=60,
                           use_websocket=False).object_info()
    except ComfyError as exc:
        return [*out, Check("workflow nodes", "fail", str(exc))]
    return out + node_checks(spec, info)


def node_checks(spec: Spec, info: dict[str, Any]) -> list[Check]:
    classes = sorted({n.get("class_type") for n in spec.workflow.values()})
    missing = [c for c in classes if c not in info]
    out = [Check("workflow nodes", "fail" if missing else "ok",
                 f"missing: {', '.join(missing)}" if missing else f"all {len(classes)} present",
                 "install the custom nodes that provide them (ComfyUI-Manager: Install Missing "
                 "Custom Nodes), then restart ComfyUI" if missing else "")]
    out += [limit_check(spec, info, name) for name in ("cfg", "steps", "seed")]
    return [c for c in out if c is not None]


def _targets(spec: Spec, parameter: str) -> list[tuple[str, str]]:
    """(node id, input name) of every input a parameter is bound to."""
    found = []
    for target, name in spec.bindings:
        if name != parameter:
            continue
        where = workflow.node_input(spec.workflow, target)
        if where:
            found.append(where)
            continue
        for node_id, node in spec.workflow.items():
            found += [(node_id, k) for k, v in node.get("inputs", {}).items() if v == target]
    return found


def limit_check(spec: Spec, info: dict[str, Any], parameter: str) -> Check | None:
    targets = _targets(spec, parameter)
    if not targets:
        return None
    if parameter == "seed":
        low = high = spec.start.seed
    else:
        r = getattr(spec.bounds, parameter)
        low, high = r.min, r.max
    problems = []
    for node_id, name in targets:
        cls = spec.workflow[node_id]["class_type"]
        config = info.get(cls, {}).get("input", {}).get("required", {}).get(name) or \
            info.get(cls, {}).get("input", {}).get("optional", {}).get(name)
        limits = config[1] if config and len(config) > 1 else {}
        if "min" in limits and low < limits["min"]:
            problems.append(f"{low:g} is below {cls}.{name}'s minimum {limits['min']:g}")
        if "max" in limits and high > limits["max"]:
            problems.append(f"{high:g} is above {cls}.{name}'s maximum {limits['max']:g}")
    where = f"bounds.{parameter}" if parameter != "seed" else "start.seed"
    return Check(f"{parameter} within node limits", "fail" if problems else "ok",
                 "; ".join(problems) or f"{where} fits {len(targets)} input(s)",
                 f"narrow {where} in the spec" if problems else "")


def ollama_only(url: str) -> list[Check]:
    """Without a spec there is no model to check: is Ollama there at all?"""
    try:
        version = requests.get(url.rstrip("/") + "/api/version", timeout=(3, 10)).json()["version"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        return [Check("Ollama reachable", "fail", f"{url}: {type(exc).__name__}", OLLAMA_HOW_TO)]
    return [Check("Ollama reachable", "ok", f"{url} · version {version}"),
            Check("model", "skip", "give a spec to check its model")]


def critic_checks(critic: Critic) -> list[Check]:
    if critic.provider != "ollama":
        client = make_critic(critic)
        try:
            client.check()
            return [Check("critic reachable, model served", "ok", f"{critic.url} · {critic.model}")]
        except CriticError as exc:
            return [Check("critic reachable, model served", "fail", str(exc))]
    ollama = OllamaCritic(critic)
    try:
        version = ollama.version()
    except CriticError as exc:
        return [Check("Ollama reachable", "fail", str(exc).split(". ")[0], OLLAMA_HOW_TO)]
    out = [Check("Ollama reachable", "ok", f"{critic.url} · version {version}")]
    try:
        info = ollama.check()
    except CriticError as exc:
        pulled = "not pulled" not in str(exc) and "not in Ollama" not in str(exc)
        out.append(Check("model pulled", "ok" if pulled else "fail", critic.model if pulled
                         else str(exc), "" if pulled else f"ollama pull {critic.model}"))
        if pulled:
            out.append(Check("model sees images", "fail", str(exc),
                             "choose a vision model, e.g. qwen2.5vl:7b, gemma3, llava"))
        return out
    caps = info.get("capabilities")
    return out + [Check("model pulled", "ok", critic.model),
                  Check("model sees images", "ok" if caps else "warn",
                        f"capabilities: {', '.join(caps)}" if caps else
                        "this Ollama does not report capabilities (older than 0.6.4)")]


def examine(spec: Spec | None, comfy_url: str, ollama_url: str) -> list[Check]:
    """Every check, for a spec's servers or, without a spec, for the URLs given."""
    rows = comfy_checks(spec.comfyui.url if spec else comfy_url, spec)
    return rows + (critic_checks(spec.critic) if spec else ollama_only(ollama_url))


def table(rows: list[Check]) -> Any:
    """The checks as a rich table: what was checked, the mark, what was found, what to do."""
    from rich.table import Table

    out = Table(title="imitatoes doctor", show_lines=False)
    for column in ("check", "", "found", "what to do"):
        out.add_column(column)
    marks = {"ok": "[green]ok[/]", "fail": "[red]FAIL[/]", "warn": "[yellow]warn[/]",
             "skip": "[dim]skip[/]"}
    for r in rows:
        out.add_row(markup_safe(r.name), marks[r.status], markup_safe(r.detail),
                    markup_safe(r.fix))
    return out
