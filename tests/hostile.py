"""Hostile loopback servers for the fault suite: they speak just enough of ComfyUI's and
Ollama's protocols to get a run going, then answer what a broken server, a proxy or an
attacker would. Each answer is a function of the request, so a test sets exactly the fault
it means and the rest stays healthy."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

Answer = tuple[int, str, "bytes | Iterator[bytes]"]  # status, content type, body or chunks
Route = Callable[[dict[str, Any]], Answer]


def json_answer(data: Any, status: int = 200) -> Answer:
    return status, "application/json", json.dumps(data).encode()


def raw(body: bytes, content_type: str = "application/octet-stream", status: int = 200
        ) -> Answer:
    return status, content_type, body


def trickle(body: bytes, every: float, content_type: str = "application/json") -> Answer:
    """One byte at a time, `every` seconds apart (then the same again, forever)."""
    def chunks() -> Iterator[bytes]:
        while True:
            for byte in body:
                time.sleep(every)
                yield bytes([byte])
    return 200, content_type, chunks()


def endless(content_type: str = "application/json") -> Answer:
    """A body that never ends, as fast as the client reads."""
    def chunks() -> Iterator[bytes]:
        block = b" " * 65536
        while True:
            yield block
    return 200, content_type, chunks()


def png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height in a few bytes (a decompression bomb's first line)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + \
            zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


class HostileServer:
    """A threaded HTTP server on a free loopback port; `routes` maps "METHOD /path" (the path
    up to its first variable part) to a Route. Records every request it gets."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet in tests
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._answer(self)

            do_POST = do_GET  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path, _, query = h.path.partition("?")
        request = {"method": h.command, "path": path, "query": query,
                   "json": _json_or_none(body)}
        self.requests.append(request)
        route = next((r for key, r in self.routes.items()
                      if f"{h.command} {path}".startswith(key)), None)
        status, kind, payload = route(request) if route else json_answer({}, 404)
        h.send_response(status)
        h.send_header("Content-Type", kind)
        if isinstance(payload, bytes):
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            return
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for part in payload:
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                h.wfile.flush()
        except OSError:  # the client gave up: what we are testing for
            pass


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def object_info(req: dict[str, Any]) -> Answer:
    """The node definitions a real ComfyUI 0.3.64 gave (the stand-in's recorded catalogue)."""
    from imitatoes.standins.comfy_graph import object_info as catalogue
    from imitatoes.standins.comfyui import DEFAULT_CHECKPOINTS

    name = req["path"].rsplit("/", 1)[-1]
    info = catalogue(list(DEFAULT_CHECKPOINTS))
    return json_answer({name: info[name]} if name in info else {})


def comfyui(**faults: Route) -> HostileServer:
    """A ComfyUI that renders at once; a fault replaces one route ("history", "view",
    "prompt")."""
    image = png()

    def prompt(req: dict[str, Any]) -> Answer:
        pid = (req["json"] or {}).get("prompt_id") or str(uuid.uuid4())
        return json_answer({"prompt_id": pid, "number": 1, "node_errors": {}})

    def history(req: dict[str, Any]) -> Answer:
        pid = req["path"].rsplit("/", 1)[-1]
        return json_answer({pid: {"status": {"status_str": "success", "completed": True,
                                             "messages": []},
                                  "outputs": {"9": {"images": [{"filename": "x.png",
                                                                "subfolder": "",
                                                                "type": "output"}]}}}})

    routes: dict[str, Route] = {
        "GET /system_stats": lambda _: json_answer({"system": {"comfyui_version": "hostile"},
                                                    "devices": []}),
        "GET /queue": lambda _: json_answer({"queue_running": [], "queue_pending": []}),
        "POST /queue": lambda _: json_answer({}),
        "POST /interrupt": lambda _: json_answer({}),
        "POST /prompt": faults.get("prompt", prompt),
        "GET /history/": faults.get("history", history),
        "GET /view": faults.get("view", lambda _: raw(image, "image/png")),
        "GET /object_info/": object_info,
    }
    return HostileServer(routes)


def verdict(done: bool = False, reason: str = "Needs more red.", **extra: Any) -> str:
    changes = {"prompt_append": "" if done else "red circle", "neg_append": "", "cfg": None,
               "steps": None, "seed": "keep"}
    return json.dumps({"done": done, "changes": changes, "reason": reason, **extra})


def ollama(*answers: str | Route) -> HostileServer:
    """An Ollama with qwen2.5vl:7b whose /api/chat gives `answers` in turn (texts become the
    message content; a Route answers the whole request), the last one again and again."""
    queue = list(answers) or [verdict(True, "All good.")]

    def chat(req: dict[str, Any]) -> Answer:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(answer):
            return answer(req)
        return json_answer({"model": "qwen2.5vl:7b", "message": {"role": "assistant",
                                                                "content": answer},
                            "done": True, "done_reason": "stop"})

    model = {"name": "qwen2.5vl:7b", "model": "qwen2.5vl:7b"}
    return HostileServer({
        "GET /api/version": lambda _: json_answer({"version": "0.9.0"}),
        "GET /api/tags": lambda _: json_answer({"models": [model]}),
        "POST /api/show": lambda _: json_answer({"capabilities": ["completion", "vision"]}),
        "POST /api/chat": chat,
    })
