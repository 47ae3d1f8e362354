"""What a person watches: a live rich table at a terminal, plain lines otherwise. Both are
engine listeners; the table is a pure render(state) of a small dataclass."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .events import Applied, Event, ImageRendered, IterationStarted, Judged, Progress, RunStarted
from .safe_text import printable
from .spec import Params, Spec
from .state import RunState


@dataclass
class Row:
    key: str
    loop: int
    iteration: int
    params: Params
    step: int = 0
    steps: int = 0
    render_s: float | None = None
    critique_s: float | None = None
    state: str = "rendering"  # rendering critiquing done not-done failed
    score: float | None = None
    reason: str = ""
    applied: str = ""
    started: float = field(default_factory=time.monotonic)


@dataclass
class Board:
    goal: str
    servers: str
    run_dir: str
    rows: dict[str, Row] = field(default_factory=dict)


def render(board: Board) -> Group:
    table = Table(expand=True, show_lines=False, header_style="bold", box=None, padding=(0, 1))
    for name, kw in [("loop", {"no_wrap": True}), ("seed·cfg·steps", {"no_wrap": True}),
                     ("render", {"no_wrap": True}), ("judge", {"no_wrap": True}),
                     ("verdict", {"no_wrap": True}), ("reason", {"ratio": 3}),
                     ("applied", {"ratio": 2})]:
        table.add_column(name, **kw)
    for row in board.rows.values():
        p = row.params
        table.add_row(f"{row.loop}.{row.iteration}", f"{p.seed}·{p.cfg:g}·{p.steps}",
                      _render_cell(row), "" if row.critique_s is None else f"{row.critique_s:.1f}s",
                      _verdict_cell(row), Text(row.reason), Text(row.applied, style="cyan"))
    head = Text.assemble(("goal ", "bold"), board.goal, "\n", ("servers ", "bold"),
                         board.servers, "\n", ("run ", "bold"), board.run_dir)
    return Group(head, table)


def _render_cell(row: Row) -> str:
    if row.render_s is not None:
        return f"{row.render_s:.1f}s"
    progress = f"{row.step}/{row.steps} " if row.steps else ""
    return f"{progress}{time.monotonic() - row.started:.1f}s"


def _verdict_cell(row: Row) -> Text:
    styles = {"done": ("done", "bold green"), "not-done": ("", "yellow"),
              "failed": ("no verdict", "red"), "rendering": ("…", "dim"),
              "critiquing": ("judging…", "cyan")}
    label, style = styles[row.state]
    if row.score is not None and row.state != "done":
        label = f"{row.score:.2f}"
    return Text(label or "", style=style)


def update(board: Board, event: Event) -> Row | None:
    """Fold one engine event into the board; returns the row it touched."""
    if isinstance(event, IterationStarted):
        board.rows[event.key] = Row(event.key, event.loop, event.iteration, event.params)
    row = board.rows.get(getattr(event, "key", ""))
    if row is None:
        return None
    match event:
        case Progress():
            row.step, row.steps = event.value, event.maximum
        case ImageRendered():
            row.render_s = event.rendered.seconds
            row.state = "critiquing"
        case Judged():
            j = event.judgement
            row.critique_s = j.seconds
            row.state = "failed" if j.verdict is None else (
                "done" if j.verdict.done else "not-done")
            row.reason = printable(j.verdict.reason if j.verdict else j.error, one_line=True)
        case Applied():
            row.score = event.score
            row.applied = printable((f"back to {event.reverted}; " if event.reverted else "") +
                                    (event.patch.summary() if event.patch else ""), one_line=True)
    return row


class LiveTable:
    """The terminal listener: one rich Live, refreshed on every event and a few times a second."""

    def __init__(self, board: Board, console: Console | None = None) -> None:
        self.board = board
        self.live = Live(render(board), console=console, refresh_per_second=8,
                         get_renderable=lambda: render(self.board))

    def __enter__(self) -> LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        update(self.board, event)


class PlainLines:
    """When stdout is not a terminal: one line per finished iteration, nothing that redraws."""

    def __init__(self, board: Board, out: TextIO) -> None:
        self.board, self.out = board, out

    def __call__(self, event: Event) -> None:
        row = update(self.board, event)
        if isinstance(event, RunStarted):
            self._print(f"goal: {self.board.goal}\nservers: {self.board.servers}\n"
                        f"run: {self.board.run_dir}")
        elif isinstance(event, Applied) and row is not None:
            score = "-" if row.score is None else f"{row.score:.2f}"
            verdict = "done" if row.state == "done" else ("no verdict" if row.state == "failed"
                                                          else f"score {score}")
            self._print(f"loop {row.loop} iter {row.iteration}: seed {row.params.seed} cfg "
                        f"{row.params.cfg:g} steps {row.params.steps} | render "
                        f"{row.render_s or 0:.1f}s critique {row.critique_s or 0:.1f}s | "
                        f"{verdict} | {row.reason}" + (f" | {row.applied}" if row.applied
                                                       else ""))

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def board_for(spec: Spec, run_dir: Path) -> Board:
    return Board(spec.goal, f"ComfyUI {spec.comfyui.url} · {spec.critic.provider} "
                 f"{spec.critic.url} ({spec.critic.model})", str(run_dir))


def summary(state: RunState, run_dir: Path, seconds: float) -> str:
    head = {"done": "done", "limits": "limits reached without done",
            "interrupted": "interrupted", "failed": "failed"}.get(state.status, state.status)
    best = f"{state.best.key} (score {state.best.score:.2f})" if state.best else "none"
    final = run_dir / "final.png"
    lines = [f"{head} after {state.renders} render(s) in {seconds:.1f}s"]
    if state.stalled and state.status == "limits":
        lines.append("stopped early: nothing the critic asked for could be applied (refused by "
                     "the bounds or seed policy, or already in the prompt), so the next image "
                     "would have repeated the last; widen the bounds or resume with "
                     "--instruction")
    lines += [f"best: {best}", f"run folder: {run_dir}"]
    if final.exists():
        lines.append(f"final image: {final}")
    if (run_dir / "report.html").exists():
        lines.append(f"report: {run_dir / 'report.html'}")
    return "\n".join(lines)
