"""The one place a spec and a render's parameters become the workflow ComfyUI runs."""

from __future__ import annotations

from typing import Any

from imitatoes.spec.model import Params, Spec
from imitatoes.workflow import api as workflow
from imitatoes.workflow import refine_graph as refine_rules


def bind(spec: Spec, params: Params, init: tuple[str, float] | None = None,
         mask: str | None = None) -> dict[str, Any]:
    """The workflow to submit for `params`; with `init` (the uploaded image's name and a
    denoise), the refine workflow that starts from that image; with `mask` too (the
    uploaded mask's name), the one that repaints only the mask's white."""
    values = {target: getattr(params, name) for target, name in spec.bindings}
    chosen = dict(params.knobs)
    values.update({target: chosen[k.name] for k in spec.knobs for target in k.targets
                   if k.name in chosen})
    if init is None or spec.refine is None:
        return workflow.bind(spec.workflow, values)
    values.update({refine_rules.INIT_IMAGE: init[0], spec.refine.graph.denoise: init[1]})
    if mask is None:
        return workflow.bind(spec.refine.graph.workflow, values)
    values[refine_rules.INIT_MASK] = mask
    return workflow.bind(spec.refine.graph.inpaint, values)
