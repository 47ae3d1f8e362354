"""The bound workflow against the server's own node definitions (/object_info): a model file
the server does not have (with the closest names it has), a choice a node does not offer, a
number outside a widget's range. Found before a run folder is made, instead of at the first
render."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from imitatoes.workflow import catalogue
from imitatoes.workflow.api import NODE_PATH


def problems(workflow: Mapping[str, Any], info: Mapping[str, Any],
             server_version: str | None) -> list[str]:
    """One line per value this ComfyUI would refuse, `node 4 (Class) input: ...`."""
    out = []
    for node_id, node in sorted(workflow.items(), key=lambda kv: str(kv[0])):
        cls = str(node.get("class_type"))
        definition = info.get(cls)
        if not isinstance(definition, dict):
            out.append(f"node {node_id}: {cls} is not a node this ComfyUI knows: "
                       + catalogue.what_is(cls, None, server_version or "?"))
            continue
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        for name, value in sorted(inputs.items()):
            config = input_config(definition, name)
            if config is None or isinstance(value, list):  # unknown, or a link
                continue
            found = _value_problem(value, config)
            if found:
                out.append(f"node {node_id} ({cls}) {name}: {found}")
    return out


def input_config(definition: dict[str, Any], name: str) -> list[Any] | None:
    inputs = definition.get("input") or {}
    for section in ("required", "optional"):
        config = (inputs.get(section) or {}).get(name)
        if isinstance(config, list) and config:
            return config
    return None


def combo_options(config: list[Any]) -> list[Any] | None:
    """A combo's options: ["a", "b"] as the first element, or ("COMBO", {"options": [...]})."""
    if isinstance(config[0], list):
        return config[0]
    extra = limits(config)
    if config[0] == "COMBO" and isinstance(extra.get("options"), list):
        return extra["options"]
    return None


def limits(config: list[Any]) -> dict[str, Any]:
    """An input's settings (min, max, step, default, control_after_generate, ...)."""
    return config[1] if len(config) > 1 and isinstance(config[1], dict) else {}


def _value_problem(value: Any, config: list[Any]) -> str:
    choices = combo_options(config)
    if choices is not None:
        if value in choices:
            return ""
        names = [str(c) for c in choices]
        close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.3)
        offer = f"closest: {', '.join(close)}" if close else (
            f"it offers {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
            if names else "it lists none: put the file in ComfyUI's models folder")
        return f"{value!r} is not on this ComfyUI ({offer})"
    extra = limits(config)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "min" in extra and value < extra["min"]:
            return f"{value} is below its minimum {extra['min']}"
        if "max" in extra and value > extra["max"]:
            return f"{value} is above its maximum {extra['max']}"
    return ""


def landing(workflow: Mapping[str, Any], targets: Sequence[str]) -> list[tuple[str, str]]:
    """(node id, input) of each node path, and of each input whose whole value is a token."""
    out = []
    for target in targets:
        m = NODE_PATH.match(target)
        if m:
            if isinstance(workflow.get(m.group(1)), dict):
                out.append((m.group(1), m.group(2)))
            continue
        out += [(node_id, name) for node_id, node in workflow.items() if isinstance(node, dict)
                for name, value in (node.get("inputs") or {}).items() if value == target]
    return out
