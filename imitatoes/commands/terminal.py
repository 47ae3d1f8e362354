"""A run in the user's terminal: the live table (or plain lines when output is not a terminal),
the summary, the question for further instruction after done, and the line that says how to
go on. `run`, `resume`, `demo` and scripts/run_loop.py all end here."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from imitatoes.commands import table as ui
from imitatoes.commands.lifecycle import Outcome, Run


def drive(run: Run, yes: bool = False, instruction: str = "",
          next_step: Callable[[Outcome], str] = Outcome.next_step) -> int:
    """Run to the end, asking for more after done at a terminal; returns the exit code.
    `next_step` says how to go on (the demo's stand-ins are gone by then: it says so)."""
    interactive = sys.stdout.isatty()
    while True:
        outcome = _once(run, interactive, instruction)
        typer.echo(ui.summary(outcome.state, outcome.run_dir, outcome.seconds))
        if outcome.state.status == "done" and interactive and not yes:
            instruction = typer.prompt("Further instruction (empty to finish)", default="",
                                       show_default=False).strip()
            if instruction:
                continue
        typer.echo(next_step(outcome))
        return outcome.exit_code


def _once(run: Run, interactive: bool, instruction: str) -> Outcome:
    board = ui.board_for(run.spec, run.dir, run.where)
    if interactive:
        from imitatoes.commands.live import LiveTable

        with LiveTable(board) as table:
            return run.execute([table], instruction)
    return run.execute([ui.PlainLines(board, sys.stdout)], instruction)
