"""ComfyUI's websocket, read by a thread into a queue: step progress and the moment a prompt
ends. Nothing depends on it: without it the client polls /history."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import websocket


@dataclass(frozen=True)
class Progress:
    prompt_id: str
    node: str
    value: int
    max: int


class EventStream:
    """One websocket per client, read by a thread into a queue; None of it is required."""

    def __init__(self, url: str, client_id: str, connect_timeout: float,
                 token: str | None = None) -> None:
        # Comfy Cloud takes its API key as `token` here (a websocket has no headers to set);
        # nothing here ever prints the address.
        self.url = url.replace("http", "ws", 1) + f"/ws?clientId={client_id}" + \
            (f"&token={quote(token, safe='')}" if token else "")
        self.connect_timeout = connect_timeout
        self.inbox: queue.Queue = queue.Queue()
        # Prompts whose end went by while another was followed: with several running at once
        # (candidates on a server with parallel slots) the next one's end often comes first.
        self.ended: dict[str, None] = {}
        self._ws: websocket.WebSocket | None = None
        self._failed_at = float("-inf")

    def ensure(self) -> bool:
        if self._ws is not None and self._ws.connected:
            return True
        if time.monotonic() - self._failed_at < 30:  # do not knock every iteration
            return False
        try:
            self._ws = websocket.create_connection(self.url, timeout=self.connect_timeout)
        except (OSError, websocket.WebSocketException):
            self._ws, self._failed_at = None, time.monotonic()
            return False
        self._ws.settimeout(None)
        threading.Thread(target=self._read, args=(self._ws,), daemon=True,
                         name="comfy-websocket").start()
        return True

    def _read(self, ws: websocket.WebSocket) -> None:
        try:
            while True:
                frame = ws.recv()
                if isinstance(frame, str):
                    msg = _parse(frame)
                    if msg is not None:
                        self.inbox.put(msg)
        except (OSError, ValueError, websocket.WebSocketException):
            self.inbox.put({"type": "_closed"})

    def follow(self, prompt_id: str, deadline: float,
               on_progress: Callable[[Progress], None] | None,
               finished: Callable[[str], bool]) -> None:
        """Return when the prompt's terminal event arrives, the socket closes or time is up."""
        last_check = time.monotonic()
        if self.ended.pop(prompt_id, 0) is None:
            return
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.inbox.get(timeout=min(left, 1.0))
            except queue.Empty:
                if time.monotonic() - last_check >= 2.0:  # a safety net for lost events
                    last_check = time.monotonic()
                    if finished(prompt_id):
                        return
                continue
            data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
            if msg.get("type") == "_closed":
                return
            if data.get("prompt_id") != prompt_id:
                if _ends(msg, data) and isinstance(data.get("prompt_id"), str):
                    self.ended[data["prompt_id"]] = None
                    while len(self.ended) > 1000:  # ours are collected long before this
                        self.ended.pop(next(iter(self.ended)))
                continue
            value, maximum = data.get("value"), data.get("max")
            if msg.get("type") == "progress" and on_progress and _count(value) \
                    and _count(maximum):
                on_progress(Progress(prompt_id, str(data.get("node")), value, maximum))
            if _ends(msg, data):
                return

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close(timeout=0.2)
            self._ws = None


def _ends(msg: dict, data: dict) -> bool:
    """A prompt's terminal event: an error, an interrupt, or "executing" nothing."""
    return msg.get("type") in ("execution_error", "execution_interrupted") or (
        msg.get("type") == "executing" and data.get("node") is None)


def _parse(frame: str) -> dict | None:
    """A message as an object, or None for anything else a broken server might send."""
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    return msg if isinstance(msg, dict) else None


def _count(value: object) -> bool:
    """A step count as ComfyUI sends it: a plain, reasonable integer."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9
