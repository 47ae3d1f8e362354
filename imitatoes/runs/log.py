"""The run log: a listener that writes what the engine does into the run folder, so anyone
can read a run without the tool and `resume` can continue it after any stop."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO

from imitatoes.loop import events as ev
from imitatoes.loop.state import RunState
from imitatoes.runs import folder as runfolder
from imitatoes.runs.folder import CriticRecord, IterationRecord, RunFolderError


class RunLog(ev.Handler):
    """Keeps the folder consistent after every step: the record before the image it
    describes, the state after both."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.record: IterationRecord | None = None
        self.started = time.monotonic()
        self.events: TextIO | None = None  # events.jsonl, open while the run goes
        self.rejected: list[str] | None = None

    def __call__(self, event: ev.Event) -> None:
        super().__call__(event)
        if not isinstance(event, ev.Progress):  # dozens per render: the table shows those
            self._append_event(event)

    def _append_event(self, event: ev.Event) -> None:
        line = {"t": round(time.monotonic() - self.started, 3), "event": event.kind,
                **event.scalars()}
        try:
            if self.events is None:
                self.events = open(self.dir / runfolder.EVENTS, "a", encoding="utf-8")  # noqa: SIM115
            self.events.write(json.dumps(line) + "\n")
            self.events.flush()  # a line is whole on disk before the next step
            if isinstance(event, ev.Done | ev.LimitsReached | ev.Interrupted | ev.Failed):
                self.events.close()
                self.events = None
        except OSError as exc:
            raise RunFolderError(f"cannot write {self.dir / runfolder.EVENTS}: "
                                 f"{exc.strerror}") from None

    def _save_state(self, state: RunState) -> None:
        runfolder.write_state(self.dir, state)

    def on_run_started(self, event: ev.RunStarted) -> None:
        self._save_state(event.state)

    def on_rendered(self, event: ev.ImageRendered) -> None:
        prompt_id = event.rendered.prompt_id
        if event.reused and not prompt_id:  # keep what the first attempt recorded
            earlier = runfolder.read_record(self.dir, event.key)
            prompt_id = earlier.prompt_id if earlier else ""
        self.record = IterationRecord(event.key, event.loop, event.iteration, event.params,
                                      prompt_id, {"render": round(event.rendered.seconds, 3)},
                                      refine=event.refine)
        if event.reused and self.record.refine is None:
            earlier = runfolder.read_record(self.dir, event.key)
            self.record.refine = earlier.refine if earlier else None
        runfolder.write_record(self.dir, self.record)  # the record first, then the image
        if event.mask is not None:
            runfolder.write_atomic(self.dir / f"{event.key}_mask.png", event.mask)
        if not event.reused:
            runfolder.write_atomic(self.dir / f"{event.key}.png", event.rendered.image)
        self._save_state(event.state)  # with the pending render: resume judges it

    def on_render_refused(self, event: ev.RenderRefused) -> None:
        runfolder.keep_rejected(self.dir, event.key, event.data, event.message)

    def on_verdict(self, event: ev.Judged) -> None:
        j = event.judgement
        assert self.record is not None  # a verdict always follows its render
        self.record.critic = CriticRecord(
            event.prompt, j.attempts, j.verdict, j.error,
            {"bytes": len(j.image.data), "mime": j.image.mime, "width": j.image.width,
             "height": j.image.height})
        self.record.seconds["critique"] = round(j.seconds, 3)

    def on_candidate_judged(self, event: ev.CandidateJudged) -> None:
        if self.record is not None and self.record.key == event.key:
            runfolder.write_record(self.dir, self.record)  # no verdict is applied to it

    def on_candidate_chosen(self, event: ev.CandidateChosen) -> None:
        self.record = runfolder.choose(
            self.dir, event.key, event.chosen,
            [{"key": k, "seed": seed, "score": score} for k, seed, score in event.candidates])

    def on_head_to_head(self, event: ev.HeadToHead) -> None:
        if self.record is not None:
            c = event.contest
            self.record.head_to_head = {
                "against": c.against, "outcome": c.outcome,
                "asked": [{"order": list(a.order), "winner": a.winner, "reason": a.reason}
                          for a in c.asked]}

    def on_done_rejected(self, event: ev.DoneRejected) -> None:
        self.rejected = list(event.failed)  # the verdict that follows is this one's record

    def on_applied(self, event: ev.Applied) -> None:
        assert self.record is not None
        p = event.patch
        r = self.record
        r.score, r.reverted_to = event.score, event.reverted
        r.applied = list(p.applied) if p else []
        r.refused = list(p.refused) if p else []
        r.next_params = p.params if p else None
        r.requirements = list(event.requirements)
        r.extra = list(event.extra)
        r.done_rejected, self.rejected = self.rejected, None
        runfolder.write_record(self.dir, r)

    def on_iteration_ended(self, event: ev.IterationEnded) -> None:
        self._save_state(event.state)

    def on_loop_ended(self, event: ev.LoopEnded) -> None:
        self._save_state(event.state)

    def on_done(self, event: ev.Done) -> None:
        self._final(event.state)

    def on_limits_reached(self, event: ev.LimitsReached) -> None:
        self._final(event.state)

    def on_interrupted(self, event: ev.Interrupted) -> None:
        self._save_state(event.state)

    def on_error(self, event: ev.Failed) -> None:
        self._save_state(event.state)

    def _final(self, state: RunState) -> None:
        chosen = state.done_key or (state.best.key if state.best else None)
        if chosen:
            runfolder.copy_final(self.dir, chosen)
        self._save_state(state)
