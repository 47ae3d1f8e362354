"""One prompt's execution in the ComfyUI stand-in: the events in ComfyUI's order, the cache,
and the history entry it leaves."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps, PngImagePlugin

from . import comfy_graph, picture

if TYPE_CHECKING:
    from .comfyui import ComfyStandin


def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95)
    return out.getvalue()


OUTPUT_NODES = {"SaveImage": "output", "PreviewImage": "temp"}
PREVIEW = _jpeg(Image.new("RGB", (64, 64), (128, 128, 128)))


class Interrupted(Exception):
    pass


@dataclass
class QueuedPrompt:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]
    outputs: list[str]
    created: float = field(default_factory=time.time)  # what the Jobs API calls create_time
    started: float | None = None
    stop: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def as_list(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra, self.outputs]


def png(img: Image.Image, text: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    out = io.BytesIO()
    img.save(out, "PNG", pnginfo=info, compress_level=1)
    return out.getvalue()


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _now() -> int:
    return int(time.time() * 1000)


class Execution:
    """One prompt's execution: the events, in ComfyUI's order, and the history entry."""

    def __init__(self, server: ComfyStandin, job: QueuedPrompt) -> None:
        self.server, self.job = server, job
        self.sid = job.extra.get("client_id")
        self.messages: list[list] = []
        self.progress: dict[str, dict] = {}
        self.executed: list[str] = []

    def event(self, kind: str, data: dict[str, Any], history: bool = False) -> None:
        data = {**data, "prompt_id": self.job.prompt_id}
        if history:
            data["timestamp"] = _now()
            self.messages.append([kind, data])
        self.server._send(kind, data, self.sid)

    def execute(self) -> dict[str, Any]:
        prompt = self.job.prompt
        info = self.server.object_info()
        order = _order(prompt, self.job.outputs,
                       lambda n: info[prompt[n]["class_type"]]["output_node"])
        signatures = {n: _signature(prompt, n, self.server.custom) for n in order}
        cache = self.server._cache
        self.event("execution_start", {}, history=True)
        self.event("execution_cached", {"nodes": [n for n in order if signatures[n] in cache]},
                   history=True)
        results: dict[str, tuple] = {}
        ui: dict[str, dict] = {}
        status = "success"
        for node_id in order:
            try:
                results[node_id], node_ui = self._node(node_id, signatures[node_id], results)
            except Interrupted:
                status = self._fail("execution_interrupted", node_id, None, results)
                break
            except Exception as exc:  # the node failed: ComfyUI's execution_error
                status = self._fail("execution_error", node_id, exc, results)
                break
            if node_ui is not None:
                ui[node_id] = node_ui
                self.event("executed", {"node": node_id, "display_node": node_id,
                                        "output": node_ui})
        if status == "success":
            self.server._cache = {signatures[n]: (results[n], ui.get(n)) for n in order}
            self.event("execution_success", {}, history=True)
        return {"prompt": self.job.as_list(), "outputs": ui if status == "success" else {},
                "status": {"status_str": status, "completed": status == "success",
                           "messages": self.messages},
                "meta": {n: {"node_id": n, "display_node": n, "parent_node": None,
                             "real_node_id": n} for n in ui}}

    def _fail(self, kind: str, node_id: str, exc: Exception | None, results: dict) -> str:
        node = self.job.prompt[node_id]
        data: dict[str, Any] = {"node_id": node_id, "node_type": node["class_type"],
                                "executed": list(self.executed)}
        if exc is not None:
            inputs = {k: [results[v[0]][v[1]] if isinstance(v, list) else v]
                      for k, v in node["inputs"].items()}
            data.update(exception_message=str(exc), exception_type=type(exc).__name__,
                        traceback=[f"  stand-in node {node_id} ({node['class_type']})\n"],
                        current_inputs={k: [_plain(x) for x in v] for k, v in inputs.items()},
                        current_outputs=list(self.job.prompt))
        self.event(kind, data, history=True)
        return "error"

    def _node(self, node_id: str, signature: str, results: dict) -> tuple[tuple, dict | None]:
        if signature in self.server._cache:
            return self.server._cache[signature]
        if self.job.stop.is_set():
            raise Interrupted
        node = self.job.prompt[node_id]
        self._progress(node_id, 0.0, 1.0, "running")
        self.event("executing", {"node": node_id, "display_node": node_id})
        inputs = {k: results[v[0]][v[1]] if isinstance(v, list) else v
                  for k, v in node["inputs"].items()}
        result, node_ui = self._run(node["class_type"], inputs, node_id)
        self.executed.append(node_id)
        self._progress(node_id, 1.0, 1.0, "finished")
        return result, node_ui

    def _run(self, class_type: str, inputs: dict, node_id: str) -> tuple[tuple, dict | None]:
        if class_type in OUTPUT_NODES:
            prefix = inputs.get("filename_prefix", "ComfyUI")
            images = [self.server.save_image(OUTPUT_NODES[class_type], prefix, img, self.job)
                      for img in inputs["images"]]
            return (), {"images": images}
        if class_type == "PreviewAny":
            return (), {"text": [str(inputs["source"])]}
        if class_type == "LoadImage":
            img = Image.open(io.BytesIO(self.server.inputs[inputs["image"]])).convert("RGB")
            return ([img], None), None
        if class_type == "LoadImageMask":  # ComfyUI's: alpha is inverted, colours are not
            img = Image.open(io.BytesIO(self.server.inputs[inputs["image"]]))
            mask = comfy_graph.channel(img, inputs["channel"])
            return (ImageOps.invert(mask) if inputs["channel"] == "alpha" else mask,), None
        if class_type == "KSampler" and self.server.behaviour.execution_errors > 0:
            self.server.behaviour.execution_errors -= 1
            raise RuntimeError("stand-in fault: CUDA out of memory while sampling")
        if class_type in self.server.custom:
            return comfy_graph.custom_executor(self.server.custom[class_type])(
                inputs, node_id, self._step), None
        if class_type == "VAEDecode" and self.server.behaviour.stubborn:
            result = comfy_graph.decode(inputs, self.server.behaviour.stubborn)
        elif class_type in comfy_graph.EXECUTORS:
            result = comfy_graph.EXECUTORS[class_type](inputs, node_id, self._step)
        else:  # listed (the catalogue is ComfyUI's), but a stand-in draws no real model's nodes
            raise NotImplementedError(f"the stand-in lists {class_type} but cannot run it; it "
                                      f"runs {', '.join(sorted(comfy_graph.EXECUTORS))}")
        if class_type == "VAEDecode" and self.server.behaviour.grain:
            result = ([picture.grained(im, self.server.behaviour.grain) for im in result[0]],)
        if class_type == "VAEDecode" and self.server.behaviour.drift:
            shift = self.server.behaviour.drift
            result = ([im.point(lambda v: min(255, v + shift)) for im in result[0]],)
        return result, None

    def _step(self, node_id: str, value: int, maximum: int) -> None:
        if self.job.stop.wait(self.server.behaviour.step_seconds):
            raise Interrupted
        self._progress(node_id, float(value), float(maximum), "running")
        self.event("progress", {"value": value, "max": maximum, "node": node_id})
        if self.server.behaviour.previews:  # ComfyUI's PREVIEW_IMAGE: event 1, type 1 (JPEG)
            self.server._send_bytes(struct.pack(">II", 1, 1) + PREVIEW, self.sid)

    def _progress(self, node_id: str, value: float, maximum: float, state: str) -> None:
        self.progress[node_id] = {"value": value, "max": maximum, "state": state,
                                  "node_id": node_id, "prompt_id": self.job.prompt_id,
                                  "display_node_id": node_id, "parent_node_id": None,
                                  "real_node_id": node_id}
        self.server._send("progress_state", {"prompt_id": self.job.prompt_id,
                                             "nodes": dict(self.progress)}, None)


def _order(prompt: dict[str, Any], outputs: list[str], is_output: Callable[[str], bool]
           ) -> list[str]:
    """Every node the outputs need, in the order ComfyUI runs them (its ExecutionList): each
    output adds its inputs depth first; of the nodes ready to run, an output node goes first
    (so a PreviewImage shows as soon as it can), then one an output waits on, then one whose
    next node an output waits on, else the first added. A PreviewImage beside a SaveImage
    behind an upscale is run, and listed in the history, before it."""
    pending: dict[str, None] = {}  # in the order added
    blocking: dict[str, dict[str, None]] = {}
    waits: dict[str, int] = {}
    for out in outputs:
        stack, links = [out], []
        while stack:
            node_id = stack.pop()
            if node_id in pending:
                continue
            pending[node_id], blocking[node_id], waits[node_id] = None, {}, 0
            for value in prompt[node_id].get("inputs", {}).values():
                if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                    stack.append(str(value[0]))
                    links.append((str(value[0]), node_id))
        for source, target in links:
            if target not in blocking[source]:
                blocking[source][target] = None
                waits[target] += 1

    def unblocks_output(node_id: str, depth: int) -> bool:
        return any(is_output(b) if depth == 1 else unblocks_output(b, depth - 1)
                   for b in blocking[node_id])

    order: list[str] = []
    while pending:
        ready = [n for n in pending if waits[n] == 0]
        if not ready:  # a cycle: what is left never runs, and the outputs fail
            break
        pick = next((n for n in ready if is_output(n)), None) or \
            next((n for n in ready if unblocks_output(n, 1)), None) or \
            next((n for n in ready if unblocks_output(n, 2)), None) or ready[0]
        order.append(pick)
        del pending[pick]
        for target in blocking[pick]:
            waits[target] -= 1
    return order


def _signature(prompt: dict[str, Any], node_id: str, custom: dict[str, type]) -> str:
    node = prompt[node_id]
    inputs = {k: [_signature(prompt, v[0], custom), v[1]] if isinstance(v, list) else v
              for k, v in sorted(node.get("inputs", {}).items())}
    cls = custom.get(node["class_type"])
    if cls is not None and hasattr(cls, "IS_CHANGED"):  # NaN-style "always changed": no cache
        inputs["__changed__"] = str(cls.IS_CHANGED(**node.get("inputs", {})))
        if inputs["__changed__"] == "nan":
            inputs["__changed__"] = uuid.uuid4().hex
    return json.dumps([node["class_type"], inputs], sort_keys=True)
