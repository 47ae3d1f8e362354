"""The one thread that serves every request's deadline."""

from __future__ import annotations

import threading
import time

from imitatoes.clients.net import Deadlines


def test_alarms_fire_soonest_first_and_disarmed_ones_never() -> None:
    deadlines, fired, done = Deadlines(), [], threading.Event()
    now = time.monotonic()

    def ring(name: str) -> None:
        fired.append((name, time.monotonic() - now))
        if name == "last":
            done.set()

    deadlines.arm(now + 0.15, lambda: ring("last"))
    deadlines.arm(now + 0.05, lambda: ring("first"))  # sooner than the thread sleeps for
    never = deadlines.arm(now + 0.02, lambda: ring("never"))
    deadlines.disarm(never)
    assert done.wait(5)
    assert [name for name, _ in fired] == ["first", "last"]
    assert fired[0][1] >= 0.05 and fired[1][1] >= 0.15


def test_thousands_of_disarmed_alarms_leave_nothing_behind() -> None:
    deadlines = Deadlines()
    for _ in range(5000):  # a long run's requests, each answered in time
        deadlines.disarm(deadlines.arm(time.monotonic() + 300, lambda: None))
    assert len(deadlines._queue) <= 64 + 1
    assert not deadlines._armed


def test_a_failing_alarm_does_not_stop_the_next() -> None:
    deadlines, done = Deadlines(), threading.Event()
    deadlines.arm(time.monotonic(), lambda: 1 / 0)
    deadlines.arm(time.monotonic() + 0.01, done.set)
    assert done.wait(5)


def test_a_forked_child_serves_its_own_alarms() -> None:
    """Celery's prefork workers: the parent's thread does not exist in the child."""
    import os

    deadlines = Deadlines()
    deadlines.disarm(deadlines.arm(time.monotonic() + 60, lambda: None))  # the parent serves
    pid = os.fork()
    if pid == 0:  # the child
        done = threading.Event()
        deadlines.arm(time.monotonic() + 0.01, done.set)
        os._exit(0 if done.wait(5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
