"""A loopback ComfyUI: the HTTP and websocket API of ComfyUI 0.3.64 as recorded in
tests/fixtures/comfyui, one prompt at a time in a worker thread, history in memory only."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import string
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from imitatoes import __version__

from . import comfy_eras, comfy_graph
from .comfy_run import Execution, QueuedPrompt, png
from .server import BackgroundServer

DEFAULT_CHECKPOINTS = ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors",
                       "tiny-random-sd15.safetensors"]
MAX_HISTORY = 10000
# The repository's own node pack, loaded like ComfyUI loads custom_nodes (when it is there).
REPO_CUSTOM_NODES = Path(__file__).resolve().parents[2] / "custom_nodes"


@dataclass
class Behaviour:
    """Timing and faults; change them on the object or with POST /imitatoes/behaviour."""

    step_seconds: float = 0.0  # render time per sampler step
    checkpoints: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKPOINTS))
    loras: list[str] = field(default_factory=lambda: ["add_detail.safetensors"])
    vram_total: int = 8 << 30  # what /system_stats reports for the device
    vram_free: int = 6 << 30
    frees: int = 0  # POST /free calls received (a count, for tests)
    grain: float = 0.0  # 0.1: renders compress and decode like photos (for benchmarks)
    drift: int = 0  # brighten every render by this much: an upgrade that changes the images
    stubborn: float = 0.0  # this share of seeds draws the shapes in the wrong colour
    fail_prompt: int = 0  # the next N POST /prompt answer ComfyUI's 500
    drop: int = 0  # the next N requests lose their connection without an answer
    history_delay: float = 0.0  # seconds before each /history answer
    execution_errors: int = 0  # the next N prompts fail inside the sampler
    websocket: bool = True  # False: /ws is refused and clients must poll
    # Each sampler step's preview as a binary frame, as ComfyUI started with --preview-method
    # auto sends them (event 1: a JPEG) to the prompt's client.
    previews: bool = False
    # The next renders' images reported and served under these [type, subfolder, filename],
    # unchecked, as a hostile or broken server (or custom node) could name them.
    output_names: list[list[str]] = field(default_factory=list)
    custom_nodes: list[str] = field(default_factory=lambda: [str(REPO_CUSTOM_NODES)]
                                    if REPO_CUSTOM_NODES.is_dir() else [])
    parallel: int = 1  # prompts run at once (Comfy Cloud: 1, 3 or 5 by subscription tier)
    era: str = "0.3.64"  # "jobs": a newer ComfyUI with the Jobs API; "cloud": Comfy Cloud
    api_key: str = ""  # cloud: the key every request must carry


class ComfyStandin(BackgroundServer):
    def __init__(self, behaviour: Behaviour | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__(self._app, host, port)
        self.behaviour = behaviour or Behaviour()
        self.custom, self.display = comfy_graph.load_custom_nodes(self.behaviour.custom_nodes)
        self._info: dict[str, Any] = {}
        self._info_key: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._lock = threading.Condition()
        self._number = 0
        self._pending: list[QueuedPrompt] = []
        self._running: dict[str, QueuedPrompt] = {}  # as many as behaviour.parallel allows
        self.history: OrderedDict[str, dict] = OrderedDict()
        self.jobs_seen: OrderedDict[str, QueuedPrompt] = OrderedDict()  # every prompt taken
        self.cancelled: dict[str, QueuedPrompt] = {}  # taken off the queue by the Jobs API
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.hostile: dict[tuple[str, str, str], bytes] = {}  # see Behaviour.output_names
        self.inputs: dict[str, bytes] = {"example.png": png(Image.new("RGB", (8, 8)), {})}
        self._counters: dict[tuple[str, str], int] = {}
        self._cache: dict[str, tuple] = {}
        self._generation = 0  # bumped by restart(): a prompt running then leaves no history
        self.finished_at: dict[str, float] = {}  # perf_counter when history got the entry
        self._sockets: dict[str, asyncio.Queue] = {}
        self._connections: set[web.WebSocketResponse] = set()
        self._workers: list[threading.Thread] = []
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ComfyStandin:
        super().start()
        self._staff()
        return self

    def _staff(self) -> None:
        """A worker per parallel slot (slots a behaviour change adds get theirs)."""
        while len(self._workers) < max(1, self.behaviour.parallel):
            worker = threading.Thread(target=self._work, daemon=True,
                                      name=f"standin-comfy-worker-{len(self._workers)}")
            self._workers.append(worker)
            worker.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            for job in self._running.values():
                job.stop.set()
            self._lock.notify_all()
        super().stop()

    def restart(self) -> None:
        """What a ComfyUI restart loses: history, queue, cache (files on disk survive)."""
        with self._lock:
            self._pending.clear()
            self.history.clear()
            self.jobs_seen.clear()
            self.cancelled.clear()
            self._cache.clear()
            self._generation += 1
            for job in self._running.values():
                job.stop.set()
        for ws in list(self._connections):  # a restarted server drops every websocket
            self.call(lambda w=ws: asyncio.ensure_future(w.close()))

    # -- HTTP -----------------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults])
        routes = [
            ("POST", "/prompt", self._post_prompt), ("GET", "/prompt", self._get_prompt),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_item),
            ("POST", "/history", self._post_history), ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue), ("POST", "/interrupt", self._post_interrupt),
            ("POST", "/free", self._post_free), ("GET", "/view", self._get_view),
            ("GET", "/system_stats", self._system_stats), ("GET", "/features", self._features),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_one), ("GET", "/ws", self._ws),
            ("POST", "/upload/image", self._upload_image),
            ("POST", "/upload/mask", self._upload_mask),
            ("GET", "/jobs", partial(comfy_eras.list_jobs, self)),
            ("GET", "/jobs/{job_id}", partial(comfy_eras.get_job, self)),
            ("POST", "/jobs/cancel", partial(comfy_eras.cancel_many, self)),
            ("POST", "/jobs/{job_id}/cancel", partial(comfy_eras.cancel_one, self)),
            ("GET", "/user", partial(comfy_eras.user, self))]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_route("GET", "/imitatoes/behaviour", self._get_behaviour)
        app.router.add_route("POST", "/imitatoes/behaviour", self._post_behaviour)
        return app

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        refused = comfy_eras.refused(self, request)
        if refused is not None:
            return refused
        if self.behaviour.drop > 0 and request.path not in ("/ws", "/imitatoes/behaviour"):
            self.behaviour.drop -= 1
            request.transport.close()
            raise ConnectionResetError("stand-in fault: connection dropped")
        return await handler(request)

    async def _post_prompt(self, request: web.Request) -> web.Response:
        if self.behaviour.fail_prompt > 0:
            self.behaviour.fail_prompt -= 1
            raise RuntimeError("stand-in fault: 500 on /prompt")
        body = await request.json()  # invalid JSON -> aiohttp's 500 text/plain, as in ComfyUI
        with self._lock:
            number = self._number
            if "prompt" in body:
                self._number += 1
        if "prompt" not in body:
            error = comfy_graph._error("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        info = self.object_info()
        result = comfy_graph.validate_prompt(body["prompt"], info, self.inputs)
        if not result.ok:
            return web.json_response({"error": result.error, "node_errors": result.node_errors},
                                     status=400)
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        queued = QueuedPrompt(number, prompt_id, body["prompt"], extra, result.outputs)
        with self._lock:
            self._pending.append(queued)
            self.jobs_seen[prompt_id] = queued
            while len(self.jobs_seen) > MAX_HISTORY:
                self.jobs_seen.popitem(last=False)
            self._lock.notify_all()
        self._broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": number,
                                  "node_errors": result.node_errors})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def _get_history(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.behaviour.history_delay)
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        with self._lock:
            items = list(self.history.items())
        if max_items is not None:
            n = int(max_items)
            offset = len(items) - n if offset < 0 else offset
            items = items[max(offset, 0):max(offset, 0) + n]
        return web.json_response(dict(items))

    async def _get_history_item(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.behaviour.history_delay)
        prompt_id = request.match_info["prompt_id"]
        with self._lock:
            entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            if body.get("clear"):
                self.history.clear()
            for prompt_id in body.get("delete", []):
                self.history.pop(prompt_id, None)
        return web.Response()

    async def _get_queue(self, request: web.Request) -> web.Response:
        with self._lock:
            running = [job.as_list() for job in self._running.values()]
            pending = [job.as_list() for job in self._pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            if body.get("clear"):
                self._pending.clear()
            gone = set(body.get("delete", []))
            self._pending = [job for job in self._pending if job.prompt_id not in gone]
        return web.Response()

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        target = body.get("prompt_id") if isinstance(body, dict) else None
        with self._lock:
            for job in self._running.values():
                if target is None or target == job.prompt_id:
                    job.stop.set()
        return web.Response()

    async def _post_free(self, request: web.Request) -> web.Response:
        body = await request.json()  # an empty body is ComfyUI's 500
        self.behaviour.frees += 1
        if isinstance(body, dict) and body.get("free_memory"):
            self._cache.clear()  # ComfyUI: PromptExecutor.reset(), so nothing is served cached
        return web.Response()

    async def _get_view(self, request: web.Request) -> web.Response:
        q = request.query
        filename = q.get("filename")
        hostile = self.hostile.get((q.get("type", ""), q.get("subfolder", ""), filename or ""))
        if hostile is not None:
            return web.Response(body=hostile, content_type="image/png")
        if filename is None:
            return web.Response(status=404)
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        kind = q.get("type", "output")
        if kind not in ("output", "input", "temp"):
            return web.Response(status=400)
        subfolder = q.get("subfolder", "")
        root = f"/{kind}"
        if os.path.commonpath((os.path.abspath(os.path.join(root, subfolder)), root)) != root:
            return web.Response(status=403)
        name = os.path.basename(filename)
        data = self.inputs.get(name) if kind == "input" else self.files.get((kind, subfolder, name))
        if data is None:
            return web.Response(status=404)
        headers = {"Content-Disposition": f'filename="{name}"'}
        if "preview" in q:
            fmt, _, quality = q["preview"].partition(";")
            if fmt in ("webp", "jpeg"):
                out = io.BytesIO()
                Image.open(io.BytesIO(data)).convert("RGB").save(
                    out, fmt.upper(), quality=int(quality or 90))
                return web.Response(body=out.getvalue(), content_type=f"image/{fmt}",
                                    headers=headers)
        return web.Response(body=data, content_type="image/png", headers=headers)

    async def _upload_image(self, request: web.Request) -> web.Response:
        return self._store_upload(await request.post(), None)

    async def _upload_mask(self, request: web.Request) -> web.Response:
        """As ComfyUI's: the mask's alpha put into the original image (`original_ref`)."""
        post = await request.post()
        try:
            ref = json.loads(str(post.get("original_ref")))
            original = self.inputs[ref["filename"]] if ref.get("type", "output") == "input" \
                else self.files[(ref.get("type", "output"), ref.get("subfolder", ""),
                                 ref["filename"])]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400)
        if "/" in ref["filename"] or ".." in ref["filename"]:
            return web.Response(status=400)

        def merged(data: bytes) -> bytes:
            base = Image.open(io.BytesIO(original)).convert("RGBA")
            base.putalpha(Image.open(io.BytesIO(data)).convert("RGBA").getchannel("A"))
            return png(base, {})
        return self._store_upload(post, merged)

    def _store_upload(self, post: Any, transform: Any) -> web.Response:
        """ComfyUI's image_upload: a name that exists gets " (1)", " (2)", ... unless the
        bytes are the same (then the name is reused) or overwrite is "true"/"1"; a subfolder
        or name that leaves the input folder is a 400."""
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        kind = str(post.get("type") or "input")
        root = "/input"
        where = os.path.abspath(os.path.join(root, os.path.normpath(subfolder), image.filename))
        if os.path.commonpath((root, where)) != root or kind != "input":
            return web.Response(status=400)
        data = image.file.read()
        if transform is not None:
            data = transform(data)
        if self.behaviour.era == "cloud":  # flat and content-addressed: subfolder ignored
            name = comfy_eras.flat_name(data, image.filename)
            self.inputs[name] = data
            return web.json_response({"name": name, "subfolder": "", "type": kind})
        stem, ext = os.path.splitext(image.filename)
        name, i = image.filename, 1

        def key(n: str) -> str:
            return f"{subfolder}/{n}" if subfolder else n
        if str(post.get("overwrite")) not in ("true", "1"):
            while key(name) in self.inputs and self.inputs[key(name)] != data:
                name, i = f"{stem} ({i}){ext}", i + 1
        self.inputs[key(name)] = data
        return web.json_response({"name": name, "subfolder": subfolder, "type": kind})

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "system": {"os": "posix", "ram_total": 8 << 30, "ram_free": 6 << 30,
                       "comfyui_version": f"0.3.64 (imitatoes stand-in {__version__}" + (
                           f", as {self.behaviour.era})" if self.behaviour.era != "0.3.64"
                           else ")"),
                       "required_frontend_version": "1.27.10", "installed_templates_version":
                       "0.1.95", "required_templates_version": "0.1.95",
                       "python_version": "stand-in", "pytorch_version": "none",
                       "embedded_python": False, "argv": ["imitatoes", "standin", "comfyui"]},
            "devices": [{"name": "cpu", "type": "cpu", "index": None,
                         "vram_total": self.behaviour.vram_total,
                         "vram_free": self.behaviour.vram_free,
                         "torch_vram_total": self.behaviour.vram_total,
                         "torch_vram_free": self.behaviour.vram_free}]})

    async def _features(self, request: web.Request) -> web.Response:
        return web.json_response({"supports_preview_metadata": True,
                                  "max_upload_size": 104857600})

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.object_info())

    async def _object_info_one(self, request: web.Request) -> web.Response:
        info = self.object_info()
        name = request.match_info["node_class"]
        return web.json_response({name: info[name]} if name in info else {})

    async def _get_behaviour(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.behaviour))

    async def _post_behaviour(self, request: web.Request) -> web.Response:
        body = await request.json()
        restart = body.pop("restart", False)  # an action, not a setting
        names = {f.name for f in fields(Behaviour)}
        unknown = sorted(set(body) - names)
        if unknown:
            return web.json_response({"error": f"unknown knob {unknown[0]!r}"}, status=400)
        for key, value in body.items():
            setattr(self.behaviour, key, value)
        self._staff()
        with self._lock:
            self._lock.notify_all()
        if restart:
            self.restart()
        return web.json_response(asdict(self.behaviour))

    # -- websocket ------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self.behaviour.websocket:
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        outbox: asyncio.Queue = asyncio.Queue()
        self._sockets[sid] = outbox
        self._connections.add(ws)
        sender = asyncio.ensure_future(self._pump(ws, outbox))
        outbox.put_nowait({"type": "status", "data": {"status": {"exec_info": {
            "queue_remaining": self.queue_remaining()}}, "sid": sid}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    if data.get("type") == "feature_flags":
                        outbox.put_nowait({"type": "feature_flags", "data": {
                            "supports_preview_metadata": True, "max_upload_size": 104857600}})
        finally:
            if self._sockets.get(sid) is outbox:
                del self._sockets[sid]
            self._connections.discard(ws)
            sender.cancel()
        return ws

    @staticmethod
    async def _pump(ws: web.WebSocketResponse, outbox: asyncio.Queue) -> None:
        while True:
            message = await outbox.get()
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(json.dumps(message))

    def _send(self, kind: str, data: dict[str, Any], sid: str | None) -> None:
        """Queue a frame for one client (sid) or, with sid None, for every socket."""
        self._deliver({"type": kind, "data": data}, sid)

    def _send_bytes(self, frame: bytes, sid: str | None) -> None:
        """A binary frame (a preview) for one client, as ComfyUI's send_bytes."""
        self._deliver(frame, sid)

    def _deliver(self, message: dict[str, Any] | bytes, sid: str | None) -> None:
        targets = list(self._sockets.items()) if sid is None else [(sid, self._sockets.get(sid))]
        for _, outbox in targets:
            if outbox is not None:
                self.call(outbox.put_nowait, message)

    def object_info(self) -> dict[str, Any]:
        """The catalogue (read, never changed by its callers), made again only when the model
        lists change: it is ComfyUI's whole catalogue, 6 ms to build."""
        key = (tuple(self.behaviour.checkpoints), tuple(self.behaviour.loras or ()))
        if self._info_key != key:
            self._info = comfy_graph.object_info(self.behaviour.checkpoints, self.custom,
                                                 self.display, self.behaviour.loras)
            self._info_key = key
        return self._info

    def queue_remaining(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._running)

    def _broadcast_status(self) -> None:
        self._send("status", {"status": {"exec_info": {"queue_remaining":
                                                       self.queue_remaining()}}}, None)

    # -- the worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not (
                        self._pending and len(self._running) < max(1, self.behaviour.parallel)):
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._pending.pop(0)
                job.started = time.time()
                self._running[job.prompt_id] = job
                generation = self._generation
            try:
                entry = Execution(self, job).execute()
            finally:
                with self._lock:
                    self._running.pop(job.prompt_id, None)
                    self._lock.notify_all()
            with self._lock:
                if generation != self._generation:
                    continue  # "restarted" meanwhile: the prompt is forgotten
                self.history[job.prompt_id] = entry
                self.finished_at[job.prompt_id] = time.perf_counter()
                while len(self.history) > MAX_HISTORY:  # ComfyUI's MAXIMUM_HISTORY_SIZE
                    gone, _ = self.history.popitem(last=False)
                    self.finished_at.pop(gone, None)
            self._broadcast_status()
            self._send("executing", {"node": None, "prompt_id": job.prompt_id},
                       job.extra.get("client_id"))

    def save_image(self, kind: str, prefix: str, img: Image.Image, job: QueuedPrompt
                   ) -> dict[str, str]:
        if self.behaviour.output_names:
            kind, subfolder, name = self.behaviour.output_names.pop(0)
            self.hostile[(kind, subfolder, name)] = png(img, {})
            return {"filename": name, "subfolder": subfolder, "type": kind}
        subfolder, _, base = prefix.rpartition("/")
        if kind == "temp":
            subfolder, base = "", "ComfyUI_temp_" + "".join(random.choices(string.ascii_lowercase,
                                                                           k=5))
        with self._lock:
            n = self._counters.get((subfolder, base), 0) + 1
            self._counters[(subfolder, base)] = n
        name = f"{base}_{n:05}_.png"
        self.files[(kind, subfolder, name)] = png(img, {"prompt": json.dumps(job.prompt)})
        return {"filename": name, "subfolder": subfolder, "type": kind}
