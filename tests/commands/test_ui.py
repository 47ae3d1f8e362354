"""The live table: it holds still, fits 80 columns without cutting, and costs the same to
draw at iteration 500 as at iteration 5."""

from __future__ import annotations

import dataclasses
import io
import re
import time
from pathlib import Path

from rich.console import Console

from imitatoes.commands import live
from imitatoes.commands import table as ui
from imitatoes.loop.events import Done, RunStarted
from imitatoes.loop.state import first_state
from imitatoes.spec import load as specs
from imitatoes.spec.model import Params
from tests.loop.test_engine import make

REASON = "Not yet: The background is blue (the background is a muddy gray-green)."
APPLIED = 'prompt + "deep blue background"; negative + "watermark", "text"; cfg 7 -> 8.5'


def board(rows: int, rendering: bool = False) -> ui.Board:
    b = ui.Board("A red circle on blue", "ComfyUI http://127.0.0.1:8188 · ollama", "runs/x",
                 iterations_per_loop=5, last_loop=100)
    for n in range(rows):
        key = f"loop_{n // 5 + 1:02d}_iter_{n % 5 + 1:02d}"
        row = ui.Row(key, n // 5 + 1, n % 5 + 1, Params("p", "n", 7.5, 25, 1234567890),
                     render_s=12.3, critique_s=4.5, state="not-done", score=0.5,
                     reason=REASON, applied=APPLIED)
        b.rows[key] = row
        b.loop = row.loop
    if rendering:
        last = list(b.rows.values())[-1]
        last.render_s, last.critique_s, last.state, last.score = None, None, "rendering", None
        last.reason = last.applied = ""
    return b


def text(b: ui.Board, width: int) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(live.render(b, width))
    return console.export_text()


def test_eighty_columns_cut_nothing_that_matters() -> None:
    out = text(board(3), 80)
    assert max(len(line) for line in out.splitlines()) <= 80
    flat = " ".join(out.split())
    assert " ".join(REASON.split()) in flat and " ".join(APPLIED.split()) in flat
    assert "…" not in out.replace("… ", "")  # nothing ellipsised
    wide = text(board(3), 140)
    assert "reason" in wide and "applied" in wide and max(map(len, wide.splitlines())) <= 140


def test_columns_do_not_move_as_renders_start_and_end() -> None:
    def header_positions(b: ui.Board) -> tuple[int, ...]:
        head = next(line for line in text(b, 120).splitlines() if "seed" in line)
        return tuple(head.index(name) for name in ("seed", "cfg", "steps", "render", "judge",
                                                    "score", "reason"))
    assert header_positions(board(3)) == header_positions(board(3, rendering=True))


def test_a_refresh_draws_the_same_rows_at_500_iterations_as_at_20() -> None:
    def drawn(rows: int) -> list[str]:
        return re.findall(r"^\s*(\d+\.\d+) +1234567890 ", text(board(rows), 120), re.M)

    assert drawn(500) == [f"{n // 5 + 1}.{n % 5 + 1}" for n in range(485, 500)]
    assert len(drawn(20)) == ui.ROWS_SHOWN == len(drawn(500))
    assert "485 earlier iteration(s) in report.html" in text(board(500), 120)


def test_the_header_says_where_the_budget_stands() -> None:
    b = board(7)
    b.finished = [10.0] * 7
    head = text(b, 120)
    assert "loop 2 of 100, iteration 2 of 5" in head and "elapsed" in head
    assert "at most ~" in head and "left" in head
    ui.update(b, Done(loop=2, iteration=2, key="loop_02_iter_02", state=first_state(make())))
    head = text(b, 120)  # the last frame says how it ended, and counts no more
    assert "done after" in head and "left" not in head and "elapsed" not in head


def test_the_cost_of_searching_harder_is_said_up_front() -> None:
    spec = make()
    spec = dataclasses.replace(spec, search=specs.Search(verify_done=True, candidates=3),
                               limits=specs.Limits(3, 3, max_renders=30))
    out = io.StringIO()
    lines = ui.PlainLines(ui.board_for(spec, Path("runs/x")), out)
    lines(RunStarted(loop=1, iteration=0, state=first_state(spec)))
    assert "3 candidates: 3 renders and 3 critiques an iteration" in out.getvalue()
    assert "at most 30 renders in all" in out.getvalue()
    assert ui.cost(make()) == ""  # the plain loop says nothing extra


def test_a_seed_from_comfyui_s_randomize_is_never_cut_short() -> None:
    b = board(1)
    row = next(iter(b.rows.values()))
    row.params = Params("p", "n", 10.75, 25, 1125899906842624)  # the frontend's largest
    for width in (80, 140):
        out = text(b, width)
        assert "1125899906842624" in out and "10.75" in out
    row.params = Params("p", "n", 7, 25, 2**64 - 1)  # KSampler's largest: too long, and says so
    line = next(x for x in text(b, 80).splitlines() if x.startswith("1.1"))
    assert "…" in line and str(2**64 - 1)[:15] in line


def test_the_estimate_never_grows_while_an_iteration_runs_long() -> None:
    """An iteration under way counts at most one pace: while it runs past it the estimate
    stays, instead of falling to what the iteration's end then raises again."""
    board = ui.Board("goal", "servers", "runs/x", iterations_per_loop=3, last_loop=2,
                     finished=[10.0, 10.0])
    row = ui.Row("loop_01_iter_03", 1, 3, Params(prompt="p", negative="", cfg=7.0, steps=20,
                                                 seed=1))
    board.rows[row.key] = row
    shown = []
    for spent in (0, 5, 10, 15, 30):
        row.started = time.monotonic() - spent + 0.5  # half a second of slack for the clock
        shown.append(board.estimate())
    assert shown == ["at most ~40s left", "at most ~35s left", "at most ~30s left",
                     "at most ~30s left", "at most ~30s left"]
    board.finished.append(10.0)  # it ends at the pace: the next starts from the same figure
    board.rows["loop_02_iter_01"] = ui.Row("loop_02_iter_01", 2, 1, row.params,
                                           started=time.monotonic() + 0.5)
    board.loop = 2
    assert board.estimate() == "at most ~30s left"
