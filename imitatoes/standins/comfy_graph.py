"""The ComfyUI stand-in's graph: node definitions recorded from ComfyUI 0.3.64 (`/object_info`),
prompt validation that follows ComfyUI's `execution.validate_prompt` rule by rule (same error
types, messages and shapes), and small executors for the nodes the stand-in can run."""

from __future__ import annotations

import importlib.util
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter, ImageOps

from imitatoes.workflow import catalogue

from . import picture


def recorded_object_info() -> dict[str, Any]:
    """ComfyUI 0.3.64's whole core catalogue, recorded: init, validate and doctor see what they
    would see on a real server (a fresh copy each time)."""
    return catalogue.core()


def object_info(checkpoints: list[str], custom: dict[str, type] | None = None,
                display: dict[str, str] | None = None, loras: list[str] | None = None
                ) -> dict[str, Any]:
    """The node catalogue, with this server's pretend checkpoint and LoRA lists in the combos
    and the custom nodes it loaded, described as ComfyUI's node_info describes them."""
    info = recorded_object_info()
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(checkpoints)
    info["LoraLoader"]["input"]["required"]["lora_name"][0] = list(loras or [])
    for name, cls in (custom or {}).items():
        info[name] = node_info(name, cls, (display or {}).get(name, name))
    return info


