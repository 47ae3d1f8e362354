"""What a person watches: a live rich table at a terminal, plain lines otherwise. Both are
engine listeners; the table is a pure render(board, width) of a small dataclass.

The table holds still: every column but the critic's words has a fixed width, and only the
last rows are drawn (the report has them all), so a refresh costs the same at iteration 500
as at iteration 5. Below 110 columns the critic's reason and what was applied share one
column, one above the other, so nothing is cut."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .events import (
    Applied,
    Event,
    ImageRendered,
    Interrupted,
    IterationStarted,
    Judged,
    LoopStarted,
    Progress,
    RunStarted,
)
from .safe_text import printable
from .spec import Params, Spec
from .state import RunState

ROWS_SHOWN = 15  # the live table draws this many of the latest rows
WIDE = 110  # from this many columns on, reason and applied get a column each


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
    state: str = "rendering"  # rendering critiquing done not-done failed stopped
    score: float | None = None
    reason: str = ""
    applied: str = ""
    started: float = field(default_factory=time.monotonic)


@dataclass
class Board:
    goal: str
    servers: str
    run_dir: str
    iterations_per_loop: int = 1
    rows: dict[str, Row] = field(default_factory=dict)
    loop: int = 1
    last_loop: int = 1
    instructions: tuple[str, ...] = ()
    started: float = field(default_factory=time.monotonic)
    finished: list[float] = field(default_factory=list)  # seconds each finished iteration took

    def left(self) -> int:
        """Iterations left in the loop budget, the one under way included."""
        row = next(reversed(self.rows.values()), None)
        here = row.iteration if row and row.loop == self.loop else 1
        return (self.last_loop - self.loop) * self.iterations_per_loop + \
            self.iterations_per_loop - here + 1

    def estimate(self) -> str:
        """Time to the end of the loop budget at the pace so far: an upper bound, since the
        critic may say done first."""
        if not self.finished:
            return "estimate after the first iteration"
        pace = sum(self.finished[-10:]) / len(self.finished[-10:])
        row = next(reversed(self.rows.values()), None)
        spent = time.monotonic() - row.started if row and row.state != "done" else 0.0
        return f"at most ~{_duration(max(0.0, pace * self.left() - spent))} left"


def render(board: Board, width: int = 120) -> Group:
    rows = list(board.rows.values())
    shown = rows[-ROWS_SHOWN:]
    body = _wide(shown) if width >= WIDE else _narrow(shown)
    return Group(_head(board, len(rows)), *body)


def _fixed(row: Row) -> list[str | Text]:
    """The cells that have a fixed width, in order: #, seed, cfg, steps, render, judge, score."""
    p = row.params
    return [f"{row.loop}.{row.iteration}", str(p.seed), f"{p.cfg:g}", str(p.steps),
            _render_cell(row), "" if row.critique_s is None else f"{row.critique_s:.1f}s",
            _verdict_cell(row)]


FIXED = (("#", 5, "left"), ("seed", 10, "right"), ("cfg", 4, "right"), ("steps", 5, "right"),
         ("render", 10, "right"), ("judge", 6, "right"), ("score", 7, "left"))


def _wide(rows: list[Row]) -> list[Table]:
    table = Table(show_lines=False, header_style="bold", box=None, padding=(0, 1), expand=True)
    for name, width, justify in FIXED:
        table.add_column(name, width=width, no_wrap=True, justify=justify)  # type: ignore[arg-type]
    table.add_column("reason", ratio=3, overflow="fold")
    table.add_column("applied", ratio=2, overflow="fold")
    for row in rows:
        table.add_row(*_fixed(row), Text(row.reason), Text(row.applied, style="cyan"))
    return [table]


def _narrow(rows: list[Row]) -> list[Text | Padding]:
    """Below WIDE columns: the fixed cells on one line, the critic's reason and what was
    applied on the lines under it, indented, wrapped to the width: nothing is cut."""
    out: list[Text | Padding] = [_line([Text(name) for name, _, _ in FIXED], "bold")]
    for row in rows:
        out.append(_line([c if isinstance(c, Text) else Text(c) for c in _fixed(row)]))
        words = Text(row.reason) + (Text(" → ") + Text(row.applied, style="cyan")
                                    if row.applied else Text(""))
        if words.plain.strip():
            out.append(Padding(words, (0, 0, 0, 6)))
    return out


