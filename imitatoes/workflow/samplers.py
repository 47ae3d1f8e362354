"""Where a workflow samples: its first sampler and the nodes that feed it (noise, guider,
sigmas), and which of its outputs shows the result. Shared by init, run_loop, refine mode
and the renderer; depends on nothing else of ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
FEEDERS = ("noise", "guider", "sigmas")  # SamplerCustomAdvanced's RandomNoise, CFGGuider, ...


def first_sampler(flow: Mapping[str, Any]) -> str | None:
    """The sampler that starts the picture: of the samplers no other sampler feeds (a second
    pass, a refiner or an upscale's sampler is fed by the first), the lowest id."""
    samplers = sorted((i for i, n in flow.items()
                       if isinstance(n, Mapping) and n.get("class_type") in SAMPLERS),
                      key=node_order)
    reading = readers(flow)
    fed = {s for other in samplers for s in _downstream(reading, other, len(flow)) if s != other}
    return next((s for s in samplers if s not in fed), samplers[0] if samplers else None)


def node_order(node_id: str) -> tuple[int, str]:
    """Numeric ids in numeric order, then the rest."""
    return (0, f"{int(node_id):012d}") if str(node_id).isdigit() else (1, str(node_id))


def linked(flow: Mapping[str, Any], value: Any) -> str | None:
    """The node a link [id, slot] comes from, when it is in the workflow."""
    return str(value[0]) if isinstance(value, list) and value and str(value[0]) in flow \
        else None


def sampler_nodes(flow: Mapping[str, Any], sampler: str) -> list[str]:
    """The sampler and the nodes its noise, guider and sigmas come from."""
    inputs = flow[sampler].get("inputs", {})
    return [sampler] + [n for n in (linked(flow, inputs.get(k)) for k in FEEDERS) if n]


def judged_output(flow: Mapping[str, Any]) -> str | None:
    """The node whose image the critic judges. ComfyUI runs an output as soon as it is ready,
    so the first image of a finished prompt is often a preview of something else (a first
    pass before its upscale, a ControlNet's edge map). Of the nodes that save or preview an
    image after the first sampler: a saved one before a preview, then the one furthest
    downstream, then the highest id; with no sampler, of all of them."""
    outputs = [i for i, n in flow.items() if _shows_image(flow, n)]
    sampler = first_sampler(flow)
    depth = _downstream(readers(flow), sampler, len(flow)) if sampler else {}
    after = [o for o in outputs if o in depth] or outputs
    return max(after, key=lambda o: ("Save" in str(flow[o].get("class_type")), depth.get(o, 0),
                                     node_order(o)), default=None)


def _shows_image(flow: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """SaveImage, PreviewImage and their like from custom nodes: an `images` input, and Save
    or Preview in the class name."""
    if not isinstance(node, Mapping):
        return False
    name = str(node.get("class_type", ""))
    inputs = node.get("inputs")
    return ("Save" in name or "Preview" in name) and isinstance(inputs, dict) and \
        linked(flow, inputs.get("images")) is not None


def readers(flow: Mapping[str, Any]) -> dict[str, list[str]]:
    """Node id -> the nodes that take one of its outputs."""
    out: dict[str, list[str]] = {}
    for node_id, node in flow.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in inputs.values() if isinstance(inputs, dict) else ():
            source = linked(flow, value)
            if source is not None:
                out.setdefault(source, []).append(node_id)
    return out


def _downstream(reading: Mapping[str, list[str]], start: str, rounds: int) -> dict[str, int]:
    """Every node that takes `start`'s output, however indirectly, with its longest distance
    from it (at most `rounds` rounds, the node count, so a malformed cyclic graph still
    ends)."""
    depth, frontier = {start: 0}, [start]
    for _ in range(rounds):
        moved = []
        for node_id in frontier:
            for reader in reading.get(node_id, ()):
                if depth.get(reader, -1) < depth[node_id] + 1:
                    depth[reader] = depth[node_id] + 1
                    moved.append(reader)
        if not moved:
            break
        frontier = moved
    return depth