def node_info(name: str, cls: type, display: str) -> dict[str, Any]:
    inputs = cls.INPUT_TYPES()
    outputs = list(getattr(cls, "RETURN_TYPES", ()))
    out = {"input": inputs,
           "input_order": {k: list(v) for k, v in inputs.items()},
           "output": outputs, "output_is_list": [False] * len(outputs),
           "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
           "name": name, "display_name": display,
           "description": getattr(cls, "DESCRIPTION", ""),
           "python_module": f"custom_nodes.{cls.__module__.rsplit('.', 1)[-1]}",
           "category": getattr(cls, "CATEGORY", "sd"),
           "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        out["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    return out


def load_custom_nodes(folders: list[str]) -> tuple[dict[str, type], dict[str, str]]:
    """Import every node pack in the folders the way ComfyUI does: by folder, as a package."""
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    for folder in map(Path, folders):
        for pack in sorted(p for p in folder.glob("*/__init__.py")):
            module_name = f"custom_nodes.{pack.parent.name}"
            spec = importlib.util.spec_from_file_location(
                module_name, pack, submodule_search_locations=[str(pack.parent)])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            classes.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
            names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    return classes, names


def custom_executor(cls: type) -> Executor:
    def run(inputs: dict[str, Any], node_id: str, step: StepHook) -> tuple:
        result = getattr(cls(), cls.FUNCTION)(**inputs)
        return tuple(result["result"]) if isinstance(result, dict) else tuple(result)
    return run


def _error(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


@dataclass
class Validation:
    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any]


def validate_prompt(prompt: Any, info: dict[str, Any], inputs_dir: dict[str, bytes]) -> Validation:
    """ComfyUI's validate_prompt: top-level error, runnable outputs and per-node errors."""
    outputs = []
    for node_id in (prompt if isinstance(prompt, dict) else []):
        node = prompt[node_id]
        if not isinstance(node, dict) or "class_type" not in node:
            return Validation(False, _error("invalid_prompt", "Cannot execute because a node is "
                              "missing the class_type property.", f"Node ID '#{node_id}'"), [], {})
        if node["class_type"] not in info:
            return Validation(False, _error("invalid_prompt", f"Cannot execute because node "
                              f"{node['class_type']} does not exist.", f"Node ID '#{node_id}'"),
                              [], {})
        if info[node["class_type"]]["output_node"]:
            outputs.append(node_id)
    if not outputs:
        return Validation(False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {})
    checker = _Checker(prompt, info, inputs_dir)
    good, node_errors, failures = [], {}, []
    for out in outputs:
        try:
            valid, _ = checker.node(out)
        except Exception as exc:  # ComfyUI reports any exception here as a validation error
            valid = False
            trace = traceback.format_tb(exc.__traceback__)
            checker.validated[out] = (False, [_error(
                "exception_during_validation", "Exception when validating node", str(exc),
                exception_type=type(exc).__name__, traceback=trace)])
        if valid:
            good.append(out)
            continue
        failures += checker.validated[out][1]
        for node_id, (ok, reasons) in checker.validated.items():
            if not ok and reasons:
                entry = node_errors.setdefault(node_id, {
                    "errors": reasons, "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for e in failures)
        return Validation(False, _error("prompt_outputs_failed_validation",
                                        "Prompt outputs failed validation", details), [],
                          node_errors)
    return Validation(True, None, good, node_errors)


class _Checker:
    def __init__(self, prompt: dict, info: dict, inputs_dir: dict[str, bytes]) -> None:
        self.prompt, self.info, self.inputs_dir = prompt, info, inputs_dir
        self.validated: dict[str, tuple[bool, list]] = {}

    def node(self, node_id: str) -> tuple[bool, list]:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]
        spec = self.info[node["class_type"]]["input"]
        errors, valid = [], True
        for name, category in _declared(spec):
            declared = spec[category][name]
            config = [declared[0], declared[1] if len(declared) > 1 else {}]  # as ComfyUI reports
            if name not in node.get("inputs", {}):
                if category == "required":
                    errors.append(_error("required_input_missing", "Required input is missing",
                                         name, input_name=name))
                continue
            value = node["inputs"][name]
            if isinstance(value, list):
                problem, linked_ok = self._link(name, value, config)
                errors += problem
                valid = valid and linked_ok
            else:
                errors += self._value(node, name, value, config)
        result = (not errors and valid, errors)
        self.validated[node_id] = result
        return result

    def _link(self, name: str, value: list, config: list) -> tuple[list, bool]:
        if len(value) != 2:
            return [_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                           "[node_id, slot_index]", name, input_name=name, input_config=config,
                           received_value=value)], True
        source = self.prompt[value[0]]  # a missing node raises KeyError, as in ComfyUI
        received = self.info[source["class_type"]]["output"][value[1]]
        if not _types_match(received, config[0]):
            return [_error("return_type_mismatch", "Return type mismatch between linked nodes",
                           f"{name}, received_type({received}) mismatch input_type({config[0]})",
                           input_name=name, input_config=config, received_type=received,
                           linked_node=value)], True
        ok, _ = self.node(value[0])
        return [], ok

    def _value(self, node: dict, name: str, value: Any, config: list) -> list:
        kind, extra = config
        try:
            value = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(
                kind if isinstance(kind, str) else "", lambda v: v)(value)
        except (TypeError, ValueError) as exc:
            return [_error("invalid_input_type", f"Failed to convert an input value to a {kind} "
                           f"value", f"{name}, {value}, {exc}", input_name=name,
                           input_config=config, received_value=value, exception_message=str(exc))]
        if "min" in extra and value < extra["min"]:
            return [_error("value_smaller_than_min", f"Value {value} smaller than min of "
                           f"{extra['min']}", name, input_name=name, input_config=config,
                           received_value=value)]
        if "max" in extra and value > extra["max"]:
            return [_error("value_bigger_than_max", f"Value {value} bigger than max of "
                           f"{extra['max']}", name, input_name=name, input_config=config,
                           received_value=value)]
        if isinstance(kind, list) and value not in kind and node["class_type"] not in IMAGE_FILES:
            listed = str(kind) if len(kind) <= 20 else f"(list of length {len(kind)})"
            return [_error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in "
                           f"{listed}", input_name=name, input_config=config if len(kind) <= 20
                           else None, received_value=value)]
        if node["class_type"] in IMAGE_FILES and name == "image" and value not in self.inputs_dir:
            return [_error("custom_validation_failed", "Custom validation failed for node",
                           f"image - Invalid image file: {value}", input_name=name)]
        return []


IMAGE_FILES = ("LoadImage", "LoadImageMask")  # their image lists are the input folder


def _declared(spec: dict) -> list[tuple[str, str]]:
    return [(n, c) for c in ("required", "optional") for n in spec.get(c, {})]


def _types_match(received: str, wanted: Any) -> bool:
    if not isinstance(wanted, str):
        return received == "COMBO"
    if "*" in (received, wanted) or received == wanted:
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


# -- execution ---------------------------------------------------------------------------------

@dataclass
class Latent:
    """What the stand-in's KSampler hands to VAEDecode: everything the picture depends on."""

    width: int
    height: int
    batch: int
    positive: str = ""
    negative: str = ""
    seed: int = 0
    steps: int = 20
    cfg: float = 8.0
    init: Image.Image | None = None  # VAEEncode's pixels: img2img starts from them
    mask: Image.Image | None = None  # SetLatentNoiseMask: only white is repainted
    denoise: float = 1.0


# Reports one sampler step (node id, step, steps); it may raise to interrupt the node.
StepHook = Callable[[str, int, int], None]

Executor = Callable[[dict[str, Any], str, StepHook], tuple]


