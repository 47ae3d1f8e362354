"""Refine mode: once an image is good enough, render from it (img2img at a low denoise)
instead of from noise. The refine workflow is the user's (a LoadImage whose image is
`__INIT_IMAGE__`) or made from their txt2img graph: LoadImage -> VAEEncode in place of the
empty latent the sampler starts from."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imitatoes.errors import WorkflowError
from imitatoes.workflow import api as workflow
from imitatoes.workflow.samplers import first_sampler, readers, sampler_nodes

INIT_IMAGE = "__INIT_IMAGE__"


INIT_MASK = "__INIT_MASK__"


@dataclass(frozen=True)
class RefineGraph:
    workflow: Mapping[str, Any]  # with INIT_IMAGE where the uploaded image's name goes
    denoise: str  # the node path of the sampler's denoise
    inpaint: Mapping[str, Any]  # the same with INIT_MASK: only the mask's white is repainted


def upload_name(image: bytes) -> str:
    """A name for the image on ComfyUI, made from its bytes: a different image never gets
    the same name (ComfyUI keeps the one it has when the bytes match), and hex digits cannot
    leave its input folder."""
    return f"imitatoes_{hashlib.sha256(image).hexdigest()[:20]}.png"


def graph(flow: Mapping[str, Any]) -> RefineGraph:
    """The refine graph of a workflow: as it is when it loads INIT_IMAGE itself, else built
    from its txt2img graph. WorkflowError says why neither works."""
    sampler = first_sampler(flow)
    if sampler is None:
        raise WorkflowError("refine needs a sampler (KSampler or SamplerCustomAdvanced with "
                            "BasicScheduler) to start from the image")
    denoise = _denoise_path(flow, sampler)
    refined = flow if INIT_IMAGE in workflow.tokens(flow) else _img2img(flow, sampler)
    return RefineGraph(refined, denoise, _masked(refined, sampler))


def _masked(flow: Mapping[str, Any], sampler: str) -> dict[str, Any]:
    """SetLatentNoiseMask between the encoded image and the sampler, its mask loaded from
    INIT_MASK's red channel (white: repaint)."""
    out = copy.deepcopy(dict(flow))
    encoded = out[sampler]["inputs"].get("latent_image")
    load, masked = _free_ids(out, 2)
    out[load] = {"class_type": "LoadImageMask", "inputs": {"image": INIT_MASK,
                                                            "channel": "red"},
                 "_meta": {"title": "imitatoes: the region to repaint"}}
    out[masked] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": encoded,
                                                                 "mask": [load, 0]}}
    out[sampler]["inputs"]["latent_image"] = [masked, 0]
    return out


def _denoise_path(flow: Mapping[str, Any], sampler: str) -> str:
    for node_id in sampler_nodes(flow, sampler):
        if isinstance(flow[node_id].get("inputs", {}).get("denoise"), int | float):
            return f"{node_id}.inputs.denoise"
    raise WorkflowError(f"refine needs a denoise to turn down, and sampler {sampler} "
                        f"({flow[sampler]['class_type']}) has none; use KSampler, or give "
                        "refine.workflow")


def _img2img(flow: Mapping[str, Any], sampler: str) -> dict[str, Any]:
    out = copy.deepcopy(dict(flow))
    link = out[sampler]["inputs"].get("latent_image")
    source = str(link[0]) if isinstance(link, list) and link else None
    if source is None or "Latent" not in str(out.get(source, {}).get("class_type", "")):
        raise WorkflowError(f"refine cannot tell where sampler {sampler} starts from (its "
                            "latent_image is not an empty latent); give refine.workflow, a "
                            f"workflow with a LoadImage whose image is {INIT_IMAGE}")
    vae = next((n["inputs"]["vae"] for n in out.values()
                if n.get("class_type") == "VAEDecode" and isinstance(n["inputs"].get("vae"),
                                                                      list)), None)
    if vae is None:
        raise WorkflowError("refine needs the VAE the workflow decodes with (a VAEDecode)")
    load, scale, encode = _free_ids(out, 3)
    out[load] = {"class_type": "LoadImage", "inputs": {"image": INIT_IMAGE},
                 "_meta": {"title": "imitatoes: the image to refine"}}
    size = {k: out[source]["inputs"].get(k) for k in ("width", "height")}
    if all(isinstance(v, int | list) and not isinstance(v, bool) for v in size.values()):
        # back to the size the sampler starts at: the image judged may be a later pass's,
        # upscaled, and would grow again with every refine
        out[scale] = {"class_type": "ImageScale", "inputs": {
            "upscale_method": "lanczos", **size, "crop": "disabled", "image": [load, 0]}}
        load = scale
    out[encode] = {"class_type": "VAEEncode", "inputs": {"pixels": [load, 0], "vae": vae}}
    out[sampler]["inputs"]["latent_image"] = [encode, 0]
    if source not in readers(out):
        del out[source]  # nothing else reads the empty latent
    return out


def _free_ids(flow: Mapping[str, Any], n: int) -> list[str]:
    top = max((int(k) for k in flow if str(k).isdigit()), default=0)
    return [str(top + i) for i in range(1, n + 1)]
