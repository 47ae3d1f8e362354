"""What a person watches, as data: a Board folded from the engine's events, shown as plain
lines when output is not a terminal (here) or as a live table at one (live.py, which alone
needs rich)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from imitatoes.loop.events import (
    Applied,
    Done,
    Event,
    Failed,
    ImageRendered,
    Interrupted,
    IterationStarted,
    Judged,
    LimitsReached,
    LoopStarted,
    Progress,
    RunStarted,
)
from imitatoes.loop.state import RunState
from imitatoes.runs.folder import CANDIDATE
from imitatoes.safe_text import printable
from imitatoes.spec.model import Params, Spec

ROWS_SHOWN = 15  # the live table draws this many of the latest rows


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
    from_memory: tuple[str, ...] = ()  # what memory across runs did to the start
    cost: str = ""  # what an iteration costs beyond one render and one critique
    started: float = field(default_factory=time.monotonic)
    finished: list[float] = field(default_factory=list)  # seconds each finished iteration took
    ended: str = ""  # how the run ended, once it has: the header stops counting

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
        # The iteration under way counts at most one pace: one that runs long must not lower
        # the estimate below what its end then raises again (a figure that grows for nothing).
        left = self.left()
        current = max(0.0, pace - spent) if left else 0.0
        return f"at most ~{duration(pace * max(0, left - 1) + current)} left"


def duration(seconds: float) -> str:
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
            board.from_memory = tuple(printable(m, one_line=True)
                                      for m in event.state.from_memory)
        case LoopStarted():
            board.loop = event.loop
        case IterationStarted():
            board.rows[event.key] = Row(event.key, event.loop, event.iteration, event.params)
            if len(board.rows) == 1 and board.from_memory:  # the first row starts from it
                board.rows[event.key].reason = "memory: " + "; ".join(board.from_memory)
        case Interrupted():
            for row in board.rows.values():
                if row.state in ("rendering", "critiquing"):
                    row.state = "stopped"
            board.ended = f"interrupted after {duration(time.monotonic() - board.started)}"
        case Done() | LimitsReached() | Failed():
            how = {Done: "done", LimitsReached: "limits reached", Failed: "failed"}[type(event)]
            board.ended = f"{how} after {duration(time.monotonic() - board.started)}"
    row = board.rows.get(getattr(event, "key", "").split(CANDIDATE)[0])  # a candidate: its row
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


class PlainLines:
    """When stdout is not a terminal: one line per finished iteration, nothing that redraws."""

    def __init__(self, board: Board, out: TextIO) -> None:
        self.board, self.out = board, out

    def __call__(self, event: Event) -> None:
        row = update(self.board, event)
        if isinstance(event, RunStarted):
            yours = "".join(f"\nyours: {i}" for i in self.board.instructions) + \
                "".join(f"\nmemory: {m}" for m in self.board.from_memory)
            self._print(f"goal: {self.board.goal}{yours}\nservers: {self.board.servers}\n"
                        f"run: {self.board.run_dir}\nbudget: loop {event.state.loop} to "
                        f"{event.state.last_loop}, {self.board.iterations_per_loop} "
                        "iteration(s) each" + (f"; {self.board.cost}" if self.board.cost
                                               else ""))
        elif isinstance(event, Applied) and row is not None:
            score = "-" if row.score is None else f"{row.score:.2f}"
            verdict = "done" if row.state == "done" else ("no verdict" if row.state == "failed"
                                                          else f"score {score}")
            knobs = f" {row.params.knob_text()}" if row.params.knobs else ""
            self._print(f"loop {row.loop} iter {row.iteration}: seed {row.params.seed} cfg "
                        f"{row.params.cfg:g} steps {row.params.steps}{knobs} | render "
                        f"{row.render_s or 0:.1f}s critique {row.critique_s or 0:.1f}s | "
                        f"{verdict} | {row.reason}" + (f" | {row.applied}" if row.applied
                                                       else ""))

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def board_for(spec: Spec, run_dir: Path, where: str = "") -> Board:
    return Board(spec.goal, f"ComfyUI {spec.comfyui.url} · {spec.critic.provider} "
                 f"{spec.critic.url} ({spec.critic.model})",
                 f"{run_dir} ({where})" if where else str(run_dir),
                 spec.limits.iterations_per_loop, cost=cost(spec))


def cost(spec: Spec) -> str:
    """What one iteration costs when the spec searches harder than one image a step."""
    k = spec.search.candidates
    extra = [f"{k} candidates: {k} renders and {k} critiques an iteration"] if k > 1 else []
    if spec.search.verify_done:
        extra.append("a done claim is checked once or twice more")
    if spec.search.head_to_head:
        extra.append("a new best is compared with the old one")
    if spec.limits.max_renders:
        extra.append(f"at most {spec.limits.max_renders} renders in all")
    return "; ".join(extra)


def summary(state: RunState, run_dir: Path, seconds: float) -> str:
    head = {"done": "done", "limits": "limits reached without done",
            "interrupted": "interrupted", "failed": "failed"}.get(state.status, state.status)
    best = f"{state.best.key} (score {state.best.score:.2f})" if state.best else "none"
    final = run_dir / "final.png"
    lines = [f"{head} after {state.renders} render(s) in {seconds:.1f}s"]
    if state.stalled and state.status == "limits":
        spread = any(t.made in ("seeds", "proposals") for t in state.history)
        lines.append(("stopped early: other seeds (twice) and the critic's other changes gave "
                      "no better image, and what the critic asked for next" if spread else
                      "stopped early: nothing the critic asked for could be applied (refused by "
                      "the bounds or seed policy, or already in the prompt), so the next image")
                     + " would have repeated the last; widen the bounds or resume with "
                     "--instruction")
    lines += [f"best: {best}", f"run folder: {run_dir}"]
    if final.exists():
        lines.append(f"final image: {final}")
    if (run_dir / "report.html").exists():
        lines.append(f"report: {run_dir / 'report.html'}")
    return "\n".join(lines)
