"""The ComfyUI client: submit a workflow, follow it (websocket, then the Jobs API where the
server has one, else /history, as the truth; polling as the fallback), fetch its images; plus
the queue, cancel and interrupt, free and server info. With an API key (Comfy Cloud) every
request carries it and goes under /api; the key is never put in a message."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from imitatoes.clients.comfy_ws import EventStream, Progress
from imitatoes.clients.imagecheck import MAX_PIXELS, NotAnImage
from imitatoes.clients.imagecheck import check as check_image
from imitatoes.clients.net import LimitExceeded, bounded, port_of, reason, session_for
from imitatoes.errors import ImitatoesError
from imitatoes.loop.ports import Rendered, Renderer, RenderRejected
from imitatoes.spec.model import ComfyConfig
from imitatoes.workflow.samplers import judged_output

JSON_CAP = 64 * 2**20  # the full /object_info of a well-stocked ComfyUI is a few MiB
IMAGE_CAP = 100 * 2**20  # the default for comfyui.max_image_mb


def how_to_start(url: str) -> str:
    """What to do when ComfyUI does not answer at `url` (its own port, not always 8188)."""
    return (f"Start ComfyUI (python main.py --listen 127.0.0.1 --port {port_of(url, 8188)}), or "
            "point imitatoes at it with --comfy-url or IMITATOES_COMFY_URL (the ComfyUI "
            "Desktop app listens on port 8000).")


class ComfyError(ImitatoesError):
    """Something went wrong talking to ComfyUI."""


class ComfyUnreachable(ComfyError):
    pass


class ComfyRejected(ComfyError):
    """ComfyUI refused the workflow (400); `node_errors` is its answer, as sent."""

    exit_code = 2

    def __init__(self, message: str, node_errors: dict[str, Any]) -> None:
        self.node_errors = node_errors
        super().__init__(message)


class ComfyServerError(ComfyError):
    pass


class ComfyProtocolError(ComfyError):
    pass


class ComfyUnauthorized(ComfyError):
    """401: the server wants an API key, or refused the one given."""


class ComfyExecutionError(ComfyError):
    def __init__(self, message: str, node_id: str = "", node_type: str = "") -> None:
        self.node_id, self.node_type = node_id, node_type
        super().__init__(message)


class RenderTimeout(ComfyError):
    pass


class PromptLost(ComfyError):
    """The prompt is neither queued, running nor in the history: ComfyUI restarted."""


@dataclass(frozen=True)
class ImageRef:
    """An output image as ComfyUI names it. Never used as a local path."""

    filename: str
    subfolder: str
    type: str
    node_id: str = ""


@dataclass(frozen=True)
class Submitted:
    prompt_id: str
    number: int
    node_errors: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """A finished prompt: status is "success" or "interrupted" (errors raise)."""

    prompt_id: str
    status: str
    images: tuple[ImageRef, ...]
    texts: tuple[str, ...]
    entry: dict[str, Any]


class ComfyClient:
    def __init__(self, url: str, connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 client_id: str | None = None, use_websocket: bool = True,
                 max_image_bytes: int = IMAGE_CAP, api_key: str | None = None,
                 key_name: str = "the API key") -> None:
        self.url = url.rstrip("/")
        self.prefix = "/api" if api_key else ""  # Comfy Cloud serves everything under /api
        self.key_name = key_name  # what a refusal names: the variable, never the key
        self._jobs: bool | None = None  # whether the server has the Jobs API (asked once)
        self.extra_data: dict[str, Any] = {}  # sent with each prompt (ComfyUI keeps it)
        self.timeout = (connect_timeout, read_timeout)  # read: the most one whole request takes
        self.max_image_bytes = max_image_bytes
        self.client_id = client_id or str(uuid.uuid4())
        self.session = session_for(self.url)
        # Retry only what is safe to repeat: GETs, and connections that never reached the server.
        retry = Retry(total=2, connect=2, read=2, status=2, backoff_factor=0.1,
                      allowed_methods=frozenset({"GET"}), status_forcelist=(502, 503, 504),
                      raise_on_status=False)
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if api_key:
            self.session.headers["X-API-Key"] = api_key
        self._events = EventStream(self.url, self.client_id, connect_timeout, api_key) \
            if use_websocket else None

    # -- plumbing -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, max_bytes: int = JSON_CAP,
                 **kwargs: Any) -> requests.Response:
        connect, seconds = self.timeout
        try:
            resp = bounded(self.session, method, self.url + self.prefix + path, seconds,
                           max_bytes, connect, **kwargs)
        except LimitExceeded as exc:
            raise ComfyUnreachable(f"ComfyUI at {self.url} answered {method} {path}, but "
                                   f"{exc.what}; is it overloaded, or is something in between "
                                   "holding the connection?") from None
        except requests.exceptions.Timeout:
            raise ComfyUnreachable(f"ComfyUI at {self.url} did not answer {method} {path} within "
                                   f"{seconds:g} s; is it overloaded or stuck?") from None
        except requests.exceptions.RequestException as exc:
            raise ComfyUnreachable(f"ComfyUI is not reachable at {self.url} ({method} {path}: "
                                   f"{reason(exc)}). {how_to_start(self.url)}") from None
        if resp.status_code == 401:
            raise ComfyUnauthorized(
                f"ComfyUI at {self.url} refused {method} {path} (401): "
                + (f"it does not accept {self.key_name}; check it (Comfy Cloud: "
                   "platform.comfy.org, API keys)" if self.prefix else "it wants an API key: "
                   "name the variable that holds it in comfyui.api_key_env"))
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        if resp.status_code >= 500:
            raise ComfyServerError(f"ComfyUI answered {resp.status_code} to {method} {path}: "
                                   f"{resp.text.strip()[:200]!r}; its console shows the traceback")
        try:
            return resp.json()
        except (ValueError, RecursionError):
            raise ComfyProtocolError(f"ComfyUI at {self.url} answered {method} {path} with "
                                     f"{resp.status_code} and no JSON: {resp.text[:80]!r}; is "
                                     "this URL really ComfyUI?") from None

    # -- information ----------------------------------------------------------------------------
    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return self._json("GET", f"/object_info/{node_class}" if node_class else "/object_info")

    def queue(self) -> dict[str, Any]:
        return self._json("GET", "/queue")

    def queue_position(self, prompt_id: str) -> int | None:
        """0 while running, k when k-th in line, None when not queued."""
        q = self.queue()
        if any(item[1] == prompt_id for item in q.get("queue_running", [])):
            return 0
        pending = sorted(q.get("queue_pending", []), key=lambda item: item[0])
        return next((i + 1 for i, item in enumerate(pending) if item[1] == prompt_id), None)

    def has_jobs(self) -> bool:
        """Whether the server has the Jobs API (asked once): ComfyUI newer than 0.3.64, and
        Comfy Cloud. The answer goes into provenance."""
        if self._jobs is None:
            resp = self._request("GET", "/jobs", params={"limit": 1})
            try:
                body = resp.json() if resp.status_code == 200 else None
            except (ValueError, RecursionError):
                body = None
            self._jobs = isinstance(body, dict) and isinstance(body.get("jobs"), list)
        return self._jobs

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        """GET /jobs/{id}: the job with its outputs, or None when the server does not know
        it (unlike /history, which answers {} for a prompt still queued)."""
        resp = self._request("GET", f"/jobs/{prompt_id}")
        if resp.status_code == 404:
            return None
        body = _safe_json(resp)
        if resp.status_code != 200 or not isinstance(body, dict):
            raise ComfyProtocolError(f"ComfyUI answered /jobs/{prompt_id} with "
                                     f"{resp.status_code}: {str(body)[:120]!r}")
        return body

    def cancel(self, prompt_ids: list[str]) -> bool:
        """POST /jobs/cancel: queued or running, in one call; False when the server has no
        such call (then the queue and /interrupt do it)."""
        resp = self._request("POST", "/jobs/cancel", json={"job_ids": prompt_ids[:100]})
        return resp.status_code == 200

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None while it is queued or running."""
        body = self._json("GET", f"/history/{prompt_id}")
        if not isinstance(body, dict):
            raise ComfyProtocolError(f"ComfyUI answered /history/{prompt_id} with {body!r}")
        return body.get(prompt_id)

    # -- control --------------------------------------------------------------------------------
    def interrupt(self, prompt_id: str | None = None) -> None:
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else None)

    def delete_queued(self, prompt_id: str) -> None:
        """Take a prompt out of the queue if it has not started (a no-op otherwise)."""
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        self._request("POST", "/free", json={"unload_models": unload_models,
                                             "free_memory": free_memory})

    def upload_image(self, data: bytes, name: str, overwrite: bool = False) -> str:
        """POST /upload/image into ComfyUI's input folder; the name to give LoadImage (the
        server's: it adds " (1)" rather than overwrite a different image of that name)."""
        resp = self._request("POST", "/upload/image", files={"image": (name, data, "image/png")},
                             data={"type": "input", "overwrite": "true" if overwrite else "false"})
        if resp.status_code != 200:
            raise ComfyProtocolError(f"ComfyUI refused the upload of {name!r} "
                                     f"({resp.status_code}): {resp.text.strip()[:120]!r}")
        try:
            body = resp.json()
            stored = str(body["name"])
            subfolder = str(body.get("subfolder") or "")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ComfyProtocolError(f"ComfyUI answered the upload of {name!r} with "
                                     f"{resp.text[:80]!r}, not the stored name") from None
        return f"{subfolder}/{stored}" if subfolder else stored

    def close(self) -> None:
        if self._events:
            self._events.close()
        self.session.close()

    # -- a render -------------------------------------------------------------------------------
    def submit(self, workflow: dict[str, Any], prompt_id: str | None = None) -> Submitted:
        """Queue the workflow. Our own prompt_id makes a lost answer safe to check and retry."""
        if self._events:
            self._events.ensure()  # listen before submitting, or early events are lost
        prompt_id = prompt_id or str(uuid.uuid4())
        body = {"prompt": workflow, "client_id": self.client_id, "prompt_id": prompt_id,
                **({"extra_data": self.extra_data} if self.extra_data else {})}
        try:
            resp = self._request("POST", "/prompt", json=body)
        except ComfyUnreachable:
            if not self._known(prompt_id):
                raise
            return Submitted(prompt_id, -1)
        if resp.status_code == 400:
            raise rejection(_safe_json(resp))
        if resp.status_code >= 500:
            raise ComfyServerError(f"ComfyUI answered {resp.status_code} to POST /prompt: "
                                   f"{resp.text.strip()[:200]!r}; its console shows the traceback")
        data = _safe_json(resp)
        if not isinstance(data, dict) or "prompt_id" not in data:
            raise ComfyProtocolError(f"ComfyUI answered POST /prompt with {resp.text[:120]!r}")
        return Submitted(data["prompt_id"], data.get("number", -1), data.get("node_errors") or {})

    def _known(self, prompt_id: str) -> bool:
        """After a lost answer: did the prompt reach the queue or the history?"""
        try:
            if self.has_jobs():
                return self.job(prompt_id) is not None
            return self.queue_position(prompt_id) is not None or self.history(prompt_id) is not None
        except ComfyError:
            return False

    def wait(self, prompt_id: str, timeout: float,
             on_progress: Callable[[Progress], None] | None = None) -> Finished:
        """Block until the prompt finishes; the websocket says when, /history says what."""
        deadline = time.monotonic() + timeout
        jobs = self.has_jobs()
        if self._events and self._events.ensure():
            self._events.follow(prompt_id, deadline, on_progress,
                                self._job_ended if jobs else self._finished)
        if jobs:
            return job_outcome(prompt_id, self._poll(prompt_id, deadline, self._ended_job))
        return outcome(prompt_id, self._poll(prompt_id, deadline, self.history))

    def _ended_job(self, prompt_id: str) -> dict[str, Any] | None:
        """The job once it has ended; None while it waits or runs; PromptLost if unknown."""
        found = self.job(prompt_id)
        if found is None:
            raise PromptLost(f"ComfyUI at {self.url} no longer knows prompt {prompt_id}: it was "
                             "restarted or the prompt was deleted; resume the run to render it "
                             "again")
        return None if found.get("status") in ("pending", "in_progress") else found

    def _job_ended(self, prompt_id: str) -> bool:
        return self._ended_job(prompt_id) is not None

    def _poll(self, prompt_id: str, deadline: float,
              ended: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
        interval = 0.02
        next_check = time.monotonic() + 1.0
        while True:
            entry = ended(prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() >= next_check and ended == self.history:
                next_check = time.monotonic() + 1.0
                self._check_not_lost(prompt_id)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RenderTimeout(f"prompt {prompt_id} did not finish in time in "
                                    f"ComfyUI at {self.url}")
            time.sleep(min(interval, left))
            interval = min(interval * 1.5, 0.25)  # a finished render is noticed within 250 ms

    def _finished(self, prompt_id: str) -> bool:
        """True once the history has the prompt; PromptLost when it never will."""
        if self.history(prompt_id) is not None:
            return True
        self._check_not_lost(prompt_id)
        return False

    def _check_not_lost(self, prompt_id: str) -> None:
        # ComfyUI writes the history before it takes a prompt off the queue, so a prompt that is
        # in neither (asked in this order) will never finish.
        if self.queue_position(prompt_id) is None and self.history(prompt_id) is None:
            raise PromptLost(f"ComfyUI at {self.url} no longer knows prompt {prompt_id}: it was "
                             "restarted or the prompt was deleted; resume the run to render it "
                             "again")

    def fetch(self, ref: ImageRef) -> bytes:
        resp = self._request("GET", "/view", self.max_image_bytes,
                             params={"filename": ref.filename, "subfolder": ref.subfolder,
                                     "type": ref.type})
        if resp.status_code != 200:
            raise ComfyError(f"ComfyUI answered {resp.status_code} for image {ref.filename!r} "
                             f"(subfolder {ref.subfolder!r}, type {ref.type!r})")
        return resp.content

    def images(self, result: Finished) -> list[tuple[ImageRef, bytes]]:
        """Every image of a finished prompt, in the history's order."""
        return [(ref, self.fetch(ref)) for ref in _some_images(result)]


def pick(result: Finished, node: str | None) -> ImageRef:
    """The image to judge: `node`'s first, else the first saved one (a preview is a "temp"),
    else the first (samplers.judged_output says which node)."""
    images = _some_images(result)
    return next((r for r in images if r.node_id == node), None) or \
        next((r for r in images if r.type == "output"), images[0])


def _some_images(result: Finished) -> tuple[ImageRef, ...]:
    if not result.images:
        raise ComfyError(f"prompt {result.prompt_id} finished without images; does the "
                         "workflow end in a SaveImage or PreviewImage node?")
    return result.images


def _dict(value: Any) -> dict[str, Any]:
    """Server data read defensively: what is not an object counts as an empty one."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _messages(status: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A history entry's [kind, data] pairs; anything else in the list is ignored."""
    return [(m[0], _dict(m[1])) for m in _list(status.get("messages"))
            if isinstance(m, list) and len(m) == 2 and isinstance(m[0], str)]


def outcome(prompt_id: str, entry: Any) -> Finished:
    """Read a history entry; an execution_error becomes ComfyExecutionError."""
    if not isinstance(entry, dict):
        raise ComfyProtocolError(f"ComfyUI's history entry for prompt {prompt_id} is not an "
                                 f"object: {str(entry)[:80]!r}; is this URL really ComfyUI?")
    status = _dict(entry.get("status"))
    messages = _messages(status)
    for kind, data in messages:
        if kind == "execution_error":
            node, node_type = str(data.get("node_id", "?")), str(data.get("node_type", "?"))
            what = ": ".join(str(data[k]).strip() for k in ("exception_type",
                                                            "exception_message") if k in data)
            raise ComfyExecutionError(f"ComfyUI failed in node {node} ({node_type}): "
                                      f"{what or 'no details given'}", node, node_type)
    interrupted = any(kind == "execution_interrupted" for kind, _ in messages)
    images, texts = [], []
    for node_id, out in _dict(entry.get("outputs")).items():
        for img in _list(_dict(out).get("images")):
            img = _dict(img)
            if isinstance(img.get("filename"), str) and img["filename"]:
                images.append(ImageRef(img["filename"], str(img.get("subfolder", "")),
                                       str(img.get("type", "output")), str(node_id)))
        texts += [str(t) for t in _list(_dict(out).get("text"))]
    if not interrupted and status.get("status_str") == "error":
        raise ComfyExecutionError(f"ComfyUI reports prompt {prompt_id} failed without details")
    return Finished(prompt_id, "interrupted" if interrupted else "success", tuple(images),
                   tuple(texts), entry)


def job_outcome(prompt_id: str, job: dict[str, Any]) -> Finished:
    """Read an ended job of the Jobs API as `outcome` reads a history entry: its
    execution_error becomes ComfyExecutionError, its outputs the images."""
    status = job.get("status")
    error = _dict(job.get("execution_error"))
    if status == "failed":
        node, node_type = str(error.get("node_id", "?")), str(error.get("node_type", "?"))
        what = ": ".join(str(error[k]).strip() for k in ("exception_type", "exception_message")
                         if k in error)
        raise ComfyExecutionError(f"ComfyUI failed in node {node} ({node_type}): "
                                  f"{what or 'no details given'}", node, node_type)
    if status not in ("completed", "cancelled"):
        raise ComfyProtocolError(f"ComfyUI's job {prompt_id} ended as {str(status)[:40]!r}")
    entry = {"outputs": _dict(job.get("outputs")), "status": {
        "status_str": "success", "messages": [["execution_interrupted", {}]]
        if status == "cancelled" else []}}
    return outcome(prompt_id, entry)


def rejection(body: Any) -> ComfyRejected:
    """ComfyUI's 400 answer as one readable message, a line per node input."""
    if not isinstance(body, dict):
        return ComfyRejected(f"ComfyUI refused the workflow: {body!r}", {})
    error = body.get("error") or {}
    node_errors = _dict(body.get("node_errors"))
    head = error.get("message") or "refused" if isinstance(error, dict) else str(error)
    lines = [f"ComfyUI refused the workflow: {head}"]
    if isinstance(error, dict) and error.get("type") == "invalid_prompt":
        lines[0] += f" ({error.get('details')}); is the custom node that provides it installed?"
    for node_id, info in node_errors.items():
        info = _dict(info)
        for err in _list(info.get("errors")):
            lines.append(f"  node {node_id} ({info.get('class_type')}) {_describe(_dict(err))}")
    return ComfyRejected("\n".join(lines), node_errors)


def _describe(err: dict[str, Any]) -> str:
    extra = _dict(err.get("extra_info"))
    name = extra.get("input_name")
    config = extra.get("input_config")
    limits = config[1] if isinstance(config, list) and len(config) > 1 else {}
    got = extra.get("received_value")
    kind = err.get("type")
    if kind == "value_bigger_than_max":
        return f"input {name}: {got} is bigger than the maximum {limits.get('max')}"
    if kind == "value_smaller_than_min":
        return f"input {name}: {got} is smaller than the minimum {limits.get('min')}"
    if kind == "value_not_in_list":
        return f"input {name}: {err.get('details')}"
    if kind == "required_input_missing":
        return f"input {name} is missing"
    if kind == "exception_during_validation" and extra.get("exception_type") == "KeyError":
        return f"links to node {err.get('details')}, which is not in the workflow"
    where = f"input {name}: " if name else ""
    return f"{where}{err.get('message')}: {err.get('details')}"


def _safe_json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except (ValueError, RecursionError):
        raise ComfyProtocolError(f"ComfyUI answered {resp.status_code} with no JSON: "
                                 f"{resp.text[:120]!r}") from None


class ComfyRenderer(Renderer):
    """The engine's renderer: one workflow in, the first output image out. Several can be
    queued at once (search.candidates): ComfyUI renders the next while the critic looks at
    the last."""

    def __init__(self, client: ComfyClient, timeout: float,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.client, self.timeout, self.max_pixels = client, timeout, max_pixels
        # our prompts not collected yet -> when queued, and the node whose image is judged
        self._ours: dict[str, tuple[float, str | None]] = {}

    def render(self, workflow: dict[str, Any], on_progress: Callable[[int, int], None]) -> Rendered:
        return self.collect(self.queue(workflow), on_progress)

    def queue(self, workflow: dict[str, Any]) -> str:
        """Submit without waiting; the ticket is ComfyUI's prompt id."""
        prompt_id = self.client.submit(workflow).prompt_id
        self._ours[prompt_id] = (time.monotonic(), judged_output(workflow))
        return prompt_id

    def collect(self, prompt_id: str, on_progress: Callable[[int, int], None]) -> Rendered:
        """Wait for a queued prompt (render_timeout counts its time in the queue too), fetch
        its image and check it."""
        start, output = self._ours.get(prompt_id, (time.monotonic(), None))
        try:
            result = self.client.wait(prompt_id, self.timeout - (time.monotonic() - start),
                                      lambda p: on_progress(p.value, p.max))
        except RenderTimeout as exc:
            self.interrupt()  # do not leave it running or queued for nobody
            raise RenderTimeout(f"{exc}; imitatoes asked ComfyUI to drop it. Raise "
                                "comfyui.render_timeout if renders are this slow") from None
        if result.status == "interrupted":
            raise ComfyError(f"ComfyUI interrupted prompt {prompt_id} (someone pressed "
                             "Cancel, or another client interrupted it); resume the run to retry")
        ref = pick(result, output)
        data = self.client.fetch(ref)
        self._ours.pop(prompt_id, None)
        try:
            check_image(data, self.max_pixels)
        except NotAnImage as exc:
            raise RenderRejected(f"ComfyUI's image {ref.filename!r} for prompt "
                                 f"{prompt_id} is {exc}; it was kept aside in the run "
                                 "folder's rejected/ and not saved as a render", data) from None
        return Rendered(data, prompt_id, time.monotonic() - start)

    def free(self) -> None:
        self.client.free()

    def upload(self, image: bytes, name: str) -> str:
        return self.client.upload_image(image, name)

    def interrupt(self) -> None:
        """Stop our prompts (and only ours), running or queued; never raise on the way out.
        Each is taken out of the queue before the one running is interrupted: the other way
        round, ComfyUI starts the next of ours between the two calls and it runs on. A server
        with the Jobs API cancels them all in one call."""
        with contextlib.suppress(ComfyError):
            if self._ours and self.client.has_jobs() and self.client.cancel(list(self._ours)):
                self._ours.clear()
                return
        for prompt_id in list(self._ours):
            with contextlib.suppress(ComfyError):
                self.client.delete_queued(prompt_id)
        for prompt_id in list(self._ours):
            with contextlib.suppress(ComfyError):
                self.client.interrupt(prompt_id)
        self._ours.clear()


def client_for(config: ComfyConfig, use_websocket: bool = True) -> ComfyClient:
    """The one place a ComfyUI client is built from a spec's comfyui section; the API key is
    read from the environment variable the spec names, here and nowhere else."""
    return ComfyClient(config.url, config.connect_timeout, config.timeout,
                       use_websocket=use_websocket,
                       max_image_bytes=int(config.max_image_mb * 2**20),
                       api_key=api_key(config), key_name=f"${config.api_key_env}")


def api_key(config: ComfyConfig) -> str | None:
    if not config.api_key_env:
        if "cloud.comfy.org" in config.url:
            raise ComfyUnauthorized("Comfy Cloud needs an API key: set comfyui.api_key_env to "
                                    "the variable that holds it (COMFY_CLOUD_API_KEY) and export "
                                    "it; create one at platform.comfy.org")
        return None
    key = os.environ.get(config.api_key_env, "").strip()
    if not key:
        raise ComfyUnauthorized(f"comfyui.api_key_env names {config.api_key_env}, but it is not "
                                f"set: export {config.api_key_env}=... (Comfy Cloud: create a "
                                "key at platform.comfy.org) and run again")
    return key


def renderer_for(config: ComfyConfig, client: ComfyClient) -> ComfyRenderer:
    return ComfyRenderer(client, config.render_timeout, config.max_image_pixels)
