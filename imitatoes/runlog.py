"""The run folder: a listener that writes what the engine does, so anyone can read a run
without the tool and `resume` can continue it. Every file is written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from . import spec as specs
from . import template
from .engine import Event, RunState
from .errors import ImitatoesError
from .spec import Params, Spec

STATE = "state.json"


class RunFolderError(ImitatoesError):
    pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target and rename over it: a killed process leaves the old file or the
    new one, never half of one. (No fsync: it cost 3 ms a write, 10% of our overhead, and
    guards only against power loss, after which resume starts from an older, consistent
    state.)"""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise RunFolderError(f"cannot write {path}: {exc.strerror or exc}; free some space or "
                             f"fix the permissions, then resume with: imitatoes resume "
                             f"{path.parent}") from None


def _json(data: Any, indent: int | None = 2) -> bytes:
    return (json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n").encode()


def snapshot(spec: Spec) -> dict[str, Any]:
    """The spec as run, self-contained: the workflow and the template sit beside it."""
    data = json.loads(json.dumps(spec.data))
    data["workflow"] = "workflow.json"
    text = spec.critic.prompt_template
    data.setdefault("critic", {})["prompt_template"] = text if template.is_inline(text) \
        else text + "\n"
    data.pop("output", None)
    return data


def create(spec: Spec, root: Path | None = None) -> Path:
    """A new, empty run folder named for the time (UTC) and the spec."""
    root = root or spec.output_dir
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        run_dir = root / (f"{stamp}_{spec.name}" + (f"_{n}" if n else ""))
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"cannot create a run folder in {root}: {exc.strerror}; "
                                 "choose another with --runs-dir or IMITATOES_RUNS") from None
    write_folder(run_dir, snapshot(spec), dict(spec.workflow))
    return run_dir


def write_folder(run_dir: Path, spec_data: dict[str, Any], workflow: dict[str, Any]) -> None:
    """The two files a run folder starts with: the spec as run and its workflow."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create {run_dir}: {exc.strerror}") from None
    write_atomic(run_dir / "spec.yaml", yaml.safe_dump(spec_data, sort_keys=False,
                                                       allow_unicode=True).encode())
    write_atomic(run_dir / "workflow.json", _json(workflow))


def load(run_dir: Path, overrides: list[str] | None = None) -> tuple[Spec, RunState]:
    """The spec snapshot and the saved state of a run folder."""
    state_file = run_dir / STATE
    if not state_file.is_file():
        raise RunFolderError(f"{run_dir} is not a run folder (no {STATE}); give the folder a "
                             "run printed when it started")
    spec = specs.load(run_dir / "spec.yaml", overrides or [])
    try:
        state = RunState.from_dict(json.loads(state_file.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{state_file} is damaged ({exc}); the iteration files beside it "
                             "are intact") from None
    return spec, state


def saved_render(run_dir: Path, key: str) -> tuple[bytes, Params] | None:
    """A render saved before a crash, with the params it was made with (its record is written
    before the PNG, so a PNG without a readable record was never finished)."""
    png, record = run_dir / f"{key}.png", run_dir / f"{key}.json"
    if not (png.is_file() and record.is_file()):
        return None
    try:
        return png.read_bytes(), Params(**json.loads(record.read_text())["params"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLog:
    """Listens to the engine and keeps the folder consistent after every step."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.record: dict[str, Any] = {}
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler:
            handler(event)
        self._append_event(event)

    def _append_event(self, event: Event) -> None:
        if event.kind == "progress":
            return  # dozens per render; the table shows them, the log does not need them
        line = {"t": round(time.monotonic() - self.started, 3), "event": event.kind,
                "loop": event.loop, "iteration": event.iteration,
                **{k: v for k, v in event.data.items() if isinstance(v, str | int | float)}}
        try:
            with open(self.dir / "events.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as exc:
            raise RunFolderError(f"cannot write {self.dir / 'events.jsonl'}: {exc.strerror}") \
                from None

    def save_state(self, state: RunState) -> None:
        write_atomic(self.dir / STATE, _json(state.as_dict(), indent=None))

    def _on_run_started(self, event: Event) -> None:
        self.save_state(event.data["state"])

    def _on_rendered(self, event: Event) -> None:
        k = event.data["key"]
        rendered = event.data["rendered"]
        prompt_id = rendered.prompt_id
        if event.data["reused"] and not prompt_id:  # keep what the first attempt recorded
            with contextlib.suppress(OSError, ValueError, AttributeError):
                prompt_id = json.loads((self.dir / f"{k}.json").read_text()).get("prompt_id", "")
        self.record = {"key": k, "loop": event.loop, "iteration": event.iteration,
                       "params": asdict(event.data["params"]), "prompt_id": prompt_id,
                       "seconds": {"render": round(rendered.seconds, 3)}}
        write_atomic(self.dir / f"{k}.json", _json(self.record))  # the record first, then
        if not event.data["reused"]:                                 # the image it describes
            write_atomic(self.dir / f"{k}.png", rendered.image)
        self.save_state(event.data["state"])  # with the pending render: resume judges it

    def _on_verdict(self, event: Event) -> None:
        j = event.data["judgement"]
        self.record.update(
            critic={"prompt": event.data["prompt"],
                    "answers": [asdict(a) for a in j.attempts],
                    "verdict": asdict(j.verdict) if j.verdict else None, "error": j.error,
                    "image_sent": {"bytes": len(j.image.data), "mime": j.image.mime,
                                   "width": j.image.width, "height": j.image.height}})
        self.record["seconds"]["critique"] = round(j.seconds, 3)

    def _on_applied(self, event: Event) -> None:
        p = event.data["patch"]
        self.record.update(score=event.data["score"], reverted_to=event.data["reverted"],
                           applied=list(p.applied) if p else [],
                           refused=[asdict(r) for r in p.refused] if p else [],
                           next_params=asdict(p.params) if p else None)
        write_atomic(self.dir / f"{self.record['key']}.json", _json(self.record))

    def _on_iteration_ended(self, event: Event) -> None:
        self.save_state(event.data["state"])

    _on_loop_ended = _on_iteration_ended

    def _final(self, state: RunState) -> None:
        chosen = state.done_key or (state.best.key if state.best else None)
        if chosen and (self.dir / f"{chosen}.png").is_file():
            try:
                shutil.copyfile(self.dir / f"{chosen}.png", self.dir / ".final.png.tmp")
                os.replace(self.dir / ".final.png.tmp", self.dir / "final.png")
            except OSError as exc:
                raise RunFolderError(f"cannot write {self.dir / 'final.png'}: {exc.strerror}") \
                    from None
        self.save_state(state)

    def _on_done(self, event: Event) -> None:
        self._final(event.data["state"])

    def _on_limits_reached(self, event: Event) -> None:
        self._final(event.data["state"])

    def _on_interrupted(self, event: Event) -> None:
        self.save_state(event.data["state"])

    _on_error = _on_interrupted
