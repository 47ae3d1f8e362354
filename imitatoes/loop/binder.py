"""The one place a spec, a render's parameters and the refine state become what ComfyUI gets:
the workflow to submit and the images to upload first. The engine and `replay` both use it,
so an iteration replays exactly as it was rendered, img2img and inpaint included."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from imitatoes.loop import regions
from imitatoes.loop.state import RefineState
from imitatoes.spec.model import Params, Spec
from imitatoes.workflow import api as workflow
from imitatoes.workflow import refine_graph as refine_rules

ImageOf = Callable[[str], "bytes | None"]  # a saved image by its key (None: it is gone)
Upload = Callable[[bytes, str], str]  # puts an image on ComfyUI; the name it got there


@dataclass(frozen=True)
class Submission:
    workflow: dict[str, Any]
    refine: RefineState | None = None  # None: rendered from noise (also when refine was off)
    uploaded: tuple[tuple[str, str], ...] = ()  # ("image" | "mask", its name on ComfyUI)
    mask: bytes | None = None  # refine.repair: the mask of the region repainted

    def record(self) -> dict[str, Any] | None:
        """The refine state with the uploaded names, as the iteration record keeps it."""
        return {**self.refine.to_dict(), **dict(self.uploaded)} if self.refine else None


def bind(spec: Spec, params: Params, init: tuple[str, float] | None = None,
         mask: str | None = None) -> dict[str, Any]:
    """The workflow for `params`; with `init` (the uploaded image's name and a denoise), the
    refine workflow that starts from that image; with `mask` too (the uploaded mask's name),
    the one that repaints only the mask's white."""
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


def submission(spec: Spec, params: Params, refine: RefineState | None, image_of: ImageOf,
               upload: Upload) -> Submission:
    """What to submit for `params`. In refine mode the source image is uploaded (under a name
    made from its bytes, so uploading it again, after a resume or on another server, is
    harmless) and, with a region to repair, its mask too: only that region is repainted, for
    what belongs there. A source image that is gone from the run folder: from noise."""
    source = image_of(refine.source) if refine is not None and spec.refine else None
    if refine is None or spec.refine is None or source is None:
        return Submission(bind(spec, params))
    image = upload(source, refine_rules.upload_name(source))
    init = (image, refine.denoise)
    if refine.region is None or spec.refine.repair is None:
        return Submission(bind(spec, params, init), refine, (("image", image),))
    with Image.open(io.BytesIO(source)) as img:  # reads the header only
        size = img.size
    drawn = regions.mask(regions.Box(*refine.region.box), size, spec.refine.repair.feather)
    mask = upload(drawn, refine_rules.upload_name(drawn))
    if refine.region.fix:
        params = replace(params, prompt=f"{refine.region.fix}, {params.prompt}")
    return Submission(bind(spec, params, init, mask), refine,
                      (("image", image), ("mask", mask)), drawn)
