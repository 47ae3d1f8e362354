"""Run an aiohttp application on 127.0.0.1 in a background thread (ComfyUI itself is aiohttp)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from aiohttp import web

# aiohttp logs each 500 with a traceback; the stand-ins answer 500 on purpose.
for _name in ("aiohttp.server", "aiohttp.access", "aiohttp.web"):
    logging.getLogger(_name).addHandler(logging.NullHandler())
    logging.getLogger(_name).propagate = False


def _access_log(out: TextIO) -> Any:
    """One line per request: time, status, duration, client, method and path."""
    @web.middleware
    async def log(request: web.Request, handler: Any) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            out.write(f"{time.strftime('%Y/%m/%d - %H:%M:%S')} | {status} | "
                      f"{(time.perf_counter() - start) * 1000:8.1f}ms | {request.remote} | "
                      f'{request.method} "{request.path}"\n')
            out.flush()
    return log


class BackgroundServer:
    """Start with `start()` (or `with`); `url` is then http://127.0.0.1:PORT."""

    def __init__(self, make_app: Callable[[], web.Application], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._make_app, self.host, self.port = make_app, host, port
        self.log: TextIO | None = None  # a line per request here, as `ollama serve` prints
        self.loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure), daemon=True,
                                        name=f"standin-{self.__class__.__name__}")
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._setup())
        except BaseException as exc:  # e.g. the port is taken: report it to start()
            failure.append(exc)
            ready.set()
            return
        ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    async def _setup(self) -> None:
        app = self._make_app()
        if self.log is not None:
            app.middlewares.append(_access_log(self.log))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the server's loop, from any thread."""
        if self.loop and self.loop.is_running():
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self.loop and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
