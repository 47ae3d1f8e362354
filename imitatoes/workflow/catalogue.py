"""Node definitions without a server: the core catalogue of the ComfyUI we test against
(/object_info of ComfyUI 0.3.64, recorded with no model files, so `init` converts a UI-format
workflow offline), and what a node that a server lacks probably is.

A node a server does not know is one of three things, and each has its own fix: a core node
of a newer ComfyUI (update ComfyUI), a core node this ComfyUI failed to load (its start-up log
says why), or a custom node pack that is not installed. ComfyUI's frontend saves which it is
in each node's properties (`cnr_id` "comfy-core" with the `ver` that saved it, else the pack's
registry id); for an API-format file, or an older save, the list of core nodes newer than
0.3.64 gathered from ComfyUI's own workflow templates (with the earliest version seen) says."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

CORE_VERSION = "0.3.64"


@cache
def _core_bytes() -> bytes:
    data = resources.files("imitatoes.workflow").joinpath("data/comfyui-0.3.64-nodes.json.gz")
    return gzip.decompress(data.read_bytes())


def core() -> dict[str, Any]:
    """ComfyUI 0.3.64's core node definitions, as /object_info answers (a fresh copy)."""
    return json.loads(_core_bytes())


@cache
def newer_core() -> Mapping[str, str]:
    """Core nodes 0.3.64 does not have -> the earliest ComfyUI version seen saving one."""
    text = resources.files("imitatoes.workflow").joinpath("data/newer-core-nodes.json")
    return json.loads(text.read_text())


def version(text: str | None) -> tuple[int, ...]:
    """'0.3.64' -> (0, 3, 64); anything unreadable is (0,): older than every release."""
    return tuple(int(n) for n in re.findall(r"\d+", text or "")[:3]) or (0,)


def what_is(node_type: str, properties: Mapping[str, Any] | None = None,
            server_version: str | None = None) -> str:
    """What a node the server lacks probably is, and what to do, in a few words.
    `server_version` None: the catalogue is our own offline one, not a server's."""
    props = properties if isinstance(properties, Mapping) else {}
    pack = props.get("cnr_id") or props.get("aux_id")
    core_ver = newer_core().get(node_type)
    if pack and pack != "comfy-core":
        return f"from the custom node pack {str(pack)[:80]!r}, not installed"
    if pack != "comfy-core" and core_ver is None:
        return "probably from a custom node pack that is not installed"
    # the earliest version known to have it: the node's own save, or the templates' list
    saved = min((str(v) for v in (props.get("ver"), core_ver) if v), key=version, default="")
    if server_version is None:
        return (f"a core node of ComfyUI {saved or 'newer than ' + CORE_VERSION} that "
                f"imitatoes' own catalogue ({CORE_VERSION}) lacks: give --comfy-url of a "
                "ComfyUI that has it")
    if not saved:
        return f"a core node ComfyUI {server_version} lacks: update ComfyUI, or check its " \
               "start-up log"
    if version(saved) > version(server_version):
        return f"a core node of a newer ComfyUI ({saved} or later; this one is " \
               f"{server_version}): update ComfyUI"
    return (f"a core node this ComfyUI ({server_version}) did not load: its start-up log says "
            "why (often a missing Python package), or update ComfyUI")
