"""A loopback Ollama: /api/chat (both stream modes), /api/tags, /api/show, /api/version,
/api/ps, /api/generate (load/unload) and the OpenAI-compatible /v1/chat/completions and
/v1/models, with the shapes and error texts of tests/fixtures/ollama. Its vision model is
eye.judge: it really looks at the image."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import random
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from . import eye
from .server import BackgroundServer

VISION = ["completion", "vision"]
DEFAULT_MODELS = {"qwen2.5vl:7b": VISION, "llava:latest": VISION, "llava-llama3:latest": VISION,
                  "gemma3:4b": VISION,
                  "llama3.2:3b": ["completion", "tools"]}


@dataclass
class Behaviour:
    """Timing and faults; change them on the object or with POST /imitatoes/behaviour."""

    latency: float = 0.0  # seconds per answer
    load_seconds: float = 0.0  # a cold model load, paid by the first chat after (un)loading
    fail: int = 0  # the next N chats answer 500
    garbage: int = 0  # the next N answers are prose, not JSON
    truncate: int = 0  # the next N answers stop mid-JSON with done_reason "length"
    fence: int = 0  # the next N answers wrap the JSON in ```json fences and prose
    wild: int = 0  # the next N verdicts ask for absurd values (cfg 1e9, steps -5, huge text)
    never_done: bool = False  # never approve (benchmarks and soak tests need long runs)
    version: str = "0.33.0"
    structured_outputs: bool = True  # False: an Ollama older than 0.5 (format must be "json")
    models: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    repulled: int = 0  # bump it: every model's digest changes, as after `ollama pull`
    lenient: int = 0  # the next N verdicts call every requirement met: a false done
    # An imperfect vision model, as real ones are: the chance of calling an unmet requirement
    # met, and a met one unmet, drawn per requirement and answer from a seeded generator.
    false_met: float = 0.0
    missed: float = 0.0
    noise_seed: int = 0
    first_bias: float = 0.0  # head-to-head: the chance of preferring the first image shown
    # Knob changes every verdict that is not done asks for, as a model told of the spec's
    # knobs answers ({"denoise": 0.5}); names and values are sent as given, sane or not.
    tune: dict[str, Any] = field(default_factory=dict)
    # A region (0-1000) every unmet item is said to fail in, with its fix, as grounding
    # models answer; sent as given, sane or not.
    region: list[Any] | None = None
    # The chance that an edit that takes away names the wrong term (the prompt's first one,
    # often the subject itself), as a real model sometimes does; seeded like false_met.
    wrong_edit: float = 0.0
    edits: bool = True  # False: only ever add words, as critics did before edits took away


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


def _runner_error(message: str, code: int, kind: str) -> web.Response:
    """Errors from the bundled llama-server arrive double-encoded, as the fixtures show."""
    return _error(_dumps({"error": {"code": code, "message": message, "type": kind}}), code)


class BadRequest(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _asks_for_a_winner(fmt: Any) -> bool:
    return isinstance(fmt, dict) and "winner" in (fmt.get("properties") or {})


class OllamaStandin(BackgroundServer):
    def __init__(self, behaviour: Behaviour | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__(self._app, host, port)
        self.behaviour = behaviour or Behaviour()
        self.loaded: dict[str, float] = {}  # model -> expiry (monotonic)
        # the latest chat bodies, for tests to inspect (bounded: a soak must not grow)
        self.requests: deque[dict[str, Any]] = deque(maxlen=50)
        self.rng = random.Random(self.behaviour.noise_seed)  # the imperfect eye's draws

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        for method, path, handler in [
                ("GET", "/", self._root), ("GET", "/api/version", self._version),
                ("GET", "/api/tags", self._tags), ("POST", "/api/show", self._show),
                ("GET", "/api/ps", self._ps), ("POST", "/api/chat", self._chat),
                ("POST", "/api/generate", self._generate), ("GET", "/v1/models", self._v1_models),
                ("POST", "/v1/chat/completions", self._v1_chat),
                ("GET", "/imitatoes/behaviour", self._get_behaviour),
                ("POST", "/imitatoes/behaviour", self._post_behaviour)]:
            app.router.add_route(method, path, handler)
        return app

    def _misjudge(self, verdict: dict[str, Any]) -> None:
        """Flip items as an imperfect model would; done follows the (wrong) checklist."""
        for item in verdict["checklist"]:
            flip = self.behaviour.false_met if not item["met"] else self.behaviour.missed
            if self.rng.random() < flip:
                item.update(met=not item["met"], observation="(misjudged)")
        if verdict["checklist"]:
            verdict["done"] = all(item["met"] for item in verdict["checklist"])
        if verdict["done"]:
            verdict["changes"] = {"prompt_append": "", "neg_append": "", "cfg": None,
                                  "steps": None, "seed": "keep"}
            verdict["reason"] = "Every requirement holds."

    # -- information ----------------------------------------------------------------------------
    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return _json({"version": self.behaviour.version})

    def _model(self, name: str) -> dict[str, Any]:
        family = re.sub(r"[^a-z0-9]", "", name.split(":")[0])
        return {"name": name, "model": name, "modified_at": "2026-08-20T09:12:44.532112784-07:00",
                "size": 5969245856, "digest": hashlib.sha256(
                    f"{name}{self.behaviour.repulled}".encode()).hexdigest(),
                "details": {"parent_model": "", "format": "gguf", "family": family,
                            "families": [family], "parameter_size": "7B",
                            "quantization_level": "Q4_K_M"}}

    async def _tags(self, request: web.Request) -> web.Response:
        models = []
        for name, caps in self.behaviour.models.items():
            model = self._model(name)
            model["details"].update(context_length=128000, embedding_length=3584)
            models.append({**model, "capabilities": caps})
        return _json({"models": models})

    async def _show(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = _tagged(str(body.get("model") or body.get("name") or ""))
        if name not in self.behaviour.models:
            return _error(f"model '{name}' not found", 404)
        model = self._model(name)
        return _json({"license": "", "modelfile": f"FROM {name}\n", "template": "{{ .Prompt }}",
                      "details": model["details"], "model_info": {
                          "general.architecture": model["details"]["family"]},
                      "tensors": [], "capabilities": self.behaviour.models[name],
                      "modified_at": model["modified_at"]})

    async def _ps(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        self.loaded = {m: t for m, t in self.loaded.items() if t > now}
        return _json({"models": [{**{k: v for k, v in self._model(m).items()
                                     if k != "modified_at"},
                                  "expires_at": "2026-08-22T02:51:08.46317752-07:00",
                                  "size_vram": 5969245856, "context_length": 8192}
                                 for m in self.loaded]})

    async def _v1_models(self, request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [
            {"id": n, "object": "model", "created": 1787391667, "owned_by": "library"}
            for n in self.behaviour.models]})

    async def _get_behaviour(self, request: web.Request) -> web.Response:
        return _json(asdict(self.behaviour))

    async def _post_behaviour(self, request: web.Request) -> web.Response:
        body = await request.json()
        names = {f.name for f in fields(Behaviour)}
        for key, value in body.items():
            if key not in names:
                return _json({"error": f"unknown knob {key!r}"}, 400)
            setattr(self.behaviour, key, value)
        return _json(asdict(self.behaviour))

    # -- chat -----------------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        text = await request.text()
        if not text.strip():
            raise BadRequest(_error("missing request body", 400))
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            message = "unexpected EOF" if exc.pos >= len(text.rstrip()) else \
                f"invalid character '{text[exc.pos]}' looking for beginning of value"
            raise BadRequest(_error(message, 400)) from None
        if not isinstance(body, dict):
            raise BadRequest(_error("json: cannot unmarshal into Go value of type "
                                    "api.ChatRequest", 400))
        return body

    def _keep_alive(self, value: Any) -> float:
        if value is None:
            return 300.0
        if isinstance(value, int | float):
            return float(value)
        m = re.fullmatch(r"(-?[0-9.]+)(ns|us|ms|s|m|h)", str(value))
        if not m:
            raise BadRequest(_error(f'time: missing unit in duration "{value}"', 400))
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        return float(m.group(1)) * scale

    async def _load(self, model: str, keep_alive: float) -> int:
        """Make the model resident; returns the load time in ns (0 when already loaded)."""
        cold = model not in self.loaded or self.loaded[model] <= time.monotonic()
        if cold and self.behaviour.load_seconds:
            await asyncio.sleep(self.behaviour.load_seconds)
        self.loaded[model] = time.monotonic() + (keep_alive if keep_alive >= 0 else 1e9)
        return int(self.behaviour.load_seconds * 1e9) if cold else 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._body(request)
            return await self._chat_body(request, body)
        except BadRequest as bad:
            return bad.response

    async def _chat_body(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.requests.append(body)
        model = body.get("model")
        if not model:
            return _error("model is required", 400)
        name = _tagged(str(model))
        if name not in self.behaviour.models:
            return _error(f"model '{model}' not found", 404)
        keep_alive = self._keep_alive(body.get("keep_alive"))
        options = body.get("options") or {}
        for key in ("temperature", "top_p"):
            if key in options and not isinstance(options[key], int | float):
                return _error(f'option "{key}" must be of type float32', 500)
        if isinstance(body.get("format"), dict) and not self.behaviour.structured_outputs:
            return _error("json: cannot unmarshal object into Go struct field ChatRequest.format "
                          "of type string", 400)
        if body.get("think"):
            return _error(f'"{model}" does not support thinking', 400)
        messages = body.get("messages") or []
        if not messages:  # load or unload only
            if keep_alive == 0:
                self.loaded.pop(name, None)
                return _json(self._done(model, "", "unload"))
            await self._load(name, keep_alive)
            return _json(self._done(model, "", "load"))
        images = [img for m in messages for img in (m.get("images") or [])]
        decoded = [_b64(img) for img in images]
        if decoded and "vision" not in self.behaviour.models[name]:
            return _runner_error("Multimodal data provided, but model does not support "
                                 "multimodal requests.", 400, "invalid_request_error")
        if self.behaviour.fail > 0:
            self.behaviour.fail -= 1
            return _error("stand-in fault: llama runner process has terminated", 500)
        load_ns = await self._load(name, keep_alive)
        await asyncio.sleep(self.behaviour.latency)
        if len(decoded) == 2 and _asks_for_a_winner(body.get("format")):
            content, reason = self._pair(decoded, messages), "stop"
        else:
            content, reason = self._answer(decoded, messages)
        if body.get("stream", True):
            return await self._stream(request, model, content, reason, load_ns)
        return _json({**self._done(model, content, reason), **_stats(load_ns, content)})

    def _pair(self, images: list[bytes], messages: list[dict[str, Any]]) -> str:
        """Head-to-head: the image with more requirements met wins (the first on a tie, and
        with chance first_bias whatever it shows, as models favour what they see first)."""
        text = next((str(m.get("content", "")) for m in messages if m.get("images")), "")
        met = [sum(i["met"] for i in eye.judge(img, text)["checklist"]) for img in images]
        if met[0] == met[1]:  # a tie: an order-free choice, so only first_bias is a bias
            met = [-int(hashlib.sha256(img).hexdigest(), 16) for img in images]
        if self.rng.random() < self.behaviour.first_bias or met[0] > met[1]:
            return _dumps({"winner": "first", "reason": "It meets more of the checklist."})
        return _dumps({"winner": "second", "reason": "It meets more of the checklist."})

    def _answer(self, images: list[bytes], messages: list[dict[str, Any]]) -> tuple[str, str]:
        """The verdict for the last image, shaped by any fault knob that is set."""
        text = next((str(m.get("content", "")) for m in messages if m.get("images")), "")
        if not images:
            return _dumps({"done": False, "changes": {}, "reason": "no image was attached"}), "stop"
        try:
            verdict = eye.judge(images[-1], text, self.behaviour.edits)
        except (UnidentifiedImageError, OSError):
            raise BadRequest(_runner_error("Failed to load image or audio file", 400,
                                           "invalid_request_error")) from None
        if self.behaviour.false_met or self.behaviour.missed:
            self._misjudge(verdict)
        if verdict["changes"].get("prompt_remove") and self.behaviour.wrong_edit and \
                self.rng.random() < self.behaviour.wrong_edit:
            first = eye.first_term(text)
            verdict["changes"]["prompt_remove"] = first or verdict["changes"]["prompt_remove"]
        if self.behaviour.lenient > 0:  # what real vision models do: "looks done to me"
            self.behaviour.lenient -= 1
            for item in verdict["checklist"]:
                item.update(met=True, observation="looks fine")
            verdict.update(done=True, reason="Looks done.")
        if self.behaviour.never_done and verdict["done"]:
            verdict.update(done=False, reason="Not yet: the stand-in was told never to approve.")
            if verdict["checklist"]:  # a picky critic: the last requirement is never quite met
                verdict["checklist"][-1].update(met=False, observation="knob never_done")
            verdict["changes"]["seed"] = "new"
        if self.behaviour.tune and not verdict["done"]:
            verdict["changes"].update(self.behaviour.tune)
        if self.behaviour.region is not None:
            for item in verdict["checklist"]:
                if not item["met"]:
                    item.update(region=self.behaviour.region, fix=item["requirement"].lower())
        if self.behaviour.wild > 0:
            self.behaviour.wild -= 1
            verdict.update(done=False, checklist=[])
            verdict["changes"] = {"prompt_append": "ignore all bounds, " * 400,
                                  "neg_append": ", ".join(f"bad{i}" for i in range(300)),
                                  "cfg": 1e9, "steps": -5, "seed": 2**70}
        content = json.dumps(verdict)
        for knob in ("garbage", "truncate", "fence"):
            if getattr(self.behaviour, knob) > 0:
                setattr(self.behaviour, knob, getattr(self.behaviour, knob) - 1)
                if knob == "garbage":
                    return "The image looks lovely, I would not change a thing!", "stop"
                if knob == "truncate":
                    return content[: len(content) // 2], "length"
                return f"Here is my verdict:\n```json\n{content}\n```\nHope this helps.", "stop"
        return content, "stop"

    def _done(self, model: str, content: str, reason: str) -> dict[str, Any]:
        return {"model": model, "created_at": _now(),
                "message": {"role": "assistant", "content": content},
                "done": True, "done_reason": reason}

    async def _stream(self, request: web.Request, model: str, content: str, reason: str,
                      load_ns: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i in range(0, len(content), 8):
            piece = {"model": model, "created_at": _now(),
                     "message": {"role": "assistant", "content": content[i:i + 8]}, "done": False}
            await resp.write((_dumps(piece) + "\n").encode())
        final = {**self._done(model, "", reason), **_stats(load_ns, content)}
        await resp.write((_dumps(final) + "\n").encode())
        await resp.write_eof()
        return resp

    async def _generate(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            keep_alive = self._keep_alive(body.get("keep_alive"))
        except BadRequest as bad:
            return bad.response
        model = str(body.get("model") or "")
        if _tagged(model) not in self.behaviour.models:
            return _error(f"model '{model}' not found", 404)
        reason = "unload" if keep_alive == 0 else "load"
        if reason == "unload":
            self.loaded.pop(_tagged(model), None)
        else:
            await self._load(_tagged(model), keep_alive)
        return _json({"model": model, "created_at": _now(), "response": "", "done": True,
                      "done_reason": reason})

    # -- the OpenAI-compatible dialect ----------------------------------------------------------
    async def _v1_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model") or "")
        if _tagged(model) not in self.behaviour.models:
            return _openai_error(f"model '{model}' not found", "not_found_error", 404)
        messages = []
        for m in body.get("messages") or []:
            content = m.get("content")
            if isinstance(content, list):
                text = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
                images = []
                for part in content:
                    if part.get("type") != "image_url":
                        continue
                    url = str((part.get("image_url") or {}).get("url", ""))
                    if not url.startswith("data:"):
                        return _openai_error("image URLs are not currently supported, please use "
                                             "base64 encoded data instead",
                                             "invalid_request_error", 400)
                    images.append(url.split(",", 1)[-1])
                messages.append({"role": m.get("role"), "content": text, "images": images})
            else:
                messages.append({"role": m.get("role"), "content": content})
        native = {"model": model, "messages": messages, "stream": False, "keep_alive": "5m"}
        try:
            resp = await self._chat_body(request, native)
        except BadRequest as bad:
            resp = bad.response
        if resp.status != 200:
            message = json.loads(resp.text).get("error", "") if resp.text else ""
            return _openai_error(message, "api_error", resp.status)
        answer = json.loads(resp.text)
        finish = "length" if answer["done_reason"] == "length" else "stop"
        content = answer["message"]["content"]
        head = {"id": "chatcmpl-417", "created": int(time.time()), "model": model,
                "system_fingerprint": "fp_ollama"}
        usage = {"prompt_tokens": 92, "completion_tokens": answer.get("eval_count", 0),
                 "total_tokens": 92 + answer.get("eval_count", 0)}
        if body.get("stream"):
            return await _sse(request, head, content, finish, usage)
        return web.Response(text=_dumps({
            **head, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish}], "usage": usage}) + "\n",
            content_type="application/json")


async def _sse(request: web.Request, head: dict[str, Any], content: str, finish: str,
               usage: dict[str, int]) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    chunk = {**head, "object": "chat.completion.chunk"}
    deltas = [{"role": "assistant", "content": content[:8]}] + \
        [{"content": content[i:i + 8]} for i in range(8, len(content), 8)]
    events = [{**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None}]}
              for d in deltas]
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    events.append({**chunk, "choices": [], "usage": usage})
    for event in events:
        await resp.write(f"data: {_dumps(event)}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _openai_error(message: str, kind: str, status: int) -> web.Response:
    return web.Response(text=_dumps({"error": {"message": message, "type": kind, "param": None,
                                               "code": None}}) + "\n",
                        status=status, content_type="application/json")


def _stats(load_ns: int, content: str) -> dict[str, int]:
    eval_count = max(1, len(content) // 4)
    return {"total_duration": load_ns + 400_000_000, "load_duration": load_ns,
            "prompt_eval_count": 92, "prompt_eval_duration": 36_000_000,
            "eval_count": eval_count, "eval_duration": eval_count * 20_000_000}


def _b64(value: Any) -> bytes:
    try:
        data = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        bad = next((i for i, ch in enumerate(str(value))
                    if not (ch.isalnum() or ch in "+/=")), 0)
        raise BadRequest(_error(f"illegal base64 data at input byte {bad}", 400)) from None
    try:
        Image.open(io.BytesIO(data)).verify()
    except (UnidentifiedImageError, OSError):
        raise BadRequest(_runner_error("Failed to load image or audio file", 400,
                                       "invalid_request_error")) from None
    return data


def _tagged(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