def _sampler(inputs: dict[str, Any], node_id: str, step: StepHook) -> tuple:
    latent: Latent = inputs["latent_image"]
    for k in range(1, int(inputs["steps"]) + 1):
        step(node_id, k, int(inputs["steps"]))
    return (Latent(latent.width, latent.height, latent.batch, inputs["positive"],
                   inputs["negative"], int(inputs["seed"]), int(inputs["steps"]),
                   float(inputs["cfg"]), latent.init, latent.mask,
                   float(inputs.get("denoise", 1.0))),)


def _decode(inputs: dict[str, Any], node_id: str, step: StepHook) -> tuple:
    return decode(inputs)


def decode(inputs: dict[str, Any], stubborn: float = 0.0) -> tuple:
    """VAEDecode: the picture the latent describes; `stubborn` (the knob) makes that share of
    seeds draw the shapes in the wrong colour."""
    lat: Latent = inputs["samples"]
    scene = picture.stubborn(picture.scene_from(lat.positive, lat.negative, lat.steps,
                                                lat.cfg), lat.seed, stubborn)
    return ([_from_init(picture.paint(scene, lat.width, lat.height, lat.seed + i), lat)
             for i in range(lat.batch)],)


def _from_init(fresh: Image.Image, lat: Latent) -> Image.Image:
    """img2img as the stand-in does it: the new picture blended over the init image by
    denoise; with a noise mask, only the mask's white is repainted (black stays as it was,
    pixel for pixel, so tests can check what an inpaint left alone)."""
    if lat.init is None:
        return fresh
    init = lat.init.convert("RGB")
    out = Image.blend(init, fresh.resize(init.size), max(0.0, min(1.0, lat.denoise)))
    if lat.mask is not None:
        out = Image.composite(out, init, lat.mask.convert("L").resize(init.size))
    return out


def _encode(inputs: dict[str, Any], node_id: str, step: StepHook) -> tuple:
    image = inputs["pixels"][0]
    return (Latent(image.width, image.height, len(inputs["pixels"]), init=image),)


def channel(image: Image.Image, name: str) -> Image.Image:
    rgba = image.convert("RGBA")
    return rgba.getchannel({"red": "R", "green": "G", "blue": "B", "alpha": "A"}[name])


def _empty_image(inputs: dict[str, Any], node_id: str, step: StepHook) -> tuple:
    c = int(inputs["color"])
    colour = ((c >> 16) & 255, (c >> 8) & 255, c & 255)
    size = (int(inputs["width"]), int(inputs["height"]))
    return ([Image.new("RGB", size, colour) for _ in range(int(inputs["batch_size"]))],)


def _regex(inputs: dict[str, Any], node_id: str, step: StepHook) -> tuple:
    return (re.sub(inputs["regex_pattern"], inputs["replace"], inputs["string"]),)


EXECUTORS: dict[str, Executor] = {
    "CheckpointLoaderSimple": lambda i, n, s: ("MODEL", "CLIP", "VAE"),
    "LoraLoader": lambda i, n, s: (i["model"], i["clip"]),  # a LoRA changes no stand-in pixel
    "CLIPTextEncode": lambda i, n, s: (str(i["text"]),),
    "EmptyLatentImage": lambda i, n, s: (Latent(int(i["width"]), int(i["height"]),
                                                int(i["batch_size"])),),
    "KSampler": _sampler,
    "VAEDecode": _decode,
    "EmptyImage": _empty_image,
    "ImageInvert": lambda i, n, s: ([ImageOps.invert(im) for im in i["image"]],),
    "ImageBlur": lambda i, n, s: ([im.filter(ImageFilter.GaussianBlur(float(i["sigma"])))
                                   for im in i["image"]],),
    "ImageScale": lambda i, n, s: ([im.resize((int(i["width"]) or im.width,
                                               int(i["height"]) or im.height))
                                    for im in i["image"]],),
    "GetImageSize": lambda i, n, s: (i["image"][0].width, i["image"][0].height, len(i["image"])),
    "PrimitiveString": lambda i, n, s: (str(i["value"]),),
    "PrimitiveStringMultiline": lambda i, n, s: (str(i["value"]),),
    "StringConcatenate": lambda i, n, s: (f"{i['string_a']}{i['delimiter']}{i['string_b']}",),
    "RegexReplace": _regex,
    "VAEEncode": _encode,
    "SetLatentNoiseMask": lambda i, n, s: (replace(i["samples"], mask=i["mask"]),),
    "ImageToMask": lambda i, n, s: (channel(i["image"][0], i["channel"]),),
}
