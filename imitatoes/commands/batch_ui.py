"""The batch table: one row per spec, live at a terminal, a line per change otherwise."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import TextIO

from rich.live import Live
from rich.table import Table
from rich.text import Text

from imitatoes.commands.batch import Job
from imitatoes.safe_text import printable

STYLES = {"queued": "dim", "running": "cyan", "done": "bold green", "limits": "yellow",
          "failed": "red"}


def render(jobs: Sequence[Job], title: str = "") -> Table:
    table = Table(title=title or None, expand=True, box=None, header_style="bold")
    for name in ("spec", "backend", "loop", "state", "best", "elapsed", "note"):
        table.add_column(name, no_wrap=name != "note", ratio=3 if name == "note" else None)
    for j in jobs:
        note = printable(j.error, one_line=True) or (str(j.run_dir) if j.run_dir else "")
        table.add_row(Text(j.spec.name), Text(j.backend or "-"),
                      f"{j.loop}.{j.iteration}" if j.loop else "-",
                      Text(j.status, style=STYLES.get(j.status, "")),
                      "-" if j.best is None else f"{j.best:.2f}", f"{j.elapsed():.0f}s",
                      Text(note))
    return table


class Lines:
    """Plain output: a line when a job's state or backend changes."""

    def __init__(self, jobs: Sequence[Job], out: TextIO) -> None:
        self.jobs, self.out = jobs, out
        self.seen: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()  # backends report from their own threads

    def __call__(self) -> None:
        with self._lock:
            self._report()

    def _report(self) -> None:
        for i, j in enumerate(self.jobs):
            now = (j.status, j.backend)
            if self.seen.get(i) != now:
                self.seen[i] = now
                extra = f" ({printable(j.error, one_line=True)})" if j.error else (
                    f" -> {j.run_dir}" if j.status in ("done", "limits") else "")
                self.out.write(f"{j.spec.name}: {j.status} on {j.backend or '-'}{extra}\n")
                self.out.flush()


def watch(jobs: Sequence[Job], work: Callable[[Callable[[], None]], None]) -> None:
    """Run `work(on_change)` with the batch table live at a terminal, or a line per change."""
    if not sys.stdout.isatty():
        work(Lines(jobs, sys.stdout))
        return
    with Live(render(jobs), refresh_per_second=4, get_renderable=lambda: render(jobs)):
        work(lambda: None)
