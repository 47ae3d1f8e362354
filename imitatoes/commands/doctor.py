"""`imitatoes doctor`: is everything a run needs there? Each check says what it found and, when
it fails, what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imitatoes.clients.comfy import ComfyClient, ComfyError, ComfyUnauthorized, api_key
from imitatoes.clients.comfy import how_to_start as comfy_how_to
from imitatoes.clients.critic import CriticError, OllamaCritic, make_critic
from imitatoes.clients.critic import how_to_start as ollama_how_to
from imitatoes.loop import binder
from imitatoes.safe_text import markup_safe
from imitatoes.spec import knobs as knob_rules
from imitatoes.spec import load as specs
from imitatoes.spec.model import CriticConfig, Spec
from imitatoes.workflow import catalogue, nodecheck


@dataclass(frozen=True)
class Finding:
    name: str
    status: str  # ok fail warn skip
    detail: str
    fix: str = ""
    vram: tuple[int, int] = (0, 0)  # ComfyUI's device: bytes in all, bytes in use
    model_bytes: int = 0  # the critic model's size, as Ollama lists it


def comfy_checks(url: str, spec: Spec | None) -> list[Finding]:
    try:
        key = api_key(spec.comfyui) if spec else None
    except ComfyError as exc:
        return [Finding("ComfyUI API key", "fail", str(exc))]
    def connect(read_timeout: float) -> ComfyClient:
        return ComfyClient(url, connect_timeout=3, read_timeout=read_timeout,
                           use_websocket=False, api_key=key,
                           key_name=f"${spec.comfyui.api_key_env}" if spec and key else "")
    client = connect(15)
    try:
        stats = client.system_stats()
        served = _serving(client, spec)
    except ComfyUnauthorized as exc:
        return [Finding("API key accepted", "fail", str(exc))]
    except ComfyError as exc:
        return [Finding("ComfyUI reachable", "fail", str(exc).split(". ")[0], comfy_how_to(url))]
    finally:
        client.close()
    system = stats.get("system", {})
    devices = stats.get("devices") or [{}]
    device = devices[0]
    vram = device.get("vram_total")
    detail = (f"{url} · ComfyUI {system.get('comfyui_version', '?')} · {device.get('name', '?')}"
              + (f" · VRAM {vram / 2**30:.1f} GiB ({device.get('vram_free', 0) / 2**30:.1f} free)"
                 if vram else ""))
    out = [Finding("ComfyUI reachable", "ok", detail,
                 vram=(vram or 0, vram - device.get("vram_free", 0) if vram else 0)), *served]
    if spec is None:
        return out
    try:
        info = connect(60).object_info()
    except ComfyError as exc:
        return [*out, Finding("workflow nodes", "fail", str(exc))]
    return out + node_checks(spec, info, system.get("comfyui_version") or "?")


def _serving(client: ComfyClient, spec: Spec | None) -> list[Finding]:
    """The API key (a request that needs one), how prompts are followed and how many may run
    at once. A refused key raises ComfyUnauthorized, which names the variable, not the key."""
    out = []
    if client.prefix:
        client.queue()  # Comfy Cloud answers /api/system_stats without a key; not this
        out.append(Finding("API key accepted", "ok",
                           f"{client.key_name} is accepted by {client.url}"))
    jobs = client.has_jobs()
    parallel = spec.comfyui.parallel if spec else 1
    out.append(Finding("how prompts are followed", "ok",
                       ("the Jobs API (/jobs)" if jobs else "/history and /queue, as ComfyUI "
                        "0.3.64 has them") + f"; comfyui.parallel {parallel}: "
                       f"{parallel} prompt(s) at once" + (" (Comfy Cloud: Standard 1, Creator 3,"
                                                          " Pro 5)" if client.prefix else "")))
    return out


def node_checks(spec: Spec, info: dict[str, Any], server_version: str) -> list[Finding]:
    classes = sorted({n.get("class_type") for n in spec.workflow.values()})
    missing = [c for c in classes if c not in info]
    out = [Finding("workflow nodes", "fail" if missing else "ok",
                 "this ComfyUI does not know: " + "; ".join(
                     f"{c} ({catalogue.what_is(c, None, server_version)})" for c in missing)
                 if missing else f"all {len(classes)} present",
                 "install the node pack that provides each (ComfyUI-Manager: Install Missing "
                 "Custom Nodes), or update ComfyUI where it is a core node of a newer version; "
                 "then restart it" if missing else "")]
    found = nodecheck.problems(binder.bind(spec, spec.start), info, server_version) \
        if not missing else []
    out.append(Finding("models and values", "fail" if found else "ok",
                     "; ".join(found) or "every model file and choice is on this ComfyUI",
                     "fix the workflow, or add the files to ComfyUI's models folders and "
                     "restart it" if found else ""))
    out += [limit_check(spec, info, name) for name in ("cfg", "steps", "seed")]
    if spec.knobs:
        misfits = knob_rules.server_problems(spec.knobs, spec.workflow, info)
        out.append(Finding("knobs fit their inputs", "fail" if misfits else "ok",
                         "; ".join(misfits) or f"all {len(spec.knobs)} fit",
                         "narrow the knobs in the spec" if misfits else ""))
    return [c for c in out if c is not None]


def limit_check(spec: Spec, info: dict[str, Any], parameter: str) -> Finding | None:
    targets = nodecheck.landing(spec.workflow, [t for t, name in spec.bindings
                                                if name == parameter])
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
        config = nodecheck.input_config(info.get(cls) or {}, name)
        limits = nodecheck.limits(config) if config else {}
        if "min" in limits and low < limits["min"]:
            problems.append(f"{low:g} is below {cls}.{name}'s minimum {limits['min']:g}")
        if "max" in limits and high > limits["max"]:
            problems.append(f"{high:g} is above {cls}.{name}'s maximum {limits['max']:g}")
    where = f"bounds.{parameter}" if parameter != "seed" else "start.seed"
    return Finding(f"{parameter} within node limits", "fail" if problems else "ok",
                 "; ".join(problems) or f"{where} fits {len(targets)} input(s)",
                 f"narrow {where} in the spec" if problems else "")


def ollama_only(url: str, model: str | None) -> list[Finding]:
    """Without a spec: is Ollama there, and the model given with --model (if any)?"""
    if model:
        return critic_checks(specs.critic_for(url, model))
    try:
        version = OllamaCritic(specs.critic_for(url, "none")).version()
    except CriticError as exc:
        return [Finding("Ollama reachable", "fail", str(exc).split(". ")[0], ollama_how_to(url))]
    return [Finding("Ollama reachable", "ok", f"{url} · version {version}"),
            Finding("model", "skip", "give a spec, or --model NAME, to check a model")]


def critic_checks(critic: CriticConfig) -> list[Finding]:
    if critic.provider != "ollama":
        client = make_critic(critic)
        try:
            client.check()
            return [Finding("critic reachable, model served", "ok",
                            f"{critic.url} · {critic.model}")]
        except CriticError as exc:
            return [Finding("critic reachable, model served", "fail", str(exc))]
    ollama = OllamaCritic(critic)
    try:
        version = ollama.version()
    except CriticError as exc:
        return [Finding("Ollama reachable", "fail", str(exc).split(". ")[0],
                      ollama_how_to(critic.url))]
    out = [Finding("Ollama reachable", "ok", f"{critic.url} · version {version}")]
    try:
        info = ollama.check()
    except CriticError as exc:
        pulled = "not pulled" not in str(exc) and "not in Ollama" not in str(exc)
        out.append(Finding("model pulled", "ok" if pulled else "fail", critic.model if pulled
                         else f"{critic.model} is not in Ollama at {critic.url}",
                         "" if pulled else f"ollama pull {critic.model}"))
        if pulled:
            out.append(Finding("model sees images", "fail", str(exc),
                             "choose a vision model, e.g. qwen2.5vl:7b, gemma3, llava"))
        return out
    caps = info.get("capabilities")
    return out + [Finding("model pulled", "ok", critic.model, model_bytes=info.get("size") or 0),
                  Finding("model sees images", "ok" if caps else "warn",
                        f"capabilities: {', '.join(caps)}" if caps else
                        "this Ollama does not report capabilities (older than 0.6.4)")]


def examine(spec: Spec | None, comfy_url: str, ollama_url: str,
            model: str | None = None) -> list[Finding]:
    """Every check, for a spec's servers or, without a spec, for the URLs (and model) given."""
    rows = comfy_checks(spec.comfyui.url if spec else comfy_url, spec)
    critic = spec.critic if spec else specs.critic_for(ollama_url, model) if model else None
    rows += critic_checks(critic) if critic else ollama_only(ollama_url, None)
    return rows + memory_check(rows, critic, spec)


def memory_check(rows: list[Finding], critic: CriticConfig | None, spec: Spec | None
                 ) -> list[Finding]:
    """One GPU for both servers, as most users have: do ComfyUI's models and the critic fit?"""
    vram_total, comfy_used = next((r.vram for r in rows if r.vram), (0, 0))
    size = next((r.model_bytes for r in rows if r.model_bytes), 0)
    if not (vram_total and size and critic):
        return []
    shares = spec and (spec.critic.unload_before_render or spec.comfyui.free_before_critique)
    need = comfy_used + size
    detail = (f"ComfyUI holds {comfy_used / 2**30:.1f} GiB, {critic.model} needs "
              f"{size / 2**30:.1f} GiB, the device has {vram_total / 2**30:.1f} GiB")
    if need <= vram_total or shares:
        return [Finding("one GPU for both", "ok", detail + (" (the spec takes turns)" if shares
                                                         and need > vram_total else ""))]
    return [Finding("one GPU for both", "warn", detail,
                  "let them take turns: comfyui.free_before_critique: true and "
                  "critic.unload_before_render: true in the spec")]


def table(rows: list[Finding]) -> Any:
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