def _line(cells: list[Text], style: str = "") -> Text:
    """Cells padded to FIXED's widths, so every line has its columns in the same places."""
    line = Text(style=style)
    for (_, width, justify), cell in zip(FIXED, cells, strict=True):
        cell = cell.copy()
        cell.truncate(width)
        pad = Text(" " * (width - cell.cell_len))
        line.append_text(pad + cell if justify == "right" else cell + pad)
        line.append(" ")
    return line


def _head(board: Board, count: int) -> Text:
    row = next(reversed(board.rows.values()), None)
    at = f"loop {board.loop} of {board.last_loop}, iteration {row.iteration if row else 0} " \
         f"of {board.iterations_per_loop}"
    head = Text.assemble(("goal ", "bold"), board.goal, "\n")
    for text in board.instructions:
        head.append_text(Text.assemble(("yours ", "bold"), text, "\n"))
    head.append_text(Text.assemble(
        ("servers ", "bold"), board.servers, "\n", ("run ", "bold"), board.run_dir, "\n",
        ("now ", "bold"), f"{at} · {_duration(time.monotonic() - board.started)} elapsed · "
        f"{board.estimate()}"))
    if count > ROWS_SHOWN:
        head.append(f"\n… {count - ROWS_SHOWN} earlier iteration(s) in report.html", "dim")
    return head


def _render_cell(row: Row) -> str:
    if row.render_s is not None:
        return f"{row.render_s:.1f}s"
    progress = f"{row.step}/{row.steps} " if row.steps else ""
    return f"{progress}{time.monotonic() - row.started:.0f}s"


def _verdict_cell(row: Row) -> Text:
    styles = {"done": ("done", "bold green"), "not-done": ("", "yellow"),
              "failed": ("no verdict", "red"), "rendering": ("…", "dim"),
              "critiquing": ("judging", "cyan"), "stopped": ("stopped", "red")}
    label, style = styles[row.state]
    if row.score is not None and row.state not in ("done", "stopped"):
        label = f"{row.score:.2f}"
    return Text(label or "", style=style)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def update(board: Board, event: Event) -> Row | None:
    """Fold one engine event into the board; returns the row it touched."""
    match event:
        case RunStarted():
            board.loop, board.last_loop = event.state.loop, event.state.last_loop
            board.instructions = tuple(printable(i, one_line=True)
                                       for i in event.state.instructions)
        case LoopStarted():
            board.loop = event.loop
        case IterationStarted():
            board.rows[event.key] = Row(event.key, event.loop, event.iteration, event.params)
        case Interrupted():
            for row in board.rows.values():
                if row.state in ("rendering", "critiquing"):
                    row.state = "stopped"
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
            row.state = "failed" if j.verdict is None else "not-done"
            row.reason = printable(j.verdict.reason if j.verdict else j.error, one_line=True)
        case Applied():
            row.score = event.score
            if event.state.done_key == row.key:  # done as matched, not as the critic claimed
                row.state = "done"
            row.applied = printable((f"back to {event.reverted}; " if event.reverted else "") +
                                    (event.patch.summary() if event.patch else ""), one_line=True)
            board.finished.append(time.monotonic() - row.started)
    return row


class LiveTable:
    """The terminal listener: one rich Live, redrawn a few times a second."""

    def __init__(self, board: Board, console: Console | None = None) -> None:
        self.board = board
        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=4,
                         get_renderable=lambda: render(self.board, self.console.width))

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
            yours = "".join(f"\nyours: {i}" for i in self.board.instructions)
            self._print(f"goal: {self.board.goal}{yours}\nservers: {self.board.servers}\n"
                        f"run: {self.board.run_dir}\nbudget: loop {event.state.loop} to "
                        f"{event.state.last_loop}, {self.board.iterations_per_loop} "
                        "iteration(s) each")
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
                 f"{spec.critic.url} ({spec.critic.model})", str(run_dir),
                 spec.limits.iterations_per_loop)


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
