"""The live table at a terminal: a pure render(board, width) of ui.Board, redrawn by one rich
Live a few times a second.

It holds still: every column but the critic's words has a fixed width, and only the last
rows are drawn (the report has them all), so a refresh costs the same at iteration 500 as at
iteration 5. Below WIDE columns the critic's reason and what was applied go under the row,
wrapped, so nothing is cut."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from imitatoes.commands.table import ROWS_SHOWN, Board, Row, duration, update
from imitatoes.loop.events import Event

WIDE = 110  # from this many columns on, reason and applied get a column each


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


# seed 16: the frontend's "randomize" draws up to 1125899906842624; cfg 5: 10.75
FIXED = (("#", 5, "left"), ("seed", 16, "right"), ("cfg", 5, "right"), ("steps", 5, "right"),
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
        cell.truncate(width, overflow="ellipsis")  # a cut shows: never a shorter seed
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
    for text in board.from_memory:
        head.append_text(Text.assemble(("memory ", "bold"), text, "\n"))
    going = board.ended or \
        f"{duration(time.monotonic() - board.started)} elapsed · {board.estimate()}"
    head.append_text(Text.assemble(
        ("servers ", "bold"), board.servers, "\n", ("run ", "bold"), board.run_dir, "\n",
        ("now ", "bold"), f"{at} · {going}"))
    if board.cost:
        head.append_text(Text.assemble("\n", ("search ", "bold"), board.cost))
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
