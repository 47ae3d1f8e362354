"""Where a workflow samples: its first sampler and the nodes that feed it (noise, guider,
sigmas). Shared by init, run_loop and refine mode; depends on nothing else of ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
FEEDERS = ("noise", "guider", "sigmas")  # SamplerCustomAdvanced's RandomNoise, CFGGuider, ...


def first_sampler(flow: Mapping[str, Any]) -> str | None:
    return next((i for i, n in sorted(flow.items(), key=lambda kv: node_order(kv[0]))
                 if n.get("class_type") in SAMPLERS), None)


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
