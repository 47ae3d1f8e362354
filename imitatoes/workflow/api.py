"""ComfyUI API-format workflows: loading, UI-format detection, and typed placeholder binding."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imitatoes import files as specfiles
from imitatoes.errors import WorkflowError

TOKEN = re.compile(r"__[A-Z][A-Z0-9_]*__")
NODE_PATH = re.compile(r"^([^.\s]+)\.inputs\.([^.\s]+)$")

HOW_TO_EXPORT = ("In ComfyUI, enable Settings > Comfy > Dev mode (older versions: 'Enable Dev mode "
                 "Options'), then use Workflow > Export (API) and point the spec at that file.")


def load(path: Path) -> dict[str, Any]:
    """Read an API-format workflow, or raise WorkflowError saying what is wrong and what to do."""
    try:
        text = specfiles.read_text(path, specfiles.WORKFLOW_CAP)
    except specfiles.Unreadable as exc:
        reason = {"no such file": "no such workflow file"}.get(str(exc), str(exc))
        raise WorkflowError(f"{path}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise WorkflowError(f"{path}: nested too deeply to be a workflow") from None
    problem = api_format_problem(data)
    if problem:
        raise WorkflowError(f"{path}: {problem}")
    return data


def api_format_problem(data: Any) -> str:
    """Why `data` is not an API-format workflow, or "" when it is one."""
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        return "this is a UI-format workflow (it has 'nodes' and 'links'). " + HOW_TO_EXPORT
    if not isinstance(data, dict) or not data:
        return "an API-format workflow is a JSON object of nodes, {\"3\": {\"class_type\": ...}}"
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return f"node {node_id} has no class_type; is this an API export? " + HOW_TO_EXPORT
        if not isinstance(node["class_type"], str) or not node["class_type"]:
            return f"node {node_id}: class_type must be a node's name, not " \
                   f"{json.dumps(node['class_type'])[:40]}"
        if not isinstance(node.get("inputs", {}), dict):
            return f"node {node_id}: inputs must be an object"
    return ""


def _strings(value: Any, where: tuple) -> Iterator[tuple[tuple, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*where, i))


@dataclass(frozen=True)
class Site:
    """Where a token stands: the path to its string, and whether it is the whole value."""

    token: str
    where: tuple
    text: str

    @property
    def whole(self) -> bool:
        return self.text == self.token

    @property
    def in_inputs(self) -> bool:
        return len(self.where) == 3 and self.where[1] == "inputs"

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.where)


def sites(workflow: Mapping[str, Any]) -> list[Site]:
    return [Site(t, where, text) for where, text in _strings(dict(workflow), ())
            for t in TOKEN.findall(text)]


def tokens(workflow: Mapping[str, Any]) -> set[str]:
    """Every `__TOKEN__` that occurs anywhere in the workflow's strings."""
    return {t for _, text in _strings(dict(workflow), ()) for t in TOKEN.findall(text)}


def node_input(workflow: Mapping[str, Any], target: str) -> tuple[str, str] | None:
    """(node id, input name) for a binding like "6.inputs.text", None when it is not a node path."""
    m = NODE_PATH.match(target)
    return (m.group(1), m.group(2)) if m else None


def value_at(workflow: Mapping[str, Any], target: str) -> Any:
    """The value a node path holds in the workflow (None for a token or a missing input)."""
    where = node_input(workflow, target)
    if where is None:
        return None
    return (workflow.get(where[0]) or {}).get("inputs", {}).get(where[1])


def node_path_problem(workflow: Mapping[str, Any], target: str) -> str:
    node_id, name = node_input(workflow, target) or ("", "")
    node = workflow.get(node_id)
    if not isinstance(node, dict):
        return f"the workflow has no node {node_id}"
    if name not in node.get("inputs", {}):
        return f"node {node_id} ({node.get('class_type')}) has no input {name!r}"
    return ""


def bind(workflow: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A new workflow with each binding target replaced by its value.

    `values` maps a token (`__CFG__`) or a node path (`3.inputs.cfg`) to a value. An input whose
    whole value is a token takes the value with its type (a number stays a number); a token inside
    a longer string is replaced as text.
    """
    out = copy.deepcopy(dict(workflow))
    token_values = {k: v for k, v in values.items() if TOKEN.fullmatch(k)}
    for target, value in values.items():
        where = node_input(out, target)
        if where and isinstance(out.get(where[0]), dict):
            out[where[0]].setdefault("inputs", {})[where[1]] = value
    if token_values:
        for node in out.values():
            if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
                node["inputs"] = _replace(node["inputs"], token_values)
    return out


def _replace(value: Any, token_values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        if value in token_values:
            return token_values[value]
        return TOKEN.sub(lambda m: str(token_values.get(m.group(0), m.group(0))), value)
    if isinstance(value, dict):
        return {k: _replace(v, token_values) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, token_values) for v in value]
    return value
