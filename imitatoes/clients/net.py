"""HTTP for both clients: one requests.Session per client (the environment read once), and
requests whose whole exchange ends by a deadline and whose body has a size cap, because a
server (or a proxy in front of it) that trickles or streams forever must not hang a run."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests


class LimitExceeded(Exception):
    """The answer took longer than its deadline or grew past its cap; `what` says which."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


def session_for(url: str) -> requests.Session:
    """requests re-reads proxy variables on every call (2.5 ms a request here); read them once.
    HTTP(S)_PROXY, NO_PROXY and REQUESTS_CA_BUNDLE keep working as users expect."""
    s = requests.Session()
    s.proxies.update(requests.utils.get_environ_proxies(url))
    s.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    s.trust_env = False
    return s


def bounded(session: requests.Session, method: str, url: str, seconds: float, max_bytes: int,
            connect_timeout: float = 5.0, **kwargs: Any) -> requests.Response:
    """`session.request`, finished within `seconds` in all (connect, headers, body) and with at
    most `max_bytes` of body; raises LimitExceeded otherwise. The body is read in full, so
    `.content`, `.text` and `.json()` work as usual."""
    deadline = time.monotonic() + seconds
    resp = session.request(method, url, stream=True,
                           timeout=(min(connect_timeout, seconds), seconds), **kwargs)
    expired = threading.Event()
    alarm = DEADLINES.arm(deadline, lambda: _cut(resp, expired))
    try:
        body = bytearray()
        for chunk in resp.iter_content(2**20):  # whatever has arrived, up to 1 MiB a read
            body += chunk
            if len(body) > max_bytes:
                raise LimitExceeded(f"its answer passed {size_text(max_bytes)}")
        if expired.is_set():
            raise LimitExceeded(f"it did not finish its answer within {seconds:g} s")
    except requests.exceptions.RequestException:
        if expired.is_set():  # the watchdog cut the connection: say why, not how
            raise LimitExceeded(f"it did not finish its answer within {seconds:g} s") from None
        raise
    except LimitExceeded:
        resp.close()  # never hand a half-read connection back to the pool
        raise
    finally:
        DEADLINES.disarm(alarm)
    resp._content = bytes(body)  # what requests itself does when it reads a body
    return resp


def reason(exc: requests.exceptions.RequestException) -> str:
    """Why a connection failed, in words (requests' own text is a nested repr)."""
    text = str(exc)
    for needle, words in (("Connection refused", "connection refused"),
                          ("Name or service not known", "unknown host"),
                          ("RemoteDisconnected", "the connection closed without an answer"),
                          ("Connection aborted", "the connection closed without an answer"),
                          ("Connection reset", "the connection was reset")):
        if needle in text:
            return words
    return type(exc).__name__


def port_of(url: str, default: int) -> int:
    """The port a URL names, or the scheme's default server port given."""
    return urlsplit(url).port or default


def size_text(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def _cut(resp: requests.Response, expired: threading.Event) -> None:
    """At the deadline: wake a read that is blocked on a silent or trickling server."""
    expired.set()
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to wake
            sock.shutdown(socket.SHUT_RDWR)


class Deadlines:
    """One thread for the deadlines of every request: a timer thread per request cost 0.5 ms to
    start, four times an iteration. Alarms that are disarmed in time never fire."""

    def __init__(self) -> None:
        self._numbers = itertools.count()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        """A fresh start: at first, and in a forked child (Celery's workers), which has
        neither the thread nor a lock it can trust."""
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int]] = []  # (when, alarm), soonest first
        self._armed: dict[int, Callable[[], None]] = {}
        self._serving = False

    def arm(self, when: float, action: Callable[[], None]) -> int:
        """Call `action` on that thread at `when` (time.monotonic) unless disarmed first."""
        with self._cond:
            if not self._serving:
                threading.Thread(target=self._serve, daemon=True, name="imitatoes-deadlines",
                                 ).start()
                self._serving = True
            alarm = next(self._numbers)
            self._armed[alarm] = action
            heapq.heappush(self._queue, (when, alarm))
            if self._queue[0][1] == alarm:  # sooner than the thread sleeps for
                self._cond.notify()
            return alarm

    def disarm(self, alarm: int) -> None:
        with self._cond:
            self._armed.pop(alarm, None)
            if len(self._queue) > 2 * len(self._armed) + 64:  # drop what was disarmed
                self._queue = [entry for entry in self._queue if entry[1] in self._armed]
                heapq.heapify(self._queue)

    def _serve(self) -> None:
        while True:
            with self._cond:
                action = self._due()
            if action is not None:
                with contextlib.suppress(Exception):  # one failed alarm must not stop the rest
                    action()

    def _due(self) -> Callable[[], None] | None:
        """Wait for the soonest armed alarm; its action once it is due (None: look again)."""
        while self._queue and self._queue[0][1] not in self._armed:
            heapq.heappop(self._queue)
        if not self._queue:
            self._cond.wait()
            return None
        when, alarm = self._queue[0]
        if when > time.monotonic():
            self._cond.wait(when - time.monotonic())
            return None
        heapq.heappop(self._queue)
        return self._armed.pop(alarm)


DEADLINES = Deadlines()
